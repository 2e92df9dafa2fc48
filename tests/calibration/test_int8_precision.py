"""edgedeploy's int8 producer and the calibrate command: placement and weight bits follow the target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import typer
from onnx import numpy_helper
from typer.testing import CliRunner

from edgedeploy.cli.calibrate import calibrate_command
from edgedeploy.errors import InputError
from edgedeploy.stages.precision.int8 import cache_version_for, cpu_has_vnni, make_int8, open_calibration_data
from edgedeploy.targets import load_target


def _int8_weights(path: Path) -> list[np.ndarray]:
    return [
        numpy_helper.to_array(i)
        for i in onnx.load(path).graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2
    ]


def test_cpu_target_without_vnni_gets_7_bit_weights_and_onnxruntime_placement(
    residual_model: Path, tmp_path: Path
) -> None:
    target = load_target("x86-64-cpu")
    assert not target.vnni
    source = open_calibration_data(residual_model, "random:1", samples=8, batch_size=4)
    artifact = make_int8(residual_model, tmp_path / "m.int8.onnx", target=target, source=source)
    assert artifact.precision == "int8" and artifact.path.is_file()
    assert max(int(np.abs(w).max()) for w in _int8_weights(artifact.path)) == 63
    assert artifact.info["placement"] == "onnxruntime" and artifact.info["weight_bits"] == 7
    assert artifact.info["synthetic"] is True and artifact.info["trt_cache"] is None
    again = make_int8(residual_model, tmp_path / "m.int8.onnx", target=target, source=source)
    assert again.skipped and "up to date" in again.info["reason"]


def test_jetson_target_gets_tensorrt_placement_and_a_cache_for_its_tensorrt(
    residual_model: Path, tmp_path: Path
) -> None:
    target = load_target("jetson-orin-nano")  # TensorRT 8.6.2 and 10.3.0
    assert cache_version_for(target) == "8.6.2"
    source = open_calibration_data(residual_model, "random:1", samples=8, batch_size=4)
    artifact = make_int8(
        residual_model, tmp_path / "m.int8.onnx", target=target, source=source, algorithm="max"
    )
    assert max(int(np.abs(w).max()) for w in _int8_weights(artifact.path)) == 127
    cache = next(p for p in artifact.files if p.suffix == ".cache")
    assert cache.read_text().startswith("TRT-8602-MinMaxCalibration\n")


def test_int8_on_a_target_without_fast_int8_is_refused(residual_model: Path, tmp_path: Path) -> None:
    source = open_calibration_data(residual_model, "random:1", samples=4)
    with pytest.raises(InputError, match="jetson-nano"):
        make_int8(
            residual_model, tmp_path / "out" / "m.int8.onnx", target=load_target("jetson-nano"), source=source
        )
    assert not (tmp_path / "out").exists()


def test_bad_data_spec_becomes_an_input_error(residual_model: Path) -> None:
    with pytest.raises(InputError, match="data not found"):
        open_calibration_data(residual_model, "nowhere.npz")


def test_vnni_probe_answers_with_a_reason() -> None:
    has, why = cpu_has_vnni()
    assert isinstance(has, bool) and why


def test_calibrate_command_writes_model_cache_and_report(residual_model: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(calibrate_command)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            str(residual_model),
            "--data",
            "random:2",
            "--samples",
            "16",
            "--algorithm",
            "percentile",
            "--trt-version",
            "10.3.0",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "percentile" in result.stdout and "SYNTHETIC" in result.stdout  # the report table
    assert "wrote" in result.stderr and "wrote" not in result.stdout  # words on stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "residual.calib.cache",
        "residual.calib.json",
        "residual.int8.onnx",
    ]
    assert (out / "residual.calib.cache").read_text().startswith("TRT-100300-MinMaxCalibration")
    from_cache = CliRunner().invoke(
        app,
        [
            str(residual_model),
            "--from-cache",
            str(out / "residual.calib.cache"),
            "--target",
            "rtx4090",
            "--out-dir",  # the old name of -o/--output, still accepted
            str(tmp_path / "fc"),
            "--json",
            str(tmp_path / "fc.json"),
        ],
    )
    assert from_cache.exit_code == 0, from_cache.output
    assert "wrote" in from_cache.stderr and not from_cache.stdout
    made = json.loads((tmp_path / "fc.json").read_text())["artifact"]
    assert made["bytes"] == (tmp_path / "fc" / "residual.int8.onnx").stat().st_size
    assert made["target"] == "rtx4090" and made["left_in_float"] == []
    onnx.checker.check_model(onnx.load(tmp_path / "fc" / "residual.int8.onnx"))
    # options the cache makes moot are refused, not ignored
    moot = CliRunner().invoke(
        app,
        [
            str(residual_model),
            "--from-cache",
            str(out / "residual.calib.cache"),
            "-o",
            str(tmp_path / "m"),
            "--algorithm",
            "max",
            "--exclude-ops",
            "Conv",
        ],
    )
    assert "--algorithm, --exclude-ops would not be used" in str(moot.exception)  # exit 2 from the CLI entry
    assert not (tmp_path / "m").exists()
    typed = CliRunner().invoke(  # typed at their defaults: as moot
        app,
        [
            str(residual_model),
            "--from-cache",
            str(out / "residual.calib.cache"),
            "-o",
            str(tmp_path / "m"),
            "--percentile",
            "99.99",
            "--batch-size",
            "8",
            "--seed",
            "0",
        ],
    )
    assert "--percentile, --batch-size, --seed would not be used" in str(typed.exception)
    assert not (tmp_path / "m").exists()


def test_build_into_a_folder_of_an_imported_cache_makes_the_int8_model_from_that_cache(
    residual_model: Path, tmp_path: Path
) -> None:
    """`calibrate --from-cache C -o int8/` then `build --precision int8 -o int8/` recalibrated on
    seeded random data, with only the synthetic-data warning: the imported cache was overwritten
    (GPU target) or removed (CPU target) and the Q/DQ model replaced. Without --calib-data the
    build now makes the Q/DQ model from that cache, for its own target, and says so naming it;
    with --calib-data it calibrates and says the imported cache was not used (data it refuses is
    the only line)."""
    from tests.conftest import assert_clean_input_error, run_cli

    cal = tmp_path / "cal"
    args = ["--data", "random:2", "--samples", "16", "--target", "jetson-orin-nx", "-o", cal]
    assert run_cli("calibrate", residual_model, *args).code == 0
    imported = tmp_path / "imported.cache"
    imported.write_bytes((cal / "residual.calib.cache").read_bytes())
    for target in ("jetson-orin-nx", "x86-64-cpu"):
        out, ref = tmp_path / f"int8-{target}", tmp_path / f"ref-{target}"
        for folder in (out, ref):
            args = ["--from-cache", imported, "--target", target, "-o", folder]
            made = run_cli("calibrate", residual_model, *args)
            assert made.code == 0, made.stderr
        built = run_cli("build", residual_model, "--precision", "int8", "--target", target, "-o", out)
        assert built.code == 0, built.stderr
        assert "random data" not in built.stderr and "synthetic" not in built.stderr, built.stderr
        assert f"{out / 'residual.calib.cache'}" in built.stderr, built.stderr
        assert (out / "residual.calib.cache").read_bytes() == imported.read_bytes()
        assert (out / "residual.int8.onnx").read_bytes() == (ref / "residual.int8.onnx").read_bytes()
        assert not (out / "residual.calib.json").exists()
    out = tmp_path / "int8-jetson-orin-nx"
    data = ["--calib-data", "random:3", "--calib-samples", "8", "-o", out]
    again = run_cli("build", residual_model, "--precision", "int8", "--target", "jetson-orin-nx", *data)
    assert again.code == 0, again.stderr
    assert f"{out / 'residual.calib.cache'}" in again.stderr and "was not used" in again.stderr, again.stderr
    assert (out / "residual.calib.json").is_file()
    cpu = tmp_path / "int8-x86-64-cpu"
    np.savez(tmp_path / "wrong.npz", not_an_input=np.zeros((2, 3), np.float32))  # refused: the only line
    args = ["--precision", "int8", "--calib-data", tmp_path / "wrong.npz", "-o", cpu]
    wrong = run_cli("build", residual_model, *args)
    assert_clean_input_error(wrong)
    args = ["--precision", "int8", "--accuracy-budget", "cosine>=0.99", "-o", cpu]
    budget = run_cli("build", residual_model, *args)
    assert_clean_input_error(budget, f"{cpu / 'residual.calib.cache'}", "--calib-data")
