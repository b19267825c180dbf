#!/usr/bin/env bash
# Runs nats-server (JetStream) and a PostgreSQL cluster under .run/ on fixed local ports, for `make run`.
#   scripts/infra.sh up     start both (idempotent), create the database
#   scripts/infra.sh down   stop both (data stays in .run/ until `make clean-run`)
#   scripts/infra.sh status
# Ports: SWITCHYARD_NATS_PORT (4222), SWITCHYARD_PG_PORT (5432). PostgreSQL refuses to run as root, so as root
# it runs as the `postgres` user, which is handed the data and socket directories.
# nats-server requires a user and password: one NATS user per service with subject permissions
# (scripts/nats-auth.conf.tmpl). `up` generates the passwords and an admin token once into .run/secrets.env
# (mode 600, kept across restarts, removed by `make clean-run`) and renders .run/nats/auth.conf from them.
# scripts/cluster.sh sources this file for its functions (secrets, the authorization config, PostgreSQL) and
# points the paths below at .run-cluster/; sourced, it runs no command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="$PWD/.run"
NATS_PORT="${SWITCHYARD_NATS_PORT:-4222}"
PG_PORT="${SWITCHYARD_PG_PORT:-5432}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
PGDATA="$RUN/postgres/data"
PGSOCK="$RUN/postgres/socket"
PGUSER_OS=""
[ "$(id -u)" -eq 0 ] && PGUSER_OS="postgres"

SECRETS="$RUN/secrets.env"
AUTH_TEMPLATE="$PWD/scripts/nats-auth.conf.tmpl"
AUTH_CONF="$RUN/nats/auth.conf"
NATS_USERS=(admin tenant gateway router orchestrator billing analytics eval reader backup)

as_pg() { if [ -n "$PGUSER_OS" ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi; }

random_secret() {
  if command -v openssl >/dev/null; then openssl rand -hex 24
  else head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; fi
}

# Creates .run/secrets.env on first use and adds any variable it lacks (a .run/ from an older version);
# existing values are never changed. Nothing secret is printed.
ensure_secrets() {
  mkdir -p "$RUN"
  (umask 077; touch "$SECRETS")
  chmod 600 "$SECRETS"
  [ -s "$SECRETS" ] && [ -n "$(tail -c1 "$SECRETS")" ] && echo >>"$SECRETS"
  local names=() name
  for name in "${NATS_USERS[@]}"; do names+=("SWITCHYARD_NATS_PASSWORD_${name^^}"); done
  names+=(SWITCHYARD_ADMIN_TOKEN SWITCHYARD_ROLLOUT_ADMIN_TOKEN)
  for name in "${names[@]}"; do
    grep -q "^$name=" "$SECRETS" || printf '%s=%s\n' "$name" "$(random_secret)" >>"$SECRETS"
  done
  # The tenant service signs the tenancy KV mirror with this Ed25519 key; every reader verifies with the
  # public key (docs/adr/0009). Generated once, as a pair.
  if ! grep -q "^SWITCHYARD_MIRROR_SIGNING_KEY=" "$SECRETS"; then
    local pem seed pub
    pem="$(openssl genpkey -algorithm ed25519)"
    seed="$(printf '%s\n' "$pem" | openssl pkey -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n')"
    pub="$(printf '%s\n' "$pem" | openssl pkey -pubout -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n')"
    [ "${#seed}" = 64 ] && [ "${#pub}" = 64 ] || { echo "could not generate the mirror signing key (openssl)" >&2; exit 1; }
    grep -v '^SWITCHYARD_MIRROR_PUBLIC_KEY=' "$SECRETS" >"$SECRETS.tmp" || true
    printf 'SWITCHYARD_MIRROR_SIGNING_KEY=%s\nSWITCHYARD_MIRROR_PUBLIC_KEY=%s\n' "$seed" "$pub" >>"$SECRETS.tmp"
    mv "$SECRETS.tmp" "$SECRETS"
    chmod 600 "$SECRETS"
  fi
}

# Renders the authorization template with the passwords from .run/secrets.env into .run/nats/auth.conf
# (mode 600); sets AUTH_CHANGED=1 when the file changed. Passwords are restricted to a character set that is
# safe inside sed and inside the config's quoted strings.
AUTH_CHANGED=0
render_auth_conf() {
  [ -f "$AUTH_TEMPLATE" ] || { echo "missing $AUTH_TEMPLATE" >&2; exit 1; }
  # shellcheck disable=SC1090
  source "$SECRETS"
  local args=() name var value
  for name in "${NATS_USERS[@]}"; do
    var="SWITCHYARD_NATS_PASSWORD_${name^^}"
    value="${!var:-}"
    if ! [[ "$value" =~ ^[A-Za-z0-9._~+/=-]+$ ]]; then
      echo "$var in $SECRETS is empty or has characters outside [A-Za-z0-9._~+/=-]" >&2; exit 1
    fi
    args+=(-e "s|@@PASSWORD_${name^^}@@|$value|g")
  done
  mkdir -p "$RUN/nats"
  local tmp="$AUTH_CONF.tmp"
  (umask 077; sed "${args[@]}" "$AUTH_TEMPLATE" >"$tmp")
  if grep -q '@@PASSWORD_[A-Z0-9_]*@@' "$tmp"; then
    rm -f "$tmp"; echo "$AUTH_TEMPLATE has a placeholder for a user infra.sh does not know" >&2; exit 1
  fi
  if cmp -s "$tmp" "$AUTH_CONF"; then rm -f "$tmp"; return; fi
  mv "$tmp" "$AUTH_CONF"
  AUTH_CHANGED=1
}

# Whether the running nats-server ($1 = pid) was started with the rendered authorization config.
started_with_auth() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$AUTH_CONF"
}

nats_up() {
  mkdir -p "$RUN/nats"
  ensure_secrets
  render_auth_conf
  if [ -f "$RUN/nats/pid" ] && kill -0 "$(cat "$RUN/nats/pid")" 2>/dev/null; then
    local pid; pid="$(cat "$RUN/nats/pid")"
    if ! started_with_auth "$pid"; then
      echo "nats-server (pid $pid) is running WITHOUT authentication (started by an older version of this" >&2
      echo "script). Stop it with 'make down' (or scripts/infra.sh down), then start again." >&2
      exit 1
    fi
    if [ "$AUTH_CHANGED" = 1 ]; then
      nats-server --signal "reload=$pid" >/dev/null && echo "nats-server reloaded its authorization config"
    fi
    echo "nats-server already running (port $NATS_PORT)"; return
  fi
  nohup nats-server -c "$AUTH_CONF" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$RUN/nats/store" \
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

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  up) nats_up; pg_up
      echo "SWITCHYARD_NATS_URL=nats://127.0.0.1:$NATS_PORT"
      echo "SWITCHYARD_DATABASE_URL=postgresql://switchyard@127.0.0.1:$PG_PORT/switchyard"
      echo "NATS users and passwords, admin token: .run/secrets.env" ;;
  down) down ;;
  status)
    { [ -f "$RUN/nats/pid" ] && kill -0 "$(cat "$RUN/nats/pid")" 2>/dev/null && echo "nats-server: up"; } || echo "nats-server: down"
    { [ -n "$PGBIN" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 && echo "postgres: up"; } || echo "postgres: down" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
