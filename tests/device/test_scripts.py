"""The bundle's device scripts against a fake Jetson (fake tools on PATH, fake device tree)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Device, make_dense_bundle

from edgedeploy.device import SCRIPTS, device_files
from edgedeploy.stages.precision.int8 import cache_version_for
from edgedeploy.targets import load_target

SCRIPT_NAMES = ("setup.sh", "build_engine.sh", "verify.sh", "benchmark.sh")


def script(bundle: Path, name: str) -> Path:
    return bundle / "scripts" / name


def test_bundle_carries_every_device_file_executable(bundle: Path) -> None:
    for f in device_files():
        copied = bundle / "scripts" / f.name
        assert copied.read_bytes() == f.read_bytes()
        if f.suffix == ".sh":
            assert copied.stat().st_mode & 0o111


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_help_works_from_any_directory(
    bundle: Path, device: Device, tmp_path: Path, name: str
) -> None:
    res = device.run(script(bundle, name), "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage:")


def test_verify_help_names_every_accuracy_gate_verify_outputs_applies(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    """verify.sh --help listed the gates as cosine, top-1 agreement, NaN/Inf and atol/rtol, without
    the scale check the cosine gate holds since 80a3077 (a float output's norm ratio), the equal
    share bool/integer outputs are gated on, and the failure of an output of another shape, all of
    which verify_outputs.py applies (its _metrics and metrics)."""
    res = device.run(script(bundle, "verify.sh"), "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    usage = " ".join(res.stdout.split())
    gates = ["cosine", "norm ratio", "argmax (top-1) agreement", "equal share", "NaN/Inf", "another shape"]
    for gate in [*gates, "atol/rtol"]:
        assert gate in usage, (gate, usage)


def test_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    here = Path(device_files()[0]).parent
    res = subprocess.run(["shellcheck", "-x", *SCRIPTS], cwd=here, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_setup_on_matching_board_sets_power_mode_and_pins_clocks(bundle: Path, device: Device) -> None:
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "--pin-clocks")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok       board: NVIDIA Jetson Orin Nano Developer Kit" in res.stdout
    assert "ok       JetPack: 6.2 (L4T 36.4.3)" in res.stdout
    assert "ok       TensorRT: 10.3.0" in res.stdout
    # default_power_mode of jetson-orin-nano is 15W = nvpmodel id 0; clocks stored before pinning
    assert device.calls("nvpmodel") == ["nvpmodel -q", "nvpmodel -m 0"]
    clocks = device.calls("jetson_clocks")
    assert clocks == [f"jetson_clocks --store {bundle}/device/jetson_clocks.conf", "jetson_clocks"]
    res = device.run(script(bundle, "setup.sh"), "--restore")
    assert res.returncode == 0, res.stderr
    assert device.calls("jetson_clocks")[-1] == f"jetson_clocks --restore {bundle}/device/jetson_clocks.conf"
    assert device.calls("nvpmodel")[-1] == "nvpmodel -m 0"


def test_setup_named_power_mode_uses_the_board_id_of_the_name(bundle: Path, device: Device) -> None:
    assert device.run(script(bundle, "setup.sh"), "--power-mode", "7W").returncode == 0
    assert device.calls("nvpmodel")[-1] == "nvpmodel -m 3"
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "99W")
    assert res.returncode == 2
    assert "power mode '99W' is not one of this board's" in res.stderr
    (device.root / "etc/nvpmodel.conf").unlink()
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "99W")
    assert res.returncode == 2
    assert "power mode '99W' is not in the target profile (modes: 15W, 25W, MAXN_SUPER, 7W)" in res.stderr


JP62_SUPER_CONF = (
    "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=25W >\n"
    "< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n< POWER_MODEL ID=3 NAME=7W >\n< PM_CONFIG DEFAULT=2 >\n"
)
JP6_CONF = "< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=7W >\n"


@pytest.mark.parametrize(
    "conf, mode, expected",
    [
        (JP62_SUPER_CONF, "7W", "3"),
        (JP62_SUPER_CONF, "25W", "1"),
        (JP6_CONF, "7W", "1"),
        (JP6_CONF, "15W", "0"),
    ],
    ids=["jp62-7W", "jp62-25W", "jp6-7W", "jp6-15W"],
)
def test_setup_power_mode_takes_the_id_the_board_gives_the_name(
    bundle: Path, device: Device, conf: str, mode: str, expected: str
) -> None:
    """Power-mode ids differ per JetPack release (an Orin Nano's 7W is 1 on JetPack 6.0/6.1, 3 on a 6.2
    Super board, whose 1 is 25W): `--power-mode 7W` set the target profile's id, 25W on a 6.2 board.
    The name is looked up in the board's /etc/nvpmodel.conf, what nvpmodel itself reads."""
    (device.root / "etc/nvpmodel.conf").write_text(conf)
    res = device.run(script(bundle, "setup.sh"), "--power-mode", mode)
    assert res.returncode == 0, res.stdout + res.stderr
    assert device.calls("nvpmodel")[-1] == f"nvpmodel -m {expected}"


def test_setup_power_mode_names_the_board_modes_for_a_name_it_lacks(bundle: Path, device: Device) -> None:
    (device.root / "etc/nvpmodel.conf").write_text(JP6_CONF)
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "MAXN_SUPER")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "error: power mode 'MAXN_SUPER' is not one of this board's (/etc/nvpmodel.conf: 15W, 7W)"
    )
    assert "nvpmodel -m" not in " ".join(device.calls("nvpmodel"))


def test_setup_power_mode_without_the_board_conf_uses_the_profile_id_and_says_so(
    bundle: Path, device: Device
) -> None:
    (device.root / "etc/nvpmodel.conf").unlink()
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "MAXN_SUPER")
    assert res.returncode == 0, res.stderr
    assert device.calls("nvpmodel")[-1] == "nvpmodel -m 2"
    assert "/etc/nvpmodel.conf not readable: the target profile's id 2 for MAXN_SUPER" in res.stdout


def test_setup_restore_restores_a_power_mode_set_alone(bundle: Path, device: Device) -> None:
    """--restore needed the clocks file: after --power-mode alone it said "nothing to restore"."""
    res = device.run(script(bundle, "setup.sh"), "--restore")
    assert res.returncode == 2 and "nothing to restore" in res.stderr, res.stderr
    assert device.run(script(bundle, "setup.sh"), "--power-mode", "7W", FAKE_NVP_ID="0").returncode == 0
    assert device.calls("nvpmodel") == ["nvpmodel -q", "nvpmodel -m 3"]
    res = device.run(script(bundle, "setup.sh"), "--restore")
    assert res.returncode == 0, res.stderr
    assert device.calls("nvpmodel")[-1] == "nvpmodel -m 0" and device.calls("jetson_clocks") == []
    # clocks pinned alone: restored alone
    (bundle / "device" / "nvpmodel.previous").unlink()
    assert device.run(script(bundle, "setup.sh"), "--pin-clocks").returncode == 0
    res = device.run(script(bundle, "setup.sh"), "--restore")
    assert res.returncode == 0, res.stderr
    assert device.calls("jetson_clocks")[-1] == f"jetson_clocks --restore {bundle}/device/jetson_clocks.conf"
    assert device.calls("nvpmodel").count("nvpmodel -m 0") == 1


@pytest.mark.parametrize("fan", ["", "quiet", "cool"], ids=["no-fan-line", "orin-nx-jp6", "xavier"])
def test_setup_saves_and_restores_the_power_mode_after_a_fan_line(
    bundle: Path, device: Device, fan: str
) -> None:
    """`nvpmodel -q` prints "NV Fan Mode:quiet" first on many boards: the id (line 3) was not saved,
    and --restore said "nothing to restore", leaving the board in the benchmark's mode."""
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "7W", FAKE_NVP_FAN=fan, FAKE_NVP_ID="2")
    assert res.returncode == 0, res.stderr
    assert (bundle / "device" / "nvpmodel.previous").read_text().strip() == "2"
    res = device.run(script(bundle, "setup.sh"), "--restore")
    assert res.returncode == 0, res.stderr
    assert device.calls("nvpmodel") == ["nvpmodel -q", "nvpmodel -m 3", "nvpmodel -m 2"]


def test_setup_refuses_a_mismatched_board_and_touches_nothing(bundle: Path, device: Device) -> None:
    device.set_board(
        model="NVIDIA Jetson Nano Developer Kit",
        release="# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64",
    )
    res = device.run(script(bundle, "setup.sh"), "--power-mode", "--pin-clocks")
    assert res.returncode == 2
    assert (
        "MISMATCH board: this is 'NVIDIA Jetson Nano Developer Kit', the bundle is for jetson-orin-nano"
        in res.stdout
    )
    assert "differs  JetPack: 4.6.1 (L4T 32.7.1), expected 6.0, 6.1, 6.2, 7.2" in res.stdout
    assert device.calls("nvpmodel") == [] and device.calls("jetson_clocks") == []


def test_setup_reports_version_differences_and_fails_them_only_with_strict(
    bundle: Path, device: Device
) -> None:
    device.set_board(
        release="# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", cuda="11.4.315"
    )
    env = {"FAKE_TRT_VERSION": "8502"}
    res = device.run(script(bundle, "setup.sh"), **env)
    assert res.returncode == 0, res.stderr
    assert "differs  JetPack: 5.1.2 (L4T 35.4.1), expected 6.0, 6.1, 6.2, 7.2" in res.stdout
    assert "differs  TensorRT: 8.5.2, expected 8.6.2, 10.3.0, 10.16.2" in res.stdout
    assert device.run(script(bundle, "setup.sh"), "--strict", **env).returncode == 2


def test_setup_on_a_jetpack_7_thor_finds_its_tensorrt(tmp_path: Path, device: Device) -> None:
    """JetPack 7.0 (L4T 38.2) ships TensorRT 10.13.3 (docs/tensorrt-facts.md): the jetson-thor target
    said 10.13.0, so a Thor read "differs  TensorRT: 10.13.3, expected 10.13.0" (a MISMATCH with
    --strict, and engines to rebuild) and its INT8 caches carried the header TRT-101300."""
    bundle = make_dense_bundle(tmp_path / "thor", target="jetson-thor")
    device.set_board(
        model="NVIDIA Jetson AGX Thor Developer Kit",
        release="# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64",
        cuda="13.0.48",
    )
    res = device.run(script(bundle, "setup.sh"), "--strict", FAKE_TRT_VERSION="101303")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok       TensorRT: 10.13.3" in res.stdout
    assert cache_version_for(load_target("jetson-thor")) == "10.13.3"


def test_setup_reads_the_jetpack_of_every_listed_l4t_and_of_a_patch_release_not_listed(
    tmp_path: Path, device: Device
) -> None:
    """bundle_helper's L4T table stopped at 38.2.0: a Thor on L4T 38.2.1 (JetPack 7.0, NVIDIA's Jetson
    Linux archive) or a later 38.2.x read "differs  JetPack: unknown (L4T 38.2.1)", and so did a
    38.4 (JetPack 7.1). A listed release reads its JetPack; a patch release not listed reads the
    nearest listed one of its major.minor, and says so; another major.minor stays unknown."""
    bundle = make_dense_bundle(tmp_path / "thor", target="jetson-thor")
    thor = "NVIDIA Jetson AGX Thor Developer Kit"
    expected = {
        "2.1": "ok       JetPack: 7.0 (L4T 38.2.1)",
        "2.2": "ok       JetPack: 7.0 (L4T 38.2.2, not listed: read as 38.2.1)",
        "4.0": "ok       JetPack: 7.1 (L4T 38.4.0)",
        "9.0": "differs  JetPack: unknown (L4T 38.9.0); expected 7.0, 7.1, 7.2",
    }
    for revision, line in expected.items():
        release = f"# R38 (release), REVISION: {revision}, GCID: 41844464, BOARD: generic, EABI: aarch64"
        device.set_board(model=thor, release=release, cuda="13.0.48")
        res = device.run(script(bundle, "setup.sh"), FAKE_TRT_VERSION="101303")
        assert res.returncode == 0, res.stdout + res.stderr
        assert line in res.stdout, res.stdout
        if revision != "9.0":
            assert "ok       CUDA: 13.0.48" in res.stdout, res.stdout
    from edgedeploy.device.bundle_helper import jetpack_for_l4t

    assert jetpack_for_l4t("36.4.7") == ("6.2.1", "12.6", "36.4.4")
    assert jetpack_for_l4t("35.6.2") == ("5.1.5", "11.4", "35.6.1")
    assert jetpack_for_l4t("36.4.3") == ("6.2", "12.6", "36.4.3")
    assert jetpack_for_l4t("37.1.0") == (None, None, None) and jetpack_for_l4t(None) == (None, None, None)


@pytest.mark.parametrize(
    ("target", "model", "revision", "cuda", "trt", "jetpack"),
    [
        ("jetson-thor", "NVIDIA Jetson AGX Thor Developer Kit", "R38 (release), REVISION: 4.0", "13.0.48",
         ("101303", "10.13.3"), "7.1 (L4T 38.4.0)"),
        ("jetson-thor", "NVIDIA Jetson AGX Thor Developer Kit", "R39 (release), REVISION: 2.0", "13.2.78",
         ("101602", "10.16.2"), "7.2 (L4T 39.2.0)"),
        ("jetson-agx-orin", "Jetson AGX Orin", "R39 (release), REVISION: 2.0", "13.2.78",
         ("101602", "10.16.2"), "7.2 (L4T 39.2.0)"),
        ("jetson-orin-nano", "NVIDIA Jetson Orin Nano Developer Kit", "R39 (release), REVISION: 2.0",
         "13.2.78", ("101602", "10.16.2"), "7.2 (L4T 39.2.0)"),
        ("jetson-orin-nx", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
         "R39 (release), REVISION: 2.0", "13.2.78", ("101602", "10.16.2"), "7.2 (L4T 39.2.0)"),
    ],
)  # fmt: skip
def test_setup_passes_a_board_on_every_jetpack_its_target_runs_on(
    tmp_path: Path, device: Device, target: str, model: str, revision: str, cuda: str,
    trt: tuple[str, str], jetpack: str,
) -> None:  # fmt: skip
    """jetson-thor listed JetPack 7.0 only (TensorRT 10.13.3), the Orin targets 6.x only: a Thor on
    JetPack 7.1 (L4T 38.4) or 7.2 (L4T 39.2, TensorRT 10.16.2), or an Orin on JetPack 7.2, which NVIDIA
    supports them on (docs/tensorrt-facts.md, "Jetson modules and GPUs"), was told "differs  JetPack:
    7.1 (L4T 38.4.0), expected 7.0" (and its TensorRT differed), and setup.sh --strict failed it."""
    bundle = make_dense_bundle(tmp_path / target, target=target)
    release = f"# {revision}, GCID: 41844464, BOARD: generic, EABI: aarch64"
    device.set_board(model=model, release=release, cuda=cuda)
    res = device.run(script(bundle, "setup.sh"), "--strict", FAKE_TRT_VERSION=trt[0])
    assert res.returncode == 0, res.stdout + res.stderr
    for line in (f"ok       JetPack: {jetpack}", f"ok       CUDA: {cuda}", f"ok       TensorRT: {trt[1]}"):
        assert line in res.stdout, res.stdout
    assert "differs" not in res.stdout, res.stdout


def test_verify_reports_a_damaged_file_with_exit_2(bundle: Path, device: Device) -> None:
    model = bundle / "models" / "dense.fp16.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    res = device.run(script(bundle, "verify.sh"))
    assert res.returncode == 2
    assert "models/dense.fp16.onnx: sha256 differs from the manifest" in res.stderr
    assert device.calls("trtexec") == []


def test_verify_without_an_engine_asks_for_a_build(bundle: Path, device: Device) -> None:
    res = device.run(script(bundle, "verify.sh"))
    assert res.returncode == 2
    assert "no fp16 engine for this device: run scripts/build_engine.sh" in res.stderr


def test_missing_engine_is_built_with_trtexec_then_verified(bundle: Path, device: Device) -> None:
    res = device.run(script(bundle, "build_engine.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    engine = bundle / "device" / "engines" / "dense.fp16.engine"
    assert engine.is_file()
    sidecar = json.loads(engine.with_name("dense.fp16.engine.json").read_text())
    assert sidecar["tensorrt"] == "10.3.0" and sidecar["board"] == "NVIDIA Jetson Orin Nano Developer Kit"
    build = [c for c in device.calls("trtexec") if "--onnx=" in c]
    assert len(build) == 1
    argv = build[0].split()
    assert f"--onnx={bundle}/models/dense.fp16.onnx" in argv
    assert "--stronglyTyped" in argv and "--fp16" not in argv  # TensorRT 10: precision is in the ONNX
    assert "--memPoolSize=workspace:1024M" in argv  # the target's default workspace
    assert "--minShapes=input:1x1x8x8" in argv and "--maxShapes=input:16x1x8x8" in argv
    assert f"--timingCacheFile={bundle}/device/timing.cache" in argv
    assert any(a.startswith("--saveEngine=") and ".building." in a for a in argv)  # temp name, then renamed
    # a second run finds the matching engine and does not build
    res = device.run(script(bundle, "build_engine.sh"))
    assert res.returncode == 0 and "up to date" in res.stdout
    assert len([c for c in device.calls("trtexec") if "--onnx=" in c]) == 1
    # asking for another batch range builds again (the engine took 16 at most)
    res = device.run(script(bundle, "build_engine.sh"), "--max-batch", "32")
    assert res.returncode == 0 and "up to date" not in res.stdout, res.stdout + res.stderr
    builds = [c for c in device.calls("trtexec") if "--onnx=" in c]
    assert len(builds) == 2 and "--maxShapes=input:32x1x8x8" in builds[1].split()
    # the engine reproduces the fp32 reference within the gates; the bundle stays valid
    res = device.run(script(bundle, "verify.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accuracy: pass" in res.stdout
    assert json.loads((bundle / "device/results/verify-fp16.json").read_text())["passed"] is True


def test_tensorrt_8_builds_with_precision_flags(bundle: Path, device: Device) -> None:
    device.set_board(
        release="# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", cuda="11.4.315"
    )
    res = device.run(script(bundle, "build_engine.sh"), FAKE_TRT_VERSION="8502")
    assert res.returncode == 0, res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    assert "--fp16" in argv and "--stronglyTyped" not in argv


def test_failed_build_keeps_the_good_engine(bundle: Path, device: Device) -> None:
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    engine = bundle / "device" / "engines" / "dense.fp16.engine"
    good = engine.read_bytes()
    res = device.run(script(bundle, "build_engine.sh"), "--force", FAKE_TRTEXEC_FAIL="1")
    assert res.returncode == 1
    assert "Could not find any implementation" in res.stderr
    assert engine.read_bytes() == good
    assert sorted(p.name for p in engine.parent.iterdir()) == ["dense.fp16.engine", "dense.fp16.engine.json"]


def test_verify_fails_with_exit_1_when_outputs_drift(bundle: Path, device: Device) -> None:
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    res = device.run(script(bundle, "verify.sh"), FAKE_TRTEXEC_NOISE="3.0")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL: cosine" in res.stdout and "accuracy: FAIL" in res.stdout


def test_engine_from_another_tensorrt_is_not_used(bundle: Path, device: Device) -> None:
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    res = device.run(script(bundle, "verify.sh"), FAKE_TRT_VERSION="100700")
    assert res.returncode == 2
    assert "run scripts/build_engine.sh" in res.stderr


def test_benchmark_writes_latency_power_and_energy(bundle: Path, device: Device) -> None:
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    out = bundle / "device" / "results" / "bench.json"
    res = device.run(script(bundle, "benchmark.sh"), "--duration", "1", "--warmup", "100", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    assert result["latency_ms"]["p99_ms"] == 0.80 and result["latency_ms"]["median_ms"] == 0.48
    assert result["latency_ms"]["p90_ms"] == 0.55 and "p9_ms" not in result["latency_ms"]  # was "p9_ms"
    assert result["throughput_qps"] == 2000.5
    assert result["settings"]["cuda_graph"] is True and result["settings"]["data_transfers"] is True
    assert result["settings"]["power_mode"] == "15W"
    assert "--useCudaGraph" in result["settings"]["command"]
    power = result["power"]
    assert power["measurable"] is True and power["source"] == "tegrastats"
    assert power["rails"]["VDD_IN"] == pytest.approx(5.0)
    assert power["rails_covered"].startswith("VDD_IN")
    assert power["samples"] >= 3
    # energy per inference = average power / throughput
    assert result["energy_per_inference_mj"] == pytest.approx(5.0 / 2000.5 * 1000)
    assert device.calls("tegrastats")[0] == "tegrastats --interval 100"


def test_benchmark_without_tegrastats_says_not_measurable(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    fakes = tmp_path / "fakes-no-tegrastats"
    fakes.mkdir()
    for tool in ("trtexec", "nvpmodel", "edgedeploy"):
        (fakes / tool).symlink_to(Path(__file__).parent / "fakes" / tool)
    path = device.env["PATH"].replace(str(Path(__file__).parent / "fakes"), str(fakes))
    out = tmp_path / "bench.json"
    res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.3", "--out", str(out), PATH=path)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["power"]["measurable"] is False
    assert result["power"]["reason"].startswith("not measurable here")
    assert result["energy_per_inference_mj"] is None


@pytest.mark.parametrize(
    ("env", "status"),
    [({"FAKE_TEGRASTATS_FAIL": "1"}, 1), ({"FAKE_TEGRASTATS_LINES": "3"}, 0)],
    ids=["fails", "stops"],
)
def test_benchmark_writes_latency_when_tegrastats_ends_before_the_run(
    bundle: Path, device: Device, env: dict[str, str], status: int
) -> None:
    """benchmark.sh died on `kill: No such process` (set -e) and wrote no JSON."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    out = bundle / "device" / "results" / "t1.json"
    res = device.run(script(bundle, "benchmark.sh"), "--duration", "1", "--out", str(out), **env)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    assert result["latency_ms"]["median_ms"] == 0.48
    assert result["power"]["measurable"] is False and result["energy_per_inference_mj"] is None
    reason = f"not measurable here: tegrastats stopped before the run ended (exit status {status})"
    assert result["power"]["reason"] == reason
    assert "No such process" not in res.stderr


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_device_json_files_get_the_umasks_mode_as_other_files(
    bundle: Path, device: Device, tmp_path: Path, umask: int
) -> None:
    """Sidecars, device.json and benchmark JSON (default and --out) were 0600 (tempfile.mkstemp's
    mode) beside 0644 logs and verify results: another user on the board could not read them."""
    out = tmp_path / "bench.json"
    before = os.umask(umask)
    try:
        assert device.run(script(bundle, "setup.sh")).returncode == 0
        assert device.run(script(bundle, "build_engine.sh")).returncode == 0
        for args in ((), ("--out", str(out))):
            res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.3", "--warmup", "0", *args)
            assert res.returncode == 0, res.stderr
    finally:
        os.umask(before)
    written = [
        bundle / "device" / "device.json",
        bundle / "device" / "engines" / "dense.fp16.engine.json",
        bundle / "device" / "results" / "benchmark-fp16-b1.json",
        out,
    ]
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert modes == {p.name: oct(0o666 & ~umask) for p in written}


def test_benchmark_out_never_replaces_a_bundle_file_or_a_file_not_its_results(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    """--out models/dense.fp16.onnx replaced the model (verify then said size mismatch), --out
    manifest.json the manifest."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    runs = len(device.calls("trtexec"))
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    sidecar = next((bundle / "device" / "engines").glob("*.engine.json"))
    link = tmp_path / "link.json"
    link.symlink_to(bundle / "manifest.json")
    before = {p: p.read_bytes() for p in (bundle / "models" / "dense.fp16.onnx", bundle / "manifest.json")}
    for out, phrase in [
        ("models/dense.fp16.onnx", "is the bundle's models/dense.fp16.onnx (listed in manifest.json)"),
        ("manifest.json", "is the bundle's manifest.json"),
        ("./scripts/../reference/outputs.npz", "is the bundle's reference/outputs.npz"),
        (str(link), "is the bundle's manifest.json"),
        (str(notes), "exists and is not a benchmark results JSON"),
        (str(sidecar), "exists and is not a benchmark results JSON"),
        ("models", "is a folder"),
    ]:
        res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.3", "--out", out, cwd=bundle)
        errors = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and len(errors) == 1, (out, res.stderr)
        assert errors[0].startswith(f"error: --out {out} {phrase}"), (out, errors[0])
    assert all(p.read_bytes() == data for p, data in before.items()) and notes.read_text() == "mine\n"
    assert len(device.calls("trtexec")) == runs
    # an earlier results file is replaced, as is an empty one
    out = tmp_path / "bench.json"
    for _ in range(2):
        res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.3", "--out", str(out))
        assert res.returncode == 0, res.stderr
    empty = tmp_path / "empty.json"
    empty.touch()
    res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.3", "--out", str(empty))
    assert res.returncode == 0, res.stderr
    assert json.loads(empty.read_text())["latency_ms"]


def test_benchmark_out_inside_the_bundle_outside_device_is_refused(bundle: Path, device: Device) -> None:
    """--out results.json from the bundle root wrote a file its manifest does not list: the bundle then
    failed its own verify.sh ("results.json: not listed in the manifest")."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    runs = len(device.calls("trtexec"))
    inside = ("results.json", "reference/bench.json", "device/../bench.json", str(bundle / "scripts/b.json"))
    for out in inside:
        res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.3", "--out", out, cwd=bundle)
        errors = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and len(errors) == 1, (out, res.stderr)
        assert errors[0].startswith(f"error: --out {out} lies inside the bundle, outside device/"), errors[0]
        assert "device/results/" in errors[0] and "outside the bundle" in errors[0], errors[0]
    assert len(device.calls("trtexec")) == runs
    assert not [p for p in bundle.rglob("*.json") if p.name in ("results.json", "bench.json", "b.json")]
    assert device.run(script(bundle, "verify.sh"), "--files-only").returncode == 0
    # under device/ it is written, and the bundle stays valid
    res = device.run(
        script(bundle, "benchmark.sh"), "--duration", "0.3", "--out", "device/mine.json", cwd=bundle
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((bundle / "device" / "mine.json").read_text())["latency_ms"]
    res = device.run(script(bundle, "verify.sh"), "--files-only")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_precision_the_bundle_lacks_is_one_line_from_verify_and_benchmark(
    bundle: Path, device: Device
) -> None:
    """verify.sh went on to say "no int8 engine: run build_engine.sh", which would not help."""
    for name in ("verify.sh", "benchmark.sh"):
        res = device.run(script(bundle, name), "--precision", "int8")
        errors = [line for line in res.stderr.splitlines() if line.startswith("error")]
        assert res.returncode == 2 and len(errors) == 1, res.stderr
        assert "no int8 artifact in this bundle" in errors[0]
