"""tegrastats lines from JetPack 4, 5, 6 and Thor parse into the same typed sample."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.power.jetson import total_rail
from edgedeploy.power.tegrastats import parse_line

SAMPLES = Path(__file__).parents[1] / "data" / "tegrastats-samples.txt"
REAL = [ln for ln in SAMPLES.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
NANO, ORIN_NANO, XAVIER_NX = REAL
# Newer formats described in docs/tensorrt-facts.md, "tegrastats" (current/average/maximum
# rails, two-value temperatures, Thor's shared CPU clock and GR3D_FREQ without utilisation).
AGX_ORIN = (
    "RAM 5124/62841MB (lfb 12x4MB) SWAP 0/31421MB (cached 0MB) CPU [2%@2201,0%@2201,off,off] "
    "EMC_FREQ 0%@3199 GR3D_FREQ 0%@[0,0] cpu@52.968C/52.968C tboard@40C/40C "
    "VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 1186mW/1186mW/1186mW VIN_SYS_5V0 4161mW/4161mW/4161mW"
)
THOR = (
    "08-08-2026 20:58:23 RAM 3429/125749MB (lfb 120x4MB) CPU [0%,5%,off]@2601 EMC_FREQ @4266 "
    "GR3D_FREQ @[1574,1574,1574] cpu@49.75C/49.75C VDD_GPU 6330mW/6330mW/6330mW VIN 28906mW/14453mW/28906mW"
)


def test_jetpack4_nano_line_has_unitless_pom_rails_in_mw() -> None:
    s = parse_line(NANO)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_cached_mb) == (1923, 3964, 191, 6)
    assert [c.load_percent for c in s.cpus] == [5, 4, 3, 6] and {c.freq_mhz for c in s.cpus} == {1224}
    assert (s.emc_load_percent, s.emc_freq_mhz, s.gpu_load_percent, s.gpu_freq_mhz) == (0, 1600, 0, [76])
    assert s.temperatures_c == {"PLL": 37, "CPU": 40, "PMIC": 50, "GPU": 40, "AO": 45, "thermal": 40}
    assert s.rails["POM_5V_IN"].current_mw == 1750 and s.rails["POM_5V_IN"].average_mw == 1628
    assert s.rails["POM_5V_IN"].units == "none (mW assumed)"
    assert set(s.rails) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"} and s.other == []


def test_jetpack6_line_with_timestamp_and_gpc_clock() -> None:
    s = parse_line(ORIN_NANO)
    assert s.timestamp == "11-30-2025 13:26:01"
    assert len(s.cpus) == 6 and s.cpu_online == 6
    assert s.gpu_freq_mhz == [305] and s.gpu_load_percent == 0
    assert s.temperatures_c["tj"] == pytest.approx(48.843)
    assert {n: r.current_mw for n, r in s.rails.items()} == {
        "VDD_IN": 5704,
        "VDD_CPU_GPU_CV": 831,
        "VDD_SOC": 1624,
    }
    assert s.engines["NVDEC"] == "off" and s.engines["APE"] == "200"


def test_jetpack5_xavier_nx_line_with_cores_off() -> None:
    s = parse_line(XAVIER_NX)
    assert [c.online for c in s.cpus] == [True, True, True, True, False, False]
    assert s.cpus[4].load_percent is None and s.cpus[1].freq_mhz == 1906
    assert s.rails["VDD_IN"].current_mw == 5079 and s.engines["VIC_FREQ"] == "601"


def test_agx_orin_rails_with_maximum_and_two_value_temperatures() -> None:
    s = parse_line(AGX_ORIN)
    assert s.rails["VDD_GPU_SOC"].max_mw == 5139 and s.rails["VIN_SYS_5V0"].current_mw == 4161
    assert s.temperatures_c["cpu"] == pytest.approx(52.968) and s.gpu_freq_mhz == [0, 0]
    rails, covered = total_rail(list(s.rails))
    assert rails == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]
    assert "no whole-board input rail" in covered


def test_thor_line_without_gpu_utilisation_and_shared_cpu_clock() -> None:
    s = parse_line(THOR)
    assert s.gpu_load_percent is None and s.gpu_freq_mhz == [1574, 1574, 1574]
    assert s.emc_load_percent is None and s.emc_freq_mhz == 4266
    assert [(c.online, c.load_percent, c.freq_mhz) for c in s.cpus] == [
        (True, 0, 2601),
        (True, 5, 2601),
        (False, None, None),
    ]
    assert total_rail(list(s.rails)) == (["VIN"], "VIN: whole-module input power")


def test_board_input_rail_is_the_total_on_nano_and_orin_nano() -> None:
    assert total_rail(list(parse_line(NANO).rails))[0] == ["POM_5V_IN"]
    assert total_rail(list(parse_line(ORIN_NANO).rails))[0] == ["VDD_IN"]


def test_a_line_without_tegrastats_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_line("tegrastats: command not found")


def _bundled_helper() -> Any:
    """edgedeploy/device/tegrastats_power.py, loaded as the bundle's scripts/ run it."""
    import importlib.util

    path = Path(__file__).parents[2] / "edgedeploy" / "device" / "tegrastats_power.py"
    spec = importlib.util.spec_from_file_location("bundled_tegrastats_power", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextmanager
def _without_edgedeploy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The helper as on a board without edgedeploy: its standard-library fallback parser."""
    import builtins

    real_import = builtins.__import__

    def no_edgedeploy(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("edgedeploy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_edgedeploy)
    try:
        yield
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)


def test_bundled_fallback_parser_agrees_with_the_package_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _bundled_helper()
    for line in [*REAL, AGX_ORIN, THOR]:
        full = mod.rails_watts(line)
        with _without_edgedeploy(monkeypatch):
            fallback = mod.rails_watts(line)
        assert fallback == pytest.approx(full) and full


def test_a_line_cut_short_reads_no_memory_field_as_a_rail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line cut short ("RAM 4722/30536", before the unit) was read as a JetPack 4 unitless rail, 4.7 W,
    by both parsers, and so were SWAP and IRAM; every prefix of a real line now gives only rails of
    the whole line, at the whole line's current value, or none (the helper then skips the line)."""
    mod = _bundled_helper()
    assert mod.rails_watts("RAM 4722/30536") == {}
    for line in [*REAL, AGX_ORIN, THOR]:
        whole = mod.rails_watts(line)
        for end in range(1, len(line)):
            prefix = line[:end]
            for rails in (mod.rails_watts(prefix), _fallback_rails(mod, prefix, monkeypatch)):
                assert set(rails) <= set(whole), prefix
                assert rails == pytest.approx({n: whole[n] for n in rails}), prefix
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_line("RAM 4722/30536")
    s = parse_line("RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982 CPU [5%@1224] IRAM 0/252")
    assert s.rails == {} and s.swap_used_mb is None and s.cpus


def test_the_bundled_helper_knows_the_same_non_rail_fields() -> None:
    from edgedeploy.power.tegrastats import NOT_RAILS

    assert _bundled_helper().NOT_RAILS == NOT_RAILS


def _fallback_rails(mod: Any, line: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    with _without_edgedeploy(monkeypatch):
        return dict(mod.rails_watts(line))


def test_a_truncated_line_adds_no_memory_figure_to_an_agx_orin_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGX Orin has no input rail, so its total is the sum of its rails: a line cut short
    ("RAM 4722/30536") inside the measured window made that sum 14.23 W where the rails give 9.51 W."""
    mod = _bundled_helper()
    monkeypatch.syspath_prepend(str(Path(mod.__file__).parent))  # bundle_helper beside it, as in scripts/
    log = tmp_path / "tegrastats.log"
    lines = [f"{1000 + i / 10:.6f} {AGX_ORIN}" for i in range(41)]
    lines.insert(21, "1002.050000 RAM 4722/30536")
    log.write_text("\n".join(lines) + "\n")
    trt = tmp_path / "trt.log"
    trt.write_text(
        "1000.050000 [I] Starting inference\n1003.250000 [I] === Performance summary ===\n"
        "1003.250000 [I] Throughput: 500.0 qps\n"
        "1003.250000 [I] Latency: min = 1.9 ms, max = 2.5 ms, mean = 2.0 ms, median = 2.0 ms\n"
    )
    args = ["summarize", "--trtexec-log", str(trt), "--tegrastats-log", str(log), "--warmup-ms", "200"]
    expected = 5.139 + 1.186 + 4.161
    for fallback in (False, True):
        out = tmp_path / f"power-{fallback}.json"
        with _without_edgedeploy(monkeypatch) if fallback else contextlib.nullcontext():
            assert mod.main([*args, "--out", str(out)]) == 0
        power = json.loads(out.read_text())["power"]
        assert power["avg_power_w"] == pytest.approx(expected), fallback
        assert set(power["rails"]) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}
