#!/usr/bin/env bash
# make cluster / cluster-up / cluster-down: the platform on one machine the way production runs it — a 3-node
# NATS JetStream cluster on loopback (every stream and KV bucket at 3 replicas), one PostgreSQL, and two replicas
# of every service — for testing what a single node hides (a NATS node dying, consumers shared by replicas, one
# gateway's waiting request answered while its NATS server is gone …). Everything lives under .run-cluster/ on
# its own ports, so it runs beside `make run` (.run/, ports 4222/5432/8080/8084-8086/9081-9087).
#   scripts/cluster.sh run          foreground; Ctrl-C stops everything it started
#   scripts/cluster.sh up           detached; `scripts/cluster.sh down` stops it
#   scripts/cluster.sh down
#   scripts/cluster.sh status       processes, NATS nodes (meta leader, health) and stream replicas
#   scripts/cluster.sh streams      the replica check alone: every stream at 3 replicas on 3 nodes (exit 1 if not)
#   scripts/cluster.sh node-kill N  SIGKILL NATS node N (1-3), as a crash would (scripts/cluster-fault.sh uses it)
#   scripts/cluster.sh node-start N start NATS node N again with its store; waits until it is healthy
# SWITCHYARD_SKIP_BUILD=1 uses the binaries already in .build/release (or SWITCHYARD_BIN) without running swift.
# Ports (each overridable): NATS clients 4231-4233 (SWITCHYARD_CLUSTER_NATS_PORT, the first of three), routes
# 6231-6233 (SWITCHYARD_CLUSTER_ROUTE_PORT), monitoring 8231-8233 (SWITCHYARD_CLUSTER_MONITOR_PORT), PostgreSQL 5442
# (SWITCHYARD_CLUSTER_PG_PORT), gateways 8180/8181 (SWITCHYARD_CLUSTER_HTTP_PORT, the first of two), admin HTTP of
# replica 1 / 2: tenant 8184/8194, billing 8185/8195, analytics 8186/8196 (SWITCHYARD_CLUSTER_TENANT_HTTP_PORT,
# _BILLING_HTTP_PORT, _ANALYTICS_HTTP_PORT; replica 2 is +10), ops ports 9181-9187 / 9191-9197
# (SWITCHYARD_CLUSTER_OPS_PORT: replica 1 adds make run's offset — router 1 … eval 7 — replica 2 another 10).
# Everything listens on 127.0.0.1 (SWITCHYARD_CLUSTER_HTTP_HOST moves the services' HTTP and ops listeners).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# infra.sh's functions: ensure_secrets, render_auth_conf (scripts/nats-auth.conf.tmpl, the same users and
# permissions as make run) and pg_up. They read the globals below, which point them at .run-cluster/.
# shellcheck source=scripts/infra.sh
source "$ROOT/scripts/infra.sh"
RUN="$ROOT/.run-cluster"
SECRETS="$RUN/secrets.env"
AUTH_CONF="$RUN/nats/auth.conf"
PGDATA="$RUN/postgres/data"
PGSOCK="$RUN/postgres/socket"
PG_PORT="${SWITCHYARD_CLUSTER_PG_PORT:-5442}"

CONFIG="${SWITCHYARD_BUILD_CONFIG:-release}"
NATS_PORT0="${SWITCHYARD_CLUSTER_NATS_PORT:-4231}"
ROUTE_PORT0="${SWITCHYARD_CLUSTER_ROUTE_PORT:-6231}"
MONITOR_PORT0="${SWITCHYARD_CLUSTER_MONITOR_PORT:-8231}"
HTTP_PORT0="${SWITCHYARD_CLUSTER_HTTP_PORT:-8180}"
TENANT_HTTP_PORT0="${SWITCHYARD_CLUSTER_TENANT_HTTP_PORT:-8184}"
BILLING_HTTP_PORT0="${SWITCHYARD_CLUSTER_BILLING_HTTP_PORT:-8185}"
ANALYTICS_HTTP_PORT0="${SWITCHYARD_CLUSTER_ANALYTICS_HTTP_PORT:-8186}"
OPS_PORT0="${SWITCHYARD_CLUSTER_OPS_PORT:-9180}"
HTTP_HOST="${SWITCHYARD_CLUSTER_HTTP_HOST:-127.0.0.1}"
CLUSTER_NAME=switchyard-local
NODES=(1 2 3)
REPLICAS=(1 2)
EXPECTED_REPLICAS=3
SERVICES=(tenant router orchestrator billing analytics eval api-gateway)
nats_user() { case "$1" in api-gateway) echo gateway ;; *) echo "$1" ;; esac; }

nats_port() { echo $((NATS_PORT0 + $1 - 1)); }
route_port() { echo $((ROUTE_PORT0 + $1 - 1)); }
monitor_port() { echo $((MONITOR_PORT0 + $1 - 1)); }
# Ops port of replica $2 of service $1: make run's offset (router 1 … eval 7), replica 2 ten above replica 1.
ops_port() {
  local offset
  case "$1" in
    router) offset=1 ;; orchestrator) offset=2 ;; api-gateway) offset=3 ;; tenant) offset=4 ;; billing) offset=5 ;;
    analytics) offset=6 ;; eval) offset=7 ;;
  esac
  echo $((OPS_PORT0 + offset + 10 * ($2 - 1)))
}
# The public HTTP port of replica $2 of service $1; 0 (any free port) for the services that serve none.
http_port() {
  case "$1" in
    api-gateway) echo $((HTTP_PORT0 + $2 - 1)) ;;
    tenant) echo $((TENANT_HTTP_PORT0 + 10 * ($2 - 1))) ;;
    billing) echo $((BILLING_HTTP_PORT0 + 10 * ($2 - 1))) ;;
    analytics) echo $((ANALYTICS_HTTP_PORT0 + 10 * ($2 - 1))) ;;
    *) echo 0 ;;
  esac
}
nats_urls() {
  local urls=() n
  for n in "${NODES[@]}"; do urls+=("nats://127.0.0.1:$(nats_port "$n")"); done
  (IFS=,; echo "${urls[*]}")
}
NATS_URLS="$(nats_urls)"
DATABASE_URL="postgresql://switchyard@127.0.0.1:$PG_PORT/switchyard"
log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# MARK: NATS nodes

# Adds the routes' shared password to .run-cluster/secrets.env once (the nodes authenticate each other with it).
ensure_route_secret() {
  grep -q '^SWITCHYARD_NATS_ROUTE_PASSWORD=' "$SECRETS" ||
    printf 'SWITCHYARD_NATS_ROUTE_PASSWORD=%s\n' "$(random_secret)" >>"$SECRETS"
}

# Writes .run-cluster/nats/n<N>.conf (mode 600: it holds the route password): server name, client, route and
# monitoring listeners on loopback, its own store, routes to the two other nodes, the users of auth.conf.
write_node_conf() {
  local n="$1" routes=() m
  for m in "${NODES[@]}"; do
    [ "$m" = "$n" ] || routes+=("    \"nats-route://route:$SWITCHYARD_NATS_ROUTE_PASSWORD@127.0.0.1:$(route_port "$m")\"")
  done
  mkdir -p "$RUN/nats/n$n"
  (umask 077; cat >"$RUN/nats/n$n.conf" <<CONF
# Generated by scripts/cluster.sh: node $n of the local JetStream cluster $CLUSTER_NAME.
server_name: "n$n"
listen: "127.0.0.1:$(nats_port "$n")"
http: "127.0.0.1:$(monitor_port "$n")"
jetstream {
  store_dir: "$RUN/nats/n$n"
}
cluster {
  name: "$CLUSTER_NAME"
  listen: "127.0.0.1:$(route_port "$n")"
  authorization {
    user: "route"
    password: "$SWITCHYARD_NATS_ROUTE_PASSWORD"
  }
  routes: [
$(printf '%s\n' "${routes[@]}")
  ]
}
include "auth.conf"
CONF
  )
}

node_pid() { cat "$RUN/nats/n$1.pid" 2>/dev/null || true; }
node_running() { local pid; pid="$(node_pid "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start_node() {
  local n="$1"
  if node_running "$n"; then return; fi
  write_node_conf "$n"
  # Its own session: Ctrl-C on `make cluster` reaches the script and the services, which drain into a NATS still
  # there; the script stops the nodes after them.
  setsid nohup nats-server -c "$RUN/nats/n$n.conf" >>"$RUN/nats/n$n.log" 2>&1 &
  echo $! >"$RUN/nats/n$n.pid"
}

# GET on node $1's monitoring port; empty when it does not answer.
monitor_get() { curl -s --max-time 2 "http://127.0.0.1:$(monitor_port "$1")$2" 2>/dev/null || true; }
# Whether node $1 says it is healthy: JetStream on, in contact with the meta leader, its streams current.
node_healthy() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(monitor_port "$1")/healthz" 2>/dev/null)" = 200 ]
}
meta_leader() {
  local n json
  for n in "${NODES[@]}"; do
    json="$(monitor_get "$n" /jsz)"
    [ -n "$json" ] || continue
    python3 -c 'import json,sys; print((json.load(sys.stdin).get("meta_cluster") or {}).get("leader") or "")' <<<"$json" && return
  done
  echo ""
}

# Waits up to $2 seconds until node $1 (or every node: "all") is healthy, printing progress every 5 s.
wait_nodes_healthy() {
  local which="$1" limit="$2" start="$SECONDS" next=5 n ok
  while :; do
    ok=1
    for n in "${NODES[@]}"; do
      if [ "$which" = all ] || [ "$which" = "$n" ]; then
        node_running "$n" || { tail -20 "$RUN/nats/n$n.log" >&2; echo "nats node n$n exited; see $RUN/nats/n$n.log" >&2; return 1; }
        node_healthy "$n" || ok=0
      fi
    done
    [ "$ok" = 1 ] && [ -n "$(meta_leader)" ] && return 0
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "NATS node(s) $which not healthy after $limit s (GET /healthz on ports $MONITOR_PORT0…; logs $RUN/nats/n*.log)" >&2
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$next" ]; then
      log "  still waiting for NATS ($which) to be healthy ($((SECONDS - start)) s; streams recover from their stores)…"
      next=$((next + 5))
    fi
    sleep 0.2
  done
}

nats_cluster_up() {
  mkdir -p "$RUN/nats"
  ensure_secrets
  ensure_route_secret
  render_auth_conf
  # shellcheck disable=SC1090
  source "$SECRETS"
  local n
  for n in "${NODES[@]}"; do
    if node_running "$n"; then
      # A running node keeps its config: reload it when the users changed (as infra.sh does).
      [ "$AUTH_CHANGED" = 1 ] && nats-server --signal "reload=$(node_pid "$n")" >/dev/null
      log "nats node n$n already running (client port $(nats_port "$n"))"
    else
      start_node "$n"
      log "nats node n$n started: clients $(nats_port "$n"), routes $(route_port "$n"), monitoring $(monitor_port "$n"), store .run-cluster/nats/n$n/"
    fi
  done
  log "waiting for the JetStream cluster to elect a meta leader…"
  wait_nodes_healthy all 180
  log "JetStream cluster $CLUSTER_NAME is up; meta leader $(meta_leader)"
}

stop_node() {
  local n="$1" pid
  pid="$(node_pid "$n")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "nats node n$n stopped"
  fi
  rm -f "$RUN/nats/n$n.pid"
}

# MARK: streams

# The replica check: every stream on every node, with its configured replicas, leader and followers. Exits 1 when
# a node does not answer, a stream is not at $EXPECTED_REPLICAS replicas or is not hosted by every node.
check_streams() {
  local n files=()
  for n in "${NODES[@]}"; do
    monitor_get "$n" "/jsz?accounts=true&streams=true&consumers=true&config=true" >"$RUN/nats/jsz-n$n.json"
    files+=("n$n=$RUN/nats/jsz-n$n.json")
  done
  python3 - "$EXPECTED_REPLICAS" "${files[@]}" <<'PY'
import json, sys
expected = int(sys.argv[1])
nodes = {}
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    try:
        nodes[name] = json.load(open(path))
    except Exception:
        nodes[name] = None
problems = []
streams = {}
for node, doc in nodes.items():
    if doc is None:
        problems.append(f"node {node} did not answer /jsz")
        continue
    for account in doc.get("account_details") or []:
        for s in account.get("stream_detail") or []:
            entry = streams.setdefault(s["name"], {"hosts": set(), "config": None, "cluster": None, "messages": 0,
                                                    "consumers": {}, "ephemeral": set()})
            entry["hosts"].add(node)
            cluster = s.get("cluster") or {}
            if cluster.get("leader") == node or entry["config"] is None:
                entry["config"] = s.get("config") or {}
                entry["cluster"] = cluster
                entry["messages"] = (s.get("state") or {}).get("messages", 0)
            # A durable inherits its stream's replicas (leader + followers in its own cluster info). Ephemeral
            # ones (the KV watches' ordered consumers) are single-replica by design and recreated by the client.
            for c in s.get("consumer_detail") or []:
                cc = c.get("cluster") or {}
                if not (c.get("config") or {}).get("durable_name"):
                    entry["ephemeral"].add(c["name"])
                elif cc.get("leader") == node or c["name"] not in entry["consumers"]:
                    entry["consumers"][c["name"]] = (1 if cc.get("leader") else 0) + len(cc.get("replicas") or [])
if not streams:
    problems.append("no streams found")
print(f"  {'stream':<16} {'replicas':>8}  {'leader':<6} {'followers (current)':<24} {'hosted on':<12} {'messages':>9}  durables (peers)")
for name in sorted(streams):
    e = streams[name]
    replicas = e["config"].get("num_replicas")
    cluster = e["cluster"] or {}
    followers = ", ".join(f"{r['name']}({'yes' if r.get('current') else 'no'})" for r in cluster.get("replicas") or [])
    hosts = ",".join(sorted(e["hosts"]))
    consumers = e["consumers"]
    peers = sorted(set(consumers.values()))
    ctext = f"{len(consumers)} ({'/'.join(map(str, peers))})" if consumers else "-"
    if e["ephemeral"]:
        ctext += f" + {len(e['ephemeral'])} ephemeral (KV watches, R1)"
    print(f"  {name:<16} {replicas!s:>8}  {cluster.get('leader') or '-':<6} {followers:<24} {hosts:<12} {e['messages']:>9}  {ctext}")
    for cname, count in sorted(consumers.items()):
        if count != expected:
            problems.append(f"consumer {name}/{cname} has {count} peers, expected {expected}")
    if replicas != expected:
        problems.append(f"stream {name} has {replicas} replicas, expected {expected}")
    elif len(e["hosts"]) != expected and all(nodes.values()):
        problems.append(f"stream {name} is hosted on {hosts} only")
    elif not cluster.get("leader"):
        problems.append(f"stream {name} has no leader")
for p in problems:
    print(f"  PROBLEM: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

# MARK: services

stop_services() {
  local name r pidfile pid
  for name in "${SERVICES[@]}"; do
    for r in "${REPLICAS[@]}"; do
      pidfile="$RUN/pids/$name-$r.pid"
      [ -f "$pidfile" ] && { kill -TERM "$(cat "$pidfile")" 2>/dev/null || true; }
    done
  done
  for name in "${SERVICES[@]}"; do
    for r in "${REPLICAS[@]}"; do
      pidfile="$RUN/pids/$name-$r.pid"
      if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        for _ in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pidfile"
      fi
    done
  done
}

# Starts replica $2 of service $1 as its own NATS user, connected to all three nodes, with streams and KV buckets
# at 3 replicas. Secrets go through the environment, never the command line; the variables sourced from
# secrets.env are not exported, so a service only sees its own password.
start_service() {
  local name="$1" r="$2" user pwvar
  user="$(nats_user "$name")"
  pwvar="SWITCHYARD_NATS_PASSWORD_${user^^}"
  (
    export SWITCHYARD_NATS_URL="$NATS_URLS" SWITCHYARD_DATABASE_URL="$DATABASE_URL" \
      SWITCHYARD_STREAM_REPLICAS="$EXPECTED_REPLICAS" \
      SWITCHYARD_NATS_USER="$user" SWITCHYARD_NATS_PASSWORD="${!pwvar}" \
      SWITCHYARD_OPS_PORT="$(ops_port "$name" "$r")" SWITCHYARD_HTTP_PORT="$(http_port "$name" "$r")" \
      SWITCHYARD_HTTP_HOST="$HTTP_HOST" \
      SWITCHYARD_INSTANCE_ID="$name-$r" SWITCHYARD_MIRROR_PUBLIC_KEY="$SWITCHYARD_MIRROR_PUBLIC_KEY"
    # The tenant service and analytics also accept eval's rollout controller (set-rollout, stats).
    local controller_tokens="operator:$SWITCHYARD_ADMIN_TOKEN,rollout-controller:$SWITCHYARD_ROLLOUT_ADMIN_TOKEN"
    case "$name" in
      tenant) export SWITCHYARD_ADMIN_TOKENS="$controller_tokens" \
                SWITCHYARD_MIRROR_SIGNING_KEY="$SWITCHYARD_MIRROR_SIGNING_KEY" ;;
      analytics) export SWITCHYARD_ADMIN_TOKENS="$controller_tokens" ;;
      billing) export SWITCHYARD_ADMIN_TOKENS="operator:$SWITCHYARD_ADMIN_TOKEN" ;;
      eval) export SWITCHYARD_ADMIN_TOKENS="operator:$SWITCHYARD_ADMIN_TOKEN" \
              SWITCHYARD_ROLLOUT_ADMIN_TOKEN="$SWITCHYARD_ROLLOUT_ADMIN_TOKEN" ;;
    esac
    exec nohup "$BIN/$name" >>"$RUN/logs/$name-$r.log" 2>&1
  ) &
  echo $! >"$RUN/pids/$name-$r.pid"
}

# Waits until replica $2 of service $1 answers GET /ready with 200 (fails early if the process exits).
wait_ready() {
  local name="$1" r="$2" port pid code start="$SECONDS" next=10
  port="$(ops_port "$name" "$r")"
  pid="$(cat "$RUN/pids/$name-$r.pid")"
  while [ $((SECONDS - start)) -lt 90 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$RUN/logs/$name-$r.log" >&2
      echo "$name-$r exited; see .run-cluster/logs/$name-$r.log" >&2
      return 1
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/ready" 2>/dev/null || true)"
    [ "$code" = 200 ] && return 0
    if [ $((SECONDS - start)) -ge "$next" ]; then
      log "  still waiting for $name-$r to be ready ($((SECONDS - start)) s)…"
      next=$((next + 10))
    fi
    sleep 0.2
  done
  echo "$name-$r did not become ready within 90 s (GET :$port/ready); see .run-cluster/logs/$name-$r.log" >&2
  return 1
}

# Sends one chat through gateway replica $1 until it is answered with 200 (up to 60 s).
wait_chat() {
  local r="$1" port code start="$SECONDS" next=5
  port="$(http_port api-gateway "$r")"
  while [ $((SECONDS - start)) -lt 60 ]; do
    code="$(curl -s -o "$RUN/chat-check-$r.json" -w '%{http_code}' --max-time 10 \
      "http://127.0.0.1:$port/v1/chat/completions" -H "Authorization: Bearer $SWITCHYARD_API_KEY" \
      -H 'Content-Type: application/json' \
      -d '{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}' \
      2>/dev/null || true)"
    [ "$code" = 200 ] && return 0
    if [ $((SECONDS - start)) -ge "$next" ]; then
      log "  gateway $r answers $code so far; retrying ($((SECONDS - start)) s)…"
      next=$((next + 5))
    fi
    sleep 0.5
  done
  echo "gateway $r (port $port) did not answer a chat with 200 within 60 s (last: $code, body in $RUN/chat-check-$r.json)" >&2
  return 1
}

# .run-cluster/admin.env (mode 600): what the `switchyard` CLI needs to send admin commands (exported, for `source`).
write_admin_env() {
  local tmp="$RUN/admin.env.tmp"
  (umask 077; cat >"$tmp" <<ENV
export SWITCHYARD_NATS_URL=$NATS_URLS
export SWITCHYARD_NATS_USER=admin
export SWITCHYARD_NATS_PASSWORD=$SWITCHYARD_NATS_PASSWORD_ADMIN
export SWITCHYARD_ADMIN_TOKEN=$SWITCHYARD_ADMIN_TOKEN
ENV
  )
  mv "$tmp" "$RUN/admin.env"
}

# MARK: build

build() {
  if [ "${SWITCHYARD_SKIP_BUILD:-}" = 1 ]; then
    BIN="${SWITCHYARD_BIN:-$ROOT/.build/$CONFIG}"
    log "SWITCHYARD_SKIP_BUILD=1: using the binaries in $BIN as they are"
  else
    ./scripts/deps.sh
    log "building ($CONFIG; the first build takes ~10 min on 2 cores; every 50th line shown, all in .run-cluster/build.log)…"
    swift build -c "$CONFIG" 2>&1 | tee "$RUN/build.log" |
      awk '/error:|Build complete/ {print "  " $0; fflush(); next} NR % 50 == 1 {print "  " $0; fflush()}' ||
      { tail -40 "$RUN/build.log"; echo "build failed (.run-cluster/build.log)" >&2; exit 1; }
    BIN="$(swift build -c "$CONFIG" --show-bin-path)"
  fi
  local name
  for name in "${SERVICES[@]}" switchyard; do
    [ -x "$BIN/$name" ] || { echo "missing $BIN/$name (build it, or unset SWITCHYARD_SKIP_BUILD)" >&2; exit 1; }
  done
  command -v nats-server >/dev/null || { echo "nats-server not installed: run make deps" >&2; exit 1; }
}

# MARK: commands

up() {
  mkdir -p "$RUN/logs" "$RUN/pids"
  build
  nats_cluster_up
  log "starting PostgreSQL on $PG_PORT…"
  pg_up | sed 's/^/  /'
  write_admin_env
  stop_services
  log "starting tenant-1 (owns the tenancy KV buckets and serves the admin commands the seed uses)…"
  start_service tenant 1
  wait_ready tenant 1 || { stop_services; exit 1; }
  log "seeding the demo tenant…"
  SWITCHYARD_NATS_USER=admin SWITCHYARD_NATS_PASSWORD="$SWITCHYARD_NATS_PASSWORD_ADMIN" \
    SWITCHYARD_ADMIN_TOKEN="$SWITCHYARD_ADMIN_TOKEN" \
    "$BIN/switchyard" demo seed --nats "$NATS_URLS" --env-file "$RUN/demo.env" \
      --base-url "http://127.0.0.1:$(http_port api-gateway 1)/v1" \
      --reader-url "$(nats_urls | sed "s|nats://|nats://reader:$SWITCHYARD_NATS_PASSWORD_READER@|g")" | sed 's/^/  /' \
    || { stop_services; echo "demo seed failed (tenant service log: .run-cluster/logs/tenant-1.log)" >&2; exit 1; }
  local name r
  log "starting two replicas of every service…"
  for name in "${SERVICES[@]}"; do
    for r in "${REPLICAS[@]}"; do
      [ "$name-$r" = tenant-1 ] || start_service "$name" "$r"
    done
  done
  for name in "${SERVICES[@]}"; do
    for r in "${REPLICAS[@]}"; do
      wait_ready "$name" "$r" || { stop_services; exit 1; }
    done
    log "  $name: both replicas ready (ops $(ops_port "$name" 1), $(ops_port "$name" 2))"
  done
  # shellcheck disable=SC1091
  source "$RUN/demo.env"
  log "waiting until both gateways answer a chat…"
  wait_chat 1 || { stop_services; exit 1; }
  wait_chat 2 || { stop_services; exit 1; }
  log "checking that every stream and KV bucket is at $EXPECTED_REPLICAS replicas on 3 nodes…"
  local streams
  if ! streams="$(check_streams 2>&1)"; then
    echo "$streams" >&2
    echo "NOT every stream is at $EXPECTED_REPLICAS replicas (node views: .run-cluster/nats/jsz-n*.json); stopping" >&2
    stop_services
    exit 1
  fi
  summary "$streams"
}

summary() {
  cat <<TXT

Switchyard cluster is running: 3 NATS JetStream nodes (cluster $CLUSTER_NAME, meta leader $(meta_leader)), PostgreSQL,
two replicas of ${SERVICES[*]}.

  NATS nodes     n1 $(nats_port 1), n2 $(nats_port 2), n3 $(nats_port 3) (routes $(route_port 1)-$(route_port 3), monitoring
                 http://127.0.0.1:$(monitor_port 1)-$(monitor_port 3)/jsz); logs .run-cluster/nats/n<N>.log
  PostgreSQL     127.0.0.1:$PG_PORT (db switchyard, user switchyard); log .run-cluster/postgres/postgres.log
  gateways       http://127.0.0.1:$(http_port api-gateway 1)/v1 and http://127.0.0.1:$(http_port api-gateway 2)/v1
  admin HTTP     tenant $(http_port tenant 1)/$(http_port tenant 2), billing $(http_port billing 1)/$(http_port billing 2), analytics $(http_port analytics 1)/$(http_port analytics 2)
  ops ports      replica 1: router $(ops_port router 1), orchestrator $(ops_port orchestrator 1), api-gateway $(ops_port api-gateway 1), tenant $(ops_port tenant 1), billing $(ops_port billing 1), analytics $(ops_port analytics 1), eval $(ops_port eval 1)
                 replica 2: the same + 10 ($(ops_port router 2) … $(ops_port eval 2))
  service logs   .run-cluster/logs/<service>-<1|2>.log

Streams and their durable consumers (every one must be at $EXPECTED_REPLICAS replicas, hosted on n1, n2 and n3):
$1

Try:
  source .run-cluster/demo.env      # gateway 1; gateway 2 is on port $(http_port api-gateway 2)
  curl -s \$SWITCHYARD_BASE_URL/chat/completions -H "Authorization: Bearer \$SWITCHYARD_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}'
  source .run-cluster/admin.env && $BIN/switchyard tenant list
  scripts/cluster.sh status                 # processes, nodes, stream replicas
  make cluster-fault                        # 60 s of load through both gateways, one NATS node killed and restarted
Stop: Ctrl-C (make cluster) or make cluster-down.
TXT
}

down() {
  stop_services
  local n
  for n in "${NODES[@]}"; do stop_node "$n"; done
  if [ -n "$PGBIN" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    echo "postgres stopped"
  fi
}

status() {
  local n name r pid state
  for n in "${NODES[@]}"; do
    if node_running "$n"; then
      node_healthy "$n" && state="up, healthy" || state="up, NOT healthy"
    else state=down; fi
    echo "nats n$n (client $(nats_port "$n")): $state"
  done
  echo "meta leader: $(meta_leader)"
  { [ -n "$PGBIN" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 && echo "postgres ($PG_PORT): up"; } ||
    echo "postgres ($PG_PORT): down"
  for name in "${SERVICES[@]}"; do
    for r in "${REPLICAS[@]}"; do
      pid="$(cat "$RUN/pids/$name-$r.pid" 2>/dev/null || echo 0)"
      kill -0 "$pid" 2>/dev/null && state=up || state=down
      echo "$name-$r (ops $(ops_port "$name" "$r")): $state"
    done
  done
  check_streams || true
}

# Foreground: reports processes that exit or come back (a killed NATS node is the point of this cluster, so
# nothing is torn down for it); Ctrl-C stops everything.
watch_processes() {
  declare -A last=()
  local key pid state n name r
  while true; do
    for n in "${NODES[@]}"; do
      key="nats-n$n"; node_running "$n" && state=up || state=down
      [ "${last[$key]:-up}" = "$state" ] || log "$key is $state"
      last[$key]="$state"
    done
    for name in "${SERVICES[@]}"; do
      for r in "${REPLICAS[@]}"; do
        key="$name-$r"; pid="$(cat "$RUN/pids/$key.pid" 2>/dev/null || echo 0)"
        kill -0 "$pid" 2>/dev/null && state=up || state=down
        [ "${last[$key]:-up}" = "$state" ] || log "$key is $state (log .run-cluster/logs/$key.log)"
        last[$key]="$state"
      done
    done
    sleep 1
  done
}

# scripts/cluster-fault.sh sources this file for its ports and functions; sourced, it runs no command.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

node_arg() {
  case "${1:-}" in 1 | 2 | 3) ;; *) echo "usage: $0 $2 1|2|3" >&2; exit 2 ;; esac
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run)
    # A failed start stops what it started; Ctrl-C stops everything.
    trap 'down' EXIT
    trap 'echo; echo "stopping…"; trap - EXIT; down; exit 0' INT TERM
    up
    echo "Press Ctrl-C to stop."
    watch_processes ;;
  status) status ;;
  streams) check_streams ;;
  node-kill)
    node_arg "${2:-}" node-kill
    pid="$(node_pid "$2")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { echo "nats node n$2 is not running" >&2; exit 1; }
    kill -KILL "$pid"
    echo "nats node n$2 (pid $pid) killed" ;;
  node-start)
    node_arg "${2:-}" node-start
    # shellcheck disable=SC1090
    source "$SECRETS"
    start_node "$2"
    wait_nodes_healthy "$2" 120
    echo "nats node n$2 is up and healthy" ;;
  *) echo "usage: $0 run|up|down|status|streams|node-kill N|node-start N" >&2; exit 2 ;;
esac
