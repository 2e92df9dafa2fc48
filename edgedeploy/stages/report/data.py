"""What each section of the report shows, as plain data: pure functions of a :class:`RunData`.

Plots and tables only draw what these return, so the unit tests pin the figures here (which
tensors are the worst clipped, which layer first exceeds the tolerance, what the speed-up is)
without a plotting library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calibration.report import recorded_type
from edgedeploy.stages.report.load import PRECISION_ORDER, RunData
from edgedeploy.stats import slower_on_target
from edgedeploy.targets import MEASURED_OFF_TARGET, measured_off_target

FP16_MAX = 65504.0  # the fp16 limits the range chart draws (see precision/analysis.py)
FP16_MIN_NORMAL = 2.0**-14
FP16_ZERO_UPTO = 2.0**-25  # at or below it a value rounds to 0 (half the smallest subnormal, 2**-24)
EXACT_LOSS = 1e-12  # 1 - cosine at or below this is drawn on the floor of the log axis ("exact")


@dataclass
class TradeoffRow:
    precision: str
    backend: str
    size_bytes: int | None
    p50_ms: float | None
    p99_ms: float | None
    throughput_ips: float | None
    energy_mj: float | None
    cosine: float | None  # the lowest over the outputs
    top1: float | None  # the lowest over the outputs that have one
    task_metric: tuple[str, float] | None  # a named task metric, where the run recorded one
    passed: bool | None
    speedup: float | None = None  # fp32 p50 / this p50, both at ``batch``
    size_ratio: float | None = None  # this size / fp32 size
    # norm(candidate) / norm(reference) of the float output farthest from 1: the scale the cosine
    # gate checks too (compare's norm_ratio); None where no output has one (files written before)
    norm_ratio: float | None = None
    batch: str | None = None  # the batch size the latency figures (and the speed-up) are at
    # why there is none where this precision was profiled: fp32 was not, or not at ``batch``
    no_speedup: str | None = None

    @property
    def accuracy_loss(self) -> float | None:
        return None if self.cosine is None else max(0.0, 1.0 - self.cosine)


def _batch_keys(profile: Mapping[str, Any] | None) -> list[str]:
    """The batch sizes ``profile`` holds figures for, smallest first (a key that is no number last)."""
    batches = (profile or {}).get("batch_sizes") or {}
    return sorted(batches, key=lambda k: int(k) if str(k).isdigit() else 1 << 30)


def at_batch(profile: Mapping[str, Any] | None, key: str | None) -> dict[str, Any]:
    """``profile``'s figures at batch size ``key`` (empty where it has none)."""
    value = ((profile or {}).get("batch_sizes") or {}).get(key) if key is not None else None
    return value if isinstance(value, dict) else {}


def shown_batches(profiles: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[str | None]:
    """The batch size each (precision, profile) of one model on one target is shown at: the smallest
    one every profiled precision has, so the table, the speed-ups and the CDF are of one batch;
    without one, fp32's smallest and each other precision's smallest it shares with fp32 (its
    speed-up's), else its own smallest (it gets no speed-up). Batch 1 where all have it."""
    keyed = [_batch_keys(profile) for _, profile in profiles]
    profiled = [keys for keys in keyed if keys]
    shared = [k for k in profiled[0] if all(k in keys for keys in profiled[1:])] if profiled else []
    if shared:
        return [shared[0] if keys else None for keys in keyed]
    base = next(
        (keys for (precision, _), keys in zip(profiles, keyed, strict=True) if precision == "fp32"), []
    )
    chosen: list[str | None] = []
    for (precision, _), keys in zip(profiles, keyed, strict=True):
        common = [k for k in keys if k in base] if precision != "fp32" else []
        chosen.append((common or keys)[0] if common or keys else None)
    return chosen


def row_batches(run: RunData) -> dict[int, str | None]:
    """The batch size each precision's figures are shown at (index into ``run.precisions`` -> batch),
    by :func:`shown_batches`."""
    return dict(enumerate(shown_batches([(p.precision, p.profile) for p in run.precisions])))


def speedup_over_fp32(
    precision: str, profile: Mapping[str, Any] | None, batch: str | None, base: Mapping[str, Any] | None
) -> tuple[float | None, str | None]:
    """fp32's p50 over ``precision``'s, both at ``batch`` (a speed-up across batch sizes would be
    one of batch sizes), or None and why where ``precision`` was profiled there and fp32 gives no
    figure to compare with (no reason where ``precision`` has no p50 itself). ``base``: fp32's
    profile (None where fp32 was not profiled)."""
    p50 = _finite(at_batch(profile, batch).get("median_ms"))
    if not p50:
        return None, None
    base_keys = _batch_keys(base)
    if not base_keys:
        return None, "fp32 was not profiled"
    if batch not in base_keys:
        ours, theirs = (", ".join(_batch_keys(x)) for x in (profile, base))
        return None, f"no batch size was profiled for both it and fp32 ({precision}: {ours}; fp32: {theirs})"
    base_p50 = _finite(at_batch(base, batch).get("median_ms"))
    if not base_p50:
        return None, f"fp32 has no p50 at batch {batch}"
    return base_p50 / p50, None


def _outputs(compare: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [o for o in ((compare or {}).get("outputs") or {}).values() if isinstance(o, dict)]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _passed(compare: dict[str, Any] | None, outputs: list[dict[str, Any]]) -> bool | None:
    """The compare's gate, failed whatever it says when a figure is NaN or infinite or an output
    holds NaN/Inf values unlike the reference's: those always fail (README, compare), in a file
    edited or not."""
    if not compare:
        return None
    figures = [o.get(key) for o in outputs for key in ("cosine", "top1_agreement", "max_abs")]
    broken = any(isinstance(v, float) and not math.isfinite(v) for v in figures)
    snrs = [o.get("snr_db") for o in outputs]
    broken |= any(isinstance(v, float) and (math.isnan(v) or v == -math.inf) for v in snrs)  # +inf: identical
    # NaN/Inf unlike the reference's; a file written before compare counted those holds the candidate's
    counts = [(o.get("nonfinite_mismatches"), o.get("nan_inf")) for o in outputs]
    unmatched = [count if count is not None else nan_inf for count, nan_inf in counts]
    if broken or any(unmatched):
        return False
    passed = compare.get("passed")
    return passed if isinstance(passed, bool) else None


def tradeoff_rows(run: RunData) -> list[TradeoffRow]:
    """One row per precision (fp32 first), with speed-up and size relative to fp32 where it ran."""
    rows = []
    keys = row_batches(run)
    for i, p in enumerate(run.precisions):
        batch = at_batch(p.profile, keys[i])
        outputs = _outputs(p.compare)
        # what compare gates: the cosine, or a bool/integer output's share of equal elements
        gated = [o.get("cosine") if o.get("equal_share") is None else o.get("equal_share") for o in outputs]
        cosines = [c for c in map(_finite, gated) if c is not None]
        # per-output --min-top1 NAME:VALUE: the outputs it gated (an embedding's argmax means nothing)
        named = [o for o in outputs if o.get("top1_gated") is not None]
        top1s = [t for t in (_finite(o.get("top1_agreement")) for o in named or outputs) if t is not None]
        ratios = [r for r in (_finite(o.get("norm_ratio")) for o in outputs) if r is not None]
        energy = batch.get("energy") or {}
        task = p.info.get("task_metric")
        rows.append(
            TradeoffRow(
                precision=p.precision,
                backend=p.backend,
                size_bytes=p.size_bytes,
                p50_ms=_finite(batch.get("median_ms")),
                p99_ms=_finite(batch.get("p99_ms")),
                throughput_ips=_finite(batch.get("throughput_ips")),
                energy_mj=_finite(energy.get("energy_per_inference_mj"))
                if energy.get("measurable")
                else None,
                cosine=min(cosines) if cosines else None,
                top1=min(top1s) if top1s else None,
                task_metric=(str(task["name"]), float(task["value"]))
                if isinstance(task, dict) and _finite(task.get("value")) is not None
                else None,
                passed=_passed(p.compare, outputs),
                norm_ratio=max(ratios, key=lambda r: abs(r - 1.0)) if ratios else None,
                batch=keys[i],
            )
        )
    at = next((i for i, p in enumerate(run.precisions) if p.precision == "fp32"), None)
    base = rows[at] if at is not None else None
    base_profile = run.precisions[at].profile if at is not None else None
    for p, r in zip(run.precisions, rows, strict=True):
        r.speedup, r.no_speedup = speedup_over_fp32(p.precision, p.profile, r.batch, base_profile)
        if base and base.size_bytes and r.size_bytes:
            r.size_ratio = r.size_bytes / base.size_bytes
    return rows


def slower_precisions(run: RunData) -> dict[str, str]:
    """The low precisions that ran slower than fp32 (precision -> the figures in words), where the
    figures are the target's: a GPU target's measured with ONNX Runtime on this CPU says nothing."""
    return slower_on_target(run.target, [(p.precision, p.backend, p.profile) for p in run.precisions])


def where_measured(run: RunData) -> str | None:
    """What ``run`` puts in its table title when a GPU target's latencies were measured with ONNX
    Runtime on the CPU of the machine that ran (cli/run.py): the report's latency and speed-up
    figures are then not the device's. None when they are the target's (or nothing was profiled)."""
    profiled = [p.backend for p in run.precisions if p.profile]
    return MEASURED_OFF_TARGET if measured_off_target(run.target, profiled) else None


def recommended(run: RunData, rows: list[TradeoffRow]) -> tuple[str | None, str]:
    """The precision to deploy and why: the bundle's choice, else the lowest precision that passed.

    The fallback is the bundle stage's own rule (``bundle.default_primary``) on the rows we have.
    """
    if run.primary:
        return run.primary, "the bundle's primary precision"
    passed = [r for r in rows if r.passed]
    if passed:
        best = max(passed, key=lambda r: PRECISION_ORDER.get(r.precision, -1))
        return best.precision, "the lowest precision whose accuracy gate passed"
    if any(r.passed is False for r in rows):
        return ("fp32" if any(r.precision == "fp32" for r in rows) else None), "no lower precision passed"
    return None, "no accuracy comparison in this run"


def batch_notes(rows: list[TradeoffRow]) -> list[str]:
    """What the page and report.md say of the batch sizes the latency figures are at: one batch for
    all, else each precision's (its speed-up compares with fp32 at that batch), and why a precision
    has no speed-up where it shares no batch size with fp32."""
    profiled = [r for r in rows if r.batch is not None]
    if not profiled:
        return []
    batches = {r.batch for r in profiled}
    if len(batches) == 1:
        notes = [f"Latency figures are for batch {profiled[0].batch}."]
    else:
        each = ", ".join(f"{r.precision} at batch {r.batch}" for r in profiled)
        notes = [
            f"Latency figures are not all for one batch size: {each}; "
            "a speed-up compares with fp32 at the same batch."
        ]
    return notes + [f"{r.precision}: no speed-up: {r.no_speedup}." for r in rows if r.no_speedup]


def gate_results(rows: list[TradeoffRow]) -> dict[str, Any]:
    """The accuracy gates' outcome over ``rows``: the precisions that failed, and whether all compared
    ones passed (None: nothing was compared), as the summary's verdict line says it."""
    compared = [r for r in rows if r.passed is not None]
    failed = [r.precision for r in compared if not r.passed]
    return {"passed": (not failed) if compared else None, "failed": failed}


def report_figures(run: RunData) -> dict[str, Any]:
    """What ``report --json`` holds beside the page's paths: the trade-off table's rows (the numbers
    report.md and report.html show, from :func:`tradeoff_rows`), the recommended precision and the
    gate results; JSON values only (None where the page shows '-')."""
    rows = tradeoff_rows(run)
    best, why = recommended(run, rows)
    return {
        "model": run.model,
        "target": run.target,
        "measured": where_measured(run),  # set: the latencies are not the target's
        "recommended": {"precision": best, "why": why},
        "gates": {"thresholds": dict(run.gates), **gate_results(rows), "not_built": dict(run.not_built)},
        "slower_than_fp32": slower_precisions(run),
        "precisions": [
            {
                "precision": r.precision,
                "backend": r.backend,
                "size_bytes": r.size_bytes,
                "size_ratio": r.size_ratio,
                "batch_size": int(b) if (b := r.batch) and str(b).isdigit() else b,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "throughput_ips": r.throughput_ips,
                "speedup": r.speedup,
                "no_speedup": r.no_speedup,  # why speedup is null where p50_ms is not
                "energy_mj_per_inference": r.energy_mj,
                "min_cosine": r.cosine,
                "min_top1_agreement": r.top1,
                "task_metric": (
                    {"name": r.task_metric[0], "value": r.task_metric[1]} if r.task_metric else None
                ),
                "gate": None if r.passed is None else ("pass" if r.passed else "FAIL"),
            }
            for r in rows
        ],
    }


@dataclass
class MatrixBar:
    """One profiled cell of the matrix report's latency chart."""

    target: str
    precision: str
    p50_ms: float
    cosine: float | None


@dataclass
class ScatterPoint:
    precision: str
    speedup: float
    loss: float  # 1 - cosine, floored at EXACT_LOSS for the log axis
    exact: bool  # the loss was at or below the floor (identical outputs)
    size_bytes: int | None
    batch: str | None = None  # the batch size the speed-up is at


def scatter_points(rows: list[TradeoffRow]) -> list[ScatterPoint]:
    """Accuracy loss against speed-up, for every precision that was both profiled and compared."""
    points = []
    for r in rows:
        loss = r.accuracy_loss
        if r.speedup is None or loss is None:
            continue
        points.append(
            ScatterPoint(
                r.precision, r.speedup, max(loss, EXACT_LOSS), loss <= EXACT_LOSS, r.size_bytes, r.batch
            )
        )
    return points


@dataclass
class CdfSeries:
    precision: str
    batch: str
    latencies_ms: list[float]  # a run's time: the whole batch's, not one inference's
    percent: list[float]  # 0..100, same length


def latency_cdfs(run: RunData) -> list[CdfSeries]:
    """Per precision, the latency distribution (from the stored quantiles) at the batch size its
    trade-off row is at (:func:`row_batches`): one batch for all where every precision has it."""
    series = []
    keys = row_batches(run)
    for i, p in enumerate(run.precisions):
        batch, figures = keys[i], at_batch(p.profile, keys[i])
        quantiles = figures.get("quantiles_ms")
        if batch is None or not isinstance(quantiles, list) or len(quantiles) < 2:
            continue
        n = len(quantiles) - 1
        series.append(
            CdfSeries(
                p.precision, batch, [float(q) for q in quantiles], [100.0 * i / n for i in range(n + 1)]
            )
        )
    return series


@dataclass
class BatchSeries:
    precision: str
    batches: list[int]
    throughput_ips: list[float | None]
    p50_ms: list[float | None]
    p99_ms: list[float | None]


def batch_curves(run: RunData) -> list[BatchSeries]:
    """Throughput and latency per batch size, for precisions profiled at two or more batch sizes."""
    series = []
    for p in run.precisions:
        batches = (p.profile or {}).get("batch_sizes") or {}
        keys = sorted((k for k in batches if str(k).isdigit()), key=int)
        if len(keys) < 2:
            continue
        series.append(
            BatchSeries(
                p.precision,
                [int(k) for k in keys],
                [_finite(batches[k].get("throughput_ips")) for k in keys],
                [_finite(batches[k].get("median_ms")) for k in keys],
                [_finite(batches[k].get("p99_ms")) for k in keys],
            )
        )
    return series


def profile_settings(run: RunData) -> dict[str, str]:
    """The settings that shaped the latency figures (threads, clocks, power mode, warm-up, duration)."""
    wanted = (
        "provider",
        "threads",
        "warmup",
        "warmup_ms",
        "measure",
        "duration_s",
        "min_iterations",
        "timing",
        "timer",
        "cpu",
        "cuda_graph",
        "data_transfers",
        "tensorrt",
        "onnxruntime",
        "power_mode",
        "clocks",
    )
    found: dict[str, str] = {}
    for p in run.precisions:
        settings = (p.profile or {}).get("settings") or {}
        for key in wanted:
            if key in settings and key not in found and settings[key] not in (None, "", {}):
                value = settings[key]
                found[key] = (
                    ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
                )
    return found


@dataclass
class RangeBar:
    tensor: str
    op: str
    absmin: float | None  # smallest non-zero |x|
    absmax: float
    kept_fp32: bool  # its producer runs in fp32 in the plan
    reason: str | None  # why it is kept (from the plan), or the analysis' risk
    risk: bool


def _plan_fp32(plan: dict[str, Any] | None) -> dict[str, str]:
    return {
        str(n.get("node")): str(n.get("reason") or "")
        for n in (plan or {}).get("nodes") or []
        if n.get("precision") == "fp32"
    }


def fp16_range_bars(run: RunData, limit: int = 30) -> list[RangeBar]:
    """Per tensor, [smallest, largest] non-zero magnitude for the range chart, in graph order.

    With more tensors than ``limit``, the ones at risk and those nearest a limit are kept.
    """
    if not run.ranges:
        return []
    kept = _plan_fp32(run.plan)
    bars = []
    for t in run.ranges.get("tensors") or []:
        absmax = _finite(t.get("absmax"))
        if absmax is None or absmax <= 0:
            continue
        producer = str(t.get("producer") or "")
        risks = list(t.get("risks") or [])
        bars.append(
            RangeBar(
                tensor=str(t.get("tensor")),
                op=str(t.get("op") or ""),
                absmin=_finite(t.get("absmin")),
                absmax=absmax,
                kept_fp32=producer in kept,
                reason=kept.get(producer) or (risks[0] if risks else None),
                risk=bool(risks),
            )
        )
    if len(bars) <= limit:
        return bars

    def closeness(b: RangeBar) -> float:  # log10 distance to the nearer fp16 limit (smaller: closer)
        top = math.log10(FP16_MAX / b.absmax)
        bottom = math.log10((b.absmin or FP16_MIN_NORMAL) / FP16_MIN_NORMAL)
        return min(top, bottom)

    chosen = set(
        sorted(range(len(bars)), key=lambda i: (not bars[i].risk, not bars[i].kept_fp32, closeness(bars[i])))[
            :limit
        ]
    )
    return [b for i, b in enumerate(bars) if i in chosen]


@dataclass
class Fp32Node:
    node: str
    op: str
    reason: str


def fp32_nodes(run: RunData) -> list[Fp32Node]:
    """Nodes the fp16 plan keeps in fp32, with the reason the plan records."""
    return [
        Fp32Node(str(n.get("node")), str(n.get("op") or ""), str(n.get("reason") or ""))
        for n in (run.plan or {}).get("nodes") or []
        if n.get("precision") == "fp32"
    ]


@dataclass
class ClipPanel:
    tensor: str
    edges: list[float]  # bin edges of |x|, len(counts) + 1
    counts: list[int]
    threshold: float
    amax: float
    clipped: float  # share of values above the threshold
    dtype: str  # as the Q/DQ model stores it, with its zero point: "uint8 (zp 17)"


def clipping_panels(run: RunData, limit: int = 6) -> list[ClipPanel]:
    """The ``limit`` worst-clipped tensors with their |x| histogram (largest clipped share first)."""
    tensors = (run.calibration or {}).get("tensors") or []
    with_hist = [t for t in tensors if isinstance(t.get("histogram"), dict) and t["histogram"].get("counts")]
    worst = sorted(
        with_hist, key=lambda t: (-(t.get("clipped") or 0.0), -(t.get("amax") or 0.0), str(t.get("name")))
    )
    panels = []
    for t in worst[:limit]:
        hist = t["histogram"]
        bins, top = int(hist.get("bins") or len(hist["counts"])), float(hist["top"])
        counts = [int(c) for c in hist["counts"]]
        width = top / bins
        panels.append(
            ClipPanel(
                tensor=str(t.get("name")),
                edges=[i * width for i in range(len(counts) + 1)],
                counts=counts,
                threshold=float(t.get("threshold") or 0.0),
                amax=float(t.get("amax") or 0.0),
                clipped=float(t.get("clipped") or 0.0),
                dtype=recorded_type(t, run.calibration or {}),
            )
        )
    return panels


@dataclass
class LayerSeries:
    precision: str
    mode: str
    tensors: list[str]
    orders: list[int]
    losses: list[float]  # 1 - cosine per tensor, in graph order, floored at EXACT_LOSS
    exceeds: list[bool]
    first_exceeding: int | None  # index into the lists
    tolerance: float | None  # 1 - min_cosine, the line drawn


def layer_series(run: RunData) -> list[LayerSeries]:
    """Per-layer error from ``compare --per-layer``, in graph order, first tensor over tolerance marked."""
    series = []
    for result in run.per_layer:
        layers = sorted(
            (x for x in result.get("layers") or [] if isinstance(x, dict)), key=lambda x: x.get("order", 0)
        )
        if not layers:
            continue
        cosines = [_finite(x.get("cosine")) for x in layers]  # None (NaN in the candidate): worst, 0
        losses = [max(EXACT_LOSS, 1.0 - (c if c is not None else 0.0)) for c in cosines]
        exceeds = [bool(x.get("exceeds")) for x in layers]
        min_cos = _finite((result.get("gates") or {}).get("min_cosine"))
        series.append(
            LayerSeries(
                precision=str(result.get("precision") or "candidate"),
                mode=str(result.get("mode") or ""),
                tensors=[str(x.get("tensor")) for x in layers],
                orders=[int(x.get("order", i)) for i, x in enumerate(layers)],
                losses=losses,
                exceeds=exceeds,
                first_exceeding=exceeds.index(True) if True in exceeds else None,
                tolerance=(1.0 - min_cos) if min_cos is not None else None,
            )
        )
    return series


@dataclass
class BudgetView:
    precision: str
    budget: str
    met: bool
    higher: str
    steps: list[tuple[int, list[str], dict[str, float | None], bool]] = field(default_factory=list)
    cost: str = ""  # what the search measured and how long it took, when the result says
    # why the run built no model of this precision (RunData.not_built): a budget the search "met"
    # only with every layer left in higher precision is one no model of it meets
    not_built: str | None = None
    min_cosine: float | None = None  # the budget's cosine bound, which the steps' cosines print against

    @property
    def outcome_met(self) -> bool:
        """Whether a model of this precision meets the budget, as the run decided it."""
        return self.met and self.not_built is None


def _budget_cost(result: dict[str, Any]) -> str:
    """The search's cost in words: variants measured on all the samples, the ranking's, seconds."""
    full, probe, seconds = result.get("measurements"), result.get("probe_measurements"), result.get("seconds")
    if not isinstance(full, int):
        return ""
    text = f"{full} variant(s) measured on all the samples"
    if isinstance(probe, int) and probe:
        text += f", {probe} for the ranking ({result.get('ranking') or 'one at a time'}"
        ranked = result.get("ranking_seconds")
        text += f", {ranked:.1f} s)" if isinstance(ranked, int | float) else ")"
    return text + (f"; {seconds:.1f} s in all" if isinstance(seconds, int | float) else "")


def budget_views(run: RunData) -> list[BudgetView]:
    """Each accuracy-budget search: per step, the layers kept in higher precision and what it reached."""
    views = []
    for precision, result in sorted(run.budgets.items(), key=lambda kv: PRECISION_ORDER.get(kv[0], 99)):
        steps = [
            (i, [str(k) for k in s.get("kept") or []], dict(s.get("measured") or {}), bool(s.get("met")))
            for i, s in enumerate(result.get("steps") or [])
        ]
        views.append(
            BudgetView(
                precision,
                str(result.get("budget")),
                bool(result.get("met")),
                str(result.get("higher") or "fp32"),
                steps,
                _budget_cost(result),
                run.not_built.get(precision),
                _cosine_bound(str(result.get("budget"))),
            )
        )
    return views


def _cosine_bound(budget: str) -> float | None:
    """The cosine a budget asks for (``cosine>=0.99999999,top1>=0.99`` -> 0.99999999), or None."""
    found = re.search(r"cosine\s*>=?\s*([0-9][0-9.eE+-]*)", budget)
    try:
        return float(found.group(1)) if found else None
    except ValueError:
        return None


@dataclass
class PowerTrace:
    precision: str
    source: str
    times_s: list[float]
    rails: dict[str, list[float | None]]  # rail name -> watts per time point
    covered: str | None


def power_traces(run: RunData) -> list[PowerTrace]:
    """Power over the benchmark run, per rail, where a power source recorded a trace (at the batch
    size the precision's trade-off row is at)."""
    traces = []
    keys = row_batches(run)
    for i, p in enumerate(run.precisions):
        batch = at_batch(p.profile, keys[i])
        energy = batch.get("energy") or {}
        trace = energy.get("trace") or {}
        times = trace.get("t_s") or []
        rails = {str(k): list(v) for k, v in (trace.get("rails") or {}).items() if len(v) == len(times)}
        if energy.get("measurable") and len(times) >= 2 and rails:
            traces.append(
                PowerTrace(
                    p.precision,
                    str(energy.get("source")),
                    [float(t) for t in times],
                    rails,
                    energy.get("rails_covered"),
                )
            )
    return traces


def min_cosine(gates: Mapping[str, Any]) -> float | None:
    """The min cosine ``gates`` checked, None where none (or not a number)."""
    return _finite(gates.get("min_cosine"))


def gate_text(gates: dict[str, Any]) -> str:
    parts = []
    if gates.get("min_cosine") is not None:
        parts.append(f"cosine ≥ {gates['min_cosine']}")
    top1 = gates.get("min_top1")
    if isinstance(top1, dict):  # per output (--min-top1 NAME:VALUE): the outputs gated, by name
        parts.extend(
            f"argmax agreement of {name or 'every other output'} ≥ {value}"
            for name, value in sorted(top1.items(), key=lambda item: item[0] == "")
        )
    elif top1 is not None:
        parts.append(f"argmax agreement ≥ {top1}")
    if gates.get("check_allclose"):
        parts.append(f"allclose atol {gates.get('atol')} rtol {gates.get('rtol')}")
    return ", ".join(parts) or "none recorded"
