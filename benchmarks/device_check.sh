#!/usr/bin/env bash
# The prepared device check (benchmarks/device_check.py): edn_jax's figures on one accelerator.
#
# On the lent GPU machine (its python3 has jax, flax, optax, orbax, opencv and torch, not
# ml_collections), once, here in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl ml_collections==1.1.0
# then one device run with carry [".whl"] and the command
#   EDN_CHECK_WHEELS=.whl benchmarks/device_check.sh
# (results under $OUT/device_check.jsonl). Anywhere, the same measurements at tiny shapes:
#   benchmarks/device_check.sh --size tiny --jobs 2
#
# Environment: EDN_CHECK_PYTHON (python3; .venv/bin/python when it exists), EDN_CHECK_WHEELS (a
# folder of wheels to put on the path first), EDN_TORCH_PYTHON (the interpreter with torch; default
# the same). Other arguments go to benchmarks/device_check.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${EDN_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -n "${EDN_CHECK_WHEELS:-}" ]; then
  ls "$EDN_CHECK_WHEELS"/*.whl >/dev/null 2>&1 || { echo "error: no wheels in EDN_CHECK_WHEELS=$EDN_CHECK_WHEELS; download them as this script's header says" >&2; exit 2; }
  site=$(mktemp -d /tmp/edn_check_site.XXXXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$EDN_CHECK_WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Each measurement is its own process: none may take the device's memory up front, and each
# process's peak is its own.
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.device_check --torch_python "${EDN_TORCH_PYTHON:-$PY}" "$@"
