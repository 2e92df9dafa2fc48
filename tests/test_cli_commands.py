"""Every command module is registered from the one list, and --help shows each command."""

from __future__ import annotations

import pkgutil

from typer.testing import CliRunner

import edgedeploy.cli as cli

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
