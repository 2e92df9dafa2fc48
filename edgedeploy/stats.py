"""Latency statistics as trtexec reports them: min, max, mean, median, p90/p95/p99, std, CV; and the
latency distribution as a fixed set of quantiles (what the report draws as a CDF)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUANTILE_POINTS = 101  # 0%, 1%, ..., 100%: a CDF to 1% resolution in about 1 kB of JSON


def latency_quantiles(samples_ms: Sequence[float] | np.ndarray, points: int = QUANTILE_POINTS) -> list[float]:
    """The latency at ``points`` evenly spaced quantiles from 0 (min) to 1 (max), in ms.

    Kept instead of the raw samples: a 3 s run of a 0.1 ms model has 30,000 samples, and the
    quantiles draw the same CDF at a fixed, small size.
    """
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no timing samples")
    if points < 2:
        raise ValueError("at least two quantile points (min and max)")
    return [round(float(v), 6) for v in np.quantile(arr, np.linspace(0.0, 1.0, points))]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a list of timings in milliseconds."""

    count: int
    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    std_ms: float
    cv_percent: float  # coefficient of variation, std / mean * 100

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no timing samples")
        mean = float(arr.mean())
        std = float(arr.std())
        p90, p95, p99 = (float(v) for v in np.percentile(arr, [90, 95, 99]))
        return cls(
            count=int(arr.size),
            min_ms=float(arr.min()),
            max_ms=float(arr.max()),
            mean_ms=mean,
            median_ms=float(np.median(arr)),
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            std_ms=std,
            cv_percent=std / mean * 100.0 if mean > 0 else 0.0,
        )
