#!/usr/bin/env bash
# Check every file's sha256, then run the engine on the reference inputs and gate the outputs.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$SCRIPT_DIR/common.sh"

usage() {
    cat <<'USAGE'
Usage: verify.sh [--precision P] [--files-only]

1. every file's size and sha256 against manifest.json;
2. runs the engine built for this device (or the bundled ONNX on ONNX Runtime for CPU
   bundles) on reference/inputs.npz and compares with the stored fp32 reference/outputs.npz
   using the manifest's gates, as edgedeploy compare does: cosine, and the norm ratio of a
   float output (off 1 by more than sqrt(1 - min_cosine**2) fails the cosine gate too), or
   the equal share of a bool/integer output; argmax (top-1) agreement of every 2-D float
   output or of those the manifest names; NaN/Inf unlike the
   reference's; an output of another shape; atol/rtol when the gates ask for it.
Exit: 0 pass, 1 accuracy fail, 2 damaged or mismatched bundle (or no engine: build_engine.sh).
USAGE
}

PRECISION="" FILES_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --precision) need_value "$@"; PRECISION="$2"; shift ;;
        --files-only) FILES_ONLY=1 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
[ -n "$PRECISION" ] || PRECISION="$(manifest_get primary_precision)"

note "checking files against manifest.json"
helper check-files || exit 2
[ "$FILES_ONLY" -eq 1 ] && exit 0

mkdir -p "$DEVICE_DIR/results"
RESULT="$DEVICE_DIR/results/verify-$PRECISION.json"
if [ "$(manifest_get target.kind)" = "cpu" ]; then
    MODEL="$(helper model --precision "$PRECISION")" || exit 2
    note "running $MODEL on ONNX Runtime against the fp32 reference"
    exec "$PYTHON" "$SCRIPT_DIR/verify_outputs.py" --bundle "$BUNDLE_DIR" --onnxruntime "$MODEL" --json "$RESULT"
fi

helper model --precision "$PRECISION" >/dev/null || exit 2  # a precision the bundle lacks: said once
if ! ENGINE="$(helper engine --precision "$PRECISION")"; then
    die "no $PRECISION engine for this device: run scripts/build_engine.sh first"
fi
TRT="$(find_trtexec)"
[ -n "$TRT" ] || die "trtexec not found (it is in /usr/src/tensorrt/bin on JetPack)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SPECS="$(helper ref-inputs --out "$WORK" --engine "$ENGINE" --precision "$PRECISION")" || exit 2
LOAD="$(sed -n 1p <<<"$SPECS")"
SHAPES="$(sed -n 2p <<<"$SPECS")"
PROFILE=()  # --useProfile=N when the reference shapes lie past the engine's first profile
USE="$(sed -n 3p <<<"$SPECS")"
[ -z "$USE" ] || PROFILE=("$USE")
note "running $ENGINE on the reference inputs"
if ! "$TRT" --loadEngine="$ENGINE" --loadInputs="$LOAD" --shapes="$SHAPES" "${PROFILE[@]}" \
        --exportOutput="$WORK/outputs.json" --iterations=1 --warmUp=0 --duration=0 >"$WORK/trtexec.log" 2>&1; then
    tail -n 5 "$WORK/trtexec.log" >&2 || true
    die "trtexec could not run the engine (engine built for another device? run build_engine.sh --force)"
fi
"$PYTHON" "$SCRIPT_DIR/verify_outputs.py" --bundle "$BUNDLE_DIR" --trtexec-json "$WORK/outputs.json" --json "$RESULT"
