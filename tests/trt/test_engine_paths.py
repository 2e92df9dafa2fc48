"""The engine path end to end (fake GPU): build's status line, the sidecar's model path, the batches
run, compare and matrix take where an engine's profile does not admit the configured ones, and the
data engines are timed on."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.backends.trt_sidecar import engine_model_inputs
from edgedeploy.stages.profile import ProfileOptions, profile
from edgedeploy.targets import load_target
from tests.trt.test_profile_cli_path import STATE_PROFILE, _state_model


def cli(*args: str | Path) -> tuple[int, str, str]:
    from edgedeploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


@pytest.mark.trt_versions("10.13.0")
def test_build_says_built_not_run_of_an_engine_no_gpu_runtime_ran(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cross-built (TensorRT here, no CUDA device answers): the sidecar said "built, not run: ...",
    and build's line "tensorrt output: ....engine (built)"."""
    monkeypatch.setattr(TensorRTBackend, "available", lambda self: (True, "TensorRT, no GPU here"))
    fake_gpu.gpu.present = False
    code, out, err = cli(
        "build", cnn_models.fp32, "--precision", "fp32", "--backend", "tensorrt", "--target", "rtx4090",
        "-o", tmp_path / "out", "--profile", "input:1x1x8x8,4x1x8x8,8x1x8x8",
    )  # fmt: skip
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("tensorrt output:"))
    assert "(built, not run: " in line and "no CUDA GPU answers" in line, line
    assert "(built)" not in line


def _state_engine(root: Path) -> Path:
    """silero-vad's layout (x[batch, 16], state[2, batch, 8]) built from ``models/state.onnx`` given
    relative to ``root``, the working directory, into ``root/out``: only the model's dim names say
    that state's batch is on axis 1."""
    _state_model(root / "models")
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=[STATE_PROFILE])
    return root / TensorRTBackend().build(Path("models/state.onnx"), opts, Path("out")).artifact


@pytest.mark.trt_versions("10.13.0")
def test_the_sidecar_records_the_model_relative_to_itself_so_another_cwd_finds_it(
    fake_gpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built with `build models/state.onnx -o out` from tmp, the sidecar recorded
    "models/state.onnx": profiled from another folder, the engine's model was not found, and state
    was fed its batch on axis 0 ("input 'state' has a static batch of 2"). It is recorded from the
    sidecar's folder now ("../models/state.onnx"), and read so."""
    monkeypatch.chdir(tmp_path)
    engine = _state_engine(tmp_path)
    record = json.loads(engine.with_name(engine.name + ".json").read_text())["inputs"]["model"]
    assert (engine.parent / record["path"]).resolve() == (tmp_path / "models" / "state.onnx").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(2,), measure_power=False)
    profile(engine, options)
    shapes = [args for name, args in fake_gpu.state.calls if name == "IExecutionContext.set_input_shape"]
    assert ("state", (2, 2, 8)) in shapes


@pytest.mark.trt_versions("10.13.0")
def test_an_old_sidecar_s_model_path_is_read_from_the_working_directory_as_before(
    fake_gpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar written before paths were relative to it (no "relative_to") holds the path as the
    build was given it: read from the working directory, as it was."""
    monkeypatch.chdir(tmp_path)
    engine = _state_engine(tmp_path)
    sidecar = engine.with_name(engine.name + ".json")
    old = json.loads(sidecar.read_text())
    old["inputs"]["model"] = {"path": "models/state.onnx", "sha256": old["inputs"]["model"]["sha256"]}
    sidecar.write_text(json.dumps(old))
    specs = engine_model_inputs(engine, {"x": 2, "state": 3})
    assert specs is not None and [s.shape for s in specs] == [("batch", 16), (2, "batch", 8)]
