"""The speed-ups of ``auto`` and of the statistics pass change no Q/DQ model: the model-level step's
screening on half the held-out samples keeps the finalists' figures and the winner whenever the
winner is not far behind on that half; the histograms of the tensors only the TensorRT cache lists
count every 4th value but keep the exact absolute max and NaN counts, and leave the Q/DQ model
byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import calibration.calibrate as calibrate_module
import calibration.observers as observers_module
import calibration.select as select_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.observers import SPARSE_MIN_VALUES, HistogramObserver
from calibration.sources import open_source

SAMPLES = 48  # batch 4: 12 batches, every 4th held out -> 3 held-out feeds (12 samples)


def _calibrate(model: Path, tmp_path: Path, out: str, **options: object) -> tuple[bytes, dict[str, object]]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((SAMPLES, 3, 8, 8)).astype(np.float32)
    x[::7] *= 6.0  # a few loud samples: the rules disagree on the thresholds
    np.savez(tmp_path / "calib.npz", x=x)
    source = open_source(str(tmp_path / "calib.npz"), model_io(model)[0], batch_size=4)
    result = calibrate(
        model, source, CalibrationOptions(algorithm="auto", force=True, **options), tmp_path / out
    )
    return result.model.read_bytes(), json.loads(result.report.read_text())


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_screening_picks_the_same_model_as_scoring_every_candidate_on_every_sample(
    residual_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placement: str
) -> None:
    # the plan with its narrow convolutions in float is measured after the rules, unscreened
    monkeypatch.setattr(calibrate_module, "narrow_convs", lambda model, plan: [])
    screened, report = _calibrate(residual_model, tmp_path, "screened", placement=placement)
    monkeypatch.setattr(select_module, "SCREEN_RATIO", float("inf"))  # nobody stops after the first half
    full, everyone = _calibrate(residual_model, tmp_path, "full", placement=placement)
    assert screened == full
    chosen, all_scored = report["selection"], everyone["selection"]
    assert isinstance(chosen, dict) and isinstance(all_scored, dict)
    assert chosen["winner"] == all_scored["winner"]
    # the finalists' cosines are the figures of the full run; every candidate was screened
    for label, score in chosen["held_out_cosine"].items():
        assert score == all_scored["held_out_cosine"][label]
    assert set(chosen["screened_cosine"]) >= set(chosen["held_out_cosine"])


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_running_the_next_batch_early_changes_no_model(
    residual_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placement: str
) -> None:
    """The statistics pass runs ONNX Runtime one feed ahead of the observers; auto's held-out
    feeds must still reach its recorders, not the histograms (see collect's ``showing``)."""
    import threading

    runs: list[str] = []
    real_run_views = observers_module.run_views

    def run_views(*args: object) -> list[np.ndarray]:
        runs.append(threading.current_thread().name)
        return real_run_views(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(observers_module, "run_views", run_views)
    ahead, report = _calibrate(residual_model, tmp_path, "ahead", placement=placement)
    assert runs[0] == "MainThread" and set(runs[1:12]) == {"edgedeploy-collect_0"}  # 12 batches
    runs.clear()
    monkeypatch.setattr(calibrate_module, "PREFETCH_BYTES", 0)
    in_step, again = _calibrate(residual_model, tmp_path, "in-step", placement=placement)
    assert set(runs) == {"MainThread"}
    assert ahead == in_step
    assert report["selection"] == again["selection"] and report["tensors"] == again["tensors"]


@pytest.mark.parametrize("workers", [1, 3])
def test_screening_stops_the_candidates_far_behind_on_the_first_half(workers: int) -> None:
    reference = [[np.full(4, 1.0)], [np.full(4, 1.0)]]
    outputs = {  # per candidate, per feed: how far from the reference
        "per-tensor": [[np.array([1.0, 1.0, 1.0, 0.9])], [np.array([1.0, 1.0, 1.0, 0.9])]],
        "max": [[np.array([1.0, 1.0, 1.0, -1.0])], [np.array([1.0, 1.0, 1.0, 1.0])]],
        "mse": [[np.array([1.0, 1.0, 1.0, 0.95])], [np.array([1.0, 1.0, 0.5, 1.0])]],
    }

    class Session:
        def __init__(self, label: str) -> None:
            self.label = label

        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            return outputs[self.label][int(feed["k"][0])]

    holdout = [{"k": np.array([0])}, {"k": np.array([1])}]
    stopped: list[str] = []
    scores, screened = select_module._screen(
        Session, list(outputs), holdout, reference, 1, ["y"], dropped=stopped.append, workers=workers
    )  # with workers, every candidate's feeds run side by side and are dealt back to their candidate
    assert stopped == ["max"]  # told as it stops
    assert set(screened) == set(outputs)
    assert set(scores) == {"per-tensor", "mse"}  # max: 1 - cos far above 1.5x the best on feed 0
    for label, score in scores.items():
        want = select_module.output_cosine(reference, outputs[label])
        assert score == pytest.approx(want, abs=1e-15)


def test_tensors_only_the_trt_cache_lists_leave_the_q_dq_model_byte_identical(
    residual_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observers_module, "SPARSE_MIN_VALUES", 1)  # the test's tensors are small
    sparse, report = _calibrate(residual_model, tmp_path, "sparse", trt_version="8.6.1")
    monkeypatch.setattr(calibrate_module, "CACHE_ONLY_EVERY", 1)
    whole, whole_report = _calibrate(residual_model, tmp_path, "whole", trt_version="8.6.1")
    assert sparse == whole
    assert report["tensors"] == whole_report["tensors"]
    cache, whole_cache = report["cache_thresholds"], whole_report["cache_thresholds"]
    assert isinstance(cache, dict) and isinstance(whole_cache, dict) and set(cache) == set(whole_cache)
    assert cache != whole_cache  # the cache-only tensors were sampled (their percentiles moved)
    onnx.checker.check_model(onnx.load_from_string(sparse), full_check=True)


def test_a_sparse_histogram_keeps_the_exact_absmax_and_nan_count() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4 * SPARSE_MIN_VALUES).astype(np.float32)
    x[1] = 50.0  # not among every 4th value
    x[5] = np.nan
    every = HistogramObserver(names=["t"], every={"t": 4})
    whole = HistogramObserver(names=["t"])
    every.observe("t", x)
    whole.observe("t", x)
    sparse, full = every.histograms["t"], whole.histograms["t"]
    assert sparse.absmax == full.absmax == 50.0 and sparse.top == full.top
    assert every.nonfinite == whole.nonfinite == {"t": 1}
    assert sparse.total == pytest.approx(full.total / 4, abs=1)
    # the shape of the histogram is that of the whole tensor
    np.testing.assert_allclose(
        np.cumsum(sparse.counts) / sparse.total, np.cumsum(full.counts) / full.total, atol=0.01
    )


def test_a_small_array_is_counted_whole_even_when_sampled() -> None:
    x = np.linspace(-3, 3, SPARSE_MIN_VALUES - 1, dtype=np.float32)
    every = HistogramObserver(names=["t"], every={"t": 4})
    whole = HistogramObserver(names=["t"])
    every.observe("t", x)
    whole.observe("t", x)
    np.testing.assert_array_equal(every.histograms["t"].counts, whole.histograms["t"].counts)


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_a_source_batched_by_a_multiple_of_the_run_size_calibrates_as_one_batched_by_it(
    residual_model: Path, tmp_path: Path, placement: str
) -> None:
    """The model runs on at most RUN_ROWS samples at a time: a batch of 24 (3 runs of 8) gives the
    Q/DQ model and cache a batch of 8 gives, held-out samples included (one batch of 48 used to
    hold nothing out: auto judged its candidates on the samples they came from)."""
    from calibration.feeds import RUN_ROWS

    rng = np.random.default_rng(5)
    x = rng.standard_normal((SAMPLES, 3, 8, 8)).astype(np.float32)
    x[::7] *= 6.0
    np.savez(tmp_path / "calib.npz", x=x)
    made = {}
    for batch in (RUN_ROWS, 3 * RUN_ROWS, SAMPLES):
        source = open_source(str(tmp_path / "calib.npz"), model_io(residual_model)[0], batch_size=batch)
        options = CalibrationOptions(algorithm="auto", force=True, placement=placement, trt_version="8.6.1")
        result = calibrate(residual_model, source, options, tmp_path / f"b{batch}")
        report = json.loads(result.report.read_text())
        cache = result.cache.read_bytes() if result.cache is not None else None
        made[batch] = (result.model.read_bytes(), cache, report["selection"]["held_out_samples"])
    assert made[RUN_ROWS] == made[3 * RUN_ROWS] == made[SAMPLES]
    assert made[SAMPLES][2] == RUN_ROWS  # the 4th of the 6 runs held out (every 4th run, up to 16 samples)


def test_split_runs_cuts_large_feeds_into_views_along_each_inputs_batch_axis() -> None:
    from calibration.feeds import split_runs
    from calibration.modelinfo import TensorSpec

    x = np.arange(20 * 2, dtype=np.float32).reshape(20, 2)
    batched = [TensorSpec("x", ("n", 2), "tensor(float)")]
    pieces = list(split_runs([{"x": x}], batched, rows=8))
    assert [p["x"].shape[0] for p in pieces] == [8, 8, 4]
    assert all(np.shares_memory(p["x"], x) for p in pieces)  # views: no copy of the data
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in pieces]), x)
    # a GRU's state h[2, n, 4] beside the input: cut along its batch axis 1, the one named n
    state = [TensorSpec("x", ("n", 2), "tensor(float)"), TensorSpec("h", (2, "n", 4), "tensor(float)")]
    h = np.arange(2 * 20 * 4, dtype=np.float32).reshape(2, 20, 4)
    pieces = list(split_runs([{"x": x, "h": h}], state, rows=8))
    assert [p["h"].shape for p in pieces] == [(2, 8, 4), (2, 8, 4), (2, 4, 4)]
    np.testing.assert_array_equal(np.concatenate([p["h"] for p in pieces], axis=1), h)
    # a state whose batch axis the model does not tell (unnamed) leaves the feed as it is
    unnamed = [TensorSpec("x", (None, 2), "tensor(float)"), TensorSpec("h", (2, None, 4), "tensor(float)")]
    feed = {"x": x, "h": h}
    assert [p is feed for p in split_runs([feed], unnamed, rows=8)] == [True]
    static = [TensorSpec("x", (20, 2), "tensor(float)")]  # a fixed batch of 20 runs as it is
    assert len(list(split_runs([{"x": x}], static, rows=8))) == 1


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_the_statistics_session_takes_the_weights_as_arrays_and_changes_no_model(
    residual_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placement: str
) -> None:
    """The statistics pass's session gets the model's float weights as the arrays calibrate already
    read (its ModelFacts), not serialized with the model and parsed again by ONNX Runtime (54 MB
    on ddddocr's recognizer); the Q/DQ model and the report's figures are the same."""
    monkeypatch.setattr(observers_module, "IN_MEMORY_BYTES", 0)  # the test's weights are small
    sessions: list[tuple[int, list[str]]] = []
    real_session = observers_module._session

    def session(model: object, threads: object, name: str = "", external: object = ([], [])) -> object:
        assert isinstance(external, tuple)
        size = len(model) if isinstance(model, bytes) else model.ByteSize()  # type: ignore[attr-defined]
        sessions.append((size, list(external[0])))
        return real_session(model, threads, name, external)  # type: ignore[arg-type]

    monkeypatch.setattr(observers_module, "_session", session)
    in_memory, report = _calibrate(residual_model, tmp_path, "in-memory", placement=placement)
    weights = {"wa", "wb", "wt", "wg", "wm", "ba", "bg"}
    assert len(sessions) == 1 and set(sessions[0][1]) == weights
    assert sessions[0][0] < 1000  # the graph without its weights' values

    real_collect = observers_module.collect

    def serialized(*args: object, **kwargs: object) -> int:
        kwargs.pop("arrays", None)
        return real_collect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(calibrate_module, "collect", serialized)
    sessions.clear()
    whole, again = _calibrate(residual_model, tmp_path, "serialized", placement=placement)
    assert sessions[0][1] == []
    assert in_memory == whole
    assert report["selection"] == again["selection"] and report["tensors"] == again["tensors"]
