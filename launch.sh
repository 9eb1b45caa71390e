#!/usr/bin/env bash
# edn_jax launcher: sets up .venv on first use, then runs a job.
#
#   ./launch.sh demo [extra --config.x=y flags]   the whole method on the built-in synthetic subject:
#                                                 train (runs/demo), then transfer (runs/demo/transfer)
#   ./launch.sh test [pytest args]                the whole test suite (EDN_TEST_WORKERS processes, default 2)
#   ./launch.sh run --config configs/X.py --workdir DIR [flags]   any edn_jax.main job
#   ./launch.sh local --config ... --workdir ... [flags]         the same as run
#   ./launch.sh setup                             only create/refresh .venv
#   ./launch.sh gpu-run --config ... --workdir ... [flags]   on a GPU host: adds jax[cuda12] to .venv, then runs
#
# Cloud TPU VMs and pod slices (run from your machine; needs gcloud):
#   ./launch.sh tpu-create [extra gcloud flags, e.g. --spot]  create the TPU VM / pod slice
#   ./launch.sh tpu-install          copy this checkout (or clone EDN_REPO_URL) to every worker, set up
#                                    .venv there and add jax[tpu]
#   ./launch.sh tpu-run --config ... --workdir ... [flags]   start edn_jax.main on every worker in the
#                                    background (nohup; log in the remote dir); multi-host is automatic
#   ./launch.sh tpu-logs [--all]     follow the log on worker 0 (--all: every worker)
#   ./launch.sh tpu-delete [--yes]   delete the TPU (asks first unless --yes)
#   A TPU VM's disk dies with it: give tpu-run a gs:// --workdir (README, "Cloud TPU"). A preempted
#   spot TPU: tpu-delete --yes, tpu-create --spot, tpu-install, then the same tpu-run command
#   resumes from the bucket's newest checkpoint.
#   TPU settings (environment): TPU_NAME (edn-tpu), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-8;
#   e.g. v4-32, v5litepod-16), TPU_VERSION (tpu-ubuntu2204-base), PROJECT (gcloud's default),
#   EDN_REMOTE_DIR (edn_jax, under the remote home), EDN_REPO_URL / EDN_REPO_REF (clone instead
#   of copying), EDN_TPU_LOG (edn_run.log, in the remote dir).
#
# --dry-run right after the subcommand (or EDN_DRY_RUN=1) prints each command as "+ cmd" and runs
# nothing, not even the venv setup. Multi-process runs elsewhere: see edn_jax/runtime/distributed.py
# (EDN_COORDINATOR_ADDRESS, EDN_NUM_PROCESSES, EDN_PROCESS_ID). The venv is rebuilt when
# requirements.txt changes (a hash stamp in .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${EDN_PYTHON:-python3.11}"
VENV=.venv
JAX_VERSION=0.7.1
LIBTPU_FIND_LINKS=https://storage.googleapis.com/jax-releases/libtpu_releases.html

TPU_NAME="${TPU_NAME:-edn-tpu}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
TPU_VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"
REMOTE_DIR="${EDN_REMOTE_DIR:-edn_jax}"
TPU_LOG="${EDN_TPU_LOG:-edn_run.log}"

DRY=0
case "${EDN_DRY_RUN:-0}" in 0|"") ;; *) DRY=1 ;; esac

die() {  # one line, exit 2 (a usage problem)
  echo "error: $*" >&2
  exit 2
}

quote() {  # one word, shell-quoted like Python's shlex.quote
  local s=$1 sq="'"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//$sq/$sq\\$sq$sq}"
  fi
}

quote_all() {  # the words as one shell command line
  local out="" w
  for w in "$@"; do out+="${out:+ }$(quote "$w")"; done
  printf '%s' "$out"
}

x() {  # run a command, or print it under --dry-run
  if [ "$DRY" = 1 ]; then echo "+ $(quote_all "$@")"; else "$@"; fi
}

xv() {  # the same, and echo it to stderr first when it really runs (remote commands)
  [ "$DRY" = 1 ] || echo "+ $(quote_all "$@")" >&2
  x "$@"
}

xe() {  # the same, with the command's stdout sent to stderr (setup's pip noise)
  if [ "$DRY" = 1 ]; then echo "+ $(quote_all "$@")"; else "$@" >&2; fi
}

x_exec() {  # exec a command, or print it under --dry-run
  if [ "$DRY" = 1 ]; then echo "+ $(quote_all "$@")"; exit 0; fi
  exec "$@"
}

setup() {
  if [ "$DRY" != 1 ] && ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install Python 3.11 or set EDN_PYTHON to a python3.11 binary" >&2
    exit 2
  fi
  local want have=""
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  [ -f "$VENV/.requirements.sha256" ] && have=$(cat "$VENV/.requirements.sha256")
  if [ "$want" != "$have" ]; then
    [ "$DRY" = 1 ] || echo "[launch] setting up $VENV (first use or requirements.txt changed)..." >&2
    [ -x "$VENV/bin/python" ] || x "$PYTHON" -m venv "$VENV"
    xe "$VENV/bin/python" -m pip install -q --upgrade pip
    xe "$VENV/bin/python" -m pip install -q -r requirements.txt
    xe "$VENV/bin/python" -m pip check
    if [ "$DRY" = 1 ]; then echo "+ echo $want > $VENV/.requirements.sha256"; else echo "$want" > "$VENV/.requirements.sha256"; fi
  fi
}

require_job_flags() {  # edn_jax.main needs --config and --workdir; say so before anything slow
  local sub=$1 a have_config=0 have_workdir=0
  shift
  for a in "$@"; do
    case "$a" in
      --config|--config=?*) have_config=1 ;;
      --workdir|--workdir=?*) have_workdir=1 ;;
    esac
  done
  [ "$have_config" = 1 ] || die "$sub needs --config configs/<x>.py (e.g. ./launch.sh $sub --config configs/cpu.py --workdir runs/x)"
  [ "$have_workdir" = 1 ] || die "$sub needs --workdir DIR (e.g. ./launch.sh $sub --config configs/cpu.py --workdir runs/x)"
}

# ----------------------------------------------------------------------------- Cloud TPU

need_gcloud() {
  if [ "$DRY" != 1 ] && ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found; install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install) and run gcloud auth login"
  fi
}

gcloud_tpu() {  # gcloud compute tpus tpu-vm VERB TPU_NAME --zone=... [--project=...] ARGS...
  local verb=$1
  shift
  need_gcloud
  xv gcloud compute tpus tpu-vm "$verb" "$TPU_NAME" "--zone=$ZONE" ${PROJECT:+"--project=$PROJECT"} "$@"
}

on_workers() {  # WORKER COMMAND: run a shell command line on TPU workers over ssh
  gcloud_tpu ssh "--worker=$1" "--command=$2"
}

tpu_create() {
  gcloud_tpu create "--accelerator-type=$ACCELERATOR_TYPE" "--version=$TPU_VERSION" "$@"
}

tpu_install() {
  [ $# -eq 0 ] || die "tpu-install takes no arguments (got: $*); configure it with EDN_REPO_URL, EDN_REMOTE_DIR, TPU_NAME, ZONE"
  local dir q_dir
  dir=$REMOTE_DIR
  q_dir=$(quote "$dir")
  if [ -n "${EDN_REPO_URL:-}" ]; then
    local ref=${EDN_REPO_REF:-}
    on_workers all "if [ -d $q_dir/.git ]; then git -C $q_dir fetch --depth 1 origin $(quote "${ref:-HEAD}") && git -C $q_dir checkout --force FETCH_HEAD; else git clone --depth 1 ${ref:+--branch $(quote "$ref") }$(quote "$EDN_REPO_URL") $q_dir; fi"
  else  # this checkout as it is: tracked and untracked files, nothing git ignores (.venv, runs/)
    [ "$DRY" = 1 ] || git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "tpu-install copies a git checkout; run it from one, or set EDN_REPO_URL"
    local tarball="${TMPDIR:-/tmp}/edn_jax_src.tgz"
    x bash -c "git ls-files -z --cached --others --exclude-standard | tar -czf $(quote "$tarball") --null --ignore-failed-read -T -"
    need_gcloud
    xv gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:/tmp/edn_jax_src.tgz" "--zone=$ZONE" \
      ${PROJECT:+"--project=$PROJECT"} --worker=all
    on_workers all "mkdir -p $q_dir && tar -xzf /tmp/edn_jax_src.tgz -C $q_dir"
  fi
  local apt="sudo apt-get -o DPkg::Lock::Timeout=600"
  on_workers all "set -e; if ! command -v python3.11 >/dev/null || ! dpkg -s python3.11-venv libgl1 >/dev/null 2>&1; then $apt update -qq && $apt install -y -qq python3.11 python3.11-venv libgl1 libglib2.0-0; fi; cd $q_dir && ./launch.sh setup && .venv/bin/python -m pip install -q 'jax[tpu]==$JAX_VERSION' -f $LIBTPU_FIND_LINKS && .venv/bin/python -m pip check && .venv/bin/python -c 'import jax, libtpu; print(\"edn_jax ready: jax\", jax.__version__)'"
}

tpu_run() {
  require_job_flags tpu-run "$@"
  local dir q_dir log job
  dir=$REMOTE_DIR
  q_dir=$(quote "$dir")
  log=$(quote "$TPU_LOG")
  job=$(quote_all .venv/bin/python -m edn_jax.main "$@")
  on_workers all "cd $q_dir && if [ -f $log.pid ] && kill -0 \$(cat $log.pid) 2>/dev/null; then echo \"error: a job is still running on \$(hostname) (pid \$(cat $log.pid)); wait, or kill it\" >&2; exit 2; fi; setsid nohup $job > $log 2>&1 < /dev/null & echo \$! > $log.pid; echo \"started on \$(hostname): pid \$!, log $dir/$TPU_LOG\""
}

tpu_logs() {
  local worker=0 a
  for a in "$@"; do
    case "$a" in
      --all) worker=all ;;
      --worker=?*) worker=${a#--worker=} ;;
      *) die "tpu-logs takes --all or --worker=N (got: $a)" ;;
    esac
  done
  on_workers "$worker" "tail -n 200 -F $(quote "$REMOTE_DIR/$TPU_LOG")"
}

tpu_delete() {
  local yes=0 a
  for a in "$@"; do
    case "$a" in
      --yes|-y) yes=1 ;;
      *) die "tpu-delete takes only --yes (got: $a)" ;;
    esac
  done
  if [ "$DRY" != 1 ] && [ "$yes" != 1 ]; then
    local answer=""
    read -r -p "delete TPU $TPU_NAME in $ZONE (everything on its disks is lost)? [y/N] " answer || true
    case "$answer" in y|Y|yes|YES) ;; *) echo "not deleted" >&2; exit 1 ;; esac
  fi
  gcloud_tpu delete --quiet
}

# ----------------------------------------------------------------------------- GPU host

gpu_run() {
  require_job_flags gpu-run "$@"
  setup
  if ! compgen -G "$VENV/lib/python3*/site-packages/jax_cuda12_plugin" >/dev/null; then
    xe "$VENV/bin/python" -m pip install -q "jax[cuda12]==$JAX_VERSION"
  fi
  x_exec "$VENV/bin/python" -m edn_jax.main "$@"
}

usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
case "$cmd" in
  setup)
    setup ;;
  demo)  # the whole method: build + train the synthetic target, then transfer another motion onto it
    setup
    demo_dir="${EDN_DEMO_WORKDIR:-runs/demo}"
    x "$VENV/bin/python" -m edn_jax.main --config configs/demo.py --workdir "$demo_dir" "$@"
    x_exec "$VENV/bin/python" -m edn_jax.main --config configs/transfer.py --workdir "$demo_dir/transfer" \
      --config.transfer.model_workdir="$demo_dir" --config.transfer.side_by_side=True --config.overwrite=True "$@" ;;
  test)
    setup
    # One test process per core (EDN_TEST_WORKERS), whole files to a process so that a file's
    # module fixtures are built once: on 2 cores compiling is most of the suite's time, and XLA
    # compiles one program on one thread.
    x_exec "$VENV/bin/python" -m pytest -q -n "${EDN_TEST_WORKERS:-2}" --dist loadfile tests data_builders "$@" ;;
  run|local)
    setup
    x_exec "$VENV/bin/python" -m edn_jax.main "$@" ;;
  gpu-run)
    gpu_run "$@" ;;
  tpu-create)
    tpu_create "$@" ;;
  tpu-install)
    tpu_install "$@" ;;
  tpu-run)
    tpu_run "$@" ;;
  tpu-logs)
    tpu_logs "$@" ;;
  tpu-delete)
    tpu_delete "$@" ;;
  help|-h|--help)
    usage
    exit 0 ;;
  *)
    usage
    exit 2 ;;
esac
