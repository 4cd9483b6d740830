# shellcheck shell=bash
# Helpers shared by hack/kind-up, kind-e2e, kind-down and stage-weights (sourced, not run).
# Every command that changes something goes through `run`, which prints it ("+ cmd args") and
# runs it, or with DRY_RUN=1 only prints it: `--dry-run` lists every step in order.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"

log() {
  printf '==> %s\n' "$*"
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# quote <arg>: the argument as a shell word a person can read and paste back.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+^-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {
  local arg line="+"
  for arg in "$@"; do
    line+=" $(quote "${arg}")"
  done
  printf '%s\n' "${line}"
  if [[ "${DRY_RUN}" == 1 ]]; then
    return 0
  fi
  "$@"
}

# require <binary> <how to get it>: fail early with a hint (skipped in a dry run).
require() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    return 0
  fi
  command -v "$1" >/dev/null 2>&1 || die "$1 is not on PATH: $2"
}

# tool <helm|kubectl>: the binary on PATH, else the pinned one from hack/install-tools.
tool() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
    return 0
  fi
  if [[ ! -x "${ROOT}/.tools/bin/$1" && "${DRY_RUN}" != 1 ]]; then
    "${ROOT}/hack/install-tools" >&2
  fi
  echo "${ROOT}/.tools/bin/$1"
}

# python: the project's venv interpreter (make venv), else python3.
python_bin() {
  if [[ -x "${ROOT}/.venv/bin/python" ]]; then
    echo "${ROOT}/.venv/bin/python"
  else
    command -v python3 || echo python3
  fi
}

# Official (task, variant) pairs understood by the chart and the predictors, and the other
# models the scripts know how to fetch (pinned_model).
valid_model() {
  case "$1" in
    colorize/modelscope | colorize/artistic | colorize/paper_tiny) return 0 ;;
    restore/denoise | restore/deblur) return 0 ;;
    face-restore/v0.1) return 0 ;;
    upscale/x4plus | upscale/x4anime | upscale/x2plus) return 0 ;;
    *) pinned_model "$1" >/dev/null ;;
  esac
}

# pinned_model <task/name>: "URL SHA256" of a model that is not an official variant (served as
# models.<task>.others, its sha256 pinned there too: values-kind.yaml); fails for any other name.
pinned_model() {
  case "$1" in
    # Real-ESRGAN's Compact x4 for photos (BSD-3-Clause, 4,885,111 bytes; OpenModelDB's hash)
    upscale/general-x4v3)
      echo "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth" \
        "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292"
      ;;
    *) return 1 ;;
  esac
}
