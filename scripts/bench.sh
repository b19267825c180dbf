#!/usr/bin/env bash
# make bench: the whole chat path under load on this machine.
# Starts nats-server + PostgreSQL (scripts/infra.sh), a zero-latency fake OpenAI-compatible upstream, the tenant
# service, seeds the demo tenant through its admin commands, starts the router, orchestrator and api-gateway
# (release builds; each as its own NATS user with the password from .run/secrets.env); drives POST
# /v1/chat/completions with wrk at concurrency 16 and 64, non-stream and stream, through the upstream path
# (agent `concierge`) and the built-in local knowledge-base path (agent `restaurant-host`). Prints per case RPS,
# p50/p90/p99, errors and CPU milliseconds per request of each process (nats-server, gateway, router,
# orchestrator, upstream; "platform" = all but the upstream; wrk's own for reference), then the per-hop
# breakdown from the event log and each service's peak RSS. Concurrency 1 first (latency when nothing queues). Everything it started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${BENCH_DURATION:-10s}"
RUN="$PWD/.run"
export SWITCHYARD_NATS_PORT="${SWITCHYARD_NATS_PORT:-4222}" SWITCHYARD_PG_PORT="${SWITCHYARD_PG_PORT:-5432}"
export SWITCHYARD_NATS_URL="nats://127.0.0.1:$SWITCHYARD_NATS_PORT"
export SWITCHYARD_DATABASE_URL="postgresql://switchyard@127.0.0.1:$SWITCHYARD_PG_PORT/switchyard"
HTTP_PORT=8080
TENANT_HTTP_PORT=8084
TENANT_OPS_PORT=9184
UPSTREAM_PORT=9999

./scripts/deps.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
echo "building release (the first build takes about ten minutes on 2 cores; progress every 50 steps)…"
swift build -c release 2>&1 | grep --line-buffered -E '^\[[0-9]+/[0-9]+\]|error|Build complete' \
  | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "release build failed" >&2; exit 1; }
BIN="$(swift build -c release --show-bin-path)"
./scripts/run.sh down >/dev/null 2>&1 || true
./scripts/infra.sh up >/dev/null
# NATS passwords and the admin token (written by infra.sh; not exported, never printed).
# shellcheck disable=SC1091
source "$RUN/secrets.env"
mkdir -p "$RUN/bench" "$RUN/pids"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true
            ./scripts/infra.sh down >/dev/null; }
trap cleanup EXIT

FAKE_UPSTREAM_PORT=$UPSTREAM_PORT "$BIN/fake-upstream" >"$RUN/bench/fake-upstream.log" 2>&1 & pids+=($!)
# The tenant service serves the admin commands the seed uses; it is not on the chat path.
SWITCHYARD_LOG_LEVEL=warning SWITCHYARD_OPS_PORT=$TENANT_OPS_PORT SWITCHYARD_HTTP_PORT=$TENANT_HTTP_PORT \
SWITCHYARD_INSTANCE_ID="tenant-bench" SWITCHYARD_NATS_USER=tenant \
SWITCHYARD_NATS_PASSWORD="$SWITCHYARD_NATS_PASSWORD_TENANT" SWITCHYARD_ADMIN_TOKENS="operator:$SWITCHYARD_ADMIN_TOKEN" \
SWITCHYARD_MIRROR_SIGNING_KEY="$SWITCHYARD_MIRROR_SIGNING_KEY" \
  "$BIN/tenant" >"$RUN/bench/tenant.log" 2>&1 & pids+=($!); tenant_pid=$!
tenant_ready=0
for _ in $(seq 1 300); do
  kill -0 "$tenant_pid" 2>/dev/null || { echo "tenant service exited; see $RUN/bench/tenant.log" >&2; exit 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TENANT_OPS_PORT/ready" || true)" = 200 ] \
    && { tenant_ready=1; break; }
  sleep 0.2
done
[ "$tenant_ready" = 1 ] || { echo "tenant service not ready after 60 s; see $RUN/bench/tenant.log" >&2; exit 1; }
# The bench key's plan is unlimited: this measures the path, not the rate limiter.
SWITCHYARD_NATS_USER=admin SWITCHYARD_NATS_PASSWORD="$SWITCHYARD_NATS_PASSWORD_ADMIN" \
  SWITCHYARD_ADMIN_TOKEN="$SWITCHYARD_ADMIN_TOKEN" \
  "$BIN/switchyard" demo seed --nats "$SWITCHYARD_NATS_URL" --env-file "$RUN/bench/demo.env" --base-url "http://127.0.0.1:$HTTP_PORT/v1" --rpm 0 --tpm 0 >/dev/null
ops=9181
for name in router orchestrator api-gateway; do
  user="$name"; [ "$name" = api-gateway ] && user=gateway
  pwvar="SWITCHYARD_NATS_PASSWORD_${user^^}"
  SWITCHYARD_LOG_LEVEL=warning SWITCHYARD_OPS_PORT=$ops SWITCHYARD_HTTP_PORT=$HTTP_PORT \
  SWITCHYARD_INSTANCE_ID="$name-bench" SWITCHYARD_OPENAI_BASE_URL="http://127.0.0.1:$UPSTREAM_PORT/v1" \
  SWITCHYARD_NATS_USER="$user" SWITCHYARD_NATS_PASSWORD="${!pwvar}" \
  SWITCHYARD_MIRROR_PUBLIC_KEY="$SWITCHYARD_MIRROR_PUBLIC_KEY" SWITCHYARD_DB_POOL_SIZE=8 "$BIN/$name" >"$RUN/bench/$name.log" 2>&1 &
  pids+=($!); echo $! >"$RUN/bench/$name.pid"
  ops=$((ops + 1))
done
# shellcheck disable=SC1091
source "$RUN/bench/demo.env"
for _ in $(seq 1 150); do
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SWITCHYARD_API_KEY" \
    -H 'content-type: application/json' -d '{"model":"restaurant-host","messages":[{"role":"user","content":"hi"}]}' \
    "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" || true)"
  [ "$code" = "200" ] && break
  sleep 0.2
done

lua="$RUN/bench/post.lua"
# CPU accounting per case: utime+stime (clock ticks) of each process of the path, before and after the case.
upstream_pid="${pids[0]}"
cpu_names=(nats-server api-gateway router orchestrator upstream)
cpu_pids=("$(cat "$RUN/nats/pid")" "$(cat "$RUN/bench/api-gateway.pid")" "$(cat "$RUN/bench/router.pid")"
          "$(cat "$RUN/bench/orchestrator.pid")" "$upstream_pid")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz="$(getconf CLK_TCK)"
run_case() {  # name agent stream concurrency
  local name="$1" agent="$2" stream="$3" conns="$4"
  cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $SWITCHYARD_API_KEY"
wrk.body = '{"model":"$agent","stream":$stream,"messages":[{"role":"user","content":"When are you open on Sunday?"}]}'
LUA
  local out before=() i
  for i in "${!cpu_pids[@]}"; do before[i]="$(ticks "${cpu_pids[i]}")"; done
  local TIMEFORMAT='%U %S' wrk_cpu
  { time wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"$DURATION" --latency -s "$lua" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" \
      >"$RUN/bench/wrk.out"; } 2>"$RUN/bench/wrk.time"
  out="$(cat "$RUN/bench/wrk.out")"
  wrk_cpu="$(awk '{print $1 + $2}' "$RUN/bench/wrk.time")"
  local requests cpu_line="" total=0 ms
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"; requests="${requests:-0}"
  local rps p50 p90 p99 non2xx errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"; p90="$(awk '$1=="90%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $5}' <<<"$out")"; non2xx="${non2xx:-0}"
  errors="$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' <<<"$out")"; errors="${errors:-0}"
  printf '%s\n' "$out" >"$RUN/bench/wrk-$agent-$stream-$conns.txt"
  printf "%-34s c=%-3s %9s req/s   p50 %-9s p90 %-9s p99 %-9s errors %s\n" "$name" "$conns" "$rps" "$p50" "$p90" "$p99" \
    "$(( ${non2xx:-0} + ${errors:-0} ))"
  if [ "$requests" -gt 0 ]; then
    for i in "${!cpu_pids[@]}"; do
      ms="$(awk -v a="${before[i]}" -v b="$(ticks "${cpu_pids[i]}")" -v hz="$hz" -v n="$requests" \
        'BEGIN {printf "%.3f", (b - a) * 1000 / hz / n}')"
      cpu_line+="${cpu_names[i]} $ms  "
      total="$(awk -v t="$total" -v m="$ms" 'BEGIN {printf "%.3f", t + m}')"
    done
    ms="$(awk -v c="$wrk_cpu" -v n="$requests" 'BEGIN {printf "%.3f", c * 1000 / n}')"
    printf "%-34s CPU ms/request: %s| platform %s  (wrk %s)\n" "" "$cpu_line" \
      "$(awk -v t="$total" -v u="${cpu_line##*upstream }" 'BEGIN {printf "%.3f", t - u}')" "$ms"
  fi
}

# BENCH_MODE=billing-live (make bench-billing): billing's ingest rate while the chat path runs. A first load
# phase leaves a backlog of usage events with billing not running; billing then starts during a second phase
# and drains backlog and live usage together.
if [ "${BENCH_MODE:-}" = billing-live ]; then
  BILLING_OPS_PORT=9185
  # Usage events billing has settled into the ledger: new lines plus those already there (the USAGE stream and
  # the ledger of .run/ outlive a run, so a second run finds earlier events already recorded).
  recorded() { { curl -s "http://127.0.0.1:$BILLING_OPS_PORT/metrics" 2>/dev/null || true; } \
                 | awk '/^billing_usage_events_total\{outcome="(recorded|duplicate)"\}/ {n += $2} END {print int(n)}'; }
  billing_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$BILLING_OPS_PORT/ready" || true)" = 200 ]; }
  load() {  # seconds: wrk at c=64, upstream non-stream; prints the number of requests
    cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $SWITCHYARD_API_KEY"
wrk.body = '{"model":"concierge","stream":false,"messages":[{"role":"user","content":"When are you open on Sunday?"}]}'
LUA
    wrk -t2 -c64 -d"$1" -s "$lua" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" >"$RUN/bench/wrk-billing.out"
    awk '/requests in/ {print $1}' "$RUN/bench/wrk-billing.out"
  }
  start_billing() {
    SWITCHYARD_LOG_LEVEL=warning SWITCHYARD_OPS_PORT=$BILLING_OPS_PORT SWITCHYARD_HTTP_PORT=8185 \
    SWITCHYARD_INSTANCE_ID="billing-bench" SWITCHYARD_NATS_USER=billing \
    SWITCHYARD_NATS_PASSWORD="$SWITCHYARD_NATS_PASSWORD_BILLING" SWITCHYARD_MIRROR_PUBLIC_KEY="$SWITCHYARD_MIRROR_PUBLIC_KEY" \
    SWITCHYARD_DB_POOL_SIZE=4 "$BIN/billing" >>"$RUN/bench/billing.log" 2>&1 & pids+=($!); billing_pid=$!
  }
  settled() {  # waits until billing is up and its counter stops growing
    local last=-1 current
    current="$(recorded)"; current="${current:-0}"
    while [ "$current" != "$last" ] || ! billing_ready; do
      kill -0 "$billing_pid" 2>/dev/null || { echo "billing exited; see $RUN/bench/billing.log" >&2; exit 1; }
      last="$current"; sleep 1; current="$(recorded)"; current="${current:-0}"
    done
    echo "$current"
  }
  echo
  echo "Switchyard billing with the live chat path — $(nproc) cores, wrk -t2 -c64, upstream non-stream"
  echo "phase 0 (not measured): billing catches up with what earlier runs left in USAGE (and migrates), then stops…"
  : >"$RUN/bench/billing.log"
  start_billing
  echo "  $(settled) usage events settled"
  kill -TERM "$billing_pid"; wait "$billing_pid" 2>/dev/null || true
  echo "phase 1 (20 s): chat load with billing stopped, building a backlog of usage events…"
  backlog="$(load 20s)"
  echo "  $backlog chats answered; their usage events wait in USAGE"
  echo "phase 2 (10 s): billing starts while the chat load goes on…"
  start_billing
  # Billing's counter every 250 ms during phase 2: while the backlog lasts billing runs flat out, so the best
  # one-second window is its ingest rate with the chat path running.
  ( while kill -0 "$billing_pid" 2>/dev/null; do echo "$(date +%s%N) $(recorded)"; sleep 0.25; done ) \
    >"$RUN/bench/billing-samples.txt" & sampler_pid=$!
  pg_ticks() { local t=0 p; for p in $(pgrep -x postgres); do
                 t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
  pg_before="$(pg_ticks)"
  start_ns="$(date +%s%N)"
  live="$(load 10s)"
  mid_ns="$(date +%s%N)"
  during="$(recorded)"; during="${during:-0}"
  # Then until the ledger has everything: the counter stops growing (no new chats now).
  current="$(settled)"
  kill "$sampler_pid" 2>/dev/null || true
  peak="$(awk -v m="$mid_ns" '$2 != "" && $1 <= m {t[n] = $1; c[n] = $2; n++}
    END {best = 0; for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (t[j] - t[i] >= 1e9) {
           r = (c[j] - c[i]) / ((t[j] - t[i]) / 1e9); if (r > best) best = r; break }
         printf "%.0f", best}' "$RUN/bench/billing-samples.txt")"
  end_ns="$(date +%s%N)"
  billing_ms="$(awk -v t="$(ticks "$billing_pid")" -v hz="$hz" -v n="$current" 'BEGIN {printf "%.3f", t * 1000 / hz / n}')"
  pg_ms="$(awk -v a="$pg_before" -v b="$(pg_ticks)" -v hz="$hz" -v n="$current" 'BEGIN {printf "%.3f", (b - a) * 1000 / hz / n}')"
  awk -v live="$live" -v during="$during" -v total="$current" -v s="$start_ns" -v m="$mid_ns" -v e="$end_ns" \
      -v bms="$billing_ms" -v pms="$pg_ms" -v peak="$peak" 'BEGIN {
    printf "  billing ingest with the chat path running (best 1 s window while the backlog lasted): %d usage events/s\n", peak
    printf "  chat path: %.0f req/s during phase 2\n", live / ((m - s) / 1e9)
    printf "  billing: %d usage events into the ledger during phase 2 (the backlog and the live ones)\n", during
    printf "  billing: all %d in the ledger %.1f s after the load stopped (the last second only confirms)\n", total, (e - m) / 1e9
    printf "  CPU per usage event: billing %.3f ms, PostgreSQL %.3f ms (all backends, the orchestrator queries included)\n", bms, pms }'
  exit 0
fi

echo
echo "Switchyard full-path benchmark — $(nproc) cores, $DURATION per case, wrk -t2"
# Warm every path first (connection pools, caches, lazily built tables): unmeasured, 2 s per path.
echo "warming up (6 s, not measured)…"
for warm in "concierge false" "concierge true" "restaurant-host false"; do
  set -- $warm
  cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $SWITCHYARD_API_KEY"
wrk.body = '{"model":"$1","stream":$2,"messages":[{"role":"user","content":"When are you open on Sunday?"}]}'
LUA
  wrk -t2 -c8 -d2s -s "$lua" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" >/dev/null
done
# One connection first: the latency of the chain when nothing queues (each hop's own cost).
run_case "upstream (fake OpenAI) non-stream" concierge false 1
for conns in 16 64; do
  if [ "$conns" = 64 ]; then
    SWITCHYARD_NATS_USER=admin SWITCHYARD_NATS_PASSWORD="$SWITCHYARD_NATS_PASSWORD_ADMIN" \
      "$BIN/switchyard" events hops --nats "$SWITCHYARD_NATS_URL" --count 3000 >"$RUN/bench/hops.txt" 2>&1 & hops_pid=$!
  fi
  run_case "upstream (fake OpenAI) non-stream" concierge false "$conns"
  run_case "upstream (fake OpenAI) stream" concierge true "$conns"
  run_case "local knowledge base non-stream" restaurant-host false "$conns"
done
wait "$hops_pid" 2>/dev/null || true
echo
cat "$RUN/bench/hops.txt"
echo
echo "CPU time used during the whole run (user+sys), where the cores went:"
for pid in "$(cat "$RUN/nats/pid")" $(cat "$RUN/bench/"*.pid) "${pids[0]}"; do
  ps -o comm=,time= -p "$pid" 2>/dev/null | awk '{printf "  %-16s %s\n", $1, $2}'
done
echo
echo "peak RSS per process (VmHWM):"
for name in router orchestrator api-gateway; do
  pid="$(cat "$RUN/bench/$name.pid")"
  printf "  %-14s %s\n" "$name" "$(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
done
