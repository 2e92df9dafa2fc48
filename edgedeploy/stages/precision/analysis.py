"""FP16 range analysis: which weights and activations do not fit in float16, and where they come from.

float16 ends at 65504 and its smallest normal number is 2**-14 (about 6.1e-5); below that it
keeps fewer bits (subnormal) down to 2**-24 (about 6e-8). Rounding to nearest (as
``x.astype(np.float16)`` and a GPU's conversion do), |x| >= 65520 becomes Inf (65519 becomes 65504),
|x| <= 2**-25 (about 3e-8) becomes zero (4.5e-8 becomes 6e-8), and |x| < 2**-14 - 2**-25 a
subnormal. We check every float weight (initializers and Constant nodes,
subgraphs included) and run the fp32 model on the data through calibration/'s streaming
collection pass (:func:`calibration.observers.collect`), whose observers see one batch at a
time: our :class:`Fp16RangeObserver` counts, per tensor, values that become Inf, subnormal and
flushed values and NaN/Inf already present in fp32. Other observers (a calibration histogram)
can ride along in the same pass. Hand-written: no library reports fp16 overflow per tensor
(Model Optimizer's AutoCast only compares each tensor's max with a fixed threshold).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from calibration.errors import CalibrationError, DataRefused
from calibration.feeds import feed_rows
from calibration.graphs import drop_initializer_inputs, upgrade_ir
from calibration.observers import (
    PREFETCH_BYTES,
    STACK_ROWS,
    Observer,
    collect,
    float_tensor_names,
    same_values_sources,
)
from edgedeploy.errors import InputError, RefusedInput
from edgedeploy.onnxio import load_onnx
from edgedeploy.stages.precision.fp16 import ensure_node_names

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14  # 6.1e-5: below it fp16 is subnormal and loses precision
FP16_MIN_SUBNORMAL = 2.0**-24  # 5.96e-8: the smallest non-zero float16
FP16_LAST_STEP = 32.0  # 65504 - 65472: the step between fp16's two largest finite values
# Ops whose output depends on the differences of their inputs (exp(x - max)), not on their size.
SHIFT_SENSITIVE = {"Softmax", "LogSoftmax"}
# From 512 fp16 steps by 0.5 (Model Optimizer's AutoCast keeps values above it, data_max=512): a logit
# moves by up to 0.25 and its exp by up to e**0.25, 28 %; each octave below halves that. A tensor at
# risk here, and for the islands (rule 6) a proposal only: the measured release returns the node to
# fp16 unless the outputs change.
SHIFT_LIMIT = 512.0

# what rounding to nearest (x.astype(np.float16)) makes of a float32: the limits counted
FP16_INF_FROM = 65520.0  # |x| >= it becomes Inf: 65504 + half a step (ties go to the even Inf)
FP16_ZERO_UPTO = 2.0**-25  # |x| <= it becomes 0: half the smallest subnormal (the tie goes to 0)
FP16_SUBNORMAL_BELOW = 2.0**-14 - 2.0**-25  # |x| < it becomes a subnormal (or 0); from it, 2**-14
TWO_GB = 2**31 - 1
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def fp16_step(value: float) -> float:
    """The distance from |value| to the next float16 (0.5 at 512..1024); from where |value| rounds to
    65504 on, fp16's last step, 32 (65504 - 65472: np.spacing of 65504 is Inf, with a warning)."""
    magnitude = np.float16(min(abs(value), FP16_MAX))
    if magnitude >= FP16_MAX:
        return FP16_LAST_STEP
    return float(np.spacing(magnitude))


def fp16_step_words(value: float) -> str:
    """What fp16 makes of |value|, for a reason or a risk: "where fp16 steps by 0.5", or from
    :data:`FP16_INF_FROM` on (it rounds to Inf) that fp16 cannot hold it."""
    if abs(value) >= FP16_INF_FROM:
        return "which fp16 cannot hold (it becomes Inf)"
    return f"where fp16 steps by {fp16_step(value):g}"


def _bits(value: float) -> int:
    return int(np.float32(value).view(np.uint32))


_INF_BITS = _bits(math.inf)
_INF_FROM_BITS = _bits(FP16_INF_FROM)
_SUBNORMAL_BELOW_BITS = _bits(FP16_SUBNORMAL_BELOW)
_ZERO_UPTO_BITS = _bits(FP16_ZERO_UPTO)


class Scratch:
    """A growable uint32 buffer reused across batches (a fresh large array per tensor costs page faults)."""

    def __init__(self) -> None:
        self.buffer = np.empty(0, np.uint32)

    def take(self, size: int) -> np.ndarray:
        if self.buffer.size < size:
            self.buffer = np.empty(size, np.uint32)
        return self.buffer[:size]


@dataclass
class Fp16Stats:
    """Counts of one tensor's values against the float16 range, over every batch seen."""

    count: int = 0
    nonzero: int = 0
    absmax: float = 0.0
    absmin: float = math.inf  # smallest non-zero |x| (inf until one is seen)
    overflow: int = 0  # |x| >= 65520: Inf in fp16
    subnormal: int = 0  # 0 < |x| < 2**-14 - 2**-25 (about 6.1e-5): fewer significant bits
    flushed: int = 0  # 0 < |x| <= 2**-25 (about 3e-8): zero in fp16
    nonfinite: int = 0  # NaN/Inf already in fp32

    def add(self, array: np.ndarray, scratch: Scratch | None = None) -> None:
        """Count one batch of values; ``scratch`` (reused across calls) saves a large allocation per call.

        Finite float32 values are counted on their magnitude bits (sign cleared): for non-negative
        floats the unsigned bit patterns sort as the values do, so every threshold is one integer
        compare. In a batch with exact zeros, subtracting 1 in place turns them into the largest
        pattern, so the same array gives the smallest non-zero magnitude and the subnormal counts
        without a mask; a batch without (most activations) needs neither that pass nor a count of
        zeros, which a tensor's first batch finds out from its smallest magnitude.
        """
        values = np.asarray(array)
        if values.dtype.kind != "f" or values.size == 0:
            return
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        mags = (scratch or Scratch()).take(flat.size)
        np.bitwise_and(flat.view(np.uint32), np.uint32(0x7FFFFFFF), out=mags)
        top = int(mags.max())
        if top >= _INF_BITS:  # rare: NaN/Inf already in fp32, take the slow path
            self._add_slow(flat)
            return
        size = int(flat.size)
        # the smallest magnitude first, unless this tensor had zeros before: with no zero it is the
        # smallest non-zero one, and neither the zeros' count nor the shift past them is needed
        low = None if self.nonzero < self.count else int(mags.min())
        nonzero = size if low else int(np.count_nonzero(mags))
        zeros, shift = size - nonzero, 0
        self.count += size
        self.nonzero += nonzero
        self.absmax = max(self.absmax, float(np.uint32(top).view(np.float32)))
        if not nonzero:
            return
        if zeros:
            np.subtract(mags, np.uint32(1), out=mags)  # zeros wrap to the largest pattern
            low, shift = int(mags.min()) + 1, 1
        elif low is None:
            low = int(mags.min())
        self.absmin = min(self.absmin, float(np.uint32(low).view(np.float32)))
        # each pattern is ``shift`` less now: m >= B is m - shift >= B - shift
        if top >= _INF_FROM_BITS:
            self.overflow += int(np.count_nonzero(mags >= _INF_FROM_BITS - shift)) - zeros
        # no pass for a count the smallest magnitude already rules out (most activations: none flush)
        if low < _SUBNORMAL_BELOW_BITS:
            self.subnormal += int(np.count_nonzero(mags < _SUBNORMAL_BELOW_BITS - shift))
            if low <= _ZERO_UPTO_BITS:  # 0 < m <= B
                self.flushed += int(np.count_nonzero(mags < _ZERO_UPTO_BITS + 1 - shift))

    def _add_slow(self, flat: np.ndarray) -> None:
        mags = np.abs(flat)
        self.count += int(mags.size)
        finite = np.isfinite(mags)
        self.nonfinite += int(mags.size - np.count_nonzero(finite))
        mags = mags[finite]
        if mags.size == 0:
            return
        amax = float(mags.max())
        self.absmax = max(self.absmax, amax)
        zeros = int(mags.size - np.count_nonzero(mags))
        self.nonzero += int(mags.size) - zeros
        if zeros < mags.size:
            self.absmin = min(self.absmin, float(np.min(mags, where=mags > 0, initial=np.inf)))
        if amax >= FP16_INF_FROM:
            self.overflow += int(np.count_nonzero(mags >= FP16_INF_FROM))
        subnormal = int(np.count_nonzero(mags < FP16_SUBNORMAL_BELOW)) - zeros
        if subnormal:
            self.subnormal += subnormal
            self.flushed += int(np.count_nonzero(mags <= FP16_ZERO_UPTO)) - zeros

    @property
    def overflow_share(self) -> float:
        return self.overflow / self.count if self.count else 0.0

    @property
    def subnormal_share(self) -> float:
        """Share of the non-zero values that are subnormal in fp16 (flushed ones included)."""
        return self.subnormal / self.nonzero if self.nonzero else 0.0

    @property
    def flushed_share(self) -> float:
        return self.flushed / self.nonzero if self.nonzero else 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "absmax": self.absmax,
            "absmin": self.absmin if self.nonzero else None,  # smallest non-zero magnitude
            "values": self.count,
            "overflow": self.overflow,
            "overflow_share": self.overflow_share,
            "subnormal_share": self.subnormal_share,
            "flushed_share": self.flushed_share,
            "nonfinite": self.nonfinite,
        }


class Fp16RangeObserver:
    """An :class:`calibration.observers.Observer` that keeps :class:`Fp16Stats` per tensor."""

    def __init__(self) -> None:
        self.stats: dict[str, Fp16Stats] = {}
        self.scratch = Scratch()

    def observe(self, name: str, array: np.ndarray) -> None:
        if np.asarray(array).dtype.kind == "f":
            self.stats.setdefault(name, Fp16Stats()).add(array, self.scratch)


class NormSumObserver:
    """The largest sum of ``|x|**p`` along the axis of each LpNormalization, measured on its input.

    Its output (``x / norm``, within [-1, 1]) shows nothing of that sum, which fp16 accumulates and
    which overflows long before any one value does (eight values of 100: 8e4); a ReduceL2's,
    ReduceSumSquare's, LpPool's or GlobalLpPool's own output is that sum (or its root, per window
    for the pools) and needs no observer."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.norms: dict[str, list[tuple[str, int, int]]] = {}  # input -> (node, axis, p)
        for node in model.graph.node:
            if node.op_type == "LpNormalization" and node.input:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                entry = (node.name, int(attrs.get("axis", -1)), int(attrs.get("p", 2)))
                self.norms.setdefault(node.input[0], []).append(entry)
        self.sums: dict[str, float] = {}  # node -> largest sum seen

    def observe(self, name: str, array: np.ndarray) -> None:
        values = np.asarray(array)
        if name not in self.norms or values.dtype.kind != "f" or values.ndim == 0 or values.size == 0:
            return
        mags = np.abs(values.astype(np.float64))
        for node, axis, p in self.norms[name]:
            if not -values.ndim <= axis < values.ndim:
                continue
            sums = np.sum(mags if p == 1 else mags**p, axis=axis)
            finite = sums[np.isfinite(sums)]  # NaN/Inf already in fp32: rule 2's, not a sum to report
            if finite.size:
                self.sums[node] = max(self.sums.get(node, 0.0), float(finite.max()))


@dataclass
class RiskThresholds:
    """When a tensor counts as at risk (and, for islands, is kept in fp32)."""

    max_abs: float = FP16_MAX / 4  # 4x headroom over what the data showed: unseen inputs go further
    flushed_share: float = 0.25  # a quarter of the non-zero values would become zero
    subnormal_share: float = 0.5  # half of the non-zero values would lose precision

    def risks(self, stats: Fp16Stats) -> list[str]:
        found = []
        if stats.nonfinite:
            found.append(f"{stats.nonfinite} NaN/Inf already in fp32")
        if stats.overflow:
            found.append(
                f"overflow: {stats.overflow_share:.2%} of values become Inf in fp16 (max {stats.absmax:.4g})"
            )
        elif stats.absmax > self.max_abs:
            found.append(
                f"near overflow: max {stats.absmax:.4g} > {self.max_abs:.4g} (4x headroom below 65504)"
            )
        if stats.flushed_share >= self.flushed_share:
            found.append(f"underflow: {stats.flushed_share:.2%} of non-zero values flush to zero")
        elif stats.subnormal_share >= self.subnormal_share:
            found.append(f"precision loss: {stats.subnormal_share:.2%} of non-zero values are subnormal")
        return found

    def shift_risks(self, stats: Fp16Stats, readers: Sequence[tuple[str, str]]) -> list[str]:
        """The risk of a tensor that ``readers`` ((op, node) of the Softmax/LogSoftmax reading it)
        take as input, where it reaches :data:`SHIFT_LIMIT`: islands' rule 6 flags it too."""
        if stats.nonfinite or stats.absmax < SHIFT_LIMIT:
            return []
        words = fp16_step_words(stats.absmax)
        return [
            f"softmax shift: max {stats.absmax:.4g} >= {SHIFT_LIMIT:g} into {op} '{node}', {words}: "
            "its exp(x - max) changes"
            for op, node in readers
        ]


@dataclass
class WeightRange:
    name: str
    where: str  # "initializer" or "Constant <node>", with the subgraph path for nested graphs
    consumers: list[str]
    stats: Fp16Stats
    risks: list[str] = field(default_factory=list)


@dataclass
class TensorRange:
    name: str
    producer: str  # node name ("" for a graph input)
    op: str  # producing op type ("input" for a graph input)
    order: int  # position in the graph
    consumers: list[str]
    stats: Fp16Stats
    risks: list[str] = field(default_factory=list)


@dataclass
class RangeReport:
    model: str
    data: dict[str, Any]
    samples: int
    seconds: float
    weights: list[WeightRange]
    tensors: list[TensorRange]
    thresholds: RiskThresholds
    notes: list[str] = field(default_factory=list)
    # LpNormalization node -> the largest sum of |x|**p along its axis (:class:`NormSumObserver`)
    norm_sums: dict[str, float] = field(default_factory=dict)

    def tensor(self, name: str) -> TensorRange | None:
        return next((t for t in self.tensors if t.name == name), None)

    def weights_at_risk(self) -> list[WeightRange]:
        return sorted((w for w in self.weights if w.risks), key=_severity, reverse=True)

    def tensors_at_risk(self) -> list[TensorRange]:
        """Tensors with a risk, worst first: NaN/Inf, then overflow share, then max, then underflow."""
        return sorted((t for t in self.tensors if t.risks), key=_severity, reverse=True)

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "tensors": len(self.tensors),
            "weights": len(self.weights),
            "tensors_at_risk": len(self.tensors_at_risk()),
            "weights_at_risk": len(self.weights_at_risk()),
            "overflowing_tensors": sum(1 for t in self.tensors if t.stats.overflow),
            "seconds": round(self.seconds, 3),
        }


def _severity(item: WeightRange | TensorRange) -> tuple[float, ...]:
    s = item.stats
    return (
        float(s.nonfinite > 0),
        s.overflow_share,
        math.log10(s.absmax + 1e-30),
        s.flushed_share,
        s.subnormal_share,
    )


def _graphs(graph: onnx.GraphProto, path: str = "") -> Iterable[tuple[str, onnx.GraphProto]]:
    yield path, graph
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for i, sub in enumerate(subs):
                label = f"{path}{node.name}.{attr.name}" + (f"[{i}]" if len(subs) > 1 else "")
                yield from _graphs(sub, label + "/")


def weight_ranges(
    model: onnx.ModelProto,
    thresholds: RiskThresholds | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> list[WeightRange]:
    """Every float initializer and Constant node (subgraphs included) against the fp16 range;
    ``arrays`` is filled with the values of the main graph's float initializers, by name."""
    thresholds = thresholds or RiskThresholds()
    found: list[WeightRange] = []
    scratch = Scratch()  # one buffer for every weight: a fresh one each costs its page faults
    scratch.take(max((_elements(i) for i in model.graph.initializer), default=0))  # grown once
    for path, graph in _graphs(model.graph):
        consumers: dict[str, list[str]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node.name)
        for init in graph.initializer:
            values = _values(init) if init.data_type in FLOAT_TYPES else None
            if values is not None and arrays is not None and not path:
                arrays[init.name] = values
            if values is not None:
                where, users = f"{path}initializer", consumers.get(init.name, [])
                found.append(_weight(init.name, where, users, values, thresholds, scratch))
        for node in graph.node:
            if node.op_type != "Constant":
                continue
            for attr in node.attribute:
                values = _values(attr.t) if attr.name == "value" and attr.t.data_type in FLOAT_TYPES else None
                if values is not None:
                    found.append(
                        _weight(
                            node.output[0],
                            f"{path}Constant {node.name}",
                            [node.name, *consumers.get(node.output[0], [])],
                            values,
                            thresholds,
                            scratch,
                        )
                    )
    return found


def _elements(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) if tensor.data_type in FLOAT_TYPES else 0


def _values(tensor: onnx.TensorProto) -> np.ndarray | None:
    """A weight's values; None for an empty one (no values to range-check) or one numpy cannot read."""
    if any(d == 0 for d in tensor.dims):
        return None
    try:
        return numpy_helper.to_array(tensor)
    except ValueError:  # data that does not fill its dims: the checker reports that, not the analysis
        return None


def _weight(
    name: str,
    where: str,
    consumers: list[str],
    values: np.ndarray,
    thresholds: RiskThresholds,
    scratch: Scratch | None = None,
) -> WeightRange:
    stats = Fp16Stats()
    stats.add(values, scratch)
    risks = []
    if stats.nonfinite:
        risks.append(f"{stats.nonfinite} NaN/Inf values")
    if stats.overflow:
        risks.append(f"{stats.overflow} values past fp16's range (max {stats.absmax:.4g}) would be clipped")
    if stats.flushed_share >= thresholds.flushed_share:
        risks.append(f"{stats.flushed_share:.2%} of non-zero values round to zero in fp16")
    elif stats.subnormal_share >= thresholds.subnormal_share:
        risks.append(f"{stats.subnormal_share:.2%} of non-zero values are subnormal in fp16")
    return WeightRange(name, where, consumers, stats, risks)


class OutputRecorder:
    """Keeps the first ``limit`` samples of the data and the graph outputs the analysis pass
    computes on them, so a later check on those samples (the measured island release) needs no
    second fp32 run for its reference. :meth:`wrap` the source given to the analysis and pass
    the recorder among its observers."""

    def __init__(self, outputs: Sequence[str], limit: int) -> None:
        self.outputs = list(outputs)
        self.limit = limit
        self.feeds: list[dict[str, np.ndarray]] = []
        self.seen: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}

    def wrap(self, source: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        rows = 0
        for feed in source:
            if rows < self.limit:
                self.feeds.append(feed)
                rows += feed_rows(feed)
            yield feed

    def observe(self, name: str, array: np.ndarray) -> None:
        if name in self.seen and len(self.seen[name]) < len(self.feeds):
            self.seen[name].append(np.array(array, copy=True))

    def batches(self) -> tuple[list[dict[str, np.ndarray]], list[list[np.ndarray]] | None]:
        """The recorded feeds the analysis ran, and per feed every output in graph order (None when
        an output was not observed: a non-float one)."""
        ran = min((len(v) for v in self.seen.values()), default=0)
        if not self.outputs or ran == 0:
            return self.feeds, None
        feeds = self.feeds[:ran]
        return feeds, [[self.seen[n][b] for n in self.outputs] for b in range(ran)]


def split_batches(source: Iterable[dict[str, np.ndarray]], rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Each feed of ``source`` as feeds of at most ``rows`` samples along axis 0 (the sample axis
    of every calibration source). Only for models whose inputs all have a free first dimension."""
    for feed in source:
        arrays = list(feed.values())
        n = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 0
        if n <= rows or any(a.ndim == 0 or a.shape[0] != n for a in arrays):
            yield feed
            continue
        for start in range(0, n, rows):
            yield {k: v[start : start + rows] for k, v in feed.items()}


def free_first_dim(model: onnx.ModelProto) -> bool:
    """True when every graph input has a first dimension that is not fixed (a batch axis)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    for vi in inputs:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return False
        dims = vi.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            return False
    return bool(inputs)


def load_for_analysis(
    model_path: str | os.PathLike[str], loaded: onnx.ModelProto | None = None
) -> onnx.ModelProto:
    """Load a model (external data included) with every node named as make_fp16 names them.

    ``loaded``: the model the caller has already read from ``model_path`` (one without external
    data), prepared here in place instead of reading the file again."""

    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = loaded if loaded is not None else load_onnx(model_path, load_external_data=False)
    if any(uses_external_data(t) for t in _get_all_tensors(model)):
        model = load_onnx(model_path)
        try:
            size = model.ByteSize()
        except Exception:
            size = TWO_GB + 1
    else:  # all in the file: its size is the message's (sizing it would walk every weight)
        size = os.path.getsize(model_path)
    if size > TWO_GB:
        raise InputError(
            f"{model_path}: the model is over 2 GB with its external data; fp16 range analysis "
            "runs it in memory and cannot; pass --fp32-ops/--fp32-nodes by hand"
        )
    # initializers listed as graph inputs (IR 3, or exported with keep_initializers_as_inputs) are
    # constants here: an emulated graph that rewrites a weight must not leave it a required input
    upgrade_ir(model)
    drop_initializer_inputs(model.graph)
    ensure_node_names(model)
    return model


def _copies(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, str]:
    """The tensors of ``names`` that a Reshape, Transpose, Squeeze... (a chain of them) makes from
    another of ``names`` (:func:`calibration.observers.same_values_sources`), by that source: they
    hold its values, so their figures are its own, and neither ONNX Runtime's copy of them nor
    their counting is needed. Graph outputs are fetched all the same (an observer may record them)."""
    wanted, outputs = set(names), {o.name for o in model.graph.output}
    return {
        name: root
        for name, root in same_values_sources(model, names).items()
        if root in wanted and name not in outputs
    }


def analyze(
    model: str | os.PathLike[str] | onnx.ModelProto,
    source: Iterable[dict[str, np.ndarray]],
    *,
    data_description: dict[str, Any] | None = None,
    thresholds: RiskThresholds | None = None,
    observers: Sequence[Observer] = (),
    threads: int | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    name: str | None = None,
) -> RangeReport:
    """Check weights, then run the fp32 model on ``source`` and measure every float tensor.

    ``observers`` see the same tensors in the same pass (e.g. a calibration histogram), so one
    run over the data serves both; a tensor that only rearranges another's values (a Reshape's,
    Transpose's... output, not a graph output) is neither fetched nor shown to them: its figures
    are the other one's. Subgraph-internal tensors are not observable (ONNX Runtime
    only returns main-graph values); control-flow nodes are reported as such. Every feed of
    ``source`` is read: an overflow in the last sample is as real as one in the first. The weights
    read for their ranges reach ONNX Runtime as they are, in memory
    (:func:`calibration.observers.weights_in_memory`): the model is neither serialized nor parsed
    again. ``arrays``: filled with those weights' values by name, for the caller to reuse.
    ``name``: how errors and the report name the model (its file), by default its path or its
    graph's name.
    """
    start = time.perf_counter()
    thresholds = thresholds or RiskThresholds()
    name = name or (str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "model"))
    if not isinstance(model, onnx.ModelProto):
        model = load_for_analysis(model)
    arrays = {} if arrays is None else arrays
    weights = weight_ranges(model, thresholds, arrays)
    names = float_tensor_names(model)
    copies = _copies(model, names)
    observer = Fp16RangeObserver()
    norms = NormSumObserver(model)
    try:
        # an LpNormalization's input is fetched even where it is a copy: its sums are measured on it
        fetched = [n for n in names if n not in copies or n in norms.norms]
        samples = collect(
            model,
            source,
            fetched,
            [observer, norms, *observers],
            threads=threads,
            arrays=arrays,
            prefetch_bytes=PREFETCH_BYTES,
            stack=STACK_ROWS,  # a batch-1 model's samples 4 at a time, each shown as its own feed
            name=name,
        )
    except InputError:
        raise
    except Exception as exc:
        if isinstance(exc, DataRefused):  # the graph refused data that fits its declared inputs
            raise RefusedInput(str(exc)) from None
        if isinstance(exc, CalibrationError):  # bad data, caught by the data source (user input)
            raise InputError(str(exc)) from None
        if isinstance(exc, ValueError) or type(exc).__module__.startswith("onnxruntime"):
            from calibration.graphs import ort_error

            raise RefusedInput(f"ONNX Runtime cannot run {name} on the data: {ort_error(exc)}") from None
        raise
    for copy, root in copies.items():
        if root in observer.stats:
            observer.stats[copy] = replace(observer.stats[root])
    producers: dict[str, tuple[str, str, int]] = {}
    consumers: dict[str, list[str]] = {}
    shift_readers: dict[str, list[tuple[str, str]]] = {}  # tensor -> the Softmaxes taking it
    for index, node in enumerate(model.graph.node):
        for out in node.output:
            producers[out] = (node.name, node.op_type, index)
        for inp in node.input:
            consumers.setdefault(inp, []).append(node.name)
        if node.op_type in SHIFT_SENSITIVE and node.input:
            shift_readers.setdefault(node.input[0], []).append((node.op_type, node.name))
    tensors = []
    for tensor in names:
        if tensor not in observer.stats:
            continue
        producer, op, order = producers.get(tensor, ("", "input", -1))
        stats = observer.stats[tensor]
        risks = thresholds.risks(stats) + thresholds.shift_risks(stats, shift_readers.get(tensor, []))
        tensors.append(TensorRange(tensor, producer, op, order, consumers.get(tensor, []), stats, risks))
    notes: list[str] = []
    control = [
        n.name
        for n in model.graph.node
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
    ]
    if control:
        notes.append(
            f"tensors inside the subgraphs of {', '.join(control)} are not observed "
            "(only their inputs and outputs)"
        )
    return RangeReport(
        model=name,
        data=data_description or {},
        samples=samples,
        seconds=time.perf_counter() - start,
        weights=weights,
        tensors=tensors,
        thresholds=thresholds,
        notes=notes,
        norm_sums=norms.sums,
    )


def report_json(report: RangeReport, limit: int | None = None) -> dict[str, Any]:
    """The report as plain data: at-risk weights and tensors (worst first), then every tensor."""

    def tensor(t: TensorRange) -> dict[str, Any]:
        return {"tensor": t.name, "producer": t.producer, "op": t.op, **t.stats.figures(), "risks": t.risks}

    def weight(w: WeightRange) -> dict[str, Any]:
        return {
            "weight": w.name,
            "where": w.where,
            "consumers": w.consumers,
            **w.stats.figures(),
            "risks": w.risks,
        }

    at_risk = report.tensors_at_risk()
    return {
        "model": report.model,
        "data": report.data,
        "summary": report.summary(),
        "notes": report.notes,
        "thresholds": {
            "max_abs": report.thresholds.max_abs,
            "flushed_share": report.thresholds.flushed_share,
            "subnormal_share": report.thresholds.subnormal_share,
            "fp16_max": FP16_MAX,
            "fp16_min_normal": FP16_MIN_NORMAL,
            "fp16_min_subnormal": FP16_MIN_SUBNORMAL,
        },
        "weights_at_risk": [weight(w) for w in report.weights_at_risk()[:limit]],
        "tensors_at_risk": [tensor(t) for t in at_risk[:limit]],
        "tensors": [tensor(t) for t in sorted(report.tensors, key=lambda t: t.order)],
    }
