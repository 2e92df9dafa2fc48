"""``auto``'s model-level vote: another rule replaces the per-tensor choice only on a held-out lead
that does not hinge on one sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from calibration.select import (
    _cosines,
    _sample_sums,
    _vote_winner,
    drop_one_margins,
    output_cosine,
    sample_wins,
)

SAMPLES, WIDTH = 8, 64


def _outputs(ref: np.ndarray, rel_error: np.ndarray, seed: int) -> np.ndarray:
    """``ref`` with noise of the given relative size per sample (row)."""
    noise = np.random.default_rng(seed).standard_normal(ref.shape)
    noise *= (rel_error * np.linalg.norm(ref, axis=1) / np.linalg.norm(noise, axis=1))[:, None]
    return ref + noise


def _vote(reference: np.ndarray, candidates: dict[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    ref = [[reference]]
    scores = {k: output_cosine(ref, [[c]]) for k, c in candidates.items()}
    per_sample = {k: _sample_sums(ref, [[c]], [SAMPLES]) for k, c in candidates.items()}
    return _vote_winner(scores, drop_one_margins(per_sample), sample_wins(per_sample)), scores


def test_vote_keeps_per_tensor_when_one_loud_sample_carries_the_alternatives_lead() -> None:
    reference = np.random.default_rng(0).standard_normal((SAMPLES, WIDTH))
    reference[0] *= 10.0  # one loud sample: 100x the energy of each other one
    per_tensor = _outputs(reference, np.r_[0.2, np.full(SAMPLES - 1, 0.01)], 1)
    clipping = _outputs(reference, np.r_[0.01, np.full(SAMPLES - 1, 0.05)], 2)  # worse on 7 of 8
    winner, scores = _vote(reference, {"per-tensor": per_tensor, "max": clipping})
    assert scores["max"] > scores["per-tensor"]  # the pooled cosine alone would pick max
    assert winner == "per-tensor"


def test_vote_takes_a_rule_that_leads_on_every_sample() -> None:
    reference = np.random.default_rng(0).standard_normal((SAMPLES, WIDTH))
    reference[0] *= 10.0
    per_tensor = _outputs(reference, np.full(SAMPLES, 0.05), 1)
    better = _outputs(reference, np.full(SAMPLES, 0.02), 2)
    worse = _outputs(reference, np.full(SAMPLES, 0.08), 3)
    winner, _ = _vote(reference, {"per-tensor": per_tensor, "max": worse, "percentile": better})
    assert winner == "percentile"


def test_vote_drops_a_rule_with_non_finite_outputs() -> None:
    reference = np.random.default_rng(0).standard_normal((SAMPLES, WIDTH))
    broken = reference.copy()
    broken[3, 5] = np.inf
    per_tensor = _outputs(reference, np.full(SAMPLES, 0.05), 1)
    winner, _ = _vote(reference, {"per-tensor": per_tensor, "mse": broken})
    assert winner == "per-tensor"


def test_sample_sums_split_a_recurrent_state_along_its_batch_axis() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((SAMPLES, 1))
    state = rng.standard_normal((2, SAMPLES, 16))  # [layers, batch, hidden]
    got_logits, got_state = logits + 0.1, state * 0.9 + 0.1
    sums = _sample_sums([[logits, state]], [[got_logits, got_state]], [SAMPLES])
    assert sums is not None and sums.shape == (SAMPLES, 2, 3)
    r, c = state[:, 3], got_state[:, 3]
    assert np.allclose(sums[3, 1], [(r * c).sum(), (r * r).sum(), (c * c).sum()])
    assert np.isclose(_cosines(sums.sum(0)), output_cosine([[logits, state]], [[got_logits, got_state]]))
    pooled = rng.standard_normal((3, 5))  # no axis of the batch's size: the batch is one unit
    one = _sample_sums([[logits, pooled]], [[got_logits, pooled]], [SAMPLES])
    assert one is not None and one.shape == (1, 2, 3)


def test_sample_sums_take_a_0d_output_as_one_unit() -> None:
    """A model with a 0-d output (a mean loss, a count) crashed auto's vote with numpy's AxisError:
    the batch is then one unit, as for an output without an axis of the batch's size."""
    rng = np.random.default_rng(0)
    logits, mean = rng.standard_normal((SAMPLES, 4)), np.asarray(rng.standard_normal())
    sums = _sample_sums([[logits, mean]], [[logits * 0.9, mean * 1.1]], [SAMPLES])
    assert sums is not None and sums.shape == (1, 2, 3)
    assert np.allclose(sums[0, 1], [mean * mean * 1.1, mean * mean, (mean * 1.1) ** 2])
    alone = _sample_sums([[mean]], [[mean]], [SAMPLES])
    assert alone is not None and np.isclose(_cosines(alone.sum(0)), 1.0)


def test_vote_takes_a_lead_one_sample_makes_while_the_others_tie() -> None:
    reference = np.random.default_rng(0).standard_normal((SAMPLES, WIDTH)) * 0.01
    reference[:, 0] = 10.0  # saturated: every candidate gets these samples right
    reference[-1] = np.random.default_rng(1).standard_normal(WIDTH)  # the one uncertain sample
    exact = np.zeros(SAMPLES)
    per_tensor = _outputs(reference, np.r_[exact[:-1], 0.05], 1)
    rule = _outputs(reference, np.r_[exact[:-1], 0.01], 2)
    winner, scores = _vote(reference, {"per-tensor": per_tensor, "max": rule})
    assert scores["max"] > scores["per-tensor"] and winner == "max"


def test_vote_takes_a_lead_one_sample_makes_when_the_rule_is_closer_on_most_samples() -> None:
    reference = np.random.default_rng(0).standard_normal((SAMPLES, WIDTH))
    per_tensor = _outputs(reference, np.r_[0.08, np.full(SAMPLES - 1, 0.02)], 1)
    rule = _outputs(reference, np.r_[0.01, np.full(4, 0.018), np.full(3, 0.03)], 2)  # better on 5 of 8
    per_sample = {
        k: _sample_sums([[reference]], [[c]], [SAMPLES])
        for k, c in (("per-tensor", per_tensor), ("mse", rule))
    }
    assert drop_one_margins(per_sample)["mse"] < -1e-5  # without sample 0 the per-tensor choice leads
    winner, _ = _vote(reference, {"per-tensor": per_tensor, "mse": rule})
    assert winner == "mse"


def test_output_cosine_reads_exactly_1_for_identical_outputs_and_stays_within_1() -> None:
    """auto's cosine (calibration's copy of compare's, see select.cosine_of) read 0.9999999999999999 or
    1.0000000000000002 for a bit-identical copy, where compare reads 1.0."""
    from edgedeploy.device.verify_outputs import cosine_of

    many = np.full(1000, 0.1, np.float32)  # dot / (norm * norm) rounds to 1.0000000000000002
    assert output_cosine([[many]], [[many.copy()]]) == 1.0
    rows = np.random.default_rng(0).standard_normal(1000).astype(np.float32)  # rounds to 0.9999999999999999
    assert output_cosine([[rows]], [[rows.copy()]]) == 1.0
    assert output_cosine([[many]], [[many * np.float32(3)]]) <= 1.0
    assert output_cosine([[rows]], [[-rows]]) >= -1.0
    for a, b in ((rows, rows * np.float32(1.5) + 0.1), (many, many * 3), (np.zeros(4), np.full(4, 1e-9))):
        r, c = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert output_cosine([[a]], [[b]]) == cosine_of(r, c, equal=bool(np.array_equal(r, c)))


def test_per_sample_cosines_of_the_vote_stay_within_1_and_read_exactly_1_for_identical_outputs() -> None:
    """The vote's per-sample and pooled cosines (select._cosines, from the sums r.c, r.r, c.c) read
    1.0000000000000002 for an output 3x the reference and -1.0000000000000002 for -3x, beyond
    compare's and output_cosine's [-1, 1]; they are clamped as select.cosine_of is, and a
    bit-identical output reads exactly 1."""
    rows = np.random.default_rng(111).standard_normal((2, 8)).astype(np.float32)
    for k in (3, -3):
        sums = _sample_sums([[rows]], [[rows * np.float32(k)]], [2])
        assert sums is not None
        for cos in (_cosines(sums), _cosines(sums.sum(0)), _cosines(sums.sum(0) - sums)):
            assert np.all(np.abs(cos) <= 1.0), cos
    same = _sample_sums([[rows]], [[rows.copy()]], [2])
    assert same is not None
    assert np.all(_cosines(same) == 1.0) and np.all(_cosines(same.sum(0) - same) == 1.0)


def _cosine_the_long_way(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """output_cosine as it was before the reference's side was kept: both sides made per call."""
    from calibration.select import cosine_of

    worst = 1.0
    for k in range(len(reference[0])):
        r = np.concatenate([np.asarray(b[k], np.float64).ravel() for b in reference])
        c = np.concatenate([np.asarray(b[k], np.float64).ravel() for b in candidate])
        if not np.all(np.isfinite(c)):
            return -1.0
        worst = min(worst, cosine_of(r, c, equal=bool(np.array_equal(r, c))))
    return worst


def test_the_reference_side_of_the_held_out_cosine_is_made_once_per_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every candidate, screening round and variant of a calibration is compared with the same FP32
    held-out outputs: their float64 vector and norm are made once per reference (and once per
    slice of it, the screen's first half), not once per comparison, with the same figures to the
    bit as both sides made per call, for different, equal, all-zero and non-finite candidates."""
    rng = np.random.default_rng(7)
    reference = [
        [rng.standard_normal((20, 1, 50)).astype(np.float32), rng.standard_normal((1, 6)).astype(np.float32)]
        for _ in range(6)
    ]
    candidates = [
        [[(a + rng.normal(0, s, a.shape)).astype(np.float32) for a in feed] for feed in reference]
        for s in (0.01, 0.1, 1.0)
    ]
    candidates.append([[a.copy() for a in feed] for feed in reference])  # equal: exactly 1
    candidates.append([[np.zeros_like(a) for a in feed] for feed in reference])  # all zeros: 0
    broken = [[a.copy() for a in feed] for feed in reference]
    broken[2][1][0, 3] = np.nan
    candidates.append(broken)  # -1
    norms: list[int] = []
    real = np.linalg.norm

    def counted(x: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        norms.append(x.size)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "norm", counted)
    want = [_cosine_the_long_way(reference, c) for c in candidates]
    want += [_cosine_the_long_way(reference[:3], c[:3]) for c in candidates]
    the_long_way = len(norms)
    got = [output_cosine(reference, c) for c in candidates]
    got += [output_cosine(reference[:3], c[:3]) for c in candidates]
    assert got == want  # to the bit
    assert want[3] == 1.0 and want[4] == 0.0 and want[5] == -1.0
    # one norm per comparison (the candidate's) instead of two, and the reference's four vectors
    # (two outputs, of the whole reference and of its first half) once each
    assert len(norms) - the_long_way == the_long_way // 2 + 4
