"""Calibration algorithms: from a tensor's |x| histogram to a clipping threshold (amax).

- ``max``: the absolute maximum seen.
- ``entropy``: TensorRT's KL-divergence method (EntropyCalibration2, as presented by NVIDIA at
  GTC 2017 and implemented in NVIDIA's pytorch-quantization): for every candidate threshold
  ``i`` bins (from 128 up), fold bins ``[0, i)`` into 128 levels, expand back over the non-empty
  bins, and keep the threshold with the smallest KL(P || Q), where P gets the clipped outliers
  added to its last bin. Bin 0 takes bin 1's count first, so the ReLU spike at zero does not
  drive the choice. Written here as one vectorised pass with prefix sums (O(bins x 128))
  instead of a Python loop per candidate. A tensor with too few non-zero values for a
  meaningful histogram (fewer than 16 per level) keeps its absolute max. One guard is ours:
  where the KL optimum clips more than ``max_clipped`` of the values (default 1%), the threshold
  is raised to the value that clips exactly that share. On heavy-tailed ReLU outputs the pure
  KL optimum can clip 5% of the values and cost several points of agreement with FP32 (seen on
  PaddleOCR's classifier: 0.89 -> 0.97 with the guard); ``max_clipped = 1`` disables it.
- ``percentile``: the value below which ``percentile`` % of |x| lies (default 99.99).
- ``mse``: the threshold that minimises the expected squared error of quantize-dequantize,
  with every bin's values at its centre.

All take an :class:`~calibration.observers.AbsHistogram` and return a threshold in the
tensor's units; ``levels`` is the number of positive quantization levels (128 for int8,
256 for a uint8 tensor that is known to be non-negative).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from calibration.defaults import DEFAULT_PERCENTILE
from calibration.errors import CalibrationError
from calibration.observers import AbsHistogram

ALGORITHMS = ("entropy", "max", "percentile", "mse", "auto")  # auto: calibration/select.py
# below this many non-zero observations per quantization level, a KL divergence over the
# histogram measures sampling noise (e.g. a squeeze-excitation vector: one value per channel
# and sample), so entropy falls back to the absolute max for that tensor
SPARSE_VALUES_PER_LEVEL = 16


@dataclass(frozen=True)
class AlgorithmOptions:
    algorithm: str = "entropy"
    percentile: float = DEFAULT_PERCENTILE
    start_bin: int = 128  # entropy: smallest candidate, in histogram bins
    max_clipped: float = 0.01  # entropy: largest share of values the threshold may clip

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise CalibrationError(
                f"unknown calibration algorithm '{self.algorithm}'; choose one of {', '.join(ALGORITHMS)}"
            )
        if not (0.0 < self.max_clipped <= 0.5 or self.max_clipped == 1.0):
            raise CalibrationError(
                f"max_clipped must be within (0, 0.5], or 1 to disable, got {self.max_clipped}"
            )
        if not 50.0 <= self.percentile <= 100.0:
            raise CalibrationError(f"percentile must be within [50, 100], got {self.percentile}")

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"algorithm": self.algorithm}
        if self.algorithm == "percentile":
            out["percentile"] = self.percentile
        if self.algorithm == "auto":
            out["percentile"] = self.percentile
        if self.algorithm in ("entropy", "auto"):
            out["start_bin"] = self.start_bin
            out["max_clipped"] = self.max_clipped
        return out


def _trimmed(hist: AbsHistogram) -> np.ndarray:
    """Counts up to the bin that holds the absmax (later bins are empty by construction)."""
    counts = hist.full_counts()
    last = min(len(counts), int(np.ceil(hist.absmax / hist.width)) if hist.width else 1)
    return counts[: max(last, 1)]


def threshold_max(hist: AbsHistogram, levels: int = 128, options: AlgorithmOptions | None = None) -> float:
    return float(hist.absmax)


def kl_divergences(counts: np.ndarray, candidates: np.ndarray, levels: int = 128) -> np.ndarray:
    """KL(P || Q) for every candidate bin count ``i`` (TensorRT's reference/quantized pair).

    ``candidates``: increasing consecutive bin counts (a chunk of ``threshold_entropy``'s range)."""
    counts = counts.astype(np.float64)
    n = len(counts)
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    nonzero = np.concatenate([[0], np.cumsum(counts > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        clogc = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1.0)), 0.0)
    cum_clogc = np.concatenate([[0.0], np.cumsum(clogc)])
    total = cum[n]
    i1 = candidates.astype(np.int64)
    edges = _level_edges(int(i1[0]), int(i1[-1]) + 1, levels)  # bin idx -> level floor(idx*levels/i)
    at = cum[edges]
    group_sum = at[:, 1:] - at[:, :-1]  # (C, levels)
    nz_at = nonzero[edges]
    group_nz = nz_at[:, 1:] - nz_at[:, :-1]
    outliers = total - cum[i1]
    last = counts[i1 - 1] + outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        # sum r log r over the reference (bins [0, i) with outliers in the last one)
        r_log_r = cum_clogc[i1 - 1] + np.where(last > 0, last * np.log(np.where(last > 0, last, 1.0)), 0.0)
        inside = cum[i1]
        # a level without a non-empty bin has a zero sum, so its mass is 0 / 1
        q_mass = group_sum / np.maximum(group_nz, 1)
        q_mass /= inside[:, None]
        log_q = np.zeros_like(q_mass)
        np.log(q_mass, out=log_q, where=q_mass > 0)
        group_sum[:, -1] += outliers  # the reference: the clipped values in the last level
        log_q *= group_sum
        cross = log_q.sum(axis=1)
        kl = (r_log_r - cross) / total - np.log(total)
    # P > 0 where Q = 0: the last bin is empty but receives outliers
    impossible = (counts[i1 - 1] == 0) & (outliers > 0)
    kl = np.where(impossible, np.inf, kl)
    return np.asarray(kl)


def _level_edges(first: int, stop: int, levels: int) -> np.ndarray:
    """For each candidate ``i`` in ``[first, stop)``, the first bin of each of its ``levels``
    levels and the end, ``ceil(j * i / levels)`` for j = 0..levels: rows of a table that is the
    same for every tensor, so computed once per number of levels and grown when a longer
    histogram needs it (the integer division was a sixth of the search; 4 MB for 4096 bins and
    128 levels). Read-only; threads that grow it at the same time compute the same table."""
    table = _EDGES.get(levels)
    if table is None or len(table) < stop:
        i = np.arange(-(-stop // 1024) * 1024, dtype=np.int64)[:, None]
        j = np.arange(levels + 1, dtype=np.int64)[None, :]
        table = (j * i + levels - 1) // levels
        table.setflags(write=False)
        _EDGES[levels] = table
    return table[first:stop]


_EDGES: dict[int, np.ndarray] = {}


def threshold_entropy(
    hist: AbsHistogram, levels: int = 128, options: AlgorithmOptions | None = None
) -> float:
    options = options or AlgorithmOptions("entropy")
    counts = _trimmed(hist)
    if hist.width == 0.0:
        return 0.0
    counts = counts.copy()
    if len(counts) > 1:
        counts[0] = counts[1]
    start = min(options.start_bin, len(counts))
    nonzero_values = hist.total - hist.zeros
    if len(counts) <= levels or counts.sum() == 0 or nonzero_values < SPARSE_VALUES_PER_LEVEL * levels:
        return float(hist.absmax)
    candidates = np.arange(max(start, levels), len(counts) + 1)
    divergences = np.concatenate(
        [
            kl_divergences(counts, c, levels)
            for c in np.array_split(candidates, max(1, len(candidates) // 512))
        ]
    )
    # the last minimum, as pytorch-quantization does (ties go to the wider range)
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    threshold = float(min(candidates[best] * hist.width, hist.absmax))
    if options.max_clipped < 1.0 and clipped_share(hist, threshold) > options.max_clipped:
        bounded = AlgorithmOptions("percentile", percentile=100.0 * (1.0 - options.max_clipped))
        threshold = max(threshold, threshold_percentile(hist, levels, bounded))
    return threshold


def threshold_percentile(
    hist: AbsHistogram, levels: int = 128, options: AlgorithmOptions | None = None
) -> float:
    options = options or AlgorithmOptions("percentile")
    counts = _trimmed(hist)
    total = counts.sum()
    if hist.width == 0.0 or total == 0:
        return 0.0
    target = total * options.percentile / 100.0
    cum = np.cumsum(counts)
    idx = int(np.searchsorted(cum, target, side="left"))
    idx = min(idx, len(counts) - 1)
    before = cum[idx - 1] if idx > 0 else 0.0
    frac = (target - before) / counts[idx] if counts[idx] else 1.0
    return float(min((idx + frac) * hist.width, hist.absmax))


def threshold_mse(hist: AbsHistogram, levels: int = 128, options: AlgorithmOptions | None = None) -> float:
    counts = _trimmed(hist)
    if hist.width == 0.0 or counts.sum() == 0:
        return 0.0
    centers = (np.arange(len(counts)) + 0.5) * hist.width
    centers[0] = 0.0 if hist.zeros >= counts[0] / 2 else centers[0]
    weights = counts
    n = len(counts)
    cand_bins = np.unique(np.linspace(max(1, n // 64), n, num=min(n, 384)).astype(np.int64))
    best, best_err = float(hist.absmax), np.inf
    qmax = levels - 1
    for chunk in np.array_split(cand_bins, max(1, len(cand_bins) // 64)):
        thresholds = chunk.astype(np.float64) * hist.width  # (C,)
        scale = (thresholds / qmax)[:, None]
        # quantize-dequantize every centre, its squared error weighted by the bin's count: in
        # place in one (C, bins) buffer, the same operations in the same order as with temporaries
        q = np.divide(centers[None, :], scale)
        np.round(q, out=q)
        np.clip(q, 0, qmax, out=q)
        q *= scale
        np.subtract(centers[None, :], q, out=q)
        np.square(q, out=q)
        q *= weights[None, :]
        err = q.sum(axis=1)
        k = int(np.argmin(err))
        if err[k] < best_err:
            best_err, best = float(err[k]), float(thresholds[k])
    return min(best, float(hist.absmax))


_DISPATCH: dict[str, Callable[[AbsHistogram, int, AlgorithmOptions | None], float]] = {
    "max": threshold_max,
    "entropy": threshold_entropy,
    "percentile": threshold_percentile,
    "mse": threshold_mse,
}


def compute_threshold(hist: AbsHistogram, options: AlgorithmOptions, levels: int = 128) -> float:
    """The clipping threshold for one tensor; 0 for a tensor that was always zero.

    ``auto`` measures on data (calibration/select.py); from a histogram alone it is percentile,
    used for the tensors that only the TensorRT cache lists."""
    if options.algorithm == "auto":
        return threshold_percentile(hist, levels, options)
    return _DISPATCH[options.algorithm](hist, levels, options)


def clipped_share(hist: AbsHistogram, threshold: float) -> float:
    """Share of observed values with |x| above ``threshold`` (linear within a bin)."""
    total = hist.total
    if total == 0 or hist.width == 0.0 or threshold >= hist.absmax:
        return 0.0
    counts = hist.full_counts()
    pos = threshold / hist.width
    idx = int(pos)
    above = counts[idx + 1 :].sum() + counts[idx] * (1.0 - (pos - idx)) if idx < len(counts) else 0.0
    return float(above / total)


def per_channel_absmax(weight: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel absolute max of a weight along ``axis`` (the weights' only algorithm)."""
    moved = np.moveaxis(np.abs(weight.astype(np.float32)), axis, 0)
    return np.asarray(moved.reshape(moved.shape[0], -1).max(axis=1))
