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


def test_flushed_overflow_and_subnormal_counts_are_what_astype_float16_makes_of_the_values() -> None:
    """Round to nearest: only |x| <= 2**-25 becomes 0 (4.5e-8 becomes 6e-8) and only |x| >= 65520
    becomes Inf (65519 becomes 65504); 2**-24 and 2**-14 were taken for those limits."""
    edges = [2.0**-25, 2.0**-24, 4.5e-8, 3e-8, 2.0**-14 - 2.0**-25, 2.0**-14 - 2.0**-24, 2.0**-14]
    edges += [65504.0, 65510.0, 65519.0, 65520.0, 7e4, 1.0, 0.0]
    rng = np.random.default_rng(0)
    spread = rng.standard_normal(4000) * 10.0 ** rng.uniform(-9, 6, 4000)
    values = np.concatenate([edges, np.negative(edges), np.nextafter(np.float32(edges), 0), spread])
    values = values.astype(np.float32)
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)
    nonzero = values != 0
    flushed = int(np.count_nonzero(nonzero & (half == 0)))
    overflow = int(np.count_nonzero(np.isinf(half)))
    subnormal = int(np.count_nonzero(nonzero & (np.abs(half) < 2.0**-14)))
    for path in ("add", "_add_slow"):
        stats = Fp16Stats()
        getattr(stats, path)(values)
        assert (stats.flushed, stats.overflow, stats.subnormal) == (flushed, overflow, subnormal), path
    assert Fp16Stats().flushed == 0
    one = Fp16Stats()
    one.add(np.array([4.5e-8, 65519.0, 2.0**-25], np.float32))
    assert (one.flushed, one.overflow) == (1, 0)
