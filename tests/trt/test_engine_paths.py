"""The engine path end to end (fake GPU): build's status line, the sidecar's model path, the batches
run, compare and matrix take where an engine's profile does not admit the configured ones, and the
data engines are timed on."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.backends.tensorrt import TensorRTBackend


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
