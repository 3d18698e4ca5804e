#!/usr/bin/env bash
# Creates a Cloud TPU VM: one host (e.g. v4-8, v5litepod-8) or a pod slice (e.g. v4-32, 4 hosts).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--type=TYPE] [--version=V] [--spot] [--dry-run]

Creates the TPU VM NAME of accelerator type TYPE in ZONE with the TPU software version V
(default from the type: $(default_version v4-8) for v4, $(default_version v5litepod-8) for v5e).
  --spot      a Spot VM (cheaper, can be preempted at any time)
Variables: TPU_PROJECT TPU_ZONE TPU_NAME TPU_TYPE TPU_VERSION (flags override them).
USAGE
}

SPOT=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --spot) SPOT=1 ;;
    *) parse_common_flag "$arg" || { usage >&2; die "unknown argument: $arg"; } ;;
  esac
done
finish_common_flags
gcloud_scope

cmd=(gcloud compute tpus tpu-vm create "$NAME" "${SCOPE[@]}"
  --accelerator-type="$TYPE" --version="$VERSION"
  --scopes=https://www.googleapis.com/auth/cloud-platform)
if [[ "$SPOT" == 1 ]]; then
  cmd+=(--spot)
fi
run "${cmd[@]}"
