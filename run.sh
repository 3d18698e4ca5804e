#!/usr/bin/env bash
# One entry point for the README quickstart.
#   bash run.sh train [extra launch/train.py flags]   set up, build the dataset, train the default experiment
#                                                     ($CONFIG picks another config file, $WORKDIR the output folder)
#   bash run.sh test  [extra pytest args]             set up with test dependencies, run the whole test suite
# Both create (or reuse) a virtual environment in $SER_JAX_VENV (default: .venv) with Python 3.11+.
set -euo pipefail
cd "$(dirname "$0")"
cmd=${1:-}
shift || true

PYTHON=${PYTHON:-python3}
VENV=${SER_JAX_VENV:-.venv}

setup() {  # $1: requirements file
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$1"
  "$VENV/bin/python" -m pip install -q --no-deps -e .
}

case "$cmd" in
  train)
    setup requirements.txt
    # Data location: --data_dir/--manual_dir flags, or RAVDESS_DIR (a folder with the official
    # zips or the extracted Actor_NN/ folders). Without either the builder downloads from Zenodo.
    exec "$VENV/bin/python" launch/train.py --config="${CONFIG:-configs/default.py}" \
      --workdir="${WORKDIR:-workdirs/default}" "$@"
    ;;
  test)
    setup requirements-test.txt
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    [ "$rc" -eq 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
    exit "$rc"
    ;;
  *)
    echo "usage: bash run.sh {train|test} [args...]" >&2
    exit 2
    ;;
esac
