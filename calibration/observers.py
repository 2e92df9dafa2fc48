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
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    inputs = {i.name for i in model.graph.input}
    wanted = [n for n in tensor_names if n not in inputs]
    rare = set(occasional) & set(wanted) if wants_occasional is not None else set()
    lighter = [n for n in wanted if n not in rare]
    called = name or model.graph.name or "the model"
    session = _collect_session(model, wanted, threads, arrays, called)

    def run(names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return run_views(session, names, feed) if names else []
        except Exception as exc:  # ORT's own error types: the model cannot run on this data
            raise DataRefused(f"ONNX Runtime cannot run {called} on the data: {ort_error(exc)}") from None

    def following(feeds: Iterator[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[str]] | None:
        feed = next(feeds, None)
        if feed is None:
            return None
        return feed, (lighter if rare and wants_occasional is not None and not wants_occasional() else wanted)

    samples, largest = 0, 0
    feeds = iter(source)
    current = following(feeds)
    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgedeploy-collect")
    try:
        outputs = run(current[1], current[0]) if current is not None else []
        index = 0
        while current is not None:
            feed, names = current
            largest = max(largest, sum(a.nbytes for a in outputs))
            early: Future[list[np.ndarray]] | None = None
            read_ahead = prefetch_bytes > 0 and largest <= prefetch_bytes
            if read_ahead:
                upcoming = following(feeds)
                if upcoming is not None:
                    early = ahead.submit(run, upcoming[1], upcoming[0])
            if showing is not None:
                showing(index)
            for name in tensor_names:
                if name in feed:
                    for obs in observers:
                        obs.observe(name, feed[name])
            _show(list(zip(names, outputs, strict=True)), observers, workers)
            del outputs
            samples += feed_rows(feed, specs)
            current, index = (upcoming if read_ahead else following(feeds)), index + 1
            if current is not None:
                outputs = early.result() if early is not None else run(current[1], current[0])
    finally:
        ahead.shutdown(wait=True, cancel_futures=True)
    return samples


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
