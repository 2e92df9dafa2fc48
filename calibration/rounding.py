"""Weight rounding that minimises each layer's output error on the calibration data (GPTQ).

Round-to-nearest rounds every weight on its own, and the rounding errors of one output
channel's weights add up in that channel's outputs. GPTQ (Frantar et al., 2022, after Optimal
Brain Quantization) rounds one output channel's weights one input column at a time and spreads
each column's rounding error over the columns not rounded yet. The spreading is weighted by the
inverse of ``H = X^T X``, the second moments of the layer's inputs ``X`` over the calibration
data. It is a greedy, closed-form minimisation of ``||X W_q - X W||^2``: no gradient steps and
no training loop. The per-channel scales stay those of round-to-nearest, so the Q/DQ graph is
the same and only the int8 values change.

:class:`InputMoments` accumulates ``H`` per layer in the one statistics pass, from a bounded
number of rows per sample. :func:`rounded_weights` rounds the weights with it. ``auto`` scores the
result on the held-out samples against round-to-nearest and keeps round-to-nearest only where
they speak clearly against GPTQ (:func:`calibration.select.rounding_checked`).

Hand-written: the libraries that implement GPTQ work on the PyTorch modules of language models
(Linear layers only). Here the weights are an ONNX model's per-channel int8 initializers of
Conv, Gemm and MatMul, and the inputs come from ONNX Runtime. The algorithm is about 30 lines of
numpy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from calibration.qdq import QuantPlan, WeightCache, attribute, conv_axes, quantized_weight
from calibration.threads import map_ordered

ROWS_PER_SAMPLE = 512  # rows of X (output positions) taken from each sample at most, evenly spaced
MOMENT_WORK = 1 << 20  # per sample and layer, rows x groups x columns^2 multiply-adds at most
MIN_ROWS_PER_SAMPLE = 8  # ... but at least these rows (a wide layer costs more than the work above)
MAX_COLUMNS = 576  # layers with more inputs per output (3x3x64) keep round-to-nearest (cost ~ columns^3)
MAX_MOMENT_BYTES = 256 << 20  # all layers' H together (float64); the layers past it keep round-to-nearest
DAMPING = 0.01  # of the mean diagonal of H, added to it: GPTQ's default, keeps H invertible
BLOCK = 32  # columns rounded together before the rest are updated (GPTQ's lazy batch update)


@dataclass
class Layer:
    """One weight GPTQ can round: its only consumer, and how the consumer's input becomes rows."""

    weight: str
    axis: int
    node: onnx.NodeProto
    groups: int
    columns: int  # inputs per output channel (per group): Cin/groups x kernel size, or K


def layers(model: onnx.ModelProto, plan: QuantPlan, consts: Mapping[str, np.ndarray]) -> list[Layer]:
    """The plan's weights that GPTQ rounds: read by one node only, as the weight of a Conv with a
    1-D or 2-D kernel (any padding, ``auto_pad`` too: see :func:`calibration.qdq.conv_axes`), of a
    Gemm without transA, or as the constant second input of a MatMul with a 2-D weight; at most
    :data:`MAX_COLUMNS` columns per output channel, and the first ones (in graph order) whose
    moments fit in :data:`MAX_MOMENT_BYTES`."""
    found: list[Layer] = []
    budget = MAX_MOMENT_BYTES
    nodes = model.graph.node
    for (name, axis), wq in sorted(plan.weights.items(), key=lambda kv: min(kv[1].uses, default=(0, 0))):
        w = consts.get(name)
        if w is None or axis is None or len(wq.uses) != 1 or wq.uses[0][1] != 1 or w.dtype.kind != "f":
            continue  # axis None: a weight of one scale (a batched MatMul's), rounded to nearest
        node = nodes[wq.uses[0][0]]
        if node.op_type == "Conv" and w.ndim in (3, 4) and axis == 0:
            groups = int(attribute(node, "group", 1))
            columns = int(np.prod(w.shape[1:]))
        elif node.op_type == "Gemm" and w.ndim == 2 and not attribute(node, "transA", 0):
            groups, columns = 1, int(w.shape[1] if attribute(node, "transB", 0) else w.shape[0])
        elif node.op_type == "MatMul" and w.ndim == 2 and axis == 1:
            groups, columns = 1, int(w.shape[0])
        else:
            continue
        size = groups * columns * columns * 8
        if columns > MAX_COLUMNS or size > budget:
            continue
        budget -= size
        found.append(Layer(name, axis, node, groups, columns))
    return found


# a Conv's im2col as one gather: per entry of its (groups, rows, columns) rows, the flat position in
# the input it copies (0 where it is padding), and the flat positions in the rows that are padding
Unfold = tuple[np.ndarray, np.ndarray]


def layer_rows(
    layer: Layer,
    x: np.ndarray,
    kernel: tuple[int, ...],
    limit: int,
    unfold: Unfold | None = None,
) -> np.ndarray | None:
    """At most ``limit`` of the rows the layer multiplies its weight with, evenly spaced, per
    group: ``(groups, rows, columns)`` float32 (a Conv's input unfolded at the chosen output
    positions, im2col, with its zero padding; a Gemm's or MatMul's input flattened to rows).
    None when ``x`` does not have the shape the layer expects. ``unfold``: a Conv's
    :func:`unfold_index` for ``x``'s shape, when the caller keeps it from batch to batch."""
    node = layer.node
    if node.op_type != "Conv":
        if x.shape[-1] != layer.columns:
            return None
        flat = x.reshape(-1, layer.columns)
        return np.ascontiguousarray(_spaced(flat, limit)[None], dtype=np.float32)
    if unfold is None:
        unfold = unfold_index(layer, x.shape, kernel, limit)
    if unfold is None:
        return None
    index, padding = unfold
    rows = np.ravel(x).take(index)  # x's values at their rows' places, in the rows' order
    if rows.dtype != np.float32:
        rows = rows.astype(np.float32)
    rows.reshape(-1)[padding] = 0.0  # outside the input: the zero padding
    return rows


def unfold_index(layer: Layer, shape: tuple[int, ...], kernel: tuple[int, ...], limit: int) -> Unfold | None:
    """The gather that :func:`layer_rows` makes of a Conv's input of ``shape``: the rows of
    ``limit`` output positions at most, evenly spaced (None when ``shape`` is not the layer's).
    The same for every batch of that shape, so :class:`InputMoments` computes it once: made per
    batch, one fancy index per kernel tap, it was most of the moments' time (ddddocr's detector:
    1.1 s of 1.6 s)."""
    node, dims = layer.node, len(kernel)
    if len(shape) != dims + 2 or shape[1] % layer.groups:
        return None
    sizes = shape[2:]
    axes = conv_axes(node, kernel, sizes)
    if axes is None:
        return None
    strides, dilations, begins, outs = (list(v) for v in zip(*axes, strict=True))
    n, c = shape[:2]
    at = _spaced(np.arange(n * math.prod(outs)), limit)
    where = np.unravel_index(at, (n, *outs))  # sample, then output position per axis
    # per row and kernel tap (axes: row, tap of axis 0, tap of axis 1, ...): the input position
    # along each spatial axis, whether it is inside the input, and the flat spatial offset
    offset = np.zeros((len(at),) + (1,) * dims, np.int64)
    inside = np.ones((len(at),) + (1,) * dims, bool)
    for d in range(dims):
        taps = np.arange(kernel[d]) * dilations[d]
        coord = (where[1 + d] * strides[d])[:, None] + taps[None, :] - begins[d]  # (rows, k_d)
        along = (len(at), *(kernel[d] if e == d else 1 for e in range(dims)))
        inside = inside & ((coord >= 0) & (coord < sizes[d])).reshape(along)
        offset = offset * sizes[d] + coord.reshape(along)
    plane = math.prod(sizes)
    channel = (where[0][:, None] * c + np.arange(c)[None, :]) * plane  # (rows, c)
    index = channel.reshape(len(at), c, *([1] * dims)) + offset[:, None]  # (rows, c, *kernel)
    outside = np.broadcast_to(~inside[:, None], index.shape)
    index = np.where(outside, 0, index)
    per_group = c // layer.groups
    grouped = (1, 0, 2)  # (rows, groups, columns) -> (groups, rows, columns)
    index = np.ascontiguousarray(
        index.reshape(len(at), layer.groups, per_group * math.prod(kernel)).transpose(grouped)
    )
    outside = outside.reshape(len(at), layer.groups, -1).transpose(grouped)
    return index, np.flatnonzero(outside)


def rows_per_sample(layer: Layer) -> int:
    """Rows taken from each sample for ``layer``: as many as :data:`MOMENT_WORK` pays for, between
    :data:`MIN_ROWS_PER_SAMPLE` and :data:`ROWS_PER_SAMPLE`. With 48 calibration samples a 3x3x32
    convolution gets 576 rows, twice its columns, and a 3x3x64 one 384, fewer than its 576 columns:
    it keeps round-to-nearest (see :func:`rounded_weights`) unless there are 72 samples or more."""
    work = layer.groups * layer.columns * layer.columns
    return max(MIN_ROWS_PER_SAMPLE, min(ROWS_PER_SAMPLE, MOMENT_WORK // max(1, work)))


def _spaced(rows: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` rows (axis 0), evenly spaced."""
    if rows.shape[0] <= limit:
        return rows
    return rows[np.linspace(0, rows.shape[0] - 1, limit).astype(np.int64)]


class InputMoments:
    """Observer: ``H = X^T X`` per layer of :func:`layers` (per group), over the rows its input
    makes (:func:`layer_rows`), at most :func:`rows_per_sample` per sample of each batch; rows
    with NaN or Inf leave that batch out. Different tensors may be shown on different threads."""

    def __init__(self, model: onnx.ModelProto, plan: QuantPlan, consts: Mapping[str, np.ndarray]) -> None:
        self.layers = layers(model, plan, consts)
        self.kernels = {
            layer.weight: tuple(int(k) for k in consts[layer.weight].shape[2:]) for layer in self.layers
        }
        self.by_input: dict[str, list[Layer]] = {}
        for layer in self.layers:
            self.by_input.setdefault(layer.node.input[0], []).append(layer)
        self.moments: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}
        self.lock = threading.Lock()  # guards the dicts' inserts only
        # per Conv layer, its unfold_index for the last input shape and row limit it was shown
        self.unfolds: dict[str, tuple[tuple[tuple[int, ...], int], Unfold | None]] = {}

    @property
    def names(self) -> list[str]:
        """The tensors this observer needs to see (the layers' inputs)."""
        return list(self.by_input)

    def _unfold(self, layer: Layer, array: np.ndarray, limit: int) -> Unfold | None:
        """``layer``'s :func:`unfold_index` for ``array``'s shape, made once per shape and limit (a
        layer's input is shown on one thread at a time; the last one is kept)."""
        if layer.node.op_type != "Conv":
            return None
        key = (tuple(int(d) for d in array.shape), limit)
        kept = self.unfolds.get(layer.weight)
        if kept is None or kept[0] != key:
            kept = (key, unfold_index(layer, key[0], self.kernels[layer.weight], limit))
            self.unfolds[layer.weight] = kept
        return kept[1]

    def observe(self, name: str, array: np.ndarray) -> None:
        if array.dtype.kind != "f":
            return
        for layer in self.by_input.get(name, ()):
            limit = rows_per_sample(layer) * max(1, int(array.shape[0]) if array.ndim > 1 else 1)
            unfold = self._unfold(layer, array, limit)
            rows = layer_rows(layer, array, self.kernels[layer.weight], limit, unfold)
            if rows is None or rows.shape[1] == 0 or not np.isfinite(rows).all():
                continue
            h = np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
            with self.lock:
                if layer.weight in self.moments:
                    self.moments[layer.weight] += h
                    self.rows[layer.weight] += rows.shape[1]
                else:
                    self.moments[layer.weight], self.rows[layer.weight] = h, rows.shape[1]


def gptq(w: np.ndarray, h: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """GPTQ's rounding of ``w`` (``(groups, outputs, columns)``) on the grid ``scale`` (per output,
    ``(groups, outputs)``, symmetric, ``[-qmax, qmax]``) for inputs with second moments ``h``
    (``(groups, columns, columns)``). Returns the integers, ``w``'s shape, as float64.

    Worked on column-major copies (one input column's weights contiguous), so that the update
    of the columns after each rounded one is one contiguous block, and in blocks of
    :data:`BLOCK` columns: a layer of MiniLM (384 columns, 1536 outputs) took 25 ms instead of
    90 ms with row-major blocks of 128 (the same integers)."""
    wt = np.array(np.swapaxes(w, 1, 2), np.float64, order="C")  # (groups, columns, outputs)
    h = np.array(h, np.float64)
    groups, columns, _ = wt.shape
    dead = np.diagonal(h, axis1=1, axis2=2) == 0  # inputs that were always 0: their weights do not matter
    for g in range(groups):
        h[g, dead[g], dead[g]] = 1.0
        wt[g][dead[g]] = 0.0
    damp = DAMPING * np.mean(np.diagonal(h, axis1=1, axis2=2), axis=1)
    h += damp[:, None, None] * np.eye(columns)
    # the upper Cholesky factor of H^-1: row i holds how column i's error moves the later columns
    hinv = np.ascontiguousarray(np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1))
    s = np.asarray(scale, np.float64)
    qt = np.zeros_like(wt)
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        errors = np.zeros((groups, end - start, wt.shape[2]))
        for i in range(start, end):
            qt[:, i] = np.clip(np.round(wt[:, i] / s), -qmax, qmax)
            err = (wt[:, i] - qt[:, i] * s) / hinv[:, i, i, None]
            wt[:, i:end] -= hinv[:, i, i:end, None] * err[:, None, :]
            errors[:, i - start] = err
        wt[:, end:] -= np.swapaxes(hinv[:, start:end, end:], 1, 2) @ errors
    return np.swapaxes(qt, 1, 2)


def _as_rows(w: np.ndarray, layer: Layer) -> np.ndarray:
    """The weight as ``(groups, outputs per group, columns)``, columns in :func:`layer_rows`' order."""
    if layer.node.op_type == "Conv":
        return w.reshape(layer.groups, w.shape[0] // layer.groups, -1)
    if layer.node.op_type == "Gemm" and attribute(layer.node, "transB", 0):
        return w[None]
    return w.T[None]  # Gemm without transB and MatMul: (K, N)


def _from_rows(rows: np.ndarray, w: np.ndarray, layer: Layer) -> np.ndarray:
    if layer.node.op_type == "Conv":
        return rows.reshape(w.shape)
    if layer.node.op_type == "Gemm" and attribute(layer.node, "transB", 0):
        return rows[0]
    return rows[0].T


def _output_error(q: np.ndarray, w: np.ndarray, s: np.ndarray, h: np.ndarray) -> float:
    """``sum_g trace(E_g H_g E_g^T)`` for ``E = q * s - w``: the squared error at the layer's outputs."""
    e = q * s[:, :, None] - w
    return float(((e @ h) * e).sum())


def rounded_weights(
    model: onnx.ModelProto,
    plan: QuantPlan,
    moments: InputMoments,
    consts: Mapping[str, np.ndarray],
    cache: WeightCache | None = None,
    workers: int = 1,
) -> WeightCache:
    """The GPTQ-rounded int8 values, with their round-to-nearest scales, of the weights ``plan``
    quantizes whose moments have at least as many rows as the layer has inputs per output, as a
    :data:`~calibration.qdq.WeightCache` (the other weights are not in it). A weight keeps
    round-to-nearest where GPTQ's error at the layer's outputs, over the same moments, is not
    lower. ``cache``: the round-to-nearest weights; ``workers``: threads rounding layers side by
    side (:mod:`calibration.threads`; the same integers either way)."""
    qmax = plan.options.weight_qmax
    todo = []
    for layer in moments.layers:
        if (layer.weight, layer.axis) not in plan.weights:
            continue  # moments gathered for a plan that quantizes more than ``plan``
        h = moments.moments.get(layer.weight)
        if h is None or moments.rows[layer.weight] < layer.columns:
            continue  # fewer rows than inputs: H has no full rank, and GPTQ would fit those rows
        w = consts[layer.weight]
        todo.append((layer, w, h, *quantized_weight(model, layer.weight, layer.axis, qmax, cache, w)))

    def rounded(job: tuple[Layer, np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray | None:
        layer, w, h, q_near, scale = job
        rows = _as_rows(w.astype(np.float64), layer)
        s = scale.astype(np.float64).reshape(rows.shape[0], rows.shape[1])
        q = gptq(rows, h, s, qmax)
        nearest = _as_rows(q_near, layer).astype(np.float64)
        better = _output_error(q, rows, s, h) < _output_error(nearest, rows, s, h)
        # C order, as read back from the .rounding.npz: the same layout gives the same float sums
        return np.ascontiguousarray(_from_rows(q, w, layer), dtype=np.int8) if better else None

    found: WeightCache = {}
    for (layer, _, _, _, scale), q in zip(todo, map_ordered(rounded, todo, workers), strict=True):
        if q is not None:
            found[(layer.weight, layer.axis, qmax)] = (q, scale)
    return found
