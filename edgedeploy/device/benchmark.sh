#!/usr/bin/env bash
# Latency, throughput, power per rail and energy per inference of this device's engine, as JSON.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$SCRIPT_DIR/common.sh"

usage() {
    cat <<'USAGE'
Usage: benchmark.sh [--precision P] [--batch N] [--duration S] [--warmup MS] [--interval MS]
                    [--no-cuda-graph] [--no-data-transfers] [--tool auto|edgedeploy|trtexec] [--out FILE]

Runs the engine with pinned trtexec flags (warm-up, duration, spin-wait, CUDA graphs on,
data transfers on: latency includes H2D and D2H; the flags that say so differ before and
from TensorRT 11, whose trtexec changed its defaults) while tegrastats samples power every
--interval ms, then writes JSON with latency percentiles, throughput, average power per
rail, what the total covers, and energy per inference in mJ (average power / throughput
over the measured window). Without tegrastats the power section says "not measurable here".
A bundle for a CPU target has no engine: its model is timed on ONNX Runtime with edgedeploy
profile (needs edgedeploy on PATH; --tool trtexec is refused there).
--batch must lie in one of the engine's shape profiles (a batch outside them exits 2 before
anything runs); past the first profile, trtexec is told --useProfile (TensorRT 9 and later).
trtexec before TensorRT 8.4 takes whole seconds: a fractional --duration is rounded up there (the
JSON records the duration that ran).
Defaults: --batch 1 (or the profile's opt batch when 1 is outside it; a fixed batch for static
inputs) --duration 10 --warmup 500 --interval 100,
--out device/results/benchmark-<precision>-b<batch>.json; --out lies under device/ or outside the
bundle, and never replaces an existing file other than an earlier results JSON; trtexec's log goes
beside it (<name>.trtexec.log for <name>.json). Exit: 0 done, 1 run failed, 2 no engine,
a missing tool (trtexec, or edgedeploy for --tool edgedeploy) or bad input.
USAGE
}

PRECISION="" BATCH="" DURATION=10 WARMUP=500 INTERVAL=100 GRAPH=1 TRANSFERS=1 TOOL=auto OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --precision) need_value "$@"; PRECISION="$2"; shift ;;
        --batch) need_number "$1" "${2-}" int; BATCH="$2"; shift ;;
        --duration) need_number "$1" "${2-}"; DURATION="$2"; shift ;;
        --warmup) need_number "$1" "${2-}" count; WARMUP="$2"; shift ;;
        --interval) need_number "$1" "${2-}" int; INTERVAL="$2"; shift ;;
        --no-cuda-graph) GRAPH=0 ;;
        --no-data-transfers) TRANSFERS=0 ;;
        --tool) need_tool "$1" "${2-}"; TOOL="$2"; shift ;;
        --out) need_value "$@"; OUT="$2"; shift ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done

# the run's trtexec log: beside the results JSON, <name>.trtexec.log for <name>.json
trtexec_log() { local dir name; dir="$(dirname "$1")"; name="$(basename "$1" .json)"; echo "$dir/$name.trtexec.log"; }

# --out must not replace a file of the bundle, lie in the bundle outside device/, nor replace any
# existing file that is not an earlier results JSON (bundle_helper.py check-out says why)
check_out() { helper check-out --out="$1" --log="$(trtexec_log "$1")"; }

[ -z "$OUT" ] || check_out "$OUT" || exit  # 2 refused, 130 interrupted
[ -n "$PRECISION" ] || PRECISION="$(manifest_get primary_precision)"
if [ "$(manifest_get target.kind)" = "cpu" ]; then
    MODEL="$(helper model --precision "$PRECISION")" || exit 2
    # the batch profile runs (the asked one, else 1, or the batch the model fixes) on the first line,
    # then the reference inputs' shapes for dims beyond the batch the model leaves dynamic, at that
    # batch (a batch the model fixes otherwise is refused here)
    SHAPES="$(helper profile-inputs ${BATCH:+--batch "$BATCH"})" || exit 2
    mapfile -t SHAPE_ARGS <<<"$SHAPES"
    BATCH="${SHAPE_ARGS[0]}"
    SHAPE_ARGS=("${SHAPE_ARGS[@]:1}")
    CPU_TARGET="$(manifest_get target.name)"
    [ "$TOOL" != trtexec ] ||
        die "--tool trtexec: trtexec times TensorRT engines, and this bundle for the CPU target $CPU_TARGET" \
            "has none (its model runs on ONNX Runtime): use --tool auto or edgedeploy"
    # no engine here: the model is timed on ONNX Runtime by edgedeploy profile, when it is installed
    if ! command -v edgedeploy >/dev/null 2>&1; then
        [ "$TOOL" != edgedeploy ] || die "edgedeploy not found on PATH (--tool edgedeploy)"
        die "this bundle is for the CPU target $CPU_TARGET: its model runs on ONNX Runtime, which" \
            "edgedeploy profile times, and edgedeploy is not installed here (pip install edgedeploy);" \
            "measure it with: $(quoted edgedeploy profile "$MODEL" "${SHAPE_ARGS[@]}")"
    fi
    [ -n "$OUT" ] || OUT="$DEVICE_DIR/results/benchmark-$PRECISION-b$BATCH.json"
    mkdir -p "$DEVICE_DIR/results" "$(dirname "$OUT")"
    note "model $MODEL on ONNX Runtime (CPU target $CPU_TARGET): profiling with edgedeploy profile"
    exec edgedeploy profile "$MODEL" "${SHAPE_ARGS[@]}" --duration "$DURATION" --warmup-ms "$WARMUP" --json "$OUT"
fi
helper model --precision "$PRECISION" >/dev/null || exit 2  # a precision the bundle lacks: said once
if ! ENGINE="$(helper engine --precision "$PRECISION" 2>/dev/null)"; then
    die "no $PRECISION engine for this device: run scripts/build_engine.sh first"
fi
# the batch (checked against the engine's profiles) on the first line, trtexec's shape flags after it
RUNNER=trtexec
if use_edgedeploy "$TOOL"; then
    RUNNER=edgedeploy
    # --tool edgedeploy asks for it whether or not it is here: a missing tool is exit 2, as trtexec's
    command -v edgedeploy >/dev/null 2>&1 ||
        die "edgedeploy not found on PATH (--tool edgedeploy; or use --tool trtexec)"
fi
RUN_SHAPES="$(helper run-shapes --engine "$ENGINE" --runner "$RUNNER" ${BATCH:+--batch "$BATCH"})" || exit 2
mapfile -t SHAPE_LINES <<<"$RUN_SHAPES"
BATCH="${SHAPE_LINES[0]}"
note "engine $ENGINE, batch $BATCH"
[ -n "$OUT" ] || OUT="$DEVICE_DIR/results/benchmark-$PRECISION-b$BATCH.json"
mkdir -p "$DEVICE_DIR/results" "$(dirname "$OUT")"

if [ "$RUNNER" = edgedeploy ]; then
    note "profiling with edgedeploy profile (power from edgedeploy.power)"
    exec edgedeploy profile "$ENGINE" --batch-sizes "$BATCH" --duration "$DURATION" --warmup-ms "$WARMUP" --json "$OUT"
fi

TRT="$(find_trtexec)"
[ -n "$TRT" ] || die "trtexec not found (it is in /usr/src/tensorrt/bin on JetPack)"
FLAGS=(--loadEngine="$ENGINE" --warmUp="$WARMUP" --iterations=10)
# trtexec 11 flipped the defaults (no data transfers, CUDA graph and spin wait on): ask for exactly
# what the JSON below records, in this trtexec's own flags; trtexec before 8.4 takes whole seconds,
# so the helper gives the --duration it really runs, which the JSON records
RUN_TEXT="$(helper run-flags --cuda-graph "$GRAPH" --data-transfers "$TRANSFERS" --duration "$DURATION")" || exit 2
mapfile -t RUN_FLAGS <<<"$RUN_TEXT"
for FLAG in "${RUN_FLAGS[@]}"; do
    case "$FLAG" in --duration=*) DURATION="${FLAG#--duration=}" ;; esac
done
FLAGS+=("${RUN_FLAGS[@]}")
FLAGS+=("${SHAPE_LINES[@]:1}")

WORK="$(mktemp -d)"
POWER_PID=""
finish() {
    if [ -n "$POWER_PID" ]; then kill "$POWER_PID" 2>/dev/null || true; wait "$POWER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap finish EXIT

NO_POWER=()
if command -v tegrastats >/dev/null 2>&1; then
    "$PYTHON" "$SCRIPT_DIR/tegrastats_power.py" record --interval "$INTERVAL" --out "$WORK/tegrastats.log" &
    POWER_PID=$!
    # the first sample, or tegrastats gone already (it is asked about below, after the run)
    for _ in $(seq 50); do
        { [ -s "$WORK/tegrastats.log" ] || ! kill -0 "$POWER_PID" 2>/dev/null; } && break
        sleep 0.1
    done
else
    NO_POWER=(--no-power-reason "not measurable here: tegrastats not found (not a Jetson)")
fi

POWER_MODE="$( (nvpmodel -q 2>/dev/null || true) | sed -n 's/^NV Power Mode: //p' | head -n 1)"
note "$(quoted "$TRT" "${FLAGS[@]}")"
if ! "$TRT" "${FLAGS[@]}" 2>&1 | "$PYTHON" "$SCRIPT_DIR/tegrastats_power.py" stamp >"$WORK/trtexec.log"; then
    tail -n 5 "$WORK/trtexec.log" >&2 || true
    EXIT_CODE=1 die "trtexec failed"
fi
sleep "$(awk "BEGIN {print $INTERVAL / 1000 * 1.5}")"   # let the sample after the window arrive
# tegrastats may have ended before the run did (a failure, or a board that stops it): its power
# is then not measurable, and the latency JSON is written all the same
if [ -n "$POWER_PID" ]; then
    if kill -0 "$POWER_PID" 2>/dev/null; then
        kill "$POWER_PID" 2>/dev/null || true   # it may end between the two
        wait "$POWER_PID" 2>/dev/null || true
    else
        STATUS=0
        wait "$POWER_PID" 2>/dev/null || STATUS=$?
        NO_POWER=(--tegrastats-stopped "tegrastats stopped before the run ended (exit status $STATUS)")
    fi
    POWER_PID=""
fi

SETTINGS="$(helper settings --engine="$ENGINE" --precision="$PRECISION" --batch="$BATCH" --warmup-ms="$WARMUP" \
    --duration="$DURATION" --cuda-graph="$GRAPH" --data-transfers="$TRANSFERS" --interval="$INTERVAL" \
    --power-mode="$POWER_MODE" -- "$TRT" "${FLAGS[@]}")"
"$PYTHON" "$SCRIPT_DIR/tegrastats_power.py" summarize --trtexec-log "$WORK/trtexec.log" \
    --tegrastats-log "$WORK/tegrastats.log" "${NO_POWER[@]}" \
    --warmup-ms "$WARMUP" --settings "$SETTINGS" --out "$OUT"
# beside the JSON it belongs to, after it (a failed summary leaves the earlier pair as it was)
LOG="$(trtexec_log "$OUT")"
cp "$WORK/trtexec.log" "$LOG.$$.tmp" && mv -f "$LOG.$$.tmp" "$LOG"
note "wrote $OUT (trtexec log: $LOG)"
