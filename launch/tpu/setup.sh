#!/usr/bin/env bash
# Installs the project on every worker of a TPU VM: ships the committed source (git archive of
# HEAD), then runs worker_setup.sh on all workers (Python venv, requirements, jax[tpu]).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--ref=GIT_REF] [--bucket=BUCKET]
          [--dry-run]

Packs GIT_REF (default HEAD: commit your changes first) of this checkout, copies it to every
worker of the TPU VM NAME (--worker=all) into ~/$REMOTE_DIR, and installs it there in a venv
(~/$REMOTE_DIR/.venv) with launch/tpu/worker_setup.sh.
  --bucket=BUCKET  also mount gs://BUCKET at ~/gcs/BUCKET on every worker (gcsfuse), for a
                   pod slice's shared workdir (train.sh --workdir=gs://BUCKET/...)
Variables: TPU_PROJECT TPU_ZONE TPU_NAME (flags override them).
USAGE
}

REF=HEAD
BUCKET=''
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --ref=*) REF=${arg#*=} ;;
    --bucket=*) BUCKET=${arg#*=} ;;
    *) parse_common_flag "$arg" || { usage >&2; die "unknown argument: $arg"; } ;;
  esac
done
finish_common_flags
gcloud_scope

# Local paths below are relative to the repository root.
cd "$(dirname "$0")/../.."
TARBALL="${TMPDIR:-/tmp}/$REMOTE_DIR-$NAME.tar.gz"

run git archive --format=tar.gz --output="$TARBALL" "$REF"
run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:$REMOTE_DIR.tar.gz" "${SCOPE[@]}" --worker=all
worker_cmd="bash $REMOTE_DIR/launch/tpu/worker_setup.sh"
if [[ -n "$BUCKET" ]]; then
  BUCKET=${BUCKET#gs://}
  worker_cmd+=" --mount-bucket=$(quote "$BUCKET")"
fi
run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all \
  --command="mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_DIR.tar.gz -C $REMOTE_DIR && $worker_cmd"
