"""Latency statistics as trtexec reports them: min, max, mean, median, p90/p95/p99, std, CV; the
latency distribution as a fixed set of quantiles by trtexec's percentile rule (what the report draws
as a CDF); which low precisions ran slower than fp32."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.targets import measured_off_target

QUANTILE_POINTS = 101  # 0%, 1%, ..., 100%: a CDF to 1% resolution in about 1 kB of JSON


def trtexec_percentile_index(percent: float, count: int) -> int:
    """The index trtexec reads percentile ``percent`` at in ``count`` ascending timings: the run
    below which ``int((1 - percent / 100) * count)`` runs are left out, no interpolation
    (docs/design.md, "Latency percentiles as trtexec reads them"). trtexec works it out in float32,
    and so is it here: in float64 p90 of 10 runs would leave none out (0.99999...), trtexec's one."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percentile {percent} is not in [0, 100]")
    one, p, n = np.float32(1.0), np.float32(percent), np.float32(count)
    exclude = int(np.float32(np.float32(one - p / np.float32(100.0)) * n))
    return max(count - 1 - exclude, 0)


def trtexec_median(ordered: np.ndarray) -> float:
    """trtexec's median of ascending timings: the middle run, or the mean of the two middle ones
    for an even count (docs/design.md, "Latency percentiles as trtexec reads them")."""
    m = ordered.size // 2
    return float(ordered[m]) if ordered.size % 2 else float((ordered[m - 1] + ordered[m]) / 2.0)


def latency_quantiles(samples_ms: Sequence[float] | np.ndarray, points: int = QUANTILE_POINTS) -> list[float]:
    """The latency at ``points`` evenly spaced quantiles from 0 (min) to 1 (max), in ms.

    Each is a timed run picked by trtexec's percentile rule (:func:`trtexec_percentile_index`), the
    one at 50 % trtexec's median: the CDF the report draws passes through the p50, p90, p95 and
    p99 of the profile's table. Kept instead of the raw samples: a 3 s run of a 0.1 ms model has
    30,000 samples, and the quantiles draw the same CDF at a fixed, small size.
    """
    ordered = np.sort(np.asarray(samples_ms, dtype=np.float64))
    if ordered.size == 0:
        raise ValueError("no timing samples")
    if points < 2:
        raise ValueError("at least two quantile points (min and max)")
    values = []
    for i in range(points):
        percent = 100.0 * i / (points - 1)
        if percent == 50.0:
            value = trtexec_median(ordered)
        else:
            value = float(ordered[trtexec_percentile_index(percent, ordered.size)])
        values.append(round(value, 6))
    return values


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
        """The figures as trtexec computes them: percentiles are timed runs picked by its rule and
        the median the mean of the two middle runs for an even count (docs/design.md, "Latency
        percentiles as trtexec reads them"); std is the population's, as trtexec's CV uses."""
        arr = np.sort(np.asarray(samples_ms, dtype=np.float64))
        if arr.size == 0:
            raise ValueError("no timing samples")
        mean = float(arr.mean())
        std = float(arr.std())
        p90, p95, p99 = (float(arr[trtexec_percentile_index(p, arr.size)]) for p in (90, 95, 99))
        return cls(
            count=int(arr.size),
            min_ms=float(arr[0]),
            max_ms=float(arr[-1]),
            mean_ms=mean,
            median_ms=trtexec_median(arr),
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
