"""Every command module is registered from the one list, and --help shows each command."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import edgedeploy.cli as cli
from tests.conftest import assert_clean_input_error, run_cli

NOT_COMMANDS = {"common", "guard"}  # shared option types and consoles; the input/output guard


def test_every_command_module_is_in_the_one_list() -> None:
    modules = {m.name for m in pkgutil.iter_modules(cli.__path__)} - NOT_COMMANDS
    listed = {m.__name__.rpartition(".")[2] for m in cli.COMMANDS}
    assert modules == listed
    assert all(callable(getattr(m, "register", None)) for m in cli.COMMANDS)


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for module in cli.COMMANDS:
        assert f" {module.__name__.rpartition('.')[2]} " in result.stdout


def test_build_help_says_the_calibration_data_and_samples_serve_the_fp16_analysis_too() -> None:
    """--calib-samples was "int8: number of calibration samples", though it limits the samples the
    fp16 range analysis reads as well (and --calib-data is that analysis' data)."""
    result = CliRunner().invoke(cli.app, ["build", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    rows = [ln.split() for ln in result.stdout.splitlines()]
    lines = {r[1]: " ".join(r) for r in rows if len(r) > 1 and r[1].startswith("--calib")}
    assert "fp16" in lines["--calib-samples"] and "fp16" in lines["--calib-data"], lines


def test_build_help_says_the_calibration_batch_size_serves_the_fp16_analysis_too() -> None:
    """--calib-batch-size was still "int8: calibration batch size" beside --calib-data and
    --calib-samples, though the fp16 range analysis (and an accuracy budget) reads the data in
    batches of that size too."""
    result = CliRunner().invoke(cli.app, ["build", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    rows = [ln.split() for ln in result.stdout.splitlines()]
    lines = {r[1]: " ".join(r) for r in rows if len(r) > 1 and r[1].startswith("--calib")}
    line = lines["--calib-batch-size"]
    assert "int8:" not in line and "fp16" in line and "int8" in line, line


def _matmul_model(folder: Path) -> tuple[Path, Path]:
    """y = x @ w, x[N, 8], and 32 samples of x: a model an int8 build calibrates in a second."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, folder / "m.onnx")
    np.savez(folder / "data.npz", x=rng.standard_normal((32, 8)).astype(np.float32))
    return folder / "m.onnx", folder / "data.npz"


def test_the_default_percentile_is_written_once_in_calibration() -> None:
    """99.99 was written in five places (the CLI's options, [calibration], make_int8, calibration's
    algorithms and CalibrationOptions), kept equal by hand. It is declared once, in calibration (a
    module without numpy, so that --help imports no more for it), and every default reads it."""
    import re

    root = Path(__file__).resolve().parents[1]
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("edgedeploy", "calibration")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"[=:]\s*99\.99\b", line)
    ]
    assert found == ["calibration/defaults.py:3"], found


def test_build_int8_sets_the_percentile_as_calibrate_does(tmp_path: Path) -> None:
    """build --precision int8 --calib-algorithm percentile always kept 99.99 (no option set it), while
    calibrate --percentile and [calibration] percentile could: build takes --calib-percentile, one
    declaration with calibrate's --percentile, refused alike (exit 2, one line) before any work."""
    model, data = _matmul_model(tmp_path)
    out = tmp_path / "o"
    common = ["build", model, "--precision", "int8", "--calib-data", data, "--calib-algorithm", "percentile"]
    built = run_cli(*common, "--calib-percentile", "99.5", "-o", out, "--json", tmp_path / "b.json")
    assert built.code == 0, built.stderr
    assert '"percentile": 99.5' in "".join(p.read_text() for p in out.glob("*.json"))
    for flag, args in (
        ("--calib-percentile", [*common, "--calib-percentile", "150", "-o", tmp_path / "o2"]),
        ("--percentile", ["calibrate", model, "--data", data, "--percentile", "150", "-o", tmp_path / "o2"]),
    ):
        refused = run_cli(*args)
        assert_clean_input_error(refused, flag, "[50, 100]")
        assert not (tmp_path / "o2").exists()
    moot = run_cli("build", model, "--precision", "fp16", "--calib-percentile", "99", "-o", tmp_path / "o3")
    assert_clean_input_error(moot, "--calib-percentile")


def test_a_percentile_the_algorithm_does_not_use_is_said_unused_whatever_its_value(tmp_path: Path) -> None:
    """calibrate --algorithm max --percentile 99.9 was warned as unused, but --percentile 150 with
    max was refused as out of [50, 100], a range of an option max does not read. Both are said
    unused in one line and the calibration runs (build's --calib-percentile alike); the range is
    kept where the algorithm reads it (test_build_int8_sets_the_percentile_as_calibrate_does)."""
    model, data = _matmul_model(tmp_path)
    calibrate = ["calibrate", model, "--data", data, "--algorithm", "max", "--percentile", "150"]
    build = ["build", model, "--precision", "int8", "--calib-data", data, "--calib-algorithm", "max"]
    for index, args in enumerate((calibrate, [*build, "--calib-percentile", "150"])):
        done = run_cli(*args, "-o", tmp_path / f"o{index}")
        assert done.code == 0, done.stderr
        said = [line for line in done.stderr.splitlines() if "percentile 150" in line]
        assert len(said) == 1 and "not max" in said[0], done.stderr
        assert "[50, 100]" not in done.stderr


def test_a_build_of_an_int8_model_as_it_is_names_the_files_it_brings_from_beside_it(tmp_path: Path) -> None:
    """build --precision int8 of a Q/DQ model an earlier build wrote (out/m.int8.onnx) also wrote
    m.calib.json (and m.calib.cache for a GPU target) into -o, copied from beside the model, which
    no line said: the output listed the artifact and the backend's output only. The line that says
    the model is built as it is now names the files that came with it; none where none lies beside."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32))
    first = run_cli("build", tmp_path / "m.onnx", "--precision", "int8", "--calib-data", tmp_path / "d.npz",
                    "-o", tmp_path / "out")  # fmt: skip
    assert first.code == 0, first.stderr
    again = run_cli(
        "build", tmp_path / "out" / "m.int8.onnx", "--precision", "int8", "-o", tmp_path / "again"
    )
    assert again.code == 0, again.stderr
    brought = sorted(p.name for p in (tmp_path / "again").iterdir() if not p.name.startswith("m.int8."))
    assert brought == ["m.calib.json"], brought
    said = [line for line in again.stderr.splitlines() if "built as it is" in line]
    assert said == [
        "m.int8.onnx is already an int8 model: built as it is, with m.calib.json from beside it"
    ], again.stderr
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "m.int8.onnx").write_bytes((tmp_path / "out" / "m.int8.onnx").read_bytes())
    lone = run_cli("build", tmp_path / "lone" / "m.int8.onnx", "--precision", "int8", "-o", tmp_path / "l")
    assert lone.code == 0, lone.stderr
    assert "m.int8.onnx is already an int8 model: built as it is\n" in lone.stderr
    assert sorted(p.name for p in (tmp_path / "l").iterdir() if not p.name.startswith("m.int8.")) == []
