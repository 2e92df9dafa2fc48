"""The accuracy-budget search on measurements made up for the purpose: what it ranks, keeps,
tries and counts, without a model to build (the builds are in test_budget_layerwise.py)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from calibration.modelinfo import TensorSpec
from edgedeploy.stages.precision.budget import AccuracyBudget, may_hold_scores, search


def _additive(damages: dict[str, float]):  # type: ignore[no-untyped-def]
    """Output cosine when every layer not kept adds its own damage (1 - cosine)."""

    def measure(kept: Sequence[str]) -> dict[str, float | None]:
        return {"cosine": 1.0 - sum(d for name, d in damages.items() if name not in kept)}

    return measure


def test_every_one_of_forty_layers_is_ranked_by_its_own_measurement_and_the_fewest_are_kept() -> None:
    damages = {"big": 0.02, "second": 0.015, "third": 0.01, "fourth": 0.008, "fifth": 0.005}
    damages |= {f"small{k}": 0.0005 for k in range(35)}  # 40 layers in all: past any fixed cap
    names = list(damages)
    random.Random(3).shuffle(names)
    calls: list[int] = []
    measure = _additive(damages)

    def probe(kept: Sequence[str]) -> dict[str, float | None]:
        calls.append(len(kept))
        return measure(kept)

    result = search(
        AccuracyBudget.parse("cosine>=0.95"), names, measure, precision="int8", higher="fp32",
        probe=probe, probe_samples=8,
    )  # fmt: skip
    # 0.0825 in all: keeping the two largest leaves 0.0475 <= 0.05, the largest alone 0.0625
    assert result.met and result.kept == ["big", "second"]
    assert len(calls) == 40 and set(calls) == {39}  # each layer alone in int8, once
    assert result.probe_measurements == 40 and result.ranking == "one at a time on 8 sample(s)"
    assert [s["layer"] for s in result.sensitivity[:3]] == ["big", "second", "third"]
    # as built, then 1 (misses) and 2 (meets); dropping "big" is measured (misses), dropping
    # "second" leaves the prefix of 1, measured already; the result is the last step
    assert result.measurements == 4
    assert [len(s.kept) for s in result.steps] == [0, 1, 2, 1, 2]
    assert any("no kept layer can be dropped" in note and "1 drop trial(s)" in note for note in result.notes)


def test_a_layer_the_ranking_overrates_is_dropped_after_the_prefix_is_found() -> None:
    # on the ranking's few samples "noisy" looks worse than "c"; on all of them it costs nothing
    full = _additive({"a": 0.03, "noisy": 0.0, "c": 0.02, "d": 0.001})
    few = _additive({"a": 0.03, "noisy": 0.006, "c": 0.005, "d": 0.001})
    result = search(
        AccuracyBudget.parse("cosine>=0.99"), ["d", "c", "noisy", "a"], full, precision="int8",
        higher="fp32", probe=few, probe_samples=2,
    )  # fmt: skip
    assert result.met and sorted(result.kept) == ["a", "c"]
    tried = [s.kept for s in result.steps]
    # prefixes a, a+noisy, a+noisy+c (met: 0.999); dropping c leaves a+noisy (measured: misses),
    # noisy is dropped (a+c: 0.999), a is tried and missed (c alone: 0.97); the result last
    assert tried == [[], ["a"], ["a", "noisy"], ["a", "noisy", "c"], ["a", "c"], ["c"], ["a", "c"]]


def test_the_budget_met_as_built_measures_nothing_else() -> None:
    result = search(
        AccuracyBudget.parse("cosine>=0.9"), ["a", "b"], _additive({"a": 0.01, "b": 0.01}),
        precision="fp16", higher="fp32",
    )  # fmt: skip
    assert result.met and result.kept == [] and result.measurements == 1 and result.probe_measurements == 0


def test_a_layer_that_hurts_only_an_output_with_room_is_dropped() -> None:
    """ "side" costs its own output 0.009 and leaves the output at the bound untouched: it is dropped
    though 0.009 is more than the worst output's room."""
    hurts = {"a": (0.03, 0.0), "b": (0.008, 0.0), "c": (0.006, 0.0), "side": (0.0, 0.009)}

    def measure(kept: Sequence[str]) -> dict[str, object]:
        per = [1.0 - sum(d[k] for name, d in hurts.items() if name not in kept) for k in range(2)]
        return {"cosine": min(per), "outputs": per}

    result = search(
        AccuracyBudget.parse("cosine>=0.99"), list(hurts), measure, precision="int8", higher="fp32"
    )
    assert [s["layer"] for s in result.sensitivity] == ["a", "side", "b", "c"]
    # a, a+side, a+side+b (met: 0.994 / 1.0); side dropped (0.994 / 0.991); a and b are needed
    assert [s.kept for s in result.steps[1:5]] == [["a"], ["a", "side"], ["a", "side", "b"], ["a", "b"]]
    assert result.met and result.kept == ["a", "b"]
    assert result.steps[-1].outputs == pytest.approx([0.994, 0.991])
    assert result.sensitivity[1]["outputs"] == pytest.approx([1.0, 0.991])


def test_a_budget_is_recorded_and_shown_exactly_not_rounded_to_six_digits() -> None:
    """``cosine>=0.99999999`` was recorded as ``cosine>=1``, the key a search is reused by: a run
    for it reused the search made for ``cosine>=0.9999995`` and passed on a cosine of 0.9999997,
    printed as "cosine 1"."""
    from edgedeploy.stages.precision.budget import AccuracyBudget, measured_figure

    strict, loose = AccuracyBudget.parse("cosine>=0.99999999"), AccuracyBudget.parse("cosine>=0.9999995")
    assert (str(strict), str(loose)) == ("cosine>=0.99999999", "cosine>=0.9999995")
    assert str(AccuracyBudget.parse("cosine>=0.99,snr>=30")) == "cosine>=0.99,snr>=30"
    assert AccuracyBudget.parse(str(strict)) == strict
    assert measured_figure(0.99999969) == "0.99999969" and measured_figure(0.9912345678) == "0.991235"
    assert measured_figure(62.0612345) == "62.0612"


def test_which_declared_outputs_may_hold_the_scores_a_top1_bound_measures() -> None:
    """As compare measures top-1 (2 dims, at least 2 classes, not integers): a dim or rank the
    model leaves open may turn out so, and only what cannot is refused before the build."""
    may = [
        TensorSpec("logits", ("N", 10), "float32"),
        TensorSpec("logits", (1, "classes"), "float16"),
        TensorSpec("logits", ("N", None), "float32"),
        TensorSpec("anything", (), "float32", rank_known=False),
    ]
    cannot = [
        TensorSpec("map", ("N", 4, 16, 16), "float32"),
        TensorSpec("score", ("N", 1), "float32"),
        TensorSpec("flat", ("N",), "float32"),
        TensorSpec("labels", ("N", 10), "int64"),
        TensorSpec("mask", ("N", 10), "bool"),
        TensorSpec("boxes", (), "float32", kind="seq(tensor(float))"),
    ]
    assert all(may_hold_scores(s) for s in may)
    assert not any(may_hold_scores(s) for s in cannot)


def test_a_top1_bound_may_name_one_output_as_compares_min_top1(tmp_path: Path) -> None:
    """A budget's top1 bounded the worst argmax agreement over every 2-D float output, an
    embedding's meaningless one too; ``top1>=logits:0.99`` bounds the output named only, as
    compare's --min-top1 logits:0.99 does (the search's reuse key keeps the name)."""
    import numpy as np
    import onnx

    from edgedeploy.errors import InputError
    from edgedeploy.stages.precision.budget import OutputEvaluator, refuse_top1_without_scores
    from tests.test_compare import _logits_and_embedding

    budget = AccuracyBudget.parse("cosine>=0.99,top1>=logits:0.99")
    assert str(budget) == "cosine>=0.99,top1>=logits:0.99"
    assert str(AccuracyBudget.parse("top1 >= onnx::Gemm:0.9")) == "top1>=onnx::Gemm:0.9"
    with pytest.raises(InputError, match="only top1 is bounded per output"):
        AccuracyBudget.parse("cosine>=logits:0.99")
    ref, cand = _logits_and_embedding(tmp_path)
    refuse_top1_without_scores(budget, ref)
    with pytest.raises(InputError, match="has no output named 'logit' \\(its outputs: logits, embedding\\)"):
        refuse_top1_without_scores(AccuracyBudget.parse("top1>=logit:0.99"), ref)
    feeds = [{"x": np.random.default_rng(1).standard_normal((256, 16)).astype(np.float32)}]
    measured = OutputEvaluator(onnx.load(ref), feeds).measure(onnx.load(cand))
    assert measured["top1:logits"] == 1.0 and measured["top1"] < 0.99  # the embedding's argmax
    assert budget.met(measured) and not AccuracyBudget.parse("cosine>=0.99,top1>=0.99").met(measured)


def test_a_bare_top1_bound_beside_named_ones_bounds_the_outputs_they_do_not_name(tmp_path: Path) -> None:
    """As compare's --min-top1 0.9 aux:0.5 (Polygraphy's default beside per-output values), a budget
    "top1>=0.9,top1>=aux:0.5" holds aux to 0.5 and every other output to 0.9; the bare bound was the
    worst over every output, aux included, so aux's 0.6 missed a budget that names aux at 0.5."""
    figures = {"cosine": 0.999, "top1": 0.6, "top1:logits": 0.95, "top1:aux": 0.6, "top1:other": 0.92}
    result = search(
        AccuracyBudget.parse("top1>=0.9,top1>=aux:0.5"), ["a"], lambda kept: dict(figures),
        precision="int8", higher="fp32",
    )  # fmt: skip
    assert result.met and result.kept == [], result.steps
    assert result.steps[0].measured["top1"] == 0.92  # the worst output the bare bound holds
    missed = search(
        AccuracyBudget.parse("top1>=0.93,top1>=aux:0.5"), ["a"], lambda kept: dict(figures),
        precision="int8", higher="fp32",
    )  # fmt: skip
    assert not missed.steps[0].met  # "other" (0.92) is held to the bare 0.93
    from edgedeploy.errors import InputError
    from edgedeploy.stages.precision.budget import refuse_top1_without_scores
    from tests.test_compare import _logits_and_embedding

    ref, _ = _logits_and_embedding(tmp_path)
    refuse_top1_without_scores(AccuracyBudget.parse("top1>=0.9,top1>=logits:0.99"), ref)
    every = AccuracyBudget.parse("top1>=0.9,top1>=logits:0.99,top1>=embedding:0.5")
    with pytest.raises(InputError, match=r"top1>=0\.9 bounds the outputs no top1 bound names"):
        refuse_top1_without_scores(every, ref)  # it would bound nothing


def test_a_layer_the_ranking_overrates_is_tried_for_dropping_on_all_the_samples() -> None:
    """The ranking's 8 samples made "c3" look past the room the budget had left, so dropping it was
    not tried and 2 layers were kept where "fc1" alone meets the budget (a tester's model: 0.999909
    on every sample under cosine>=0.9999). Each drop is now measured on all the samples."""
    full = _additive({"c3": 0.00005, "fc1": 0.0003, "c1": 0.00001})
    few = _additive({"c3": 0.0005, "fc1": 0.0003, "c1": 0.00001})  # the first samples overrate c3
    result = search(
        AccuracyBudget.parse("cosine>=0.9999"), ["c1", "fc1", "c3"], full, precision="int8",
        higher="fp32", probe=few, probe_samples=8,
    )  # fmt: skip
    assert [s["layer"] for s in result.sensitivity] == ["c3", "fc1", "c1"]
    # as built, c3 (misses), c3+fc1 (meets), then c3 dropped: fc1 alone reads 0.99994
    assert [s.kept for s in result.steps] == [[], ["c3"], ["c3", "fc1"], ["fc1"]]
    assert result.met and result.kept == ["fc1"] and result.measurements == 4
    assert result.steps[-1].measured["cosine"] == pytest.approx(0.99994)


@pytest.mark.parametrize("seed", range(40))
def test_no_kept_layer_can_be_dropped_from_the_result(seed: int) -> None:
    """Whatever the measurements (layers whose errors interact, a ranking on samples that disagree
    with the rest), every layer the search keeps is needed: the budget is missed without it."""
    rng = random.Random(seed)
    names = [f"l{k}" for k in range(7)]
    alone = {n: rng.uniform(0.0, 0.004) for n in names}
    pairs = {(a, b): rng.uniform(-0.002, 0.003) for a in names for b in names if a < b}

    def full(kept: Sequence[str]) -> dict[str, float | None]:
        low = [n for n in names if n not in kept]
        hurt = sum(alone[n] for n in low) + sum(v for (a, b), v in pairs.items() if a in low and b in low)
        return {"cosine": 1.0 - max(0.0, hurt)}

    noise = {n: rng.uniform(0.0, 0.004) for n in names}

    def few(kept: Sequence[str]) -> dict[str, float | None]:
        return {"cosine": 1.0 - sum(noise[n] for n in names if n not in kept)}

    budget = AccuracyBudget.parse("cosine>=0.99")
    result = search(budget, names, full, precision="int8", higher="fp32", probe=few, probe_samples=8)
    assert result.met and budget.met(result.steps[-1].measured)
    assert sorted(result.steps[-1].kept) == sorted(result.kept)
    assert budget.met(full(result.kept))
    for name in result.kept:
        assert not budget.met(full([k for k in result.kept if k != name])), (name, result.kept)
