"""Streaming statistics and the threshold algorithms."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.algorithms import (
    AlgorithmOptions,
    clipped_share,
    compute_threshold,
    kl_divergences,
    per_channel_absmax,
)
from calibration.errors import CalibrationError
from calibration.observers import AbsHistogram, HistogramObserver, RangeObserver, collect


def test_histogram_grows_its_range_by_exact_merges_with_fixed_memory() -> None:
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal(1000) * s for s in (0.1, 1.0, 7.0, 3.0)]
    hist = AbsHistogram(bins=256)
    for b in batches:
        hist.add(b)
    assert hist.counts.shape == (256,)
    everything = np.abs(np.concatenate(batches))
    assert hist.absmax == pytest.approx(everything.max())
    assert hist.top / 2 < hist.absmax <= hist.top  # the absmax stays in the upper half
    expected, _ = np.histogram(everything, bins=256, range=(0, hist.top))
    # merging pairs of bins is exact: only values on a bin edge may move by one bin
    assert np.abs(hist.counts - expected).sum() <= 4
    assert hist.total == everything.size


def test_all_zero_tensor_gets_no_range_and_a_zero_threshold() -> None:
    hist = AbsHistogram(bins=256)
    hist.add(np.zeros(100, np.float32))
    assert hist.top == 0.0 and hist.zeros == 100
    for algorithm in ("entropy", "max", "percentile", "mse"):
        assert compute_threshold(hist, AlgorithmOptions(algorithm)) == 0.0


def _pytorch_quantization_kl(bins: np.ndarray, start: int = 128, nbins: int = 128) -> np.ndarray:
    """NVIDIA pytorch-quantization's loop (the TensorRT reference), kept literal for the comparison."""
    from scipy.stats import entropy

    out = []
    for i in range(start, len(bins) + 1):
        counts = np.zeros(nbins)
        space = np.linspace(0, i, num=nbins + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        for idx, d in enumerate(digitized):
            if d != -1:
                counts[d] += bins[idx]
        for key, val in Counter(digitized).items():
            if key != -1:
                counts[key] /= val
        new = np.array([counts[d] if d != -1 else 0.0 for d in digitized])
        ref = np.array(bins[:i], dtype=np.float64)
        ref[-1] += bins[i:].sum()
        out.append(entropy(ref, new))
    return np.array(out)


def test_entropy_divergences_match_tensorrts_reference_loop() -> None:
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    counts, _ = np.histogram(np.abs(rng.laplace(size=50000)), bins=300)
    counts = counts.astype(np.float64)
    counts[40:47] = 0  # empty bins inside the range
    ours = kl_divergences(counts, np.arange(128, 301))
    ref = _pytorch_quantization_kl(counts)
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(ours))
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("levels", [128, 256])
def test_entropy_divergences_in_chunks_and_after_a_longer_histogram_are_the_whole_ranges(levels: int) -> None:
    """The bin-to-level edges come from a table shared by every tensor (grown for a longer
    histogram): any chunk of candidates gives the divergences of one pass over the whole range,
    and those of TensorRT's reference loop."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(4)
    long, _ = np.histogram(np.abs(rng.standard_normal(200_000)), bins=9000)
    kl_divergences(long.astype(np.float64), np.arange(8000, 9001), levels)  # grows the table first
    counts, _ = np.histogram(np.abs(rng.laplace(size=100_000)), bins=2500)
    counts = counts.astype(np.float64)
    whole = kl_divergences(counts, np.arange(levels, 2501), levels)
    chunks = np.array_split(np.arange(levels, 2501), 7)
    np.testing.assert_array_equal(np.concatenate([kl_divergences(counts, c, levels) for c in chunks]), whole)
    short = counts[: levels + 40].copy()
    ours = kl_divergences(short, np.arange(levels + 10, levels + 41), levels)
    ref = _pytorch_quantization_kl(short, start=levels + 10, nbins=levels)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_algorithms_clip_outliers_except_max() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.standard_normal(200_000), [60.0, -80.0]])
    hist = AbsHistogram()
    hist.add(values)
    amax = compute_threshold(hist, AlgorithmOptions("max"))
    assert amax == pytest.approx(80.0)
    for algorithm in ("entropy", "percentile"):
        thr = compute_threshold(hist, AlgorithmOptions(algorithm))
        assert 2.0 < thr < 20.0, algorithm
        assert 0.0 < clipped_share(hist, thr) < 0.01
    # mse weighs the two outliers' squared clipping error against 200k rounding errors
    mse = compute_threshold(hist, AlgorithmOptions("mse"))
    assert 2.0 < mse < 60.0
    scale = mse / 127
    q = np.clip(np.round(values / scale), -127, 127) * scale
    err_mse = ((values - q) ** 2).sum()
    for other in (mse * 0.7, min(mse * 1.3, 80.0)):
        s = other / 127
        assert err_mse <= ((values - np.clip(np.round(values / s), -127, 127) * s) ** 2).sum() * 1.05
    p99 = compute_threshold(hist, AlgorithmOptions("percentile", percentile=99.0))
    assert p99 == pytest.approx(np.quantile(np.abs(values), 0.99), rel=0.01)
    assert clipped_share(hist, amax) == 0.0


def test_unknown_algorithm_and_bad_percentile_are_refused() -> None:
    with pytest.raises(CalibrationError, match="unknown calibration algorithm 'kl'"):
        AlgorithmOptions("kl")
    with pytest.raises(CalibrationError, match="percentile"):
        AlgorithmOptions("percentile", percentile=120)


def test_weights_get_per_channel_absmax() -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 10
    np.testing.assert_array_equal(per_channel_absmax(w, 0), [10, 13])
    np.testing.assert_array_equal(per_channel_absmax(w, 1), [10, 9, 13])


def _tiny_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((64, 64), np.float32) * 0.01, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(n: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield {"x": rng.standard_normal((64, 64)).astype(np.float32)}


def test_collect_memory_does_not_grow_with_the_number_of_samples() -> None:
    model = _tiny_model()
    peaks = []
    for batches in (20, 200):
        observer = HistogramObserver(names=["x", "h", "y"])
        ranges = RangeObserver()
        tracemalloc.start()
        seen = collect(model, _feeds(batches), ["x", "h", "y"], [observer, ranges])
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert seen == batches * 64
        assert observer.histograms["y"].total == batches * 64 * 64
        assert ranges.ranges["y"].minimum >= 0.0
    assert peaks[1] < peaks[0] * 1.25 + 256 * 1024, peaks


def test_entropy_never_clips_more_than_max_clipped_unless_disabled() -> None:
    # a real histogram: a ReLU output of PaddleOCR's direction classifier on 200 text lines,
    # where TensorRT's pure KL optimum clips 4.9% of the values
    saved = np.load(Path(__file__).parent / "data" / "paddleocr-cls-relu4-hist.npz")
    hist = AbsHistogram(
        bins=len(saved["counts"]),
        top=float(saved["top"]),
        counts=saved["counts"].copy(),
        absmax=float(saved["absmax"]),
        zeros=int(saved["zeros"]),
    )
    pure = compute_threshold(hist, AlgorithmOptions("entropy", max_clipped=1.0))
    guarded = compute_threshold(hist, AlgorithmOptions("entropy"))
    assert clipped_share(hist, pure) > 0.04
    assert guarded > pure and clipped_share(hist, guarded) == pytest.approx(0.01, abs=1e-4)
    with pytest.raises(CalibrationError, match="max_clipped"):
        AlgorithmOptions("entropy", max_clipped=0.7)
