#!/usr/bin/env bash
# Check that this device is the one the bundle was made for; optionally set power mode and clocks.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$SCRIPT_DIR/common.sh"

usage() {
    cat <<'USAGE'
Usage: setup.sh [--power-mode [NAME]] [--pin-clocks] [--restore] [--strict]

Checks the board (/proc/device-tree/model or /etc/nv_tegra_release), JetPack/L4T, CUDA and
TensorRT against the bundle's target and says what differs; for a desktop target, the GPU's
compute capability (nvidia-smi) too.

  --power-mode [NAME]  set the nvpmodel mode NAME, by the id this board's /etc/nvpmodel.conf
                       gives it (default: the target's default_power_mode)
  --pin-clocks         pin clocks with jetson_clocks (stores the current ones first)
  --restore            restore what --pin-clocks and --power-mode saved (clocks, power mode or both)
  --strict             exit 2 when JetPack, CUDA or TensorRT differ, not only the board, and when
                       a desktop GPU's compute capability is not the target's
Exit: 0 matches, 2 another board (or versions or the desktop GPU differ with --strict).
USAGE
}

POWER_MODE="" SET_MODE=0 PIN=0 RESTORE=0 STRICT=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --power-mode)
            SET_MODE=1
            if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then POWER_MODE="$2"; shift; fi ;;
        --power-mode=*) SET_MODE=1; POWER_MODE="${1#*=}" ;;
        --pin-clocks) PIN=1 ;;
        --restore) RESTORE=1 ;;
        --strict) STRICT=(--strict) ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done

CLOCKS_FILE="$DEVICE_DIR/jetson_clocks.conf"
MODE_FILE="$DEVICE_DIR/nvpmodel.previous"

if [ "$RESTORE" -eq 1 ]; then
    # whatever --pin-clocks and --power-mode saved: either alone, or both
    if [ ! -f "$CLOCKS_FILE" ] && [ ! -f "$MODE_FILE" ]; then
        die "nothing to restore: neither $CLOCKS_FILE nor $MODE_FILE found" \
            "(setup.sh --pin-clocks and --power-mode save them)"
    fi
    if [ -f "$CLOCKS_FILE" ]; then
        command -v jetson_clocks >/dev/null 2>&1 || die "jetson_clocks not found (is this JetPack?)"
        note "restoring clocks from $CLOCKS_FILE"
        run_as_root jetson_clocks --restore "$CLOCKS_FILE"
    fi
    if [ -f "$MODE_FILE" ]; then
        command -v nvpmodel >/dev/null 2>&1 || die "nvpmodel not found (is this JetPack?)"
        note "restoring power mode $(cat "$MODE_FILE")"
        run_as_root nvpmodel -m "$(cat "$MODE_FILE")" </dev/null
    fi
    exit 0
fi

TARGET="$(manifest_get target.name)"
note "bundle target: $TARGET"
mkdir -p "$DEVICE_DIR"
helper check-device "${STRICT[@]}" --json "$DEVICE_DIR/device.json"

if [ "$(manifest_get target.kind)" != "jetson" ]; then
    if [ "$SET_MODE" -eq 1 ] || [ "$PIN" -eq 1 ]; then note "power mode and clocks apply to Jetson only: skipped"; fi
    exit 0
fi

if [ "$SET_MODE" -eq 1 ]; then
    [ -n "$POWER_MODE" ] || POWER_MODE="$(manifest_get target.default_power_mode)"
    command -v nvpmodel >/dev/null 2>&1 || die "nvpmodel not found (is this JetPack?)"
    # the board's id for the name (ids differ per JetPack release); the profile's only without its conf
    MODE_LINE="$(helper power-mode-id "$POWER_MODE")"
    MODE_ID="${MODE_LINE%% *}"
    if [ "${MODE_LINE#* }" = profile ]; then
        note "/etc/nvpmodel.conf not readable: the target profile's id $MODE_ID for $POWER_MODE (ids differ per JetPack release)"
    fi
    if [ ! -f "$MODE_FILE" ]; then
        # the id is the line after "NV Power Mode: NAME" (a fan line comes first on many boards),
        # blank lines skipped, as edgedeploy/backends/runtime/clocks.py parse_nvpmodel reads it
        nvpmodel -q 2>/dev/null | awk '
            { gsub(/^[ \t]+|[ \t\r]+$/, "") }
            $0 == "" { next }
            after { if ($0 ~ /^[0-9]+$/) { print; exit } after = 0 }
            /^NV Power Mode:/ { after = 1 }' > "$MODE_FILE.tmp" || true
        if [ -s "$MODE_FILE.tmp" ]; then mv "$MODE_FILE.tmp" "$MODE_FILE"; else rm -f "$MODE_FILE.tmp"; fi
    fi
    note "power mode $POWER_MODE (nvpmodel -m $MODE_ID)"
    run_as_root nvpmodel -m "$MODE_ID" </dev/null
fi

if [ "$PIN" -eq 1 ]; then
    command -v jetson_clocks >/dev/null 2>&1 || die "jetson_clocks not found (is this JetPack?)"
    if [ ! -f "$CLOCKS_FILE" ]; then
        note "storing current clocks in $CLOCKS_FILE (restore with setup.sh --restore)"
        run_as_root jetson_clocks --store "$CLOCKS_FILE"
    fi
    note "pinning clocks to the power mode's maximum (jetson_clocks)"
    run_as_root jetson_clocks
fi
