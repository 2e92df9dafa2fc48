"""auto's measurements on several threads give the same calibration byte for byte as one thread;
an error on a thread reaches the caller as it would without threads, and stops the work not yet
started."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import calibration.calibrate as calibrate_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.sources import open_source
from calibration.threads import map_ordered, workers


def _calibrate(
    model: Path, tmp_path: Path, out: str, **options: object
) -> tuple[bytes, bytes | None, dict[str, object]]:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((48, 3, 8, 8)).astype(np.float32)
    x[::5] *= 4.0
    np.savez(tmp_path / "calib.npz", x=x)
    source = open_source(str(tmp_path / "calib.npz"), model_io(model)[0], batch_size=4)
    options = {"algorithm": "auto", "force": True, **options}
    result = calibrate(model, source, CalibrationOptions(**options), tmp_path / out)  # type: ignore[arg-type]
    report = json.loads(result.report.read_text())
    report.pop("seconds")
    report.pop("content_sha256")  # a digest of the rest, seconds included
    cache = result.cache.read_bytes() if result.cache is not None else None
    return result.model.read_bytes(), cache, report


@pytest.mark.parametrize(
    "options",
    [{"placement": "tensorrt", "trt_version": "8.6.1"}, {"placement": "onnxruntime"}],
    ids=["tensorrt", "onnxruntime"],
)
def test_threads_change_no_byte_of_the_calibration(
    residual_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, object]
) -> None:
    runs = {}
    for count in (1, 3):
        monkeypatch.setattr(calibrate_module, "workers", lambda threads, count=count: count)
        runs[count] = _calibrate(residual_model, tmp_path, f"w{count}", **options)
    assert runs[1] == runs[3]  # the Q/DQ model, the TensorRT cache and the report (held-out split too)
    report = runs[3][2]
    assert report["selection"]["held_out_samples"] == 12  # every 4th batch of 4, up to the cap


def test_map_ordered_keeps_the_order_and_raises_the_first_error_after_stopping() -> None:
    assert map_ordered(lambda v: v * v, range(7), 3) == [v * v for v in range(7)]
    assert map_ordered(lambda v: v + 1, [1], 4) == [2]
    started: list[int] = []

    def piece(v: int) -> int:
        started.append(v)
        if v == 0:
            raise ValueError("piece 0 failed")
        time.sleep(0.05)
        return v

    with pytest.raises(ValueError, match="piece 0 failed"):
        map_ordered(piece, range(40), 2)
    assert len(started) < 40  # the pieces not started were cancelled


def test_workers_follow_the_thread_limit() -> None:
    assert workers(1) == 1 and workers(3) == 3
    assert 1 <= workers(None) <= 4


def test_map_ordered_keeps_its_threads_and_maps_again_from_them() -> None:
    import threading

    def thread(_: int) -> threading.Thread:
        time.sleep(0.01)
        return threading.current_thread()

    first, second = (set(map_ordered(thread, range(6), 2)) for _ in range(2))
    assert len(first | second) <= 2  # the same two thread objects: one pool, kept
    assert {t.name for t in first} <= {"edgedeploy-calib_0", "edgedeploy-calib_1"}

    # a piece that maps again (the per-tensor step does) gets threads of its own: in the pool it
    # runs on, both pieces would wait for the pieces queued behind them
    def outer(v: int) -> list[int]:
        return map_ordered(lambda w: v * 10 + w, range(3), 2)

    assert map_ordered(outer, range(4), 2) == [[v * 10 + w for w in range(3)] for v in range(4)]
