"""Model input and output descriptions read from an ONNX file, without loading its weights."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import numpy as np
import onnx
from onnx import helper

from calibration.errors import CalibrationError, DataError
from calibration.graphs import all_graphs, all_nodes

Dim = int | str | None


def type_name(dtype: str) -> str:
    """An element type as listings and JSON give it: NumPy's name (``float32``, ``int64``), but
    ``string`` for text, which NumPy holds as ``object`` (ONNX's and ONNX Runtime's tensor(string))."""
    return "string" if dtype == "object" else dtype


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape (int, or str/None for a dynamic dim) and dtype.

    ``rank_known`` is False when the model gives no shape at all (not even a rank): ``shape`` is
    then empty, any rank is accepted, and random data needs the shape given (``--input``)."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str  # NumPy's name, "object" for text (JSON and listings say :func:`type_name`)
    rank_known: bool = True
    # for a value that is not a tensor (a sequence, map or optional), its type, e.g.
    # "optional(tensor(float))" (see :func:`type_text`); None for a tensor
    kind: str | None = None
    # for an integer input used as the indices of Gather: the length of the smallest table it
    # indexes on the gathered axis (:func:`gather_index_bounds`), below which random data stays
    index_bound: int | None = field(default=None, compare=False)

    @property
    def rank(self) -> int | None:
        """The number of dims, None when the model does not say."""
        return len(self.shape) if self.rank_known else None

    @property
    def np_dtype(self) -> np.dtype:
        try:
            return np.dtype(self.dtype)
        except TypeError:  # bfloat16, float8, int4...: numpy knows them through ml_dtypes (onnx's)
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, self.dtype))

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)

    def concrete_shape(
        self,
        batch: int = 1,
        overrides: dict[str, tuple[int, ...]] | None = None,
        named: Mapping[str, int] | None = None,
    ) -> tuple[int, ...]:
        """A shape to feed: overrides first, then the batch for a dynamic first dim, a named dim's
        length where another input's given shape fixed it (``named``), then 1."""
        if overrides and self.name in overrides:
            return tuple(overrides[self.name])
        if not self.rank_known:
            raise DataError(
                f"input '{self.name}' has no shape in the model (not even a rank): give its shape, "
                f"e.g. --input {self.name}:1x3x224x224"
            )
        dims = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int):
                dims.append(d)  # a fixed 0 too: ONNX Runtime wants exactly that length
            elif i > 0 and isinstance(d, str) and named and d in named:
                dims.append(named[d])
            else:
                dims.append(batch if i == 0 else 1)
        return tuple(dims)

    def as_json(self) -> dict[str, Any]:
        """This value as JSON lists it (export's --json, a bundle's manifest: edgedeploy's
        to_jsonable writes a spec so): a tensor's shape, dtype (:func:`type_name`) and rank_known,
        kind null; a sequence, map or optional has no tensor shape or dtype: they are null (they read
        ``[]`` and ``float32``, a 0-d float tensor), rank_known too, and kind gives its ONNX type."""
        tensor = self.kind is None
        return {
            "name": self.name,
            "shape": list(self.shape) if tensor else None,
            "dtype": type_name(self.dtype) if tensor else None,
            "rank_known": self.rank_known if tensor else None,
            "kind": self.kind,
        }

    def describe(self) -> str:
        """``name[dims]:dtype`` for a tensor; ``name:type`` in ONNX's words for a sequence, map or
        optional (ZipMap's ``z:seq(map(int64,tensor(float)))``), whose shape and dtype say nothing."""
        if self.kind is not None:
            return f"{self.name}:{self.kind}"
        return f"{self.name}{shape_text(self.shape, self.rank_known)}:{type_name(self.dtype)}"


def shape_text(
    shape: Sequence[Dim], rank_known: bool = True, sep: str = ",", name: Callable[[str], str] = str
) -> str:
    """A tensor's shape as listings show it: ``[batch,3,?]`` (a dim with neither size nor name is
    ``?``, a named one passed through ``name``: an escape), and ``[...]`` for a tensor of unknown
    rank (ONNX gives it no shape), which is no 0-d ``[]``. ``sep`` goes between the dims."""
    if not rank_known:
        return "[...]"
    return "[" + sep.join(str(d) if isinstance(d, int) else name(d or "?") for d in shape) + "]"


def is_named(dim: Dim) -> TypeGuard[str]:
    """A dim name that stands for one size across the model, as ONNX's dim_param does. Not "?",
    which some exporters write for every unknown dim (PaddleOCR's classifier: [-1, 3, ?, ?])."""
    return isinstance(dim, str) and dim not in ("", "?")


def batch_names(inputs: Sequence[TensorSpec]) -> set[str]:
    """The names the model gives its inputs' dim 0 (silero-vad's ``batch``, which its
    ``state[2, batch, 128]`` carries on axis 1): the batch, on whichever axis an input has it.

    Where no input names its dim 0 and their fixed dim 0s differ, so that dim 0 is no batch they
    share (a time-first GRU's ``x[12, N, 8]`` and ``h0[1, N, 16]``), the one name every input
    carries is the batch. Inputs that agree on a fixed dim 0 (``ids[1, seq]``, ``mask[1, seq]``)
    are a fixed batch, and the name they share is not it."""
    names = {s.shape[0] for s in inputs if s.shape and is_named(s.shape[0])}
    ranked = [s for s in inputs if s.shape]
    if names or len(ranked) < 2 or len({s.shape[0] for s in ranked}) < 2:
        return names
    shared = set.intersection(*({d for d in s.shape if is_named(d)} for s in ranked))
    return shared if len(shared) == 1 else set()


def batch_axes(shape: Sequence[Dim], names: set[str]) -> list[int]:
    """The axes of an input of ``shape`` that carry the batch: dim 0 where the model leaves it
    dynamic, and every axis named as an input's batch (``names``, :func:`batch_names`)."""
    return [
        axis for axis, dim in enumerate(shape) if (axis == 0 and not isinstance(dim, int)) or dim in names
    ]


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    ttype = vi.type.tensor_type
    dims: list[Dim] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:  # 0 is a fixed empty dim, as ONNX Runtime reads it
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    np_type = helper.tensor_dtype_to_np_dtype(ttype.elem_type) if ttype.elem_type else np.dtype("float32")
    rank_known = not vi.type.HasField("tensor_type") or ttype.HasField("shape")  # sequences: as before
    kind = None if vi.type.HasField("tensor_type") else type_text(vi.type)
    return TensorSpec(vi.name, tuple(dims), np.dtype(np_type).name, rank_known=rank_known, kind=kind)


def type_text(tp: onnx.TypeProto) -> str:
    """An ONNX value type in ONNX Runtime's words: ``tensor(float)``, ``seq(map(int64,tensor(float)))``,
    ``optional(tensor(float))`` (onnx.helper.printable_type says "Unknown type" for all but tensors)."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        inner = getattr(tp, which)
        elem = helper.tensor_dtype_to_string(inner.elem_type).removeprefix("TensorProto.").lower()
        return f"{which.removesuffix('_type')}({elem})"
    if which == "sequence_type":
        return f"seq({type_text(tp.sequence_type.elem_type)})"
    if which == "optional_type":
        return f"optional({type_text(tp.optional_type.elem_type)})"
    if which == "map_type":
        key = helper.tensor_dtype_to_string(tp.map_type.key_type).removeprefix("TensorProto.").lower()
        return f"map({key},{type_text(tp.map_type.value_type)})"
    return which or "an untyped value"


def not_tensors(specs: Sequence[TensorSpec]) -> list[str]:
    """The values of ``specs`` that are not tensors, as ``name (type)``."""
    return [f"'{s.name}' ({s.kind})" for s in specs if s.kind is not None]


def refuse_non_tensor_inputs(inputs: Sequence[TensorSpec]) -> None:
    """Every data source feeds tensors: a model that takes a sequence, map or optional input is
    refused in one line (ONNX Runtime's own refusal of the tensor fed instead, "Invalid rank for
    input", and Polygraphy's crash on its type name did not say why)."""
    odd = not_tensors(inputs)
    if odd:
        raise DataError(
            f"the model takes input {', '.join(odd)}, which is not a tensor: edgedeploy feeds tensor "
            "inputs only (export the model with plain tensor inputs)"
        )


def no_outputs(model: onnx.ModelProto, path: str | os.PathLike[str]) -> str | None:
    """The one-line refusal of a model whose graph lists no outputs (onnx's checker passes it; ONNX
    Runtime loads it and then refuses every run: "At least one output should be requested"), else
    None. Every command that loads a model refuses it there, before any work."""
    if model.graph.output:
        return None
    return f"cannot use ONNX model {path}: the model has no outputs (its graph lists none), nothing to run"


def load_model_header(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX model without its external data; corrupt files and models without outputs
    (:func:`no_outputs`) raise CalibrationError."""
    if not os.path.isfile(path):
        raise CalibrationError(f"model file not found: {path}")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... on corrupt protobufs
        raise CalibrationError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from None
    if (refusal := no_outputs(model, path)) is not None:
        raise CalibrationError(refusal)
    return model


# ops whose output holds the values of their first input (an index passes them unchanged)
VALUE_KEEPING_OPS = frozenset(
    {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Transpose"}
)
# ops whose output has the shape of their first input (a Gather table's length passes them)
SHAPE_KEEPING_OPS = frozenset({"Cast", "Identity", "DequantizeLinear", "QuantizeLinear"})


def gather_index_bounds(graph: onnx.GraphProto) -> dict[str, int]:
    """For each graph input used as the indices of a Gather (directly or through
    :data:`VALUE_KEEPING_OPS`: a Cast to int32, an Unsqueeze), the length on the gathered axis of
    the smallest table it indexes, where that length is known (an initializer's or Constant's
    dims, a declared shape, through :data:`SHAPE_KEEPING_OPS`). Random data draws such an input
    below it: BERT's token_type_ids index a 2-row table, and 0-9 failed the model."""
    dims: dict[str, list[int]] = {}
    for sub in all_graphs(graph):
        for vi in [*sub.input, *sub.output, *sub.value_info]:
            shape = vi.type.tensor_type.shape.dim
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in shape]
        for init in sub.initializer:
            dims[init.name] = list(init.dims)
    nodes = all_nodes(graph)
    producers = {out: node for node in nodes for out in node.output}
    for node in nodes:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            dims[node.output[0]] = list(node.attribute[0].t.dims)

    def table_dims(name: str) -> list[int] | None:
        for _ in range(len(nodes) + 1):  # a chain of shape-keeping ops back to a known shape
            if name in dims:
                return dims[name]
            node = producers.get(name)
            if node is None or node.op_type not in SHAPE_KEEPING_OPS or not node.input:
                return None
            name = node.input[0]
        return None

    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for index, name in enumerate(node.input):
            if index == 0 or node.op_type == "Gather":
                readers.setdefault(name, []).append(node)
    bounds: dict[str, int] = {}
    for start in (i.name for i in graph.input):
        seen, names = {start}, [start]
        while names:
            name = names.pop()
            for node in readers.get(name, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
                    table = table_dims(node.input[0])
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    axis = axis + len(table) if table is not None and axis < 0 else axis
                    if table is not None and 0 <= axis < len(table) and table[axis] > 0:
                        bounds[start] = min(bounds.get(start, table[axis]), table[axis])
                elif node.op_type in VALUE_KEEPING_OPS and node.input[0] == name:
                    names.extend(out for out in node.output[:1] if out not in seen)
                    seen.update(node.output[:1])
    return bounds


def graph_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's real inputs (initializers excluded) and outputs; an integer input used as
    Gather indices carries the length of what it indexes (:func:`gather_index_bounds`)."""
    inits = {i.name for i in model.graph.initializer}
    bounds = gather_index_bounds(model.graph)
    inputs = [_value_info_spec(v) for v in model.graph.input if v.name not in inits]
    inputs = [
        replace(s, index_bound=bounds[s.name]) if s.name in bounds and s.np_dtype.kind in "iu" else s
        for s in inputs
    ]
    outputs = [_value_info_spec(v) for v in model.graph.output]
    return inputs, outputs


def model_io(path: str | os.PathLike[str]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return graph_io(load_model_header(path))
