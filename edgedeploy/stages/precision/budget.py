"""Accuracy budgets: keep the fewest, most sensitive layers in higher precision until the budget is met.

``--accuracy-budget "cosine>=0.999,top1>=0.99"`` (also ``max_abs<=X`` and ``snr>=DB``) is
checked on the model outputs against fp32. The search, for fp16 and INT8 alike:

1. measure the artifact as built (step 0); stop if it meets the budget;
2. rank every candidate layer by measured sensitivity. Up to ``max_candidates`` layers: the
   accuracy with *only that layer* in low precision (everything else kept high), the per-layer
   sensitivity Polygraphy's ``debug precision`` and Model Optimizer rank layers by, one
   measurement per layer. Beyond that (a real detector has 80+ convolutions): the error each
   layer adds over its inputs in the low-precision model, from one per-layer comparison on the
   data; every layer is ranked, none is left out;
3. keep layers in higher precision, most sensitive first (one more per step, then doubling),
   measuring after each step, until the budget is met; then bisect between the last two
   counts for the shortest prefix that meets it, and drop every kept layer whose removal still
   meets it (least sensitive first), so the result is the fewest layers the measurements allow.
   The last step keeps every candidate, the full-precision fallback. If even that misses the
   budget, :class:`GateFailed` (exit 1). The result counts the measurements it took (its cost).

fp16 variants are measured through the CPU emulation of fp16 storage (ONNX Runtime's CPU
kernels would compute them in fp32); INT8 variants are real Q/DQ models run by ONNX Runtime,
made by ``make_int8`` with the kept layers excluded from quantization.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.sources import Feed
from edgedeploy.errors import GateFailed, InputError
from edgedeploy.onnxio import load_onnx
from edgedeploy.stages.compare import Gates, output_metrics
from edgedeploy.stages.compare.layers import compare_layers
from edgedeploy.stages.precision.analysis import load_for_analysis
from edgedeploy.stages.precision.emulate import converter_blocked_ops, emulate_fp16, fp16_node_names

METRICS = {"cosine": ">=", "top1": ">=", "max_abs": "<=", "snr": ">="}
# Bounds a budget can meaningfully ask for: outside them no model, or every model, meets it.
BOUNDS = {"cosine": (-1.0, 1.0), "top1": (0.0, 1.0), "max_abs": (0.0, math.inf), "snr": (-math.inf, math.inf)}
ALIASES = {"cos": "cosine", "top-1": "top1", "top1_agreement": "top1", "maxabs": "max_abs", "snr_db": "snr"}
# Data movement: never worth keeping in higher precision on its own.
PASSIVE_OPS = {
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Shape",
    "Identity",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Cast",
    "Constant",
    "ConstantOfShape",
    "Expand",
    "Tile",
    "QuantizeLinear",
    "DequantizeLinear",
    "Dropout",
}
DOUBLING_AFTER = 8  # steps of one layer, then double the kept set


@dataclass(frozen=True)
class Criterion:
    metric: str
    op: str
    value: float

    def ok(self, measured: float | None) -> bool:
        if measured is None or math.isnan(measured):
            return False
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class AccuracyBudget:
    criteria: tuple[Criterion, ...]

    @classmethod
    def parse(cls, text: str) -> AccuracyBudget:
        """``"cosine>=0.999"``, several joined by commas: ``"cosine>=0.999,top1>=0.99"``."""
        criteria = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            m = re.fullmatch(r"([A-Za-z_0-9-]+)\s*(>=|<=)\s*([-+0-9.eE]+)", part)
            if not m:
                raise InputError(
                    f"--accuracy-budget: cannot read '{part}'; use e.g. cosine>=0.999, top1>=0.99, "
                    "max_abs<=0.01 or snr>=30"
                )
            metric = ALIASES.get(m.group(1).lower(), m.group(1).lower())
            if metric not in METRICS:
                raise InputError(
                    f"--accuracy-budget: unknown metric '{m.group(1)}'; use {', '.join(METRICS)}"
                )
            if m.group(2) != METRICS[metric]:
                raise InputError(
                    f"--accuracy-budget: {metric} is bounded with {METRICS[metric]}, not {m.group(2)}"
                )
            try:
                value = float(m.group(3))
            except ValueError:
                raise InputError(f"--accuracy-budget: '{m.group(3)}' is not a number") from None
            lo, hi = BOUNDS[metric]
            if not math.isfinite(value):
                raise InputError(f"--accuracy-budget: '{m.group(3)}' is not a finite number")
            if not lo < value <= hi:
                never = value > hi if METRICS[metric] == ">=" else value < lo
                raise InputError(
                    f"--accuracy-budget: {part} {'can never be met' if never else 'is met by any model'}; "
                    f"a {metric} bound lies in ({lo:g}, {hi:g}]"
                )
            criteria.append(Criterion(metric, m.group(2), value))
        if not criteria:
            raise InputError("--accuracy-budget is empty; use e.g. cosine>=0.999")
        return cls(tuple(criteria))

    def met(self, measured: dict[str, float | None]) -> bool:
        return all(c.ok(measured.get(c.metric)) for c in self.criteria)

    def shortfall(self, measured: dict[str, float | None]) -> float:
        """How far from the budget (0 when met), summed over criteria in comparable units."""
        total = 0.0
        for c in self.criteria:
            v = measured.get(c.metric)
            if v is None or math.isnan(v):
                return math.inf
            if c.metric in ("cosine", "top1"):
                total += max(0.0, c.value - v) / max(1e-12, 1.0 - c.value)
            elif c.metric == "snr":
                total += max(0.0, c.value - v) / 10.0
            else:
                total += max(0.0, v - c.value) / max(abs(c.value), 1e-12)
        return total

    def damage(self, measured: dict[str, float | None]) -> float:
        """Distance from perfect on the first criterion (bigger = worse), to rank sensitivities."""
        c = self.criteria[0]
        v = measured.get(c.metric)
        if v is None or math.isnan(v):
            return math.inf
        return {"cosine": 1.0 - v, "top1": 1.0 - v, "snr": -v}.get(c.metric, v)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.criteria)


class OutputEvaluator:
    """Runs the fp32 reference once, then measures any candidate graph's outputs against it."""

    def __init__(
        self,
        reference: onnx.ModelProto,
        feeds: Sequence[Feed],
        threads: int | None = None,
        outputs: list[list[np.ndarray]] | None = None,
        emulate_integer: bool = False,
    ) -> None:
        """``emulate_integer``: run the candidates with their integer kernels emulated in float, for
        a target whose kernels this CPU lacks (see ``make_int8``'s ``emulate_integer_for``)."""
        self.emulate_integer = emulate_integer
        self.feeds = list(feeds)
        if not self.feeds:
            raise InputError("the accuracy budget needs data, and the data source gave none")
        self.threads = threads
        # ``outputs``: the reference's outputs on ``feeds`` when the caller has them already
        self.reference = (
            outputs if outputs is not None and len(outputs) == len(self.feeds) else self.run(reference)
        )

    def run(self, model: onnx.ModelProto) -> list[list[np.ndarray]]:
        import onnxruntime as ort

        from edgedeploy.backends.onnxruntime import PROVIDERS, session_options

        # emulate_integer has no effect on the float reference
        options = session_options(self.threads, emulate_integer=self.emulate_integer)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=PROVIDERS)
        names = {i.name for i in session.get_inputs()}
        return [session.run(None, {k: v for k, v in feed.items() if k in names}) for feed in self.feeds]

    def measure(self, model: onnx.ModelProto) -> dict[str, float | None]:
        return self.score(self.run(model))

    def score(self, cand: list[list[np.ndarray]]) -> dict[str, float | None]:
        """A candidate's outputs (per feed, per output) against the reference."""
        measured: dict[str, list[float]] = {"cosine": [], "top1": [], "max_abs": [], "snr": []}
        for i in range(len(self.reference[0])):
            m = output_metrics(
                f"output{i}", [r[i] for r in self.reference], [c[i] for c in cand], Gates(min_cosine=None)
            )
            # NaN/Inf in the candidate fails every criterion (NaN would compare as neither side of a bound)
            nonfinite = bool(m.nan_count or m.inf_count)
            measured["cosine"].append(-math.inf if nonfinite else m.cosine)
            measured["max_abs"].append(math.inf if nonfinite else m.max_abs)
            measured["snr"].append(-math.inf if nonfinite else math.inf if m.snr_db is None else m.snr_db)
            if m.top1_agreement is not None:
                measured["top1"].append(m.top1_agreement)
        return {
            "cosine": min(measured["cosine"]),
            "top1": min(measured["top1"]) if measured["top1"] else None,
            "max_abs": max(measured["max_abs"]),
            "snr": min(measured["snr"]),
        }


@dataclass
class BudgetStep:
    kept: list[str]  # layers kept in higher precision at this step
    measured: dict[str, float | None]
    met: bool


@dataclass
class BudgetResult:
    budget: str
    precision: str
    higher: str  # what "kept" means: fp32, or fp32 (not quantized)
    met: bool
    kept: list[str]
    candidates: int
    sensitivity: list[dict[str, Any]]  # per layer: measured with only that layer in low precision
    steps: list[BudgetStep]
    seconds: float
    notes: list[str] = field(default_factory=list)
    measurements: int = 0  # model variants built and measured (the search's cost)
    ranking: str = ""  # how layers were ranked: "one at a time" or "per-layer error growth"


Measure = Callable[[Sequence[str]], dict[str, float | None]]


def search(
    budget: AccuracyBudget,
    candidates: Sequence[str],
    measure: Measure,
    *,
    precision: str,
    higher: str,
    max_candidates: int = 32,
    prerank: Callable[[], list[str]] | None = None,
    fallback: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> BudgetResult:
    """Greedy search over ``candidates``; ``measure(kept)`` returns the output metrics with ``kept``
    in higher precision. ``met`` is False when the full fallback misses the budget too (see check_met)."""
    start = time.perf_counter()
    notes: list[str] = []
    count_measure = [0]

    def measure_counted(kept: Sequence[str]) -> dict[str, float | None]:
        count_measure[0] += 1
        return measure(kept)

    first = measure_counted([])
    if any(c.metric == "top1" for c in budget.criteria) and first.get("top1") is None:
        raise InputError("--accuracy-budget top1 needs an output shaped (batch, classes)")
    steps = [BudgetStep([], first, budget.met(first))]
    ranking = ""

    def finish(met: bool, kept: list[str], sensitivity: list[dict[str, Any]]) -> BudgetResult:
        seconds = time.perf_counter() - start
        return BudgetResult(str(budget), precision, higher, met, kept, len(candidates), sensitivity, steps,
                            seconds, notes, count_measure[0], ranking)  # fmt: skip

    progress(f"as built: {_fmt(first)}")
    if steps[0].met:
        return finish(True, [], [])
    sensitivity: list[dict[str, Any]] = []
    if len(candidates) > max_candidates and prerank is not None:
        ranking = "per-layer error growth"
        pool = set(candidates)
        ranked = [c for c in prerank() if c in pool]
        order = ranked + [c for c in candidates if c not in set(ranked)]
        notes.append(
            f"{len(candidates)} candidate layers: all ranked by the error each adds over its inputs "
            "(one per-layer comparison), not one measurement per layer"
        )
    else:
        ranking = "one at a time"
        ranked_layers: list[tuple[float, str]] = []
        for name in candidates:
            alone = measure_counted([c for c in candidates if c != name])
            ranked_layers.append((budget.damage(alone), name))
            sensitivity.append({"layer": name, "damage": budget.damage(alone), **alone})
        ranked_layers.sort(key=lambda item: item[0], reverse=True)
        sensitivity.sort(key=lambda item: float(item["damage"]), reverse=True)
        order = [name for _, name in ranked_layers]
    progress("most sensitive: " + ", ".join(order[:5]))

    def step(kept: Sequence[str]) -> bool:
        result = measure_counted(kept)
        steps.append(BudgetStep(list(kept), result, budget.met(result)))
        progress(f"keeping {len(kept)} layer(s) in {higher}: {_fmt(result)}")
        return steps[-1].met

    count, below = 1, 0
    found: list[str] | None = None
    while count <= len(order):
        if step(order[:count]):
            found = order[:count]
            break
        if count == len(order):
            break
        below = count
        count = count + 1 if count < DOUBLING_AFTER else min(len(order), count * 2)
    if found is not None:
        low, high = below, len(found)  # prefix of `low` misses, of `high` meets
        while high - low > 1:
            mid = (low + high) // 2
            if step(order[:mid]):
                high = mid
            else:
                low = mid
        kept = list(order[:high])
        for name in reversed(order[: high - 1]):  # least sensitive first; the last one added is needed
            trial = [k for k in kept if k != name]
            if trial and step(trial):
                kept = trial
        if steps[-1].kept != kept:
            step(kept)
        return finish(True, kept, sensitivity)
    if fallback is not None and set(fallback) - set(order):  # the full-precision fallback: every node
        result = measure_counted(list(fallback))
        steps.append(BudgetStep(list(fallback), result, budget.met(result)))
        progress(f"full fallback, {len(fallback)} nodes in {higher}: {_fmt(result)}")
        if steps[-1].met:
            return finish(True, list(fallback), sensitivity)
    notes.append(f"not met even with all {len(steps[-1].kept)} layers in {higher}")
    return finish(False, list(steps[-1].kept), sensitivity)


def check_met(result: BudgetResult) -> None:
    """GateFailed (exit 1) when the budget was not met even by the full-precision fallback."""
    if not result.met:
        last = result.steps[-1]
        raise GateFailed(
            f"accuracy budget {result.budget} is not met even with all {len(last.kept)} candidate "
            f"layers in {result.higher} ({_fmt(last.measured)})"
        )


def _fmt(measured: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.6g}" for k, v in measured.items() if v is not None)


def fp16_budget(
    model_path: Path,
    base_fp32: Sequence[str],
    budget: AccuracyBudget,
    feeds: Sequence[Feed],
    *,
    blocked_ops: Sequence[str] | None = None,
    max_candidates: int = 32,
    keep_io_types: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> BudgetResult:
    """Which extra nodes to keep in fp32 (on top of ``base_fp32``) to meet ``budget`` in fp16."""

    model = load_for_analysis(model_path)
    blocked = converter_blocked_ops() if blocked_ops is None else set(blocked_ops)
    evaluator = OutputEvaluator(model, feeds)
    base = set(base_fp32)
    candidates = [
        n.name
        for n in model.graph.node
        if n.name in set(fp16_node_names(model, base, blocked)) and n.op_type not in PASSIVE_OPS
    ]

    def measure(kept: Sequence[str]) -> dict[str, float | None]:
        return evaluator.measure(emulate_fp16(model, base | set(kept), blocked, round_io=not keep_io_types))

    def prerank() -> list[str]:
        emulated = emulate_fp16(model, base, blocked, round_io=not keep_io_types)
        return _rank_by_growth(model, compare_layers(model, emulated, feeds[:4], emulate=False).layers)

    return search(
        budget,
        candidates,
        measure,
        precision="fp16",
        higher="fp32",
        max_candidates=max_candidates,
        prerank=prerank,
        fallback=[n.name for n in model.graph.node],
        progress=progress,
    )


def int8_budget(
    model_path: Path,
    make: Callable[[Sequence[str]], Path],
    quantized: Sequence[str],
    budget: AccuracyBudget,
    feeds: Sequence[Feed],
    *,
    max_candidates: int = 16,
    progress: Callable[[str], None] = lambda _m: None,
    emulate_integer: bool = False,
) -> BudgetResult:
    """Which quantized layers to leave unquantized to meet ``budget``; ``make(excluded)`` writes a
    Q/DQ model with those layers excluded and returns its path (``make_int8`` with exclude_nodes;
    ``emulate_integer``: see :class:`OutputEvaluator`)."""

    reference = load_onnx(model_path)
    evaluator = OutputEvaluator(reference, feeds, emulate_integer=emulate_integer)

    def measure(kept: Sequence[str]) -> dict[str, float | None]:
        return evaluator.measure(load_onnx(make(list(kept))))

    def prerank() -> list[str]:

        layers = compare_layers(reference, load_onnx(make([])), feeds[:4], emulate=False).layers
        return _rank_by_growth(reference, layers)

    return search(
        budget,
        list(quantized),
        measure,
        precision="int8",
        higher="fp32 (not quantized)",
        max_candidates=max_candidates,
        prerank=prerank,
        progress=progress,
    )


def _rank_by_growth(model: onnx.ModelProto, layers: Sequence[Any]) -> list[str]:
    """Nodes ordered by how much error their output adds over their inputs' (a cheap sensitivity)."""
    err = {e.tensor: (2.0 if math.isnan(e.cosine) else 1.0 - e.cosine) for e in layers}
    growth = {}
    for node in model.graph.node:
        out = max((err.get(o, 0.0) for o in node.output), default=0.0)
        inp = max((err.get(i, 0.0) for i in node.input), default=0.0)
        growth[node.name] = out - inp
    return sorted(growth, key=lambda n: growth[n], reverse=True)
