#!/usr/bin/env bash
# make k8s-check: renders every kustomize overlay under k8s/overlays with `kubectl kustomize` and validates it
# against the Kubernetes API schemas with kubernetes-validate (PyPI) in strict mode (unknown fields are errors,
# and so is a kind it has no schema for); then the checks a schema cannot make (k8s/checks/policy.py: hardening,
# probes, resources, grace periods, disruption budgets, NATS users and stream replicas, default-deny, Secret keys)
# and, where promtool is installed, `promtool check config` on the Prometheus configuration. Before that:
#   - k8s/components/nats/auth.conf must be what scripts/k8s-nats-auth.sh renders from scripts/nats-auth.conf.tmpl;
#   - every folder under Services/ but switchyard-cli must have its Deployment in k8s/base.
# kubernetes-validate is installed once into a venv under .build/k8s-venv (PEP 668: not into the system Python).
# Environment: K8S_VERSION (default 1.30.0, the oldest Kubernetes the manifests support) picks the schemas.
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

K8S_VERSION="${K8S_VERSION:-1.30.0}"
VALIDATE_VERSION="1.37.0"  # kubernetes-validate, pinned: it ships the schemas of Kubernetes 1.25 to 1.37
VENV="$ROOT/.build/k8s-venv"
# Kustomize reads observability/prometheus/rules.yml, outside k8s/ (components/prometheus).
KUSTOMIZE=(kubectl kustomize --load-restrictor LoadRestrictionsNone)

say() { echo "k8s-check: $*"; }
fail() { echo "k8s-check: FAILED: $*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl not found (it brings kustomize: 'kubectl kustomize')"
command -v python3 >/dev/null || fail "python3 not found (make deps)"

# kubernetes-validate in its own venv, installed on first use or when the pinned version changes.
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$VALIDATE_VERSION"; then
  say "installing kubernetes-validate $VALIDATE_VERSION into ${VENV#"$ROOT"/} (once)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" || fail "python3 -m venv failed (Debian: apt-get install python3-venv, or make deps)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION" \
    || fail "pip could not install kubernetes-validate==$VALIDATE_VERSION"
fi
VALIDATE="$VENV/bin/kubernetes-validate"
PY="$VENV/bin/python"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/k8s-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

say "NATS users: k8s/components/nats/auth.conf against scripts/nats-auth.conf.tmpl"
./scripts/k8s-nats-auth.sh --check || fail "k8s/components/nats/auth.conf is stale (run scripts/k8s-nats-auth.sh)"

say "base: every service under Services/ has its Deployment"
"${KUSTOMIZE[@]}" k8s/base >"$WORK/base.yaml" 2>"$WORK/base.err" || { cat "$WORK/base.err" >&2; fail "kubectl kustomize k8s/base"; }
"$PY" k8s/checks/policy.py services "$WORK/base.yaml" Services || fail "services without a Deployment in k8s/base"

overlays=()
for dir in k8s/overlays/*/; do
  [ -f "$dir/kustomization.yaml" ] && overlays+=("$(basename "$dir")")
done
[ "${#overlays[@]}" -gt 0 ] || fail "no overlays under k8s/overlays"

for overlay in "${overlays[@]}"; do
  out="$WORK/$overlay.yaml"
  if ! "${KUSTOMIZE[@]}" "k8s/overlays/$overlay" >"$out" 2>"$WORK/$overlay.err"; then
    cat "$WORK/$overlay.err" >&2
    fail "$overlay: kubectl kustomize k8s/overlays/$overlay"
  fi
  count="$(grep -c '^kind: ' "$out" || true)"
  say "$overlay: rendered $count resources; validating against Kubernetes $K8S_VERSION (strict)"
  # --quiet prints only problems. A WARN is a kind without a schema (a CRD): it was not validated, so it fails.
  report="$("$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$out" 2>&1)" && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$report" ]; then
    printf '%s\n' "$report" | sed "s|$out|k8s/overlays/$overlay (rendered)|" >&2
    fail "$overlay: kubernetes-validate --strict reported the problems above"
  fi
  "$PY" k8s/checks/policy.py overlay "$overlay" "$out" k8s/components/nats/auth.conf || fail "$overlay: policy checks"
  # The prometheus component's ConfigMap, written out as Prometheus reads it (rules.yml beside prometheus.yml).
  "$PY" - "$out" "$WORK/prom-$overlay" <<'PY'
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("prometheus-config")]
os.makedirs(sys.argv[2])
for cm in cms[:1]:
    for name, text in cm["data"].items():
        open(os.path.join(sys.argv[2], name), "w").write(text)
PY
  if [ ! -f "$WORK/prom-$overlay/prometheus.yml" ]; then
    say "$overlay: no prometheus component; no Prometheus configuration to check"
  elif command -v promtool >/dev/null; then
    prom="$WORK/prom-$overlay/prometheus.yml"
    note="scrape config, relabelling and rules"
    if ! promtool check config "$prom" >"$WORK/promtool.log" 2>&1; then
      if grep -q "field kubernetes_sd_configs not found" "$WORK/promtool.log"; then
        # Debian's promtool is built without Kubernetes service discovery: check the rest of the configuration
        # with the discovery block replaced by an empty static target list.
        "$PY" - "$prom" <<'PY'
import sys, yaml
path = sys.argv[1]
config = yaml.safe_load(open(path))
for job in config.get("scrape_configs") or []:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": []}]
yaml.safe_dump(config, open(path, "w"))
PY
        note="relabelling and rules; this promtool has no Kubernetes discovery, so kubernetes_sd_configs was not checked"
        promtool check config "$prom" >"$WORK/promtool.log" 2>&1 \
          || { cat "$WORK/promtool.log" >&2; fail "$overlay: promtool check config"; }
      else
        cat "$WORK/promtool.log" >&2
        fail "$overlay: promtool check config"
      fi
    fi
    say "$overlay: promtool check config: ok ($note)"
  else
    say "$overlay: promtool not installed; Prometheus configuration not checked"
  fi
done

say "ok: ${#overlays[@]} overlays (${overlays[*]}) rendered and valid against Kubernetes $K8S_VERSION (strict)"
