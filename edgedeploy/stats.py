"""Latency statistics as trtexec reports them: min, max, mean, median, p90/p95/p99, std, CV; and the
latency distribution as a fixed set of quantiles (what the report draws as a CDF); which low
precisions ran slower than fp32."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.targets import measured_off_target

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


# a low precision whose median latency is this many times fp32's (or more) at every batch size both
# were profiled at is said to be slower. Above 1 because one run's figures move: fp32 on PP-OCR's
# classifier timed 0.87 ms in one run and 1.97 ms in another on a shared 2-core machine.
SLOWER_THAN_FP32 = 1.2


def slower_than_fp32(profiles: Mapping[str, Mapping[str, Any] | None]) -> dict[str, str]:
    """The precisions of ``profiles`` (precision -> :meth:`ProfileResult.summary`) that ran slower
    than fp32 (:data:`SLOWER_THAN_FP32`) on the same backend: precision -> the figures in words.

    An int8 model can: on PP-OCR's text-direction classifier at batch 8 ONNX Runtime took 15.6 ms
    for int8 and 10.6 ms for fp32 on an AVX512-VNNI CPU; a user who ships it for speed should know.
    """
    base = profiles.get("fp32") or {}
    base_batches = base.get("batch_sizes") or {}
    found: dict[str, str] = {}
    for precision, prof in profiles.items():
        if precision == "fp32" or not prof or prof.get("backend") != base.get("backend"):
            continue
        pairs = [
            (batch, float(b["median_ms"]), float(base_batches[batch]["median_ms"]))
            for batch, b in (prof.get("batch_sizes") or {}).items()
            if batch in base_batches and b.get("median_ms") and base_batches[batch].get("median_ms")
        ]
        if pairs and all(ms >= SLOWER_THAN_FP32 * ref for _, ms, ref in pairs):
            batch, ms, ref = pairs[0]
            found[precision] = f"p50 {ms:.3g} ms against fp32's {ref:.3g} ms at batch {batch}" + (
                f"; slower at all {len(pairs)} batch sizes profiled" if len(pairs) > 1 else ""
            )
    return found


def slower_on_target(
    target: str | None, rows: Iterable[tuple[str, str, Mapping[str, Any] | None]]
) -> dict[str, str]:
    """:func:`slower_than_fp32` of ``rows`` (precision, backend, profile summary) where the figures
    are the target's: a GPU target's measured with ONNX Runtime on this CPU say nothing of the
    device (:func:`~edgedeploy.targets.measured_off_target`). What ``run`` warns and the report shows."""
    rows = list(rows)
    if measured_off_target(target, (backend for _, backend, _ in rows)):
        return {}
    return slower_than_fp32({precision: profile for precision, _, profile in rows})
