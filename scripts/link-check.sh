#!/usr/bin/env bash
# make link-check: shows each service's target graph (from Package.swift) and fails if api-gateway or router
# depend on libpq (CLibPQ / Storage), in the package graph or, when built, in the binary's linked libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
swift package describe --type json 2>/dev/null | python3 -c '
import json, sys
targets = {t["name"]: t.get("target_dependencies", []) for t in json.load(sys.stdin)["targets"]}
def closure(name, seen=None):
    seen = set() if seen is None else seen
    for dep in targets.get(name, []):
        if dep not in seen:
            seen.add(dep)
            closure(dep, seen)
    return seen
failed = False
for service in ["api-gateway", "router", "orchestrator", "tenant", "switchyard"]:
    deps = closure(service)
    ours = sorted(d for d in deps if d in targets)
    libpq = "CLibPQ" in deps
    print("%-13s -> %s" % (service, ", ".join(ours)))
    if service in ("api-gateway", "router") and libpq:
        print(f"link-check: {service} depends on CLibPQ (libpq) through its targets", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
'
for binary in api-gateway router; do
  for dir in .build/debug .build/release; do
    [ -x "$dir/$binary" ] || continue
    if ldd "$dir/$binary" | grep -q libpq; then
      echo "link-check: $dir/$binary links libpq" >&2
      exit 1
    fi
    echo "$dir/$binary: no libpq among $(ldd "$dir/$binary" | wc -l) linked libraries"
  done
done
