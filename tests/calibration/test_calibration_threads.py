"""auto's measurements on several threads, and the statistics pass running the next batch while
the current one is observed, give the same calibration byte for byte as one thread; an error on
a thread reaches the caller as it would without threads, and stops the work not yet started."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import calibration.calibrate as calibrate_module
import calibration.observers as observers_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.errors import CalibrationError
from calibration.modelinfo import model_io
from calibration.observers import HistogramObserver, collect
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


class _Recorded:
    """An ONNX Runtime session that records the thread each run is on."""

    def __init__(self, session: object, threads: int | None, runs: list[tuple[int | None, str]]) -> None:
        self.session, self.threads, self.runs = session, threads, runs

    def run(self, *args: object) -> object:
        self.runs.append((self.threads, threading.current_thread().name))
        return self.session.run(*args)  # type: ignore[attr-defined]


def _recording(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[tuple[int | None, str]]:
    """Sessions collect makes record their runs (threads, thread name); a one-thread session
    takes ``delay`` seconds longer to make."""
    runs: list[tuple[int | None, str]] = []
    real = observers_module._session

    def session(data: object, threads: int | None, *args: object) -> object:
        if threads == 1:
            time.sleep(delay)
        return _Recorded(real(data, threads, *args), threads, runs)  # type: ignore[arg-type]

    monkeypatch.setattr(observers_module, "_session", session)
    return runs


class _Slow:
    """Observes nothing; the first batch takes a while (the one-thread session is ready after it)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds, self.batches = feeds, []

    def start_batch(self, feed: dict[str, np.ndarray]) -> None:
        self.batches.append(next(k for k, f in enumerate(self.feeds) if f is feed))
        if len(self.batches) == 1:
            time.sleep(0.3)

    def observe(self, name: str, array: np.ndarray) -> None:
        assert threading.current_thread() is threading.main_thread()  # observers on the caller's thread


def _statistics(
    model: Path, feeds: list[dict[str, np.ndarray]], ahead: bool
) -> tuple[dict[str, object], list[int]]:
    names = [n.output[0] for n in onnx.load(model).graph.node]
    hist, order = HistogramObserver(names=names), _Slow(feeds)
    assert collect(model, iter(feeds), names, [hist, order], ahead=ahead) == 2 * len(feeds)
    return {
        n: (h.absmax, h.top, h.zeros, h.counts.tolist()) for n, h in hist.histograms.items()
    }, order.batches


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32) * (k + 1)} for k in range(5)]


def test_the_statistics_pass_runs_the_next_batch_ahead_with_the_same_statistics(
    residual_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = _feeds()
    runs = _recording(monkeypatch)
    alone, order = _statistics(residual_model, feeds, ahead=False)
    assert order == [0, 1, 2, 3, 4] and runs == [(None, "MainThread")] * 5
    runs.clear()
    ahead, order = _statistics(residual_model, feeds, ahead=True)
    assert ahead == alone and order == [0, 1, 2, 3, 4]
    # the first batch on the session of ``threads``; the others ahead, on one ORT thread, beside
    assert runs[0] == (None, "MainThread")
    assert [t for t, _ in runs[1:]] == [1] * 4 and all(
        n.startswith("edgedeploy-collect") for _, n in runs[1:]
    )


def test_the_statistics_pass_goes_one_batch_at_a_time_for_large_batches_or_a_slow_session(
    residual_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = _feeds()
    alone, _ = _statistics(residual_model, feeds, ahead=False)
    runs = _recording(monkeypatch)
    monkeypatch.setattr(observers_module, "AHEAD_MAX_BYTES", 16)
    large, _ = _statistics(residual_model, feeds, ahead=True)
    assert large == alone and runs == [(None, "MainThread")] * 5  # no one-thread session made
    monkeypatch.setattr(observers_module, "AHEAD_MAX_BYTES", 1 << 30)
    runs = _recording(monkeypatch, delay=1.0)  # not ready after the first batch's 0.3 s
    slow, _ = _statistics(residual_model, feeds, ahead=True)
    assert slow == alone and runs == [(None, "MainThread")] * 5


def test_an_error_on_the_run_ahead_is_one_calibration_error(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": np.ones((1, 4), np.float32)}, {"x": np.ones((3, 4), np.float32)}]  # 12 values: no 2x2
    with pytest.raises(CalibrationError, match="cannot run"):
        collect(model, iter(feeds), ["y"], [HistogramObserver(names=["y"])], ahead=True)


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
