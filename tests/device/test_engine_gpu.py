"""An engine runs only on the GPU compute capability it was built for: the device scripts record the
GPU trtexec built on (its "Selected Device" and "Compute Capability" lines), compare it with this
device's (the board's on a Jetson, nvidia-smi's elsewhere), and say when a desktop GPU is not the
target's.

An rtx4090 (8.9) bundle built on a T4 (7.5) recorded compute capability 8.9, so edgedeploy's own
sidecar check refused the engine on the machine that built it; a prebuilt RTX 4090 engine was "up
to date" on the T4; setup.sh --strict passed there ("board checks skipped").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKES, Device, make_dense_bundle

from edgedeploy.backends.trt_sidecar import check_loadable, read_sidecar

T4 = {"FAKE_GPU_NAME": "Tesla T4", "FAKE_GPU_CC": "7.5"}
RTX4090 = {"FAKE_GPU_NAME": "NVIDIA GeForce RTX 4090", "FAKE_GPU_CC": "8.9"}
TRT_10_13 = {"FAKE_TRT_VERSION": "101300"}  # the rtx4090 target's TensorRT
XAVIER_NX = "NVIDIA Jetson Xavier NX Developer Kit"
L4T_35_4_1 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64"
ENGINE = Path("device/engines/dense.fp16.engine")


@pytest.fixture(scope="module")
def desktop_bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dense_bundle(tmp_path_factory.mktemp("rtx4090"), target="rtx4090")


@pytest.fixture(scope="module")
def prebuilt_bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An rtx4090 bundle carrying an fp16 engine built with TensorRT 10.13.0 (for compute capability 8.9)."""
    return make_dense_bundle(tmp_path_factory.mktemp("prebuilt"), target="rtx4090", engine_tensorrt="10.13.0")


def copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(src, dest)
    return dest


@pytest.fixture
def desktop(device: Device, tmp_path: Path) -> Device:
    """The fake device as a desktop: no device tree or L4T release, CUDA 12.6, TensorRT 10.13."""
    root = tmp_path / "desktop"
    (root / "usr/local/cuda").mkdir(parents=True)
    (root / "usr/local/cuda/version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}')
    device.root = root
    device.env.update(EDGEDEPLOY_ROOT=str(root), **TRT_10_13)
    return device


def build(bundle: Path, device: Device, *args: str, **env: str) -> str:
    res = device.run(bundle / "scripts" / "build_engine.sh", *args, **env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def sidecar(bundle: Path) -> dict:
    built = read_sidecar(bundle / ENGINE)  # edgedeploy's own reader
    assert built is not None
    return built


def test_the_sidecar_records_the_gpu_trtexec_built_on_not_the_targets(
    desktop_bundle_src: Path, desktop: Device, tmp_path: Path
) -> None:
    bundle = copy(desktop_bundle_src, tmp_path)
    build(bundle, desktop, **T4)
    built = sidecar(bundle)
    assert built["gpu_name"] == "Tesla T4" and built["compute_capability"] == "7.5"
    here = {"tensorrt": "10.13.0", "compute_capability": "7.5", "gpu_name": "Tesla T4"}
    assert check_loadable(bundle / ENGINE, built, here) == []  # loads on the machine that built it
    assert "up to date" in build(bundle, desktop, **T4)
    # a build log without the device lines: nvidia-smi's GPU
    build(bundle, desktop, "--force", FAKE_TRTEXEC_NO_DEVICE="1", **T4)
    assert sidecar(bundle)["compute_capability"] == "7.5" and sidecar(bundle)["gpu_name"] == "Tesla T4"
    assert any(c.startswith("nvidia-smi --query-gpu=name,compute_cap") for c in desktop.calls("nvidia-smi"))
    # neither says: unknown, never the target's 8.9
    for failure in ("1", "field"):
        build(bundle, desktop, "--force", FAKE_TRTEXEC_NO_DEVICE="1", FAKE_NVIDIA_SMI_FAIL=failure, **T4)
        assert sidecar(bundle)["compute_capability"] == "unknown" and sidecar(bundle)["gpu_name"] is None


def test_an_engine_built_for_another_compute_capability_is_rebuilt(
    desktop_bundle_src: Path, desktop: Device, tmp_path: Path
) -> None:
    """A sidecar of the old scripts (the target's 8.9) on a T4, or the bundle moved to another GPU."""
    bundle = copy(desktop_bundle_src, tmp_path)
    build(bundle, desktop, **RTX4090)
    assert sidecar(bundle)["compute_capability"] == "8.9"
    out = build(bundle, desktop, **T4)
    assert "up to date" not in out and "building with" in out
    assert sidecar(bundle)["compute_capability"] == "7.5"


def test_a_bundled_engine_for_another_compute_capability_is_not_up_to_date(
    prebuilt_bundle_src: Path, desktop: Device, tmp_path: Path
) -> None:
    bundle = copy(prebuilt_bundle_src, tmp_path)
    helper = [str(bundle / "scripts" / "bundle_helper.py"), "--trtexec", str(FAKES / "trtexec")]
    res = desktop.run(bundle / "scripts" / "build_engine.sh", **RTX4090)
    assert res.returncode == 0 and "up to date" in res.stdout and "engines/dense.fp16.engine" in res.stdout
    res = desktop.run(bundle / "scripts" / "build_engine.sh", **T4)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "up to date" not in res.stdout and "building with" in res.stdout
    assert sidecar(bundle)["compute_capability"] == "7.5"
    shutil.rmtree(bundle / "device" / "engines")
    res = subprocess.run(
        [sys.executable, *helper, "engine", "--precision", "fp16"],
        capture_output=True,
        text=True,
        env={**desktop.env, **T4},
        timeout=60,
    )
    assert res.returncode == 3, res.stdout + res.stderr
    assert "is for compute capability 8.9 (rtx4090), this GPU has 7.5" in res.stderr


def test_setup_says_when_a_desktop_gpu_is_not_the_targets_and_strict_refuses_it(
    desktop_bundle_src: Path, desktop: Device, tmp_path: Path
) -> None:
    bundle = copy(desktop_bundle_src, tmp_path)
    setup = bundle / "scripts" / "setup.sh"
    res = desktop.run(setup, "--strict", **RTX4090)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok       GPU: NVIDIA GeForce RTX 4090 (compute capability 8.9), target rtx4090" in res.stdout
    line = "GPU: this is Tesla T4 (compute capability 7.5), the bundle is for rtx4090 (compute capability 8.9"
    res = desktop.run(setup, **T4)
    assert res.returncode == 0 and f"differs  {line}" in res.stdout, res.stdout + res.stderr
    res = desktop.run(setup, "--strict", **T4)
    assert res.returncode == 2 and f"MISMATCH {line}" in res.stdout, res.stdout + res.stderr
    report = json.loads((bundle / "device" / "device.json").read_text())
    assert report["device"]["compute_capability"] == "7.5" and report["device"]["gpu_name"] == "Tesla T4"
    res = desktop.run(setup, "--strict", FAKE_NVIDIA_SMI_FAIL="1")
    assert res.returncode == 2 and "differs  GPU: not found" in res.stdout, res.stdout + res.stderr


def test_a_jetson_sidecar_records_the_boards_gpu_not_the_bundles(
    built_bundle: Path, device: Device, tmp_path: Path
) -> None:
    """An orin-nano bundle built on a Xavier NX (setup.sh says MISMATCH; build_engine.sh builds)."""
    bundle = copy(built_bundle, tmp_path)
    device.set_board(XAVIER_NX, L4T_35_4_1, "11.4.315")
    build(bundle, device, FAKE_GPU_NAME="Xavier", FAKE_GPU_CC="7.2")
    assert sidecar(bundle)["compute_capability"] == "7.2" and sidecar(bundle)["gpu_name"] == "Xavier"
    build(bundle, device, "--force", FAKE_TRTEXEC_NO_DEVICE="1")  # the log lacks it: the board's
    assert sidecar(bundle)["compute_capability"] == "7.2"
    assert device.calls("nvidia-smi") == []  # a Jetson's GPU is its board's


def test_the_build_log_names_the_gpu_as_trtexec_prints_it() -> None:
    from edgedeploy.device.bundle_helper import board_compute_capability, gpu_from_log

    log = (
        "[12/05/2024-10:00:00] [I] === Device Information ===\n"
        "[12/05/2024-10:00:00] [I] Available Devices: \n"
        '[12/05/2024-10:00:00] [I]   Device 0: "Tesla T4" UUID: GPU-1\n'
        "[12/05/2024-10:00:00] [I] Selected Device: Tesla T4\n"
        "[12/05/2024-10:00:00] [I] Selected Device ID: 0\n"
        "[12/05/2024-10:00:00] [I] Compute Capability: 7.5\n"
        "[12/05/2024-10:00:00] [I] SMs: 40\n"
    )
    assert gpu_from_log(log) == ("Tesla T4", "7.5")
    assert gpu_from_log("[I] Engine built in 0.12 sec.\n") == (None, None)
    boards = {
        "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super": "8.7",
        "NVIDIA Jetson AGX Orin Developer Kit": "8.7",
        "NVIDIA Jetson Xavier NX Developer Kit": "7.2",
        "Jetson-AGX": "7.2",
        "quill": "6.2",
        "NVIDIA Jetson Nano Developer Kit": "5.3",
        "NVIDIA Jetson AGX Thor Developer Kit": "11.0",
    }
    for board, cc in boards.items():
        assert board_compute_capability(board, "13.0") == cc, board
    assert board_compute_capability("NVIDIA Jetson AGX Thor Developer Kit", "12.8") == "10.1"
    assert board_compute_capability(None, None) is None
