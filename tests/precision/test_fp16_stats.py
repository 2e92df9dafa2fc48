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


def test_range_counts_skip_the_passes_the_smallest_magnitude_rules_out(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch whose smallest non-zero magnitude is a normal fp16 number has no subnormal and no
    flushed value: Fp16Stats counts neither with a pass over the values (one count_nonzero, for
    the zeros); one above 2**-24 has no flushed value (two). The figures stay the slow path's."""
    calls = []
    count_nonzero = np.count_nonzero
    monkeypatch.setattr(np, "count_nonzero", lambda *a, **k: calls.append(1) or count_nonzero(*a, **k))
    cases = [
        (np.array([0.0, 1.0, -2.5, 3e-4, 7.0], np.float32), 1),  # smallest 3e-4: normal in fp16
        (np.array([0.0, 1.0, -3e-5, 7.0], np.float32), 2),  # a subnormal, none flushed
        (np.array([0.0, 1.0, -3e-5, 1e-9], np.float32), 3),  # a flushed one
    ]
    for values, passes in cases:
        calls.clear()
        fast, slow = Fp16Stats(), Fp16Stats()
        fast.add(values)
        assert len(calls) == passes
        slow._add_slow(values)
        assert fast.figures() == slow.figures()


def test_a_tensor_without_zeros_is_counted_without_a_zero_count_pass(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Most activations hold no exact zero (SiLU, GELU, softmax, convolutions): their smallest
    magnitude is the smallest non-zero one, so Fp16Stats makes no count_nonzero pass for zeros;
    once a tensor showed zeros, its later batches are counted as before. Figures as the slow path's,
    batch after batch."""
    calls = []
    count_nonzero = np.count_nonzero
    monkeypatch.setattr(np, "count_nonzero", lambda *a, **k: calls.append(1) or count_nonzero(*a, **k))
    batches = [
        (np.array([1.0, -2.5, 3e-4, 7.0], np.float32), 0),
        (np.array([1.0, -3e-5, 7e4], np.float32), 2),  # a subnormal and an overflow: their counts
        (np.array([0.0, 1.0, -2.0], np.float32), 1),  # the first zeros
        (np.array([1.0, 2.0], np.float32), 1),  # after zeros, counted as before
        (np.array([0.0, -0.0], np.float32), 1),
    ]
    fast, slow = Fp16Stats(), Fp16Stats()
    for values, passes in batches:
        calls.clear()
        fast.add(values)
        assert len(calls) == passes
        slow._add_slow(values)
        assert fast.figures() == slow.figures()
