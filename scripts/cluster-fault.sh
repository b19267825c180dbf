#!/usr/bin/env bash
# make cluster-fault: a NATS node dies under load, with `make cluster-up` running (scripts/cluster.sh).
#   scripts/cluster-fault.sh [--seconds 60] [--kill-at 20] [--restart-at 40] [--node usage-leader]
#                            [--threads 2] [--connections 16] [--keep-limits]
# Lifts the demo plan's RPM/TPM limits (so 429s hide no error; put back afterwards unless --keep-limits), then
# runs one wrk per gateway (POST /v1/chat/completions, --threads/--connections each, 30 s client timeout) for
# --seconds, SIGKILLs one NATS node at --kill-at and starts it again at --restart-at. --node picks it: 1, 2, 3,
# usage-leader (the node leading stream USAGE, the default), meta-leader, busiest (most client connections) or
# follower (leads neither USAGE nor the meta group).
# Then waits until billing has settled (durable billing-usage with nothing pending or unacknowledged) and reports:
# requests, statuses, p50/p90/p99/max over both gateways (wrk's latency histograms merged; wrk corrects them for
# coordinated omission, so a stall counts for every request it held up), a 5 s timeline,
# node down time, and the reconciliation — 2xx answers vs usage events in stream USAGE vs billing_ledger rows,
# answer by answer (the ids of 2xx answers against the ledger's request ids). Everything lands in
# .run-cluster/fault/<time>/ (report.txt, wrk output, ids, new warning/error log lines). Exit 1 when usage of an
# answered request is missing from the ledger, billed twice, or the usage log and the ledger disagree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# scripts/cluster.sh's ports and helpers (monitor_get, http_port, node_healthy, meta_leader …).
# shellcheck source=scripts/cluster.sh
source "$ROOT/scripts/cluster.sh"
cd "$ROOT"

DURATION=60 KILL_AT=20 RESTART_AT=40 NODE_CHOICE=usage-leader THREADS=2 CONNECTIONS=16 KEEP_LIMITS=0
TENANT=demo-restaurant
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) DURATION="$2"; shift 2 ;;
    --kill-at) KILL_AT="$2"; shift 2 ;;
    --restart-at) RESTART_AT="$2"; shift 2 ;;
    --node) NODE_CHOICE="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --keep-limits) KEEP_LIMITS=1; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ "$KILL_AT" -lt "$RESTART_AT" ] && [ "$RESTART_AT" -lt "$DURATION" ] ||
  { echo "need --kill-at < --restart-at < --seconds" >&2; exit 64; }

BIN="${SWITCHYARD_BIN:-$ROOT/.build/$CONFIG}"
OUT="$RUN/fault/$(date +%Y%m%d-%H%M%S)"
now_ms() { local t="$EPOCHREALTIME"; echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )); }
psql_c() { psql -h 127.0.0.1 -p "$PG_PORT" -U switchyard -d switchyard -v ON_ERROR_STOP=1 -qtAX "$@"; }

# MARK: preflight

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -f "$RUN/demo.env" ] && [ -f "$RUN/admin.env" ] || { echo "no cluster here: start it with make cluster-up" >&2; exit 1; }
for n in "${NODES[@]}"; do
  node_healthy "$n" || { echo "NATS node n$n is not healthy: start the cluster with make cluster-up" >&2; exit 1; }
done
for name in "${SERVICES[@]}"; do
  for r in "${REPLICAS[@]}"; do
    kill -0 "$(cat "$RUN/pids/$name-$r.pid" 2>/dev/null || echo 0)" 2>/dev/null ||
      { echo "$name-$r is not running: start the cluster with make cluster-up" >&2; exit 1; }
  done
done
mkdir -p "$OUT"
exec > >(tee "$OUT/output.txt") 2>&1
# shellcheck disable=SC1091
source "$RUN/demo.env"
# shellcheck disable=SC1091
source "$RUN/admin.env"
S="$BIN/switchyard"

# Reads the stream leader's view of stream $1 from /jsz (consumers included) into $OUT/jsz-now.json; prints
# "messages leader" and, with $2 = a durable, "pending ack_pending" of that durable.
stream_view() {
  local n
  for n in "${NODES[@]}"; do
    monitor_get "$n" "/jsz?accounts=true&streams=true&consumers=true" >"$OUT/jsz-n$n-now.json"
  done
  python3 - "$1" "${2:-}" "$OUT"/jsz-n*-now.json <<'PY'
import json, os, sys
stream, durable, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
best = None
for path in paths:
    me = os.path.basename(path).split("-")[1]   # jsz-n<N>-now.json: /jsz does not name its server
    try:
        doc = json.load(open(path))
    except Exception:
        continue
    for account in doc.get("account_details") or []:
        for s in account.get("stream_detail") or []:
            if s["name"] != stream:
                continue
            leader = (s.get("cluster") or {}).get("leader")
            mine = me == leader
            c = next((c for c in s.get("consumer_detail") or [] if c["name"] == durable), None)
            if durable:
                cl = (c or {}).get("cluster") or {}
                mine = me == cl.get("leader")
            if best is None or mine:
                best = (s, c, leader)
if best is None:
    print("? ? ? ?"); sys.exit(0)
s, c, leader = best
out = [str((s.get("state") or {}).get("messages", "?")), leader or "-"]
if durable:
    out += [str((c or {}).get("num_pending", "?")), str((c or {}).get("num_ack_pending", "?"))]
print(" ".join(out))
PY
}
ledger_rows() { psql_c -c "SELECT count(*) FROM billing_ledger WHERE tenant_id = '$TENANT'"; }
# Sum over both gateways of the chat route's HTTP responses by status class: "2xx other".
gateway_counts() {
  local r ok=0 other=0 line status count
  for r in "${REPLICAS[@]}"; do
    while read -r line; do
      status="$(sed -E 's/.*status="([0-9]+)".*/\1/' <<<"$line")"
      count="${line##* }"; count="${count%.*}"
      if [ "${status:0:1}" = 2 ]; then ok=$((ok + count)); else other=$((other + count)); fi
    done < <(curl -s --max-time 2 "http://127.0.0.1:$(ops_port api-gateway "$r")/metrics" |
               grep -E '^http_request_duration_seconds_count\{method="POST",route="/v1/chat/completions"' || true)
  done
  echo "$ok $other"
}

# MARK: plan limits

read -r OLD_RPM OLD_TPM < <("$S" tenant show "$TENANT" --json | python3 -c 'import json,sys; p=json.load(sys.stdin)["plan"]; print(p.get("rpm",0), p.get("tpm",0))')
PLAN_ID="$("$S" tenant show "$TENANT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["plan"]["id"])')"
log "lifting plan $PLAN_ID's limits (rpm $OLD_RPM, tpm $OLD_TPM → unlimited) so that 429s hide no error"
"$S" plan set --tenant "$TENANT" --plan "$PLAN_ID" --rpm 0 --tpm 0 >/dev/null
restore_limits() {
  [ "$KEEP_LIMITS" = 1 ] && return
  "$S" plan set --tenant "$TENANT" --plan "$PLAN_ID" --rpm "$OLD_RPM" --tpm "$OLD_TPM" >/dev/null &&
    log "plan $PLAN_ID's limits restored (rpm $OLD_RPM, tpm $OLD_TPM)"
}
WRK_PIDS=()
RESTART_PID=""
cleanup() {
  local pid
  for pid in "${WRK_PIDS[@]}" $RESTART_PID; do kill "$pid" 2>/dev/null || true; done
  restore_limits || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
sleep 2   # the gateways see the plan through their KV watch within a second

# MARK: the node to kill

read -r _ USAGE_LEADER < <(stream_view USAGE)
META_LEADER="$(meta_leader)"
case "$NODE_CHOICE" in
  1 | 2 | 3) NODE="$NODE_CHOICE" ;;
  usage-leader) NODE="${USAGE_LEADER#n}" ;;
  meta-leader) NODE="${META_LEADER#n}" ;;
  busiest)
    NODE="" best=-1
    for n in "${NODES[@]}"; do
      c="$(monitor_get "$n" /varz | python3 -c 'import json,sys; print(json.load(sys.stdin).get("connections", 0))')"
      [ "$c" -gt "$best" ] && { best="$c"; NODE="$n"; }
    done ;;
  follower)
    NODE=""
    for n in "${NODES[@]}"; do [ "n$n" != "$USAGE_LEADER" ] && [ "n$n" != "$META_LEADER" ] && { NODE="$n"; break; }; done ;;
  *) echo "--node must be 1, 2, 3, usage-leader, meta-leader, busiest or follower" >&2; exit 64 ;;
esac
case "$NODE" in 1 | 2 | 3) ;; *) echo "could not pick a node for --node $NODE_CHOICE" >&2; exit 1 ;; esac
check_streams >"$OUT/streams-before.txt" 2>&1 || true
LED="$(awk -v n="n$NODE" '$3 == n {print $1}' "$OUT/streams-before.txt" | paste -sd, -)"
# A durable's leader need not be its stream's: list the durables the node leads (from check_streams' /jsz files).
LED_DURABLES="$(python3 - "n$NODE" "$RUN"/nats/jsz-n?.json <<'PY'
import json, sys
node, led = sys.argv[1], set()
for path in sys.argv[2:]:
    try:
        doc = json.load(open(path))
    except Exception:
        continue
    for account in doc.get("account_details") or []:
        for s in account.get("stream_detail") or []:
            for c in s.get("consumer_detail") or []:
                if (c.get("config") or {}).get("durable_name") and (c.get("cluster") or {}).get("leader") == node:
                    led.add(f"{s['name']}/{c['name']}")
print(", ".join(sorted(led)))
PY
)"
CONNS="$(monitor_get "$NODE" "/connz?auth=true&limit=1024" |
  python3 -c 'import json,sys; print(", ".join(sorted(c.get("name") or "?" for c in json.load(sys.stdin).get("connections") or [])))')"
log "node to kill: n$NODE ($NODE_CHOICE; meta leader $META_LEADER, USAGE leader $USAGE_LEADER)"
log "  it leads streams: ${LED:-none}"
log "  and durables: ${LED_DURABLES:-none}"
log "  clients connected to it: ${CONNS:-none}"

# MARK: baseline

read -r USAGE0 _ < <(stream_view USAGE)
read -r DLQ0 _ < <(stream_view DEADLETTER)
LEDGER0="$(ledger_rows)"
read -r GW_OK0 GW_OTHER0 < <(gateway_counts)
declare -A LOG_OFFSET=()
for f in "$RUN"/logs/*.log "$RUN"/nats/n?.log; do LOG_OFFSET[$f]="$(stat -c %s "$f")"; done
log "baseline: USAGE $USAGE0 messages, ledger $LEDGER0 rows for $TENANT, DEADLETTER $DLQ0"

# MARK: load

cat >"$OUT/load.lua" <<'LUA'
-- Generated by scripts/cluster-fault.sh. One chat per request; per thread: statuses, 2xx/other per second, a
-- few bodies of non-2xx answers, the ids of 2xx answers (one file per thread, line-buffered); done() writes the
-- latency histogram (µs value, count) so that both gateways' runs merge into exact percentiles.
local out = os.getenv("FAULT_OUT")
wrk.method = "POST"
wrk.body = '{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SWITCHYARD_API_KEY")

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- wrk copies only flat tables between its Lua states (a nested one crashes thread:get), hence one table per figure.
function init(args)
  statuses, sec_ok, sec_other, samples, sampled = {}, {}, {}, {}, {}
  ids = io.open(out .. "-ids-" .. tid .. ".txt", "w")
  ids:setvbuf("line")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local now = os.time()
  if status >= 200 and status < 300 then
    sec_ok[now] = (sec_ok[now] or 0) + 1
    ids:write((body:match('"id"%s*:%s*"chatcmpl%-([^"]+)"') or "?") .. "\n")
  else
    sec_other[now] = (sec_other[now] or 0) + 1
    sampled[status] = (sampled[status] or 0) + 1
    if sampled[status] <= 3 then
      samples[status .. ":" .. sampled[status]] = ((body or ""):sub(1, 300):gsub("[\r\n]", " "))
    end
  end
end

function done(summary, latency, requests)
  local f = io.open(out .. "-summary.txt", "w")
  local e = summary.errors
  f:write(string.format("requests %d\nduration_us %d\n", summary.requests, summary.duration))
  f:write(string.format("errors %d %d %d %d %d\n", e.connect, e.read, e.write, e.timeout, e.status))
  for i = 1, #latency do
    local v, c = latency(i)
    f:write(string.format("hist %d %d\n", v, c))
  end
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do f:write(string.format("status %d %d\n", k, v)) end
    for k, v in pairs(t:get("sec_ok")) do f:write(string.format("second %d %d 0\n", k, v)) end
    for k, v in pairs(t:get("sec_other")) do f:write(string.format("second %d 0 %d\n", k, v)) end
    for k, v in pairs(t:get("samples")) do f:write(string.format("sample %s %s\n", k:match("^%d+"), v)) end
  end
  f:close()
end
LUA

log "load: ${DURATION} s, one wrk per gateway (-t$THREADS -c$CONNECTIONS, ports $(http_port api-gateway 1) and $(http_port api-gateway 2)); n$NODE killed at ${KILL_AT} s, restarted at ${RESTART_AT} s"
T0="$(now_ms)"
LOAD0="$(cut -d' ' -f1 /proc/loadavg)"
for r in "${REPLICAS[@]}"; do
  FAULT_OUT="$OUT/gw$r" SWITCHYARD_API_KEY="$SWITCHYARD_API_KEY" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s --latency -s "$OUT/load.lua" \
    "http://127.0.0.1:$(http_port api-gateway "$r")/v1/chat/completions" >"$OUT/wrk-gw$r.txt" 2>&1 &
  WRK_PIDS+=($!)
done

KILLED_MS="" RESTARTED_MS=""
last_ok="$GW_OK0" last_other="$GW_OTHER0" next_report=5
while :; do
  elapsed=$(( ($(now_ms) - T0) / 1000 ))
  if [ -z "$KILLED_MS" ] && [ "$elapsed" -ge "$KILL_AT" ]; then
    ./scripts/cluster.sh node-kill "$NODE" | sed 's/^/  /'
    KILLED_MS="$(now_ms)"
    log "t=$(( (KILLED_MS - T0) / 1000 )) s: n$NODE SIGKILLed"
  fi
  if [ -z "$RESTARTED_MS" ] && [ "$elapsed" -ge "$RESTART_AT" ]; then
    RESTARTED_MS="$(now_ms)"
    log "t=$(( (RESTARTED_MS - T0) / 1000 )) s: starting n$NODE again"
    ( ./scripts/cluster.sh node-start "$NODE" >"$OUT/node-start.txt" 2>&1; echo "$? $(now_ms)" >"$OUT/node-healthy.txt" ) &
    RESTART_PID=$!
  fi
  if [ "$elapsed" -ge "$next_report" ]; then
    read -r ok other < <(gateway_counts)
    log "t=${elapsed} s: last 5 s through the gateways: $((ok - last_ok)) 2xx, $((other - last_other)) other"
    last_ok="$ok" last_other="$other" next_report=$((next_report + 5))
  fi
  alive=0
  for pid in "${WRK_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.25
done
for pid in "${WRK_PIDS[@]}"; do wait "$pid" || true; done
WRK_PIDS=()
LOAD1="$(cut -d' ' -f1 /proc/loadavg)"
log "load done; waiting for n$NODE to be healthy again…"
wait "$RESTART_PID" || true
RESTART_PID=""
read -r START_RC HEALTHY_MS <"$OUT/node-healthy.txt"
[ "$START_RC" = 0 ] || { cat "$OUT/node-start.txt" >&2; echo "n$NODE did not come back healthy" >&2; }

# MARK: settle

log "waiting until billing has settled (durable billing-usage: nothing pending, nothing unacknowledged)…"
prev="" settled=0
for i in $(seq 1 240); do
  read -r usage _ pending ackp < <(stream_view USAGE billing-usage)
  ledger="$(ledger_rows)"
  if [ "$pending" = 0 ] && [ "$ackp" = 0 ] && [ "$prev" = "$usage/$ledger" ]; then settled=1; break; fi
  prev="$usage/$ledger"
  [ $((i % 5)) = 0 ] && log "  USAGE $usage messages, ledger $ledger rows, billing-usage pending $pending, unacknowledged $ackp"
  sleep 1
done
[ "$settled" = 1 ] || log "billing did NOT settle within 240 s (pending $pending, unacknowledged $ackp)"
read -r USAGE1 _ < <(stream_view USAGE)
read -r DLQ1 _ < <(stream_view DEADLETTER)
LEDGER1="$(ledger_rows)"
read -r GW_OK1 GW_OTHER1 < <(gateway_counts)
check_streams >"$OUT/streams-after.txt" 2>&1 || true

# MARK: reconciliation, answer by answer

cat "$OUT"/gw?-ids-*.txt >"$OUT/answered-ids.txt" 2>/dev/null || : >"$OUT/answered-ids.txt"
T0_SQL="to_timestamp($T0 / 1000.0)"
psql_c >"$OUT/reconcile.txt" <<SQL
CREATE TEMP TABLE answered (request_id text);
\copy answered FROM '$OUT/answered-ids.txt'
SELECT 'answered_ids', count(*), count(DISTINCT request_id) FROM answered;
SELECT 'answered_without_ledger_row', count(*) FROM (SELECT DISTINCT request_id FROM answered) a
  WHERE NOT EXISTS (SELECT 1 FROM billing_ledger l WHERE l.tenant_id = '$TENANT' AND l.request_id = a.request_id);
SELECT 'request_ids_billed_twice', count(*) FROM (SELECT request_id FROM billing_ledger
  WHERE tenant_id = '$TENANT' AND request_id IN (SELECT request_id FROM answered) GROUP BY request_id HAVING count(*) > 1) d;
SELECT 'ledger_rows_since_start', count(*) FROM billing_ledger WHERE tenant_id = '$TENANT' AND recorded_at >= $T0_SQL;
SELECT 'ledger_rows_not_answered_2xx', count(*) FROM billing_ledger l WHERE l.tenant_id = '$TENANT'
  AND l.recorded_at >= $T0_SQL AND NOT EXISTS (SELECT 1 FROM answered a WHERE a.request_id = l.request_id);
\copy (SELECT DISTINCT a.request_id FROM answered a WHERE NOT EXISTS (SELECT 1 FROM billing_ledger l WHERE l.tenant_id = '$TENANT' AND l.request_id = a.request_id)) TO '$OUT/lost-ids.txt'
\copy (SELECT l.request_id, l.event_id, l.stream_sequence, l.occurred_at FROM billing_ledger l WHERE l.tenant_id = '$TENANT' AND l.recorded_at >= $T0_SQL AND NOT EXISTS (SELECT 1 FROM answered a WHERE a.request_id = l.request_id)) TO '$OUT/unanswered-ledger-rows.txt'
SQL

# New warning/error lines in the logs since the load started, counted per file and message.
for f in "${!LOG_OFFSET[@]}"; do
  tail -c +"$(( ${LOG_OFFSET[$f]} + 1 ))" "$f" | grep -E '"level":"(warning|error|critical)"|\[(ERR|WRN)\]' |
    sed "s|^|$(basename "$f" .log) |" || true
done >"$OUT/new-log-problems.txt"

rc=0
python3 - "$OUT" "$T0" "${KILLED_MS:-0}" "${RESTARTED_MS:-0}" "${HEALTHY_MS:-0}" "$NODE" "$NODE_CHOICE" \
  "$USAGE0" "$USAGE1" "$LEDGER0" "$LEDGER1" "$GW_OK0" "$GW_OK1" "$GW_OTHER0" "$GW_OTHER1" "$DLQ0" "$DLQ1" \
  "$settled" "$DURATION" <<'PY' | tee "$OUT/report.txt" || rc=$?
import collections, glob, json, os, re, sys
(out, t0, killed, restarted, healthy, node, choice, u0, u1, l0, l1, g0, g1, o0, o1, d0, d1, settled,
 duration) = sys.argv[1:]
t0, killed, restarted, healthy = int(t0), int(killed), int(restarted), int(healthy)
statuses, hist, seconds, samples = collections.Counter(), collections.Counter(), collections.defaultdict(lambda: [0, 0]), {}
requests, errors = 0, [0, 0, 0, 0, 0]
per_gw = {}
for path in sorted(glob.glob(f"{out}/gw?-summary.txt")):
    gw = os.path.basename(path)[:3]
    gw_req, gw_st = 0, collections.Counter()
    for line in open(path):
        kind, _, rest = line.rstrip("\n").partition(" ")
        if kind == "requests": gw_req = int(rest); requests += gw_req
        elif kind == "errors": errors = [a + int(b) for a, b in zip(errors, rest.split())]
        elif kind == "hist": v, c = map(int, rest.split()); hist[v] += c
        elif kind == "status": k, v = map(int, rest.split()); statuses[k] += v; gw_st[k] += v
        elif kind == "second": s, ok, bad = map(int, rest.split()); seconds[s][0] += ok; seconds[s][1] += bad
        elif kind == "sample":
            k, _, body = rest.partition(" "); samples.setdefault(int(k), []).append(body)
    per_gw[gw] = (gw_req, gw_st)
def pct(p):
    total = sum(hist.values()); target = total * p / 100; run = 0
    for v in sorted(hist):
        run += hist[v]
        if run >= target: return v / 1000
    return float("nan")
rec = {}
for line in open(f"{out}/reconcile.txt"):
    parts = line.strip().split("|")
    if parts and parts[0]: rec[parts[0]] = [int(x) for x in parts[1:]]
ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
non2xx = {k: v for k, v in sorted(statuses.items()) if not 200 <= k < 300}
usage, ledger = int(u1) - int(u0), int(l1) - int(l0)
gw_ok, gw_other = int(g1) - int(g0), int(o1) - int(o0)
lost = rec.get("answered_without_ledger_row", [0])[0]
twice = rec.get("request_ids_billed_twice", [0])[0]
unanswered = rec.get("ledger_rows_not_answered_2xx", [0])[0]
fmt = lambda ms: f"{ms / 1000:.1f} s"
print()
print(f"fault run {os.path.basename(out)}: {duration} s of load, NATS node n{node} ({choice}) SIGKILLed")
print(f"  node down        killed at t={fmt(killed - t0)}, started again at t={fmt(restarted - t0)} "
      f"(down {fmt(restarted - killed)}), healthy again at t={fmt(healthy - t0)} ({fmt(healthy - restarted)} after its start)")
print(f"  requests         {requests} answered within wrk's run ({', '.join(f'{g}: {r}' for g, (r, _) in per_gw.items())}); "
      f"{requests / int(duration):.0f}/s")
print(f"  statuses         " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
print(f"  non-2xx          {sum(non2xx.values())}" + (f" ({', '.join(f'{k}: {v}' for k, v in non2xx.items())})" if non2xx else ""))
print(f"  socket errors    connect {errors[0]}, read {errors[1]}, write {errors[2]}, timeout {errors[3]}")
print(f"  latency          p50 {pct(50):.1f} ms, p90 {pct(90):.1f} ms, p99 {pct(99):.1f} ms, max {max(hist) / 1000 if hist else 0:.1f} ms")
print(f"  2xx answers      wrk {ok} (ids {rec.get('answered_ids', [0, 0])[0]}, distinct {rec.get('answered_ids', [0, 0])[1]}); "
      f"gateways' own count {gw_ok} 2xx, {gw_other} other (includes answers wrk stopped waiting for)")
print(f"  usage events     {usage} new in stream USAGE")
print(f"  ledger rows      {ledger} new in billing_ledger for demo-restaurant (billing {'settled' if settled == '1' else 'NOT settled'})")
print(f"  answer by answer {lost} 2xx answers without a ledger row, {twice} request ids billed twice, "
      f"{unanswered} ledger rows of requests wrk saw no 2xx for")
print(f"  dead letters     {int(d1) - int(d0)} new in DEADLETTER")
print("  timeline (5 s windows from the start: 2xx / other):")
line = []
for w in range(0, int(duration) + 5, 5):
    a = sum(seconds[s][0] for s in seconds if w <= s - t0 // 1000 < w + 5)
    b = sum(seconds[s][1] for s in seconds if w <= s - t0 // 1000 < w + 5)
    if a or b: line.append(f"{w:>2}-{w + 5:<2}s {a}/{b}")
for i in range(0, len(line), 4): print("    " + "   ".join(line[i:i + 4]))
for k, bodies in sorted(samples.items()):
    for b in bodies[:2]: print(f"  sample {k}: {b[:200]}")
# Billed requests wrk got no 2xx for: what the gateways logged for their request ids (an error answer), else
# answered after wrk stopped waiting (in flight at the end of the run).
gw_errors = {}
for line in open(f"{out}/new-log-problems.txt"):
    name, _, text = line.partition(" ")
    if name.startswith("api-gateway"):
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if entry.get("request.id"):
            gw_errors[entry["request.id"]] = f"{entry.get('msg')}: {entry.get('meta.error', '')}"
kinds = collections.Counter()
for line in open(f"{out}/unanswered-ledger-rows.txt"):
    rid = line.split("\t")[0]
    kinds[gw_errors.get(rid, "no gateway error logged (in flight when wrk stopped)")] += 1
if kinds:
    print("  billed, no 2xx   " + "; ".join(f"{v} × {k}" for k, v in kinds.most_common()))
billed_errors = sum(v for k, v in kinds.items() if not k.startswith("no gateway error"))
if billed_errors:
    print(f"  WARNING          {billed_errors} request(s) answered with an error were billed all the same "
          "(the gateway gave up on a publish whose outcome it did not know; see docs/CLUSTER.md)")
verdict = lost == 0 and twice == 0 and usage == ledger and settled == "1"
if verdict:
    print(f"  verdict          no usage lost: every 2xx answer has its ledger row, none twice; "
          f"usage events {usage} = ledger rows {ledger}")
else:
    print(f"  verdict          PROBLEM: {lost} answered without a ledger row, {twice} billed twice, "
          f"usage events {usage} vs ledger rows {ledger}, billing {'settled' if settled == '1' else 'not settled'}")
sys.exit(0 if verdict else 1)
PY
{
  echo "  killed node      n$NODE led streams ${LED:-none}; durables ${LED_DURABLES:-none}"
  echo "                   clients on it before: ${CONNS:-none}"
  echo "  machine          $(nproc) cores; 1-min load average $LOAD0 at the start, $LOAD1 at the end of the load"
  problems="$(wc -l <"$OUT/new-log-problems.txt")"
  echo "  log lines        $problems new warning/error lines (most frequent below; all in $OUT/new-log-problems.txt)"
  python3 - "$OUT/new-log-problems.txt" <<'PY'
import collections, json, re, sys
counts = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    name, _, text = line.rstrip("\n").partition(" ")
    try:
        e = json.loads(text)
        detail = e.get("meta.error") or e.get("nats.status") or e.get("reason") or ""
        key = f"{name} {e.get('level')}: {e.get('msg')}" + (f" ({detail})" if detail else "")
    except ValueError:   # nats-server: "[pid] date time [ERR] message"
        m = re.search(r"\[(ERR|WRN)\] (.*)", text)
        key = f"{name} {m.group(1)}: {re.sub(r'[0-9]+', 'N', m.group(2))[:110]}" if m else f"{name} {text[:110]}"
    counts[key] += 1
for key, n in counts.most_common(15):
    print(f"    {n:>5} {key}")
PY
  echo "  files            $OUT"
} | tee -a "$OUT/report.txt"
exit "$rc"
