"""The device side of a bundle: bash scripts and their small python helpers, copied into DIR/scripts/.

setup.sh (board and version checks, power mode, clocks), build_engine.sh (engine from the
bundled ONNX, on the device), verify.sh (checksums and accuracy against the fp32 reference)
and benchmark.sh (latency, power, energy per inference). The helpers run with JetPack's
python3 and NumPy only, since edgedeploy is usually not installed on the board.
"""

from __future__ import annotations

from pathlib import Path

SCRIPTS = ("setup.sh", "build_engine.sh", "verify.sh", "benchmark.sh", "common.sh")
HELPERS = ("bundle_helper.py", "verify_outputs.py", "tegrastats_power.py")


def device_files() -> list[Path]:
    """Every file the bundle writer copies into ``DIR/scripts/`` (the .sh files must be made executable)."""
    here = Path(__file__).resolve().parent
    files = [here / name for name in (*SCRIPTS, *HELPERS)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"device scripts missing from the installed package: {', '.join(missing)}")
    return files
