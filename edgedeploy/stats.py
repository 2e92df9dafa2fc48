"""Latency statistics as trtexec reports them: min, max, mean, median, p90/p95/p99, std, CV."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
