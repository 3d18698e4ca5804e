#!/usr/bin/env bash
# Deletes the Cloud TPU VM (all of its workers and their local disks).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [--project=ID] [--zone=ZONE] [--name=NAME] [--dry-run]

Deletes the TPU VM NAME without asking. Fetch the results first (fetch.sh): the workers'
disks go with it.
Variables: TPU_PROJECT TPU_ZONE TPU_NAME (flags override them).
USAGE
}

for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    *) parse_common_flag "$arg" || { usage >&2; die "unknown argument: $arg"; } ;;
  esac
done
finish_common_flags
gcloud_scope

run gcloud compute tpus tpu-vm delete "$NAME" "${SCOPE[@]}" --quiet
