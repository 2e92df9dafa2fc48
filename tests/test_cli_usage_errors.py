"""click's own usage errors (unknown option or command, missing argument or value, a value of the
wrong type) are one line naming the command and exit 2, like every other refusal; --help still
prints the help and exits 0 (issue 12's leftover: click printed its five-line usage box).

The table runs ``edgedeploy.cli.main`` in this process (about 20 ms a row); the last two tests run
the installed entry point in a subprocess, as a user does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_in_process


def assert_one_usage_line(code: int, stdout: str, stderr: str, *needles: str) -> str:
    assert code == 2, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert "╭" not in stderr and "Usage:" not in stderr and "Usage:" not in stdout, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


USAGE_ERRORS = [
    # (argv, what the one line must say)
    (
        ["build", "m.onnx", "--precison", "fp16"],
        ["edgedeploy build: no such option '--precison'", "did you mean '--precision'?"],
    ),
    (["compare", "a.onnx", "b.onnx", "--atoll", "1"], ["edgedeploy compare: no such option '--atoll'"]),
    (["bogus"], ["edgedeploy: no such command 'bogus'", "see 'edgedeploy --help'"]),
    (["targets", "sho", "jetson-thor"], ["edgedeploy targets: no such command 'sho'", "mean 'show'?"]),
    (["build"], ["edgedeploy build: missing argument", "model", "see 'edgedeploy build --help'"]),
    (["bundle", "verify"], ["edgedeploy bundle verify: missing argument", "bundle"]),
    (["targets", "show"], ["edgedeploy targets show: missing argument"]),
    # an option missing its value: click gives no context, the command is read from argv
    (["build", "m.onnx", "--json"], ["edgedeploy build: option '--json' requires an argument"]),
    (["profile", "m.onnx", "--batch"], ["edgedeploy profile:", "'--batch'"]),
    # values of the wrong type
    (
        ["compare", "a.onnx", "b.onnx", "--samples", "many"],
        ["edgedeploy compare: invalid value for '--samples'"],
    ),
    (["compare", "a.onnx", "b.onnx", "--atol", "tiny"], ["edgedeploy compare: invalid value for '--atol'"]),
    (["calibrate", "m.onnx", "--batch-size", "1.5"], ["edgedeploy calibrate:", "'--batch-size'"]),
    (["analyze", "m.onnx", "--top", "x"], ["edgedeploy analyze:", "'--top'"]),
    # typer's own boolean flag given a value
    (["--version=yes"], ["edgedeploy:", "--version"]),
]


@pytest.mark.parametrize(("argv", "needles"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_click_usage_error_is_one_line_naming_the_command_and_exit_2(
    argv: list[str], needles: list[str]
) -> None:
    assert_one_usage_line(*run_in_process(*argv), *needles)


def test_a_usage_error_writes_nothing(tmp_path: Path) -> None:
    code, stdout, stderr = run_in_process(
        "build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--precison"
    )
    assert_one_usage_line(code, stdout, stderr, "no such option '--precison'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["--help"], ["build", "--help"], ["targets", "--help"], ["bundle", "verify", "--help"]]
)
def test_help_still_prints_the_help_and_exits_0(argv: list[str]) -> None:
    code, stdout, stderr = run_in_process(*argv)
    assert code == 0, stderr
    assert "Usage:" in stdout and "--help" in stdout
    assert stderr == ""


def test_a_group_without_its_command_prints_its_help() -> None:
    """``edgedeploy`` alone (no_args_is_help): the help on stdout, click's exit code 2, no error line."""
    code, stdout, stderr = run_in_process()
    assert code == 2
    assert "Usage:" in stdout and " build " in stdout
    assert "error" not in stderr


def _entry_point(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgedeploy", *args], capture_output=True, text=True, timeout=120
    )


def test_the_installed_command_prints_one_usage_line() -> None:
    proc = _entry_point("build", "m.onnx", "--precison", "fp16")
    line = assert_one_usage_line(proc.returncode, proc.stdout, proc.stderr)
    assert line == "error: edgedeploy build: no such option '--precison' (did you mean '--precision'?)"


def test_the_installed_command_still_prints_help() -> None:
    proc = _entry_point("compare", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: edgedeploy compare" in proc.stdout
