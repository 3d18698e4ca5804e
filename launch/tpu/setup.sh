#!/usr/bin/env bash
# Installs the project on every worker of a TPU VM: ships the committed source (git archive of
# HEAD), then runs worker_setup.sh on all workers (Python venv, requirements, jax[tpu]).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--ref=GIT_REF] [--dry-run]

Packs GIT_REF (default HEAD: commit your changes first) of this checkout, copies it to every
worker of the TPU VM NAME (--worker=all) into ~/$REMOTE_DIR, and installs it there in a venv
(~/$REMOTE_DIR/.venv) with launch/tpu/worker_setup.sh.
Variables: TPU_PROJECT TPU_ZONE TPU_NAME (flags override them).
USAGE
}

REF=HEAD
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --ref=*) REF=${arg#*=} ;;
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
run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all \
  --command="mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_DIR.tar.gz -C $REMOTE_DIR && bash $REMOTE_DIR/launch/tpu/worker_setup.sh"
