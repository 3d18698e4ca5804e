#!/usr/bin/env bash
# Runs ON a TPU VM worker (setup.sh starts it on all of them): creates ~/ser-jax/.venv and
# installs the pinned requirements, the TPU build of the pinned jax, and the project; with
# --mount-bucket, also mounts a Cloud Storage bucket at ~/gcs/BUCKET with Cloud Storage FUSE.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--python=PYTHON] [--mount-bucket=BUCKET] [--dry-run]

Installs the project that contains this script into its .venv, for TPUs.
  --python=PYTHON        interpreter for the venv (default python3.11; the TPU images ship
                         Ubuntu 22.04, whose python3 is 3.10, too old: python3.11 comes from apt)
  --mount-bucket=BUCKET  install gcsfuse and mount gs://BUCKET at ~/gcs/BUCKET: the same path
                         on every worker, which a pod slice's workdir needs (train.sh)
USAGE
}

PYTHON=python3.11
BUCKET=''
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --python=*) PYTHON=${arg#*=} ;;
    --mount-bucket=*) BUCKET=${arg#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done

cd "$(dirname "$0")/../.."
# The TPU build of exactly the jax version the project pins (jax[tpu] adds libtpu).
JAX_VERSION=$(sed -n 's/^jax==\([^ ]*\).*/\1/p' requirements.txt)
if [[ -z "$JAX_VERSION" ]]; then
  die "requirements.txt has no 'jax==VERSION' line"
fi

if ! command -v "$PYTHON" > /dev/null; then
  run sudo apt-get update -q
  run sudo apt-get install -y -q "$PYTHON" "$PYTHON-venv"
fi
run "$PYTHON" -m venv .venv
run .venv/bin/pip install -q --upgrade pip
run .venv/bin/pip install -q -r requirements.txt "jax[tpu]==$JAX_VERSION"
run .venv/bin/pip install -q --no-deps -e .
# Imports only: starting the TPU backend here, outside jax.distributed, could wait for the
# other hosts of a pod slice.
run .venv/bin/python -c "import jax, ser_jax; print('jax', jax.__version__)"

if [[ -n "$BUCKET" ]]; then
  # Cloud Storage FUSE from Google's apt repository (not in the TPU images).
  if ! command -v gcsfuse > /dev/null; then
    run bash -c 'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
    run bash -c 'curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null'
    run sudo apt-get update -q
    run sudo apt-get install -y -q gcsfuse
  fi
  MOUNT="$HOME/gcs/$BUCKET"
  run mkdir -p "$MOUNT"
  if ! mountpoint -q "$MOUNT"; then
    # Orbax finalises a checkpoint by renaming its temporary folder: gcsfuse renames folders
    # only below --rename-dir-limit descendants.
    run gcsfuse --implicit-dirs --rename-dir-limit=100000 "$BUCKET" "$MOUNT"
  fi
fi
