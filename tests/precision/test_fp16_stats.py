"""Fp16Stats keeps the smallest non-zero magnitude the report's FP16 range chart starts each bar at."""

from __future__ import annotations

import numpy as np

from edgedeploy.stages.precision.analysis import Fp16Stats


def test_absmin_is_the_smallest_non_zero_magnitude_over_every_batch() -> None:
    stats = Fp16Stats()
    stats.add(np.array([0.0, -3e-5, 2.0, 0.0], dtype=np.float32))
    stats.add(np.array([5.0, -1e-7], dtype=np.float32))
    stats.add(np.array([0.5], dtype=np.float32))  # no zero in this batch: the fast path
    assert np.isclose(stats.absmin, 1e-7) and stats.absmax == 5.0
    assert stats.figures()["absmin"] == stats.absmin


def test_absmin_is_none_in_the_figures_of_an_all_zero_tensor() -> None:
    stats = Fp16Stats()
    stats.add(np.zeros(4, dtype=np.float32))
    assert stats.figures()["absmin"] is None
