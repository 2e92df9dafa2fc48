"""Average power and energy per inference from tegrastats, RAPL and NVML; "not measurable" otherwise."""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from edgedeploy.power import PowerMonitor
from edgedeploy.power.integrate import (
    MAX_TRACE_POINTS,
    counter_delta,
    counter_power,
    make_trace,
    window_average,
)

FAKE_TEGRASTATS = Path(__file__).parents[1] / "device" / "fakes" / "tegrastats"


def test_window_average_is_time_weighted_and_interpolates_the_edges() -> None:
    # 2 W until t=1, ramping to 4 W at t=2: mean over [0.5, 2] = (0.5*2 + 1*3) / 1.5
    assert window_average([0, 1, 2], [2, 2, 4], 0.5, 2.0) == pytest.approx((0.5 * 2 + 3) / 1.5)
    # a window shorter than the sampling interval, bracketed by samples, is interpolated
    assert window_average([0, 1], [1, 3], 0.25, 0.75) == pytest.approx(2.0)
    assert window_average([5], [1], 0, 1) is None  # nothing inside, nothing before


def test_counter_delta_unwraps_energy_counters() -> None:
    assert counter_delta([900, 990, 30], wrap=1000) == 130
    with pytest.raises(ValueError):
        counter_delta([10, 5], wrap=None)


def test_no_power_source_reports_not_measurable_never_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with PowerMonitor(powercap_root=tmp_path / "powercap") as pm:
        time.sleep(0.01)
    r = pm.result(100)
    assert r.measurable is False and r.source is None
    assert r.reason is not None and r.reason.startswith("not measurable here: ")
    assert "tegrastats" in r.reason and "NVML" in r.reason and "RAPL" in r.reason
    assert r.avg_power_w is None and r.energy_j is None and r.energy_per_inference_mj is None


def test_tegrastats_source_integrates_board_input_power(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKE_TEGRASTATS.parent}{os.pathsep}{os.environ['PATH']}")
    with PowerMonitor(interval_ms=50) as pm:
        time.sleep(0.5)
    r = pm.result(250)
    assert r.measurable and r.source == "tegrastats"
    assert r.avg_power_w == pytest.approx(5.0)  # VDD_IN 5000mW in the fake's line
    assert r.rails == pytest.approx({"VDD_IN": 5.0, "VDD_CPU_GPU_CV": 0.831, "VDD_SOC": 1.624})
    assert r.rails_covered == "VDD_IN: whole-module input power"
    assert r.energy_per_inference_mj == pytest.approx(5.0 * r.duration_s / 250 * 1000)
    assert r.samples >= 5
    assert r.trace is not None and next(iter(r.trace["rails"])) == "VDD_IN"  # the report's power chart
    assert set(r.trace["rails"]["VDD_IN"]) == {5.0} and len(r.trace["t_s"]) >= 3


def test_agx_orin_total_is_the_sum_of_rails_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKE_TEGRASTATS.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(
        "FAKE_TEGRASTATS_LINE",
        "RAM 5124/62841MB CPU [2%@2201] VDD_GPU_SOC 3000mW/3000mW/3000mW "
        "VDD_CPU_CV 1000mW/1000mW/1000mW VIN_SYS_5V0 2000mW/2000mW/2000mW",
    )
    with PowerMonitor(interval_ms=50, source="tegrastats") as pm:
        time.sleep(0.3)
    r = pm.result(10)
    assert r.avg_power_w == pytest.approx(6.0)
    assert r.rails_covered is not None and "no whole-board input rail" in r.rails_covered


def _fake_powercap(root: Path) -> Path:
    """Like /sys/class/powercap: every zone, subzones too, sits at the top level."""
    pkg, core = root / "intel-rapl:0", root / "intel-rapl:0:0"
    pkg.mkdir(parents=True)
    core.mkdir()
    (pkg / "name").write_text("package-0\n")
    (pkg / "energy_uj").write_text("999000000\n")
    (pkg / "max_energy_range_uj").write_text("1000000000\n")
    (core / "name").write_text("core\n")
    (core / "energy_uj").write_text("0\n")
    return pkg


def test_rapl_counters_give_cpu_package_energy_across_a_wraparound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    pkg = _fake_powercap(tmp_path / "powercap")
    with PowerMonitor(interval_ms=20, powercap_root=tmp_path / "powercap") as pm:
        time.sleep(0.1)
        (pkg / "energy_uj").write_text("1000000\n")  # wrapped: +2 J in total
        (pkg.parent / "intel-rapl:0:0" / "energy_uj").write_text("500000\n")
        time.sleep(0.1)
    r = pm.result(1000)
    assert r.source == "rapl" and r.measurable
    assert r.energy_j == pytest.approx(2.0, rel=0.05)
    assert r.energy_per_inference_mj == pytest.approx(2.0, rel=0.05)
    assert set(r.rails) == {"package-0", "core@intel-rapl:0:0"}
    assert r.rails_covered is not None and r.rails_covered.startswith("CPU package domains package-0")


def test_unreadable_rapl_counter_is_a_reason_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_powercap(tmp_path / "powercap")
    real_read = Path.read_text

    def root_only(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", root_only)
    with PowerMonitor(source="rapl", powercap_root=tmp_path / "powercap") as pm:
        pass
    r = pm.result(1)
    assert not r.measurable and "is not readable (root only since Linux 5.10)" in (r.reason or "")


def test_nvml_energy_counter_gives_gpu_board_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = {"mj": 1000.0}
    lock = threading.Lock()

    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: "gpu"  # type: ignore[attr-defined]

    def energy(handle: str) -> float:
        with lock:
            return counter["mj"]

    fake.nvmlDeviceGetTotalEnergyConsumption = energy  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with PowerMonitor(source="nvml", interval_ms=20) as pm:
        time.sleep(0.05)
        with lock:
            counter["mj"] += 3000.0  # 3 J
    r = pm.result(300)
    assert r.source == "nvml" and r.energy_j == pytest.approx(3.0)
    assert r.energy_per_inference_mj == pytest.approx(10.0)
    assert r.rails_covered is not None and "GPU board power of gpu0" in r.rails_covered


def test_trace_keeps_the_window_from_t0_and_thins_long_runs() -> None:
    times = [float(i) for i in range(3 * MAX_TRACE_POINTS)]
    trace = make_trace(times, {"r": [1.0] * len(times)}, 10.0, times[-1])
    assert trace is not None and trace["t_s"][0] == 0.0  # seconds since the window opened
    assert len(trace["t_s"]) <= MAX_TRACE_POINTS and len(trace["rails"]["r"]) == len(trace["t_s"])
    assert make_trace([0.0, 5.0], {"r": [1.0, 1.0]}, 1.0, 2.0) is None  # nothing to draw


def test_counter_power_is_the_energy_step_over_the_time_step_with_wraps() -> None:
    # microjoules (RAPL): 2 J in 1 s, then a wrap at 10 J with 3 J more in 0.5 s
    watts = counter_power([0.0, 1.0, 1.5], [6e6, 8e6, 1e6], 10e6, 1e-6)
    assert watts[0] is None and watts[1:] == pytest.approx([2.0, 6.0])


def test_a_window_counts_only_the_energy_spent_inside_it_not_the_warm_up_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAPL's counter gains 2 J during the warm-up and 1 J in the window: the window's energy is 1 J
    (a reading is taken at each edge), and its duration is the window's."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    pkg = _fake_powercap(tmp_path / "powercap")

    def set_counter(text: str) -> None:  # whole, as sysfs gives it: the poller never reads it half-written
        (pkg / "next").write_text(text)
        (pkg / "next").replace(pkg / "energy_uj")

    with PowerMonitor(interval_ms=20, powercap_root=tmp_path / "powercap") as pm:
        set_counter("999500000\n")
        time.sleep(0.05)
        set_counter("1000000\n")  # +2 J, wrapped, before the window
        time.sleep(0.05)
        with pm.window():
            time.sleep(0.05)
            set_counter("2000000\n")  # +1 J inside it
            time.sleep(0.05)
        set_counter("9000000\n")  # +7 J after it
        time.sleep(0.05)
    r = pm.result(10)
    assert r.source == "rapl" and r.measurable
    assert r.energy_j == pytest.approx(1.0, rel=0.05)
    assert r.energy_per_inference_mj == pytest.approx(100, rel=0.05)
    assert r.duration_s is not None and 0.09 <= r.duration_s < 0.2
