#!/usr/bin/env bash
# Runs nats-server (JetStream) and a PostgreSQL cluster under .run/ on fixed local ports, for `make run`.
#   scripts/infra.sh up     start both (idempotent), create the database
#   scripts/infra.sh down   stop both (data stays in .run/ until `make clean-run`)
#   scripts/infra.sh status
# Ports: SWITCHYARD_NATS_PORT (4222), SWITCHYARD_PG_PORT (5432). PostgreSQL refuses to run as root, so as root
# it runs as the `postgres` user, which is handed the data and socket directories.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.run"
NATS_PORT="${SWITCHYARD_NATS_PORT:-4222}"
PG_PORT="${SWITCHYARD_PG_PORT:-5432}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
PGDATA="$RUN/postgres/data"
PGSOCK="$RUN/postgres/socket"
PGUSER_OS=""
[ "$(id -u)" -eq 0 ] && PGUSER_OS="postgres"

as_pg() { if [ -n "$PGUSER_OS" ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi; }

nats_up() {
  mkdir -p "$RUN/nats"
  if [ -f "$RUN/nats/pid" ] && kill -0 "$(cat "$RUN/nats/pid")" 2>/dev/null; then
    echo "nats-server already running (port $NATS_PORT)"; return
  fi
  nohup nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$RUN/nats/store" \
    -m "$((NATS_PORT + 4000))" >"$RUN/nats/nats.log" 2>&1 &
  echo $! >"$RUN/nats/pid"
  for _ in $(seq 1 100); do
    grep -q "Server is ready" "$RUN/nats/nats.log" 2>/dev/null && { echo "nats-server up on $NATS_PORT"; return; }
    sleep 0.1
  done
  echo "nats-server failed to start; see $RUN/nats/nats.log" >&2; exit 1
}

pg_up() {
  [ -n "$PGBIN" ] || { echo "PostgreSQL not installed: run make deps" >&2; exit 1; }
  mkdir -p "$PGDATA" "$PGSOCK"
  [ -n "$PGUSER_OS" ] && chown -R "$PGUSER_OS" "$RUN/postgres"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$RUN/postgres/initdb.log"
  fi
  if as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    echo "postgres already running (port $PG_PORT)"
  else
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$RUN/postgres/postgres.log" \
      -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1" start >/dev/null
    echo "postgres up on $PG_PORT"
  fi
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='switchyard'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE ROLE switchyard LOGIN"
  fi
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='switchyard'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE switchyard OWNER switchyard"
  fi
}

down() {
  if [ -f "$RUN/nats/pid" ]; then
    kill "$(cat "$RUN/nats/pid")" 2>/dev/null || true
    rm -f "$RUN/nats/pid"
    echo "nats-server stopped"
  fi
  if [ -n "$PGBIN" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    echo "postgres stopped"
  fi
}

case "${1:-}" in
  up) nats_up; pg_up
      echo "SWITCHYARD_NATS_URL=nats://127.0.0.1:$NATS_PORT"
      echo "SWITCHYARD_DATABASE_URL=postgresql://switchyard@127.0.0.1:$PG_PORT/switchyard" ;;
  down) down ;;
  status)
    { [ -f "$RUN/nats/pid" ] && kill -0 "$(cat "$RUN/nats/pid")" 2>/dev/null && echo "nats-server: up"; } || echo "nats-server: down"
    { [ -n "$PGBIN" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 && echo "postgres: up"; } || echo "postgres: down" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
