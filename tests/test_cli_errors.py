"""Bad input: exit 2, one clear line, no traceback, no partial output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Digits, assert_clean_input_error, conv_integer_model, files_under, run_cli


def test_unknown_target_exits_2(digits: Digits, tmp_path: Path) -> None:
    result = run_cli("build", digits.onnx_path, "--target", "jetson-nanoo", "-o", tmp_path / "out")
    assert_clean_input_error(result, "unknown target 'jetson-nanoo'", "jetson-nano")
    assert files_under(tmp_path / "out") == set()


def test_unknown_precision_exits_2(digits: Digits, tmp_path: Path) -> None:
    result = run_cli("build", digits.onnx_path, "--precision", "fp12", "-o", tmp_path / "out")
    assert_clean_input_error(result, "unknown precision 'fp12'")
    assert files_under(tmp_path / "out") == set()


def test_int8_on_jetson_nano_exits_2_before_any_work(digits: Digits, tmp_path: Path) -> None:
    result = run_cli(
        "build", digits.onnx_path, "--precision", "int8", "--target", "jetson-nano", "-o", tmp_path / "o"
    )
    assert_clean_input_error(result, "jetson-nano", "int8")
    assert files_under(tmp_path / "o") == set()


def test_tensorrt_backend_without_tensorrt_exits_2_with_how_to_get_it(digits: Digits, tmp_path: Path) -> None:
    result = run_cli(
        "build", digits.onnx_path, "--backend", "tensorrt", "--target", "rtx4090", "-o", tmp_path / "o"
    )
    assert_clean_input_error(result, "TensorRT")
    assert not list((tmp_path / "o").glob("*.engine")) if (tmp_path / "o").exists() else True


def test_auto_backend_falls_back_to_onnxruntime_and_says_so(digits: Digits, tmp_path: Path) -> None:
    result = run_cli(
        "build", digits.onnx_path, "--precision", "fp16", "--target", "jetson-orin-nano", "-o", tmp_path / "o"
    )
    assert result.code == 0, result.stderr
    assert "backend auto -> onnxruntime" in result.stderr


def test_missing_config_and_model_files_exit_2(tmp_path: Path) -> None:
    assert_clean_input_error(run_cli("run", tmp_path / "missing.toml"), "not found")
    assert_clean_input_error(run_cli("build", tmp_path / "missing.onnx", "-o", tmp_path / "o"), "not found")
    assert_clean_input_error(run_cli("compare", tmp_path / "a.onnx", tmp_path / "b.onnx"), "not found")


def test_invalid_toml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[model\nsource = ")
    assert_clean_input_error(run_cli("run", path), "not valid TOML")


def test_version_and_help() -> None:
    result = run_cli("--version")
    assert result.code == 0 and "edgedeploy" in result.stdout
    for command in ("export", "build", "compare", "profile", "run", "demo", "doctor", "targets", "bundle"):
        help_text = run_cli(command, "--help")
        assert help_text.code == 0, command
        assert "Example" in help_text.stdout or command in ("targets", "bundle"), command


def test_a_precision_artifact_is_built_as_it_is_and_not_converted_again(
    digits: Digits, tmp_path: Path
) -> None:
    first = run_cli("build", digits.onnx_path, "--precision", "fp16", "-o", tmp_path / "a")
    assert first.code == 0, first.stderr
    fp16 = tmp_path / "a" / "digits.fp16.onnx"
    again = run_cli("build", fp16, "--precision", "fp16", "-o", tmp_path / "b")
    assert again.code == 0, again.stderr
    assert "already an fp16 model" in again.stderr
    assert (tmp_path / "b" / "digits.fp16.onnx").read_bytes() == fp16.read_bytes()
    assert (tmp_path / "b" / "digits.fp16.plan.json").is_file()
    wrong = run_cli("build", fp16, "--precision", "int8", "-o", tmp_path / "c")
    assert_clean_input_error(wrong, "already an fp16 model", "--precision fp16")
    assert files_under(tmp_path / "c") == set()


def test_ctrl_c_says_what_was_kept_and_exits_130(digits: Digits) -> None:
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "edgedeploy", "profile", str(digits.onnx_path), "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a CI job started in the background inherits an ignored SIGINT; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(6)  # well inside the timed loop, past start-up
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err


# Stalls the first import of typer (the CLI's first heavy import) after saying so on stderr, so a
# test can send Ctrl-C while the CLI is still loading, then runs the entry point given.
_SLOW_IMPORT = """
import importlib.abc, runpy, sys, time
class Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            sys.meta_path.remove(self)
            sys.stderr.write("loading\\n"); sys.stderr.flush()
            time.sleep(60)
        return None
sys.meta_path.insert(0, Slow())
sys.argv = ["edgedeploy", "targets"]
if sys.argv_entry == "module":
    runpy.run_module("edgedeploy", run_name="__main__", alter_sys=True)
else:
    from edgedeploy.cli import main
    sys.exit(main())
"""


@pytest.mark.parametrize("entry", ["module", "console_script"])
def test_ctrl_c_while_the_cli_still_loads_is_one_line_and_exit_130(entry: str) -> None:
    """Ctrl-C in the first second (the imports, before the signal handling was installed) printed a
    20-line KeyboardInterrupt traceback instead of the one line every later Ctrl-C gets."""
    import signal
    import subprocess
    import sys

    code = _SLOW_IMPORT.replace("sys.argv_entry", repr(entry))
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline() == "loading\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("stopped: interrupted (Ctrl-C)"), err


# Put on PYTHONPATH as sitecustomize (run by site, before the entry point): stalls at STALL after
# saying so on stderr, so a test can send Ctrl-C there. "calibration": the package's first import
# (edgedeploy/__init__.py, before the CLI's imports); "handle_signals": main() about to install its
# handlers, every import done (for the console script: after `from edgedeploy.cli import main`).
_STALL = """
import importlib.machinery, sys, time
def stall():
    sys.stderr.write("stalled\\n"); sys.stderr.flush()
    time.sleep(60)
class Stall:
    def find_spec(self, name, path=None, target=None):
        if name == "calibration" == STALL:
            sys.meta_path.remove(self)
            stall()
        if name == "edgedeploy.interrupts" and STALL == "handle_signals":
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                real = module.handle_signals
                def handle_signals():
                    stall()
                    real()
                module.handle_signals = handle_signals
            spec.loader.exec_module = exec_module
            return spec
        return None
sys.meta_path.insert(0, Stall())
"""
# the console script as pip writes it (bin/edgedeploy)
_CONSOLE_SCRIPT = """import re
import sys
from edgedeploy.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


@pytest.mark.parametrize("stall", ["calibration", "handle_signals"])
@pytest.mark.parametrize("entry", ["module", "console_script"])
def test_ctrl_c_from_the_start_to_the_signal_handlers_is_one_line_and_exit_130(
    entry: str, stall: str, tmp_path: Path
) -> None:
    """Ctrl-C after the CLI's imports (in guard_app, the console script's last lines, main() before
    handle_signals) or before them (edgedeploy/__init__.py's own import) printed a KeyboardInterrupt
    traceback; only the CLI's imports gave the one line every later Ctrl-C gets."""
    import os
    import signal
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_STALL.replace("STALL", repr(stall)))
    script = tmp_path / "bin" / "edgedeploy"
    script.parent.mkdir()
    script.write_text(_CONSOLE_SCRIPT)
    command = [sys.executable, "-m", "edgedeploy"] if entry == "module" else [sys.executable, str(script)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path[1:]])}
    proc = subprocess.Popen(
        [*command, "targets"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline() == "stalled\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("stopped: interrupted (Ctrl-C)"), err


# Stalls at POINT after saying so on stderr, so a test can send Ctrl-C there: guard_app (the CLI's
# import, after its third-party imports), handle_signals (main() about to install its handlers),
# sweep_scratch (main()'s first work) and release_signals (main() putting the handlers it replaced
# back, the command done). Run first in a program that calls main() itself, or as sitecustomize.
_STALL_AT = """
import importlib.machinery, sys, time
MODULES = {"guard_app": "edgedeploy.cli.guard", "handle_signals": "edgedeploy.interrupts",
           "sweep_scratch": "edgedeploy.fileio", "release_signals": "edgedeploy.interrupts"}
calls = []
class Stall:
    def find_spec(self, name, path=None, target=None):
        if name != MODULES[POINT]:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            real = getattr(module, POINT)
            def stalled(*args, **kwargs):
                if not calls:  # the first call only
                    calls.append(POINT)
                    sys.stderr.write("stalled\\n"); sys.stderr.flush()
                    time.sleep(60)
                return real(*args, **kwargs)
            setattr(module, POINT, stalled)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Stall())
"""
# programs that call main() themselves, and the command
_ENTRIES = {
    "main": 'from edgedeploy.cli import main\nmain(["targets"])\n',
    "runpy": 'import runpy\nsys.argv = ["edgedeploy", "targets"]\n'
    'runpy.run_module("edgedeploy", run_name="__main__", alter_sys=True)\n',
    "module": "",
}


@pytest.mark.parametrize("point", ["guard_app", "handle_signals", "sweep_scratch", "release_signals"])
@pytest.mark.parametrize("entry", list(_ENTRIES))
def test_ctrl_c_in_a_program_that_calls_main_is_one_line_and_exit_130(
    entry: str, point: str, tmp_path: Path
) -> None:
    """A program calling main() itself (python -c, runpy) had only the one line of the CLI's
    third-party imports: a Ctrl-C in the rest of its import (guard_app) or in main() before its
    handlers printed a KeyboardInterrupt traceback, and so did one in main()'s first work
    (sweep_scratch) or while it put the handlers back, the command's (python -m) too."""
    import os
    import signal
    import subprocess
    import sys

    stall = f"POINT = {point!r}\n{_STALL_AT}"
    env = dict(os.environ)
    if entry == "module":
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(stall)
        env["PYTHONPATH"] = os.pathsep.join([str(site), *sys.path[1:]])
        command = [sys.executable, "-m", "edgedeploy", "targets"]
    else:
        command = [sys.executable, "-c", stall + _ENTRIES[entry]]
    proc = subprocess.Popen(
        command, env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline() == "stalled\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("stopped: interrupted (Ctrl-C)"), err


def test_a_bad_memory_pool_exits_2(digits: Digits, tmp_path: Path) -> None:
    result = run_cli("build", digits.onnx_path, "--memory-pool", "workspace", "-o", tmp_path / "o")
    assert_clean_input_error(result, "--memory-pool", "NAME=MiB")


def test_an_option_word_that_matches_a_folder_here_is_not_taken_for_an_input(
    static_onnx: Path, tmp_path: Path
) -> None:
    """``--precision fp16`` names a precision, not the folder ``fp16/`` that happens to sit in the
    current folder: writing the output there is allowed (only path parameters are inputs)."""
    (tmp_path / "fp16").mkdir()
    result = run_cli("build", static_onnx, "--precision", "fp16", "-o", "fp16", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "fp16" / "static.fp16.onnx").is_file()
    # a real input folder is still protected: the output cannot go inside the model's folder
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "m.onnx").write_bytes(static_onnx.read_bytes())
    refused = run_cli("build", "models/m.onnx", "--calib-data", "models", "-o", "models/out", cwd=tmp_path)
    assert refused.code == 2 and "a folder this command reads" in refused.stderr


def test_a_misspelt_op_type_to_keep_in_float_exits_2(digits: Digits, tmp_path: Path) -> None:
    """--fp32-ops and --exclude-ops take op types: a name no ONNX op has (nor the model) is a typo
    that would otherwise keep nothing in float without a word; a real op the model lacks passes."""
    fp16 = run_cli(
        "build", digits.onnx_path, "--precision", "fp16", "--fp32-ops", "Sofmax", "-o", tmp_path / "a"
    )
    assert_clean_input_error(fp16, "--fp32-ops: no ONNX op type named Sofmax")
    int8 = run_cli(
        "calibrate", digits.onnx_path, "--data", "random", "--exclude-ops", "Gem", "-o", tmp_path / "b"
    )
    assert_clean_input_error(int8, "--exclude-ops: no ONNX op type named Gem")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    lstm = run_cli(
        "build", digits.onnx_path, "--precision", "fp16", "--fp32-ops", "LSTM", "-o", tmp_path / "c"
    )
    assert lstm.code == 0, lstm.stderr


def test_build_force_recalibrates_int8(digits: Digits, tmp_path: Path) -> None:
    args = ["build", digits.onnx_path, "--precision", "int8", "--calib-data", digits.test_npz, "-o", tmp_path]
    assert run_cli(*args).code == 0
    again = run_cli(*args)
    assert again.code == 0 and "up to date" in again.stderr
    forced = run_cli(*args, "--force")
    assert forced.code == 0 and "recalibrating: forced" in forced.stderr, forced.stderr


def test_a_quoted_library_message_loses_its_terminal_colour_codes() -> None:
    """torch.onnx's messages carry ANSI colours; a one-line error or notice quoting one showed them raw."""
    from edgedeploy.errors import first_line

    assert first_line(RuntimeError("\x1b[96mThis is step 1/3\x1b[0m: failed\nsecond line")) == (
        "This is step 1/3: failed"
    )


def test_an_int8_model_calibrated_for_a_cpu_is_refused_for_a_gpu_target(
    digits: Digits, tmp_path: Path
) -> None:
    """A CPU placement's int8 model (uint8 activations) or ONNX Runtime's saved copy of it (fused
    QLinearConv) was bundled for a Jetson without a word, and `build` of it for one said "built as it
    is": the board's TensorRT takes int8 Q/DQ with zero point 0 and would refuse either."""
    cpu = tmp_path / "cpu"
    args = ["--precision", "int8", "--calib-data", digits.test_npz, "--calib-samples", "32"]
    assert run_cli("build", digits.onnx_path, *args, "-o", cpu).code == 0
    qdq, fused = cpu / "digits.int8.onnx", cpu / "digits.int8.ort.onnx"
    result = run_cli(
        "build", qdq, "--precision", "int8", "--target", "jetson-orin-nano", "-o", tmp_path / "g"
    )
    assert_clean_input_error(result, "quantizes activations to uint8", "--target jetson-orin-nano")
    for artifact, why in ((qdq, "quantizes activations to uint8"), (fused, "QLinearConv")):
        result = run_cli(
            "bundle", digits.onnx_path, artifact, "--target", "jetson-orin-nano", "-o", tmp_path / "b"
        )
        assert_clean_input_error(result, why)
    assert files_under(tmp_path / "g") == set() and not (tmp_path / "b").exists()
    # for a CPU target both are what the device runs
    assert (
        run_cli("bundle", digits.onnx_path, fused, "--data", digits.test_npz, "-o", tmp_path / "c").code == 0
    )


def test_a_model_quantized_by_another_tool_is_refused_for_a_gpu_target_in_its_own_words(
    tmp_path: Path,
) -> None:
    """A dynamically quantized model (ConvInteger, ONNX Runtime's quantize_dynamic; ddddocr's
    common_old.onnx) for a GPU target was called "ONNX Runtime's saved copy", with "give its Q/DQ
    model (NAME.int8.onnx)", a file no such model has. It is now refused as quantized by another
    tool, with what TensorRT takes and what to do; a saved .ort.onnx keeps its own line."""
    path = conv_integer_model(tmp_path / "dyn.onnx")
    args = ["--precision", "int8", "--target", "jetson-orin-nano", "-o", tmp_path / "g"]
    result = run_cli("build", path, *args)
    assert_clean_input_error(
        result,
        "dyn.onnx was quantized by another tool with integer ops (ConvInteger, DynamicQuantizeLinear), "
        "which TensorRT does not build: it takes Q/DQ models only (QuantizeLinear/DequantizeLinear); "
        "quantize the fp32 original with edgedeploy (edgedeploy build FP32.onnx --precision int8 "
        "--target jetson-orin-nano), or give a Q/DQ model",
    )
    assert "saved copy" not in result.stderr and "NAME.int8.onnx" not in result.stderr
    assert files_under(tmp_path / "g") == set()
    # for a CPU target it is what the device runs: built as it is
    assert run_cli("build", path, "--precision", "int8", "-o", tmp_path / "c").code == 0


def test_a_calibration_leaves_no_companion_of_an_earlier_one_beside_its_model(
    digits: Digits, tmp_path: Path
) -> None:
    """A GPU target's .calib.cache stayed beside a later CPU target's model in the same folder, and
    --from-cache left the earlier calibration's cache and report beside the model it wrote: build
    and bundle take a .calib.cache beside an int8 model for its own (TensorRT 8.x's calibrator)."""
    out = tmp_path / "cal"
    args = ["calibrate", digits.onnx_path, "--data", digits.test_npz, "--samples", "32", "-o", out]
    assert run_cli(*args, "--algorithm", "max", "--target", "jetson-orin-nx").code == 0
    cache = out / "digits.calib.cache"
    kept = tmp_path / "entropy.cache"
    kept.write_bytes(cache.read_bytes())
    assert run_cli(*args, "--algorithm", "max", "--target", "x86-64-cpu").code == 0
    assert not cache.exists() and (out / "digits.int8.onnx").is_file()
    assert run_cli(*args, "--algorithm", "max", "--target", "jetson-orin-nx").code == 0
    cache.write_text(cache.read_text().replace("MinMax", "Entropy"))  # another calibration's cache
    made = run_cli(
        "calibrate", digits.onnx_path, "--from-cache", kept, "--target", "jetson-orin-nx", "-o", out
    )
    assert made.code == 0, made.stderr
    assert cache.read_bytes() == kept.read_bytes() and not (out / "digits.calib.json").exists()


def test_bundle_refuses_a_precision_the_target_cannot_serve_as_build_does(
    digits: Digits, tmp_path: Path
) -> None:
    """`build --precision int8 --target jetson-nano` exits 2, but `bundle` of an int8 model for it
    made int8 the manifest's primary, and build_engine.sh on the Nano ran trtexec --int8."""
    cal = tmp_path / "cal"
    args = ["--data", digits.test_npz, "--samples", "32", "--target", "jetson-orin-nx", "-o", cal]
    made = run_cli("calibrate", digits.onnx_path, *args)
    assert made.code == 0, made.stderr
    args = ["--precision", "int8", "--target", "jetson-nano", "-o", tmp_path / "a"]
    built = run_cli("build", digits.onnx_path, *args)
    assert_clean_input_error(built, "does not support int8 (maxwell sm_53")
    args = ["--target", "jetson-nano", "--data", digits.test_npz, "--samples", "8", "-o", tmp_path / "x1"]
    result = run_cli("bundle", "create", digits.onnx_path, cal / "digits.int8.onnx", *args)
    assert_clean_input_error(result, "digits.int8.onnx is int8: target 'jetson-nano' does not support int8")
    assert "supported: fp32, fp16" in result.stderr
    assert not (tmp_path / "x1").exists()


def test_names_with_colons_print_as_written_not_as_emoji(digits: Digits, tmp_path: Path) -> None:
    """rich turned ':two:' of a model spec (models.py:two:two_in) or a path into an emoji, on stdout
    (the export's line), in warnings and in the error line."""
    import shutil

    folder = tmp_path / "v:two:"
    folder.mkdir()
    model = shutil.copy(digits.onnx_path, folder / "m.onnx")
    result = run_cli("export", model, "-o", tmp_path / "m.onnx", "--static")  # warned: an ONNX file keeps it
    assert result.code == 0, result.stderr
    assert "--static" in result.stderr and "v:two:" in result.stdout
    assert "2\ufe0f\u20e3" not in result.stdout + result.stderr
    missing = run_cli("build", folder / ":up:.onnx", "-o", tmp_path / "o")
    assert missing.code == 2 and ":up:.onnx" in missing.stderr, missing.stderr


def test_a_bad_calibration_option_is_the_only_line_of_an_int8_build(digits: Digits, tmp_path: Path) -> None:
    """Refused before any work, not after the warning that there is no --calib-data; a std whose
    reciprocal overflows float32 was let through with numpy's three-line RuntimeWarning."""
    from PIL import Image

    (tmp_path / "p.toml").write_text('[preprocess]\ncolor = "gray"\nstd = [1e-40]\n')
    (tmp_path / "imgs").mkdir()
    Image.new("L", (8, 8), 200).save(tmp_path / "imgs" / "a.png")
    for option, said in (
        (["--calib-samples", "0"], "--calib-samples must be >= 1, got 0"),
        (["--calib-batch-size", "0"], "--calib-batch-size must be >= 1, got 0"),
        (["--calib-algorithm", "foo"], "--calib-algorithm 'foo' is unknown"),
        (
            ["--calib-data", str(tmp_path / "imgs"), "--calib-preprocess", str(tmp_path / "p.toml")],
            "1/std overflows",
        ),
    ):
        result = run_cli("build", digits.onnx_path, "--precision", "int8", *option, "-o", tmp_path / "o")
        assert_clean_input_error(result, said)
        assert files_under(tmp_path / "o") == set()


def test_the_stop_lines_promise_reuse_only_of_the_commands_that_have_stages() -> None:
    """Ctrl-C or SIGTERM of export, build or calibrate said "a rerun resumes from the finished
    stages": those commands have no stages to resume; only run and matrix reuse finished ones."""
    from edgedeploy import INTERRUPTED
    from edgedeploy.cli import TERMINATED

    for line in (INTERRUPTED, TERMINATED):
        assert "resumes from the finished stages" not in line, line
        assert "rerun the command (run and matrix reuse the stages that finished)" in line, line
