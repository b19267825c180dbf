#!/usr/bin/env bash
# make run / make up / make down: the whole platform on one machine.
#   scripts/run.sh run    foreground; Ctrl-C stops everything it started
#   scripts/run.sh up     detached (for scripts); `scripts/run.sh down` stops it
#   scripts/run.sh down
# Builds, starts nats-server + PostgreSQL under .run/ (scripts/infra.sh), starts the tenant service, seeds the
# demo tenant through its admin commands, starts the other services with logs in .run/logs/, writes
# .run/demo.env (demo key) and .run/admin.env (CLI credentials) and prints a working curl.
# Every service connects to NATS as its own user (scripts/nats-auth.conf.tmpl) with the password from
# .run/secrets.env; the tenant service accepts the admin token from there (name `operator`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RUN="$ROOT/.run"
CONFIG="${SWITCHYARD_BUILD_CONFIG:-release}"
NATS_PORT="${SWITCHYARD_NATS_PORT:-4222}"
PG_PORT="${SWITCHYARD_PG_PORT:-5432}"
HTTP_PORT="${SWITCHYARD_HTTP_PORT:-8080}"
TENANT_HTTP_PORT="${SWITCHYARD_TENANT_HTTP_PORT:-8084}"
BILLING_HTTP_PORT="${SWITCHYARD_BILLING_HTTP_PORT:-8085}"
ANALYTICS_HTTP_PORT="${SWITCHYARD_ANALYTICS_HTTP_PORT:-8086}"
# Start order: the tenant service first (it owns the tenants/apikeys KV buckets and serves the admin commands
# the seed uses), then the rest.
SERVICES=(tenant router orchestrator billing analytics eval api-gateway)
# Ops port (/health, /ready, /metrics) and NATS user of each service.
ops_port() {
  case "$1" in
    tenant) echo 9084 ;; router) echo 9081 ;; orchestrator) echo 9082 ;; api-gateway) echo 9083 ;; billing) echo 9085 ;;
    analytics) echo 9086 ;; eval) echo 9087 ;;
  esac
}
nats_user() { case "$1" in api-gateway) echo gateway ;; *) echo "$1" ;; esac; }

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
  # NATS passwords and the admin token (generated once by infra.sh; never printed).
  # shellcheck disable=SC1091
  source "$RUN/secrets.env"
  write_admin_env
  mkdir -p "$RUN/logs" "$RUN/pids"
  stop_services
  start_service tenant
  wait_ready tenant
  # Credentials through the environment (not visible in `ps`).
  SWITCHYARD_NATS_USER=admin SWITCHYARD_NATS_PASSWORD="$SWITCHYARD_NATS_PASSWORD_ADMIN" \
    SWITCHYARD_ADMIN_TOKEN="$SWITCHYARD_ADMIN_TOKEN" \
    "$BIN/switchyard" demo seed --nats "$SWITCHYARD_NATS_URL" --env-file "$RUN/demo.env" --base-url "http://127.0.0.1:$HTTP_PORT/v1" \
      --reader-url "nats://reader:$SWITCHYARD_NATS_PASSWORD_READER@127.0.0.1:$NATS_PORT" \
    || { stop_services; echo "demo seed failed (tenant service log: .run/logs/tenant.log)" >&2; exit 1; }
  for name in "${SERVICES[@]}"; do
    [ "$name" = tenant ] || start_service "$name"
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

Switchyard is running. Services: ${SERVICES[*]} (logs in .run/logs/; ops ports: tenant 9084, router 9081,
orchestrator 9082, billing 9085, analytics 9086, eval 9087, api-gateway 9083; admin HTTP: tenant on $TENANT_HTTP_PORT,
billing on $BILLING_HTTP_PORT, analytics on $ANALYTICS_HTTP_PORT).
Demo credentials are in .run/demo.env. Try:

  source .run/demo.env
  curl -s \$SWITCHYARD_BASE_URL/chat/completions -H "Authorization: Bearer \$SWITCHYARD_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}'

Administer it with the CLI (NATS user \`admin\` and the admin token are in .run/admin.env):

  source .run/admin.env
  $BIN/switchyard tenant list
  $BIN/switchyard price set --provider openai --model gpt-4o-mini --input-micros 150000 --output-micros 600000
  $BIN/switchyard usage --tenant demo-restaurant --by model
  $BIN/switchyard stats --tenant demo-restaurant --since 1h --by agent
  $BIN/switchyard eval suite import --tenant demo-restaurant --agent restaurant-host examples/eval/restaurant-host.yaml

TXT
}

# .run/admin.env (mode 600): what the `switchyard` CLI needs to send admin commands (exported, for `source`).
write_admin_env() {
  local tmp="$RUN/admin.env.tmp"
  (umask 077; cat >"$tmp" <<ENV
export SWITCHYARD_NATS_URL=$SWITCHYARD_NATS_URL
export SWITCHYARD_NATS_USER=admin
export SWITCHYARD_NATS_PASSWORD=$SWITCHYARD_NATS_PASSWORD_ADMIN
export SWITCHYARD_ADMIN_TOKEN=$SWITCHYARD_ADMIN_TOKEN
ENV
  )
  mv "$tmp" "$RUN/admin.env"
}

# Starts one service as its own NATS user. Secrets go through the environment, never the command line; the
# variables sourced from secrets.env are not exported, so a service only sees its own password.
start_service() {
  local name="$1" user pwvar
  # The tenant service and analytics also accept the eval service's rollout controller (set-rollout, stats).
  local CONTROLLER_TOKENS="operator:$SWITCHYARD_ADMIN_TOKEN,rollout-controller:$SWITCHYARD_ROLLOUT_ADMIN_TOKEN"
  user="$(nats_user "$name")"
  pwvar="SWITCHYARD_NATS_PASSWORD_${user^^}"
  (
    export SWITCHYARD_NATS_USER="$user" SWITCHYARD_NATS_PASSWORD="${!pwvar}" \
      SWITCHYARD_OPS_PORT="$(ops_port "$name")" SWITCHYARD_HTTP_PORT="$HTTP_PORT" SWITCHYARD_INSTANCE_ID="$name-1" \
      SWITCHYARD_MIRROR_PUBLIC_KEY="$SWITCHYARD_MIRROR_PUBLIC_KEY"
    if [ "$name" = tenant ]; then
      export SWITCHYARD_HTTP_PORT="$TENANT_HTTP_PORT" SWITCHYARD_ADMIN_TOKENS="$CONTROLLER_TOKENS" \
        SWITCHYARD_MIRROR_SIGNING_KEY="$SWITCHYARD_MIRROR_SIGNING_KEY"
    fi
    if [ "$name" = billing ]; then
      export SWITCHYARD_HTTP_PORT="$BILLING_HTTP_PORT" SWITCHYARD_ADMIN_TOKENS="operator:$SWITCHYARD_ADMIN_TOKEN"
    fi
    if [ "$name" = analytics ]; then
      export SWITCHYARD_HTTP_PORT="$ANALYTICS_HTTP_PORT" SWITCHYARD_ADMIN_TOKENS="$CONTROLLER_TOKENS"
    fi
    if [ "$name" = eval ]; then
      export SWITCHYARD_ADMIN_TOKENS="operator:$SWITCHYARD_ADMIN_TOKEN" \
        SWITCHYARD_ROLLOUT_ADMIN_TOKEN="$SWITCHYARD_ROLLOUT_ADMIN_TOKEN"
    fi
    exec nohup "$BIN/$name" >"$RUN/logs/$name.log" 2>&1
  ) &
  echo $! >"$RUN/pids/$name.pid"
}

# Waits until a service's ops port answers GET /ready with 200 (fails early if the process exits).
wait_ready() {
  local name="$1" port pid code
  port="$(ops_port "$name")"
  pid="$(cat "$RUN/pids/$name.pid")"
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$RUN/logs/$name.log" >&2; echo "$name exited; see .run/logs/$name.log" >&2; exit 1
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready" 2>/dev/null || true)"
    [ "$code" = "200" ] && return
    sleep 0.2
  done
  stop_services
  echo "$name did not become ready within 60 s (GET :$port/ready); see .run/logs/$name.log" >&2
  exit 1
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
