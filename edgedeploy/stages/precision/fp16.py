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
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import onnx

from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_write_json, sha256_file
from edgedeploy.onnxio import load_onnx, save_onnx
from edgedeploy.options import Fp16Options
from edgedeploy.stages.precision import PrecisionArtifact

PLAN_SCHEMA = 1


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    nodes.extend(_all_nodes(g))
    return nodes


CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


def ensure_node_names(model: onnx.ModelProto) -> set[str]:
    """Give every node (subgraphs too) a unique name, as the converter matches nodes by name.

    The range analysis calls this on its own copy, so it picks the same names as make_fp16.
    """
    nodes = _all_nodes(model.graph)
    names = {n.name for n in nodes if n.name}
    for node in nodes:
        if not node.name:
            index = len(names)
            while f"{node.op_type}_{index}" in names:
                index += 1
            node.name = f"{node.op_type}_{index}"
            names.add(node.name)
    return names


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _subgraph_nodes_of(graph: onnx.GraphProto, blocked: set[str], blocked_ops: set[str]) -> dict[str, str]:
    """Every node inside the subgraphs of a blocked control-flow node: an fp32 If runs fp32 branches."""
    found: dict[str, str] = {}
    for node in _all_nodes(graph):
        if node.op_type in CONTROL_FLOW_OPS and (node.name in blocked or node.op_type in blocked_ops):
            for sub in _subgraphs(node):
                for inner in _all_nodes(sub):
                    found.setdefault(inner.name, f"inside fp32 {node.op_type} '{node.name}'")
    return found


def _float_tensor_names(model: onnx.ModelProto) -> set[str]:
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # over 2 GB, or a model inference cannot type: fall back to what the file declares
        inferred = model
    graph = inferred.graph
    names = {
        vi.name
        for vi in [*graph.value_info, *graph.input, *graph.output]
        if vi.type.tensor_type.elem_type in floats
    }
    names.update(i.name for i in graph.initializer if i.data_type in floats)
    return names


def _captured_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (used but not defined inside it)."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for sub in _subgraphs(node):
            used.update(_captured_names(sub))
        defined.update(o for o in node.output if o)
    used.update(o.name for o in graph.output)
    return used - defined


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in _subgraphs(node):
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
            for sub in _subgraphs(node):
                captured |= _captured_names(sub)
            for name in sorted(captured & float_names):
                cast_out = f"{name}__fp32_for_{node.name}"
                cast = onnx.helper.make_node(
                    "Cast",
                    [name],
                    [cast_out],
                    to=onnx.TensorProto.FLOAT,
                    name=f"{node.name}__capture_cast_{name}",
                )
                for sub in _subgraphs(node):
                    _rename_uses(sub, name, cast_out)
                graph.node.insert(position, cast)
                position += 1
        position += 1


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _remove_fp16_round_trips(model: onnx.ModelProto) -> None:
    """Drop Cast(fp32->fp16)->Cast(fp16->fp32) pairs between two fp32 nodes.

    The converter wraps every blocked node in its own Casts, so two fp32 nodes in a row still
    pass their tensor through fp16: a value above 65504 becomes Inf between them, which is what
    the fp32 island was for. The consumers of the round trip read the fp32 tensor directly.
    """
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {
            vi.name: vi.type.tensor_type.elem_type
            for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        }
    except Exception:
        return
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    replace_with: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if _cast_to(node) != onnx.TensorProto.FLOAT or node.output[0] in outputs:
            continue
        first = producer.get(node.input[0])
        if first is None or _cast_to(first) != onnx.TensorProto.FLOAT16:
            continue
        if types.get(first.input[0]) != onnx.TensorProto.FLOAT:
            continue
        replace_with[node.output[0]] = first.input[0]
        dropped.add(id(node))
    if not replace_with:
        return
    for old_name, new_name in replace_with.items():  # subgraph captures too (a Cast feeding an If body)
        _rename_uses(graph, old_name, new_name)
    used = {i for n in graph.node if id(n) not in dropped for i in n.input} | outputs
    for node in graph.node:
        for sub in _subgraphs(node):
            used |= _captured_names(sub)
    half = onnx.TensorProto.FLOAT16
    unused = {id(n) for n in graph.node if _cast_to(n) == half and n.output[0] not in used}
    keep = [n for n in graph.node if id(n) not in dropped and id(n) not in unused]
    del graph.node[:]
    graph.node.extend(keep)


def _sort_with_captures(graph: onnx.GraphProto) -> None:
    """Order the main graph so that every node follows the producers of what it reads, its
    subgraphs' captures included: the converter appends its boundary Casts at the end of the
    list, and a Cast feeding an If body (added above) can then come after the If. Stable
    (Kahn's algorithm keeping the given order where it is already valid)."""
    produced = {o for n in graph.node for o in n.output if o}
    needs = []
    for node in graph.node:
        reads = {i for i in node.input if i}
        for sub in _subgraphs(node):
            reads |= _captured_names(sub)
        needs.append(reads & produced)
    done: set[str] = set()
    order: list[int] = []
    remaining = list(range(len(graph.node)))
    while remaining:
        ready = [k for k in remaining if needs[k] <= done]
        if not ready:
            return  # a cycle: leave the order alone, ONNX Runtime's check below names the problem
        for k in ready:
            order.append(k)
            done.update(o for o in graph.node[k].output if o)
        taken = set(ready)
        remaining = [k for k in remaining if k not in taken]
    nodes = [graph.node[k] for k in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _check_loads(model: onnx.ModelProto, src: Path) -> None:
    """ONNX Runtime type-checks the converted graph (subgraphs included) when it loads it."""
    import onnxruntime as ort

    try:
        data = model.SerializeToString()
    except Exception:  # over 2 GB: the caller's checker run by path covers it
        return
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"fp16 conversion of {src} produced a graph ONNX Runtime refuses ({first[:300]}); "
            "keep the node it names in fp32 with --fp32-nodes, or build fp32"
        ) from None


def precision_plan(
    model: onnx.ModelProto, options: Fp16Options, blocked_ops: Sequence[str]
) -> dict[str, object]:
    """Which node runs in which precision, and why (the user's lists, analysis, converter defaults)."""
    ops = set(options.fp32_ops)
    user_nodes = set(options.fp32_nodes)
    entries = []
    for node in _all_nodes(model.graph):
        reason = None
        if node.name in user_nodes:
            reason = "--fp32-nodes"
        elif node.op_type in ops:
            reason = f"--fp32-ops {node.op_type}"
        elif node.name in options.auto_fp32_nodes:
            reason = options.auto_fp32_nodes[node.name]
        elif node.op_type in blocked_ops:
            reason = f"{node.op_type} has no fp16 kernel in ONNX Runtime"
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
        "nodes_total": len(entries),
        "nodes_fp32": fp32,
        "nodes": entries,
    }


def make_fp16(
    model_path: str | os.PathLike[str], out_path: str | os.PathLike[str], options: Fp16Options | None = None
) -> PrecisionArtifact:
    """Write the fp16 ONNX at ``out_path`` and its precision plan at ``<out>.plan.json``."""
    from onnxruntime.transformers import float16

    options = options or Fp16Options()
    src = Path(model_path)
    out = Path(out_path)
    model = load_onnx(src)
    names = ensure_node_names(model)
    unknown = [n for n in options.fp32_nodes if n not in names]
    if unknown:
        raise InputError(f"--fp32-nodes: no node named {', '.join(unknown)} in {src}")
    blocked_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(options.fp32_ops))
    inside = _subgraph_nodes_of(
        model.graph, set(options.fp32_nodes) | set(options.auto_fp32_nodes), set(blocked_ops)
    )
    options = replace(options, auto_fp32_nodes={**inside, **options.auto_fp32_nodes})
    node_block = sorted(set(options.fp32_nodes) | set(options.auto_fp32_nodes))
    has_control_flow = any(n.op_type in CONTROL_FLOW_OPS for n in _all_nodes(model.graph))
    float_names = _float_tensor_names(model) if has_control_flow else set()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=options.keep_io_types,
                op_block_list=blocked_ops,
                node_block_list=node_block,
                disable_shape_infer=False,
            )
    except Exception as exc:
        raise InputError(f"fp16 conversion of {src} failed: {type(exc).__name__}: {exc}") from None
    if has_control_flow:
        _cast_captures_of_fp32_control_flow(converted.graph, set(node_block), set(blocked_ops), float_names)
    _remove_fp16_round_trips(converted)
    if has_control_flow:  # subgraph typing is where the converter's output can be invalid
        _sort_with_captures(converted.graph)
        _check_loads(converted, src)
    plan = precision_plan(model, options, blocked_ops)
    plan["source_sha256"] = sha256_file(src)
    save_onnx(converted, out)
    plan_path = out.with_name(out.name.removesuffix(".onnx") + ".plan.json")
    atomic_write_json(plan_path, plan)
    return PrecisionArtifact(
        precision="fp16",
        path=out,
        files=[out, plan_path],
        info={
            "nodes_total": plan["nodes_total"],
            "nodes_fp32": plan["nodes_fp32"],
            "precision_plan": plan_path.name,
        },
    )
