"""Automatic fp32 islands: the fewest nodes to keep in fp32 so that an fp16 graph neither overflows
nor loses its small values, chosen from a :class:`~edgedeploy.stages.precision.analysis.RangeReport`.

Rules, each recorded as the node's reason in the precision plan:

1. consumers of a weight that does not fit fp16 (values over 65504, or mostly flushed to zero);
2. the producer of a tensor at risk (over the max-abs threshold, NaN/Inf, or mostly flushed), and
   every consumer of it: an fp16 consumer would get it through a Cast to fp16, which is where the
   Inf appears;
3. squaring reductions whose sum of squares leaves the range though their output does not
   (ReduceSumSquare, ReduceL2, LpNormalization, LpPool, GlobalLpPool: an L2 norm of 8 values of
   100 overflows inside); the sum is the reduction's output for ReduceSumSquare, its output to the
   power p for ReduceL2 and the pools, and measured along its axis for LpNormalization
   (:class:`~edgedeploy.stages.precision.analysis.NormSumObserver`);
4. the reductions that feed a kept node (the ReduceMean / Pow / Sub chain of a hand-written
   LayerNorm or L2 norm, the ReduceMax / Exp / ReduceSum of a hand-written Softmax), so the
   statistics of a normalisation are computed in the precision of the values they normalise;
5. control flow (If, Loop, Scan) whose subgraph values cannot be observed: the node and its
   subgraphs stay fp32 with Casts at the boundary (make_fp16 adds them for implicit captures);
6. a Softmax or LogSoftmax whose input reaches :data:`SHIFT_LIMIT` (512), and that input's producer:
   far below overflow, but fp16's step there moves a logit enough to change its exp(x - max)
   (ONNX's test_softmax_large_number: 10000..10003 are all 10000 in fp16, a uniform row); and the
   chain that computes those logits, back through scales, masks and reshapes to the op that makes
   them (an attention score's MatMul -> Mul(1/sqrt(d)) -> Add(mask)): each fp16 output on the way
   rounds them by as much, relative to their size, as the Softmax's input would.

Everything else runs in fp16. Hand-written: this is the FP16 range analysis of the architecture.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from calibration.observers import Observer
from edgedeploy.device.verify_outputs import cosine_of  # compare's cosine, the budget's
from edgedeploy.stages.precision.analysis import (
    FP16_MAX,
    SHIFT_LIMIT,
    SHIFT_SENSITIVE,
    RangeReport,
    TensorRange,
    analyze,
    fp16_step_words,
    load_for_analysis,
)

REDUCTIONS = {
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceL1",
    "ReduceMax",
    "ReduceLogSumExp",
    "ReduceProd",
}
SQUARING = {"ReduceSumSquare", "ReduceL2", "LpNormalization", "LpPool", "GlobalLpPool"}
P_NORMS = {"LpNormalization", "LpPool", "GlobalLpPool"}  # sums of |x|**p, p an attribute (default 2)
# Element-wise steps of hand-written normalisations, walked through from a reduction to its input.
NORM_CHAIN = {"Sub", "Pow", "Mul", "Sqrt", "Reciprocal", "Add", "Div", "Exp", "Abs", "Cast"}
CONTROL_FLOW = {"If", "Loop", "Scan"}
# SHIFT_SENSITIVE and SHIFT_LIMIT (rule 6) live in analysis, which lists such inputs as at risk.
# Steps that carry logits to a Softmax with a constant's scale, a bias or mask added, or rearranged
# (Mul by 1/sqrt(d), Add of a mask): each fp16 output on the way rounds them by fp16's relative step,
# which the rest of the chain scales to the Softmax's input, so rule 6 follows them back.
SHIFT_CHAIN = {
    "Add", "Sub", "Mul", "Div", "Neg", "Where", "Cast", "Identity", "Reshape", "Transpose", "Squeeze",
    "Unsqueeze", "Flatten", "Expand",
}  # fmt: skip
MAX_SHIFT_CHAIN = 6  # how far rule 6 walks back from a Softmax's input
# The steps of SHIFT_CHAIN that mask logits or move them without arithmetic: rule 6 quotes the logits
# from before them (a masked -9050 beside logits of 950 is no step of 8 where the Softmax reads).
MASKING = {"Add", "Sub", "Where", "Cast", "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
           "Flatten", "Expand"}  # fmt: skip
MAX_CHAIN = 4  # how far to walk from a reduction to the start of its normalisation


@dataclass(frozen=True)
class IslandOptions:
    keep_underflow: bool = True  # rule 2 also for tensors that mostly flush to zero
    control_flow_fp32: bool = True  # rule 5


def choose_fp32_nodes(
    model: onnx.ModelProto, report: RangeReport, options: IslandOptions | None = None
) -> dict[str, str]:
    """Node name -> why it stays fp32. ``model`` must carry the names the analysis used."""
    options = options or IslandOptions()
    keep: dict[str, str] = {}

    def add(names: Iterable[str], reason: str) -> None:
        for n in names:
            if n:
                keep.setdefault(n, reason)

    nodes = {n.name: n for n in model.graph.node}
    producer = {out: n.name for n in model.graph.node for out in n.output}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node.name)

    for weight in report.weights:  # rule 1
        if weight.stats.overflow:
            add(
                weight.consumers,
                f"reads weight '{weight.name}' with |w| up to {weight.stats.absmax:.4g} (> 65504)",
            )
        elif weight.stats.nonfinite:  # e.g. a -inf mask constant; its finite values prove nothing
            add(weight.consumers, f"reads weight '{weight.name}' holding Inf/NaN ({weight.stats.nonfinite})")
        elif options.keep_underflow and weight.stats.flushed_share >= report.thresholds.flushed_share:
            add(weight.consumers, f"reads weight '{weight.name}' whose values mostly flush to zero in fp16")

    limit = report.thresholds.max_abs
    for t in report.tensors:  # rule 2
        s = t.stats
        if s.nonfinite or s.absmax > limit:
            why = (
                f"NaN/Inf in fp32 at '{t.name}'"
                if s.nonfinite and s.absmax <= limit
                else f"'{t.name}' reaches {s.absmax:.4g} (fp16 max 65504, kept below {limit:.4g})"
            )
            add([t.producer], f"produces {why}")
            add(t.consumers, f"reads {why}")
        elif options.keep_underflow and s.flushed_share >= report.thresholds.flushed_share:
            why = f"'{t.name}': {s.flushed_share:.0%} of its non-zero values flush to zero in fp16"
            add([t.producer], f"produces {why}")
            add(t.consumers, f"reads {why}")

    for node in model.graph.node:  # rule 3
        if node.op_type in SQUARING:
            total, what = _internal_sum(node, report)
            if total > limit:
                add([node.name], f"{node.op_type} sums {what} up to {total:.3g} internally (> {limit:.4g})")

    for node in model.graph.node:  # rule 6
        source = report.tensor(node.input[0]) if node.op_type in SHIFT_SENSITIVE and node.input else None
        if source is not None and source.stats.absmax >= SHIFT_LIMIT:
            logits = _logits(source, nodes, report)
            words = fp16_step_words(logits.stats.absmax)
            if logits.stats.absmax == source.stats.absmax:
                why = (
                    f"'{source.name}' reaches {source.stats.absmax:.4g}, {words}: "
                    f"{node.op_type}'s exp(x - max) changes with it"
                )
            else:  # a mask added: its columns' exp is 0 in any precision, the logits' step moves the rest
                why = (
                    f"the logits '{logits.name}' reach {logits.stats.absmax:.4g}, {words}: "
                    f"{node.op_type}'s exp(x - max) changes with it ({node.op_type}'s input "
                    f"'{source.name}' reaches {source.stats.absmax:.4g})"
                )
            add([source.producer], f"produces {why}")
            add([node.name], f"reads {why}")
            for name in _logit_chain(source.producer, nodes, report):
                add([name], f"computes the logits of {node.op_type} '{node.name}' ({why})")

    if options.control_flow_fp32:  # rule 5
        for node in model.graph.node:
            if node.op_type in CONTROL_FLOW:
                add([node.name], f"{node.op_type}: values inside its subgraphs are not observed")

    for name in list(keep):  # rule 4, from every kept step of a normalisation
        node = nodes.get(name)
        if node is None or node.op_type not in NORM_CHAIN | REDUCTIONS | SQUARING:
            continue
        for inp in node.input:
            src = nodes.get(producer.get(inp, ""))
            if src is not None and src.op_type in REDUCTIONS:
                _keep_reduction_chain(
                    src, nodes, producer, keep, f"normalisation statistics feeding '{name}'"
                )
            elif src is not None and src.op_type in NORM_CHAIN:  # e.g. Add eps / Sqrt between the two
                for inner in src.input:
                    red = nodes.get(producer.get(inner, ""))
                    if red is not None and red.op_type in REDUCTIONS:
                        keep.setdefault(src.name, f"normalisation statistics feeding '{name}'")
                        _keep_reduction_chain(
                            red, nodes, producer, keep, f"normalisation statistics feeding '{name}'"
                        )
    return {n: keep[n] for n in _in_graph_order(model, keep)}


def _internal_sum(node: onnx.NodeProto, report: RangeReport) -> tuple[float, str]:
    """The largest sum a squaring reduction accumulates, and what it sums: ReduceL2's output squared,
    ReduceSumSquare's output, an LpPool's or GlobalLpPool's output to the power p (the root of its
    window's sum), an LpNormalization's sum as the analysis measured it (its output, the
    normalised values, tells nothing of it). The largest single |x|**p of the input is the floor
    where nothing better was observed."""
    source = report.tensor(node.input[0]) if node.input else None
    out = report.tensor(node.output[0]) if node.output else None
    power = 2
    if node.op_type in P_NORMS:
        power = next((int(a.i) for a in node.attribute if a.name == "p"), 2)
    measured = 0.0
    if node.op_type == "LpNormalization":
        measured = report.norm_sums.get(node.name, 0.0)
    elif out is not None:
        measured = out.stats.absmax ** (1 if node.op_type == "ReduceSumSquare" else power)
    floor = source.stats.absmax**power if source else 0.0
    what = "squares" if power == 2 else "absolute values" if power == 1 else f"|x|**{power}"
    return max(measured, floor), what


def _logits(source: TensorRange, nodes: dict[str, onnx.NodeProto], report: RangeReport) -> TensorRange:
    """The logits a Softmax's input ``source`` carries: back through the masks added to them (an Add,
    Sub or Where, following its float operand of the smallest magnitude: a mask outweighs the
    logits it hides, -10000 beside 950) and rearrangements (:data:`MASKING`), at most
    :data:`MAX_SHIFT_CHAIN` steps, to the first other op's output (an attention score's scale, or
    its MatMul). ``source`` itself when no such step makes it."""
    logits = source
    for _ in range(MAX_SHIFT_CHAIN):
        node = nodes.get(logits.producer)
        if node is None or node.op_type not in MASKING:
            break
        operands = node.input[1:] if node.op_type == "Where" else node.input
        floats = [t for t in (report.tensor(i) for i in operands if i) if t is not None]
        if not floats:
            break
        logits = min(floats, key=lambda t: t.stats.absmax)
    return logits


def _logit_chain(start: str, nodes: dict[str, onnx.NodeProto], report: RangeReport) -> list[str]:
    """The nodes before ``start`` that compute what it carries to a Softmax: back through
    :data:`SHIFT_CHAIN` steps (a scale, a bias or mask, a reshape) from every activation input, up
    to and including the first node of another op (the MatMul of an attention score), at most
    :data:`MAX_SHIFT_CHAIN` steps deep. A scale carries fp16's relative step with the values: the
    MatMul's fp16 output rounds the logits as much as the Softmax's own input would, whatever its
    magnitude (MatMul near 15200, steps of 8, times 1/16: 0.5 at the Softmax)."""
    found: list[str] = []
    frontier = [start]
    for _ in range(MAX_SHIFT_CHAIN):
        step: list[str] = []
        for name in frontier:
            node = nodes.get(name)
            if node is None or node.op_type not in SHIFT_CHAIN:
                continue
            for inp in node.input:
                tensor = report.tensor(inp) if inp else None  # an activation (not a weight, not an int)
                if tensor is not None and tensor.producer and tensor.producer not in found:
                    found.append(tensor.producer)
                    step.append(tensor.producer)
        frontier = step
        if not frontier:
            break
    return found


def _keep_reduction_chain(
    reduction: onnx.NodeProto,
    nodes: dict[str, onnx.NodeProto],
    producer: dict[str, str],
    keep: dict[str, str],
    reason: str,
) -> None:
    """Keep a reduction and the element-wise steps (Pow, Sub, Exp...) that prepare its input."""
    keep.setdefault(reduction.name, reason)
    frontier = [reduction]
    for _ in range(MAX_CHAIN):
        step = []
        for node in frontier:
            for inp in node.input[:1]:
                src = nodes.get(producer.get(inp, ""))
                if src is not None and (src.op_type in NORM_CHAIN or src.op_type in REDUCTIONS):
                    if src.name not in keep:
                        keep[src.name] = reason
                    step.append(src)
        frontier = step
        if not frontier:
            return


def _in_graph_order(model: onnx.ModelProto, names: dict[str, str]) -> list[str]:
    order = [n.name for n in model.graph.node if n.name in names]
    return order + sorted(set(names) - set(order))


def plan_islands(
    model_path: str | os.PathLike[str] | onnx.ModelProto,
    source: Iterable[dict[str, np.ndarray]],
    *,
    data_description: dict[str, Any] | None = None,
    options: IslandOptions | None = None,
    observers: Sequence[Observer] = (),
    arrays: dict[str, np.ndarray] | None = None,
    name: str | None = None,
) -> tuple[dict[str, str], RangeReport]:
    """Run the range analysis of ``model_path`` on ``source`` and choose its fp32 islands.

    The analysis reads all of ``source``: an overflow in its last sample is as much the user's
    data as one in its first. A ModelProto must come from
    :func:`~edgedeploy.stages.precision.analysis.load_for_analysis` (the caller reuses it);
    ``arrays``: filled with the float weights' values the analysis read (see :func:`analyze`);
    ``name``: how errors name the model (see :func:`analyze`).
    """

    model = model_path if isinstance(model_path, onnx.ModelProto) else load_for_analysis(model_path)
    report = analyze(
        model,
        source,
        data_description=data_description,
        observers=observers,
        arrays=arrays,
        name=name,
    )
    if not isinstance(model_path, onnx.ModelProto):
        report.model = str(model_path)
    return choose_fp32_nodes(model, report, options), report


# --------------------------------------------------------------------------- measured release


def _session(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray] | None = None) -> Any:
    """An ONNX Runtime session of ``model`` whose large float weights reach it as in-memory
    external initializers (:func:`calibration.observers.weights_in_memory`) instead of inside the
    serialized model: the 90 MB of a sentence encoder are then neither serialized here nor parsed
    again by ONNX Runtime (minilm: 0.45 s -> 0.22 s); same bits (tests pin it). ``arrays``: the
    weights' values already read, by name (each is read here otherwise)."""
    import onnxruntime as ort

    from calibration.observers import in_memory_session, no_spinning

    options = ort.SessionOptions()
    options.log_severity_level = 4
    no_spinning(options)  # as the analysis pass: its runs are short and the machine may be shared
    return in_memory_session(model, options, arrays)


def _min_cosine(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """Compare's cosine (cosine_of), min over outputs, and only it (not the budget's scale check): -1.0
    when the candidate has NaN/Inf (the other metrics cost more than the runs on large outputs)."""
    worst = 1.0
    for k in range(len(reference[0])):
        ref = np.concatenate([np.asarray(b[k], np.float64).reshape(-1) for b in reference])
        cand = np.concatenate([np.asarray(b[k], np.float64).reshape(-1) for b in candidate])
        if not np.all(np.isfinite(cand)):
            return -1.0
        finite = np.isfinite(ref)
        if not finite.all():
            ref, cand = ref[finite], cand[finite]
        worst = min(worst, cosine_of(ref, cand, equal=bool(np.array_equal(ref, cand))))
    return worst


def hard_fp32_nodes(model: onnx.ModelProto, keep: dict[str, str], report: RangeReport) -> set[str]:
    """Kept nodes whose reason no emulation can clear: values beyond 65504 or NaN/Inf already seen,
    sums of squares beyond the limit inside a kernel (rule 3: emulation models storage, not
    accumulation), and control flow whose subgraphs were not observed. The rest (underflow,
    near-overflow below 65504, the normalisation chains that follow them, a squaring reduction
    whose measured sum fits fp16, kept by rule 4 or 6 only) is decided by measurement."""
    nodes = {n.name: n for n in model.graph.node}
    hard: set[str] = set()
    for weight in report.weights:
        if weight.stats.overflow or weight.stats.nonfinite:
            hard.update(c for c in weight.consumers if c in keep)
    for t in report.tensors:
        if t.stats.nonfinite or t.stats.absmax > FP16_MAX:
            hard.update(n for n in [t.producer, *t.consumers] if n in keep)
    for name in keep:
        node = nodes.get(name)
        if node is None:
            continue
        if node.op_type in CONTROL_FLOW or (
            node.op_type in SQUARING and _internal_sum(node, report)[0] > report.thresholds.max_abs
        ):
            hard.add(name)
    return hard


def release_measured(
    model: onnx.ModelProto,
    keep: dict[str, str],
    report: RangeReport,
    feeds: list[dict[str, np.ndarray]],
    *,
    slack: float = 0.5,
    reference: list[list[np.ndarray]] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    halves: dict[str, np.ndarray] | None = None,
    blocked_ops: Collection[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Return to fp16 every kept node whose fp32 island the outputs do not measurably need.

    On ``feeds``, the plan is emulated (edgedeploy.stages.precision.emulate) with ``keep`` in fp32: its
    output error (1 - cosine, min over outputs) is the baseline. The soft nodes (see
    :func:`hard_fp32_nodes`) are released all at once when the error stays within ``(1 + slack)``
    times the baseline plus 1e-6 and nothing becomes NaN/Inf; otherwise one by one in graph order,
    each kept only if releasing it breaks that bound. Every plan runs in one emulated graph whose
    soft nodes are switchable (one ONNX Runtime session, built once); plans measured: 2 when all
    can go, else 2 + the number of soft nodes. ``reference``: the fp32 outputs on ``feeds``
    (per feed, per output), when the caller already has them (OutputRecorder in the analysis);
    ``arrays``: the float weights' values by name, when the caller has read them (the analysis);
    ``halves``: gets the converter's float16 of the weights the emulation rounds (see emulate_fp16);
    ``blocked_ops``: the op types the build keeps in fp32 (fp16.blocked_ops; by default for the CPU).
    """
    from edgedeploy.stages.precision.budget import OutputEvaluator
    from edgedeploy.stages.precision.emulate import converter_blocked_ops, emulate_fp16, switch_input

    hard = hard_fp32_nodes(model, keep, report)
    soft = [n for n in keep if n not in hard]
    if not soft or not feeds:
        return keep, []
    evaluator = OutputEvaluator(model, feeds, outputs=reference)
    fixed = set(keep) - set(soft)
    plain = [
        w.name
        for w in report.weights
        if w.where == "initializer" and not (w.stats.flushed or w.stats.overflow or w.stats.nonfinite)
    ]
    weights = dict(arrays or {})  # with the rounded twins the emulation adds, for this session only
    emulated = emulate_fp16(
        model,
        fixed,
        converter_blocked_ops(model) if blocked_ops is None else blocked_ops,
        switchable=soft,
        cast_weights=plain,
        arrays=weights,
        halves=halves,
    )
    session = _session(emulated, weights)
    flags = [i.name for i in session.get_inputs() if i.name.startswith(switch_input(""))]
    inputs = [i.name for i in session.get_inputs() if i.name not in set(flags)]

    def error(fp32: set[str]) -> float:
        on = {switch_input(n): np.array(n not in fp32) for n in soft}
        outputs = [
            session.run(None, {**{k: v for k, v in feed.items() if k in inputs}, **{f: on[f] for f in flags}})
            for feed in feeds
        ]
        return 1.0 - _min_cosine(evaluator.reference, outputs)

    base = error(set(keep))
    bound = base * (1.0 + slack) + 1e-6
    current = set(keep)
    released: list[str] = []
    if error(current - set(soft)) <= bound:
        released = list(soft)
    else:
        for name in soft:
            if error(current - {name}) <= bound:
                current.discard(name)
                released.append(name)
    notes = [f"{n}: back to fp16, measured ({keep[n]} did not change the outputs)" for n in released]
    return {n: r for n, r in keep.items() if n not in set(released)}, notes
