"""Streaming per-tensor statistics, collected in one pass of ONNX Runtime over a data source.

Calibration (and FP16 range analysis) need statistics of intermediate tensors over many
samples without keeping the samples. Each observer sees one batch at a time through
``observe(name, array)`` and keeps a fixed-size summary, so peak memory does not grow with the
number of samples. Hand-written because the libraries that do this (ONNX Runtime's and Model
Optimizer's calibrators) keep every batch's activations before building their histograms.

:func:`collect` marks the wanted tensors as graph outputs in an in-memory copy of the model
and runs ONNX Runtime on the CPU batch by batch, handing each tensor to every observer.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import onnx

from calibration.errors import CalibrationError, DataRefused, ModelLoadError
from calibration.feeds import feed_rows
from calibration.graphs import (
    FLOAT_ELEMS,
    constant_derived,
    infer_shapes_light,
    ort_crashing_optimizers,
    ort_error,
)
from calibration.modelinfo import TensorSpec
from calibration.ortvalues import is_float_dtype, run_views
from calibration.threads import map_ordered

DEFAULT_BINS = 4096
SPARSE_MIN_VALUES = 1 << 14  # HistogramObserver(every=...): smaller arrays are counted whole


class Observer(Protocol):
    def observe(self, name: str, array: np.ndarray) -> None:
        """Fold one batch of tensor ``name`` into the running statistics."""
        ...


@dataclass
class TensorRange:
    """Running min, max and absolute max of one tensor, plus element and non-finite counts."""

    minimum: float = math.inf
    maximum: float = -math.inf
    count: int = 0
    nonfinite: int = 0

    @property
    def absmax(self) -> float:
        if self.count == 0:
            return 0.0
        return max(abs(self.minimum), abs(self.maximum))


class RangeObserver:
    """min / max / absmax per tensor: what FP16 range analysis and max calibration need."""

    def __init__(self, names: Iterable[str] | None = None) -> None:
        self.ranges: dict[str, TensorRange] = {}
        self.names = set(names) if names is not None else None

    def observe(self, name: str, array: np.ndarray) -> None:
        if array.dtype.kind != "f" or array.size == 0 or (self.names is not None and name not in self.names):
            return
        rng = self.ranges.setdefault(name, TensorRange())
        finite = np.isfinite(array)
        bad = int(array.size - np.count_nonzero(finite))
        values = array[finite] if bad else array
        rng.nonfinite += bad
        if values.size:
            rng.minimum = min(rng.minimum, float(values.min()))
            rng.maximum = max(rng.maximum, float(values.max()))
            rng.count += int(values.size)


class ChannelMeanObserver:
    """Per-channel mean (along axis 1) of some tensors: the input means bias correction needs
    (:func:`calibration.qdq.bias_corrections`), one reduction per batch in the statistics pass."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.sizes: dict[str, tuple[int, ...] | None] = {}  # axes 2 and up, None where they vary

    def observe(self, name: str, array: np.ndarray) -> None:
        if name not in self.names or array.dtype.kind != "f" or array.ndim < 2 or array.size == 0:
            return
        channels = array.shape[1]
        total = self.sums.get(name)
        if total is not None and total.shape != (channels,):
            self.names.discard(name)  # channels that change between batches: no mean
            self.sums.pop(name)
            return
        # each row's channel sums in float32 over contiguous values (pairwise: accurate), the rows
        # in float64: 2.5x faster than one float64 reduction over axes (0, 2, ...)
        rows = array.reshape(array.shape[0], channels, -1).sum(axis=2, dtype=np.float32)
        summed = rows.sum(axis=0, dtype=np.float64)
        self.sums[name] = summed if total is None else total + summed
        self.counts[name] = self.counts.get(name, 0) + array.size // channels
        size = tuple(array.shape[2:])
        self.sizes[name] = size if self.sizes.get(name, size) == size else None

    def means(self) -> dict[str, np.ndarray]:
        """Per tensor, the mean of each channel; a tensor with a NaN/Inf in it has none."""
        found = {name: total / self.counts[name] for name, total in self.sums.items()}
        return {name: mean for name, mean in found.items() if np.all(np.isfinite(mean))}

    def spatial(self) -> dict[str, tuple[int, ...]]:
        """Per tensor, its size along axes 2 and up, where every batch had the same."""
        return {name: size for name, size in self.sizes.items() if size is not None}


@dataclass
class AbsHistogram:
    """Histogram of |x| over ``[0, top]`` with a fixed number of bins.

    ``top`` is a power of two times the first batch's absmax; when a value exceeds it, the
    range doubles and neighbouring bins merge pairwise, which is exact and keeps memory fixed.
    The observed absmax therefore always lies in the upper half, so at least ``bins / 2``
    bins cover ``[0, absmax]``.
    """

    bins: int = DEFAULT_BINS
    top: float = 0.0  # 0 until a non-zero value is seen
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    absmax: float = 0.0
    zeros: int = 0  # exact zeros, kept apart so that an all-zero start has no range

    def __post_init__(self) -> None:
        if self.counts.size == 0:
            self.counts = np.zeros(self.bins, dtype=np.int64)

    @property
    def width(self) -> float:
        return self.top / self.bins if self.top else 0.0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def _grow_to(self, value: float) -> None:
        if self.top == 0.0:
            self.top = float(value)
            return
        while self.top < value:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts[: self.bins // 2] = merged
            self.counts[self.bins // 2 :] = 0
            self.top *= 2.0

    def add(self, values: np.ndarray) -> None:
        """Add finite values (any shape); NaN/Inf must be filtered by the caller."""
        mags = np.abs(values.astype(np.float32, copy=False)).ravel()
        if mags.size:
            self.add_magnitudes(mags, float(mags.max()))

    def add_magnitudes(self, mags: np.ndarray, amax: float) -> None:
        """Add |x| (a flat float32 array that this call may overwrite, finite, max ``amax``).

        Few passes over the data, the profile's hot spot on large activations: one scaling in
        place, one cast to bin indices, one bincount, and a count of exact zeros only when bin 0
        got any; the zeros land in bin 0 and are taken out of it again instead of being filtered
        out first.
        """
        if amax == 0.0:
            self.zeros += int(mags.size)
            return
        self.absmax = max(self.absmax, amax)
        if amax > self.top:
            self._grow_to(amax)
        np.multiply(mags, np.float32(self.bins / self.top), out=mags)
        counts = np.bincount(mags.astype(np.intp), minlength=self.bins)
        if counts[0]:
            zeros = int(mags.size) - int(np.count_nonzero(mags))
            counts[0] -= zeros
            self.zeros += zeros
        self.counts += counts[: self.bins]
        self.counts[-1] += counts[self.bins :].sum()  # |x| == top (rounding) goes to the last bin

    def full_counts(self) -> np.ndarray:
        """Counts with the exact zeros folded into bin 0, as a float64 array."""
        counts = self.counts.astype(np.float64)
        counts[0] += self.zeros
        return counts


class HistogramObserver:
    """Absolute max and a growing |x| histogram per tensor (the input of every algorithm)."""

    def __init__(
        self,
        bins: int = DEFAULT_BINS,
        names: Iterable[str] | None = None,
        every: Mapping[str, int] | None = None,
    ) -> None:
        """``every``: tensor -> n, count only every n-th value of it in its histogram (its
        absolute max and non-finite count still see every value); see :func:`_sparse`."""
        if bins < 256 or bins & (bins - 1):
            raise CalibrationError(f"histogram bins must be a power of two >= 256, got {bins}")
        self.bins = bins
        self.names = set(names) if names is not None else None
        self.every = dict(every or {})
        self.histograms: dict[str, AbsHistogram] = {}
        self.nonfinite: dict[str, int] = {}

    def observe(self, name: str, array: np.ndarray) -> None:
        if not is_float_dtype(array.dtype) or (self.names is not None and name not in self.names):
            return
        if array.dtype.kind != "f":  # bfloat16, float8: statistics in float32
            array = array.astype(np.float32)
        hist = self.histograms.setdefault(name, AbsHistogram(self.bins))
        step = self.every.get(name, 1)
        if step > 1 and array.size >= SPARSE_MIN_VALUES:
            self._sparse(name, hist, array, step)
            return
        mags = np.abs(array.astype(np.float32, copy=False)).ravel()
        if mags.size == 0:
            return
        amax = float(mags.max())  # NaN or Inf when any value is: then (only then) filter
        if not math.isfinite(amax):
            finite = np.isfinite(mags)
            self.nonfinite[name] = self.nonfinite.get(name, 0) + int(mags.size - np.count_nonzero(finite))
            mags = mags[finite]
            if mags.size == 0:
                return
            amax = float(mags.max())
        hist.add_magnitudes(mags, amax)

    def _sparse(self, name: str, hist: AbsHistogram, array: np.ndarray, step: int) -> None:
        """Every ``step``-th value into the histogram, the absolute max of all of them.

        For the tensors that only TensorRT's calibration cache lists (GPU placement, every float
        activation; 213 of 280 on ddddocr's detector): their thresholds are a percentile of the
        histogram, which a regular subsample of each batch estimates as well, while the
        histogram's passes over every value were the largest part of the statistics work."""
        flat = array.ravel()
        lo, hi = float(flat.min()), float(flat.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN/Inf: the exact path counts them
            finite = np.isfinite(flat)
            self.nonfinite[name] = self.nonfinite.get(name, 0) + int(flat.size - np.count_nonzero(finite))
            flat = flat[finite]
            if flat.size == 0:
                return
            lo, hi = float(flat.min()), float(flat.max())
        mags = np.abs(flat[::step])
        hist.add_magnitudes(mags, max(-lo, hi))

    def share(self, sources: dict[str, str]) -> None:
        """Give each tensor of ``sources`` (name -> the tensor it copies) its source's statistics."""
        for name, root in sources.items():
            hist = self.histograms.get(root)
            if hist is not None:
                self.histograms[name] = replace(hist, counts=hist.counts.copy())
            if root in self.nonfinite:
                self.nonfinite[name] = self.nonfinite[root]


# ops whose (first) output holds exactly the values of their first input, only rearranged
SAME_VALUES_OPS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")


def same_values_sources(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, str]:
    """For each of ``names`` made by a :data:`SAME_VALUES_OPS` op (through a chain of them) from
    a computed tensor or a graph input: that tensor. Both have the same |x| histogram, so the
    statistics pass observes the source once and fetches neither the copy from ONNX Runtime
    nor its histogram work (51 of MiniLM's 225 float tensors, 28 of PP-OCRv4's recognizer's 410)."""
    producer = {n.output[0]: n for n in model.graph.node if n.output}
    inits = {i.name for i in model.graph.initializer}
    sources: dict[str, str] = {}
    for name in names:
        root, node = name, producer.get(name)
        while (
            node is not None
            and node.op_type in SAME_VALUES_OPS
            and node.input
            and node.input[0]
            and node.input[0] not in inits
        ):
            root = node.input[0]
            node = producer.get(root)
        if root != name:
            sources[name] = root
    return sources


def float_tensor_names(model: onnx.ModelProto) -> list[str]:
    """Every float activation: graph inputs and node outputs whose inferred type is float.

    Types come from ONNX shape inference; a tensor whose type is unknown is kept (ONNX Runtime
    reports it, and non-float arrays are ignored by the observers).
    """
    return [name for name, elem in activation_types(model).items() if elem is None or elem in FLOAT_ELEMS]


def activation_types(model: onnx.ModelProto) -> dict[str, int | None]:
    """Every activation (graph inputs and node outputs, not weights), in graph order, with its
    inferred element type (``onnx.TensorProto`` enum; 0 for a value that is no tensor, a sequence
    or a map), None where shape inference does not tell."""
    inferred = infer_shapes_light(model)
    types: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {i.name for i in model.graph.initializer}
    candidates = [i.name for i in model.graph.input if i.name not in inits]
    constant = constant_derived(model.graph)  # weights, not activations
    for node in model.graph.node:
        candidates.extend(o for o in node.output if o and o not in constant)
    return {name: types.get(name) for name in dict.fromkeys(candidates)}


def no_spinning(options: Any) -> None:
    """ONNX Runtime's idle worker threads wait without spinning. Measured on a 2-core machine
    shared with other jobs (load 9): a calibration pass over 8 batches took 1.3 s instead of
    1.9 s (YOLOX-style detector) and 3.0 s instead of 4.2 s (PP-OCRv4 recognizer), with 30 %
    less CPU time; spinning only pays on an idle machine with many short runs."""
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")


def emulate_integer_kernels(options: Any) -> None:
    """ONNX Runtime runs a Q/DQ model's quantized ops as float ops on the dequantized values (its
    Q/DQ fusions off): what the target's exact integer arithmetic gives, up to float rounding.
    For measuring a model whose integer kernels this CPU lacks: without 8-bit dot products (VNNI)
    ONNX Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturate on 8-bit
    weights (docs/design.md, "Integer kernels this CPU lacks")."""
    options.add_session_config_entry("session.disable_quant_qdq", "1")


IN_MEMORY_BYTES = 4096  # initializers larger than this (float32 or 8-bit) reach ONNX Runtime as arrays
IN_MEMORY = "in-memory"  # the external-data location of a weight whose values an array holds
# the initializer types handed over in memory: float weights, and the 8-bit weights of Q/DQ models
IN_MEMORY_TYPES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1}


def in_memory_stub(
    graph: onnx.GraphProto, name: str, dims: Sequence[int], data_type: int = onnx.TensorProto.FLOAT
) -> None:
    """An initializer of ``graph`` (float32 unless ``data_type`` says otherwise) without its values,
    marked external at :data:`IN_MEMORY`: an array holds them, which :func:`weights_in_memory`
    hands to ONNX Runtime."""
    stub = graph.initializer.add()
    stub.name, stub.data_type = name, data_type
    stub.dims.extend(dims)
    stub.data_location = onnx.TensorProto.EXTERNAL
    stub.external_data.add(key="location", value=IN_MEMORY)


def _is_stub(init: onnx.TensorProto) -> bool:
    return init.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == IN_MEMORY for e in init.external_data
    )


def weights_in_memory(
    model: onnx.ModelProto, arrays: Mapping[str, np.ndarray] | None = None
) -> tuple[onnx.ModelProto, list[str], list[Any]]:
    """``model`` without its large float32 and 8-bit initializers (:data:`IN_MEMORY_TYPES`), which
    stay behind as stubs marked external (:func:`in_memory_stub`), and their names and OrtValues for
    ``SessionOptions.add_external_initializers``: the weights are then neither serialized nor parsed
    again by ONNX Runtime, which puts them back into its graph as initializers before it optimizes
    it (its Q/DQ fusions see the int8 weights as constants), so a session computes the same bits
    (tests pin it). ``arrays``: float32 values already read, by initializer name (the others are
    read here), and those of ``model``'s own stubs. The OrtValues share the arrays' memory: keep
    them alive as long as the session."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from calibration.graphs import copy_without_initializers

    light = copy_without_initializers(model)  # the weights are never copied
    names: list[str] = []
    values: list[Any] = []
    for init in model.graph.initializer:
        itemsize = IN_MEMORY_TYPES.get(init.data_type, 0)
        size = itemsize * int(np.prod(init.dims, dtype=np.int64))
        external = init.data_location == onnx.TensorProto.EXTERNAL
        float32 = init.data_type == onnx.TensorProto.FLOAT
        array = arrays.get(init.name) if arrays is not None and float32 else None
        if _is_stub(init):
            if array is None:
                raise ValueError(f"no values for the in-memory weight {init.name}")
        elif itemsize and not external and size > IN_MEMORY_BYTES:
            try:
                array = numpy_helper.to_array(init) if array is None else array
            except ValueError:  # data that does not fill its dims: ONNX Runtime reports it
                array = None
        else:
            array = None
        if array is None:
            light.graph.initializer.append(init)
            continue
        in_memory_stub(light.graph, init.name, init.dims, init.data_type)
        names.append(init.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
    return light, names, values


def in_memory_session(
    model: onnx.ModelProto,
    options: Any,
    arrays: Mapping[str, np.ndarray] | None = None,
    outputs: Sequence[str] = (),
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Any:
    """An ONNX Runtime session of ``model`` (``outputs`` appended to its graph outputs, see
    :func:`outputs_appended`) whose large weights reach it as arrays (:func:`weights_in_memory`,
    ``arrays`` as there), kept alive with the session; ``options``: its SessionOptions, to which
    the weights are added. ONNX Runtime's load errors reach the caller as they are."""
    import onnxruntime as ort

    light, names, values = weights_in_memory(model, arrays)
    if names:
        options.add_external_initializers(names, values)
    data = light.SerializeToString()
    if outputs:
        data = outputs_appended(data, light, outputs)
    session = ort.InferenceSession(
        data, options, providers=list(providers), disabled_optimizers=ort_crashing_optimizers(model)
    )
    session._in_memory_weights = values  # the session reads the arrays' memory
    return session


def _session(
    model: onnx.ModelProto | bytes,
    threads: int | None,
    name: str = "",
    external: tuple[list[str], list[Any]] = ([], []),
) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Basic optimizations only: every observed tensor is a graph output, so nothing it needs is fused.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 4  # errors reach the user as one line, not as ORT log lines
    if threads:
        options.intra_op_num_threads = threads
    no_spinning(options)
    if external[0]:
        options.add_external_initializers(*external)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        name = name or (model.graph.name if isinstance(model, onnx.ModelProto) else "") or "the model"
        raise ModelLoadError(f"ONNX Runtime cannot load {name}: {ort_error(exc)}") from None
    session._calibration_weights = external[1]  # type: ignore[attr-defined]  # it reads their memory
    return session


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are its own plus ``names`` (types left to ORT)."""
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    existing = {o.name for o in marked.graph.output}
    for name in names:
        if name not in existing:
            marked.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            existing.add(name)
    return marked


def outputs_appended(serialized: bytes, model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """:func:`with_outputs` of ``model`` as bytes, from ``serialized`` (``model``'s own bytes):
    protobuf parses concatenated messages as one merged message, whose repeated fields (the
    graph's outputs) are appended to, so the weights are not serialized again."""
    existing = {o.name for o in model.graph.output}
    extra = onnx.ModelProto()
    for name in dict.fromkeys(names):
        if name not in existing:
            extra.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return serialized + extra.SerializeToString()


PREFETCH_BYTES = 256 << 20  # calibration's collect: the next run starts while a run fetches at most this


def collect(
    model: onnx.ModelProto | str | os.PathLike[str],
    source: Iterable[dict[str, np.ndarray]],
    tensor_names: Sequence[str],
    observers: Sequence[Observer],
    *,
    threads: int | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    occasional: Collection[str] = (),
    wants_occasional: Callable[[], bool] | None = None,
    workers: int = 1,
    showing: Callable[[int], None] | None = None,
    prefetch_bytes: int = 0,
    stack: int = 0,
    specs: Sequence[TensorSpec] = (),
    name: str = "",
) -> int:
    """Run the model on every feed of ``source`` and show ``tensor_names`` to each observer.

    Graph inputs among ``tensor_names`` are observed from the feed itself. Returns the number
    of samples (:func:`calibration.feeds.feed_rows`, along the batch axes of the model's input
    ``specs`` when given) seen. ``arrays``: ``model``'s float weights
    by initializer name, when the caller has read them: the large ones reach ONNX Runtime in
    memory (:func:`weights_in_memory`), so that a large model is neither serialized again nor
    parsed by ONNX Runtime.

    ``occasional``: tensors of ``tensor_names`` fetched only on the feeds for which
    ``wants_occasional()`` (asked once the feed is yielded) is true; the other feeds' runs ask
    the same session for the rest only. Fetching a tensor costs ONNX Runtime a copy of it: every
    float activation of PP-OCRv4's recognizer (the TensorRT cache's) is 8x the values of the ones
    its Q/DQ model quantizes, and doubles the time of a run. The values fetched are the same
    either way (one session: the same kernels; a session without those outputs could fuse more).
    ``workers``: threads that show the outputs of one run to the observers side by side, each
    tensor on one thread (its statistics come out the same as in a loop); the observers must
    accept calls for different tensors at the same time.

    ``prefetch_bytes``: while every run so far fetched at most this many bytes, ONNX Runtime runs
    the next feed in the same session, on one more thread, while this one's tensors are observed
    (two runs' tensors are then alive; the statistics are the same). The source is then read one
    feed ahead of the observers: ``showing(i)`` is called before the tensors of the ``i``-th feed
    (from 0) are shown, when the source may have yielded the next. Calibration passes
    :data:`PREFETCH_BYTES`: ddddocr's detector and recognizer (64 batches of 1) were about a
    tenth faster; above that bound it was slower (PP-OCRv4's recognizer, 1.5 GB a run: page
    faults); see docs/design.md. Off by default: a source that decides what to yield from what
    the observers have seen needs them in step. ``name``: how errors name the model (its file; by
    default its graph's name).

    ``stack``: for a model that fixes its batch at 1 (every input's first dimension is 1), up to
    this many consecutive feeds of one sample each (of equal shapes) run at once on a copy of the
    model whose first input dimension is free (:func:`stacked_copy`), and each feed's tensors are
    then shown as its own slice of the run's, one feed after another as before, so the
    observers see the same sequence of arrays. Used only after the first stacked run gave the
    first and last sample's tensors as their runs alone do (:func:`_start_stacking`), and while
    ``stack`` samples fetch at most :data:`STACK_BYTES` (else one sample a run, on the copy); a
    copy that fails that test, a feed of other shapes and a stacked run whose shapes are not the
    first one's run one sample at a time on the model's own session, as without ``stack``. It
    reads the source up to ``stack`` feeds ahead (as ``prefetch_bytes`` does one). See
    docs/design.md, "Stacked runs of a batch-1 model".
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    inputs = {i.name for i in model.graph.input}
    wanted = [n for n in tensor_names if n not in inputs]
    rare = set(occasional) & set(wanted) if wants_occasional is not None else set()
    lighter = [n for n in wanted if n not in rare]
    called = name or model.graph.name or "the model"
    stacked = _stacked_session(model, wanted, threads, arrays, called) if stack > 1 else None
    sessions: dict[str, Any] = {}  # the model's own session; with a stacked one, made when a feed needs it
    lock = threading.Lock()

    def session() -> Any:
        with lock:
            if "one" not in sessions:
                sessions["one"] = _collect_session(model, wanted, threads, arrays, called)
            return sessions["one"]

    if stacked is None:
        session()  # before the source is read, as its errors come first

    def run(names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return run_views(session(), names, feed) if names else []
        except Exception as exc:  # ORT's own error types: the model cannot run on this data
            raise DataRefused(f"ONNX Runtime cannot run {called} on the data: {ort_error(exc)}") from None

    def following(feeds: Iterator[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[str]] | None:
        feed = next(feeds, None)
        if feed is None:
            return None
        return feed, (lighter if rare and wants_occasional is not None and not wants_occasional() else wanted)

    samples, largest = 0, 0
    feeds = iter(source)
    pending: list[tuple[dict[str, np.ndarray], list[str]]] = []  # a feed read that no stacked run took
    stacker: _Stacker | None = None

    def next_unit() -> list[tuple[dict[str, np.ndarray], list[str]]]:
        """The next feeds to run together: one, or up to the stacker's rows of equal shapes."""
        first = pending.pop() if pending else following(feeds)
        if first is None:
            return []
        unit = [first]
        while stacker is not None and stacker.fits(first[0]) and len(unit) < stacker.rows:
            more = following(feeds)
            if more is None:
                break
            if not stacker.fits(more[0]):
                pending.append(more)
                break
            unit.append(more)
        return unit

    def compute(unit: list[tuple[dict[str, np.ndarray], list[str]]]) -> list[list[np.ndarray]]:
        if stacker is not None and stacker.fits(unit[0][0]):
            found = stacker.run(unit, wanted, lighter)
            if found is not None:
                return found
        return [run(names, feed) for feed, names in unit]

    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgedeploy-collect")
    try:
        if stacked is not None:
            stacker, unit, outputs = _start_stacking(
                stacked, lambda: following(feeds), pending, wanted, stack
            )
            stacked = None  # the stacker holds it, or it goes (with its memory arena)
        else:
            unit, outputs = next_unit(), []
        if unit and not outputs:
            outputs = compute(unit)
        index = 0
        while unit:
            largest = max(largest, sum(a.nbytes for found in outputs for a in found))
            early: Future[list[list[np.ndarray]]] | None = None
            upcoming: list[tuple[dict[str, np.ndarray], list[str]]] = []
            read_ahead = prefetch_bytes > 0 and largest <= prefetch_bytes
            if read_ahead:
                upcoming = next_unit()
                if upcoming:
                    early = ahead.submit(compute, upcoming)
            for (feed, names), found in zip(unit, outputs, strict=True):
                if showing is not None:
                    showing(index)
                for name in tensor_names:
                    if name in feed:
                        for obs in observers:
                            obs.observe(name, feed[name])
                _show(list(zip(names, found, strict=True)), observers, workers)
                samples += feed_rows(feed, specs)
                index += 1
            del outputs
            unit = upcoming if read_ahead else next_unit()
            if unit:
                outputs = early.result() if early is not None else compute(unit)
    finally:
        ahead.shutdown(wait=True, cancel_futures=True)
    return samples


STACK_ROWS = 4  # calibration's and the fp16 analysis' collect(stack=...): samples of a batch-1 model per run
STACK_BYTES = 128 << 20  # collect(stack=...): a stacked run fetches at most this many bytes
STACK_DIM = "edgedeploy_stacked"  # the name given to a batch-1 model's first input dimension
# ops whose output shapes follow the values, or which may mix or draw samples: no stacked runs
UNSTACKED_OPS = {
    "NonZero",
    "NonMaxSuppression",
    "Unique",
    "Compress",
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
STACK_RTOL = 1e-5  # a stacked run's slice matches a one-sample run within this share of its largest |x|


def stacked_copy(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` (best without its weights: see :func:`weights_in_memory`) whose inputs'
    first dimension, fixed at 1 in ``model``, is :data:`STACK_DIM`, with the graph outputs' shapes
    and every value_info dropped (ONNX Runtime infers them again), so that it runs several samples
    stacked along axis 0. None when an input does not fix its first dimension at 1 (a free batch
    is batched already), or the graph holds control flow or an op of :data:`UNSTACKED_OPS`. Whether
    the copy computes each sample as ``model`` does (a Reshape to a constant shape with a 1 in it
    does not) is for its first run to show (:func:`_stack_layouts`)."""
    graph = model.graph
    for node in graph.node:
        if node.op_type in UNSTACKED_OPS or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            return None
    inits = {i.name for i in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in inits]
    if not inputs:
        return None
    for vi in inputs:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        dims = vi.type.tensor_type.shape.dim
        if not dims or not dims[0].HasField("dim_value") or dims[0].dim_value != 1:
            return None
    stacked = onnx.ModelProto()
    stacked.CopyFrom(model)
    for vi in stacked.graph.input:
        if vi.name not in inits:
            vi.type.tensor_type.shape.dim[0].dim_param = STACK_DIM  # replaces the fixed 1
    for vi in stacked.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    del stacked.graph.value_info[:]
    return stacked


def _one_sample(feed: Mapping[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...], np.dtype], ...] | None:
    """The inputs' names, shapes and types of a feed of one sample along axis 0 (None otherwise,
    or for a feed holding text)."""
    found = []
    for key, value in feed.items():
        if (
            not isinstance(value, np.ndarray)
            or value.ndim == 0
            or value.shape[0] != 1
            or value.dtype.kind in "OSU"
        ):
            return None
        found.append((key, value.shape, value.dtype))
    return tuple(found)


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    """``got`` holds ``want``'s values: the same shape and type, NaN and Inf where it has them, the
    finite values within :data:`STACK_RTOL` of ``want``'s largest finite magnitude."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype.kind != "f":
        return bool(np.array_equal(got, want))
    if np.array_equal(got, want):
        return True
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)) or not np.array_equal(
        got[~finite], want[~finite], equal_nan=True
    ):
        return False
    values = want[finite].astype(np.float64)
    if values.size == 0:
        return True
    scale = float(np.abs(values).max()) or 1.0
    return float(np.abs(got[finite].astype(np.float64) - values).max()) <= STACK_RTOL * scale


Layout = tuple[int, int, bool]  # the sample axis, one sample's length along it, whether samples interleave


def _piece(array: np.ndarray, layout: Layout, rows: int, i: int) -> np.ndarray:
    """Sample ``i``'s slice (a view) of a stacked run's ``array`` of ``rows`` samples."""
    axis, length, interleaved = layout
    # interleaved: position t * rows + i, a time-major tensor flattened with the samples inside
    part = slice(i, length * rows, rows) if interleaved else slice(i * length, (i + 1) * length)
    return array[(slice(None),) * axis + (part,)]


def _stack_layouts(
    names: Sequence[str],
    stacked: Sequence[np.ndarray],
    rows: int,
    references: Mapping[int, Sequence[np.ndarray]],
) -> dict[str, Layout] | None:
    """Where each tensor of a stacked run of ``rows`` samples keeps each sample: the one axis that
    grows ``rows``-fold, as blocks or interleaved (the reading that gives the one-sample runs'
    tensors of ``references``, sample index -> that run's tensors, within :func:`_close`). None when
    a tensor does not grow that way (a value that mixes samples, a Reshape to a fixed batch of 1)
    or no reading matches."""
    layouts: dict[str, Layout] = {}
    for j, (name, array) in enumerate(zip(names, stacked, strict=True)):
        one = next(iter(references.values()))[j]
        if array.ndim != one.ndim:
            return None
        axes = [a for a in range(one.ndim) if array.shape[a] != one.shape[a]]
        if len(axes) != 1 or array.shape[axes[0]] != rows * one.shape[axes[0]]:
            return None
        axis, length = axes[0], one.shape[axes[0]]
        readings = [(axis, length, False)] + ([(axis, length, True)] if length > 1 else [])
        fitting = [
            layout
            for layout in readings
            if all(_close(_piece(array, layout, rows, i), found[j]) for i, found in references.items())
        ]
        if not fitting:
            return None
        if len(fitting) > 1 and any(
            not np.array_equal(
                _piece(array, fitting[0], rows, i), _piece(array, fitting[1], rows, i), equal_nan=True
            )
            for i in range(rows)
        ):
            return None  # both readings fit the samples compared and tell the others apart: no telling
        layouts[name] = fitting[0]
    return layouts


class _Stacker:
    """Runs feeds of one sample each stacked on a :func:`stacked_copy` session and cuts each
    feed's tensors out of the run's (:func:`_piece`)."""

    def __init__(
        self, session: Any, rows: int, shapes: tuple[Any, ...], layouts: dict[str, Layout] | None
    ) -> None:
        """``layouts``: None for one sample a run (``rows`` 1), whose tensors are the run's own."""
        self.session, self.rows, self.shapes, self.layouts = session, rows, shapes, layouts

    def fits(self, feed: Mapping[str, np.ndarray]) -> bool:
        return _one_sample(feed) == self.shapes

    def run(
        self,
        unit: Sequence[tuple[dict[str, np.ndarray], list[str]]],
        wanted: list[str],
        lighter: list[str],
    ) -> list[list[np.ndarray]] | None:
        """Each feed's tensors (its own names), or None when the stacked run fails or its shapes are
        not the first one's (the caller runs the feeds one at a time)."""
        names = wanted if any(own is wanted for _, own in unit) else lighter
        if self.layouts is None:
            names = unit[0][1]
        feed = {key: np.concatenate([f[key] for f, _ in unit], axis=0) for key in unit[0][0]}
        try:
            stacked = run_views(self.session, names, feed)
        except Exception:  # ORT's own errors: the one-sample runs say what is wrong, if anything
            return None
        return self.cut(unit, names, stacked)

    def cut(
        self,
        unit: Sequence[tuple[dict[str, np.ndarray], list[str]]],
        names: list[str],
        stacked: Sequence[np.ndarray],
    ) -> list[list[np.ndarray]] | None:
        """Each feed's tensors (its own names) out of a stacked run of ``unit`` that fetched
        ``names``, or None when its shapes are not the first stacked run's."""
        rows = len(unit)
        if self.layouts is None:
            return [list(stacked)] if rows == 1 else None
        found: list[list[np.ndarray]] = [[] for _ in unit]
        for name, array in zip(names, stacked, strict=True):
            layout = self.layouts.get(name)
            if layout is None or array.ndim <= layout[0] or array.shape[layout[0]] != rows * layout[1]:
                return None
            for i in range(rows):
                found[i].append(_piece(array, layout, rows, i))
        result = []
        for (_, own), pieces in zip(unit, found, strict=True):
            by_name = dict(zip(names, pieces, strict=True))
            result.append(pieces if own is names else [by_name[n] for n in own])
        return result


def _stacked_session(
    model: onnx.ModelProto,
    names: Sequence[str],
    threads: int | None,
    arrays: Mapping[str, np.ndarray] | None,
    name: str,
) -> Any:
    """A session of :func:`stacked_copy` of ``model`` with ``names`` as outputs too (weights in
    memory, as :func:`_collect_session`), or None when the model has no such copy or ONNX Runtime
    cannot load it."""
    light, found, values = weights_in_memory(model, arrays)
    stacked = stacked_copy(light)
    if stacked is None:
        return None
    try:
        return _session(with_outputs(stacked, names), threads, name, (found, values))
    except ModelLoadError:
        return None


def _start_stacking(
    session: Any,
    following: Callable[[], tuple[dict[str, np.ndarray], list[str]] | None],
    pending: list[tuple[dict[str, np.ndarray], list[str]]],
    wanted: list[str],
    stack: int,
) -> tuple[_Stacker | None, list[tuple[dict[str, np.ndarray], list[str]]], list[list[np.ndarray]]]:
    """collect's ``stack``: a :class:`_Stacker` on ``session`` (a :func:`stacked_copy`'s), or None
    when the first feed, the size of one sample's run or the first stacked run rules it out; the
    first feeds to show (the first, with those read to test the stacked run; the one read that
    did not fit goes to ``pending``) and, with a stacker, their tensors (else none: the caller
    runs them on the model's own session). The test: the first feeds run stacked, and the first and the
    last of them alone on the same session; each tensor's slices must hold those runs' values
    (:func:`_stack_layouts`). A run of one sample on the stacked copy computes what the model
    computes (the same graph and kernels on the same shapes; only its input's first dimension is
    named instead of fixed), so the stacked runs then give the statistics of one-sample runs.
    ``following``: the next feed with the names to fetch for it (``wanted``, or fewer for a
    held-out feed)."""
    first = following()
    if first is None:
        return None, [], []
    shapes = _one_sample(first[0])
    if shapes is None or first[1] is not wanted:
        return None, [first], []
    try:
        alone = run_views(session, wanted, first[0])
    except Exception:  # ORT's own errors: the model's own session says what is wrong
        return None, [first], []
    rows = min(stack, STACK_BYTES // max(sum(a.nbytes for a in alone), 1))
    if rows < 2:  # too large to stack: one sample a run, on this session as on the model's own
        return _Stacker(session, 1, shapes, None), [first], [alone]
    unit = [first]
    while len(unit) < rows:
        more = following()
        if more is None:
            break
        if _one_sample(more[0]) != shapes:
            pending.append(more)
            break
        unit.append(more)
    if len(unit) < 2:  # nothing to stack with: one sample a run on the copy, as above
        return _Stacker(session, 1, shapes, None), unit, [alone]
    last = len(unit) - 1
    feed = {key: np.concatenate([f[key] for f, _ in unit], axis=0) for key in first[0]}
    try:
        stacked = run_views(session, wanted, feed)
        ending = run_views(session, wanted, unit[last][0])
    except Exception:  # ORT's own errors: a Reshape or Expand that bakes in batch 1, say
        return None, unit, []
    layouts = _stack_layouts(wanted, stacked, len(unit), {0: alone, last: ending})
    if layouts is None:
        return None, unit, []
    stacker = _Stacker(session, rows, shapes, layouts)
    pieces = stacker.cut(unit, wanted, stacked)
    return (stacker, unit, pieces) if pieces is not None else (None, unit, [])


PARALLEL_VALUES = 1 << 16  # collect(workers=...): one run's outputs below this many values in a loop


def _show(found: list[tuple[str, np.ndarray]], observers: Sequence[Observer], workers: int) -> None:
    """Each (tensor, value) of one run to every observer; on ``workers`` threads, the tensors
    dealt out largest first to the least loaded thread."""
    total = sum(a.size for _, a in found)
    if workers <= 1 or len(found) < 2 or total < PARALLEL_VALUES:
        groups = [found]
    else:
        groups = [[] for _ in range(min(workers, len(found)))]
        loads = [0] * len(groups)
        for item in sorted(found, key=lambda item: -item[1].size):
            least = loads.index(min(loads))
            groups[least].append(item)
            loads[least] += item[1].size

    def run(group: list[tuple[str, np.ndarray]]) -> None:
        for name, array in group:
            for obs in observers:
                obs.observe(name, array)

    map_ordered(run, groups, len(groups))


def _collect_session(
    model: onnx.ModelProto,
    names: Sequence[str],
    threads: int | None,
    arrays: Mapping[str, np.ndarray] | None,
    name: str,
) -> object:
    """A session of ``model`` with ``names`` as outputs too (see :func:`collect`'s ``arrays``);
    ``name``: how its errors name ``model``."""
    if arrays is not None:
        light, found, values = weights_in_memory(model, arrays)
        return _session(with_outputs(light, names), threads, name, (found, values))
    # the outputs appended to the model's bytes: the model is not copied
    return _session(outputs_appended(model.SerializeToString(), model, names), threads, name)
