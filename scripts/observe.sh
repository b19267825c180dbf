#!/usr/bin/env bash
# make observe: a local Prometheus (Debian package) that scrapes every service `make run` / `make up` started, with
# observability/prometheus/rules.yml loaded, so the alerts and SLO recordings can be watched locally at
# http://127.0.0.1:9090 (Alerts, Graph). Runs in the foreground; Ctrl-C stops it. Data in .run/prometheus/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.run/prometheus"
PORT="${SWITCHYARD_PROMETHEUS_PORT:-9090}"
command -v prometheus >/dev/null || ./scripts/deps.sh
mkdir -p "$RUN/data"
# Ops ports as scripts/run.sh assigns them; the job name is the service (the rules select on it).
cat >"$RUN/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
  evaluation_interval: 30s
rule_files:
  - $PWD/observability/prometheus/rules.yml
scrape_configs:
YAML
for entry in api-gateway:9083 router:9081 orchestrator:9082 tenant:9084 billing:9085 analytics:9086 eval:9087; do
  cat >>"$RUN/prometheus.yml" <<YAML
  - job_name: ${entry%%:*}
    static_configs:
      - targets: ["127.0.0.1:${entry##*:}"]
        labels: {instance: "${entry%%:*}-1"}
YAML
done
promtool check config "$RUN/prometheus.yml" >/dev/null
curl -s -o /dev/null "http://127.0.0.1:9083/live" || echo "note: the services don't answer yet; start them with make up (Prometheus keeps trying)"
echo "Prometheus on http://127.0.0.1:$PORT (alerts: /alerts, rules: /rules); Ctrl-C stops it"
exec prometheus --config.file="$RUN/prometheus.yml" --storage.tsdb.path="$RUN/data" \
  --web.listen-address="127.0.0.1:$PORT" --log.level=warn
