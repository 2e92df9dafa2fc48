"""The ``auto`` calibration algorithm: thresholds chosen by the error they cause, measured on
held-out calibration samples, instead of assumed from one rule.

No single rule wins on real models: on PaddleOCR's PP-OCRv4 recognizer, entropy clips the
attention inputs and the output cosine falls to 0.51 while max keeps 0.96; on its direction
classifier entropy is the better one. So ``auto`` measures, in two steps:

1. **per tensor**: every candidate threshold (max, entropy, percentile, mse from the same
   histogram) is applied to the tensor's held-out values, and the consumers that the plan
   quantizes (Conv, ConvTranspose, Gemm, MatMul, with their weights quantized as they will be)
   are run on them in ONNX Runtime, one node at a time; the candidate with the smallest relative
   squared error at the layer's output wins. A tensor without a quantized consumer (a residual
   branch, an output in ONNX Runtime's placement) is judged by its own error.
2. **per model**: the per-tensor choice and each rule applied to every tensor are written as
   Q/DQ models and run on the held-out samples; the one whose outputs are closest to FP32
   (highest cosine, min over outputs) is kept. Local errors do not add up exactly along a
   network, so this step guards the first one. With few held-out samples one can make that
   pooled cosine: a rule's lead that one sample makes, that the other samples reverse and that
   most samples contradict does not overrule the per-tensor choice (see :func:`_vote_winner`).

Hand-written: neither ONNX Runtime's nor Model Optimizer's calibrators choose per tensor.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from calibration.algorithms import AlgorithmOptions, compute_threshold
from calibration.errors import CalibrationError
from calibration.observers import AbsHistogram
from calibration.qdq import (
    WEIGHTED_OPS,
    QuantizeOptions,
    QuantPlan,
    TensorQuant,
    WeightCache,
    activation_qparams,
    activation_scale,
    dequantized_weight,
    quantized_weight,
    saturating_activation,
    tensor_readers,
    write_qdq,
)
from calibration.threads import map_ordered

RULES = ("max", "entropy", "percentile", "mse")
VOTE_TIE = 1e-5  # model-level vote: cosine differences below this are ties (the figures' resolution)
STACKED_VALUES = 1 << 18  # per-tensor step: larger stacked inputs are run one candidate at a time
# per-tensor step: a tensor's candidates run side by side (a thread pool per consumer and sample)
# only from this many held-out values on. Below it the pools cost more than they gain, beside the
# tensors already measured side by side: ddddocr's detector's step (839 such calls of 0.3-2 ms)
# took 1.45-1.77 s on 2 workers with them and 1.03-1.17 s without; magika's one large tensor
# (2^20 values) still gets them.
PARALLEL_CANDIDATES = 1 << 19
SCREEN_RATIO = 1.5  # model-level step: candidates further behind on half the samples stop (see _screen)


@dataclass
class Selection:
    """What ``auto`` chose: per tensor the rule and threshold, and the model-level comparison."""

    thresholds: dict[str, float]
    rules: dict[str, str]  # tensor -> rule chosen for it
    winner: str  # "per-tensor" or one of RULES
    scores: dict[str, float] = field(default_factory=dict)  # candidate set -> held-out cosine
    held_out_samples: int = 0
    exclude_ops: tuple[str, ...] = ()  # ops the chosen plan leaves in float (ONNX Runtime placement)
    exclude_nodes: tuple[str, ...] = ()  # node patterns it leaves in float (see qdq.narrow_convs)
    narrow_check: dict[str, Any] = field(default_factory=dict)  # the vote on them (see plan_vote)
    alternatives: dict[str, float] = field(default_factory=dict)  # other plans: best held-out cosine
    screened: dict[str, float] = field(default_factory=dict)  # left out after the first half: its cosine
    margins: dict[str, float] = field(default_factory=dict)  # rule -> lead over per-tensor, one sample out
    wins: dict[str, list[int]] = field(default_factory=dict)  # rule -> held-out samples better, worse
    # the plan chosen on, and the Q/DQ model the winner was scored as (write_qdq of ``plan`` and
    # ``thresholds``), when kept
    plan: QuantPlan | None = field(default=None, repr=False, compare=False)
    qdq: onnx.ModelProto | None = field(default=None, repr=False, compare=False)
    # the winner's per-sample sums (see _sample_sums), for a later comparison with a variant of it
    sample_sums: np.ndarray | None = field(default=None, repr=False, compare=False)
    # bias correction (see bias_corrected): node -> bias shift when the held-out samples kept it,
    # and how the corrected winner scored against the winner
    bias_shift: dict[int, np.ndarray] | None = field(default=None, repr=False, compare=False)
    bias_check: dict[str, Any] = field(default_factory=dict)
    # GPTQ weight rounding (see rounding_checked): the weights it rounded (none: round-to-nearest
    # kept) and the held-out figures of both
    rounded: tuple[str, ...] = ()
    rounding_check: dict[str, Any] = field(default_factory=dict)
    # the held-out cosine of ``qdq`` when a later step (rounding) replaced the winner's model
    kept_score: float | None = None

    def score(self) -> float:
        """The held-out cosine of the model kept so far (``qdq``)."""
        return self.scores[self.winner] if self.kept_score is None else self.kept_score


class SampleObserver:
    """Keeps held-out values of some tensors for step 1: whole batches while they fit in
    ``max_values`` per tensor, else the leading rows (axis 0) that do (at least one)."""

    def __init__(self, names: Sequence[str], max_values: int = 1 << 20) -> None:
        self.wanted = set(names)
        self.max_values = max_values
        self.values: dict[str, list[np.ndarray]] = {}

    def observe(self, name: str, array: np.ndarray) -> None:
        if name not in self.wanted or array.dtype.kind != "f" or array.ndim == 0 or array.size == 0:
            return
        kept = self.values.setdefault(name, [])
        room = self.max_values - sum(a.size for a in kept)
        rows = min(len(array), room // max(1, array.size // len(array)))
        if rows >= 1 or not kept:
            kept.append(np.array(array[: max(rows, 1)], copy=True))


def candidates(hist: AbsHistogram, levels: int, options: AlgorithmOptions) -> dict[str, float]:
    """Every rule's threshold for one tensor, from its histogram."""
    return {
        rule: compute_threshold(
            hist, AlgorithmOptions(rule, options.percentile, max_clipped=options.max_clipped), levels
        )
        for rule in RULES
    }


def fake_quant(x: np.ndarray, threshold: float, unsigned: bool) -> np.ndarray:
    """Quantize-dequantize as the Q/DQ pair does (symmetric, zero point 0; uint8 for non-negative)."""
    qmax = 255 if unsigned else 127
    scale = activation_scale(threshold, qmax)
    lo = 0 if unsigned else -128  # QuantizeLinear saturates int8 to [-128, 127]
    return (np.clip(np.round(x / scale), lo, qmax) * scale).astype(np.float32)  # type: ignore[no-any-return]


# one candidate's quantization: (scale, zero point, lowest and highest integer of its type)
QParams = tuple[float, int, int, int]


def planned_qparams(
    tq: TensorQuant,
    thresholds: Sequence[float],
    options: QuantizeOptions,
    extent: tuple[float, float] | None = None,
) -> list[QParams]:
    """For each threshold, the scale, zero point and integer range the Q/DQ model will use."""
    params = []
    for threshold in thresholds:
        scale, zero, dtype = activation_qparams(tq, threshold, options, extent)
        lo, hi = (0, 255) if dtype == onnx.TensorProto.UINT8 else (-128, 127)
        params.append((scale, zero, lo, hi))
    return params


class _NodeRunner:
    """One quantized consumer as a one-node ONNX Runtime session (weights quantized as planned)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        index: int,
        plan: QuantPlan,
        consts: Mapping[str, np.ndarray],
        cache: WeightCache | None = None,
        arena: bool = True,
    ) -> None:
        """``cache``: see :func:`~calibration.qdq.quantized_weight`; the consumer runs on the weights
        the Q/DQ model will hold (its int8 values times its float32 scales). ``arena``: ONNX
        Runtime keeps the buffers of a run for the next (its CPU memory arena); without it they
        are freed after each run, which a node whose runs are large and side by side needs (see
        :func:`consumer_errors`).

        The large float32 weights reach ONNX Runtime as arrays
        (:func:`~calibration.observers.in_memory_session`), not serialized into the node's model and
        parsed again: the same outputs bit for bit, and about half of the node sessions' build time
        (ddddocr's recognizer's 22: 0.30-0.38 s of CPU to 0.12-0.17 s)."""
        import onnxruntime as ort

        from calibration.observers import IN_MEMORY_BYTES, in_memory_session, in_memory_stub

        node = model.graph.node[index]
        self.node = node
        weights = {use: w for w in plan.weights.values() for use in w.uses}
        inits, inputs = [], []
        arrays: dict[str, np.ndarray] = {}
        for j, name in enumerate(node.input):
            if not name:
                continue
            if name in consts:
                value = consts[name]
                wq = weights.get((index, j))
                if wq is not None:
                    qmax = plan.options.weight_qmax
                    q, scale = quantized_weight(model, name, wq.axis, qmax, cache, value)
                    value = dequantized_weight(q, scale, wq.axis)
                if value.dtype == np.float32 and value.nbytes > IN_MEMORY_BYTES and name not in arrays:
                    arrays[name] = value
                elif name not in arrays:
                    inits.append(numpy_helper.from_array(value, name))
            else:
                inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        self.inputs = [i.name for i in inputs]
        out = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
        single = helper.make_node(node.op_type, list(node.input), [node.output[0]], name=node.name)
        single.attribute.extend(node.attribute)
        graph = helper.make_graph([single], "consumer", inputs, [out], inits)
        for name, value in arrays.items():
            in_memory_stub(graph, name, value.shape)
        m = helper.make_model(graph, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        options.enable_cpu_mem_arena = arena
        self.session = in_memory_session(m, options, arrays)

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.run_float32(feed), np.float64)

    def run_float32(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run(None, {k: feed[k] for k in self.inputs})[0])


def _relative(got: np.ndarray, ref: np.ndarray, denom: float | None = None) -> float:
    """Relative squared error of ``got`` against ``ref`` (``denom``: :func:`_energy` of ``ref``,
    when the caller compares several candidates with the same reference)."""
    return float(((got - ref) ** 2).sum() / (_energy(ref) if denom is None else denom))


def _energy(ref: np.ndarray) -> float:
    return max(float((ref**2).sum()), 1e-30)


def choose_per_tensor(
    model: onnx.ModelProto,
    plan: QuantPlan,
    cands: Mapping[str, Mapping[str, float]],
    samples: Mapping[str, list[np.ndarray]],
    memo: dict[tuple[object, ...], np.ndarray] | None = None,
    extents: Mapping[str, tuple[float, float]] | None = None,
    consts: Mapping[str, np.ndarray] | None = None,
    workers: int = 1,
    weights: WeightCache | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Step 1: per tensor the candidate with the smallest relative error at its quantized consumers
    (``model`` is the one the plan was made on, at opset >= 13). ``memo`` carries the measured
    errors from one plan to another of the same model and samples: a tensor with the same
    candidates, consumers, quantization and quantized weights is not measured twice.
    ``extents``: observed (min, max), for the asymmetric tensors of ONNX Runtime's placement.
    ``consts``: the model's :func:`~calibration.qdq.constant_values` when the caller has them.
    ``workers``: threads measuring tensors side by side (:mod:`calibration.threads`).
    ``weights``: quantized weights of ``model``, see :func:`~calibration.qdq.quantized_weight`."""
    from calibration.qdq import constant_values

    consts = constant_values(model) if consts is None else consts
    consumers: dict[str, list[tuple[int, int]]] = {}
    for tq in plan.activations.values():
        for i, j in tq.consumers:
            if model.graph.node[i].op_type in WEIGHTED_OPS:
                consumers.setdefault(tq.share or tq.name, []).append((i, j))
    runners = _Runners(model, plan, consts, weights, workers)
    thresholds: dict[str, float] = {}
    rules: dict[str, str] = {}
    measured: list[tuple[str, list[float], dict[float, str], tuple[object, ...]]] = []
    memo = {} if memo is None else memo
    todo: dict[tuple[object, ...], tuple[str, list[QParams]]] = {}  # measured once per key
    for name, options in cands.items():
        tq, extent = plan.activations[name], (extents or {}).get(name)
        unique: dict[float, str] = {}
        for rule, thr in options.items():
            unique.setdefault(thr, rule)
        if len(unique) == 1 or not samples.get(name):
            rule = "entropy" if "entropy" in options else next(iter(options))
            thresholds[name], rules[name] = options[rule], rule
            continue
        tried = list(unique)
        params = planned_qparams(tq, tried, plan.options, extent)
        mine = sorted(consumers.get(name, []))
        key = (name, tuple(params), tuple(mine), plan.options.weight_qmax, _weight_uses(plan, mine))
        measured.append((name, tried, unique, key))
        if key not in memo:
            todo.setdefault(key, (name, params))

    def measure(job: tuple[str, list[QParams]]) -> np.ndarray:
        name, params = job
        return _measured_errors(name, samples, consumers.get(name, []), runners, params, workers)

    # the largest first: a tensor with most of the work starts at once instead of last (magika:
    # one of 15 tensors took 0.37 s of its 0.43 s step); each result still goes to its own key
    order = sorted(todo, key=lambda k: -_work(todo[k][0], samples, consumers.get(todo[k][0], [])))
    memo.update(zip(order, map_ordered(measure, [todo[k] for k in order], workers), strict=True))
    for name, tried, unique, job in measured:
        errors = memo[job]
        best = min(range(len(tried)), key=lambda t: (errors[t], RULES.index(unique[tried[t]])))
        thresholds[name], rules[name] = tried[best], unique[tried[best]]
    return thresholds, rules


def _work(name: str, samples: Mapping[str, list[np.ndarray]], consumers: Sequence[tuple[int, int]]) -> int:
    """A tensor's share of the per-tensor step, for scheduling: its held-out values times the
    consumers that run on them."""
    return sum(x.size for x in samples.get(name, ())) * max(1, len(consumers))


class _Runners:
    """The consumers' :class:`_NodeRunner` by node index, each made once (None: a node ONNX Runtime
    cannot build alone) also when several threads ask for it at the same time. Different nodes'
    sessions are made side by side: one lock per node (ddddocr's recognizer spent 0.34 s making
    its node sessions under one lock, with the other thread waiting)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        plan: QuantPlan,
        consts: Mapping[str, np.ndarray],
        cache: WeightCache | None = None,
        workers: int = 1,
    ) -> None:
        self.model, self.plan, self.consts, self.cache = model, plan, consts, cache
        # runs of the consumers too large to stack, on any thread: at most ``workers`` at a time
        # (see consumer_errors), so that a tensor's candidates side by side do not add to the
        # peak memory of two tensors measured side by side
        self.slots = threading.Semaphore(max(1, workers))
        self.made: dict[int, _NodeRunner | None] = {}
        self.lock = threading.Lock()  # guards ``locks``
        self.locks: dict[int, threading.Lock] = {}

    def get(self, index: int, large: bool = False) -> _NodeRunner | None:
        """``large``: the node's runs are too large to stack, so its session keeps no memory arena
        (decided by the first call for the node)."""
        with self.lock:
            lock = self.locks.setdefault(index, threading.Lock())
        with lock:
            if index not in self.made:
                try:
                    self.made[index] = _NodeRunner(
                        self.model, index, self.plan, self.consts, self.cache, arena=not large
                    )
                except Exception:  # a node ORT cannot build alone: judged by the tensor itself
                    self.made[index] = None
            return self.made[index]


def _measured_errors(
    name: str,
    samples: Mapping[str, list[np.ndarray]],
    consumers: Sequence[tuple[int, int]],
    runners: _Runners,
    params: Sequence[QParams],
    workers: int = 1,
) -> np.ndarray:
    """Per candidate of ``params``, the relative error tensor ``name``'s quantization causes at its
    quantized ``consumers`` (node, input), summed over its held-out ``samples``; a sample no
    consumer runs on is judged by the tensor's own error. ``runners`` makes one node's session;
    ``workers``: see :func:`consumer_errors`, for samples of :data:`PARALLEL_CANDIDATES` values or
    more (the errors are the same either way)."""
    errors = np.zeros(len(params))
    tq = runners.plan.activations.get(name)
    kind = tq.saturates if tq is not None else ""
    for k, x in enumerate(samples[name]):
        measured = False
        for i, j in consumers:
            runner = runners.get(i, not _stacks(x.size, len(params)))
            feed = _feed_for(runner, samples, k) if runner is not None else None
            if runner is None or feed is None:
                continue
            inp = runner.node.input[j]  # a pass-through consumer reads its own tensor
            value = feed.get(inp)
            if value is None:
                value = samples[inp][k] if inp in samples and k < len(samples[inp]) else x
            inner = workers if x.size >= PARALLEL_CANDIDATES else 1  # see PARALLEL_CANDIDATES
            consumer = consumer_errors(runner, feed, inp, value, params, inner, runners.slots)
            if consumer is not None:  # None: shapes that do not line up once sliced
                errors += consumer
                measured = True
        if not measured:  # judged by the tensor itself, after the activation that reads it
            errors += own_errors(x, params, kind)
    return errors


def own_errors(x: np.ndarray, params: Sequence[QParams], kind: str = "") -> list[float]:
    """Per candidate of ``params``, the relative error its quantization of ``x`` causes after the
    activation ``kind`` that reads ``x`` (:func:`~calibration.qdq.saturating_activation`; none:
    ``x`` itself), in float64.

    A candidate's quantized values are its at most 256 levels, so the activation is computed once
    per level and gathered, not once per value: the same float64 values (one elementwise function
    of the same float32 level), and the same errors bit for bit. ddddocr's detector's SiLU inputs
    in ONNX Runtime's placement took most of its per-tensor step's own-error time there (the
    float64 SiLU of every candidate's every value). ``x`` with NaN/Inf (or squares past float64)
    goes the long way: its errors are NaN or Inf either way."""
    xd = saturating_activation(kind, x) if kind else x.astype(np.float64)
    energy = _energy(xd)
    if not kind or x.dtype != np.float32 or not math.isfinite(energy):
        if kind:
            return [_relative(saturating_activation(kind, q), xd, energy) for q in fake_quant_all(x, params)]
        return [_squared_error(q, xd) / energy for q in fake_quant_all(x, params)]
    found = []
    for scale, zero, lo, hi in params:  # the steps as fake_quant_all takes them, in float32
        s, low, high = np.float32(scale), np.float32(lo - zero), np.float32(hi - zero)
        steps = np.divide(x, s)
        np.round(steps, out=steps)
        np.clip(steps, low, high, out=steps)
        np.subtract(steps, low, out=steps)  # small integers: exact
        table = saturating_activation(kind, np.arange(lo - zero, hi - zero + 1, dtype=np.float32) * s)
        found.append(_squared_error(table[steps.astype(np.intp)], xd) / energy)
    return found


def _squared_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``((got - ref) ** 2).sum()`` with ``ref`` float64, without the float64 copy of a float32
    ``got`` (the subtraction casts it) or a second temporary: the same sum bit for bit."""
    diff = np.subtract(got, ref, dtype=np.float64)
    np.square(diff, out=diff)
    return float(diff.sum())


def _weight_uses(
    plan: QuantPlan, consumers: Sequence[tuple[int, int]]
) -> tuple[tuple[int, int, int | None], ...]:
    """The quantized weights the given consumer nodes read: (node, input, axis; None for one scale)."""
    nodes = {i for i, _ in consumers}
    return tuple(sorted((i, j, w.axis) for w in plan.weights.values() for i, j in w.uses if i in nodes))


def consumer_errors(
    runner: _NodeRunner,
    feed: Mapping[str, np.ndarray],
    inp: str,
    value: np.ndarray,
    params: Sequence[QParams],
    workers: int = 1,
    slots: threading.Semaphore | None = None,
) -> np.ndarray | None:
    """The relative error at ``runner``'s output for each candidate quantization of ``params``
    applied to its input ``inp`` (whose float value is ``value``); None when the node does not
    run on the values.

    One run for all of them where the node treats axis 0 of ``inp`` as a batch (see
    :func:`_batch_axis_ok`): the reference and every candidate stacked along it, the node's
    other activations repeated to match, which saves the per-run overhead on small nodes. Inputs
    of more than ``STACKED_VALUES`` values in all are run one candidate at a time: there the
    arithmetic dominates either way, and the stacked buffers only raise the peak memory. There
    the candidates run on ``workers`` threads after the reference (the node's session is
    thread-safe and runs on one thread), each compared as it comes: the same errors. ``slots``,
    when given, is held for each of those runs: shared by the tensors measured side by side, it
    bounds the runs (and outputs) alive at a time across them. Such a node's session keeps no
    memory arena (:class:`_NodeRunner`): an arena grows to hold every run that was ever alive at
    once and keeps it until the step ends, which with two runs side by side cost PP-OCRv4's
    recognizer 230-300 MB more peak memory; without arenas there its peak went from 1.05 GB
    to 0.75 GB.
    """
    copies = len(params) + 1
    stacked = (
        _stacked_feed(runner, feed, inp, value, params)
        if _stacks(value.size, len(params)) and _batch_axis_ok(runner, feed, inp)
        else None
    )
    if stacked is not None:
        try:
            out = runner.run_float32(stacked)
        except Exception:  # ORT refused the stacked shapes: one run per candidate instead
            out = None
        if out is not None and out.ndim and out.shape[0] == copies * feed[inp].shape[0]:
            return _stacked_errors(out.reshape(copies, -1))

    def run(x: np.ndarray) -> np.ndarray:
        with slots if slots is not None else contextlib.nullcontext():
            return runner.run_float32({**feed, inp: x})

    try:
        ref = np.asarray(run(value), np.float64)
        energy = _energy(ref)
        return np.array(
            map_ordered(
                # the float32 output against the float64 reference: _relative's figure, without
                # the float64 copy of each output (see _squared_error)
                lambda q: _squared_error(run(q), ref) / energy,
                list(fake_quant_all(value, params)),
                workers,
            )
        )
    except Exception:  # shapes that do not line up once sliced
        return None


def _stacks(size: int, candidates: int) -> bool:
    """Whether an input of ``size`` values is small enough to run stacked with ``candidates``
    quantized copies beside the reference (see :func:`consumer_errors`)."""
    return (candidates + 1) * size <= STACKED_VALUES


def _stacked_errors(chunks: np.ndarray) -> np.ndarray:
    """Relative squared error of rows 1.. against row 0 (float32 differences, float64 sums: the
    float64 copy of a stacked output cost as much as the node's run)."""
    ref = chunks[0]
    denom = max(float(np.square(ref).sum(dtype=np.float64)), 1e-30)
    diff = chunks[1:] - ref
    np.square(diff, out=diff)
    return diff.sum(axis=1, dtype=np.float64) / denom  # type: ignore[no-any-return]


def _batch_axis_ok(runner: _NodeRunner, feed: Mapping[str, np.ndarray], inp: str) -> bool:
    """Whether stacking copies of ``inp`` along axis 0 stacks the node's output the same way:
    the data input of Conv / ConvTranspose (N first) and Gemm's A when not transposed, with no
    other activation input; MatMul's A, or its B when it has batch dimensions, where the other
    activation has at most the same rank and, at the same rank, the same axis-0 size (it is
    repeated along; a lower rank broadcasts)."""
    node = runner.node
    x = feed.get(inp)
    if x is None or x.ndim < 2:
        return False
    others = [feed[o] for o in runner.inputs if o != inp]
    if node.op_type != "MatMul":
        transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
        return node.input[0] == inp and not others and not transposed
    if node.input[0] != inp and x.ndim < 3:
        return False
    return all(y.ndim < x.ndim or (y.ndim == x.ndim and y.shape[0] == x.shape[0]) for y in others)


def _stacked_feed(
    runner: _NodeRunner,
    feed: Mapping[str, np.ndarray],
    inp: str,
    value: np.ndarray,
    params: Sequence[QParams],
) -> dict[str, np.ndarray] | None:
    """The reference and every candidate of ``inp`` stacked on axis 0 (None if ``value``, the
    input's float value, is not the fed one's shape)."""
    x = feed[inp]
    if value.shape != x.shape:
        return None
    copies = len(params) + 1
    stacked = {
        other: np.concatenate([feed[other]] * copies) if feed[other].ndim == x.ndim else feed[other]
        for other in runner.inputs
        if other != inp
    }
    buffer = np.empty((copies, *x.shape), np.float32)
    buffer[0] = value
    fake_quant_all(value, params, out=buffer[1:])
    stacked[inp] = buffer.reshape((copies * x.shape[0], *x.shape[1:]))
    return stacked


def fake_quant_all(x: np.ndarray, params: Sequence[QParams], out: np.ndarray | None = None) -> np.ndarray:
    """Quantize-dequantize ``x`` once per candidate of ``params`` (scale, zero point, integer
    range): shape ``(len(params), *x.shape)``, written into ``out`` when given (float32 values
    are quantized there in place, the same arithmetic without the temporaries). The clip is
    taken relative to the zero point, ``round(x / s) + z`` clipped to ``[lo, hi]`` minus ``z``,
    which is exact and leaves symmetric candidates (``z = 0``) as :func:`fake_quant` does them."""
    shape = (-1,) + (1,) * x.ndim
    scales = np.array([p[0] for p in params], np.float32).reshape(shape)
    lows = np.array([p[2] - p[1] for p in params], np.float32).reshape(shape)
    highs = np.array([p[3] - p[1] for p in params], np.float32).reshape(shape)
    if x.dtype != np.float32:
        result = (np.clip(np.round(x[None] / scales), lows, highs) * scales).astype(np.float32)
        if out is None:
            return result  # type: ignore[no-any-return]
        out[...] = result
        return out
    q = np.empty((len(params), *x.shape), np.float32) if out is None else out
    np.divide(x[None], scales, out=q)
    np.round(q, out=q)
    np.clip(q, lows, highs, out=q)
    np.multiply(q, scales, out=q)
    return q


def _feed_for(
    runner: _NodeRunner, samples: Mapping[str, list[np.ndarray]], k: int
) -> dict[str, np.ndarray] | None:
    feed = {}
    for name in runner.inputs:
        values = samples.get(name)
        if not values or k >= len(values):
            return None
        feed[name] = values[k]
    return feed


def output_cosine(
    reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]]
) -> float:
    """Min over outputs of the cosine between flattened outputs (:func:`cosine_of`); -1 for NaN/Inf.
    The reference's side (its float64 vector and norm) is made once per reference, see
    :func:`pooled_reference`."""
    worst = 1.0
    for k in range(len(reference[0])):
        r, norm = pooled_reference(reference, k)
        # cast as it is copied in: the same float64 values, without a float64 temporary per feed
        c = np.concatenate([np.asarray(b[k]).ravel() for b in candidate], dtype=np.float64)
        if not np.all(np.isfinite(c)):
            return -1.0
        worst = min(worst, cosine_of(r, c, equal=bool(np.array_equal(r, c)), norm=norm))
    return worst


# (k, ids of a reference's arrays) -> weak references to them, their float64 vector and norm; an
# entry goes when its first array does (weakref.finalize)
_POOLED: dict[tuple[int, ...], tuple[list[weakref.ref[np.ndarray]], np.ndarray, Any]] = {}
_POOLED_LOCK = threading.Lock()


def pooled_reference(reference: Sequence[Sequence[np.ndarray]], k: int) -> tuple[np.ndarray, Any]:
    """Output ``k`` of every feed of ``reference`` flattened into one float64 vector, and its norm
    (``np.linalg.norm``), as :func:`output_cosine` compares them with a candidate's.

    Made once per reference (the same arrays, by identity, also in a slice of the list) and kept
    while its first array lives: every candidate, screening round and variant of a calibration is
    compared with the same FP32 held-out outputs, and on captcha-rec (16 x [20, 1, 8210]) making
    the vector and its norm was about half of each of the 10 comparisons, on the main thread with
    the workers idle. The same vector and norm, so the same cosines to the bit."""
    pieces = [b[k] for b in reference]
    arrays = bool(pieces) and all(isinstance(p, np.ndarray) for p in pieces)
    key = (k, *map(id, pieces))
    if arrays:
        with _POOLED_LOCK:
            found = _POOLED.get(key)
        if found is not None and all(ref() is p for ref, p in zip(found[0], pieces, strict=True)):
            return found[1], found[2]
    r = np.concatenate([np.asarray(p).ravel() for p in pieces], dtype=np.float64)
    norm = np.linalg.norm(r)
    if arrays:  # weak references: the ids in the key are not reused while the entry is trusted
        with _POOLED_LOCK:
            _POOLED[key] = ([weakref.ref(p) for p in pieces], r, norm)
        weakref.finalize(pieces[0], _POOLED.pop, key, None)
    return r, norm


def cosine_of(r: np.ndarray, c: np.ndarray, equal: bool, norm: Any = None) -> float:
    """The cosine of two equal-length float64 vectors: exactly 1 where they are ``equal`` (dot / norms
    rounds to 0.9999999999999999 or 1.0000000000000002), else within [-1, 1]; 0 where one is all
    zeros and the other is not.

    A copy of compare's (edgedeploy/device/verify_outputs.py ``cosine_of``), kept because neither
    side can import the other: calibration is the bottom layer and imports no edgedeploy, and
    verify_outputs.py runs alone on the device with NumPy only. ``norm``: ``np.linalg.norm(r)``,
    when the caller has it (:func:`pooled_reference`)."""
    if equal:
        return 1.0
    denom = float((np.linalg.norm(r) if norm is None else norm) * np.linalg.norm(c))
    return min(1.0, max(-1.0, float(r @ c) / denom)) if denom > 0 else 0.0


def _sample_sums(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    counts: Sequence[int],
) -> np.ndarray | None:
    """Per held-out sample and output, the sums a cosine is made of (r.c, r.r, c.c), shape
    (samples, outputs, 3); None when the candidate has a NaN/Inf. An output's batch axis is the
    first of its axes as long as the batch's sample count (``counts``), axis 0 if that one is (a
    recurrent state is [layers, batch, hidden]); a batch with an output that has none is one unit."""
    units: list[np.ndarray] = []
    for ref, got, n in zip(reference, candidate, counts, strict=True):
        axes = [_batch_axis(np.shape(r), n) for r in ref]
        rows = n if n > 1 and None not in axes else 1
        sums = np.empty((rows, len(ref), 3))
        for k, (r, c, axis) in enumerate(zip(ref, got, axes, strict=True)):
            r64, c64 = np.asarray(r, np.float64), np.asarray(c, np.float64)
            if r64.ndim:  # the batch axis first (a 0-d output, a mean or a count, is one unit)
                r64, c64 = np.moveaxis(r64, axis or 0, 0), np.moveaxis(c64, axis or 0, 0)
            r64, c64 = r64.reshape(rows, -1), c64.reshape(rows, -1)
            if not np.all(np.isfinite(c64)):
                return None
            sums[:, k] = np.stack([(r64 * c64).sum(1), (r64 * r64).sum(1), (c64 * c64).sum(1)], 1)
        units.append(sums)
    return np.concatenate(units)


def _batch_axis(shape: tuple[int, ...], n: int) -> int | None:
    return next((axis for axis, size in enumerate(shape) if size == n), None)


def _cosines(sums: np.ndarray) -> np.ndarray:
    """Min over outputs of the pooled cosine, from sums of shape (..., outputs, 3), read as
    :func:`cosine_of` reads it: within [-1, 1] (r.c / sqrt(r.r * c.c) rounds to 1.0000000000000002
    for an output 3x the reference), exactly 1 for identical outputs (their three sums are equal,
    and sqrt(s * s) is s), 0 where one is all zeros and the other is not."""
    denom = np.sqrt(sums[..., 1] * sums[..., 2])
    safe = np.where(denom > 0, denom, 1.0)
    cos = np.where(denom > 0, sums[..., 0] / safe, (sums[..., 1] == sums[..., 2]).astype(np.float64))
    return np.asarray(np.clip(cos, -1.0, 1.0).min(-1))


def drop_one_margins(
    per_sample: Mapping[str, np.ndarray | None], default: str = "per-tensor"
) -> dict[str, float]:
    """Per candidate, its smallest lead over ``default`` in pooled cosine when any one held-out
    sample is left out (``per_sample``: candidate -> :func:`_sample_sums`; -2 for a NaN/Inf, or
    with fewer than two samples the lead on all of them)."""
    base = per_sample[default]
    margins: dict[str, float] = {}
    for label, sums in per_sample.items():
        if label == default:
            continue
        if sums is None or base is None:
            margins[label] = -2.0 if sums is None else 2.0
        elif len(sums) < 2:
            margins[label] = float(_cosines(sums.sum(0)) - _cosines(base.sum(0)))
        else:  # row i: pooled over all samples but i
            margins[label] = float(np.min(_cosines(sums.sum(0) - sums) - _cosines(base.sum(0) - base)))
    return margins


def sample_wins(
    per_sample: Mapping[str, np.ndarray | None], default: str = "per-tensor"
) -> dict[str, list[int]]:
    """Per candidate, on how many held-out samples its cosine (min over outputs) is above and below
    ``default``'s by more than a tie."""
    base = per_sample[default]
    wins: dict[str, list[int]] = {}
    for label, sums in per_sample.items():
        if label == default or sums is None or base is None:
            continue
        diff = _cosines(sums) - _cosines(base)
        wins[label] = [int(np.sum(diff > VOTE_TIE)), int(np.sum(diff < -VOTE_TIE))]
    return wins


def _vote_winner(
    scores: Mapping[str, float],
    margins: Mapping[str, float],
    wins: Mapping[str, Sequence[int]],
    default: str = "per-tensor",
) -> str:
    """The model-level vote: of the candidates whose pooled held-out cosine (``scores``) is above
    ``default``'s, the highest, unless its lead is conflicting evidence: with some one held-out
    sample left out ``default`` leads by more than a tie (``margins``, see
    :func:`drop_one_margins`) *and* the candidate is worse on more held-out samples than it is
    better (``wins``, see :func:`sample_wins`). Then one sample makes the pooled lead against the
    others (on silero-vad, one uncertain chunk where the per-tensor choice's speech probability
    errs, while its outputs are the closer ones on all eight held-out chunks by per-chunk cosine),
    and the per-tensor choice, measured tensor by tensor, stays.
    Either check alone overrules right calls: a lead one sample makes while the others tie (a
    classifier whose other outputs are saturated probabilities: magika), or one carried by a
    sample in a held-out set split 4 to 4 (captcha-rec's CPU placement)."""
    best = default
    for label, margin in margins.items():
        better, worse = wins.get(label, (0, 1))
        if scores[label] > scores[best] and (margin > -VOTE_TIE or better >= worse):
            best = label
    return best


def _challenge(
    score: float, sums: np.ndarray | None, other_score: float, other_sums: np.ndarray | None
) -> dict[str, Any]:
    """The model-level vote between a kept model (``score``: its pooled held-out cosine,
    ``sums``: its :func:`_sample_sums`) and a challenger (``other_``): the challenger's lead with
    any one sample left out, its samples better and worse, and under ``"kept"`` whether it wins,
    which it does only as a rule beats the per-tensor choice (:func:`_vote_winner`): ahead on the
    pooled cosine, and not by one sample against most of the others."""
    per_sample = {"kept": sums, "other": other_sums}
    margins, wins = drop_one_margins(per_sample, "kept"), sample_wins(per_sample, "kept")
    scores = {"kept": score, "other": other_score}
    return {
        "lead_with_one_sample_out": margins["other"],
        "samples_better_worse": wins.get("other"),
        "kept": _vote_winner(scores, margins, wins, "kept") == "other",
    }


def plan_vote(best: Selection, variant: Selection) -> dict[str, Any]:
    """The vote between the winners of two plans (``variant``: another plan's, scored on the same
    held-out samples), see :func:`_challenge`, with the variant's held-out cosine."""
    score = variant.scores[variant.winner]
    vote = _challenge(best.scores[best.winner], best.sample_sums, score, variant.sample_sums)
    return {"held_out_cosine": score, **vote}


SQUASHING = ("Softmax", "LogSoftmax", "Sigmoid")
MOVING = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")


def scored_tensors(model: onnx.ModelProto) -> list[str]:
    """What the model-level step compares: the graph outputs, except that an output made by a
    Softmax or Sigmoid is compared before it (its logits), where saturated probabilities would
    hide the difference (a 2-class softmax scores a cosine of 1.0 for almost any model).

    Numeric tensor outputs only: a sequence or map (scikit-learn's ZipMap of class probabilities)
    has no cosine. A model with none is scored on the float tensors its other outputs are made
    from (ZipMap's probabilities, SequenceConstruct's tensors), see :func:`_behind_outputs`."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for out in model.graph.output:
        if not _numeric_tensor(out.type):
            continue
        node = producer.get(out.name)
        while node is not None and node.op_type in MOVING and node.input:
            node = producer.get(node.input[0])
        names.append(node.input[0] if node is not None and node.op_type in SQUASHING else out.name)
    return names or _behind_outputs(model, producer)


def _numeric_tensor(tp: onnx.TypeProto) -> bool:
    """A tensor type other than strings, or no type declared (ONNX Runtime gives it a tensor)."""
    which = tp.WhichOneof("value")
    return which is None or (which == "tensor_type" and tp.tensor_type.elem_type != onnx.TensorProto.STRING)


def _behind_outputs(model: onnx.ModelProto, producer: Mapping[str, onnx.NodeProto]) -> list[str]:
    """For a model without a numeric tensor output: the float tensors read by the nodes that make
    its outputs (their types from shape inference); refused in one line when there are none."""
    from calibration.graphs import FLOAT_ELEMS, infer_shapes_light
    from calibration.modelinfo import type_text

    try:
        inferred = infer_shapes_light(model)
    except Exception:  # best effort: without inferred types, only the declared ones
        inferred = model
    types = {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    names: list[str] = []
    for out in model.graph.output:
        node = producer.get(out.name)
        for name in node.input if node is not None else ():
            tp = types.get(name)
            if tp is not None and tp.HasField("tensor_type") and tp.tensor_type.elem_type in FLOAT_ELEMS:
                names.append(name)
    if not names:
        outputs = ", ".join(f"'{o.name}' ({type_text(o.type)})" for o in model.graph.output)
        raise CalibrationError(
            f"auto scores its candidates on the model's numeric tensor outputs, and it has none "
            f"(outputs: {outputs or 'none'}) nor a float tensor they are made from: choose "
            "--algorithm entropy, percentile, mse or max"
        )
    return list(dict.fromkeys(names))


# ops whose output carries the peaks of their input to a global max pool: elementwise and shape-only
PEAK_PASSING = frozenset(
    {
        *MOVING,
        *("Slice", "Expand", "Concat", "Split", "Pad", "Cast", "BatchNormalization"),
        *("Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Abs", "Pow", "Sqrt", "Exp"),
        *("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Clip", "Sigmoid", "HardSigmoid"),
        *("HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Softsign", "Mish"),
    }
)
POOLED_PEAKS = "max (a global max pool reads its peaks)"  # auto's rule label for those tensors


def pooled_peaks(model: onnx.ModelProto, names: Sequence[str]) -> set[str]:
    """The tensors of ``names`` whose peaks a global max pool reads: from the tensor, or from the
    output of a Conv, ConvTranspose, Gemm or MatMul that reads it, only elementwise and shape-only
    ops (:data:`PEAK_PASSING`) lead to a GlobalMaxPool or a ReduceMax (not one whose max reaches a
    Sub: that is a softmax or a log-sum-exp subtracting its max). ``auto`` does not clip them
    (their candidates are all their max): the pool passes on exactly the values a clip flattens.
    Hand-written: onnx has no forward reachability over a graph; it is one walk per tensor.

    Measured on magika (Conv_0, GELU, GlobalMaxPool over 508 positions; docs/design.md, "Tensors a
    global max pool reads"): TensorRT's entropy threshold for Conv_0's input is 9.85 of its max
    38.7, which 56 of 64 samples exceed; the 16 held-out samples scored it as well as the max, but
    other draws of files lost up to 0.0024 of cosine to Model Optimizer with it."""
    nodes = model.graph.node
    readers = {name: [nodes[i] for i, _ in uses] for name, uses in tensor_readers(nodes).items()}

    def reached(start: str, stop: Callable[[onnx.NodeProto], bool]) -> bool:
        """Whether a node ``stop`` accepts reads ``start`` through :data:`PEAK_PASSING` ops."""
        seen, todo = {start}, [start]
        while todo:
            for node in readers.get(todo.pop(), ()):
                if stop(node):
                    return True
                if node.op_type in PEAK_PASSING:
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            todo.append(out)
        return False

    def pool(node: onnx.NodeProto) -> bool:
        return node.op_type == "GlobalMaxPool" or (
            node.op_type == "ReduceMax"
            and bool(node.output)
            and not reached(node.output[0], lambda after: after.op_type == "Sub")
        )

    def pooled(start: str) -> bool:
        return reached(start, pool)

    found = set()
    for name in names:
        layers = [n.output[0] for n in readers.get(name, ()) if n.op_type in WEIGHTED_OPS]
        if any(pooled(start) for start in [name, *layers]):
            found.add(name)
    return found


def _session(model: onnx.ModelProto, names: Sequence[str], emulate: bool = False) -> Any:
    """An ONNX Runtime session of ``model`` that also outputs ``names`` (the outputs appended to
    its serialized bytes, see :func:`~calibration.observers.outputs_appended`; ``emulate``: integer
    kernels emulated, see :func:`~calibration.observers.emulate_integer_kernels`).

    It runs each feed on one thread: :func:`_outputs` runs the held-out feeds side by side
    instead, which on 2 cores took 0.70-0.83x the time of one feed at a time on two threads
    (the candidate Q/DQ models of ddddocr's detector and recognizer, 16 feeds of 1 sample), with
    the same outputs bit for bit (every real-model artifact's, on 3 feeds, at 1 and 2 threads).

    Its large float and int8 weights reach ONNX Runtime as arrays
    (:func:`~calibration.observers.weights_in_memory`), not serialized and parsed again for each
    candidate: on MiniLM (90 MB of weights) the six candidate sessions of the GPU placement took
    1.3 s of CPU instead of 2.1-2.9 s, on ddddocr's recognizer 0.3-0.4 s instead of 0.6 s, with
    byte-identical artifacts."""
    import onnxruntime as ort

    from calibration.observers import emulate_integer_kernels, in_memory_session, no_spinning

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    no_spinning(options)
    if emulate:
        emulate_integer_kernels(options)
    return in_memory_session(model, options, outputs=names)


def _outputs(
    session: Any, feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], workers: int = 1
) -> list[list[np.ndarray]]:
    """``names`` for each feed, run on ``workers`` threads side by side (see :func:`_session`)."""
    return _outputs_each([session], feeds, names, workers)[0]


def _outputs_each(
    sessions: Sequence[Any], feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], workers: int = 1
) -> list[list[list[np.ndarray]]]:
    """``names`` for each feed, per session of ``sessions``, on ``workers`` threads: ONNX
    Runtime's ``run`` is thread-safe, and every session's feeds are dealt out together so that no
    thread waits for the last feeds of one candidate (:func:`_screen`)."""

    def one(job: tuple[Any, Mapping[str, np.ndarray]]) -> list[np.ndarray]:
        return [np.asarray(o) for o in job[0].run(list(names), dict(job[1]))]

    runs = map_ordered(one, [(sess, f) for sess in sessions for f in feeds], workers)
    n = len(feeds)
    return [runs[i * n : (i + 1) * n] for i in range(len(sessions))]


def _run(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], workers: int = 1
) -> list[list[np.ndarray]]:
    return _outputs(_session(model, names), feeds, names, workers)


def choose_for_model(
    model: onnx.ModelProto,
    plan: QuantPlan,
    per_tensor: tuple[dict[str, float], dict[str, str]],
    cands: Mapping[str, Mapping[str, float]],
    holdout: Sequence[Mapping[str, np.ndarray]],
    rules: Sequence[str] = RULES,
    reference: Sequence[Sequence[np.ndarray]] | None = None,
    extents: Mapping[str, tuple[float, float]] | None = None,
    weights: WeightCache | None = None,
    workers: int = 1,
    emulate: bool = False,
) -> Selection:
    """Step 2: the per-tensor choice against each of ``rules`` everywhere, scored on the held-out
    outputs (``reference``: the FP32 values of :func:`scored_tensors` per held-out feed, when the
    caller recorded them already; ``weights``: quantized weights of ``model`` from earlier Q/DQ
    models, see :func:`~calibration.qdq.quantized_weight`; ``workers``: threads writing and
    running candidates side by side; ``emulate``: the Q/DQ models run with their integer kernels
    emulated, for a target whose kernels this CPU lacks, see :func:`_session`).

    With two held-out feeds or more and more than two distinct candidates, the candidates are
    screened first: each runs on the first half of the feeds, and the ones far behind there do
    not run on the second half (see :func:`_screen`).
    """
    sets: dict[str, tuple[dict[str, float], dict[str, str]]] = {"per-tensor": per_tensor}
    for rule in rules:
        sets[rule] = ({name: opts[rule] for name, opts in cands.items()}, dict.fromkeys(cands, rule))
    names = scored_tensors(model)
    if reference is None:
        reference = _run(model, holdout, names, workers)
    weights = {} if weights is None else weights  # the same quantized weights in every candidate
    distinct = [label for label in sets if label == "per-tensor" or sets[label][0] != per_tensor[0]]
    written: dict[str, onnx.ModelProto] = {}  # the candidates still in the running: their Q/DQ model

    def session(label: str) -> Any:
        written[label] = write_qdq(model, plan, sets[label][0], extents, weights)
        return _session(written[label], names, emulate)

    half = len(holdout) // 2
    screened: dict[str, float] = {}
    outputs: dict[str, list[list[np.ndarray]]] = {}
    if half >= 1 and len(distinct) > 2:
        scores, screened = _screen(
            session, distinct, holdout, reference, half, names, outputs, dropped=written.pop, workers=workers
        )
    else:
        sessions = map_ordered(session, distinct, workers)  # written and loaded side by side
        outputs = dict(zip(distinct, _outputs_each(sessions, holdout, names, workers), strict=True))
        scores = {label: output_cosine(reference, outputs[label]) for label in distinct}
    counts = _counts(holdout)
    per_sample = {label: _sample_sums(reference, got, counts) for label, got in outputs.items()}
    for label in sets:
        if label not in distinct:  # the per-tensor thresholds under another name
            scores[label] = scores["per-tensor"]
    margins, wins = drop_one_margins(per_sample), sample_wins(per_sample)
    winner = _vote_winner(scores, margins, wins)
    thresholds, chosen = sets[winner]
    # a rule whose thresholds are the per-tensor ones was scored as the per-tensor model
    qdq = written.get(winner if winner in distinct else "per-tensor")
    return Selection(
        dict(thresholds),
        dict(chosen),
        winner,
        scores,
        screened=screened,
        margins=margins,
        wins=wins,
        plan=plan,
        qdq=qdq,
        sample_sums=per_sample.get(winner if winner in distinct else "per-tensor"),
    )


def _counts(holdout: Sequence[Mapping[str, np.ndarray]]) -> list[int]:
    """Samples per held-out feed (rows of its first input)."""
    return [int(next(iter(f.values())).shape[0]) if next(iter(f.values())).ndim else 1 for f in holdout]


BIAS_CORRECTED = " + bias correction"  # suffix of the corrected winner's label in the scores
ROUNDED = " + GPTQ rounding"  # suffix of the label of the winner with GPTQ-rounded weights


@dataclass(frozen=True)
class HeldOut:
    """What a variant of the chosen model (its biases corrected, its weights GPTQ-rounded) is
    written and scored with: the held-out feeds and the FP32 values of the scored outputs on them,
    and what every Q/DQ model of the calibration shares (the observed extents, the quantized
    weights, see :func:`choose_for_model`; whether the integer kernels are emulated)."""

    feeds: Sequence[Mapping[str, np.ndarray]]
    reference: Sequence[Sequence[np.ndarray]]
    extents: Mapping[str, tuple[float, float]] | None = None
    weights: WeightCache | None = None
    emulate: bool = False
    workers: int = 1  # threads running the feeds side by side, see :func:`_outputs`


def _variant_scores(
    model: onnx.ModelProto, selection: Selection, qdq: onnx.ModelProto, held: HeldOut
) -> tuple[float, float, np.ndarray | None]:
    """A variant ``qdq`` of the model kept so far, run on the held-out samples: the kept model's
    held-out cosine, the variant's, and the variant's per-sample sums (see :func:`_sample_sums`)."""
    names = scored_tensors(model)
    got = _outputs(_session(qdq, names, held.emulate), held.feeds, names, held.workers)
    return (
        selection.score(),
        output_cosine(held.reference, got),
        _sample_sums(held.reference, got, _counts(held.feeds)),
    )


def bias_corrected(
    model: onnx.ModelProto,
    selection: Selection,
    shifts: Mapping[int, np.ndarray],
    held: HeldOut,
) -> Selection:
    """The winner with its biases corrected (``shifts``, see
    :func:`~calibration.qdq.bias_corrections`), scored on the held-out samples like the
    candidates and kept by the same vote (:func:`_vote_winner`) only where it scores higher.

    Measured, not assumed: on ddddocr's recognizer it raises the held-out cosine in TensorRT's
    placement; with 7-bit weights (ONNX Runtime's placement without VNNI) it lowers it.
    """
    plan = selection.plan
    if not shifts or plan is None or selection.sample_sums is None:
        return selection
    qdq = write_qdq(model, plan, selection.thresholds, held.extents, held.weights, shifts)
    score, corrected, sums = _variant_scores(model, selection, qdq, held)
    vote = _challenge(score, selection.sample_sums, corrected, sums)
    label = selection.winner + (ROUNDED if selection.rounded else "")
    selection.bias_check = {
        "nodes": len(shifts),
        "held_out_cosine": {label: score, label + BIAS_CORRECTED: corrected},
        "lead_with_one_sample_out": vote["lead_with_one_sample_out"],
        "samples_better_worse": vote["samples_better_worse"],
    }
    if vote["kept"]:
        selection.bias_shift, selection.qdq = dict(shifts), qdq
    return selection


def rounding_checked(
    model: onnx.ModelProto,
    selection: Selection,
    rounded: WeightCache,
    held: HeldOut,
) -> Selection:
    """The winner with the weights of ``rounded`` (GPTQ's, see :mod:`calibration.rounding`) in
    place of their round-to-nearest values (``held.weights``), scored on the held-out samples.

    GPTQ is kept unless the held-out samples speak clearly against it (:func:`_rounding_kept`).
    When kept, ``held.weights`` is updated in place, so that every later Q/DQ model of this
    calibration (bias correction's, the artifact) has the rounded weights;
    ``selection.rounding_check`` records both held-out cosines and the per-sample count either way.
    """
    plan = selection.plan
    if not rounded or plan is None or selection.sample_sums is None:
        return selection
    mixed: WeightCache = {**(held.weights or {}), **rounded}
    qdq = write_qdq(model, plan, selection.thresholds, held.extents, mixed)
    score, challenger, sums = _variant_scores(model, selection, qdq, held)
    wins = sample_wins({"nearest": selection.sample_sums, "gptq": sums}, "nearest").get("gptq")
    kept = _rounding_kept(score, challenger, wins)
    selection.rounding_check = {
        "weights": len(rounded),
        "held_out_cosine": {selection.winner: score, selection.winner + ROUNDED: challenger},
        "samples_better_worse": wins,
    }
    if kept:
        if held.weights is not None:
            held.weights.update(rounded)
        selection.qdq, selection.kept_score = qdq, challenger
        selection.rounded = tuple(sorted(name for name, _, _ in rounded))
        selection.sample_sums = sums
    return selection


ROUNDING_OVERRULED = 0.75  # share of the decisive held-out samples on which GPTQ must be worse to go


def _rounding_kept(nearest: float, gptq: float, wins: Sequence[int] | None) -> bool:
    """GPTQ's rounding stays unless it is behind round-to-nearest on the pooled held-out cosine
    *and* worse on at least :data:`ROUNDING_OVERRULED` of the held-out samples on which the two
    differ (``wins``: GPTQ's samples better and worse, see :func:`sample_wins`).

    Why not the model-level vote (:func:`_vote_winner`): GPTQ lowers the error at every layer's
    outputs on the calibration data by construction, and on 21 real model-placements
    (benchmarks/real_models.py, 64 samples of a separate seed) it raised the output cosine on 19,
    and that vote on the 16 held-out samples kept it on 7 of them (docs/design.md, "GPTQ weight
    rounding"): the two differ by less than the held-out figures' noise. The two placements where
    GPTQ was worse on the 64 samples (PP-OCRv4's detector with 7-bit weights, PP-Layout's VNNI
    placement) are the only ones where it was worse on three quarters of the held-out samples
    (13 and 12 of 16)."""
    if gptq >= nearest or not wins or sum(wins) == 0:
        return True
    better, worse = wins
    return worse < ROUNDING_OVERRULED * (better + worse)


def _screen(
    session: Callable[[str], Any],
    labels: Sequence[str],
    holdout: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Sequence[np.ndarray]],
    half: int,
    names: Sequence[str],
    outputs: dict[str, list[list[np.ndarray]]] | None = None,
    dropped: Callable[[str], object] | None = None,
    workers: int = 1,
) -> tuple[dict[str, float], dict[str, float]]:
    """Step 2 in two rounds: every candidate of ``labels`` on ``holdout[:half]``, then on the
    rest only the per-tensor choice and the candidates whose error there, ``1 - cosine``, is
    within ``SCREEN_RATIO`` times the smallest one. Returns the finalists' cosines over all the
    held-out feeds (the same figures as without screening) and every candidate's cosine over
    the first half (``outputs``, when given, receives the finalists' outputs on all feeds;
    ``dropped``, when given, is called with each candidate that stops).

    Measured on ddddocr's detector and recognizer (docs/design.md): the uniform entropy and
    max sets trail by 3-5x the best error on half the samples and are not the winner on all of
    them, while the rules that do win are within 1.3x. The candidates are written and loaded
    ``workers`` at a time, and each round's feeds of every candidate in it run on ``workers``
    threads (see :func:`_outputs_each`); they are then judged in the order given, as one at a time
    would be (the bound only tightens, so the same ones stop), and only the ones within the ratio
    run on.
    """
    sessions = map_ordered(session, labels, workers)
    runs = _outputs_each(sessions, holdout[:half], names, workers)
    first: dict[str, list[list[np.ndarray]]] = {}
    kept: dict[str, Any] = {}
    partial: dict[str, float] = {}
    for label, sess, half_outputs in zip(labels, sessions, runs, strict=True):
        kept[label], first[label] = sess, half_outputs
        partial[label] = output_cosine(reference[:half], first[label])
        bound = SCREEN_RATIO * (1.0 - max(partial.values()))
        for other in [k for k in kept if k != "per-tensor" and 1.0 - partial[k] > bound]:
            del kept[other], first[other]
            if dropped is not None:
                dropped(other)
    del sessions, runs  # the candidates that stopped: their sessions go
    rest = _outputs_each(list(kept.values()), holdout[half:], names, workers)
    got = {label: first[label] + more for label, more in zip(kept, rest, strict=True)}
    if outputs is not None:
        outputs.update(got)
    return {label: output_cosine(reference, values) for label, values in got.items()}, partial


def select(
    model: onnx.ModelProto,
    plan: QuantPlan,
    histograms: Mapping[str, AbsHistogram],
    levels: Mapping[str, int],
    samples: Mapping[str, list[np.ndarray]],
    holdout: Sequence[Mapping[str, np.ndarray]],
    options: AlgorithmOptions,
    rules: Sequence[str] = RULES,
    *,
    cands: Mapping[str, Mapping[str, float]] | None = None,
    reference: Sequence[Sequence[np.ndarray]] | None = None,
    memo: dict[tuple[object, ...], np.ndarray] | None = None,
    extents: Mapping[str, tuple[float, float]] | None = None,
    consts: Mapping[str, np.ndarray] | None = None,
    weights: WeightCache | None = None,
    workers: int = 1,
    emulate: bool = False,
) -> Selection:
    """The ``auto`` thresholds for the plan's calibrated tensors (``rules``: the whole-model rule
    sets to measure beside the per-tensor choice; ``cands`` and ``reference``: the candidate
    thresholds and the FP32 held-out outputs when the caller has them already; ``memo``: see
    :func:`choose_per_tensor`; ``extents``: observed (min, max) per tensor; ``consts``: the
    model's constants when the caller has them; ``weights``: see :func:`choose_for_model`;
    ``workers``: threads for the measurements, see :mod:`calibration.threads`; ``emulate``: see
    :func:`choose_for_model`)."""
    if cands is None:
        cands = {name: candidates(histograms[name], lv, options) for name, lv in levels.items()}
    weights = {} if weights is None else weights  # the per-tensor step's weights are the Q/DQ models'
    per_tensor = choose_per_tensor(model, plan, cands, samples, memo, extents, consts, workers, weights)
    return choose_for_model(
        model, plan, per_tensor, cands, holdout, rules, reference, extents, weights, workers, emulate
    )
