"""Small graph repairs every producer of an ONNX artifact needs: node order, IR version, ORT messages.

- :func:`toposort`: a stable topological order (Kahn), counting the outer names a node's subgraphs
  read; ONNX requires it and graph rewriters (ONNX Runtime's fp16 converter, our Q/DQ writer)
  append nodes at the end.
- :func:`upgrade_ir`: IR version 3 requires every initializer to be a graph input, so a model of
  that age cannot take a new initializer (a quantized weight, an fp16 constant) without also
  growing an input; it is lifted to the IR version its opsets need (at least 4), with initializers
  no longer listed as inputs (they become constants, which is what a deployed model wants).
- :func:`infer_shapes_light`: ONNX shape inference without the bulk of the weights, whose values
  it never reads (it serializes the whole model twice, which dominates on a 50-100 MB model);
  :func:`without_weight_bytes` makes such a copy for other whole-model passes (the opset converter).
- :func:`unshadow_subgraph_names`: a name an If/Loop/Scan body defines may repeat an outer one, but
  onnxslim, onnx's type inference and ONNX Runtime's fp16 converter take names as model-wide; a
  body weight the outer name hides (runtimes read the outer value) is dropped, the rest renamed.
- :func:`ort_error`: ONNX Runtime's messages carry its source paths and status prefixes; a
  one-line refusal keeps the node and the reason.
- :func:`ort_crashing_optimizers`: the ONNX Runtime graph optimizers that kill the process while
  loading a given model (a segfault is no error a caller can catch), to be switched off for it;
  :func:`nchwc_crash_transposes`: the nodes that crash it when float16, which the fp16 conversion
  keeps in float32 so that the artifact loads at ONNX Runtime's defaults.

Hand-written: onnx has no stable topological sort and no IR upgrade; these are a few lines each.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx

MIN_IR_FOR_LOOSE_INITIALIZERS = 4
# the float element types: what activations (observers.float_tensor_names) and scored tensors are
FLOAT_ELEMS = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
)


def opset_of(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain that ``model`` imports (0 when it imports none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph in it (If's branches, Loop's and Scan's bodies), outer first."""
    found = [graph]
    for node in graph.node:
        for sub in subgraphs(node):
            found.extend(all_graphs(sub))
    return found


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node of ``graph`` and, after each, those of its subgraphs (If/Loop/Scan bodies), in order."""
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for sub in subgraphs(node):
            nodes.extend(all_nodes(sub))
    return nodes


def unique_node_names(model: onnx.ModelProto, renamed: dict[str, str] | None = None) -> set[str]:
    """Rename the nodes (subgraphs too) whose name an earlier node bears, and return every name;
    ``renamed`` (when given) gets each new name -> the name the model gave that node.

    ONNX makes node names unique per graph only (a body may reuse a main-graph name), and a model
    naming two nodes of one graph alike passes its checker though ONNX Runtime refuses it; the
    conversions match nodes by name. Deterministic, and a no-op on a model whose names are all
    unique: main-graph nodes come first, then each one's body nodes in graph order; a node whose
    name an earlier one bears becomes ``NAME#2``, ``NAME#3``... (the first number no node bears).
    Unnamed nodes stay unnamed. A name a user gives (``--exclude-nodes``, ``--fp32-nodes``) is one
    the model bears: it selects every node that bore it (:func:`named_in_model`)."""
    names = {n.name for n in all_nodes(model.graph) if n.name}
    seen: set[str] = set()
    bodies = (inner for node in model.graph.node for sub in subgraphs(node) for inner in all_nodes(sub))
    for node in [*model.graph.node, *bodies]:
        if node.name in seen:
            number = 2
            while f"{node.name}#{number}" in names:
                number += 1
            if renamed is not None:
                renamed[f"{node.name}#{number}"] = node.name
            node.name = f"{node.name}#{number}"
            names.add(node.name)
        if node.name:
            seen.add(node.name)
    return names


def named_in_model(
    labels: Iterable[str], renamed: Mapping[str, str], matches: Callable[[str], object]
) -> list[str]:
    """The ``labels`` (node names in our copy, in order) a user's name or pattern selects: those
    ``matches`` takes, and those :func:`unique_node_names` renamed from a name it takes (the user
    wrote the name the model gives them all: ``layer`` selects ``layer`` and ``layer#2``)."""
    return [label for label in labels if matches(label) or (label in renamed and matches(renamed[label]))]


def constant_derived(graph: onnx.GraphProto) -> set[str]:
    """Names ``graph``'s nodes compute from constants only (initializers, Constant nodes and what
    is computed from them alone, in node order): weights reshaped or transposed in the graph, not
    activations. ocr-cls's Conv biases reach their Add through ``Reshape(Constant)``: taken for
    activations, they got Q/DQ in the model while the TensorRT cache, which lists activations
    only, had none for them."""
    constant = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(not i or i in constant for i in node.input)):
            constant.update(o for o in node.output if o)
    return constant


# ops whose output values follow from their inputs' shapes (or their attributes) alone
SHAPE_VALUED_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "EyeLike"})


def data_independent(graph: onnx.GraphProto) -> set[str]:
    """Names whose values no data changes: :func:`constant_derived`'s, what Shape, Size,
    ConstantOfShape and EyeLike compute (from shapes, not values), and what is computed from those
    and constants alone, in node order. torch.onnx's zero initial state of an LSTM,
    ``ConstantOfShape(Concat(1, Shape(x)[0], hidden))``, is one: zero whatever the data, and
    constant-folded by TensorRT."""
    fixed = constant_derived(graph)
    for node in graph.node:
        if node.op_type in SHAPE_VALUED_OPS or (node.input and all(not i or i in fixed for i in node.input)):
            fixed.update(o for o in node.output if o)
    return fixed


def captured_names(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes: used but not defined inside it."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for sub in subgraphs(node):
            used.update(captured_names(sub))
        defined.update(o for o in node.output if o)
    used.update(o.name for o in graph.output)
    return used - defined


def _defined_in(graph: onnx.GraphProto) -> list[str]:
    """The value names ``graph`` itself defines: its inputs, weights and node outputs (not its bodies')."""
    names = [i.name for i in graph.input] + [i.name for i in graph.initializer]
    names += [s.values.name for s in graph.sparse_initializer]
    names += [o for node in graph.node for o in node.output if o]
    return names


def _named_anywhere(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for g in all_graphs(graph):
        names.update(_defined_in(g))
        names.update(v.name for v in [*g.output, *g.value_info])
        names.update(i for node in g.node for i in node.input)
    return names


def _rename_in_scope(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Rename ``graph``'s names by ``mapping`` where it defines or uses them, and in its bodies where
    they read them from ``graph`` (a body that defines such a name again keeps its own)."""
    if not mapping:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = mapping.get(sparse.values.name, sparse.values.name)
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
        for sub in subgraphs(node):
            own = set(_defined_in(sub))
            _rename_in_scope(sub, {old: new for old, new in mapping.items() if old not in own})


@dataclass
class Unshadowed:
    """What :func:`unshadow_subgraph_names` did: body names renamed (old, new), and body weights
    dropped because an enclosing graph defines their name (body graph, weight name, whether the
    enclosing definition is a weight of the same values)."""

    renamed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    dropped: list[tuple[str, str, bool]] = dataclasses.field(default_factory=list)


def unshadow_subgraph_names(model: onnx.ModelProto) -> Unshadowed:
    """Make every name an If/Loop/Scan body defines unique in the model, keeping what it computes.

    A name a body defines may repeat one the main graph, an enclosing body or an earlier body
    defines, but tools take names as model-wide: onnxslim gives a body's folded constants the main
    graph's names (openwakeword's hey_jarvis: ``onnx::Pow_25`` in both), then ONNX Runtime's fp16
    converter keys weights by name (an AssertionError) or makes the outer one float16 and leaves the
    body's float32, which onnx's type inference takes for one tensor ("Inferred elem type differs").

    - A body's weight under a name an enclosing graph defines is never read: ONNX Runtime 1.32 and
      onnx's reference evaluator both give the body the enclosing value, whether that is a weight, a
      graph input or a node output, and whatever the body's own values (docs/design.md, "Body
      names that repeat an outer one"). It is dropped, so the body reads the outer value as it did.
    - Any other repeated name (a body's input, a node output, a weight repeating a sibling body's)
      is renamed in the body and the nested bodies reading it, ``NAME__2``, ``NAME__3``... (the first
      no name in the model bears).

    Main-graph names, the model's interface, never change. A no-op on a model whose names are
    unique."""
    taken = _named_anywhere(model.graph)
    defined = set(_defined_in(model.graph))
    outer_weights = {w.name: w for w in model.graph.initializer}
    done = Unshadowed()

    def fresh(name: str) -> str:
        number = 2
        while f"{name}__{number}" in taken:
            number += 1
        taken.add(f"{name}__{number}")
        return f"{name}__{number}"

    def drop_hidden(graph: onnx.GraphProto, visible: set[str], weights: dict[str, onnx.TensorProto]) -> None:
        for node in graph.node:
            for sub in subgraphs(node):
                for weight in [w for w in sub.initializer if w.name in visible]:
                    outer = weights.get(weight.name)
                    same = outer is not None and outer.SerializeToString() == weight.SerializeToString()
                    done.dropped.append((sub.name, weight.name, same))
                    sub.initializer.remove(weight)
                inner = {**weights, **{w.name: w for w in sub.initializer}}
                drop_hidden(sub, visible | set(_defined_in(sub)), inner)

    def rename(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            for sub in subgraphs(node):
                clashes = [name for name in dict.fromkeys(_defined_in(sub)) if name in defined]
                mapping = {name: fresh(name) for name in clashes}
                _rename_in_scope(sub, mapping)
                done.renamed.extend(mapping.items())
                defined.update(_defined_in(sub))
                rename(sub)

    drop_hidden(model.graph, set(defined), outer_weights)  # first, on the names as the file has them
    rename(model.graph)
    return done


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its nested subgraphs reads."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                names |= names_read(sub)
    return names


def names_used(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name of ``graph`` something uses: :func:`names_read`, and the outputs of it and of
    its subgraphs."""
    return names_read(graph) | {o.name for sub in all_graphs(graph) for o in sub.output}


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every name a node needs before it runs: its inputs and what its subgraphs capture."""
    reads = [i for i in node.input if i]
    for sub in subgraphs(node):
        reads.extend(sorted(captured_names(sub)))
    return reads


class CycleError(ValueError):
    """The nodes cannot be ordered: some node reads (directly or not) its own output."""


def toposort(nodes: Sequence[onnx.NodeProto], available: Iterable[str]) -> list[onnx.NodeProto]:
    """Kahn's algorithm, stable: keeps the given order wherever it is already valid.

    ``available`` are the names defined before any node (graph inputs, initializers, outer scope).
    A name no node produces counts as available (the checker reports it, not the sort).
    """
    reads = [node_reads(n) for n in nodes]
    produced_by = {out: k for k, n in enumerate(nodes) for out in n.output if out}
    ready = set(available) | {""}
    remaining = list(range(len(nodes)))
    result: list[onnx.NodeProto] = []
    while remaining:
        progress = []
        for k in remaining:
            if all(n in ready or n not in produced_by for n in reads[k]):
                result.append(nodes[k])
                ready.update(nodes[k].output)
                progress.append(k)
        if not progress:
            stuck = nodes[remaining[0]]
            raise CycleError(
                f"node '{stuck.name or stuck.op_type}' ({stuck.op_type}) depends on its own output"
            )
        done = set(progress)
        remaining = [k for k in remaining if k not in done]
    return result


def sort_graph(graph: onnx.GraphProto, outer: Iterable[str] = ()) -> None:
    """Put ``graph``'s nodes (and every subgraph's) in topological order, in place."""
    available = set(outer) | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    ordered = toposort(list(graph.node), available)
    scope = set(available) | {o for n in graph.node for o in n.output}
    for node in ordered:
        for sub in subgraphs(node):
            sort_graph(sub, scope)
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def min_ir_version(model: onnx.ModelProto) -> int:
    """The IR version ``model``'s opsets need (onnx.helper's table); for an opset onnx does not
    know, the minimum that allows initializers outside the graph inputs."""
    try:
        return int(onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))
    except Exception:
        return MIN_IR_FOR_LOOSE_INITIALIZERS


def upgrade_ir(model: onnx.ModelProto) -> bool:
    """Lift an IR version 3 model so initializers need not be graph inputs; True when changed."""
    if model.ir_version >= MIN_IR_FOR_LOOSE_INITIALIZERS:
        return False
    model.ir_version = max(MIN_IR_FOR_LOOSE_INITIALIZERS, min_ir_version(model))
    drop_initializer_inputs(model.graph)
    return True


def drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    """Stop listing initializers as graph inputs (allowed from IR 4): they become plain constants."""
    inits = {i.name for i in graph.initializer}
    keep = [vi for vi in graph.input if vi.name not in inits]
    if len(keep) != len(graph.input):
        del graph.input[:]
        graph.input.extend(keep)


LIGHT_WEIGHT_ELEMENTS = 1024  # float initializers larger than this are typed inputs for shape inference
_FLOATS = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
)


def copy_fields(
    source: onnx.ModelProto | onnx.GraphProto | onnx.TensorProto,
    target: onnx.ModelProto | onnx.GraphProto | onnx.TensorProto,
    skip: set[str],
) -> None:
    """Copy every set field of the protobuf message ``source`` into ``target`` (appending to
    repeated fields), except the fields named in ``skip``, which are neither read nor copied (by
    the descriptor, not ``ListFields``, which would copy a skipped bytes field such as a weight's
    ``raw_data`` out of the message)."""
    for field in source.DESCRIPTOR.fields:
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(getattr(source, field.name))
        elif source.HasField(field.name):
            if field.message_type is not None:
                getattr(target, field.name).CopyFrom(getattr(source, field.name))
            else:
                setattr(target, field.name, getattr(source, field.name))


def copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose main graph has no initializers, made field by field so that the
    weights are never copied (a CopyFrom then a delete copies every byte of them)."""
    copy = onnx.ModelProto()
    copy_fields(model, copy, {"graph"})
    copy_fields(model.graph, copy.graph, {"initializer"})
    return copy


def _large_float(init: onnx.TensorProto) -> bool:
    elements = 1
    for d in init.dims:
        elements *= d
    return init.data_type in _FLOATS and elements > LIGHT_WEIGHT_ELEMENTS


def without_weight_bytes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy of ``model`` whose large float initializers of the main graph (more than
    ``LIGHT_WEIGHT_ELEMENTS`` values, stored as ``raw_data``) keep their name, type and
    dimensions but not their bytes, and those initializers of ``model`` by name (not copied)."""
    light = copy_without_initializers(model)
    held: dict[str, onnx.TensorProto] = {}
    for init in model.graph.initializer:
        if _large_float(init) and init.HasField("raw_data"):
            copy_fields(init, light.graph.initializer.add(), {"raw_data"})  # a stub: no bytes
            held[init.name] = init
        else:
            light.graph.initializer.append(init)
    return light, held


def infer_shapes_light(model: onnx.ModelProto, *, weights: bool = False) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model)`` on a copy whose large float initializers of the
    main graph are graph inputs of the same type and shape instead: inference reads only the values
    of shape-like constants (int64 shapes, a handful of Resize scales), never of a weight, so the
    types and shapes it infers are the same. Without ``weights`` the result lacks those
    initializers (read them from ``model``); with it, the result has ``model``'s initializers and
    inputs back, as ``infer_shapes`` returns it. Raises what ``infer_shapes`` raises."""
    light = copy_without_initializers(model)  # the weights are never copied
    graph = light.graph
    declared = {vi.name for vi in graph.input}
    keep: list[onnx.TensorProto] = []
    typed: list[onnx.ValueInfoProto] = []
    for init in model.graph.initializer:
        if _large_float(init):
            if init.name not in declared:
                typed.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    graph.initializer.extend(keep)
    if typed or len(keep) != len(model.graph.initializer):
        graph.input.extend(typed)
        if light.ir_version < MIN_IR_FOR_LOOSE_INITIALIZERS:
            light.ir_version = MIN_IR_FOR_LOOSE_INITIALIZERS
    inferred = onnx.shape_inference.infer_shapes(light)
    if weights:
        inferred.ir_version = model.ir_version
        del inferred.graph.initializer[:]
        inferred.graph.initializer.extend(model.graph.initializer)
        del inferred.graph.input[:]
        inferred.graph.input.extend(model.graph.input)
    return inferred


_ORT_NOISE = [
    re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*"),
    re.compile(r"/onnxruntime_src/\S+:\d+\s+(\S+\s+)?\S+::\S+\([^)]*\)\s*"),
    re.compile(r"Non-zero status code returned while running "),
    re.compile(r"Load model from \S+ failed:"),
    re.compile(r"Status Message:\s*"),
]


def ort_error(exc: BaseException, limit: int = 200) -> str:
    """ONNX Runtime's error as one short line: the op, node and reason, without source paths."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for pattern in _ORT_NOISE:
        text = pattern.sub("", text)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


NCHWC_TRANSFORMER = "NchwcTransformer"


def _moves_axis_1_first(node: onnx.NodeProto) -> bool:
    """A Transpose's perm is 3-D and starts with axis 1 (see :func:`ort_crashing_optimizers`)."""
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
    return len(perm) == 3 and perm[0] == 1


def nchwc_crash_transposes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Transposes of ``model`` that ONNX Runtime's ``NchwcTransformer`` dies on when they compute
    in float16 (see :func:`ort_crashing_optimizers`): 3-D, axis 1 brought to the front, feeding a
    MatMul whose other input is a constant, either through Casts. Whatever their type here: the
    fp16 conversion keeps them in float32 (edgedeploy/stages/precision/fp16.py, fp32_only_nodes).
    """
    nodes = all_nodes(model.graph)
    constant = {t.name for t in model.graph.initializer} | {
        o for n in nodes if n.op_type == "Constant" for o in n.output
    }
    origin = {o: n for n in nodes if n.op_type == "Transpose" and _moves_axis_1_first(n) for o in n.output}
    for node in nodes:  # through Casts (ONNX Runtime's optimized graphs hold them explicitly)
        if node.op_type == "Cast" and node.input and node.input[0] in constant:
            constant.update(node.output)
        elif node.op_type == "Cast" and node.input and node.input[0] in origin:
            origin.update(dict.fromkeys(node.output, origin[node.input[0]]))
    found: dict[int, onnx.NodeProto] = {}
    for node in nodes:
        if node.op_type == "MatMul" and len(node.input) == 2:
            a, b = node.input
            for x, other in ((a, b), (b, a)):
                if x in origin and other in constant:
                    found[id(origin[x])] = origin[x]
    return list(found.values())


def ort_crashing_optimizers(model: onnx.ModelProto) -> list[str]:
    """ONNX Runtime's graph optimizers to switch off when loading ``model`` on the CPU.

    ``NchwcTransformer`` (level ORT_ENABLE_ALL, x86-64 CPUs with AVX2 or AVX-512) dies of SIGSEGV
    on a float16 model where a 3-D Transpose that brings axis 1 to the front (perm [1, 0, 2] or
    [1, 2, 0]: [B, T, C] to [T, B, C], a GRU's or CRNN's head) feeds a MatMul with constant weights;
    see docs/design.md, "ONNX Runtime crashes on some fp16 graphs", for the perms and ranks
    measured. Matched on any float16 in the model and that Transpose (:func:`nchwc_crash_transposes`)
    reading a tensor that is not float32: the same Transpose between Casts to float32 and back
    (how the fp16 conversion keeps it) loads. Switching it off costs the NCHWc layout of the
    model's float32 convolutions (1.2-1.4x slower on PP-OCR's and ddddocr's fp16 models), so it is
    not switched off for every fp16 model.
    """
    nodes = all_nodes(model.graph)
    float16 = onnx.TensorProto.FLOAT16
    has_half = any(t.data_type == float16 for t in model.graph.initializer) or any(
        (n.op_type == "Cast" and any(a.name == "to" and a.i == float16 for a in n.attribute))
        or (
            n.op_type == "Constant"
            and any(a.t.data_type == float16 for a in n.attribute if a.type == a.TENSOR)
        )
        for n in nodes
    )
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    has_half = has_half or any(v.type.tensor_type.elem_type == float16 for v in values)
    if not has_half:
        return []
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in nodes:  # a Cast says its output type, whatever a stale declaration says
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to is not None:
            types.update(dict.fromkeys(node.output, to))
    float32 = onnx.TensorProto.FLOAT
    if any(t.input and types.get(t.input[0]) != float32 for t in nchwc_crash_transposes(model)):
        return [NCHWC_TRANSFORMER]
    return []
