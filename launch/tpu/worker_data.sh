#!/usr/bin/env bash
# Runs ON a TPU VM worker (data.sh starts it on all of them): puts the RAVDESS TFDS dataset in
# ~/tensorflow_datasets on this worker's local disk, by copying a prepared folder from a bucket
# or by building it from the RAVDESS zips.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--dry-run] (--prepared=gs://BUCKET/tensorflow_datasets
                       | --zips=gs://BUCKET/ravdess [--dataset=ravdess/speech_predecessor48k])
USAGE
}

PREPARED=''
ZIPS=''
DATASET=ravdess/speech_predecessor48k
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --prepared=*) PREPARED=${arg#*=} ;;
    --zips=*) ZIPS=${arg#*=} ;;
    --dataset=*) DATASET=${arg#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done
if [[ -z "$PREPARED$ZIPS" ]]; then
  usage >&2
  die "give --prepared=gs://... or --zips=gs://..."
fi

PROJECT_DIR=$(cd "$(dirname "$0")/../.." && pwd)
DATA_DIR="$HOME/tensorflow_datasets"
MANUAL_DIR="$HOME/ravdess"

# Builds one TFDS config from the zips in manual_dir, as training would (no TensorFlow).
BUILD_PY='
import sys
from ser_jax import input_pipeline
name, data_dir, manual_dir = sys.argv[1:]
builder = input_pipeline.prepare_tfds(name, data_dir, manual_dir, download=True)
print(name, {k: v.num_examples for k, v in builder.info.splits.items()})
'

run mkdir -p "$DATA_DIR"
if [[ -n "$PREPARED" ]]; then
  run gsutil -m rsync -r "$PREPARED/ravdess" "$DATA_DIR/ravdess"
else
  run mkdir -p "$MANUAL_DIR"
  run gsutil -m rsync -r "$ZIPS" "$MANUAL_DIR"
  run "$PROJECT_DIR/.venv/bin/python" -c "$BUILD_PY" "$DATASET" "$DATA_DIR" "$MANUAL_DIR"
fi
