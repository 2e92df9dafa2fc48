#!/usr/bin/env bash
# Build this device's TensorRT engine from the bundled precision ONNX (skipped when one matches).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$SCRIPT_DIR/common.sh"

usage() {
    cat <<'USAGE'
Usage: build_engine.sh [--precision P] [--workspace-mb N] [--max-batch N] [--tool auto|edgedeploy|trtexec] [--force]

Builds device/engines/<model>.engine from the bundle's precision artifact (fp16 ONNX, Q/DQ
ONNX, or ONNX + calibration cache on TensorRT 8.x) with `edgedeploy build` where edgedeploy
is installed and reaches TensorRT's python bindings, pycuda and the GPU (its own `edgedeploy
doctor` says so), else with trtexec and the equivalent flags
(same shape profiles, fp32 layers, FP16 beside INT8 and TF32 setting on both paths; trtexec
before TensorRT 8.4 cannot keep fp32 layers and says so). A calibration cache written for another
TensorRT version is refused (TensorRT would ignore it). The
engine's sidecar (<engine>.json) is the one `edgedeploy compare` and `profile` read; `edgedeploy
build`'s per-layer report (<model>.layers.json) is kept beside the engine (trtexec writes none).
Skips the build when an engine for this TensorRT version, board, GPU compute capability and model
already exists (a bundled engine only when it is for this GPU's compute capability), unless
--max-batch or --workspace-mb asks for another build (the existing engine may have been built with
other ones: it is replaced when the new build succeeds).
The engine is built under a temporary name and renamed: a failed build never replaces a good one.

  --precision P      artifact to build (default: the manifest's primary_precision)
  --workspace-mb N   workspace limit (default: the target's default, capped at its maximum)
  --max-batch N      largest batch for dynamic inputs (default: the reference batch); with a shape
                     profile in the bundle it widens the profile and cannot narrow it (a smaller N is
                     refused), and no option lowers the profile's smallest batch
  --force            rebuild even when a matching engine exists
Exit: 0 built or up to date, 1 build failed, 2 damaged bundle, no TensorRT, or no edgedeploy for
--tool edgedeploy (the reason on the terminal).
USAGE
}

PRECISION="" WORKSPACE=() MAXBATCH=() TOOL=auto FORCE=0 FROM=() OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --precision) need_value "$@"; PRECISION="$2"; shift ;;
        --workspace-mb) need_number "$1" "${2-}" int; WORKSPACE=(--workspace-mb "$2"); shift ;;
        --max-batch) need_number "$1" "${2-}" int; MAXBATCH=(--max-batch "$2"); shift ;;
        --tool) need_tool "$1" "${2-}"; TOOL="$2"; shift ;;
        --force) FORCE=1 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
[ -n "$PRECISION" ] || PRECISION="$(manifest_get primary_precision)"

helper check-files >/dev/null || die "the bundle is damaged: run scripts/verify.sh for the list"

if [ "$(manifest_get target.kind)" = "cpu" ]; then
    note "target $(manifest_get target.name) runs on ONNX Runtime: no engine to build"
    exit 0
fi

ENGINE="$(helper engine-path --precision "$PRECISION")"
TMP="$(dirname "$ENGINE")/.$(basename "$ENGINE").building.$$"
# edgedeploy build's per-layer report of the engine (edgedeploy/backends/trt_sidecar.py layers_path); a
# trtexec build writes none, and removes the one of the engine it replaces
LAYERS="${ENGINE%.engine}.layers.json" NEW_LAYERS=""
# what a build killed before its EXIT trap ran (SIGKILL, power cut) left: its temporary engine and
# sidecar, its edgedeploy build folder; those of a build still running (its PID alive) stay
for LEFT in "${TMP%.*}".* "$(dirname "$ENGINE")"/.build.*; do
    [[ "$LEFT" =~ [.]build(ing)?[.]([0-9]+)([.]json)?$ ]] || continue
    [ -d "/proc/${BASH_REMATCH[2]}" ] || kill -0 "${BASH_REMATCH[2]}" 2>/dev/null || rm -rf -- "$LEFT"
done
if [ "$FORCE" -eq 0 ] && [ ${#MAXBATCH[@]} -eq 0 ] && [ ${#WORKSPACE[@]} -eq 0 ] &&
        FOUND="$(helper engine --precision "$PRECISION" 2>/dev/null)"; then
    note "up to date: $FOUND matches this device (use --force to rebuild)"
    exit 0
fi

mkdir -p "$(dirname "$ENGINE")"
LOG="$DEVICE_DIR/build-$PRECISION.log"
cleanup() { rm -f "$TMP" "$TMP.json"; [ -z "$OUT_DIR" ] || rm -rf "$OUT_DIR"; }
trap cleanup EXIT

# edgedeploy build takes the bundled precision ONNX as it is (fp16 with its fp32 islands, Q/DQ int8,
# with the calibration cache beside it for TensorRT 8.x) and the bundle's shape profile and TF32
# setting, the same ones the trtexec path below passes: both paths build the same engine.
if [ "$TOOL" = edgedeploy ] && ! command -v edgedeploy >/dev/null 2>&1; then
    die "edgedeploy not found on PATH (--tool edgedeploy; or use --tool trtexec)"
fi
if use_edgedeploy "$TOOL"; then
    OUT_DIR="$(dirname "$TMP")/.build.$$"
    ED_TEXT="$(helper edgedeploy-args --precision "$PRECISION" "${MAXBATCH[@]}")" || exit 2
    ED_ARGS=()
    [ -n "$ED_TEXT" ] && mapfile -t ED_ARGS <<<"$ED_TEXT"
    MODEL="$(helper model --precision "$PRECISION")" || exit 2
    BUILD=(edgedeploy build "$MODEL" --backend tensorrt "${WORKSPACE[@]}" --target "$(manifest_get target.name)"
        --precision "$PRECISION" -o "$OUT_DIR" "${ED_ARGS[@]}" --timing-cache "$DEVICE_DIR/timing.cache")
    note "building with $(quoted "${BUILD[@]}") (log: $LOG)"
    CODE=0
    "${BUILD[@]}" >"$LOG" 2>&1 || CODE=$?
    [ "$CODE" -ne 130 ] || interrupted hidden  # its Ctrl-C (its line "interrupted" is in the log)
    if [ "$CODE" -ne 0 ]; then
        rm -rf "$OUT_DIR"
        tail -n 5 "$LOG" >&2 || true
        # edgedeploy's exit 2 is its "cannot build here" (no TensorRT, bad input): this script's 2 too
        [ "$CODE" -eq 2 ] || CODE=1
        EXIT_CODE=$CODE die "edgedeploy build failed (see $LOG); the previous engine, if any, is unchanged"
    fi
    BUILT="$(find "$OUT_DIR" -name '*.engine' | head -n 1)"
    mv "$BUILT" "$TMP"
    FROM=(--from "$OUT_DIR/$(basename "$BUILT").json")
    # it stays in the build folder (removed on exit) until it is moved beside the engine, below
    [ ! -f "${BUILT%.engine}.layers.json" ] || NEW_LAYERS="${BUILT%.engine}.layers.json"
    FLAGS=(edgedeploy build "${ED_ARGS[@]}") USED=edgedeploy
else
    TRT="$(find_trtexec)"
    [ -n "$TRT" ] || die "neither edgedeploy with TensorRT nor trtexec found (trtexec is in /usr/src/tensorrt/bin)"
    ARGS_TEXT="$(helper build-args --precision "$PRECISION" "${WORKSPACE[@]}" "${MAXBATCH[@]}")" || exit 2
    mapfile -t FLAGS <<<"$ARGS_TEXT"
    USED=trtexec
    CACHE="$DEVICE_DIR/timing.cache"
    note "building with $(quoted "$TRT" "${FLAGS[@]}") (log: $LOG)"  # pastes back into a shell
    if ! "$TRT" "${FLAGS[@]}" --saveEngine="$TMP" --timingCacheFile="$CACHE" >"$LOG" 2>&1 || [ ! -s "$TMP" ]; then
        tail -n 5 "$LOG" >&2 || true
        EXIT_CODE=1 die "trtexec build failed (see $LOG); the previous engine, if any, is unchanged"
    fi
fi

# the sidecar records the GPU the build log names (trtexec prints it), not the target's. It is written
# beside the temporary engine first: when it cannot be, the previous engine and sidecar stay as they were
if ! helper write-sidecar --precision "$PRECISION" --engine "$TMP" --tool "$USED" --log "$LOG" "${FROM[@]}" -- \
        "${FLAGS[@]}"; then
    die "could not write the engine's sidecar (above); the previous engine, if any, is unchanged"
fi
# The old sidecar and layer report go first, the new sidecar comes last: a kill at any point leaves the
# old files, an engine without a sidecar (no engine to the up-to-date check and the scripts: rebuilt),
# with or without its own layer report, or the new ones, never an engine beside another build's sidecar
# (which edgedeploy compare and profile read) or layer report
rm -f "$ENGINE.json" "$LAYERS"
mv -f "$TMP" "$ENGINE"
[ -z "$NEW_LAYERS" ] || mv -f "$NEW_LAYERS" "$LAYERS"
mv -f "$TMP.json" "$ENGINE.json"
note "engine: $ENGINE"
