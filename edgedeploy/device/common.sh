# shellcheck shell=bash
# Shared by the bundle's device scripts: locate the bundle, python3, trtexec and the helpers.
# Sourced, not run. Every script works from any current directory.

BUNDLE_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
DEVICE_DIR="$BUNDLE_DIR/device"      # what the scripts write on the device (not in the manifest)
PYTHON="${PYTHON:-python3}"

die() { echo "error: $*" >&2; exit "${EXIT_CODE:-2}"; }
note() { echo "==> $*"; }

command -v "$PYTHON" >/dev/null 2>&1 || die "python3 is needed (JetPack ships it)"
[ -f "$BUNDLE_DIR/manifest.json" ] || die "$BUNDLE_DIR/manifest.json not found: run the script from inside a bundle"

find_trtexec() {
    if [ -n "${TRTEXEC:-}" ]; then echo "$TRTEXEC"; return 0; fi
    if command -v trtexec >/dev/null 2>&1; then command -v trtexec; return 0; fi
    if [ -x /usr/src/tensorrt/bin/trtexec ]; then echo /usr/src/tensorrt/bin/trtexec; return 0; fi
    echo ""
}

helper() {
    "$PYTHON" "$SCRIPT_DIR/bundle_helper.py" --bundle "$BUNDLE_DIR" --trtexec "$(find_trtexec)" "$@"
}

manifest_get() { helper get "$1"; }

run_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# edgedeploy is used only where it can reach TensorRT (its python bindings); else trtexec.
use_edgedeploy() {
    case "${1:-auto}" in
        edgedeploy) return 0 ;;
        trtexec) return 1 ;;
        *) command -v edgedeploy >/dev/null 2>&1 && "$PYTHON" -c 'import tensorrt' >/dev/null 2>&1 ;;
    esac
}
