#!/usr/bin/env bash
# Install TensorRT's type stubs into a folder that only mypy reads, and fix their syntax errors.
#
# Why a separate folder: the stubs ship a `tensorrt/` directory of .pyi files. On sys.path it is
# an importable namespace package, so `import tensorrt` would "succeed" and every TensorRT call
# after it would fail. Never install them into the venv; point MYPYPATH at the folder instead.
#
# usage: tools/trt_stubs/install.sh [DEST]   (default: .stubs/tensorrt, git-ignored)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${1:-$root/.stubs/tensorrt}"
version="10.13.0.35.1"
python="${PYTHON:-python}"

if [ -f "$dest/.installed-$version" ]; then
    echo "tensorrt-stubs $version already in $dest"
    exit 0
fi
rm -rf "${dest:?}"
mkdir -p "$dest"
"$python" -m pip install --quiet --no-deps --no-compile --target "$dest" "tensorrt-stubs==$version"
# The wheel's own runtime shim (tensorrt_stubs/__init__.py does `from tensorrt import *`) is not a stub.
rm -rf "${dest:?}/tensorrt_stubs" "${dest:?}"/tensorrt_stubs-*.dist-info "${dest:?}/bin"
"$python" "$here/fix_stubs.py" "$dest"
touch "$dest/.installed-$version"
echo "tensorrt-stubs $version installed in $dest (for mypy only: MYPYPATH=$dest:$here/stubs)"
