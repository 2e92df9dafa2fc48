# shellcheck shell=bash
# Shared by the bundle's device scripts: locate the bundle, python3, trtexec and the helpers.
# Sourced, not run. Every script works from any current directory.

BUNDLE_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
DEVICE_DIR="$BUNDLE_DIR/device"      # what the scripts write on the device (not in the manifest)
PYTHON="${PYTHON:-python3}"
# Python 3.6 (JetPack 4.6's python3) takes file names and its output as ASCII in the C/POSIX
# locale (env -i, ssh without locale forwarding, cron, systemd, docker): a bundle file named
# 'op13 é.onnx' failed every helper. 3.7 and later switch to UTF-8 there by themselves (PEP 538);
# for 3.6, the scripts take C.UTF-8 where the locale is C or POSIX and C.UTF-8 is installed.
case "${LC_ALL:-${LC_CTYPE:-${LANG:-C}}}" in
    C|POSIX)
        if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
            if [ -n "${LC_ALL:-}" ]; then export LC_ALL=C.UTF-8; else export LC_CTYPE=C.UTF-8; fi
        fi
        ;;
esac

die() { echo "error: $*" >&2; exit "${EXIT_CODE:-2}"; }
note() { echo "==> $*"; }
# a command as one line that pastes back into a shell (paths with blanks, quotes, ...)
quoted() { local line; printf -v line '%q ' "$@"; printf '%s' "${line% }"; }

# Usage errors exit 2 (1 means "accuracy or run failed"): `need_value "$@"` before reading "$2".
need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then die "option $1 needs a value (see --help)"; fi
}
# A positive number: `need_number OPTION VALUE [int|count]` (int: whole, count: whole, 0 allowed).
need_number() {
    need_value "$1" "${2-}"
    local re='^[0-9]+([.][0-9]+)?$'
    case "${3:-}" in int|count) re='^[0-9]+$' ;; esac
    if ! [[ "$2" =~ $re ]] || { [ "${3:-}" != count ] && [[ "$2" =~ ^[0.]+$ ]]; }; then
        die "option $1 needs a positive ${3:+whole }number, got '$2'"
    fi
}
# --tool auto|edgedeploy|trtexec
need_tool() {
    need_value "$1" "${2-}"
    case "$2" in auto|edgedeploy|trtexec) ;; *) die "option $1 takes auto, edgedeploy or trtexec, got '$2'" ;; esac
}

command -v "$PYTHON" >/dev/null 2>&1 || die "python3 is needed (JetPack ships it)"
[ -f "$BUNDLE_DIR/manifest.json" ] || die "$BUNDLE_DIR/manifest.json not found: run the script from inside a bundle"

find_trtexec() {
    if [ -n "${TRTEXEC:-}" ]; then echo "$TRTEXEC"; return 0; fi
    if command -v trtexec >/dev/null 2>&1; then command -v trtexec; return 0; fi
    if [ -x /usr/src/tensorrt/bin/trtexec ]; then echo /usr/src/tensorrt/bin/trtexec; return 0; fi
    echo ""
}

# A Ctrl-C in a helper (or in edgedeploy) is its line "interrupted" and exit 130, and bash goes on after
# a command that exited rather than died of the SIGINT: `helper ... || exit 2` took it for the helper's
# refusal (exit 2, or "error: the bundle is damaged"). After an exit 130, `interrupted` stops the script as
# a Ctrl-C does: it sends SIGINT to the script's shell ($$, from a $(...) too), which runs the
# EXIT trap and dies of it (a shell reports 130, and a script that ran this one stops too); exit 130
# where SIGINT was ignored when the script started (bash cannot take it back then). SCRATCH: a
# temporary folder of this file's own, which no script's EXIT trap knows, removed on the way.
# The interrupted command said "interrupted" on its stderr; where that was not the script's (a helper
# called with 2>/dev/null, or `interrupted hidden` after an edgedeploy whose output went to /dev/null or
# a log), a Ctrl-C ended the script without a word: `interrupted` says the line there, on SCRIPT_STDERR
# (the script's stderr, kept when this file is sourced), once.
SCRATCH=""
exec {SCRIPT_STDERR}>&2
interrupted() {
    if [ "${1:-}" = hidden ] || ! [ /dev/fd/2 -ef "/dev/fd/$SCRIPT_STDERR" ]; then
        { echo interrupted >&"$SCRIPT_STDERR"; } 2>/dev/null || true
    fi
    [ -z "$SCRATCH" ] || rm -rf "$SCRATCH"
    trap - INT
    kill -INT "$$"
    exit 130
}

helper() {
    local code=0
    "$PYTHON" "$SCRIPT_DIR/bundle_helper.py" --bundle "$BUNDLE_DIR" --trtexec "$(find_trtexec)" "$@" || code=$?
    [ "$code" -ne 130 ] || interrupted
    return "$code"
}

manifest_get() { helper get "$1"; }

run_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# edgedeploy is used only where it can reach TensorRT, pycuda and the GPU from the interpreter it
# runs on (its own `edgedeploy doctor --json` says: a venv may lack JetPack's system tensorrt, or
# $PYTHON may lack what the venv has); else trtexec.
use_edgedeploy() {
    case "${1:-auto}" in
        edgedeploy) return 0 ;;
        trtexec) return 1 ;;
    esac
    command -v edgedeploy >/dev/null 2>&1 || return 1
    local verdict
    SCRATCH="$(mktemp -d)"
    edgedeploy doctor --json "$SCRATCH/doctor.json" >/dev/null 2>&1 || [ "$?" -ne 130 ] || interrupted hidden
    verdict="$(helper edgedeploy-usable "$SCRATCH/doctor.json" 2>/dev/null || true)"
    rm -rf "$SCRATCH"
    SCRATCH=""
    [ "$verdict" = yes ] && return 0
    note "edgedeploy cannot use TensorRT here (${verdict#no: }): using trtexec"
    return 1
}
