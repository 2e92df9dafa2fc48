"""Accuracy budgets: keep the most sensitive layers in higher precision until the budget is met,
and none that can be dropped.

``--accuracy-budget "cosine>=0.999,top1>=0.99"`` (also ``max_abs<=X`` and ``snr>=DB``) is
checked on the model outputs against fp32. The search, for fp16 and INT8 alike:

1. measure the artifact as built (step 0); stop if it meets the budget;
2. rank every candidate layer by measured sensitivity: the accuracy with *only that layer* in
   low precision (everything else kept high), the per-layer sensitivity Polygraphy's ``debug
   precision`` and Model Optimizer rank layers by, one measurement per layer and no cap on the
   number of layers. These measurements run on the first ``PROBE_SAMPLES`` samples (a real
   detector has 100+ convolutions: on PP-Layout's 102, 32 pages cost 3-4 s a variant, 8 pages
   under 1 s); every decision below is measured on all the samples;
3. keep layers in higher precision, most sensitive first (one more per step, then doubling),
   measuring after each step, until the budget is met; then bisect between the last two
   counts for the shortest prefix that meets it, and try dropping each kept layer (least
   sensitive first), each trial measured on all the samples as the acceptance is, in passes
   until one drops none: no layer of the result can be dropped (without it the budget is
   missed). A ranking on few samples can overrate a layer; skipping its trial on that ranking's
   figure kept 2 layers where 1 met the budget. This is minimal against dropping any one layer,
   not the fewest layers of any set (that takes a search over the sets).
   The last step keeps every candidate, the full-precision fallback. If even that misses the
   budget, :class:`GateFailed` (exit 1). The result counts the measurements it took (its cost).

fp16 variants are measured through the CPU emulation of fp16 storage (ONNX Runtime's CPU
kernels would compute them in fp32); INT8 variants are real Q/DQ models run by ONNX Runtime,
made by ``make_int8`` with the kept layers excluded from quantization.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.feeds import Feed, feed_rows
from calibration.modelinfo import TensorSpec, graph_io, model_io
from edgedeploy.errors import GateFailed, InputError, RefusedInput
from edgedeploy.onnxio import load_onnx
from edgedeploy.stages.compare import Gates, comparable, is_compared, output_metrics
from edgedeploy.stages.precision.analysis import load_for_analysis
from edgedeploy.stages.precision.emulate import converter_blocked_ops, emulate_fp16, fp16_node_names

METRICS = {"cosine": ">=", "top1": ">=", "max_abs": "<=", "snr": ">="}
# The range of each metric; a bound lies strictly inside it or at its perfect end for >= metrics
# (cosine>=1); outside, no model or every model meets it, and max_abs<=0 asks for identical outputs.
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
PROBE_SAMPLES = 8  # samples the ranking measures each layer on (the first ones)
OUTPUTS = "outputs"  # key of a measurement's per-output cosines


@dataclass(frozen=True)
class Criterion:
    metric: str
    op: str
    value: float
    # top1 of one output (``top1>=logits:0.99``, as compare's --min-top1 NAME:VALUE); "": the worst
    # output's, over every 2-D float output
    output: str = ""

    @property
    def key(self) -> str:
        """Its figure's key in a measurement: the metric, or ``top1:NAME`` for one output's."""
        return f"{self.metric}:{self.output}" if self.output else self.metric

    def ok(self, measured: float | None) -> bool:
        if measured is None or math.isnan(measured):
            return False
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def __str__(self) -> str:  # exact: it keys the reuse of a search (cosine>=0.99999999 was "cosine>=1")
        named = f"{self.output}:" if self.output else ""
        return f"{self.metric}{self.op}{named}{figure(self.value)}"


def _out_of_range(metric: str, value: float) -> str:
    """Why a bound outside ``BOUNDS`` is refused, by the end of the range it lies at: a ``>=``
    metric's top (cosine, top1: 1) is its best value, a ``<=`` metric's bottom (max_abs: 0) is."""
    lo, hi = BOUNDS[metric]
    if METRICS[metric] == ">=":
        why = "can never be met" if value > hi else "is met by any model"
        return f"{why}; a {metric} bound lies in ({lo:g}, {hi:g}]"
    if value < lo:
        why = "can never be met"
    elif value == lo:
        why = "asks for outputs identical to fp32's, which no fp16 or int8 model gives"
    else:
        why = "is met by any model"
    return f"{why}; a {metric} bound lies in ({lo:g}, {hi:g})"


@dataclass(frozen=True)
class AccuracyBudget:
    criteria: tuple[Criterion, ...]

    @classmethod
    def parse(cls, text: str) -> AccuracyBudget:
        """``"cosine>=0.999"``, several joined by commas: ``"cosine>=0.999,top1>=0.99"``; a top1
        bound of one output names it as compare's --min-top1 does: ``"top1>=logits:0.99"``."""
        criteria = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            m = re.fullmatch(r"([A-Za-z_0-9-]+)\s*(>=|<=)\s*(?:(.+):)?\s*([-+0-9.eE]+)", part)
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
            output = m.group(3) or ""
            if output and metric != "top1":
                raise InputError(
                    f"--accuracy-budget: {part}: only top1 is bounded per output (top1>=NAME:VALUE); "
                    f"{metric} holds for every output"
                )
            try:
                value = float(m.group(4))
            except ValueError:
                raise InputError(f"--accuracy-budget: '{m.group(4)}' is not a number") from None
            lo, hi = BOUNDS[metric]
            if not math.isfinite(value):
                raise InputError(f"--accuracy-budget: '{m.group(4)}' is not a finite number")
            if not lo < value <= hi:
                raise InputError(f"--accuracy-budget: {part} {_out_of_range(metric, value)}")
            criteria.append(Criterion(metric, m.group(2), value, output))
        if not criteria:
            raise InputError("--accuracy-budget is empty; use e.g. cosine>=0.999")
        return cls(tuple(criteria))

    def met(self, measured: dict[str, float | None]) -> bool:
        return all(c.ok(measured.get(c.key)) for c in self.criteria)

    def shortfall(self, measured: dict[str, float | None]) -> float:
        """How far from the budget (0 when met), summed over criteria in comparable units."""
        total = 0.0
        for c in self.criteria:
            v = measured.get(c.key)
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
        v = measured.get(c.key)
        if v is None or math.isnan(v):
            return math.inf
        return {"cosine": 1.0 - v, "top1": 1.0 - v, "snr": -v}.get(c.metric, v)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.criteria)


def may_hold_scores(spec: TensorSpec) -> bool:
    """Whether model output ``spec`` can give a top-1 agreement, by the shape and type the model
    declares: a tensor of 2 dims whose second is not fixed below 2, not of integers or bools (what
    edgedeploy/stages/compare/outputs.py measures top-1 on). A rank the model leaves open may."""
    if spec.kind is not None:  # a sequence, map or optional
        return False
    if not spec.rank_known:
        return True
    if spec.np_dtype.kind in "biu":
        return False
    return len(spec.shape) == 2 and not (isinstance(spec.shape[1], int) and spec.shape[1] < 2)


def refuse_top1_without_scores(
    budget: AccuracyBudget,
    model: Path,
    said: str = "--accuracy-budget",
    outputs: Sequence[TensorSpec] | None = None,
) -> None:
    """InputError when ``budget`` bounds top1 and no output of ``model`` can hold (batch, classes)
    scores (:func:`may_hold_scores`), or when ``model`` has no output the budget measures (a numeric
    tensor, :func:`edgedeploy.stages.compare.is_compared`): refused before any work, where the
    search found it only after its first measurement, the calibration or fp16 conversion already
    written. ``outputs``: the model's declared outputs, when the caller has read them already. The
    callers check once per model, before the build (edgedeploy/cli/build.py,
    edgedeploy/pipeline/run.py and matrix.py)."""
    outputs = list(model_io(model)[1] if outputs is None else outputs)
    measured, others = comparable(outputs)
    if not measured:
        raise InputError(
            f"{said}: {model.name} has no tensor output to measure (its outputs: {', '.join(others)}): "
            "an accuracy budget measures numeric tensor outputs only, as compare does"
        )
    if not any(c.metric == "top1" for c in budget.criteria):
        return
    by_name = {o.name: o for o in outputs}
    for c in budget.criteria:
        if c.output and c.output not in by_name:
            raise InputError(
                f"{said} {c}: {model.name} has no output named '{c.output}' (its outputs: "
                f"{', '.join(by_name)})"
            )
        if c.output and not may_hold_scores(by_name[c.output]):
            raise InputError(
                f"{said} {c} needs (batch, classes) scores, and {model.name} gives "
                f"{by_name[c.output].describe()}; bound cosine, snr or max_abs instead"
            )
    named = {c.output for c in budget.criteria if c.metric == "top1" and c.output}
    bare = next((c for c in budget.criteria if c.metric == "top1" and not c.output), None)
    if bare is not None and named and not any(may_hold_scores(o) for o in outputs if o.name not in named):
        raise InputError(
            f"{said} {bare} bounds the outputs no top1 bound names, and {model.name} has no other "
            f"output of (batch, classes) scores than {', '.join(sorted(named))}; drop it or name outputs"
        )
    if any(may_hold_scores(o) for o in outputs):
        return
    shown = ", ".join(o.describe() for o in outputs[:4]) + (", ..." if len(outputs) > 4 else "")
    raise InputError(
        f"{said} top1 needs an output shaped (batch, classes), and {model.name} gives {shown}; "
        "bound cosine, snr or max_abs instead"
    )


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
        self.inputs, outputs_declared = graph_io(reference)  # whose batch axes count the samples (feed_rows)
        self.output_names = [o.name for o in outputs_declared]  # a top1 bound may name one
        # the outputs measured: numeric tensors, as compare's (not a string tensor or ZipMap's dicts)
        self.measured = [i for i, o in enumerate(outputs_declared) if is_compared(o)]
        self.threads = threads
        # ``outputs``: the reference's outputs on ``feeds`` when the caller has them already
        self.reference = (
            outputs if outputs is not None and len(outputs) == len(self.feeds) else self.run(reference)
        )

    def probe(self, samples: int = PROBE_SAMPLES) -> OutputEvaluator:
        """This evaluator on its first feeds, up to ``samples`` samples (:func:`feed_rows` along the
        model's batch axes), sharing the reference outputs already computed."""
        count, seen = 0, 0
        for feed in self.feeds:
            if seen >= samples:
                break
            count, seen = count + 1, seen + feed_rows(feed, self.inputs)
        if count == len(self.feeds):
            return self
        part = copy.copy(self)
        part.feeds, part.reference = self.feeds[:count], self.reference[:count]
        return part

    def samples(self) -> int:
        return sum(feed_rows(feed, self.inputs) for feed in self.feeds)

    def run(self, model: onnx.ModelProto) -> list[list[np.ndarray]]:
        """``model``'s outputs on every feed. With more than one feed and more than one thread
        allowed, the feeds run side by side on a one-thread session, as auto's held-out runs do
        (the same outputs bit for bit, in less time: see calibration/select.py _session)."""
        from calibration.observers import in_memory_session
        from calibration.threads import map_ordered, workers
        from edgedeploy.backends.onnxruntime import PROVIDERS, session_options

        count = workers(self.threads) if len(self.feeds) > 1 else 1
        # emulate_integer has no effect on the float reference
        options = session_options(1 if count > 1 else self.threads, emulate_integer=self.emulate_integer)
        # the large float and int8 weights as arrays: each variant's weights are neither serialized
        # nor parsed again (the same outputs, bit for bit; see calibration/select.py _session)
        session = in_memory_session(model, options, providers=PROVIDERS)
        names = {i.name for i in session.get_inputs()}

        def one(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            return list(session.run(None, {k: v for k, v in feed.items() if k in names}))

        return map_ordered(one, self.feeds, count)

    def measure(self, model: onnx.ModelProto) -> dict[str, Any]:
        return self.score(self.run(model))

    def score(self, cand: list[list[np.ndarray]]) -> dict[str, Any]:
        """A candidate's outputs (per feed, per output) against the reference: the metrics of
        :data:`METRICS` (the worst output's), and under ``OUTPUTS`` each output's cosine."""
        measured: dict[str, list[float]] = {"cosine": [], "top1": [], "max_abs": [], "snr": []}
        named: dict[str, float] = {}  # each output's top1, under top1:NAME (a bound may name one)
        for i in self.measured:
            m = output_metrics(
                f"output{i}", [r[i] for r in self.reference], [c[i] for c in cand], Gates(min_cosine=None)
            )
            # NaN/Inf unlike the reference's fails every criterion (NaN would compare as neither side of a
            # bound); a NaN/Inf the candidate reproduces is equal
            nonfinite = bool(m.nonfinite_mismatches)
            measured["cosine"].append(-math.inf if nonfinite else m.score)  # bool/int: equal share
            measured["max_abs"].append(math.inf if nonfinite else m.max_abs)
            measured["snr"].append(-math.inf if nonfinite else math.inf if m.snr_db is None else m.snr_db)
            if m.top1_agreement is not None:
                measured["top1"].append(m.top1_agreement)
                if i < len(self.output_names):
                    named[f"top1:{self.output_names[i]}"] = m.top1_agreement
        return {
            **named,
            "cosine": min(measured["cosine"]),
            "top1": min(measured["top1"]) if measured["top1"] else None,
            "max_abs": max(measured["max_abs"]),
            "snr": min(measured["snr"]),
            OUTPUTS: measured["cosine"],
        }


@dataclass
class BudgetStep:
    kept: list[str]  # layers kept in higher precision at this step
    measured: dict[str, float | None]
    met: bool
    outputs: list[float] | None = None  # each output's cosine, where the measurement gave them


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
    measurements: int = 0  # model variants built and measured on all the samples (the search's cost)
    ranking: str = ""  # how layers were ranked: one at a time, on how many samples
    probe_measurements: int = 0  # variants built and measured on the ranking's samples only
    ranking_seconds: float = 0.0  # of ``seconds``, the ranking's
    everything: bool = False  # met only with every node in the higher precision (fp16: kept or by plan)


# the metrics of METRICS and, optionally, each output's cosine under OUTPUTS
Measure = Callable[[Sequence[str]], dict[str, Any]]


def _split(
    measured: dict[str, Any], budget: AccuracyBudget
) -> tuple[dict[str, float | None], list[float] | None]:
    """The figures of a measurement (each output's top1 only where ``budget`` bounds it), and
    each output's cosine. A bare top1 bound beside bounds of named outputs (``top1>=0.9,
    top1>=aux:0.5``) holds the outputs they do not name, as compare's ``--min-top1 0.9 aux:0.5``
    and Polygraphy's per-output defaults do: its ``top1`` is the worst of those outputs."""
    per = measured.get(OUTPUTS)
    used = {c.key for c in budget.criteria}
    kept = {k: v for k, v in measured.items() if k != OUTPUTS and (":" not in k or k in used)}
    named = {c.key for c in budget.criteria if c.metric == "top1" and c.output}
    if named and "top1" in used:
        others = [v for k, v in measured.items() if k.startswith("top1:") and k not in named]
        kept["top1"] = min((v for v in others if v is not None), default=None)
    return kept, None if per is None else list(per)


def search(
    budget: AccuracyBudget,
    candidates: Sequence[str],
    measure: Measure,
    *,
    precision: str,
    higher: str,
    probe: Measure | None = None,
    probe_samples: int | None = None,
    fallback: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    said: str = "--accuracy-budget",
) -> BudgetResult:
    """The search of the module docstring over ``candidates``: ``measure(kept)`` returns the output
    metrics with ``kept`` in higher precision, ``probe(kept)`` the same on the ranking's samples
    (``probe_samples`` of them; ``measure`` when None). ``met`` is False when the full fallback
    misses the budget too (see check_met). ``said``: the budget's name where the user gave it
    (``--accuracy-budget``, or ``[build] accuracy_budget`` in a run or matrix config)."""
    start = time.perf_counter()
    notes: list[str] = []
    count_measure = [0, 0]  # on all the samples, on the probe
    ranked_in = 0.0  # the ranking's seconds

    def measure_counted(kept: Sequence[str]) -> BudgetStep:
        count_measure[0] += 1
        measured, per = _split(measure(kept), budget)
        return BudgetStep(list(kept), measured, budget.met(measured), per)

    steps = [measure_counted([])]
    first = steps[0].measured
    unmeasured = next((c for c in budget.criteria if c.metric == "top1" and first.get(c.key) is None), None)
    if unmeasured is not None:  # declared (batch, classes) or of open rank, and not so on the data
        came = (
            f"its output '{unmeasured.output}' did not come out so"
            if unmeasured.output
            else "none of its outputs came out so"
        )
        raise InputError(
            f"{said} {budget} cannot be measured: top1 needs an output shaped (batch, classes), and "
            f"{came} on the data (2-D, 2 or more classes); bound cosine, snr or max_abs instead"
        )
    on = f"{probe_samples} sample(s)" if probe is not None and probe_samples else "all the samples"
    ranking = f"one at a time on {on}"

    def finish(met: bool, kept: list[str], sensitivity: list[dict[str, Any]]) -> BudgetResult:
        seconds = time.perf_counter() - start
        return BudgetResult(
            str(budget), precision, higher, met, kept, len(candidates), sensitivity, steps, seconds, notes,
            count_measure[0], ranking, count_measure[1], ranked_in,
        )  # fmt: skip

    progress(f"as built: {_fmt(first)}")
    if steps[0].met:
        return finish(True, [], [])
    sensitivity: list[dict[str, Any]] = []
    damage: dict[str, float] = {}
    per_output: dict[str, list[float] | None] = {}  # each output's cosine with only that layer low
    rank = probe if probe is not None else measure
    ranking_start = time.perf_counter()
    every = max(1, len(candidates) // 10)
    for k, name in enumerate(candidates, 1):
        count_measure[1 if probe is not None else 0] += 1
        alone, per_output[name] = _split(rank([c for c in candidates if c != name]), budget)
        damage[name] = budget.damage(alone)
        sensitivity.append({"layer": name, "damage": damage[name], **alone, OUTPUTS: per_output[name]})
        if k % every == 0 or k == len(candidates):
            progress(f"ranked {k} of {len(candidates)} layers, each alone in {precision}")
    sensitivity.sort(key=lambda item: float(item["damage"]), reverse=True)
    order = [item["layer"] for item in sensitivity]
    ranked_in = time.perf_counter() - ranking_start
    progress("most sensitive: " + ", ".join(order[:5]))

    def step(kept: Sequence[str]) -> bool:
        steps.append(measure_counted(kept))
        progress(f"keeping {len(kept)} layer(s) in {higher}: {_fmt(steps[-1].measured)}")
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
        now = steps[-1]
        while high - low > 1:
            mid = (low + high) // 2
            if step(order[:mid]):
                high, now = mid, steps[-1]
            else:
                low = mid
        kept = list(order[:high])
        # every kept set measured so far (on all the samples): a drop trial is never measured twice
        known = {frozenset(s.kept): s for s in steps}
        trials, dropped = 0, True
        while dropped:  # until no kept layer can be dropped: a drop changes what the others' trials read
            dropped = False
            for name in reversed(list(kept)):  # least sensitive first
                trial = [k for k in kept if k != name]
                tried = known.get(frozenset(trial))
                if tried is None:
                    trials += 1
                    step(trial)
                    tried = known[frozenset(trial)] = steps[-1]
                if tried.met:
                    kept, now, dropped = trial, tried, True
        notes.append(
            f"no kept layer can be dropped: each one's removal misses the budget on all the samples "
            f"({trials} drop trial(s) measured)"
        )
        if steps[-1] is not now:  # the result last: measured already as an earlier step
            steps.append(now)
        return finish(True, kept, sensitivity)
    if fallback is not None and set(fallback) - set(order):  # the full-precision fallback: every node
        steps.append(measure_counted(list(fallback)))
        progress(f"full fallback, {len(fallback)} nodes in {higher}: {_fmt(steps[-1].measured)}")
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


def figure(value: float) -> str:
    """``value`` as short as it reads back exactly (0.99, 0.99999999, 40), not rounded to 6 digits."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def measured_figure(value: float) -> str:
    """A measured cosine or SNR with the digits that tell it from a budget near 1: 6 significant
    digits, and as many more as the cosine has 9s (0.99999969, where 6 digits printed 1)."""
    if 0 < abs(value) < 1 and 1 - abs(value) < 1e-4:
        return f"{value:.{min(15, 3 - math.floor(math.log10(1 - abs(value))))}g}"
    return f"{value:.6g}"


def _fmt(measured: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {measured_figure(v)}" for k, v in measured.items() if v is not None)


@dataclass
class Fp16Reference:
    """The fp32 model as :func:`fp16_budget` measures against it (read and prepared by
    :func:`load_for_analysis`), the samples it ran on and its outputs on them."""

    model: onnx.ModelProto
    feeds: list[Feed]
    outputs: list[list[np.ndarray]]


def fp16_reference(model_path: Path, feeds: Sequence[Feed]) -> Fp16Reference:
    """The fp32 model's run on ``feeds`` that :func:`fp16_budget` measures against, made ahead of
    it; :class:`~edgedeploy.errors.RefusedInput` when ONNX Runtime cannot run the model on them."""
    try:
        model = load_for_analysis(model_path)
        return Fp16Reference(model, list(feeds), OutputEvaluator(model, feeds).reference)
    except InputError:
        raise
    except Exception as exc:  # as the range analysis says it (analysis.analyze)
        if isinstance(exc, ValueError) or type(exc).__module__.startswith("onnxruntime"):
            from calibration.graphs import ort_error

            raise RefusedInput(
                f"ONNX Runtime cannot run {model_path.name} on the data: {ort_error(exc)}"
            ) from None
        raise


def fp16_budget(
    model_path: Path,
    base_fp32: Sequence[str],
    budget: AccuracyBudget,
    feeds: Sequence[Feed],
    *,
    blocked_ops: Sequence[str] | None = None,
    keep_io_types: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
    runtime: str = "onnxruntime",
    reference: Fp16Reference | None = None,
    said: str = "--accuracy-budget",
) -> BudgetResult:
    """Which extra nodes to keep in fp32 (on top of ``base_fp32``) to meet ``budget`` in fp16;
    ``runtime``: the one the build is for, whose ops it keeps in fp32 (unless ``blocked_ops``);
    ``reference``: the fp32 model and its outputs on ``feeds`` when the caller ran it already
    (:func:`fp16_reference`), neither read nor run again."""

    model = reference.model if reference is not None else load_for_analysis(model_path)
    blocked = converter_blocked_ops(model, runtime) if blocked_ops is None else set(blocked_ops)
    evaluator = OutputEvaluator(model, feeds, outputs=reference.outputs if reference is not None else None)
    base = set(base_fp32)
    candidates = [
        n.name
        for n in model.graph.node
        if n.name in set(fp16_node_names(model, base, blocked)) and n.op_type not in PASSIVE_OPS
    ]

    few = evaluator.probe()

    def variant(kept: Sequence[str]) -> onnx.ModelProto:
        return emulate_fp16(model, base | set(kept), blocked, round_io=not keep_io_types)

    result = search(
        budget,
        candidates,
        lambda kept: evaluator.measure(variant(kept)),
        precision="fp16",
        higher="fp32",
        probe=lambda kept: few.measure(variant(kept)),
        probe_samples=few.samples(),
        fallback=[n.name for n in model.graph.node],
        progress=progress,
        said=said,
    )
    # nothing left in fp16: the kept nodes and the plan's fp32 ones are all of them
    nodes = {n.name for n in model.graph.node}
    result.everything = result.met and bool(result.kept) and set(result.kept) | base >= nodes
    return result


def int8_budget(
    model_path: Path,
    make: Callable[[Sequence[str]], Path],
    quantized: Sequence[str],
    budget: AccuracyBudget,
    feeds: Sequence[Feed],
    *,
    progress: Callable[[str], None] = lambda _m: None,
    emulate_integer: bool = False,
    said: str = "--accuracy-budget",
) -> BudgetResult:
    """Which quantized layers to leave unquantized to meet ``budget``; ``make(excluded)`` writes a
    Q/DQ model with those layers excluded and returns its path (``make_int8`` with exclude_nodes;
    ``emulate_integer``: see :class:`OutputEvaluator`)."""

    reference = load_onnx(model_path)
    evaluator = OutputEvaluator(reference, feeds, emulate_integer=emulate_integer)
    few = evaluator.probe()

    return search(
        budget,
        list(quantized),
        lambda kept: evaluator.measure(load_onnx(make(list(kept)))),
        precision="int8",
        higher="fp32 (not quantized)",
        probe=lambda kept: few.measure(load_onnx(make(list(kept)))),
        probe_samples=few.samples(),
        progress=progress,
        said=said,
    )
