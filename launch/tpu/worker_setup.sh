#!/usr/bin/env bash
# Runs ON a TPU VM worker (setup.sh starts it on all of them): creates ~/ser-jax/.venv and
# installs the pinned requirements, the TPU build of the pinned jax, and the project.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--python=PYTHON] [--dry-run]

Installs the project that contains this script into its .venv, for TPUs.
  --python=PYTHON   interpreter for the venv (default python3.11; the TPU images ship Ubuntu
                    22.04, whose python3 is 3.10, too old: python3.11 is installed with apt)
USAGE
}

PYTHON=python3.11
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --python=*) PYTHON=${arg#*=} ;;
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
# gcsfs: lets the workdir (Orbax checkpoints, results) be a gs:// bucket, shared by all hosts.
run .venv/bin/pip install -q -r requirements.txt "jax[tpu]==$JAX_VERSION" gcsfs
run .venv/bin/pip install -q --no-deps -e .
run .venv/bin/python -c "import jax; print(jax.process_index(), jax.local_devices())"
