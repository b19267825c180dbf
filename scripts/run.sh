#!/usr/bin/env bash
# make run / make up / make down: the whole platform on one machine.
#   scripts/run.sh run    foreground; Ctrl-C stops everything it started
#   scripts/run.sh up     detached (for scripts); `scripts/run.sh down` stops it
#   scripts/run.sh down
# Builds, starts nats-server + PostgreSQL under .run/ (scripts/infra.sh), seeds the demo tenant, starts every
# service with logs in .run/logs/, writes .run/demo.env and prints a working curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RUN="$ROOT/.run"
CONFIG="${SWITCHYARD_BUILD_CONFIG:-release}"
NATS_PORT="${SWITCHYARD_NATS_PORT:-4222}"
PG_PORT="${SWITCHYARD_PG_PORT:-5432}"
HTTP_PORT="${SWITCHYARD_HTTP_PORT:-8080}"
SERVICES=(router orchestrator api-gateway)

export SWITCHYARD_NATS_URL="${SWITCHYARD_NATS_URL:-nats://127.0.0.1:$NATS_PORT}"
export SWITCHYARD_DATABASE_URL="${SWITCHYARD_DATABASE_URL:-postgresql://switchyard@127.0.0.1:$PG_PORT/switchyard}"

stop_services() {
  for name in "${SERVICES[@]}"; do
    pidfile="$RUN/pids/$name.pid"
    if [ -f "$pidfile" ]; then
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  for name in "${SERVICES[@]}"; do
    pidfile="$RUN/pids/$name.pid"
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

down() {
  stop_services
  ./scripts/infra.sh down
}

up() {
  ./scripts/deps.sh
  echo "building ($CONFIG; the first build takes ~10 min on 2 cores, progress in .run/build.log)…"
  mkdir -p "$RUN"
  swift build -c "$CONFIG" >"$RUN/build.log" 2>&1 || { tail -40 "$RUN/build.log"; echo "build failed" >&2; exit 1; }
  BIN="$(swift build -c "$CONFIG" --show-bin-path)"
  ./scripts/infra.sh up >/dev/null
  mkdir -p "$RUN/logs" "$RUN/pids"
  stop_services
  "$BIN/switchyard" demo seed --nats "$SWITCHYARD_NATS_URL" --database "$SWITCHYARD_DATABASE_URL" \
    --env-file "$RUN/demo.env" --base-url "http://127.0.0.1:$HTTP_PORT/v1"
  local ops=9081
  for name in "${SERVICES[@]}"; do
    SWITCHYARD_OPS_PORT=$ops SWITCHYARD_HTTP_PORT=$HTTP_PORT SWITCHYARD_INSTANCE_ID="$name-1" \
      nohup "$BIN/$name" >"$RUN/logs/$name.log" 2>&1 &
    echo $! >"$RUN/pids/$name.pid"
    ops=$((ops + 1))
  done
  # The gateway answers 401 to an unauthenticated /v1/models once it is up.
  for _ in $(seq 1 150); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/v1/models" 2>/dev/null || true)"
    [ "$code" = "401" ] && break
    sleep 0.2
  done
  # shellcheck disable=SC1091
  source "$RUN/demo.env"
  cat <<TXT

Switchyard is running. Services: ${SERVICES[*]} (logs in .run/logs/, ops ports 9081-9083).
Demo credentials are in .run/demo.env. Try:

  source .run/demo.env
  curl -s \$SWITCHYARD_BASE_URL/chat/completions -H "Authorization: Bearer \$SWITCHYARD_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}'

TXT
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run)
    up
    trap 'echo; echo "stopping…"; down; exit 0' INT TERM
    echo "Press Ctrl-C to stop."
    while true; do
      for name in "${SERVICES[@]}"; do
        pid="$(cat "$RUN/pids/$name.pid" 2>/dev/null || echo 0)"
        kill -0 "$pid" 2>/dev/null || { echo "$name exited; see .run/logs/$name.log"; down; exit 1; }
      done
      sleep 1
    done ;;
  *) echo "usage: $0 run|up|down" >&2; exit 2 ;;
esac
