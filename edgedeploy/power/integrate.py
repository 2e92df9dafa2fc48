"""Average power over a time window from instantaneous samples, and energy from counters.

Power samples arrive every ~100 ms and a profiling window rarely starts or ends on one, so the
average is time-weighted: linear between samples, held flat from the window edges to the
nearest sample. Energy counters (RAPL, NVML) wrap around; their deltas are unwrapped here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def window_average(times: Sequence[float], values: Sequence[float], t0: float, t1: float) -> float | None:
    """Time-weighted mean of ``values`` sampled at ``times`` over [t0, t1]; None without samples.

    Samples outside the window only shape the edges (the nearest one on each side is used to
    interpolate the value at t0 and t1), so a window shorter than the sampling interval is
    still measured when samples bracket it.
    """
    if t1 <= t0:
        raise ValueError("empty window")
    pts = sorted(zip(times, values, strict=True))
    if not pts:
        return None
    inside = [(t, v) for t, v in pts if t0 <= t <= t1]
    if not inside and not (pts[0][0] < t0 and pts[-1][0] > t1):
        return None  # nothing inside and nothing on both sides to interpolate from
    edge = [(t0, _value_at(pts, t0)), *inside, (t1, _value_at(pts, t1))]
    area = 0.0
    for (ta, va), (tb, vb) in itertools.pairwise(edge):
        area += (tb - ta) * (va + vb) / 2.0
    return area / (t1 - t0)


def _value_at(pts: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation between the samples around ``t``; the nearest one beyond the ends."""
    before = [p for p in pts if p[0] <= t]
    after = [p for p in pts if p[0] >= t]
    if not before:
        return after[0][1]
    if not after:
        return before[-1][1]
    (ta, va), (tb, vb) = before[-1], after[0]
    if tb == ta:
        return va
    return va + (vb - va) * (t - ta) / (tb - ta)


def counter_delta(readings: Sequence[float], wrap: float | None) -> float:
    """Sum of increments of a monotonically increasing counter that wraps at ``wrap``."""
    total = 0.0
    for a, b in itertools.pairwise(readings):
        step = b - a
        if step < 0:
            if wrap is None:
                raise ValueError("energy counter went backwards and its range is unknown")
            step += wrap
        total += step
    return total
