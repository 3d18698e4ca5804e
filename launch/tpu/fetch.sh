#!/usr/bin/env bash
# Copies a run's workdir (results.json/.md, plots, TensorBoard events, checkpoints) back here.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--dry-run]
          [--workdir=DIR|gs://BUCKET/DIR] [--dest=LOCAL_DIR]

  --workdir=DIR    the workdir given to train.sh (default workdirs/NAME in the worker's home)
  --dest=DIR       local folder to copy into (default results/NAME)
A local workdir is copied from worker 0 (process 0 writes the results); a gs:// one from the
bucket.
Variables: TPU_PROJECT TPU_ZONE TPU_NAME (flags override them).
USAGE
}

WORKDIR=''
DEST=''
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --workdir=*) WORKDIR=${arg#*=} ;;
    --dest=*) DEST=${arg#*=} ;;
    *) parse_common_flag "$arg" || { usage >&2; die "unknown argument: $arg"; } ;;
  esac
done
finish_common_flags
gcloud_scope
WORKDIR=${WORKDIR:-workdirs/$NAME}
DEST=${DEST:-results/$NAME}

if [[ "$WORKDIR" == gs://* ]]; then
  run mkdir -p "$DEST"
  run gsutil -m rsync -r "$WORKDIR" "$DEST"
else
  # scp -r creates DEST when it is absent (an existing DEST would get the workdir inside it).
  # A relative remote path is read from the worker's home directory.
  run mkdir -p "$(dirname "$DEST")"
  run gcloud compute tpus tpu-vm scp --recurse "$NAME:$WORKDIR" "$DEST" "${SCOPE[@]}" --worker=0
fi
