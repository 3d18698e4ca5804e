#!/usr/bin/env bash
# Runs launch/train.py on every worker of a TPU VM at once (one JAX process per host).
#
# On a pod slice the processes find each other through jax.distributed (ser_jax/distributed.py
# detects the TPU VM); each reads its own slice of every global batch from its local dataset
# copy; process 0 writes metrics and results. Orbax checkpoints are written by all processes
# together and every process resumes from them, so on a pod slice the workdir must be one
# folder every worker sees: --workdir=gs://BUCKET/DIR runs in ~/gcs/BUCKET/DIR, the bucket's
# gcsfuse mount that `setup.sh --bucket=BUCKET` made on every worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--dry-run]
          [--config=configs/FILE.py] [--workdir=DIR|gs://BUCKET/DIR] [--config.FIELD=VALUE ...]

  --config=FILE         experiment config, relative to the project (default configs/default.py)
  --workdir=DIR         where results and checkpoints go: relative to the worker's home
                        (default workdirs/NAME; one host only), or gs://BUCKET/DIR (pod
                        slices; needs setup.sh --bucket=BUCKET: runs in ~/gcs/BUCKET/DIR)
  --config.FIELD=VALUE  passed on to launch/train.py, e.g. --config.model.dtype=bfloat16
The dataset is read from ~/tensorflow_datasets on each worker (see data.sh).
Variables: TPU_PROJECT TPU_ZONE TPU_NAME (flags override them).
USAGE
}

CONFIG=configs/default.py
WORKDIR=''
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --config=*) CONFIG=${arg#*=} ;;
    --workdir=*) WORKDIR=${arg#*=} ;;
    --config.*=*) EXTRA+=("$arg") ;;
    *) parse_common_flag "$arg" || { usage >&2; die "unknown argument: $arg"; } ;;
  esac
done
finish_common_flags
gcloud_scope
WORKDIR=${WORKDIR:-workdirs/$NAME}
if [[ "$WORKDIR" == /* ]]; then
  remote_workdir=$(quote "$WORKDIR")
elif [[ "$WORKDIR" == gs://* ]]; then
  # The bucket's gcsfuse mount (setup.sh --bucket); $HOME is expanded by the worker's shell.
  # shellcheck disable=SC2016
  remote_workdir='$HOME/gcs/'$(quote "${WORKDIR#gs://}")
else
  # shellcheck disable=SC2016
  remote_workdir='$HOME/'$(quote "$WORKDIR")
fi

# shellcheck disable=SC2016  # $HOME is for the worker's shell
train_cmd="cd $REMOTE_DIR && .venv/bin/python launch/train.py --config=$(quote "$CONFIG")"
train_cmd+=" --workdir=$remote_workdir"
# shellcheck disable=SC2016
train_cmd+=' --config.data.data_dir=$HOME/tensorflow_datasets --config.data.download=False'
for arg in "${EXTRA[@]}"; do
  train_cmd+=" $(quote "$arg")"
done
run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all --command="$train_cmd"
