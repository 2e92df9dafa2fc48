#!/usr/bin/env bash
# Type-check every module that imports tensorrt or pycuda against TensorRT's stubs and ours.
# Fails when the code uses an API the stubs lack (e.g. TensorRT 10's removed build_engine).
# usage: tools/trt_stubs/check.sh        (installs the stubs on first use)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
stubs="$root/.stubs/tensorrt"
bash "$here/install.sh" "$stubs" >/dev/null
cd "$root"
modules=(edgedeploy/backends/tensorrt.py edgedeploy/backends/trt_*.py edgedeploy/backends/runtime)
# Guard: the stubs must resolve, or mypy would silently treat tensorrt as Any.
printf 'import tensorrt\nimport pycuda.driver\nreveal_type(tensorrt.Builder)\nreveal_type(pycuda.driver.Stream)\n' \
    > "$stubs/.resolve_probe.py"
probe="$(MYPYPATH="$stubs:$here/stubs" python -m mypy --config-file "$here/mypy.ini" "$stubs/.resolve_probe.py" 2>&1 || true)"
if ! grep -q "tensorrt_bindings.tensorrt.Builder" <<<"$probe" || ! grep -q "pycuda.driver.Stream" <<<"$probe"; then
    echo "tensorrt/pycuda stubs do not resolve for mypy:"; echo "$probe"; exit 1
fi
MYPYPATH="$stubs:$here/stubs" python -m mypy --config-file "$here/mypy.ini" "${modules[@]}"
