"""Probing the machine for the TensorRT path, and reading Jetson, clock and power-mode facts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgedeploy.backends import trt_env
from edgedeploy.backends.runtime import clocks


def test_importing_the_backend_and_runtime_loads_neither_tensorrt_nor_pycuda() -> None:
    code = (
        "import sys, edgedeploy.backends.tensorrt, edgedeploy.backends.runtime;"
        "import edgedeploy.backends.trt_build;"
        "import edgedeploy.backends.runtime.timing, edgedeploy.backends.runtime.runner;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'pycuda')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_probe_without_tensorrt_says_unusable_and_how_to_get_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(trt_env, "DEVICE_TREE_MODEL", tmp_path / "none")
    monkeypatch.setattr(trt_env, "NV_TEGRA_RELEASE", tmp_path / "none")
    facts = trt_env.probe()
    assert facts["tensorrt"] is None and facts["tensorrt_usable"] == "no"
    assert facts["problem"] and "pip install tensorrt" in facts["problem"]
    ok, why = trt_env.gpu_tests_can_run()
    assert not ok and why.startswith("gpu tests are skipped: ")


def test_probe_reads_gpu_jetson_model_and_l4t_release(fake_gpu, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (tmp_path / "release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    )
    monkeypatch.setattr(trt_env, "DEVICE_TREE_MODEL", tmp_path / "model")
    monkeypatch.setattr(trt_env, "NV_TEGRA_RELEASE", tmp_path / "release")
    fake_gpu.gpu.compute_capability = (8, 7)
    facts = trt_env.probe()
    assert facts["jetson_model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert facts["l4t_release"] == "36.4.3"
    assert facts["compute_capability"] == "8.7" and facts["cuda_driver"] == "12.4"
    assert facts["tensorrt_usable"] == "yes" and facts["problem"] is None
    assert trt_env.gpu_tests_can_run()[0]


def test_tensorrt_without_pycuda_or_gpu_is_not_available(fake_gpu, monkeypatch) -> None:
    fake_gpu.gpu.present = False
    ok, why = trt_env.availability()
    assert not ok and "no CUDA GPU answers" in why
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    ok, why = trt_env.availability()
    assert not ok and "pip install pycuda" in why


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NV Power Mode: MAXN\n0\n", {"power_mode": "MAXN", "power_mode_id": "0"}),
        ("NVPM WARN: patching\nNV Power Mode: 15W\n1\n", {"power_mode": "15W", "power_mode_id": "1"}),
        ("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n", {"power_mode": "MAXN", "power_mode_id": "0"}),
        ("garbage", {}),
    ],
)
def test_nvpmodel_query_is_parsed(text: str, expected: dict[str, str]) -> None:
    assert clocks.parse_nvpmodel(text) == expected


def test_nvidia_smi_clocks_are_parsed_and_na_fields_dropped() -> None:
    assert clocks.parse_nvidia_smi("2520, 3105, 10501, 450.00, P2\n") == {
        "gpu_clock_mhz": "2520",
        "gpu_clock_max_mhz": "3105",
        "memory_clock_mhz": "10501",
        "power_limit_w": "450.00",
        "pstate": "P2",
    }
    assert "power_limit_w" not in clocks.parse_nvidia_smi("1000, 1500, 5000, [N/A], P0")


def test_jetson_gpu_devfreq_reports_clock_and_whether_it_is_pinned(tmp_path: Path) -> None:
    node = tmp_path / "17000000.gpu"
    node.mkdir()
    for key, value in (("cur_freq", 1300500000), ("min_freq", 1300500000), ("max_freq", 1300500000)):
        (node / key).write_text(f"{value}\n")
    assert clocks.read_gpu_devfreq((tmp_path,)) == {
        "gpu_clock_mhz": "1300",
        "gpu_clock_max_mhz": "1300",
        "gpu_clock_pinned": "yes",
    }
    (node / "cur_freq").write_text("306000000\n")
    assert clocks.read_gpu_devfreq((tmp_path,))["gpu_clock_pinned"] == "no"
