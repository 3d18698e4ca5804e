#!/usr/bin/env bash
# Puts the prepared TFDS dataset on the local disk of every TPU VM worker.
#
# Why local disk: TFDS stores RAVDESS as array_record files read by random access (one read per
# clip); from a gs:// data_dir every read would be a GCS request. The prepared speech set is a
# few hundred MB, so each worker keeps its own copy in ~/tensorflow_datasets.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--dry-run]
          (--prepared=gs://BUCKET/tensorflow_datasets [--upload-from=LOCAL_TFDS_DIR]
           | --zips=gs://BUCKET/ravdess [--dataset=ravdess/speech_predecessor48k])

Either (recommended)
  --prepared=GS_DIR       copy GS_DIR/ravdess (a prepared TFDS folder) to ~/tensorflow_datasets
                          on every worker;
  --upload-from=DIR       first upload DIR/ravdess (prepared here, e.g. ~/tensorflow_datasets)
                          to GS_DIR;
or
  --zips=GS_DIR           copy the official RAVDESS zips (or Actor_NN/ folders) from GS_DIR to
                          ~/ravdess on every worker and build the dataset there;
  --dataset=NAME/CONFIG   the TFDS config to build (default ravdess/speech_predecessor48k).
Variables: TPU_PROJECT TPU_ZONE TPU_NAME (flags override them).
USAGE
}

PREPARED=''
UPLOAD_FROM=''
ZIPS=''
DATASET=ravdess/speech_predecessor48k
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --prepared=*) PREPARED=${arg#*=} ;;
    --upload-from=*) UPLOAD_FROM=${arg#*=} ;;
    --zips=*) ZIPS=${arg#*=} ;;
    --dataset=*) DATASET=${arg#*=} ;;
    *) parse_common_flag "$arg" || { usage >&2; die "unknown argument: $arg"; } ;;
  esac
done
finish_common_flags
gcloud_scope
if [[ -n "$PREPARED" && -n "$ZIPS" ]] || [[ -z "$PREPARED" && -z "$ZIPS" ]]; then
  usage >&2
  die "give exactly one of --prepared=gs://... and --zips=gs://..."
fi
for value in "$PREPARED" "$ZIPS"; do
  if [[ -n "$value" && "$value" != gs://* ]]; then
    die "$value: expected a gs:// bucket path"
  fi
done
if [[ -n "$UPLOAD_FROM" && -z "$PREPARED" ]]; then
  die "--upload-from needs --prepared (the bucket folder to upload to)"
fi

if [[ -n "$PREPARED" ]]; then
  if [[ -n "$UPLOAD_FROM" ]]; then
    run gsutil -m rsync -r "$UPLOAD_FROM/ravdess" "$PREPARED/ravdess"
  fi
  worker_args="--prepared=$(quote "$PREPARED")"
else
  worker_args="--zips=$(quote "$ZIPS") --dataset=$(quote "$DATASET")"
fi
run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all \
  --command="bash $REMOTE_DIR/launch/tpu/worker_data.sh $worker_args"
