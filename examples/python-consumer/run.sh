#!/usr/bin/env bash
# Sets up and runs the Python consumer: a virtualenv with requirements.txt (from PyPI) in .venv/, the classes
# generated from Proto/ by protoc into gen/, then consume.py with the arguments given (default env file:
# the repository's .run/demo.env, which `make run` writes).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
if [ ! -x "$HERE/.venv/bin/python" ]; then
  echo "creating $HERE/.venv and installing requirements…" >&2
  python3 -m venv "$HERE/.venv"
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
fi
rm -rf "$HERE/gen" && mkdir -p "$HERE/gen"
(cd "$ROOT/Proto" && protoc --python_out="$HERE/gen" switchyard/v1/*.proto)
export SWITCHYARD_ENV_FILE="${SWITCHYARD_ENV_FILE:-$ROOT/.run/demo.env}"
exec "$HERE/.venv/bin/python" "$HERE/consume.py" "$@"
