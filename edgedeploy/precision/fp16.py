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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_write_json, sha256_file
from edgedeploy.onnxio import load_onnx, save_onnx
from edgedeploy.precision import PrecisionArtifact

PLAN_SCHEMA = 1


@dataclass
class Fp16Options:
    keep_io_types: bool = True
    fp32_ops: Sequence[str] = ()
    fp32_nodes: Sequence[str] = ()
    # Nodes kept in fp32 by an analysis (node name -> reason); the user's lists add to this.
    auto_fp32_nodes: Mapping[str, str] = field(default_factory=dict)


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


def precision_plan(model: onnx.ModelProto, options: Fp16Options, blocked_ops: Sequence[str]) -> dict[str, object]:
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
        entries.append({"node": node.name, "op": node.op_type, "precision": "fp32" if reason else "fp16",
                        **({"reason": reason} if reason else {})})
    fp32 = sum(1 for e in entries if e["precision"] == "fp32")
    return {"schema_version": PLAN_SCHEMA, "precision": "fp16", "keep_io_types": options.keep_io_types,
            "nodes_total": len(entries), "nodes_fp32": fp32, "nodes": entries}


def make_fp16(model_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
              options: Fp16Options | None = None) -> PrecisionArtifact:
    """Write the fp16 ONNX at ``out_path`` and its precision plan at ``<out>.plan.json``."""
    from onnxruntime.transformers import float16

    options = options or Fp16Options()
    src = Path(model_path)
    out = Path(out_path)
    model = load_onnx(src)
    names = {n.name for n in _all_nodes(model.graph)}
    unknown = [n for n in options.fp32_nodes if n not in names]
    if unknown:
        raise InputError(f"--fp32-nodes: no node named {', '.join(unknown)} in {src}")
    for node in model.graph.node:  # the converter matches nodes by name: give every node one
        if not node.name:
            node.name = f"{node.op_type}_{len(names)}"
            names.add(node.name)
    blocked_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(options.fp32_ops))
    node_block = sorted(set(options.fp32_nodes) | set(options.auto_fp32_nodes))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(
                model, keep_io_types=options.keep_io_types, op_block_list=blocked_ops,
                node_block_list=node_block, disable_shape_infer=False,
            )
    except Exception as exc:
        raise InputError(f"fp16 conversion of {src} failed: {type(exc).__name__}: {exc}") from None
    plan = precision_plan(model, options, blocked_ops)
    plan["source_sha256"] = sha256_file(src)
    save_onnx(converted, out)
    plan_path = out.with_name(out.name.removesuffix(".onnx") + ".plan.json")
    atomic_write_json(plan_path, plan)
    return PrecisionArtifact(precision="fp16", path=out, files=[out, plan_path],
                             info={"nodes_total": plan["nodes_total"], "nodes_fp32": plan["nodes_fp32"],
                                   "precision_plan": plan_path.name})
