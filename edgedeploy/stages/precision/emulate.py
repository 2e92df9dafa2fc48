"""FP16 emulation on the CPU: an fp32 graph that rounds every fp16 tensor to float16, as a GPU stores it.

ONNX Runtime's CPU provider has float16 kernels for almost nothing but data movement and
LayerNormalization: it runs an fp16 graph's MatMul, Conv, Add, Softmax... in float32 and removes
the Casts between them, so an fp16 model that overflows to Inf on a GPU looks fine on the CPU.
To check a precision plan on the CPU we therefore run the fp32 model with each fp16 node's float
inputs and outputs rounded through float16 (a Cast pair ONNX Runtime keeps), and its weights
rounded the way the converter stores them (clipped to +-65504, tiny values raised to 2**-24).
Values above 65504 become Inf exactly where the GPU would store them. What it does not model is
the arithmetic inside one fp16 kernel (accumulation order and width): the range analysis covers
that risk with rules for reductions of squares. Hand-written: no library emulates fp16 storage.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.graphs import (
    all_graphs,
    all_nodes,
    copy_without_initializers,
    infer_shapes_light,
    names_used,
)
from calibration.observers import in_memory_stub
from edgedeploy.stages.precision.fp16 import (
    HALF_INF_BITS,
    blocked_ops,
    ensure_node_names,
    half_magnitude_bits,
    round_to_float16,
    to_float32,
)

FP16_MAX = 65504.0
FP16_MIN_POSITIVE = 2.0**-24  # smallest subnormal, about 5.96e-8
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


def converter_blocked_ops(model: onnx.ModelProto, runtime: str = "onnxruntime") -> set[str]:
    """Op types an fp16 build of ``model`` for ``runtime`` leaves in fp32 whatever their ranges
    (:func:`edgedeploy.stages.precision.fp16.blocked_ops`)."""
    return set(blocked_ops(model, runtime))


def round_weight(
    values: np.ndarray, halves: dict[str, np.ndarray] | None = None, name: str = ""
) -> np.ndarray:
    """A float weight as the converter stores it in fp16 (clipped, tiny values kept non-zero), in fp32;
    ``halves``: gets the converter's float16 of ``values`` (a float32 array) under ``name``."""
    half = round_to_float16(np.asarray(values, dtype=np.float32))  # the converter's own rounding
    if halves is not None and np.asarray(values).dtype == np.float32:
        halves[name] = half
    mags = half_magnitude_bits(half)
    if mags.size and int(mags.max()) >= HALF_INF_BITS:
        infinite = mags == HALF_INF_BITS  # an infinite weight is clipped too (the converter keeps Inf)
        half = half.copy() if halves is not None else half
        half[infinite] = np.copysign(np.float16(FP16_MAX), half[infinite])
    return to_float32(half)


def float_names(model: onnx.ModelProto) -> set[str]:
    """Float tensors of the main graph to round (inferred types, initializers and inputs): float32 and
    float64 ones. A float16 tensor (an fp32 model's fp16 input, output or Cast) holds fp16 values
    already, and a Cast pair ending in float32 would retype it (ONNX Runtime refused the emulation)."""
    try:
        inferred = infer_shapes_light(model)
    except Exception:  # a model over 2 GB: keep what the file declares
        inferred = model
    g = inferred.graph
    wide = (TensorProto.FLOAT, TensorProto.DOUBLE)
    names = {vi.name for vi in [*g.value_info, *g.input, *g.output] if vi.type.tensor_type.elem_type in wide}
    names.update(i.name for i in model.graph.initializer if i.data_type in wide)
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in wide:
                    names.update(node.output)
    return names


def fp16_node_names(
    model: onnx.ModelProto, fp32_nodes: Collection[str], blocked_ops: Collection[str]
) -> list[str]:
    """Main-graph nodes the converter turns to fp16: all but the blocked names and op types."""
    keep = set(fp32_nodes)
    ops = set(blocked_ops)
    return [n.name for n in model.graph.node if n.name not in keep and n.op_type not in ops]


def emulate_fp16(
    model: onnx.ModelProto,
    fp32_nodes: Collection[str],
    blocked_ops: Collection[str] | None = None,
    *,
    round_io: bool = False,
    switchable: Collection[str] = (),
    cast_weights: Collection[str] = (),
    arrays: dict[str, np.ndarray] | None = None,
    halves: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """An fp32 copy of ``model`` in which every node outside ``fp32_nodes`` behaves like fp16 storage.

    ``round_io`` rounds float graph inputs and outputs too (an fp16 model built without keep_io_types).
    Emulating several plans of one model: make the nodes that differ between the plans
    ``switchable`` (not in ``fp32_nodes``): each then reads a bool scalar
    graph input :func:`switch_input` (True: fp16, False: fp32) through Where nodes, so one ONNX
    Runtime session measures every plan. ``cast_weights``: initializers known to hold no value
    the converter adjusts (none non-zero below 2**-24, above 65504 or non-finite, e.g. from the
    range analysis' weight figures), rounded by a Cast pair in the graph, which gives the same
    values and which ONNX Runtime folds when it loads the session, instead of here in numpy.
    ``arrays``: the float initializers' values by name, when the caller has read them (the range
    analysis): the graph then holds no weight's bytes, only stubs of the float32 ones
    (:func:`calibration.observers.in_memory_stub`), and the rounded twins made here are added to
    ``arrays``; only a session made by :func:`calibration.observers.weights_in_memory` with
    ``arrays`` runs it (no weight is copied, written or read back). ``halves``: gets the
    converter's float16 of each float32 weight of ``arrays`` rounded here, by name (for the
    converter: :func:`edgedeploy.stages.precision.fp16.make_fp16`).
    """
    emu = _copy(model, arrays)
    ensure_node_names(emu)
    blocked = converter_blocked_ops(emu) if blocked_ops is None else set(blocked_ops)
    fp16 = set(fp16_node_names(emu, fp32_nodes, blocked))
    floats = float_names(emu)
    casts = set(cast_weights)
    graph = emu.graph
    inits = {i.name: i for i in graph.initializer}
    rounded: dict[str, str] = {}  # tensor -> its fp16-rounded twin
    new_nodes: list[onnx.NodeProto] = []

    def round_input(name: str) -> str:
        if name in rounded:
            return rounded[name]
        twin = f"{name}__fp16"
        if name in inits and name not in casts:  # written in place: a TensorProto appended is copied again
            values = arrays.get(name) if arrays is not None else None
            if values is None:
                twin_values = round_weight(numpy_helper.to_array(inits[name]))
            else:
                twin_values = round_weight(values, halves, name)
            if arrays is not None and twin_values.dtype == np.float32:
                in_memory_stub(graph, twin, twin_values.shape)
                arrays[twin] = twin_values
            else:
                _float_initializer(graph, twin, twin_values)
        else:
            new_nodes.append(
                helper.make_node("Cast", [name], [f"{twin}_h"], to=TensorProto.FLOAT16, name=f"{twin}_to16")
            )
            new_nodes.append(
                helper.make_node("Cast", [f"{twin}_h"], [twin], to=TensorProto.FLOAT, name=f"{twin}_to32")
            )
        rounded[name] = twin
        return twin

    if round_io:
        for inp in graph.input:
            if inp.name in floats and inp.name not in inits:
                twin = round_input(inp.name)
                for node in graph.node:
                    for i, name in enumerate(node.input):
                        if name == inp.name:
                            node.input[i] = twin
    switches = set(switchable) & fp16

    def switch(flag: str, fp16_value: str, fp32_value: str, out: str) -> None:
        new_nodes.append(
            helper.make_node("Where", [flag, fp16_value, fp32_value], [out], name=f"{out}__switch")
        )

    for node in list(graph.node):
        if node.name not in fp16:
            new_nodes.append(node)
            continue
        if node.name in switches:
            _switchable_node(node, graph, floats, round_input, new_nodes, switch)
            continue
        for i, name in enumerate(node.input):
            if name and name in floats:
                node.input[i] = round_input(name)
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    arr = round_weight(numpy_helper.to_array(attr.t))
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
        new_nodes.append(node)
        for i, name in enumerate(node.output):
            if not name or name not in floats or node.op_type == "Constant":
                if name:
                    rounded.setdefault(name, name)
                continue
            pre = f"{name}__pre16"
            node.output[i] = pre
            new_nodes.append(
                helper.make_node(
                    "Cast", [pre], [f"{name}__h16"], to=TensorProto.FLOAT16, name=f"{name}__round16"
                )
            )
            new_nodes.append(
                helper.make_node(
                    "Cast", [f"{name}__h16"], [name], to=TensorProto.FLOAT, name=f"{name}__back32"
                )
            )
            rounded[name] = name  # already fp16-valued
    if round_io:
        for out in graph.output:
            if out.name in floats and rounded.get(out.name) != out.name:
                pre = f"{out.name}__pre16"
                for node in new_nodes:
                    for i, name in enumerate(node.output):
                        if name == out.name:
                            node.output[i] = pre
                    for i, name in enumerate(node.input):
                        if name == out.name:
                            node.input[i] = pre
                new_nodes.append(
                    helper.make_node(
                        "Cast",
                        [pre],
                        [f"{out.name}__h16"],
                        to=TensorProto.FLOAT16,
                        name=f"{out.name}__round16",
                    )
                )
                new_nodes.append(
                    helper.make_node(
                        "Cast",
                        [f"{out.name}__h16"],
                        [out.name],
                        to=TensorProto.FLOAT,
                        name=f"{out.name}__back32",
                    )
                )
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(
        graph, [name for name, twin in rounded.items() if twin != name and name in inits]
    )
    return emu


def _copy(model: onnx.ModelProto, arrays: dict[str, np.ndarray] | None) -> onnx.ModelProto:
    """``model`` to emulate; with ``arrays``, its float32 weights that they hold as stubs. Weights
    that older exporters also list as graph inputs (IR <= 7: overridable) are weights only here:
    the emulation reads their rounded twins, and an unread weight left as a graph input became an
    input the comparison had to feed (PP-style model-zoo files failed every fp16 compare)."""
    emu = onnx.ModelProto()
    if arrays is None:
        emu.CopyFrom(model)
    else:
        emu = copy_without_initializers(model)
        for init in model.graph.initializer:
            values = arrays.get(init.name)
            if init.data_type == TensorProto.FLOAT and values is not None and values.dtype == np.float32:
                in_memory_stub(emu.graph, init.name, init.dims)
            else:
                emu.graph.initializer.append(init)
    weights = {init.name for init in model.graph.initializer}
    if any(inp.name in weights for inp in emu.graph.input):
        kept = [inp for inp in emu.graph.input if inp.name not in weights]
        del emu.graph.input[:]
        emu.graph.input.extend(kept)
        emu.ir_version = max(emu.ir_version, 4)  # IR 3 wanted every initializer listed as an input
    return emu


def _float_initializer(graph: onnx.GraphProto, name: str, values: np.ndarray) -> None:
    """A float32 initializer added to ``graph`` as ``numpy_helper.from_array`` makes it."""
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend(values.shape)
    tensor.raw_data = np.ascontiguousarray(values, dtype="<f4").tobytes()


SWITCH_PREFIX = "__fp16_switch__"


def switch_input(node_name: str) -> str:
    """The bool graph input that puts switchable node ``node_name`` in fp16 (True) or fp32 (False)."""
    return SWITCH_PREFIX + node_name


def _switchable_node(
    node: onnx.NodeProto,
    graph: onnx.GraphProto,
    floats: set[str],
    round_input: Callable[[str], str],
    new_nodes: list[onnx.NodeProto],
    switch: Callable[[str, str, str, str], None],
) -> None:
    """``node`` with each float input and output rounded only when its switch input is True.

    Its outputs stay marked unrounded, so an fp16 consumer rounds them itself (rounding an
    fp16 value again changes nothing); a Constant's rounded twin is a second Constant."""
    flag = switch_input(node.name)
    graph.input.append(helper.make_tensor_value_info(flag, TensorProto.BOOL, []))
    chosen: dict[str, str] = {}  # one Where per tensor: a node may read it twice (Mul(x, x))
    for i, name in enumerate(node.input):
        if name and name in floats:
            if name not in chosen:
                twin = round_input(name)
                chosen[name] = f"{name}__for_{node.name}" if twin != name else name
                if twin != name:
                    switch(flag, twin, name, chosen[name])
            node.input[i] = chosen[name]
    rounded_constant = None
    if node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                arr = round_weight(numpy_helper.to_array(attr.t))
                rounded_constant = numpy_helper.from_array(arr, attr.t.name)
    new_nodes.append(node)
    for i, name in enumerate(node.output):
        if not name or name not in floats:
            continue
        pre = f"{name}__pre16"
        node.output[i] = pre
        if node.op_type == "Constant":
            if rounded_constant is None:  # value_float(s) and friends: no weight rounding to model
                new_nodes.append(helper.make_node("Identity", [pre], [name], name=f"{name}__same"))
                continue
            new_nodes.append(
                helper.make_node(
                    "Constant", [], [f"{name}__r32"], name=f"{name}__rounded", value=rounded_constant
                )
            )
        else:
            new_nodes.append(
                helper.make_node(
                    "Cast", [pre], [f"{name}__h16"], to=TensorProto.FLOAT16, name=f"{name}__round16"
                )
            )
            new_nodes.append(
                helper.make_node(
                    "Cast", [f"{name}__h16"], [f"{name}__r32"], to=TensorProto.FLOAT, name=f"{name}__back32"
                )
            )
        switch(flag, f"{name}__r32", pre, name)


def _drop_unused_initializers(graph: onnx.GraphProto, candidates: list[str]) -> None:
    """Remove fp32 originals of weights that every consumer now reads rounded (ORT warns otherwise)."""
    used = names_used(graph)
    unused = set(candidates) - used
    # deleted in place: rebuilding the list would copy every weight that stays
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name in unused:
            del graph.initializer[index]


# ops a weight may pass through on its way to the node that computes with it (input 0 is the data):
# its values unchanged, in the type of the last Cast
WEIGHT_PATH_OPS = frozenset({"Cast", "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
SHAPE_OPS = frozenset({"Shape", "Size"})  # read a weight's shape, not its values
CASTS = frozenset({"Cast", "CastLike"})


def _float_weights(model: onnx.ModelProto) -> dict[str, int]:
    """The data type of each float weight by name: initializers of every graph and the ``value`` of
    Constant nodes."""
    found: dict[str, int] = {}
    for graph in all_graphs(model.graph):
        tensors = [(t.name, t) for t in graph.initializer]
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                tensors += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
        found.update({name: t.data_type for name, t in tensors if t.data_type in FLOAT_TYPES})
    return found


def _weight_types_at_nodes(model: onnx.ModelProto) -> list[int]:
    """The float types of the weights that reach a node that computes with them: the weight's own
    and, where a Cast lies on its way, the last Cast's (a converted model whose weights are also
    graph inputs, IR 4-8, keeps them float32 and casts them to float16 before its layers)."""
    weights = _float_weights(model)
    nodes = all_nodes(model.graph)
    producer = {out: node for node in nodes for out in node.output if out}
    found: list[int] = []
    for node in nodes:
        if node.op_type not in WEIGHT_PATH_OPS and node.op_type not in SHAPE_OPS:
            found += _weight_types_of(node, weights, producer)
    return found


def _weight_types_of(
    node: onnx.NodeProto, weights: dict[str, int], producer: dict[str, onnx.NodeProto]
) -> list[int]:
    """:func:`_weight_types_at_nodes` of one node."""
    found: list[int] = []
    for name in node.input:
        cast_to: int | None = None
        for _ in range(16):  # a chain of Casts, Transposes, Reshapes... back to the weight
            step = producer.get(name)
            if name in weights or step is None or step.op_type not in WEIGHT_PATH_OPS or not step.input:
                break
            if step.op_type == "Cast" and cast_to is None:
                cast_to = next((a.i for a in step.attribute if a.name == "to"), None)
            name = step.input[0]
        if name in weights:
            found.extend([weights[name]] if cast_to is None else [weights[name], cast_to])
    return found


# the layers a model spends its arithmetic in: which precision most of them compute in is the model's
HEAVY_OPS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "LSTM", "GRU", "RNN", "Attention"}
)
MIXED = "mixed"  # an fp32 model with some fp16 layers: most heavy layers fp32 (onnx_precision)


def _heavy_layers_in_fp16(model: onnx.ModelProto) -> tuple[int, int]:
    """How many heavy layers (:data:`HEAVY_OPS`) compute in fp16 and how many in fp32: fp16 when
    the layer gives a float16 tensor or reads a weight stored or cast as float16 (ONNX Runtime's
    saved copy of an fp16 model casts its float16 weights to float32), fp32 when it gives float32."""
    try:
        typed = infer_shapes_light(model).graph
    except Exception:  # what the file declares
        typed = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*typed.value_info, *typed.output]}
    weights = _float_weights(model)
    nodes = all_nodes(model.graph)
    producer = {out: node for node in nodes for out in node.output if out}
    half = single = 0
    for node in nodes:
        if node.op_type not in HEAVY_OPS or not node.output:
            continue
        out = types.get(node.output[0])
        if out == TensorProto.FLOAT16 or TensorProto.FLOAT16 in _weight_types_of(node, weights, producer):
            half += 1
        elif out == TensorProto.FLOAT:
            single += 1
    return half, single


def _has_float16_source(model: onnx.ModelProto) -> bool:
    """Anything a float16 tensor can come from besides a float16 weight: a float16 graph input, a
    Cast to float16 or a float16 attribute (a Constant's value, ConstantOfShape's, a dtype)."""
    if any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in model.graph.input):
        return True
    for node in all_nodes(model.graph):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                return True
            if attr.name in ("to", "dtype") and attr.i == TensorProto.FLOAT16:
                return True
    return False


def _computes_float16(model: onnx.ModelProto) -> bool:
    """A node that computes (not a Cast, CastLike, Identity, Transpose, Reshape...) gives a float16
    tensor."""
    if not _has_float16_source(model):  # nothing can be float16: no shape inference needed
        return False
    try:
        typed = infer_shapes_light(model).graph
    except Exception:  # what the file declares
        typed = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*typed.value_info, *typed.output]}
    moving = WEIGHT_PATH_OPS | SHAPE_OPS | CASTS
    return any(
        types.get(out) == TensorProto.FLOAT16
        for node in all_nodes(model.graph)
        if node.op_type not in moving
        for out in node.output
    )


def is_fp16_model(model: onnx.ModelProto) -> bool:
    """True for a model that already is fp16, decided by its weights: one float weight of a node
    that computes with it stored in float16 or cast to float16 on its way (the converter keeps
    only the weights of its fp32 islands float32, and casts weights that are also graph inputs to
    float16 before their layers; ONNX Runtime's saved copy of an fp16 model keeps them float16 and
    casts them to float32). Without one, by what its nodes compute: a node other than Casts and
    data movement that gives a float16 tensor (an fp16 build whose weighted layers all stay fp32,
    its Relus in fp16; a model without weights that takes float16).

    Casts to float16 or float16 graph inputs and outputs alone do not make a model with float32
    weights fp16 (one that rounds a tensor through float16, or takes and gives float16 around
    float32 layers): an fp16 build converts it, and the converter leaves those Casts and that
    interface valid."""
    if TensorProto.FLOAT16 in _weight_types_at_nodes(model):
        return True
    return _computes_float16(model)


# ops that compute on 8-bit integers: Q/DQ (our int8 artifacts, Model Optimizer's, ONNX Runtime's
# quantize_static) and ONNX Runtime's fused or dynamic integer kernels (a saved .ort.onnx), with
# every QLinear* op (is_integer_op)
INTEGER_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
     "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "QLinearAdd", "QLinearMul", "QGemm"}
)  # fmt: skip


def is_integer_op(op_type: str) -> bool:
    """An op of :data:`INTEGER_OPS` or any QLinear* kernel."""
    return op_type in INTEGER_OPS or op_type.startswith("QLinear")


def onnx_precision(model: onnx.ModelProto) -> str:
    """What a model computes in, read from its content, whatever its file is named: int8 (integer
    ops, :func:`is_integer_op`), fp16 (:func:`is_fp16_model`) or fp32. ``profile`` and ``compare``
    record it, so that ``report`` can tell ``model.onnx`` (fp32) from ``model.quant.onnx`` (int8);
    ``build`` and ``bundle`` decide by it what a model given to them already is.

    A model with fp16 in it whose heavy layers mostly compute in fp32 (:func:`_heavy_layers_in_fp16`;
    a user's fp32 model with some layers made fp16 by hand) is :data:`MIXED`, not fp16: one float16
    weight made it "fp16". Our fp16 builds whose fp32 islands hold most layers read mixed too; their
    names (``m.fp16.onnx``) give their precision where one is needed (report, bundle)."""
    if any(is_integer_op(node.op_type) for node in model.graph.node):
        return "int8"
    if not is_fp16_model(model):
        return "fp32"
    half, single = _heavy_layers_in_fp16(model)
    return MIXED if single > half else "fp16"


def has_fp16_io(model: onnx.ModelProto) -> bool:
    """True when the model's inputs or outputs are float16 (converted without keep_io_types)."""
    return any(
        v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in [*model.graph.input, *model.graph.output]
    )


def fp32_nodes_of_converted(reference: onnx.ModelProto, converted: onnx.ModelProto) -> set[str]:
    """Which reference nodes stayed fp32 in a converted fp16 model, read from its tensor types.

    The converter keeps node names, so a reference node whose float outputs are float16 in the
    converted graph ran in fp16; every other node of the reference is reported as fp32.
    """
    try:
        inferred = infer_shapes_light(converted)
    except Exception:
        inferred = converted
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    half: set[str] = set()
    for node in g.node:
        outs = [types.get(o) for o in node.output if o]
        if any(t == TensorProto.FLOAT16 for t in outs):
            half.add(node.name)
    return {n.name for n in reference.graph.node if n.name not in half}
