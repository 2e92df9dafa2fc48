"""Write a Q/DQ (QuantizeLinear / DequantizeLinear) ONNX model from calibrated thresholds.

Symmetric quantization (zero point 0) for weights and TensorRT's activations; ONNX Runtime's
placement quantizes activations to uint8 over their calibrated range (any zero point, see
:func:`activation_qparams`): per-tensor activations, per-channel weights (Conv axis 0, ConvTranspose axis 1,
Gemm axis 0 with transB else 1, a 2-D MatMul weight the last axis; a 1-D or batched MatMul weight
one scale, see :func:`per_tensor_weight`) stored as INT8 initializers followed by
DequantizeLinear, opset >= 13.

Two placements, because the two consumers fuse different patterns:

- ``tensorrt`` (GPU targets): Q/DQ on the inputs of Conv, ConvTranspose, Gemm and MatMul and
  on the branch of a residual Add that is not fused into the preceding Conv; no output
  quantization, float biases (TensorRT fuses BN, activations and biases itself).
- ``onnxruntime`` (CPU targets): ONNX Runtime's QDQ conventions, so its graph transformers
  fuse the groups into integer kernels (QLinearConv, QGemm, QLinearMatMul): every input and
  the output of a weighted op are quantized, biases become INT32 with scale
  ``s_input * s_weight``, shape-only ops (MaxPool, Flatten, Reshape, ...) carry their input's
  scale through so that ONNX Runtime drops them from the integer chain, and a ReLU that
  follows a weighted op quantizes its output to uint8 with zero point 0 (other activations are
  uint8 too, as ONNX Runtime's x86 kernels take them: over their observed range clipped at the
  threshold, or symmetric with zero point 128 when no range is known), which ONNX Runtime
  folds into the preceding kernel. Weights use 7
  bits (``weight_bits=7``) where the CPU lacks VNNI: without it ONNX Runtime's u8 x s8 kernels
  saturate their 16-bit pair sums on full-range weights.

Hand-written because neither library does both: ONNX Runtime's quantizer produces only its own
placement (and its entropy pass keeps every activation in memory), and Model Optimizer needs
onnxruntime-gpu and produces only TensorRT's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.algorithms import per_channel_absmax
from calibration.conversion import check_conversion
from calibration.errors import CalibrationError, ConversionError
from calibration.graphs import (
    CycleError,
    all_graphs,
    constant_derived,
    copy_without_initializers,
    infer_shapes_light,
    min_ir_version,
    named_in_model,
    names_read,
    opset_of,
    subgraphs,
    toposort,
    unique_node_names,
    without_weight_bytes,
)

PLACEMENTS = ("tensorrt", "onnxruntime")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ops that only move or select values: ONNX Runtime drops Q/DQ around them when scales match
PASS_THROUGH_OPS = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "GlobalMaxPool")
# ops ONNX Runtime has QLinear kernels for, quantized on inputs and output in its placement
ORT_QLINEAR_OPS = ("Add", "Concat", "AveragePool", "GlobalAveragePool")
MIN_OPSET = 13
SCALE_FLOOR = 1e-12  # a tensor that was always zero still needs a positive scale


def unknown_op_types(op_types: Sequence[str], model: onnx.ModelProto) -> list[str]:
    """The names of ``op_types`` that neither ONNX defines (``onnx.defs``, every domain and
    version) nor ``model`` uses (a custom op): a misspelt ``Sofmax`` in ``--exclude-ops`` or
    ``--fp32-ops`` would otherwise leave nothing in float without a word. A real op type the model
    does not have is let through (one config for several models)."""
    used: set[str] = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            used.add(node.op_type)
            graphs.extend(subgraphs(node))
    return [op for op in op_types if op not in _onnx_op_types() and op not in used]


def exclusion_matches(
    patterns: Sequence[str], model: onnx.ModelProto, renamed: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Per ``--exclude-nodes`` pattern, the labels of the nodes of ``model`` it selects (the label
    :func:`_excluded` matches: the name, or ``OpType#index`` for an unnamed node), in graph order: a
    node whose name :func:`~calibration.graphs.unique_node_names` changed is selected by its name in
    the model too (``layer`` selects ``layer`` and ``layer#2``). ``renamed``: that function's record,
    when the caller has renamed ``model`` already; without it ``model`` is renamed here, in place."""
    if renamed is None:
        renamed = {}
        unique_node_names(model, renamed)
    labels = [_node_label(node, index) for index, node in enumerate(model.graph.node)]
    return {p: named_in_model(labels, renamed, re.compile(p).fullmatch) for p in patterns}


def unmatched_patterns(patterns: Sequence[str], model: onnx.ModelProto) -> list[str]:
    """The ``--exclude-nodes`` patterns that select no node of ``model`` (:func:`exclusion_matches`,
    renaming ``model`` in place): a misspelt name would otherwise leave nothing in float without a word."""
    return [p for p, found in exclusion_matches(patterns, model).items() if not found]


@functools.lru_cache(maxsize=1)
def _onnx_op_types() -> frozenset[str]:
    return frozenset(schema.name for schema in onnx.defs.get_all_schemas_with_history())


@dataclass(frozen=True)
class QuantizeOptions:
    placement: str = "tensorrt"
    weight_bits: int = 8  # 7 = ONNX Runtime's "reduce range" for CPUs without VNNI
    exclude_nodes: tuple[str, ...] = ()  # exact names or regular expressions (full match)
    exclude_ops: tuple[str, ...] = ()
    unsigned_relu: bool = True  # onnxruntime placement: uint8 (zero point 0) after ReLU
    asymmetric: bool = True  # onnxruntime placement: uint8 over the observed range (activation_qparams)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise CalibrationError(
                f"unknown Q/DQ placement '{self.placement}'; choose {' or '.join(PLACEMENTS)}"
            )
        if self.weight_bits not in (7, 8):
            raise CalibrationError(f"weight bits must be 7 or 8, got {self.weight_bits}")
        for pattern in self.exclude_nodes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CalibrationError(f"bad --exclude-nodes pattern '{pattern}': {exc}") from None

    @property
    def weight_qmax(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1


@dataclass
class TensorQuant:
    """One activation tensor that gets a Q/DQ pair."""

    name: str
    unsigned: bool = False
    share: str | None = None  # take the threshold of this tensor (pass-through ops)
    consumers: set[tuple[int, int]] = field(default_factory=set)  # (node index, input index)
    all_consumers: bool = False  # onnxruntime placement: every non-excluded consumer
    # onnxruntime placement: the activation every consumer applies to this tensor ("silu",
    # "hardswish"), whose output stops changing below some value (see saturation_floor)
    saturates: str = ""

    @property
    def levels(self) -> int:
        """Positive quantization levels, as the calibration algorithms count them."""
        return 256 if self.unsigned else 128

    @property
    def qmax(self) -> int:
        return 255 if self.unsigned else 127


@dataclass
class WeightQuant:
    name: str  # initializer name
    axis: int | None  # None: one scale for the whole weight (per_tensor_weight)
    uses: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class BiasQuant:
    node: int
    name: str  # initializer name
    activation: str
    weight: str


@dataclass
class QuantPlan:
    options: QuantizeOptions
    activations: dict[str, TensorQuant] = field(default_factory=dict)
    weights: dict[tuple[str, int | None], WeightQuant] = field(default_factory=dict)
    biases: list[BiasQuant] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # node names (or op#index) left in float
    # weighted nodes with a constant float operand left in float though not excluded: label -> why
    left_in_float: dict[str, str] = field(default_factory=dict)
    quantized_nodes: list[str] = field(default_factory=list)

    def calibrated_tensors(self) -> list[str]:
        """Activation tensors that need their own threshold (pass-throughs share their input's)."""
        return [t.name for t in self.activations.values() if t.share is None]

    def levels(self) -> dict[str, int]:
        return {t.name: t.levels for t in self.activations.values() if t.share is None}


def _inferred_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every typed tensor, from ONNX shape inference (best effort)."""
    try:  # the weights' values are never read: inferred without copying them (see infer_shapes_light)
        inferred = infer_shapes_light(model)
    except Exception:  # inference is best effort: untyped tensors are judged by the caller
        inferred = model
    types: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def node_pattern(node: onnx.NodeProto, index: int) -> str:
    """The ``exclude_nodes`` pattern that matches this node alone (named or not, see _excluded)."""
    return re.escape(_node_label(node, index))


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values by tensor name."""
    return _constants(model)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def attribute(node: onnx.NodeProto, name: str, default: object) -> Any:
    """The value of ``node``'s attribute ``name`` (int, float, bytes, list...), ``default`` without it."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return int(attribute(node, name, default))


def weight_axis(node: onnx.NodeProto, input_index: int, weight: np.ndarray) -> int | None:
    """The per-channel axis of a weight, or None when it is not a per-channel weight input."""
    if node.op_type == "Conv" and input_index == 1:
        return 0
    if node.op_type == "ConvTranspose" and input_index == 1:
        return 1
    if node.op_type == "Gemm" and input_index == 1 and weight.ndim == 2:
        return 0 if _attr(node, "transB", 0) else 1
    # MatMul: per channel on 2-D weights only; a 1-D or batched weight gets one scale (per_tensor_weight)
    if node.op_type == "MatMul" and input_index == 1 and weight.ndim == 2:
        return weight.ndim - 1
    return None


def per_tensor_weight(node: onnx.NodeProto, input_index: int, weight: np.ndarray) -> bool:
    """Whether ``weight`` is a MatMul's constant second input that is quantized with one scale:
    a 1-D (vector) or batched (3-D and up) weight. TensorRT takes per-channel MatMul weights only
    where both inputs are 2-D matrices, and per-tensor scales on any (docs/tensorrt-facts.md, "Q/DQ
    ONNX that TensorRT accepts"); ONNX Runtime fuses a per-tensor one into QLinearMatMul, and leaves
    a per-channel batched one unfused, a float MatMul behind DequantizeLinear (docs/design.md,
    "Batched and 1-D MatMul weights")."""
    return node.op_type == "MatMul" and input_index == 1 and weight.ndim != 2 and weight.ndim >= 1


def _quantized_input(node: onnx.NodeProto, input_index: int, weight: np.ndarray) -> bool:
    """Whether ``weight`` (a float constant) is a weight :func:`write_qdq` quantizes: per channel
    (:func:`weight_axis`) or with one scale (:func:`per_tensor_weight`)."""
    return weight_axis(node, input_index, weight) is not None or per_tensor_weight(node, input_index, weight)


@dataclass(frozen=True)
class ModelFacts:
    """What every plan of one model reads: its constants and inferred element types.

    Computed once by :func:`model_facts` and handed to each :func:`plan_quantization` of the
    same model (calibrate plans it up to four times): shape inference and the initializers'
    conversion to arrays took 0.5 s per plan on ddddocr's recognizer. Nobody writes into them.
    """

    model: onnx.ModelProto  # the model at opset >= 13 the facts describe
    constants: dict[str, np.ndarray]
    types: dict[str, int]
    derived: set[str]  # computed from constants only (graphs.constant_derived)


def model_facts(model: onnx.ModelProto) -> ModelFacts:
    """The :class:`ModelFacts` of ``model`` as planned (its opset >= 13 upgrade)."""
    upgraded = upgrade_opset(model)
    return ModelFacts(
        upgraded, _constants(upgraded), _inferred_types(upgraded), constant_derived(upgraded.graph)
    )


# ops whose outputs are not a function of their inputs: a weight computed with one is not folded
_UNFOLDABLE_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def fold_computed_weights(model: onnx.ModelProto) -> list[str]:
    """Store the weights of the main graph's Conv, ConvTranspose, Gemm and MatMul nodes that the
    graph computes from constants, so that they are quantized like any stored weight; returns their
    names. ``model`` is changed in place (the caller's copy: the user's file is not written).

    Old torch.onnx wrote ``nn.Linear(bias=False)`` as ``MatMul(x, Transpose(W))`` (onnx's backend
    test pytorch-converted/test_Linear_no_bias); the planner quantizes stored weights only (an
    initializer or a Constant node), so such a layer stayed in float. Each weight is computed with
    onnx's reference evaluator from the nodes that make it and stored as an initializer under its
    own name; the nodes that computed it are removed where nothing else reads their outputs, and so
    are the initializers only they read. Unnamed nodes of the main graph are first named by their
    label (``OpType#index``), so that reports and ``--exclude-nodes`` name them as in the input
    model. Left as computed (the planner then names the node as left in float): a weight computed
    from a DequantizeLinear (an int8 weight-only layer, which folding would undo), with an op of
    another domain, a random op or one holding a body, one the evaluator cannot compute or that is
    not a float tensor, a graph output, and one whose computing node writes another output still read.
    Written here rather than taken from onnxslim's or ONNX Runtime's constant folding: both fold every
    constant subgraph of the model and fuse besides, which would change every other artifact; only
    the weights the planner needs are folded here.
    """
    graph = model.graph
    nodes = list(graph.node)
    derived = constant_derived(graph)
    stored = {init.name for init in graph.initializer} | {
        o for node in nodes if node.op_type == "Constant" for o in node.output
    }
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    outputs = {o.name for o in graph.output}

    def makers(name: str) -> list[int] | None:
        """The indices of the nodes that compute ``name`` (in node order), None when one may not be folded."""
        found: set[int] = set()
        todo = [name]
        while todo:
            made = producer.get(todo.pop())
            if made is None or made in found:
                continue
            node = nodes[made]
            if (
                node.op_type == "DequantizeLinear"
                or node.op_type in _UNFOLDABLE_OPS
                or node.domain not in ("", "ai.onnx")
                or subgraphs(node)
            ):
                return None
            found.add(made)
            todo.extend(i for i in node.input if i)
        return sorted(found)

    wanted: dict[str, list[int]] = {}
    for node in nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or not node.input[0]:
            continue
        weight = node.input[1]
        if not weight or weight in stored or weight not in derived or weight in outputs:
            continue
        if node.input[0] in derived:  # a constant node: nothing to quantize
            continue
        chain = makers(weight)
        if chain is not None:
            wanted[weight] = chain
    if not wanted:
        return []
    # a weight whose node writes another output that is read stays computed: the node stays too
    read = names_read(graph) | outputs
    wanted = {
        name: chain
        for name, chain in wanted.items()
        if all(o in wanted or o not in read for o in nodes[producer[name]].output if o)
    }
    values: dict[str, np.ndarray] = {}
    for name, chain in wanted.items():
        value = _evaluated(model, [nodes[i] for i in chain], name)
        if value is not None and value.dtype.kind == "f":
            values[name] = value
    if not values:
        return []
    taken = {node.name for node in nodes}
    for i, node in enumerate(nodes):  # labels as the input model's (see the docstring)
        if not node.name and _node_label(node, i) not in taken:
            node.name = _node_label(node, i)
            taken.add(node.name)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in values.items())
    # the nodes that computed them, last first, while no remaining node, body or output reads them
    candidates = sorted({i for name in values for i in wanted[name]}, reverse=True)
    removed: set[int] = set()
    for i in candidates:
        others = [n for k, n in enumerate(nodes) if k != i and k not in removed]
        still_read = names_read(_graph_of(others)) | outputs
        if all(o in values or o not in still_read for o in nodes[i].output if o):
            removed.add(i)
    kept = [n for k, n in enumerate(nodes) if k not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    unread = {n for k in removed for n in nodes[k].input} - names_read(graph) - outputs
    inputs = {i.name for i in graph.input}
    dropped = [init for init in graph.initializer if init.name in unread and init.name not in inputs]
    for init in dropped:
        graph.initializer.remove(init)
    gone = {o for k in removed for o in nodes[k].output} - set(values)
    for vi in [vi for vi in graph.value_info if vi.name in gone]:
        graph.value_info.remove(vi)
    return list(values)


def _graph_of(nodes: Sequence[onnx.NodeProto]) -> onnx.GraphProto:
    graph = onnx.GraphProto()
    graph.node.extend(nodes)
    return graph


def _evaluated(model: onnx.ModelProto, chain: Sequence[onnx.NodeProto], name: str) -> np.ndarray | None:
    """``name``'s value, computed by onnx's reference evaluator from the nodes ``chain`` and the
    model's initializers they read; None when it cannot be computed."""
    from onnx.reference import ReferenceEvaluator

    reads = {i for node in chain for i in node.input if i}
    inits = [init for init in model.graph.initializer if init.name in reads]
    graph = helper.make_graph(list(chain), "fold", [], [helper.make_empty_tensor_value_info(name)], inits)
    small = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        found: Any = ReferenceEvaluator(small).run(None, {})
        value = found[0]
    except Exception:  # the evaluator lacks the op, or the op refuses its inputs: left as computed
        return None
    return value if isinstance(value, np.ndarray) else None


class _Planner:
    def __init__(
        self, model: onnx.ModelProto, options: QuantizeOptions, facts: ModelFacts | None = None
    ) -> None:
        self.model = model
        self.options = options
        self.plan = QuantPlan(options)
        if facts is not None and facts.model is not model:
            facts = None  # facts of another model (an older opset converted again): recomputed
        self.constants = _constants(model) if facts is None else facts.constants
        self.derived = constant_derived(model.graph) if facts is None else facts.derived
        self.graph_outputs = {o.name for o in model.graph.output}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        self.producer: dict[str, int] = {}
        for i, node in enumerate(model.graph.node):
            for j, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((i, j))
            for name in node.output:
                self.producer[name] = i
        self.types = _inferred_types(model) if facts is None else facts.types
        self.skip: set[int] = set()  # QLinear nodes left in float: no integer consumer (see float_ends)
        self.integer: set[int] = set()  # nodes quantized as a whole (weighted ops, QLinear ops)

    def excluded(self, index: int) -> bool:
        if index in self.skip and self.model.graph.node[index].op_type != "Gemm":
            return True
        return _excluded(self.model.graph.node[index], index, self.options)

    def is_float_activation(self, name: str, unknown: bool = True) -> bool:
        """A non-constant float tensor; ``unknown`` answers for tensors shape inference could not type."""
        if not name or name in self.constants or name in self.derived:
            return False
        elem = self.types.get(name)
        return unknown if elem is None else elem == TensorProto.FLOAT

    def mark(
        self,
        name: str,
        consumer: tuple[int, int] | None,
        *,
        unsigned: bool = False,
        share: str | None = None,
        all_consumers: bool = False,
        saturates: str = "",
    ) -> None:
        tq = self.plan.activations.get(name)
        if tq is None:
            tq = TensorQuant(name, unsigned=unsigned, share=share, saturates=saturates)
            self.plan.activations[name] = tq
        tq.all_consumers = tq.all_consumers or all_consumers
        if consumer is not None:
            tq.consumers.add(consumer)

    def weight(self, index: int, input_index: int) -> bool:
        node = self.model.graph.node[index]
        name = node.input[input_index]
        value = self.constants.get(name)
        if value is None or value.dtype.kind != "f":
            return False
        if not _quantized_input(node, input_index, value):
            return False
        axis = weight_axis(node, input_index, value)
        wq = self.plan.weights.setdefault((name, axis), WeightQuant(name, axis))
        wq.uses.append((index, input_index))
        return True

    def run(self) -> QuantPlan:
        ort = self.options.placement == "onnxruntime"
        nodes = self.model.graph.node
        relu_done: set[int] = set()
        for i, node in enumerate(nodes):
            if self.excluded(i):
                if node.op_type in WEIGHTED_OPS or node.op_type in ORT_QLINEAR_OPS or node.op_type == "Add":
                    self.plan.excluded.append(_node_label(node, i))
                continue
            if node.op_type in WEIGHTED_OPS:
                self.weighted(i, ort, relu_done)
            elif ort and i not in relu_done:
                self.ort_other(i)
            elif not ort and node.op_type == "Add":
                self.residual_add(i)
        return self.plan

    def weighted(self, i: int, ort: bool, relu_done: set[int]) -> None:
        node = self.model.graph.node[i]
        if len(node.input) < 2 or not node.input[0] or not node.input[1]:
            return
        weight_value = self.constants.get(node.input[1])
        has_weight = (
            weight_value is not None
            and weight_value.dtype.kind == "f"
            and _quantized_input(node, 1, weight_value)
        )
        if (
            weight_value is None
            and node.input[1] in self.derived
            and self.is_float_activation(node.input[0])
            and not self.dequantized(node.input[1])
        ):
            # a weight the graph computes from constants (torch.onnx wrote nn.Linear(bias=False) as
            # MatMul(x, Transpose(W)): onnx's backend test pytorch-converted/test_Linear_no_bias) is
            # constant, but only a stored one is quantized; calibrate stores such a weight first
            # (fold_computed_weights), so one still computed here is one folding could not compute
            made = self.producer.get(node.input[1])
            maker = self.model.graph.node[made] if made is not None else None
            by = (
                f" by {maker.op_type} '{_node_label(maker, made)}'"
                if maker is not None and made is not None
                else ""
            )
            self.plan.left_in_float[_node_label(node, i)] = (
                f"its weight '{node.input[1]}' is computed in the graph from constants{by}, which could "
                "not be folded into a stored weight (an op of another domain, a random op or a body, or "
                "one onnx's reference evaluator cannot run); only a stored weight is quantized"
            )
            return
        if node.op_type in ("Conv", "ConvTranspose") and not has_weight:
            return  # a dynamic convolution weight: leave the node alone
        activations = [0] if has_weight else [0, 1]
        if not all(self.is_float_activation(node.input[j]) for j in activations):
            # e.g. a constant first input: leave the node alone, and say so
            if not has_weight and node.input[0] in self.constants and node.op_type in ("Gemm", "MatMul"):
                why = "its constant is its first input; only a constant second input is quantized as a weight"
                self.plan.left_in_float[_node_label(node, i)] = why
            elif has_weight and not self.is_float_activation(node.input[0]):
                what = (
                    "a constant"
                    if node.input[0] in self.constants or node.input[0] in self.derived
                    else "not float32"
                )
                self.plan.left_in_float[_node_label(node, i)] = f"its input '{node.input[0]}' is {what}"
            elif not has_weight and node.op_type in ("Gemm", "MatMul"):
                # two activations of another type (float64, float16): was silent, and alone refused
                # as "no ... MatMul with constant float32 weights"
                other = {
                    name: self.types[name]
                    for name in node.input[:2]
                    if name not in self.constants
                    and name not in self.derived
                    and self.types.get(name, TensorProto.FLOAT) != TensorProto.FLOAT
                }
                if other:
                    kinds = sorted({helper.tensor_dtype_to_np_dtype(t).name for t in other.values()})
                    names = ", ".join(f"'{name}'" for name in other)
                    these = f"its inputs {names} are" if len(other) > 1 else f"its input {names} is"
                    self.plan.left_in_float[_node_label(node, i)] = f"{these} {'/'.join(kinds)}, not float32"
            return
        if has_weight:
            self.weight(i, 1)
        for j in activations:
            self.mark(node.input[j], (i, j), all_consumers=ort)
        self.plan.quantized_nodes.append(_node_label(node, i))
        self.integer.add(i)
        if not ort:
            return
        bias_index = 2
        if has_weight and len(node.input) > bias_index and node.input[bias_index]:
            bias = self.constants.get(node.input[bias_index])
            if bias is not None and bias.ndim == 1 and node.op_type in ("Conv", "Gemm"):
                self.plan.biases.append(BiasQuant(i, node.input[bias_index], node.input[0], node.input[1]))
        out = node.output[0]
        follow = self.consumers.get(out, [])
        if (
            node.op_type == "Gemm"
            and has_weight
            and ((out in self.graph_outputs and not follow) or i in self.skip)
        ):
            # QGemm writes float directly: an output Q/DQ would only add two nodes, and where the
            # output reaches no integer kernel (a classifier's logits through a Reshape) it would
            # clip and round them (float_ends)
            return
        if len(follow) == 1 and out not in self.graph_outputs:
            k = follow[0][0]
            nxt = self.model.graph.node[k]
            if nxt.op_type == "Relu" and not self.excluded(k):
                self.mark(nxt.output[0], None, unsigned=self.options.unsigned_relu, all_consumers=True)
                relu_done.add(k)
                return
        self.mark(out, None, all_consumers=True, saturates=self.saturating_consumer(out))

    def dequantized(self, name: str) -> bool:
        """Whether a DequantizeLinear computes ``name`` or what it is computed from: an int8
        weight (a weight-only quantized layer), which folding into a float one would undo."""
        nodes, seen, todo = self.model.graph.node, set(), [name]
        while todo:
            made = self.producer.get(todo.pop())
            if made is None or made in seen:
                continue
            seen.add(made)
            if nodes[made].op_type == "DequantizeLinear":
                return True
            todo.extend(i for i in nodes[made].input if i)
        return False

    def saturating_consumer(self, name: str) -> str:
        """The activation that all of ``name``'s consumers apply to it, when its output stops
        changing below some input: SiLU as ``Mul(x, Sigmoid(x))``, HardSwish as the op or as
        ``Mul(x, HardSigmoid(x))`` with HardSwish's alpha 1/6 and beta 1/2; else ""."""
        nodes = self.model.graph.node
        users = [nodes[k] for k, _ in self.consumers.get(name, [])]
        if name in self.graph_outputs or not users:
            return ""
        if all(n.op_type == "HardSwish" for n in users):
            return "hardswish"
        gates = [n for n in users if n.op_type in ("Sigmoid", "HardSigmoid")]
        muls = [n for n in users if n.op_type == "Mul"]
        if len(gates) != 1 or len(users) != len(gates) + len(muls) or not muls:
            return ""
        gate = gates[0]
        if not all(sorted(m.input) == sorted([name, gate.output[0]]) for m in muls):
            return ""
        if gate.output[0] in self.graph_outputs or len(self.consumers.get(gate.output[0], [])) != len(muls):
            return ""  # the gate's output is read elsewhere too: its values below the floor matter
        if gate.op_type == "Sigmoid":
            return "silu"
        attrs = {a.name: helper.get_attribute_value(a) for a in gate.attribute}
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        return "hardswish" if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6 else ""

    def ort_other(self, i: int) -> None:
        node = self.model.graph.node[i]
        if node.op_type in PASS_THROUGH_OPS and len(node.output) == 1:
            src = node.input[0]
            tq = self.plan.activations.get(src)
            if tq is not None and self.is_float_activation(node.output[0]):
                self.mark(src, (i, 0), all_consumers=True)
                root = tq.share or tq.name
                self.mark(node.output[0], None, unsigned=tq.unsigned, share=root, all_consumers=True)
            return
        if node.op_type in ORT_QLINEAR_OPS:
            if any(a.name == "dilations" and any(d != 1 for d in a.ints) for a in node.attribute):
                return  # ONNX Runtime's QLinearAveragePool has no dilations: its fusion would be invalid
            inputs = [n for n in node.input[:1]] if "Pool" in node.op_type else list(node.input)
            if not inputs or not all(self.is_float_activation(n, unknown=False) for n in inputs):
                return  # e.g. shape arithmetic on int64, or a constant operand
            for j, name in enumerate(inputs):
                self.mark(name, (i, j), all_consumers=True)
            self.mark(node.output[0], None, all_consumers=True)
            self.plan.quantized_nodes.append(_node_label(node, i))
            self.integer.add(i)

    def residual_add(self, i: int) -> None:
        """TensorRT: quantize the Add input that is not fused into the Conv that produced the other."""
        node = self.model.graph.node[i]
        if len(node.input) != 2 or not all(self.is_float_activation(n) for n in node.input):
            return

        def from_conv(name: str) -> bool:
            p = self.producer.get(name)
            if p is None:
                return False
            producer = self.model.graph.node[p]
            if producer.op_type == "BatchNormalization":
                q = self.producer.get(producer.input[0])
                producer = self.model.graph.node[q] if q is not None else producer
            return producer.op_type in ("Conv", "ConvTranspose") and len(self.consumers.get(name, [])) == 1

        fused = [from_conv(n) for n in node.input]
        if not any(fused):
            return
        branch = 0 if not fused[0] else 1  # both from Convs: the second branch is quantized
        self.mark(node.input[branch], (i, branch))
        self.plan.quantized_nodes.append(_node_label(node, i))


def float_ends(planner: _Planner) -> set[int]:
    """ONNX Runtime's placement: the QLinear ops (Add, Concat, pools) whose output reaches no
    integer kernel, directly or through pass-through ops, and the Gemms whose output does not
    (they keep their quantized inputs and weights: QGemm writes float).

    Such an op gains nothing from int8 (its output is dequantized for float consumers or the
    graph output right away) and its output Q/DQ costs precision: silero-vad's Concat of the
    LSTM's h (|x| <= 1) and c (|x| <= 24) into its state output left h about 10 levels (state
    cosine 0.88 over 256 chunks). Found as a fixed point: dropping one op can leave its
    producer without an integer consumer.
    """
    nodes = planner.model.graph.node
    activations = planner.plan.activations
    dropped: set[int] = set()

    def feeds_integer(name: str, seen: set[str]) -> bool:
        for k, _ in planner.consumers.get(name, []):
            if k in planner.integer and k not in dropped:
                return True
            out = nodes[k].output[0] if nodes[k].output else ""
            through = nodes[k].op_type in PASS_THROUGH_OPS and out in activations and out not in seen
            if through and feeds_integer(out, seen | {out}):
                return True
        return False

    qlinear = [i for i in planner.integer if nodes[i].op_type in ORT_QLINEAR_OPS]
    changed = True
    while changed:
        changed = False
        for i in qlinear:
            if i not in dropped and not feeds_integer(nodes[i].output[0], set()):
                dropped.add(i)
                changed = True
    weighted_uses = {use for w in planner.plan.weights.values() for use in w.uses}
    gemms = {
        i
        for i in planner.integer
        if nodes[i].op_type == "Gemm"
        and (i, 1) in weighted_uses
        and not feeds_integer(nodes[i].output[0], set())
    }
    return dropped | gemms


def plan_quantization(
    model: onnx.ModelProto, options: QuantizeOptions, facts: ModelFacts | None = None
) -> QuantPlan:
    """Decide which tensors get Q/DQ, which weights are quantized and along which axis.

    The plan's node indices are those of the model at opset >= 13, as :func:`write_qdq` upgrades
    it: an older model is planned on its (deterministic) upgrade, whose node list can differ.
    ``facts``: :func:`model_facts` of ``model``, when several plans of it are made.
    """
    upgraded = upgrade_opset(model)
    planner = _Planner(upgraded, options, facts)
    plan = planner.run()
    if options.placement != "onnxruntime":
        return plan
    skip = float_ends(planner)
    if not skip:
        return plan
    planner = _Planner(upgraded, options, facts)
    planner.skip = skip
    return planner.run()


def narrow_convs(model: onnx.ModelProto, plan: QuantPlan) -> list[str]:
    """Exclusion patterns (escaped labels) of the convolutions ``plan`` quantizes that have
    fewer than 16 input or output channels and none of the shapes TensorRT's int8 convolution
    kernels take well: a plain convolution with a square kernel whose channel count on one side
    is a multiple of 8, and which reads a graph input or has 16 channels on the other side; a
    grouped one with a multiple of 8 output channels and kernels of at least 3. Model Optimizer
    leaves these in float (docs/design.md, "Narrow convolutions"); on the VAD models they are the
    STFT front end, 1 input channel into 258. ``auto`` measures leaving them in float, it does
    not assume it."""
    upgraded = upgrade_opset(model)
    graph_inputs = {i.name for i in upgraded.graph.input}
    shapes = {i.name: list(i.dims) for i in upgraded.graph.initializer}
    quantized = set(plan.quantized_nodes)
    found = []
    for index, node in enumerate(upgraded.graph.node):
        label = _node_label(node, index)
        dims = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if label not in quantized or dims is None or len(dims) < 3:
            continue
        out_ch, in_ch = dims[0], dims[1]
        if out_ch >= 16 and in_ch >= 16:
            continue
        group = _attr(node, "group", 1)
        kernel = list(attribute(node, "kernel_shape", dims[2:]))
        plain = (
            group == 1
            and (out_ch % 8 == 0 or in_ch % 8 == 0)
            and (any(i in graph_inputs for i in node.input) or out_ch >= 16 or in_ch >= 16)
            and len(set(kernel)) == 1
        )
        grouped = group > 1 and out_ch % 8 == 0 and all(k >= 3 for k in kernel)
        if not (plain or grouped):
            found.append(re.escape(label))
    return found


def _scalar(name: str, value: float | int, dtype: int) -> TensorProto:
    return helper.make_tensor(name, dtype, [], [value])


def _unique(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def activation_scale(threshold: float, qmax: int) -> float:
    return float(np.float32(max(threshold, SCALE_FLOOR * qmax) / qmax))


def upgrade_opset(
    model: onnx.ModelProto, name: str | None = None, needed_for: str = "per-channel Q/DQ"
) -> onnx.ModelProto:
    """:func:`convert_opset`'s model, for callers that plan on a model converted (and said) before:
    why a conversion's check could not run is dropped here."""
    return convert_opset(model, name, needed_for)[0]


def convert_opset(
    model: onnx.ModelProto, name: str | None = None, needed_for: str = "per-channel Q/DQ"
) -> tuple[onnx.ModelProto, str | None]:
    """``model`` itself when its opset is >= 13 (per-channel Q/DQ), else a converted copy, checked:
    every conversion of export, calibration and a TensorRT cache's import is made here, and one
    that computes other values than ``model`` on a seeded random feed, or cannot run where it
    runs, raises :class:`ConversionError` (:func:`calibration.conversion.check_conversion`).
    Returned with why that check could not run (neither ONNX Runtime nor onnx's reference evaluator
    runs ``model``; it draws random values...), which the caller says and records; None where it
    ran, or nothing was converted. ``name``: how errors name the model (they start "NAME: ");
    ``needed_for``: what needs the conversion, for the error when it cannot be made (fp16 converts
    for its Casts).

    Plan on the model this returns: conversion inserts nodes, which moves node indices.
    """
    current = opset_of(model)
    if current >= MIN_OPSET:
        return model, None
    if not current:  # no default-domain op to convert (an ai.onnx.ml graph): import the opset Q/DQ needs
        upgraded = onnx.ModelProto()
        upgraded.CopyFrom(model)
        upgraded.opset_import.append(helper.make_opsetid("", MIN_OPSET))
        return upgraded, None
    named = f"{name}: " if name else ""
    try:
        upgraded = _convert_light(keep_meaning(model), MIN_OPSET)
    except Exception as exc:
        raise CalibrationError(
            f"{named}the model's opset {current} is below {MIN_OPSET} (needed for {needed_for}) "
            f"and could not be converted ({(str(exc).strip().splitlines() or [''])[0][:160]}); "
            "convert it with onnx.version_converter or re-export it at opset 13 or later"
        ) from None
    # the converter leaves the IR version as it was: IR 3 (of opsets 7 and 8) required every weight
    # to be a graph input too, and a model without them there was refused by the checker ("W in
    # initializer but not in graph input"). onnx's table gives the IR version an opset needs
    # (onnx.helper.VERSION_TABLE).
    upgraded.ir_version = max(upgraded.ir_version, min_ir_version(upgraded))
    changed, unchecked = check_conversion(model, upgraded)
    if changed is not None:
        raise ConversionError(f"{named}{changed}")
    return upgraded, unchecked


def keep_meaning(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (below opset 13), or a copy with the ops whose meaning onnx.version_converter
    changes on the way to 13 rewritten into ones it keeps: Hardmax below 13 flattens its input to
    2-D at ``axis`` (one 1 per row of [N, rest]), Hardmax-13 works along ``axis`` alone, and the
    converter passes the attribute on unchanged (Hardmax-11 axis=1 on [2, 3, 4] came out with one 1
    per column: wrong outputs, no word). It wraps Softmax and LogSoftmax so (Shape, Flatten, the op
    on axis 1, Reshape back); a Hardmax is wrapped here the same way before the conversion. An
    ``axis`` of -1 means the same in both and is left as it is; models below opset 5 (Reshape's
    shape an attribute) are left to the caller's check of the converted outputs. A PRelu below 7
    takes a per-channel slope [C] along axis 1: see :func:`_per_channel_slopes`."""
    opset = opset_of(model)
    model = _per_channel_slopes(model)
    wanted = opset >= 5 and any(
        _flattening_hardmax(node) for graph in all_graphs(model.graph) for node in graph.node
    )
    if not wanted:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graphs = all_graphs(copy.graph)
    taken = {name for graph in graphs for node in graph.node for name in (*node.output, node.name)}
    taken |= {v.name for graph in graphs for v in (*graph.input, *graph.initializer)}
    for graph in reversed(graphs):  # a body before the node holding it: that node is copied below
        if not any(_flattening_hardmax(node) for node in graph.node):
            continue
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if not _flattening_hardmax(node):
                nodes.append(onnx.NodeProto())
                nodes[-1].CopyFrom(node)
                continue
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)
            base = node.name or node.output[0]
            shape, flat, hard = (_unique(f"{base}_{part}", taken) for part in ("shape", "flat", "2d"))
            nodes += [
                helper.make_node("Shape", [node.input[0]], [shape], name=_unique(f"{base}/Shape", taken)),
                helper.make_node(
                    "Flatten", [node.input[0]], [flat], axis=axis, name=_unique(f"{base}/Flatten", taken)
                ),
                helper.make_node("Hardmax", [flat], [hard], axis=1, name=node.name),
                helper.make_node(
                    "Reshape", [hard, shape], [node.output[0]], name=_unique(f"{base}/Reshape", taken)
                ),
            ]
        del graph.node[:]
        graph.node.extend(nodes)
    return copy


def _per_channel_slopes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy whose PRelu slopes of one dimension [C] (C > 1) on an input of rank
    r >= 3 are [C, 1, ...] (r - 1 dims): below opset 7 such a slope applies along axis 1 (the
    channels), from 7 on it broadcasts as numpy does, against the last axis, and the converter
    leaves it as it is (onnx's test_PReLU_1d_multiparam came out unable to run: "3 by 4"). A PRelu
    in a subgraph (an If branch, a Loop body; Scan came at opset 8) is reshaped as one in the main graph, its
    slope an initializer of its own graph or of one around it (read from the outer scope; a new
    slope goes where the one it replaces is). A slope that is no initializer, or on an input of
    unknown rank, is left to the caller's check of the converted model."""
    if not 0 < opset_of(model) < 7 or not _slope_prelus(model.graph):
        return model
    try:
        inferred = infer_shapes_light(model)
    except Exception:
        return model
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for graph in all_graphs(inferred.graph)
        for v in (*graph.input, *graph.value_info, *graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graphs = all_graphs(copy.graph)
    readers: dict[str, int] = {}
    for g in graphs:
        for n in g.node:
            for name in n.input:
                readers[name] = readers.get(name, 0) + 1
    taken = {name for g in graphs for n in g.node for name in n.output}
    taken |= {v.name for g in graphs for v in (*g.input, *g.initializer)}
    for node, owner, init in _slope_prelus(copy.graph):
        rank = ranks.get(node.input[0], 0)
        if rank < 3:  # [N, C] against [C]: numpy broadcasting means the same
            continue
        slope = numpy_helper.to_array(init)
        shaped = slope.reshape(slope.shape[0], *([1] * (rank - 2)))
        listed = [v for v in owner.input if v.name == init.name]  # IR 3 listed every weight
        if readers.get(init.name, 0) > 1:
            name = _unique(f"{init.name}_per_channel", taken)
            owner.initializer.append(numpy_helper.from_array(shaped, name))
            if listed and owner is copy.graph:  # a body's inputs are its op's: never added to
                owner.input.append(
                    helper.make_tensor_value_info(name, listed[0].type.tensor_type.elem_type, shaped.shape)
                )
            node.input[1] = name
            continue
        init.CopyFrom(numpy_helper.from_array(shaped, init.name))
        for value in listed:
            value.CopyFrom(
                helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, shaped.shape)
            )
    return copy


def _slope_prelus(
    graph: onnx.GraphProto, outer: Mapping[str, tuple[onnx.GraphProto, TensorProto]] | None = None
) -> list[tuple[onnx.NodeProto, onnx.GraphProto, TensorProto]]:
    """The default-domain PRelus of ``graph`` and its subgraphs whose slope is an initializer of
    one dimension [C] (C > 1) of their graph or of one around it (``outer``: name -> the graph
    holding it and the initializer), each with that graph and initializer, in graph order."""
    scope = dict(outer or {})
    own = {init.name for init in graph.initializer}
    for name in {v.name for v in graph.input} | {o for n in graph.node for o in n.output}:
        if name not in own:  # a value of this graph hides an outer initializer of its name
            scope.pop(name, None)
    scope.update({init.name: (graph, init) for init in graph.initializer})
    found: list[tuple[onnx.NodeProto, onnx.GraphProto, TensorProto]] = []
    for node in graph.node:
        if (
            node.op_type == "PRelu"
            and node.domain in ("", "ai.onnx")
            and len(node.input) == 2
            and node.input[1] in scope
        ):
            owner, init = scope[node.input[1]]
            if len(init.dims) == 1 and init.dims[0] > 1:
                found.append((node, owner, init))
        for sub in subgraphs(node):
            found.extend(_slope_prelus(sub, scope))
    return found


def _flattening_hardmax(node: onnx.NodeProto) -> bool:
    """A default-domain Hardmax whose ``axis`` (default 1) is not -1."""
    if node.op_type != "Hardmax" or node.domain not in ("", "ai.onnx"):
        return False
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 1) != -1


def _convert_light(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``version_converter.convert_version(model, version)``, run on a copy whose large float
    weights have no bytes (see :func:`~calibration.graphs.without_weight_bytes`), which are put
    back into the converted model. The converter's adapters read shape-like constants, not
    weights, and pass a weight through unchanged; should one come back changed or not at all,
    the whole model is converted instead.
    The converter serializes the model into C++ and back: with the weights that took 0.9 s of
    ddddocr's 54 MB recognizer, without them 0.02 s (the same model byte for byte)."""
    from onnx import version_converter

    light, held = without_weight_bytes(model)
    stubs = {init.name: init for init in light.graph.initializer if init.name in held}
    converted = version_converter.convert_version(light, version)
    for init in converted.graph.initializer:
        original = held.pop(init.name, None)
        if original is None:
            continue
        if init != stubs[init.name]:  # the converter changed a weight: convert it with its values
            return version_converter.convert_version(model, version)
        init.CopyFrom(original)
    if held:  # a weight the converter dropped or renamed
        return version_converter.convert_version(model, version)
    return converted


WeightCache = dict[tuple[str, int | None, int], tuple[np.ndarray, np.ndarray]]


def weight_scale(w: np.ndarray, axis: int | None, qmax: int) -> np.ndarray:
    """The per-channel float32 scales of weight ``w`` along ``axis`` (its absolute max over ``qmax``);
    ``axis`` None: its one scale, a 0-D array (:func:`per_tensor_weight`)."""
    if axis is None:
        top = float(np.abs(w.astype(np.float32)).max()) if w.size else 0.0
        return np.asarray(max(top, SCALE_FLOOR) / qmax, np.float32)
    return (np.maximum(per_channel_absmax(w, axis), SCALE_FLOOR) / qmax).astype(np.float32)


def quantized_weight(
    model: onnx.ModelProto,
    name: str,
    axis: int | None,
    qmax: int,
    cache: WeightCache | None = None,
    values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The int8 values and per-channel float32 scales of weight ``name`` along ``axis``.

    ``cache``: results of earlier calls on the same model; auto writes one Q/DQ model per
    candidate threshold set with the same weights (0.06 s of each of ddddocr's recognizer's),
    and its per-tensor step runs the consumers on them. ``values``: the weight's float values,
    when the caller has them.
    """
    key = (name, axis, qmax)
    if cache is not None and key in cache:
        return cache[key]
    w = _constant_array(model, name) if values is None else values
    scale = weight_scale(w, axis, qmax)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    if cache is not None:
        cache[key] = (q, scale)
    return q, scale


def nonfinite_weights(
    plan: QuantPlan, constants: Mapping[str, np.ndarray], nodes: Sequence[onnx.NodeProto]
) -> list[tuple[str, int, list[str]]]:
    """The weights and biases ``plan`` quantizes that hold NaN or Inf: (name, how many such
    values, the nodes reading it as a weight). An int8 weight cannot represent them (the scale of
    a channel with an Inf is Inf, and NaN casts to an arbitrary integer), so each is refused."""
    found = []
    uses = {wq.name: [_node_label(nodes[i], i) for i, _ in wq.uses] for wq in plan.weights.values()}
    for bq in plan.biases:
        uses.setdefault(bq.name, []).append(_node_label(nodes[bq.node], bq.node))
    for name, readers in uses.items():
        values = constants.get(name)
        if values is None or values.dtype.kind != "f":
            continue
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            found.append((name, bad, list(dict.fromkeys(readers))))
    return found


def bias_correction_inputs(
    model: onnx.ModelProto, plan: QuantPlan, consts: Mapping[str, np.ndarray] | None = None
) -> dict[int, str]:
    """The nodes bias correction applies to (see :func:`bias_corrections`), each with the
    activation whose per-channel mean (axis 1) it needs: Conv, and Gemm without transA and
    with beta 1, whose weight the plan quantizes and whose bias is a constant 1-D tensor.
    ``model``: the one the plan was made on (opset >= 13); ``consts``: its constants."""
    consts = _constants(model) if consts is None else consts
    nodes = model.graph.node
    found: dict[int, str] = {}
    for wq in plan.weights.values():
        for i, j in wq.uses:
            node = nodes[i]
            if j != 1 or len(node.input) < 3 or node.op_type not in ("Conv", "Gemm"):
                continue
            bias = consts.get(node.input[2])
            if bias is None or bias.ndim != 1 or bias.dtype.kind != "f":
                continue
            transposed_a = _attr(node, "transA", 0)
            if node.op_type == "Gemm" and (transposed_a or float(attribute(node, "beta", 1.0)) != 1.0):
                continue
            found[i] = node.input[0]
    return found


def bias_corrections(
    model: onnx.ModelProto,
    plan: QuantPlan,
    means: Mapping[str, np.ndarray],
    weight_cache: WeightCache | None = None,
    consts: Mapping[str, np.ndarray] | None = None,
    spatial: Mapping[str, Sequence[int]] | None = None,
) -> dict[int, np.ndarray]:
    """Empirical bias correction (docs/design.md, "INT8 bias correction"):
    per node of :func:`bias_correction_inputs`, the mean error its weight rounding adds to each
    output channel, ``E[(W_q - W) x]``, from the per-channel ``means`` of its input over the
    calibration data. :func:`write_qdq` subtracts it from the float bias. Where a Conv's input
    size is known (``spatial``: its axes 2 and up), each kernel tap counts for the share of
    outputs it reads real input at, not zero padding (on an 8x8 map a 3x3 tap at the border
    misses one output row in eight). Rounding errors of a channel's weights need not average out: on
    ddddocr's recognizer they shift its outputs' means, which the correction takes out."""
    consts = _constants(model) if consts is None else consts
    inputs = bias_correction_inputs(model, plan, consts)
    nodes = model.graph.node
    shifts: dict[int, np.ndarray] = {}
    for (name, axis), wq in plan.weights.items():
        uses = [i for i, j in wq.uses if j == 1 and i in inputs and inputs[i] in means]
        if not uses or axis is None:
            continue
        q, scale = quantized_weight(model, name, axis, plan.options.weight_qmax, weight_cache)
        w = consts[name] if name in consts else _constant_array(model, name)
        for i in uses:
            taps = _tap_shares(nodes[i], w.shape[2:], (spatial or {}).get(inputs[i]))
            error = _rounding_error(q, scale, w, axis, taps)
            shift = _expected_error(nodes[i], error, np.asarray(means[inputs[i]], np.float64))
            if shift is not None and shift.shape == consts[nodes[i].input[2]].shape:
                shifts[i] = shift
    return shifts


def _rounding_error(
    q: np.ndarray, scale: np.ndarray, w: np.ndarray, axis: int, taps: np.ndarray | None = None
) -> np.ndarray:
    """``W_q - W``, a convolution's summed over its kernel window (axes 2 and up: the window's
    taps all see the same input channel's mean), weighted by ``taps`` when given (see
    :func:`_tap_shares`), the sums of ``q`` and ``W`` taken first; a Gemm's in float32, as
    DequantizeLinear computes ``W_q`` (a float64 copy of a large weight took longer than the
    rest of the correction)."""
    shape = [1] * min(q.ndim, 2)
    shape[axis] = -1
    if q.ndim <= 2:
        return q.astype(np.float32) * scale.reshape(shape) - w.astype(np.float32, copy=False)  # type: ignore[no-any-return]
    if taps is None:
        qsum = q.reshape(*q.shape[:2], -1).sum(-1, dtype=np.int32).astype(np.float64)
        wsum = w.reshape(*w.shape[:2], -1).sum(-1, dtype=np.float64)
    else:
        flat = taps.reshape(-1)
        qsum = q.reshape(*q.shape[:2], -1).astype(np.float32) @ flat.astype(np.float32)
        wsum = w.reshape(*w.shape[:2], -1).astype(np.float64) @ flat
    return qsum.astype(np.float64) * scale.astype(np.float64).reshape(shape) - wsum  # type: ignore[no-any-return]


def conv_axes(
    node: onnx.NodeProto, kernel: Sequence[int], size: Sequence[int]
) -> list[tuple[int, int, int, int]] | None:
    """Per spatial axis of a Conv on an input of ``size`` (axes 2 and up): its stride, dilation,
    padding before the input (auto_pad resolved) and number of outputs; None when an axis has no
    output."""
    dims = len(kernel)
    strides = list(attribute(node, "strides", [])) or [1] * dims
    dilations = list(attribute(node, "dilations", [])) or [1] * dims
    pads = list(attribute(node, "pads", [])) or [0] * (2 * dims)
    auto = attribute(node, "auto_pad", b"NOTSET").decode()
    found = []
    for d in range(dims):
        n, k, s, dil = int(size[d]), int(kernel[d]), strides[d], dilations[d]
        begin, end = pads[d], pads[d + dims]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            total = max(0, (-(-n // s) - 1) * s + (k - 1) * dil + 1 - n)
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            end = total - begin
        elif auto == "VALID":
            begin = end = 0
        outputs = (n + begin + end - (k - 1) * dil - 1) // s + 1
        if n <= 0 or outputs <= 0:
            return None
        found.append((s, dil, begin, outputs))
    return found


def _tap_shares(node: onnx.NodeProto, kernel: Sequence[int], size: Sequence[int] | None) -> np.ndarray | None:
    """Per kernel tap of a Conv, the share of its outputs at which the tap reads the input rather
    than zero padding, on an input of ``size`` (axes 2 and up); None when unknown or not a Conv."""
    if node.op_type != "Conv" or size is None or len(size) != len(kernel) or not kernel:
        return None
    axes = conv_axes(node, kernel, size)
    if axes is None:
        return None
    shares = np.ones(())
    for (s, dil, begin, outputs), n, k in zip(axes, size, kernel, strict=True):
        at = np.arange(outputs)[:, None] * s + np.arange(int(k))[None, :] * dil - begin  # input index
        axis_share = ((at >= 0) & (at < int(n))).mean(axis=0)
        shares = np.multiply.outer(shares, axis_share)
    return np.asarray(shares, np.float64)


def _expected_error(node: onnx.NodeProto, error: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """Per output channel, the rounding ``error`` (see :func:`_rounding_error`) applied to the
    input's per-channel ``mean``."""
    if node.op_type == "Gemm":
        transposed = _attr(node, "transB", 0)
        if error.ndim != 2 or mean.shape != (error.shape[1 if transposed else 0],):
            return None
        mean32 = mean.astype(error.dtype)
        return np.asarray(error @ mean32 if transposed else mean32 @ error, np.float64)
    groups = _attr(node, "group", 1)
    out, per_group = error.shape[0], error.shape[1]
    if error.ndim != 2 or out % groups or mean.shape != (per_group * groups,):
        return None
    grouped = error.reshape(groups, out // groups, per_group)
    return np.einsum("gop,gp->go", grouped, mean.reshape(groups, per_group)).reshape(out)  # type: ignore[no-any-return]


def write_qdq(
    model: onnx.ModelProto,
    plan: QuantPlan,
    thresholds: Mapping[str, float],
    extents: Mapping[str, tuple[float, float]] | None = None,
    weight_cache: WeightCache | None = None,
    bias_shift: Mapping[int, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A new model with the plan's Q/DQ nodes; ``thresholds`` maps tensor -> amax, ``extents``
    tensor -> observed (min, max) (ONNX Runtime's placement: asymmetric uint8 where given;
    ``weight_cache``: see :func:`quantized_weight`; ``bias_shift``: node index -> what to
    subtract from its bias, see :func:`bias_corrections`)."""
    # the version converter adds nodes (Constant axes for Squeeze, Unsqueeze, Reduce*...); the plan's
    # node indices are those of this (deterministic) upgrade, as plan_quantization made them
    upgraded = upgrade_opset(model)
    missing = [n for n in plan.calibrated_tensors() if n not in thresholds]
    if missing:
        raise CalibrationError(f"no calibration threshold for tensor(s) {', '.join(missing[:5])}")
    # copied without its initializers: the ones still read are added at the end (the float weights
    # the Q/DQ model replaces are never copied, 0.1 s of each write of ddddocr's recognizer)
    out = copy_without_initializers(upgraded)
    graph = out.graph
    originals = upgraded.graph.initializer
    taken = {i.name for i in originals} | {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {i.name for i in graph.input} | {o.name for o in graph.output}
    constants = {init.name for init in originals}
    new_inits: list[TensorProto] = []
    new_nodes: list[tuple[int, onnx.NodeProto]] = []  # (insert before original node index, node)
    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    graph_inputs = {i.name for i in graph.input}
    excluded_idx = {i for i, n in enumerate(nodes) if _excluded(n, i, plan.options)}
    graph_outputs = {o.name for o in graph.output}
    weight_scales: dict[str, np.ndarray] = {}

    # weights: int8 initializer + DequantizeLinear (per channel)
    qmax_w = plan.options.weight_qmax
    for (name, axis), wq in plan.weights.items():
        q, channel_scale = quantized_weight(model, name, axis, qmax_w, weight_cache)
        way = "per_tensor" if axis is None else f"axis{axis}"
        base = f"{name}_{way}" if sum(1 for k in plan.weights if k[0] == name) > 1 else name
        qname, sname, zname, dq_out = (
            _unique(f"{base}_quantized", taken),
            _unique(f"{base}_scale", taken),
            _unique(f"{base}_zero_point", taken),
            _unique(f"{base}_dequantized", taken),
        )
        new_inits += [
            numpy_helper.from_array(q, qname),
            numpy_helper.from_array(channel_scale, sname),
            numpy_helper.from_array(np.zeros(channel_scale.shape, np.int8), zname),
        ]
        first_use = min(i for i, _ in wq.uses)
        dequantize = helper.make_node(
            "DequantizeLinear",
            [qname, sname, zname],
            [dq_out],
            name=_unique(f"{base}_DequantizeLinear", taken),
        )
        if axis is not None:  # without it, the scale is one (per_tensor_weight)
            dequantize.attribute.append(helper.make_attribute("axis", axis))
        new_nodes.append((first_use, dequantize))
        for i, j in wq.uses:
            nodes[i].input[j] = dq_out
        weight_scales[name] = channel_scale

    # activations: QuantizeLinear -> DequantizeLinear after the producer
    readers: dict[str, list[tuple[int, int]]] | None = None  # built once, after the weights' renames
    act_scales: dict[str, float] = {}
    rename_outputs: dict[str, str] = {}
    for tq in plan.activations.values():
        root = tq.share or tq.name
        scale, zero, dtype = activation_qparams(
            tq, float(thresholds[root]), plan.options, (extents or {}).get(root)
        )
        act_scales[tq.name] = scale
        sname, zname = _unique(f"{tq.name}_scale", taken), _unique(f"{tq.name}_zero_point", taken)
        new_inits += [_scalar(sname, scale, TensorProto.FLOAT), _scalar(zname, zero, dtype)]
        source = tq.name
        if tq.all_consumers and tq.name in graph_outputs and tq.name not in graph_inputs:
            # keep the graph output's name on the dequantized value (a graph input that is also
            # an output has no producer to rename: it stays the float input, its readers read
            # the dequantized copy)
            source = _unique(f"{tq.name}_float", taken)
            rename_outputs[tq.name] = source
        q_out, dq_out = _unique(f"{tq.name}_quantized", taken), _unique(f"{tq.name}_dequantized", taken)
        final = tq.name if source != tq.name else dq_out
        where = producer.get(tq.name, -1) + 1 if tq.name not in graph_inputs else 0
        new_nodes.append(
            (
                where,
                helper.make_node(
                    "QuantizeLinear",
                    [source, sname, zname],
                    [q_out],
                    name=_unique(f"{tq.name}_QuantizeLinear", taken),
                ),
            )
        )
        new_nodes.append(
            (
                where,
                helper.make_node(
                    "DequantizeLinear",
                    [q_out, sname, zname],
                    [final],
                    name=_unique(f"{tq.name}_DequantizeLinear", taken),
                ),
            )
        )
        if tq.all_consumers:
            if final != tq.name:
                if readers is None:
                    readers = tensor_readers(nodes, excluded_idx)
                for i, j in readers.get(tq.name, ()):
                    nodes[i].input[j] = final
        else:
            for i, j in tq.consumers:
                nodes[i].input[j] = final
    for old, new in rename_outputs.items():
        i = producer[old]
        nodes[i].output[list(nodes[i].output).index(old)] = new
        for k in excluded_idx:
            for j, name in enumerate(nodes[k].input):
                if name == old:
                    nodes[k].input[j] = new

    # biases: int32 with scale s_input * s_weight (onnxruntime placement)
    shifts = dict(bias_shift or {})
    for bq in plan.biases:
        node = nodes[bq.node]
        s_in = act_scales.get(bq.activation)
        w_scale = weight_scales.get(bq.weight)
        if s_in is None or w_scale is None:
            continue
        b = _constant_array(model, bq.name).astype(np.float64)
        if b.shape[0] != w_scale.shape[0]:
            continue
        shift = shifts.pop(bq.node, None)
        if shift is not None:
            b = b - shift
        bias_scale = (np.float64(s_in) * w_scale.astype(np.float64)).astype(np.float32)
        q = np.clip(np.round(b / bias_scale), -(2**31), 2**31 - 1).astype(np.int32)
        # no zero-point input: it defaults to 0, and an int32 one would cost as much as the bias
        qname, sname, dq_out = (
            _unique(f"{bq.name}_quantized", taken),
            _unique(f"{bq.name}_scale", taken),
            _unique(f"{bq.name}_dequantized", taken),
        )
        new_inits += [numpy_helper.from_array(q, qname), numpy_helper.from_array(bias_scale, sname)]
        new_nodes.append(
            (
                bq.node,
                helper.make_node(
                    "DequantizeLinear",
                    [qname, sname],
                    [dq_out],
                    name=_unique(f"{bq.name}_DequantizeLinear", taken),
                    axis=0,
                ),
            )
        )
        node.input[2] = dq_out

    # corrected biases that stay in float (TensorRT's placement): a new initializer per node
    for i, shift in shifts.items():
        node = nodes[i]
        corrected = _constant_array(model, node.input[2]).astype(np.float64) - shift
        cname = _unique(f"{node.input[2]}_corrected", taken)
        new_inits.append(numpy_helper.from_array(corrected.astype(np.float32), cname))
        node.input[2] = cname

    # rebuild the node list in order, then drop float initializers nobody reads any more
    ordered: list[onnx.NodeProto] = []
    pending: dict[int, list[onnx.NodeProto]] = {}
    for where, n in new_nodes:
        pending.setdefault(where, []).append(n)
    for i, node in enumerate(nodes):
        ordered.extend(pending.pop(i, []))
        ordered.append(node)
    for rest in sorted(pending):
        ordered.extend(pending[rest])
    read = names_read(onnx.helper.make_graph(ordered, "read", [], [])) | {o.name for o in graph.output}
    ordered = [n for n in ordered if n.op_type != "Constant" or any(o in read for o in n.output)]
    del graph.node[:]
    try:
        graph.node.extend(toposort(ordered, graph_inputs | constants))
    except CycleError as exc:
        raise CalibrationError(f"cannot place Q/DQ nodes: {exc}") from None
    # names read inside If/Loop/Scan bodies count too: a subgraph may read an outer initializer
    used = names_read(graph) | {o.name for o in graph.output}
    keep = [init for init in [*originals, *new_inits] if init.name in used]
    graph.initializer.extend(keep)
    kept = {init.name for init in keep}
    stale_inputs = [i for i in graph.input if i.name in constants and i.name not in kept]
    for vi in stale_inputs:
        graph.input.remove(vi)
    del graph.value_info[:]  # shapes of renamed tensors are stale; ORT and TensorRT re-infer them
    return out


def activation_qparams(
    tq: TensorQuant, threshold: float, options: QuantizeOptions, extent: tuple[float, float] | None = None
) -> tuple[float, int, int]:
    """Scale, zero point and element type of an activation's Q/DQ pair.

    In ONNX Runtime's placement, a signed tensor whose observed ``extent`` (min, max) is known
    gets asymmetric uint8 over ``[max(min, -threshold), min(max, threshold)]``: its kernels take
    any zero point, and a one-sided tensor (SiLU's output never falls below -0.28, a Sqrt's never
    below 0) would otherwise spend half of its 256 levels on values that never occur. The step
    is never coarser than the symmetric one (the range is at most ``2 * threshold``). TensorRT
    takes zero point 0 only, so its placement stays symmetric.
    """
    if (
        options.placement == "onnxruntime"
        and options.asymmetric
        and not tq.unsigned
        and extent is not None
        and threshold > 0
    ):
        lo = max(-threshold, min(float(extent[0]), 0.0))
        hi = min(threshold, max(float(extent[1]), 0.0))
        if tq.saturates and hi > 0:
            lo = max(lo, saturation_floor(tq.saturates, lo, hi))
        if hi - lo > 0:
            scale = float(np.float32((hi - lo) / 255.0))
            zero = int(np.clip(np.round(-lo / scale), 0, 255))
            return scale, zero, TensorProto.UINT8
    dtype, zero = _activation_type(tq, options)
    return activation_scale(threshold, tq.qmax), zero, dtype


FLOOR_SHARE = 0.05  # saturation_floor: the clip may move the activation's output by this many steps
FLOOR_STEP = 0.25  # saturation_floor: the candidate floors of SiLU, this far apart


def saturating_activation(kind: str, x: np.ndarray) -> np.ndarray:
    """The activation a :attr:`TensorQuant.saturates` names, in float64: SiLU or HardSwish."""
    x = x.astype(np.float64)
    if kind == "silu":
        return x / (1.0 + np.exp(-x))  # type: ignore[no-any-return]
    if kind == "hardswish":
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0  # type: ignore[no-any-return]
    raise ValueError(f"unknown activation {kind!r}")


def saturation_floor(kind: str, lo: float, hi: float) -> float:
    """The lowest value an asymmetric range ``[lo, hi]`` must keep for a tensor read only by
    ``kind`` (:attr:`TensorQuant.saturates`): below it the activation's output moves by at most
    ``FLOOR_SHARE`` of one quantization step, a tenth of the rounding error the step allows.

    HardSwish is exactly 0 below -3. SiLU, ``x * sigmoid(x)``, has its minimum at -1.28; below
    any ``L < -1.28`` its output lies between ``SiLU(L)`` and 0, so clipping the input at ``L``
    moves the output by at most ``|SiLU(L)|``; the floor is the highest ``L`` (on a grid of
    ``FLOOR_STEP``) where that is within ``FLOOR_SHARE * (hi - L) / 255``. A YOLOX-style detector's
    SiLU inputs span about -31..31 (percentile threshold 15.6): the floor is -7.5, and the step
    over ``[-7.5, 15.6]`` is 26 % finer than over ``[-15.6, 15.6]``. Without the floor half of
    the levels went to inputs whose SiLU is within 0.28 of 0. Measured on ddddocr's recognizer's
    ``x86-64-cpu`` placement: docs/design.md, "Saturating activations".
    """
    if kind == "hardswish":
        return -3.0
    if kind != "silu":
        return lo
    floor = -1.5
    while floor > lo:
        if abs(float(saturating_activation(kind, np.array(floor)))) <= FLOOR_SHARE * (hi - floor) / 255.0:
            return floor
        floor -= FLOOR_STEP
    return lo


def _activation_type(tq: TensorQuant, options: QuantizeOptions) -> tuple[int, int]:
    """Element type and zero point of an activation's Q/DQ pair.

    TensorRT: int8 with zero point 0 (uint8 with 0 after ReLU). ONNX Runtime: uint8 throughout,
    a signed tensor with zero point 128 (its range stays symmetric: -127..128 steps): its x86
    kernels are u8 x s8, and its QDQS8ToU8 rewrite of int8 activations, combined with the Q/DQ
    propagation across Transpose/Reshape, leaves Q nodes whose output type no longer matches
    their zero point ("output_dtype INT8 does not match y_zero_point type UINT8").
    """
    if tq.unsigned:
        return TensorProto.UINT8, 0
    if options.placement == "onnxruntime":
        return TensorProto.UINT8, 128
    return TensorProto.INT8, 0


def _excluded(node: onnx.NodeProto, index: int, options: QuantizeOptions) -> bool:
    """Excluded by op type, or by a pattern that fully matches the node's label.

    The label is the node's name, or ``OpType#index`` for an unnamed node (as reports list it),
    so every node a report names can be excluded; callers that hold exact names pass them through
    ``re.escape``.
    """
    if node.op_type in options.exclude_ops:
        return True
    label = _node_label(node, index)
    return any(re.fullmatch(p, label) for p in options.exclude_nodes)


def tensor_readers(
    nodes: Sequence[onnx.NodeProto], skip: Collection[int] = ()
) -> dict[str, list[tuple[int, int]]]:
    """tensor -> (node index, input index) of every read outside ``skip``: one scan of the graph
    instead of one per quantized tensor (quadratic, seconds per model written on a few hundred
    nodes)."""
    readers: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(nodes):
        if i not in skip:
            for j, name in enumerate(node.input):
                readers.setdefault(name, []).append((i, j))
    return readers


def dequantized_weight(q: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    """What DequantizeLinear makes of a weight from :func:`quantized_weight` (float32 ``q * scale``
    per channel along ``axis``, or with its one scale where ``axis`` is None; zero point 0)."""
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = -1
    return q.astype(np.float32) * scale.reshape(shape)  # type: ignore[no-any-return]


def stored_activations(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """tensor -> (element type name, zero point) of the activations ``model`` quantizes, as its
    QuantizeLinear nodes store them (a Q/DQ model :func:`write_qdq` wrote: per-tensor zero points).

    A graph output's QuantizeLinear reads the renamed float tensor and its DequantizeLinear gives
    the output its name back (see :func:`write_qdq`): such a pair is named by the output.
    """
    inits = {i.name: i for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    dequantized = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    found: dict[str, tuple[str, int]] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or not node.input or not node.output:
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        elem = zp.data_type if zp is not None else TensorProto.UINT8  # ONNX's default without one
        values = numpy_helper.to_array(zp) if zp is not None else np.zeros(1, np.uint8)
        zero = int(values.reshape(-1)[0]) if values.size == 1 else 0
        after = dequantized.get(node.output[0])
        name = after if after is not None and after in outputs else node.input[0]
        found.setdefault(name, (TensorProto.DataType.Name(elem).lower(), zero))
    return found


def int8_activations(model: onnx.ModelProto) -> bool:
    """Whether ``model`` quantizes its activations to int8 and none to uint8: TensorRT's Q/DQ
    placement (ours for GPU targets, Model Optimizer's), which TensorRT computes exactly (integer
    products summed exactly, rescaled in float) and ONNX Runtime's CPU kernels do not (see
    :func:`~calibration.observers.emulate_integer_kernels`)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    kinds = {
        inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else TensorProto.UINT8  # the default
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }
    return TensorProto.INT8 in kinds and TensorProto.UINT8 not in kinds


def int8_weights_only(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is quantized in its weights only: DequantizeLinear of integer
    initializers feeding float layers, and no QuantizeLinear, so its activations stay float (a
    weight-only export); calibration, which quantizes layers with float weights, finds none."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    integer = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4)
    dequantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    return (
        bool(dequantized)
        and all(inits.get(n.input[0]) in integer for n in dequantized)
        and not any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    )


def saturates_without_vnni(model: onnx.ModelProto) -> bool:
    """Whether ``model`` pairs uint8 activations with full-range (8-bit) int8 weights: the Q/DQ
    groups ONNX Runtime runs as u8 x s8 integer kernels whose 16-bit pair sums saturate on a CPU
    without 8-bit dot products (VNNI), so that it computes other answers there than the target
    does (see :func:`~calibration.observers.emulate_integer_kernels`). 7-bit weights (ONNX
    Runtime's reduce range) and TensorRT's int8 activations do not."""
    inits = {i.name: i for i in model.graph.initializer}

    def dtype(node: onnx.NodeProto, index: int) -> int | None:
        init = inits.get(node.input[index]) if len(node.input) > index else None
        return None if init is None else init.data_type

    nodes = model.graph.node
    if not any(n.op_type == "QuantizeLinear" and dtype(n, 2) == TensorProto.UINT8 for n in nodes):
        return False
    for node in nodes:
        if node.op_type == "DequantizeLinear" and dtype(node, 0) == TensorProto.INT8:
            values = numpy_helper.to_array(inits[node.input[0]])
            if values.size and (int(values.min()) < -64 or int(values.max()) > 63):
                return True
    return False


def _constant_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise CalibrationError(f"constant '{name}' not found in the model")


def check_qdq(
    model: onnx.ModelProto,
    placement: str = "tensorrt",
    source: onnx.ModelProto | None = None,
    serialized: bytes | None = None,
) -> None:
    """onnx.checker plus the invariants TensorRT needs: every zero point is 0, opset >= 13
    (``serialized``: ``model``'s bytes when the caller has them, checked instead of serializing
    it again).

    ONNX Runtime's placement keeps signed activations in uint8 with any zero point (see
    :func:`activation_qparams`); its int8 weights and biases keep zero point 0 all the same.
    """
    from calibration.artifacts import check_as_strict_as_source

    try:
        check_as_strict_as_source(model if serialized is None else serialized, source)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CalibrationError(f"the Q/DQ model fails onnx.checker: {first[:200]}") from None
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is None:
                continue
            values = set(np.unique(numpy_helper.to_array(zp)).tolist())
            asymmetric_ok = placement == "onnxruntime" and zp.data_type == TensorProto.UINT8
            if values != {0} and not asymmetric_ok:
                raise CalibrationError(f"{node.name}: zero point {sorted(values)} is not symmetric")
