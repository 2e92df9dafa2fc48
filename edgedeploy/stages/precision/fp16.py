"""FP16 precision artifact: float16 weights and compute, with fp32 islands where asked.

Conversion is done by ONNX Runtime's well-kept ``float16`` converter (shipped inside
onnxruntime): it inserts Casts at island boundaries and keeps graph I/O in fp32 on request.
What we add is the precision plan: a JSON beside the artifact that says which nodes run in
which precision and why, so the TensorRT backend and the bundle can use the same decision.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx

from calibration.graphs import (
    all_graphs,
    all_nodes,
    captured_names,
    copy_fields,
    infer_shapes_light,
    named_in_model,
    names_used,
    nchwc_crash_transposes,
    opset_of,
    subgraphs,
    unique_node_names,
    unshadow_subgraph_names,
    upgrade_ir,
)
from calibration.qdq import unknown_op_types
from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_write_json, sha256_file, written_together
from edgedeploy.onnxio import load_onnx, save_onnx, verify
from edgedeploy.options import Fp16Options
from edgedeploy.stages.precision import PrecisionArtifact
from edgedeploy.targets import Target

PLAN_SCHEMA = 1
CAST_OPSET = 13  # the default-domain opset added for the converter's Casts when a model imports none
# Cast's 'to' is an int from opset 6 on, a string below it: the converter writes an int
CAST_INT_OPSET = 6
CAST_STRING = "below opset 6 Cast's 'to' is a string, and the fp16 converter's Casts write an int"
# ONNX Runtime guarantees no model stamped below opset 7: at 6 it has no AveragePool(1), Gemm(6),
# Add(6), Mul(6), PRelu(6), Pow(1) kernel, where the same model converted to opset 13 loads
ORT_MIN_OPSET = 7
# Ops whose float outputs have a type fixed by an attribute or by their definition (window
# functions, MelWeightMatrix, TfIdfVectorizer, RandomNormal..., EyeLike's dtype, an Optional's type
# and the optional OptionalGetElement reads: the converter retypes no optional), or whose float
# inputs must stay float32 (DynamicQuantizeLinear, BitCast reinterprets bits): the converter would
# retype their tensors to fp16 and make the graph invalid, so they stay fp32 behind Casts. The
# other default-domain ops with such an attribute, and why they need not be here:
# tests/test_conformance.py FIXED_TYPE_HANDLED.
_FIXED_OUTPUT_TYPE = "'s output type is fixed by its definition or attributes (the converter would retype it)"
_FLOAT32_INPUTS = "'s float inputs must stay float32 (the converter would retype them)"
_NO_FP16_KERNEL = " has no fp16 kernel in ONNX Runtime"
# why each op of FIXED_TYPE_OPS stays fp32, as the plan says it (after the op's name)
FIXED_TYPE_REASONS = {
    **dict.fromkeys(
        [
            "HannWindow", "HammingWindow", "BlackmanWindow", "MelWeightMatrix", "TfIdfVectorizer",
            "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
            "Multinomial", "EyeLike", "Optional", "OptionalGetElement",
        ],
        _FIXED_OUTPUT_TYPE,
    ),
    **dict.fromkeys(["DynamicQuantizeLinear", "BitCast"], _FLOAT32_INPUTS),
    # listed without a recorded reason (ONNX Runtime 1.32 loads and runs both in float16)
    **dict.fromkeys(["STFT", "DFT"], " is kept in fp32 (edgedeploy's list of fixed-type ops)"),
    # no fp16 kernel in ONNX Runtime: it inlines the function body into a graph it cannot save
    **dict.fromkeys(["AffineGrid", "MeanVarianceNormalization"], _NO_FP16_KERNEL),
}  # fmt: skip
FIXED_TYPE_OPS = frozenset(FIXED_TYPE_REASONS)
# ONNX Runtime's converter blocks the ops of float16.DEFAULT_OP_BLOCK_LIST unless told otherwise
# (kernels its CUDA provider lacked). Of them an fp16 artifact keeps in fp32 only what ONNX's
# definition or the runtime it is for cannot take in float16 (blocked_ops; docs/design.md, "The
# converter's block list, per runtime"). ONNX Runtime 1.32's CPU provider has a float16 kernel for
# these of them, from this opset on (Max-8/Min-8 take float and double only), for none of the others:
ORT_CPU_FLOAT16_FROM = {"Max": 12, "Min": 12}
# inputs of ops of that list that ONNX types float only while their data takes float16: parameters,
# which the converter keeps float as it keeps Resize's scales (its ALWAYS_FLOAT_INPUTS, to which
# _float_parameters adds these), so the op itself is converted (Upsample-9 and -10: X and Y take
# float16, `scales` is float; TensorRT's parser takes Upsample in FP16, docs/tensorrt-facts.md)
FLOAT_PARAMETERS = {"Upsample": [1]}
FP16_RUNTIMES = ("onnxruntime", "tensorrt")
FP16_MIN_POSITIVE = 2.0**-24  # smallest float16 subnormal; the converter's 5.96e-08 rounds to it
FP16_MAX_FINITE = 65504.0
FP16_HINT = "keep that node in fp32 (--fp32-nodes or --fp32-ops) or build fp32"
# the checker's failure names a node the converter added (a Cast), which no --fp32-* list names
CONVERTER_NODE_HINT = (
    "that node was added by the fp16 converter, it is no node of the model (--fp32-nodes cannot "
    "name it): build fp32 (--precision fp32)"
)
# ... names a node the conversion kept in fp32 already: the Casts around it fail
FP32_NODE_HINT = (
    "that node is kept in fp32 already (the conversion around it fails): build fp32 (--precision fp32)"
)


CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


def ensure_node_names(model: onnx.ModelProto, renamed: dict[str, str] | None = None) -> set[str]:
    """Give every node (subgraphs too) a unique name, as the converter matches nodes by name (its
    node_block_list reaches into If/Loop/Scan bodies) and the precision plan names them by it.

    A node whose name an earlier one bears becomes ``NAME#2``, ``NAME#3``...
    (:func:`calibration.graphs.unique_node_names`, as calibration names them), an unnamed one
    ``OpType_N``. The artifact and the plan carry these names. The range analysis calls this on its
    own copy, so it picks the same names as make_fp16. ``renamed``: as unique_node_names fills it.
    """
    nodes = all_nodes(model.graph)
    names = unique_node_names(model, renamed)
    for node in nodes:
        if not node.name:
            index = len(names)
            while f"{node.op_type}_{index}" in names:
                index += 1
            node.name = f"{node.op_type}_{index}"
            names.add(node.name)
    return names


def subgraph_nodes_of(graph: onnx.GraphProto, blocked: set[str], blocked_ops: set[str]) -> dict[str, str]:
    """Every node inside the subgraphs of a blocked control-flow node: an fp32 If runs fp32 branches."""
    found: dict[str, str] = {}
    for node in all_nodes(graph):
        if node.op_type in CONTROL_FLOW_OPS and (node.name in blocked or node.op_type in blocked_ops):
            for sub in subgraphs(node):
                for inner in all_nodes(sub):
                    found.setdefault(inner.name, f"inside fp32 {node.op_type} '{node.name}'")
    return found


def _float32_names_in_all_graphs(typed: onnx.ModelProto) -> set[str]:
    """Tensors (and sequences of tensors) declared float32 in any graph of ``typed`` (inputs,
    outputs, value_info, weights): those the converter retypes, and wraps in Casts where a blocked
    node reads or writes them."""
    names: set[str] = _float_sequence_names(typed)
    for graph in all_graphs(typed.graph):
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                names.add(vi.name)
        names.update(w.name for w in graph.initializer if w.data_type == onnx.TensorProto.FLOAT)
    return names


def _is_float_sequence(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.sequence_type.elem_type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def _float_sequence_names(model: onnx.ModelProto) -> set[str]:
    """Values typed seq(tensor(float)) in any graph of ``model`` (inputs, outputs, value_info), as
    its types are known (shape inference's, else the file's)."""
    return {
        vi.name
        for graph in all_graphs(model.graph)
        for vi in [*graph.input, *graph.output, *graph.value_info]
        if _is_float_sequence(vi)
    }


SEQUENCE_REASON = (
    "reads or writes the float sequence '{}': the converter retypes a sequence to float16 and "
    "puts a Cast, which takes tensors only, between it and an fp32 node, so sequences stay float32"
)


def _float_sequence_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes, in every graph, that read or write a float sequence (node name -> reason): they stay
    fp32, so no sequence changes type and the converter puts no Cast on one (ONNX Runtime's
    converter retypes seq(tensor(float)) values as it does tensors and, where a blocked node reads
    or writes one, wraps it in a Cast, which the checker refuses: onnx's backend test
    node/test_sequence_map_add_1_sequence_1_tensor_expanded). A control-flow node whose body holds
    one is kept whole (:func:`control_flow_holding_fp32`)."""
    names = _float_sequence_names(model)
    found: dict[str, str] = {}
    for node in all_nodes(model.graph):
        held = [name for name in [*node.input, *node.output] if name in names]
        if held:
            found[node.name] = SEQUENCE_REASON.format(held[0])
    return found


def _untype_float_sequences(model: onnx.ModelProto) -> None:
    """Drop the value_info of float sequences from every graph of ``model`` (shape inference
    types them again): the converter retypes, and wraps in Casts, only the values a graph
    declares, and a Cast cannot take a sequence. Graph inputs and outputs stay declared (the main
    graph's are restored by :func:`_restore_non_tensor_io`; a body's belongs to an fp32 node)."""
    for graph in all_graphs(model.graph):
        kept = [vi for vi in graph.value_info if not _is_float_sequence(vi)]
        if len(kept) != len(graph.value_info):
            del graph.value_info[:]
            graph.value_info.extend(kept)


def control_flow_holding_fp32(
    graph: onnx.GraphProto,
    fp32_reason: Callable[[onnx.NodeProto], str | None],
    float32_names: set[str] | None,
) -> dict[str, str]:
    """Main-graph If/Loop/Scan nodes whose bodies hold a node kept in fp32 (node name -> reason).

    The converter wraps a blocked body node in Casts that it puts in the main graph, where the
    body's tensors do not exist: the graph fails the checker. Such a node keeps the whole
    control-flow node in fp32, bodies included, as the range analysis' rule 5 keeps one.
    ``fp32_reason``: why a node is kept in fp32, or None; ``float32_names``: the tensors typed
    float32 (:func:`_float32_names_in_all_graphs`), as a body node that touches none gets no Casts
    (an int64 Max), or None when the types are unknown (every kept body node counts).
    """
    found: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in CONTROL_FLOW_OPS or fp32_reason(node):
            continue
        for inner in (inner for sub in subgraphs(node) for inner in all_nodes(sub)):
            why = fp32_reason(inner)
            touches = float32_names is None or bool(float32_names & {*inner.input, *inner.output})
            if why and touches:
                found[node.name] = (
                    f"its body holds {inner.op_type} '{inner.name}', kept in fp32 ({why}); a node inside "
                    f"a body cannot be fp32 alone, so the whole {node.op_type} is"
                )
                break
    return found


def _float_tensor_names(model: onnx.ModelProto) -> set[str]:
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    try:
        inferred = infer_shapes_light(model)
    except Exception:  # over 2 GB, or a model inference cannot type: fall back to what the file declares
        inferred = model
    graph = inferred.graph
    names = {
        vi.name
        for vi in [*graph.value_info, *graph.input, *graph.output]
        if vi.type.tensor_type.elem_type in floats
    }
    names.update(i.name for i in model.graph.initializer if i.data_type in floats)
    return names


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in subgraphs(node):
            _rename_uses(sub, old, new)
    for out in graph.output:
        if out.name == old:  # a branch that returns an outer tensor directly
            out.name = new


def _cast_captures_of_fp32_control_flow(
    graph: onnx.GraphProto, blocked: set[str], blocked_ops: set[str], float_names: set[str]
) -> None:
    """An fp32 If/Loop/Scan may read outer tensors the converter made fp16 (implicit captures get
    no boundary Cast): add a Cast to float before the node and point the subgraph at it."""
    position = 0
    while position < len(graph.node):
        node = graph.node[position]
        if node.op_type in CONTROL_FLOW_OPS and (node.name in blocked or node.op_type in blocked_ops):
            captured = set()
            for sub in subgraphs(node):
                captured |= captured_names(sub)
            for name in sorted(captured & float_names):
                cast_out = f"{name}__fp32_for_{node.name}"
                cast = onnx.helper.make_node(
                    "Cast",
                    [name],
                    [cast_out],
                    to=onnx.TensorProto.FLOAT,
                    name=f"{node.name}__capture_cast_{name}",
                )
                for sub in subgraphs(node):
                    _rename_uses(sub, name, cast_out)
                graph.node.insert(position, cast)
                position += 1
        position += 1


# what an assert of ONNX Runtime's converter checked, by the source line it fails on
_CONVERTER_ASSERTS = {
    "fp32_initializers": "another graph of the model holds a float weight of that name too (the converter "
    "keys weights by name)",
}


def _converter_failure(exc: BaseException, model: onnx.ModelProto) -> str:
    """Where and why ONNX Runtime's fp16 converter failed, for one line after "failed": the node, or
    the weight and a node reading it, that its innermost frame was working on (its loops hold the
    current one as ``node``, ``value`` or ``n``), and its message, or for a bare assert the line it
    failed on (its assert on weights of one name said "AssertionError:" and nothing else)."""
    from onnxruntime.transformers import float16

    tb, frame, line = exc.__traceback__, None, ""
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == float16.__name__:
            frame = tb.tb_frame
            line = (traceback.extract_tb(tb, limit=1)[0].line or "").strip()
        tb = tb.tb_next
    at = ""
    held = frame.f_locals if frame is not None else {}
    current = next((held[k] for k in ("node", "value", "n") if k in held), None)
    current = getattr(current, "initializer", current)  # the converter's InitializerTracker
    if isinstance(current, onnx.NodeProto):
        at = f" at {current.op_type} '{current.name}'"
    elif isinstance(current, onnx.TensorProto):
        scope = held.get("q")  # the graph the converter's loop is in
        graph = scope if isinstance(scope, onnx.GraphProto) else model.graph
        reader = next((n for n in all_nodes(graph) if current.name in n.input), None)
        read = f" (read by {reader.op_type} '{reader.name}')" if reader else ""
        at = f" at weight '{current.name}'{read}"
    why = " ".join(str(exc).split())
    if not why and line:
        known = next((text for key, text in _CONVERTER_ASSERTS.items() if key in line), None)
        why = f"its check `{line}` failed" + (f": {known}" if known else "")
    said = f": {why}" if why else ""
    return f"{at}: {type(exc).__name__} in ONNX Runtime's fp16 converter{said}; build fp32"


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _remove_fp16_round_trips(model: onnx.ModelProto, own: set[str]) -> None:
    """Drop Cast(fp32->fp16)->Cast(fp16->fp32) pairs between two fp32 nodes (or an fp32 node and
    a graph input or output, which keep_io_types leaves float32).

    The converter wraps every blocked node in its own Casts, so two fp32 nodes in a row still
    pass their tensor through fp16: a value above 65504 becomes Inf between them, which is what
    the fp32 island was for. The consumers of the round trip read the fp32 tensor directly.
    ``own``: the names of the model's own nodes; a pair of its own Casts is a rounding it asked
    for (autocast exports hold them) and stays, and so does each of its Casts.
    """
    graph = model.graph
    try:
        inferred = infer_shapes_light(model).graph
    except Exception:  # what the file declares (the converter declares every tensor it retypes)
        inferred = graph
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*inferred.value_info, *inferred.input, *inferred.output]
    }
    types.update({i.name: i.data_type for i in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    replace_with: dict[str, str] = {}
    dropped: set[int] = set()
    identities = False
    for node in graph.node:
        if _cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or _cast_to(first) != onnx.TensorProto.FLOAT16 or {node.name, first.name} & own:
            continue
        if types.get(first.input[0]) != onnx.TensorProto.FLOAT:
            continue
        if node.output[0] in outputs:  # the graph output keeps its name: the Cast pair becomes Identity
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
            identities = True
            continue
        replace_with[node.output[0]] = first.input[0]
        dropped.add(id(node))
    if not replace_with and not identities:
        return
    for old_name, new_name in replace_with.items():  # subgraph captures too (a Cast feeding an If body)
        while new_name in replace_with:  # a pair reading another pair's output: to the end of the chain
            new_name = replace_with[new_name]
        _rename_uses(graph, old_name, new_name)
    used = {i for n in graph.node if id(n) not in dropped for i in n.input} | outputs
    for node in graph.node:
        for sub in subgraphs(node):
            used |= captured_names(sub)
    half = onnx.TensorProto.FLOAT16
    unused = {
        id(n) for n in graph.node if _cast_to(n) == half and n.output[0] not in used and n.name not in own
    }
    keep = [n for n in graph.node if id(n) not in dropped and id(n) not in unused]
    del graph.node[:]
    graph.node.extend(keep)
    produced = {o for n in graph.node for o in n.output}
    stale = [vi for vi in graph.value_info if vi.name not in produced]
    for vi in stale:
        graph.value_info.remove(vi)


def _drop_unread_casts(model: onnx.ModelProto, own: set[str]) -> None:
    """Remove the converter's Casts whose output nothing reads, in every graph (If/Loop/Scan bodies
    too): no node of any graph (a body reads an outer name as its own) and no graph output.

    ONNX Runtime's converter casts each float graph input to float16 for its readers
    (``keep_io_types``); where the only reader is the body of a Loop kept fp32, which captures the
    input through a Cast of its own (:func:`_cast_captures_of_fp32_control_flow`), that float16
    Cast is read by nothing: onnx's backend test
    node/test_sequence_map_add_1_sequence_1_tensor_expanded kept one (``graph_input_cast1``). A
    Cast that only fed removed ones goes too. ``own``: the names of the model's own
    nodes, whose Casts stay (the artifact keeps what the input model holds).
    """
    graphs = all_graphs(model.graph)
    while True:
        read = names_used(model.graph)
        removed = False
        for graph in graphs:
            unread = [
                node
                for node in graph.node
                if node.op_type == "Cast" and node.name not in own and node.output[0] not in read
            ]
            for node in unread:
                graph.node.remove(node)
                for vi in [vi for vi in graph.value_info if vi.name == node.output[0]]:
                    graph.value_info.remove(vi)
            removed = removed or bool(unread)
        if not removed:
            return


def fp32_only_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes that must stay fp32 for what their attributes say (node name -> reason).

    ScatterND / ScatterElements with a reduction have no fp16 kernel in ONNX Runtime (the
    artifact would load and then fail when run); LayerNormalization's Mean and InvStdDev outputs
    keep the stash type (float), which the converter would declare fp16, and a Constant's
    sparse_value keeps its type too (the converter retypes dense values only). A 3-D Transpose of
    axis 1 into a MatMul (a GRU's, LSTM's or CRNN's head) in float16 kills ONNX Runtime (SIGSEGV) at
    its default optimization level (docs/design.md, "ONNX Runtime crashes on some fp16 graphs"); in
    float32, between the converter's Casts, it loads, and it moves the same values (a float16
    value is exact in float32).
    """
    found: dict[str, str] = {
        node.name: "Transpose of axis 1 into a MatMul: ONNX Runtime's NchwcTransformer crashes on it in fp16"
        for node in nchwc_crash_transposes(model)
    }
    for node in all_nodes(model.graph):
        attrs = {a.name: a for a in node.attribute}
        if node.op_type in ("ScatterND", "ScatterElements"):
            reduction = attrs["reduction"].s.decode() if "reduction" in attrs else "none"
            if reduction != "none":
                found[node.name] = f"{node.op_type} reduction={reduction}: no fp16 kernel in ONNX Runtime"
        elif node.op_type == "LayerNormalization" and sum(1 for o in node.output if o) > 1:
            found[node.name] = "LayerNormalization's Mean/InvStdDev outputs are float (stash_type)"
        elif node.op_type == "Constant" and "sparse_value" in attrs:
            found[node.name] = "Constant's sparse_value keeps its type (the converter retypes dense ones)"
    return found


def _non_tensor_io(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Graph inputs and outputs that are sequences, optionals or maps (keep_io_types covers tensors)."""
    return {
        vi.name: vi for vi in [*model.graph.input, *model.graph.output] if not vi.type.HasField("tensor_type")
    }


def _non_tensor_io_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes that read or write a sequence/optional graph input or output stay fp32, so the graph's
    interface keeps its types (the converter would make a float sequence input float16)."""
    names = set(_non_tensor_io(model))
    return {
        node.name: "reads or writes a sequence/optional graph input or output (kept as declared)"
        for node in model.graph.node
        if names & {*node.input, *node.output}
    }


def _detach_unproduced_outputs(model: onnx.ModelProto) -> list[tuple[int, onnx.ValueInfoProto]]:
    """Graph outputs no node produces, made convertible: an initializer gets an Identity that
    produces it (the weight is renamed), and an output that is a graph input or names an earlier
    output again is taken off here and put back by :func:`_reattach_outputs` (position, as it was).
    The converter's output Casts (keep_io_types) assume a producing node and wrote a graph that
    fails the checker ("input 'graph_output_cast_1' of node: " is not sorted)."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    weights = {w.name: w for w in graph.initializer}
    seen: set[str] = set()
    detached: list[tuple[int, onnx.ValueInfoProto]] = []
    for position, out in enumerate(list(graph.output)):
        if out.name in inputs or out.name in seen:
            held = onnx.ValueInfoProto()
            held.CopyFrom(out)
            detached.append((position, held))
        elif out.name in weights:
            renamed = f"{out.name}__value"
            weights[out.name].name = renamed
            for node in graph.node:
                node.input[:] = [renamed if name == out.name else name for name in node.input]
            producer = onnx.helper.make_node("Identity", [renamed], [out.name], name=f"{out.name}__out")
            nodes = [producer, *graph.node]
            del graph.node[:]
            graph.node.extend(nodes)
        seen.add(out.name)
    for position, _ in reversed(detached):
        del graph.output[position]
    return detached


def _reattach_outputs(converted: onnx.ModelProto, detached: list[tuple[int, onnx.ValueInfoProto]]) -> None:
    """Put back the outputs :func:`_detach_unproduced_outputs` took off, typed as the graph now
    holds their tensor (a graph input keeps its type; a repeated output is its first one's twin)."""
    graph = converted.graph
    outputs = list(graph.output)
    for position, out in detached:
        now = next((v for v in [*graph.input, *outputs] if v.name == out.name), None)
        if now is not None:
            out.type.CopyFrom(now.type)
        outputs.insert(position, out)
    del graph.output[:]
    graph.output.extend(outputs)


def _restore_non_tensor_io(converted: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give sequence/optional graph inputs and outputs their declared types back; the Casts the
    converter put on them (a Cast cannot take a sequence) become Identity, which passes it as it is."""
    declared = _non_tensor_io(original)
    if not declared:
        return
    graph = converted.graph
    for vi in [*graph.input, *graph.output]:
        if vi.name in declared:
            vi.type.CopyFrom(declared[vi.name].type)
    touched: set[str] = set()
    for node in graph.node:
        if node.op_type == "Cast" and ({*node.input, *node.output} & set(declared)):
            node.op_type = "Identity"
            del node.attribute[:]
            touched.update(node.output)
            touched.update(node.input)
    stale = [vi for vi in graph.value_info if vi.name in touched]
    for vi in stale:
        graph.value_info.remove(vi)


def _retype_float_constants(graph: onnx.GraphProto) -> None:
    """Constant(value_float/value_floats) whose output the converter declared fp16: the converter
    retypes only ``value`` tensors, so these become an fp16 ``value`` tensor as declared."""

    half = {
        vi.name
        for vi in [*graph.value_info, *graph.output]
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in graph.node:
        for sub in subgraphs(node):
            _retype_float_constants(sub)
        if node.op_type != "Constant" or not node.output or node.output[0] not in half:
            continue
        for attr in list(node.attribute):
            if attr.name in ("value_float", "value_floats"):
                values = (
                    np.float32(attr.f) if attr.name == "value_float" else np.array(attr.floats, np.float32)
                )
                tensor = onnx.numpy_helper.from_array(np.asarray(values).astype(np.float16), node.output[0])
                node.attribute.remove(attr)
                node.attribute.append(onnx.helper.make_attribute("value", tensor))


def _import_default_opset(model: onnx.ModelProto) -> None:
    """The converter's Casts in a graph that imports no default-domain opset (an ai.onnx.ml model)."""
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import) and any(
        n.domain in ("", "ai.onnx") for n in all_nodes(model.graph)
    ):
        model.opset_import.append(onnx.helper.make_opsetid("", CAST_OPSET))


def casts_writable(model: onnx.ModelProto) -> bool:
    """Whether the converter's Casts can be written into ``model`` at its own opset, which an fp16
    artifact then keeps: not at a default-domain opset of 1 to 5 (:data:`CAST_STRING`; they failed
    onnx.checker, "Mismatched attribute type in 'graph_input_cast0 : to'")."""
    return not 0 < opset_of(model) < CAST_INT_OPSET


def convert_for_casts(
    model: onnx.ModelProto,
    name: str,
    reason: str = CAST_STRING,
    *,
    needed_for: str = "fp16",
    refused: str = "not built",
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """``model``, whose Casts cannot be written (:func:`casts_writable`), converted to opset 13, and
    what the precision plan records of it (``reason``: why it is converted). The conversion is the
    one export and int8 make (:func:`calibration.qdq.upgrade_opset`, checked against ``model``); one
    it cannot make, or that changes the outputs, is refused: InputError naming ``name`` (what needs
    the conversion: ``needed_for``; the refusal ends in ``refused``)."""
    from calibration.errors import CalibrationError, ConversionError
    from calibration.qdq import convert_opset

    old = opset_of(model)
    try:
        converted, unchecked = convert_opset(model, name=name, needed_for=f"{needed_for}: {reason}")
    except ConversionError as exc:
        raise InputError(f"{exc}; {refused}") from None
    except CalibrationError as exc:
        raise InputError(str(exc)) from None
    info: dict[str, Any] = {"from": old, "to": opset_of(converted), "reason": reason}
    info["checked"] = not unchecked
    if unchecked:  # neither ONNX Runtime nor onnx's reference evaluator runs the source...: never claimed
        info["not_checked"] = unchecked
    return converted, info


def conversion_checked_words(conversion: Mapping[str, Any]) -> str:
    """How a notice line says whether an opset conversion (:func:`convert_for_casts`'s record) was
    checked: "checked against it", or why it was not."""
    if conversion.get("checked", True):
        return "checked against it"
    return f"not checked against it: {conversion.get('not_checked') or 'its check could not run'}"


def may_convert(model: onnx.ModelProto) -> bool:
    """Whether an fp16 build may convert ``model`` (:func:`opset_conversion`): a default-domain opset
    below :data:`ORT_MIN_OPSET`. Cheap, without its weights; false keeps the opset unasked."""
    return 0 < opset_of(model) < ORT_MIN_OPSET


def opset_conversion(model: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
    """How an fp16 build converts ``model`` (with its weights) before anything else, or None where it
    keeps its opset: below opset 6 for its Casts (:func:`casts_writable`), and below 7 where ONNX
    Runtime cannot load it at its own opset (:func:`loadable_conversion`). Both by
    :func:`convert_for_casts`, its refusals included."""
    if not casts_writable(model):
        return convert_for_casts(model, name)
    return loadable_conversion(model, name)


def loadable_conversion(
    model: onnx.ModelProto, name: str, *, needed_for: str = "fp16", refused: str = "not built"
) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
    """``model`` (with its weights) converted to opset 13 where ONNX Runtime cannot load it at its own
    opset, below :data:`ORT_MIN_OPSET` (an opset-6 Gemm or Add: no Gemm(6) kernel), but can load its
    conversion, by :func:`convert_for_casts` (``needed_for``, ``refused``: its refusals' words); else
    None. An fp16 build converts such a file so (:func:`opset_conversion`), and compare runs such a
    reference from it."""
    if not may_convert(model):
        return None
    from calibration.artifacts import load_error

    why = load_error(model)
    if why is None:
        return None
    reason = f"ONNX Runtime cannot load it at opset {opset_of(model)} ({why})"
    converted, info = convert_for_casts(model, name, reason, needed_for=needed_for, refused=refused)
    return (converted, info) if load_error(converted) is None else None


def _repair(model: onnx.ModelProto, src: Path) -> None:
    """What the converter leaves invalid: node order (it appends input Casts at the end), Casts in
    a graph that imports no default-domain opset, Constant nodes whose value_float it retyped."""
    from calibration.graphs import CycleError, sort_graph

    _import_default_opset(model)
    _retype_float_constants(model.graph)
    try:
        sort_graph(model.graph)
    except CycleError as exc:
        raise InputError(f"fp16 conversion of {src.name} produced a cycle: {exc}; build fp32") from None


HALF_INF_BITS = 0x7C00  # float16 +Inf; larger magnitudes are NaN


def half_magnitude_bits(half: np.ndarray) -> np.ndarray:
    """The bits of float16 values with the sign cleared, as integers: 0 for zeros, HALF_INF_BITS for
    infinities, more for NaN (numpy's float16 compares and isinf run element by element)."""
    return np.bitwise_and(half.view(np.uint16), np.uint16(0x7FFF))


# from this many elements a float cast runs in ONNX Runtime's Cast kernel (vectorized: 20x numpy's
# float16 casts, which run element by element) instead of numpy (cheaper for a small array)
ORT_CAST_ELEMENTS = 1 << 14
_CASTS: dict[tuple[int, int], Any] = {}


def _ort_cast(values: np.ndarray, to: int) -> np.ndarray:
    """``values`` cast to ONNX type ``to`` by an ONNX Runtime session made once per type: the
    float32 <-> float16 conversions round to nearest even as numpy's do, and give the same bits
    for every value but NaN (whose payload bits may differ: the callers leave NaN to numpy)."""
    source = onnx.helper.np_dtype_to_tensor_dtype(values.dtype)
    session = _CASTS.get((source, to))
    if session is None:
        import onnxruntime as ort

        from calibration.observers import no_spinning

        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Cast", ["x"], ["y"], to=to)],
            "cast",
            [onnx.helper.make_tensor_value_info("x", source, [None])],
            [onnx.helper.make_tensor_value_info("y", to, [None])],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", CAST_OPSET)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1  # a few ms per 20 M values: no waiting on a busy second core
        no_spinning(options)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        _CASTS[source, to] = session
    flat = np.ascontiguousarray(values).reshape(-1)
    return session.run(None, {"x": flat})[0].reshape(values.shape)


def to_float16(values: np.ndarray) -> np.ndarray:
    """``values.astype(np.float16)``, bit for bit (NaN included), for a large float32 array in
    ONNX Runtime's Cast kernel."""
    if values.dtype != np.float32 or values.size < ORT_CAST_ELEMENTS:
        with np.errstate(over="ignore"):
            return values.astype(np.float16)
    half = _ort_cast(values, onnx.TensorProto.FLOAT16)
    if int(half_magnitude_bits(half).max()) > HALF_INF_BITS:  # NaN: numpy's own NaN bits
        with np.errstate(over="ignore"):
            half = values.astype(np.float16)
    return half


def to_float32(half: np.ndarray) -> np.ndarray:
    """``half.astype(np.float32)``, bit for bit (NaN included), for a large float16 array in ONNX
    Runtime's Cast kernel."""
    if half.dtype != np.float16 or half.size < ORT_CAST_ELEMENTS:
        return half.astype(np.float32)
    if int(half_magnitude_bits(half).max()) > HALF_INF_BITS:  # NaN: numpy's own NaN bits
        return half.astype(np.float32)
    return _ort_cast(half, onnx.TensorProto.FLOAT)


def round_to_float16(
    values: np.ndarray, min_positive_val: float = 5.96e-08, max_finite_val: float = 65504.0
) -> np.ndarray:
    """float16 of ``values`` as ``onnxruntime.transformers.float16.convert_np_to_float16`` gives it
    (non-zero magnitudes below ``min_positive_val`` raised to it, finite ones above
    ``max_finite_val`` clipped to it, NaN/Inf kept), bit for bit, in a few passes instead of its
    dozen masks: plain rounding already agrees except where it gives 0 for a non-zero value or
    Inf for a finite one, which are fixed up afterwards. Both are found on the float16 bits
    (sign cleared) as integers: numpy's float16 compares and isinf run element by element."""
    arr = np.asarray(values)
    if min_positive_val > FP16_MIN_POSITIVE or max_finite_val < FP16_MAX_FINITE:  # not the defaults
        return _round_general(arr, min_positive_val, max_finite_val)
    half = to_float16(arr)
    mags = half_magnitude_bits(half)
    # non-zero float32 bits (-0.0 counts here, and then only costs the exact look below)
    nonzero = np.count_nonzero(arr.view(np.uint32) if arr.dtype == np.float32 else arr)
    if np.count_nonzero(mags) != nonzero:
        lost = (mags == 0) & (arr != 0)
        half[lost] = np.copysign(np.float16(FP16_MIN_POSITIVE), arr[lost]).astype(np.float16)
    if mags.size and int(mags.max()) >= HALF_INF_BITS:  # Inf or NaN somewhere
        clipped = (mags == HALF_INF_BITS) & np.isfinite(arr)
        half[clipped] = np.copysign(np.float16(FP16_MAX_FINITE), arr[clipped]).astype(np.float16)
    return half


def _round_general(arr: np.ndarray, min_positive_val: float, max_finite_val: float) -> np.ndarray:
    mags = np.abs(arr)
    tiny = (mags < min_positive_val) & (mags > 0)
    if tiny.any():
        arr = np.where(tiny, np.copysign(np.asarray(min_positive_val, arr.dtype), arr), arr)
    big = (mags > max_finite_val) & (mags < np.inf)
    if big.any():
        arr = np.where(big, np.copysign(np.asarray(max_finite_val, arr.dtype), arr), arr)
    return arr.astype(np.float16)


@contextlib.contextmanager
def _float_parameters() -> Iterator[None]:
    """The converter keeps the inputs of :data:`FLOAT_PARAMETERS` float (a float initializer stays
    float32, a converted tensor gets a Cast back to float), as it keeps Resize's scales."""
    from onnxruntime.transformers import float16

    original = float16.ALWAYS_FLOAT_INPUTS
    float16.ALWAYS_FLOAT_INPUTS = {**original, **FLOAT_PARAMETERS}
    try:
        yield
    finally:
        float16.ALWAYS_FLOAT_INPUTS = original


@contextlib.contextmanager
def _fast_weight_rounding(
    model: onnx.ModelProto | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    halves: Mapping[str, np.ndarray] | None = None,
) -> Iterator[None]:
    """The converter with :func:`round_to_float16` as its per-weight rounding (same values, bit for
    bit: tests/precision pins it); its own spends most of the conversion of a 50 MB model.

    ``arrays``: the values of ``model``'s main-graph float initializers, by name, as the caller has
    read them (the range analysis): the converter rounds those instead of reading each weight's
    bytes out of the message twice (a copy each time). Only a tensor that is that initializer
    itself (the same message, float32 bytes of the array's shape) is taken from them; ``halves``:
    the :func:`round_to_float16` of some of those arrays (default bounds), by name."""
    from onnxruntime.transformers import float16

    original, original_tensor = float16.convert_np_to_float16, float16.convert_tensor_float_to_float16
    held = list(model.graph.initializer) if model is not None and arrays else []  # their ids stay
    owners = {id(tensor): tensor.name for tensor in held}

    def convert_tensor(
        tensor: onnx.TensorProto, min_positive_val: float = 5.96e-08, max_finite_val: float = 65504.0
    ) -> onnx.TensorProto:
        name = owners.get(id(tensor))
        values = arrays.get(name) if arrays is not None and name is not None else None
        if (
            values is None
            or values.dtype != np.float32
            or values.size == 0
            or values.shape != tuple(tensor.dims)
            or tensor.data_type != onnx.TensorProto.FLOAT
            or len(tensor.float_data)
            or not tensor.HasField("raw_data")
        ):
            return original_tensor(tensor, min_positive_val, max_finite_val)
        half = halves.get(name) if halves is not None and name is not None else None
        defaults = min_positive_val == 5.96e-08 and max_finite_val == 65504.0
        if half is None or not defaults or half.shape != values.shape:
            half = round_to_float16(values, min_positive_val, max_finite_val)
        tensor.data_type = onnx.TensorProto.FLOAT16  # what the converter writes for raw float data
        tensor.raw_data = half.tobytes()
        return tensor

    float16.convert_np_to_float16 = round_to_float16
    float16.convert_tensor_float_to_float16 = convert_tensor
    try:
        yield
    finally:
        float16.convert_np_to_float16 = original
        float16.convert_tensor_float_to_float16 = original_tensor


def fp32_reasons(options: Fp16Options, blocked: Mapping[str, str]) -> Callable[[onnx.NodeProto], str | None]:
    """Why a node is kept in fp32 (the user's lists, analysis, the op types ``blocked``: op type ->
    reason, :func:`blocked_ops`), or None."""
    ops = set(options.fp32_ops)
    user_nodes = set(options.fp32_nodes)
    # a node selected by the name the model gave it, not its own (NAME#2 by NAME): says which
    given = {n: name for name, found in options.fp32_nodes_matched.items() for n in found if n != name}

    def reason(node: onnx.NodeProto) -> str | None:
        if node.name in user_nodes:
            return f"--fp32-nodes {given[node.name]}" if node.name in given else "--fp32-nodes"
        if node.op_type in ops:
            return f"--fp32-ops {node.op_type}"
        if node.name in options.auto_fp32_nodes:
            return options.auto_fp32_nodes[node.name]
        return blocked.get(node.op_type)

    return reason


def _onnx_refuses_float16(op_type: str, domain: str, opset: int) -> str | None:
    """Why ONNX's definition of ``op_type`` at ``opset`` takes no float16 where it takes float32
    (a type constraint without it, or an input or output typed float only), or None."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:  # no such op at that opset: the model cannot hold it
        return None
    refused = f"{op_type} takes no float16 in ONNX's definition at opset {opset}"
    kept_float = FLOAT_PARAMETERS.get(op_type, []) if not domain else []  # the converter keeps them
    for kind, formals in (("input", schema.inputs), ("output", schema.outputs)):
        for index, formal in enumerate(formals):
            if formal.type_str == "tensor(float)" and not (kind == "input" and index in kept_float):
                return f"{refused} (its {kind} '{formal.name}' is float only)"
    for constraint in schema.type_constraints:
        allowed = set(constraint.allowed_type_strs)
        if "tensor(float)" in allowed and "tensor(float16)" not in allowed:
            return refused
    return None


def blocked_ops(model: onnx.ModelProto, runtime: str = "onnxruntime") -> dict[str, str]:
    """The op types an fp16 build of ``model`` for ``runtime`` (:data:`FP16_RUNTIMES`) keeps in fp32,
    with why (op type -> reason): FIXED_TYPE_OPS, and of the converter's default block list those
    ONNX's definition at the model's opset types float only (a float Range below opset 27, CumSum
    below 14, NonMaxSuppression, Upsample's scales, the ai.onnx.ml ops) or ``runtime`` cannot run in
    float16: ONNX Runtime's CPU provider has no float16 kernel for them (it runs them in float32
    between Casts it inserts: :data:`ORT_CPU_FLOAT16_FROM`), TensorRT's ONNX parser takes no
    ai.onnx.ml op (it takes the others in FP16). The rest of the list is converted as any op."""
    from onnxruntime.transformers import float16

    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    found = {op: op + reason for op, reason in FIXED_TYPE_REASONS.items()}
    for op in float16.DEFAULT_OP_BLOCK_LIST:
        if op in found:
            continue
        domain = "" if onnx.defs.has(op) else "ai.onnx.ml"
        opset = opsets.get(domain or "ai.onnx", 0)
        why = _onnx_refuses_float16(op, domain, opset)
        if why is None and runtime == "tensorrt" and domain:
            why = f"{op} is no op TensorRT's ONNX parser takes ({domain})"
        elif why is None and runtime != "tensorrt":
            since = ORT_CPU_FLOAT16_FROM.get(op) if not domain else None
            if since is None or opset < since:
                below = f" below opset {since}" if since is not None else ""
                why = (
                    f"ONNX Runtime's CPU provider has no float16 {op} kernel{below} (it would run it in "
                    "float32 between Casts)"
                )
        if why is not None:
            found[op] = why
    return found


def runtime_for(target: Target) -> str:
    """The runtime (:data:`FP16_RUNTIMES`) a precision artifact built for ``target`` is made for:
    which ops of the converter's block list an fp16 one keeps in fp32 (:func:`blocked_ops`), and
    whose Q/DQ placement an int8 one takes (``int8.placement_for``). TensorRT for a GPU target,
    whichever backend builds it here: its bundle's device builds a TensorRT engine from it
    (device/build_engine.sh), and ONNX Runtime here (``backend = "onnxruntime"``, or ``auto`` where
    no TensorRT is) only checks it; ONNX Runtime's CPU provider for a CPU target (docs/design.md,
    "The converter's block list, per runtime")."""
    return "tensorrt" if target.is_gpu else "onnxruntime"


def precision_plan(
    model: onnx.ModelProto, options: Fp16Options, blocked: Mapping[str, str]
) -> dict[str, object]:
    """Which node runs in which precision, and why (the user's lists, analysis, the op types
    ``blocked`` for the runtime: :func:`blocked_ops`)."""
    why = fp32_reasons(options, blocked)
    entries = []
    for node in all_nodes(model.graph):
        reason = why(node)
        entries.append(
            {
                "node": node.name,
                "op": node.op_type,
                "precision": "fp32" if reason else "fp16",
                **({"reason": reason} if reason else {}),
            }
        )
    fp32 = sum(1 for e in entries if e["precision"] == "fp32")
    return {
        "schema_version": PLAN_SCHEMA,
        "precision": "fp16",
        "keep_io_types": options.keep_io_types,
        "runtime": options.runtime,  # which ops of the converter's block list stay fp32 (blocked_ops)
        "nodes_total": len(entries),
        "nodes_fp32": fp32,
        # each --fp32-nodes name -> the nodes it kept (every node the model gave that name)
        **({"fp32_nodes_matched": dict(options.fp32_nodes_matched)} if options.fp32_nodes_matched else {}),
        "nodes": entries,
    }


_T = onnx.TensorProto
INTEGER_TYPES = frozenset(
    {
        _T.BOOL, _T.INT4, _T.INT8, _T.INT16, _T.INT32, _T.INT64,
        _T.UINT4, _T.UINT8, _T.UINT16, _T.UINT32, _T.UINT64,
    }
)  # fmt: skip


def mark_not_float32(plan: dict[str, Any], typed: onnx.ModelProto) -> None:
    """The plan's nodes, in the main graph and inside If/Loop/Scan bodies, that compute in float64
    (no float32 tensor in or out), or on integers or bools only (every tensor in and out typed, none
    a float): the converter changes float32 only, so they stay as they are and the plan says
    "float64" or "integer" instead of "fp16" (TensorRT's pins and the report read its "fp32" nodes
    only). So does a node of an op the converter blocks (an int64 TopK), listed "fp32" for that
    alone (:func:`blocked_ops`, for the plan's runtime): blocked, it gets no Casts where it holds no
    float32 tensor. A control-flow node counts
    the tensors its bodies capture and those of every node inside them as its own: an int64 If
    whose branch computes in float32 is converted. Needs the types shape inference wrote into
    ``typed``; nodes it did not type keep their entry. Recounts the plan's fp32 nodes."""
    marks: dict[str, tuple[str, str]] = {}
    _not_float32_marks(typed.graph, {}, marks)
    entries = cast(list[dict[str, Any]], plan["nodes"])
    blocked = blocked_ops(typed, str(plan.get("runtime", "onnxruntime")))
    for entry in entries:
        converted = entry["precision"] == "fp16" or entry.get("reason") == blocked.get(entry["op"])
        if converted and entry["node"] in marks:
            entry["precision"], entry["reason"] = marks[entry["node"]]
    plan["nodes_fp32"] = sum(1 for e in entries if e["precision"] == "fp32")
    plan["nodes_float64"] = sum(1 for e in entries if e["precision"] == "float64")
    plan["nodes_integer"] = sum(1 for e in entries if e["precision"] == "integer")


def _not_float32_marks(
    graph: onnx.GraphProto, outer: Mapping[str, int], marks: dict[str, tuple[str, str]]
) -> set[int | None]:
    """Fill ``marks`` (node name -> precision, reason) for the nodes of ``graph`` and of its bodies,
    with ``outer``: the element types of the enclosing scopes' tensors, by name; returns the types
    of every tensor ``graph``'s nodes touch (None for an untyped one), bodies included."""
    types = dict(outer)
    typed = [*graph.input, *graph.output, *graph.value_info]
    types.update({v.name: v.type.tensor_type.elem_type for v in typed})
    types.update({w.name: w.data_type for w in graph.initializer})
    touched: set[int | None] = set()
    for node in graph.node:
        kinds = {types.get(name) for name in [*node.input, *node.output] if name}
        for sub in subgraphs(node):
            kinds |= {types.get(name) for name in captured_names(sub)}
            kinds |= _not_float32_marks(sub, types, marks)
        if onnx.TensorProto.DOUBLE in kinds and onnx.TensorProto.FLOAT not in kinds:
            marks[node.name] = ("float64", "float64 compute: the fp16 conversion changes float32 only")
        elif kinds and kinds <= INTEGER_TYPES:
            held = ", ".join(sorted(onnx.TensorProto.DataType.Name(k).lower() for k in kinds if k))
            marks[node.name] = ("integer", f"{held} only, no float tensor: the fp16 conversion leaves it")
        touched |= kinds
    return touched


def _typed_in_place(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` as ``infer_shapes_light(model, weights=True)`` returns it (equal messages: tests
    pin it), made by moving the inferred fields into ``model`` instead of copying its weights into
    the inferred copy; raises what shape inference raises, before ``model`` is changed."""
    inferred = infer_shapes_light(model)
    for source, target in ((inferred, model), (inferred.graph, model.graph)):
        skip = {"graph", "ir_version"} if source is inferred else {"initializer", "input"}
        for field in target.DESCRIPTOR.fields:
            if field.name not in skip:
                target.ClearField(field.name)
        copy_fields(source, target, skip)
    return model


def check_fp32_ops(fp32_ops: Sequence[str], model: onnx.ModelProto) -> None:
    """``--fp32-ops`` names op types: one that neither ONNX nor ``model`` has is a typo, refused
    before any work (see :func:`calibration.qdq.unknown_op_types`)."""
    unknown = unknown_op_types(fp32_ops, model)
    if unknown:
        raise InputError(f"--fp32-ops: no ONNX op type named {', '.join(unknown)}")


def unknown_fp32_nodes(fp32_nodes: Sequence[str], model: onnx.ModelProto) -> list[str]:
    """The names of ``fp32_nodes`` that are no node of ``model``, named as the converter names them
    (:func:`ensure_node_names`, applied to ``model``)."""
    names = ensure_node_names(model)
    return [n for n in fp32_nodes if n not in names]


def match_fp32_nodes(options: Fp16Options, model: onnx.ModelProto, src: object) -> Fp16Options:
    """``options`` whose ``--fp32-nodes`` select every node that bore each name in ``model`` (of
    ``src``; named here, :func:`ensure_node_names`): the user wrote a name the model gives them all,
    and our copy calls the later ones ``NAME#2``... ``fp32_nodes_matched`` records the selection,
    for the plan. A name that is no node's is refused before any work. Options matched already
    (the selection made on the model as read) are only checked against ``model``."""
    renamed: dict[str, str] = {}
    names = ensure_node_names(model, renamed)
    if options.fp32_nodes_matched:
        unknown = unknown_fp32_nodes(options.fp32_nodes, model)
        matched = dict(options.fp32_nodes_matched)
    else:
        labels = [node.name for node in all_nodes(model.graph)]
        matched = {n: named_in_model(labels, renamed, n.__eq__) for n in options.fp32_nodes}
        unknown = [n for n, found in matched.items() if not found and n not in names]
    if unknown:
        raise InputError(f"--fp32-nodes: no node named {', '.join(unknown)} in {src}")
    if not matched:
        return options
    selected = list(dict.fromkeys(name for found in matched.values() for name in found))
    return replace(options, fp32_nodes=selected, fp32_nodes_matched=matched)


def plan_fp32_nodes(
    model: onnx.ModelProto, options: Fp16Options, typed: onnx.ModelProto | None = None
) -> tuple[Fp16Options, list[str], dict[str, object], dict[str, str]]:
    """What the conversion keeps in fp32 besides ``options``' nodes: ``options`` with the nodes
    kept by rule added (a main-graph If/Loop/Scan whose body holds a node kept in fp32, with every
    node inside it; :func:`fp32_only_nodes`; nodes of non-tensor graph I/O), the op types blocked,
    the :func:`precision_plan` (its counts are the build's), and the control-flow nodes held in fp32
    by a body node (name -> reason). ``model`` must carry the converter's names
    (:func:`ensure_node_names`); ``typed``: ``model`` with its shapes inferred, so that a body node
    blocked on integers only does not hold its control-flow node (without it, any blocked body
    node does). make_fp16 and analyze both plan with this one function."""
    blocked = blocked_ops(model, options.runtime)
    ops = sorted(set(blocked) | set(options.fp32_ops))
    fixed = {**fp32_only_nodes(model), **_non_tensor_io_nodes(model), **_float_sequence_nodes(typed or model)}
    holding: dict[str, str] = {}
    if any(n.op_type in CONTROL_FLOW_OPS for n in all_nodes(model.graph)):
        kept = fp32_reasons(replace(options, auto_fp32_nodes={**fixed, **options.auto_fp32_nodes}), blocked)
        holding = control_flow_holding_fp32(
            (typed or model).graph, kept, _float32_names_in_all_graphs(typed) if typed is not None else None
        )
    inside = subgraph_nodes_of(
        model.graph,
        set(options.fp32_nodes) | set(options.auto_fp32_nodes) | set(fixed) | set(holding),
        set(ops),
    )
    options = replace(options, auto_fp32_nodes={**fixed, **holding, **inside, **options.auto_fp32_nodes})
    return options, ops, precision_plan(model, options, blocked), holding


def _refusal_with_working_advice(refusal: str, own: set[str], fp32: set[str]) -> str:
    """``refusal`` (an artifact check's, ending in :data:`FP16_HINT`) with advice that works: the
    node the checker names (perhaps cut short with "…") is none of ``own``, the model's nodes (the
    converter added it: no --fp32-nodes names it), or is kept in fp32 already (``fp32``): then
    keeping it in fp32 is no way out, and the advice is to build fp32."""
    named = re.search(r"node name: ([^)]*)\)", refusal)
    if not refusal.endswith(FP16_HINT) or named is None:
        return refusal
    name = named.group(1)
    matches = [n for n in own if (n.startswith(name.removesuffix("…")) if name.endswith("…") else n == name)]
    if not matches:
        return refusal.removesuffix(FP16_HINT) + CONVERTER_NODE_HINT
    if all(n in fp32 for n in matches):
        return refusal.removesuffix(FP16_HINT) + FP32_NODE_HINT
    return refusal


def make_fp16(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    options: Fp16Options | None = None,
    feed: Mapping[str, Any] | None = None,
    loaded: onnx.ModelProto | None = None,
    source_sha256: Callable[[], str] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    halves: dict[str, np.ndarray] | None = None,
    opset_conversion: Mapping[str, Any] | None = None,
) -> PrecisionArtifact:
    """Write the fp16 ONNX at ``out_path`` and its precision plan at ``<out>.plan.json``.

    The artifact is checked and run once (on ``feed``, else seeded random data) before it counts.
    ``loaded``: ``model_path`` as the caller has already read it (weights included), used instead
    of reading the file again and handed over: it is converted in place, the caller must not use
    it afterwards. ``source_sha256``: gives the sha256 of ``model_path``'s bytes when the caller
    has them (hashed aside), instead of reading the file again. ``arrays``: the float weights of
    ``loaded`` by name, as the caller has read them (the range analysis), for the converter to
    round instead of reading them out of the message again; ``halves``: those of them already
    rounded (by the island release's emulation, with the same rounding), by name. Both are
    handed over like ``loaded``: emptied once the weights are converted, before the artifact is
    saved and checked (their memory is not held through the check). ``opset_conversion``: how
    ``model_path`` was converted from the user's file (:func:`convert_for_casts`), for the plan.
    """
    from onnxruntime.transformers import float16

    options = options or Fp16Options()
    src = Path(model_path)
    out = Path(out_path)
    model = loaded if loaded is not None else load_onnx(src)
    upgrade_ir(model)  # IR 3 ties initializers to graph inputs, which the converter retypes
    unshadow_subgraph_names(model)  # the converter and our Casts take a tensor's name as model-wide
    options = match_fp32_nodes(options, model, src)
    check_fp32_ops(options.fp32_ops, model)
    has_control_flow = any(n.op_type in CONTROL_FLOW_OPS for n in all_nodes(model.graph))
    float_names = _float_tensor_names(model) if has_control_flow else set()
    interface = onnx.ModelProto()  # the declared graph inputs and outputs, for _restore_non_tensor_io
    interface.graph.input.extend(model.graph.input)
    interface.graph.output.extend(model.graph.output)
    try:
        # the converter's own shape inference serializes the model with its weights twice: typed
        # here, in place (the model is ours: read here or handed over), so no weight is copied
        typed, inferred = _typed_in_place(model), True
    except Exception:  # the converter runs (and reports) it
        typed, inferred = model, False
    # before the converter adds its Casts to the model
    options, block_list, plan, holding = plan_fp32_nodes(model, options, typed if inferred else None)
    node_block = sorted(set(options.fp32_nodes) | set(options.auto_fp32_nodes))
    own = {n.name for n in all_nodes(model.graph)}  # named: match_fp32_nodes ran ensure_node_names
    kept_fp32 = {
        str(e["node"]) for e in cast(list[dict[str, Any]], plan["nodes"]) if e["precision"] == "fp32"
    }
    mark_not_float32(plan, typed)
    detached = _detach_unproduced_outputs(typed)
    _untype_float_sequences(typed)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            _fast_weight_rounding(typed, arrays, halves),
            _float_parameters(),
        ):
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(
                typed,
                keep_io_types=options.keep_io_types,
                op_block_list=block_list,
                node_block_list=node_block,
                disable_shape_infer=inferred,
            )
    except Exception as exc:
        raise InputError(f"fp16 conversion of {src} failed{_converter_failure(exc, typed)}") from None
    for held in (arrays, halves):  # the weights' float32 and float16 copies: converted now
        if held is not None:
            held.clear()
    if has_control_flow:
        _cast_captures_of_fp32_control_flow(converted.graph, set(node_block), set(block_list), float_names)
    _restore_non_tensor_io(converted, interface)
    _reattach_outputs(converted, detached)
    _import_default_opset(converted)  # before the round trips: shape inference needs it
    _remove_fp16_round_trips(converted, own)
    _drop_unread_casts(converted, own)
    _repair(converted, src)
    if opset_conversion:
        plan["opset_conversion"] = dict(opset_conversion)
    plan["source_sha256"] = source_sha256() if source_sha256 is not None else sha256_file(src)
    plan_path = out.with_name(out.name.removesuffix(".onnx") + ".plan.json")
    with written_together(out, out.with_name(out.name + ".data"), plan_path):  # never the model alone

        def check(tmp: Path, content: bytes | None) -> None:
            try:
                verify(
                    tmp,
                    feed,
                    source=src,
                    what=f"the fp16 model of {src.name}",
                    hint=FP16_HINT,
                    content=content,
                    model=converted,
                )
            except InputError as exc:
                raise InputError(_refusal_with_working_advice(str(exc), own, kept_fp32)) from None

        save_onnx(converted, out, check=check)
        atomic_write_json(plan_path, plan)
    return PrecisionArtifact(
        precision="fp16",
        path=out,
        files=[out, plan_path],
        info={
            "nodes_total": plan["nodes_total"],
            "nodes_fp32": plan["nodes_fp32"],
            "nodes_float64": plan.get("nodes_float64", 0),
            "nodes_integer": plan.get("nodes_integer", 0),
            "precision_plan": plan_path.name,
            **({"control_flow_fp32": holding} if holding else {}),
            **({"opset_conversion": dict(opset_conversion)} if opset_conversion else {}),
        },
    )
