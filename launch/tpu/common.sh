# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source it
# Shared by the launch/tpu/*.sh scripts (sourced, never run): the TPU variables, flag parsing
# for them, and `run`, which prints instead of running under --dry-run.
#
# Variables (a flag overrides the environment variable, which overrides the default):
#   --project=ID    TPU_PROJECT   Google Cloud project (default: gcloud's configured project)
#   --zone=ZONE     TPU_ZONE      default us-central2-b (has v4); v5e: e.g. us-west4-a
#   --name=NAME     TPU_NAME      TPU VM name, default ser-jax
#   --type=TYPE     TPU_TYPE      accelerator type, default v4-8 (one host); v4-32: 4 hosts
#   --version=V     TPU_VERSION   TPU software (runtime) version; default from the type:
#                                 v4 and older tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
#                                 v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
#   --dry-run                     print every command instead of running it

PROJECT=${TPU_PROJECT:-}
ZONE=${TPU_ZONE:-us-central2-b}
NAME=${TPU_NAME:-ser-jax}
TYPE=${TPU_TYPE:-v4-8}
VERSION=${TPU_VERSION:-}
DRY_RUN=0

# Where the project lives on every worker (relative to the remote home directory).
REMOTE_DIR=ser-jax

# parse_common_flag ARG: consumes one of the shared flags; returns 1 for any other argument.
parse_common_flag() {
  case "$1" in
    --project=*) PROJECT=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --name=*) NAME=${1#*=} ;;
    --type=*) TYPE=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# default_version TYPE: the TPU software version Google recommends for JAX on that generation.
default_version() {
  case "$1" in
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# finish_common_flags: fills derived defaults and checks values; call after parsing.
finish_common_flags() {
  VERSION=${VERSION:-$(default_version "$TYPE")}
  local value
  for value in "$ZONE" "$NAME" "$TYPE" "$VERSION"; do
    if [[ -z "$value" ]]; then
      die "--zone, --name, --type and --version must not be empty"
    fi
  done
  if [[ ! "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
    die "--name=$NAME: a TPU name is lower-case letters, digits and '-', starting with a letter"
  fi
}

# gcloud_scope: the flags every gcloud tpu-vm command gets (zone, and project when set).
gcloud_scope() {
  SCOPE=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    SCOPE+=(--project="$PROJECT")
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

# quote ARG: ARG as it would be typed into a shell (single quotes only where needed), so a
# dry-run line can be pasted back into a shell.
quote() {
  local s=$1 sq="'" esc="'\\''"
  if [[ "$s" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  elif [[ "$s" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    # --flag='value with spaces': the form a person would type.
    local value=${BASH_REMATCH[2]}
    printf "%s'%s'" "${BASH_REMATCH[1]}" "${value//$sq/$esc}"
  else
    printf "'%s'" "${s//$sq/$esc}"
  fi
}

# run CMD ARGS...: runs the command, or with --dry-run prints it as '+ CMD ARGS...'.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local line='+' arg
    for arg in "$@"; do
      line+=" $(quote "$arg")"
    done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}
