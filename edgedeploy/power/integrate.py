"""Average power over a time window from instantaneous samples, and energy from counters.

Power samples arrive every ~100 ms and a profiling window rarely starts or ends on one, so the
average is time-weighted: linear between samples, held flat from the window edges to the
nearest sample. Energy counters (RAPL, NVML) wrap around; their deltas are unwrapped here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence


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


MAX_TRACE_POINTS = 600  # a report draws at most this many points per rail; longer traces are thinned


def make_trace(
    times: Sequence[float], rails: Mapping[str, Sequence[float | None]], t0: float, t1: float
) -> dict[str, object] | None:
    """Power over time for the report: ``{"t_s": [...], "rails": {name: [W, ...]}}``, times from t0.

    Only samples inside [t0, t1] are kept, evenly thinned to ``MAX_TRACE_POINTS``; None with fewer
    than two samples (nothing to draw).
    """
    inside = [i for i, t in enumerate(times) if t0 <= t <= t1]
    if len(inside) < 2:
        return None
    step = max(1, -(-len(inside) // MAX_TRACE_POINTS))
    keep = inside[::step]
    return {
        "t_s": [round(times[i] - t0, 4) for i in keep],
        "rails": {name: [_rounded(v[i]) for i in keep] for name, v in rails.items()},
    }


def counter_power(
    times: Sequence[float], readings: Sequence[float], wrap: float | None, per_second: float
) -> list[float | None]:
    """Average power between consecutive readings of an energy counter (the first point has none).

    ``per_second`` converts counter units per second to watts (1e-6 for RAPL's microjoules).
    """
    out: list[float | None] = [None]
    for (ta, a), (tb, b) in itertools.pairwise(zip(times, readings, strict=True)):
        step = b - a
        if step < 0:
            step = step + wrap if wrap is not None else math.nan
        out.append(step * per_second / (tb - ta) if tb > ta and math.isfinite(step) else None)
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
