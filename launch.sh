#!/usr/bin/env bash
# edn_jax launcher: sets up .venv on first use, then runs a job.
#
#   ./launch.sh demo [extra --config.x=y flags]   the main job on the built-in synthetic subject
#   ./launch.sh test [pytest args]                the whole test suite
#   ./launch.sh run --config configs/X.py --workdir DIR [flags]   any edn_jax.main job
#   ./launch.sh setup                             only create/refresh .venv
#
# The venv is rebuilt when requirements.txt changes (a hash stamp in .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${EDN_PYTHON:-python3.11}"
VENV=.venv

setup() {
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install Python 3.11 or set EDN_PYTHON to a python3.11 binary" >&2
    exit 2
  fi
  local want have=""
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  [ -f "$VENV/.requirements.sha256" ] && have=$(cat "$VENV/.requirements.sha256")
  if [ "$want" != "$have" ]; then
    echo "[launch] setting up $VENV (first use or requirements.txt changed)..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -r requirements.txt >&2
    "$VENV/bin/python" -m pip check >&2
    echo "$want" > "$VENV/.requirements.sha256"
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup ;;
  demo)
    setup
    exec "$VENV/bin/python" -m edn_jax.main --config configs/demo.py \
      --workdir "${EDN_DEMO_WORKDIR:-runs/demo}" "$@" ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest -q tests data_builders "$@" ;;
  run)
    setup
    exec "$VENV/bin/python" -m edn_jax.main "$@" ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac
