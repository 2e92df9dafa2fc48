"""Translate TensorRT build failures into one line a Jetson user can act on.

TensorRT reports running out of memory as "Could not find any implementation for node ..." or
as skipped tactics with "insufficient memory"; users read that as a bug in their model
(docs/design.md, problem 6). Parser failures name a node index deep in the log. This module turns the
builder log and parser errors into an InputError naming the workspace, free memory and flags
to change, or the failing ONNX node and op.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from edgedeploy.errors import InputError

OOM_PATTERNS = re.compile(
    r"could not find any implementation|insufficient memory|out of memory|"
    r"cudaErrorMemoryAllocation|requested amount of gpu memory|std::bad_alloc|"
    r"failed to allocate|memory allocation fail",
    re.I,
)


@dataclass(frozen=True)
class ParserFailure:
    """One error of TensorRT's ONNX parser; node_name and op are "" for an error of the model rather
    than of a node (docs/tensorrt-facts.md, "parser errors")."""

    node_name: str
    op: str
    desc: str


def is_out_of_memory(messages: Sequence[str]) -> bool:
    return any(OOM_PATTERNS.search(m) for m in messages)


def out_of_memory_error(workspace_mb: int, free_mb: int | None, target_name: str) -> InputError:
    free = f"{free_mb} MB free on the GPU" if free_mb is not None else "free GPU memory unknown"
    return InputError(
        f"TensorRT ran out of memory building for {target_name} (workspace {workspace_mb} MB, {free}): "
        f"lower --workspace (try {max(workspace_mb // 2, 64)}), use --opt-level 2 or less, shrink the "
        "--profile max shapes, and close other GPU programs (on Jetson the GPU shares RAM with the CPU)"
    )


def parser_error(model_name: str, failures: Sequence[ParserFailure]) -> InputError:
    if not failures:
        return InputError(f"TensorRT's ONNX parser rejected {model_name} without saying why")
    first = failures[0]
    more = f" (and {len(failures) - 1} more error(s))" if len(failures) > 1 else ""
    if not first.node_name and not first.op:  # an error of the model (an input's type), of no node
        return InputError(f"TensorRT cannot parse {model_name}: {first.desc}{more}")
    node = first.node_name or "?"
    return InputError(
        f"TensorRT cannot parse {model_name}: node '{node}' (op {first.op or '?'}): {first.desc}{more}"
    )


def build_failure(
    messages: Sequence[str], *, workspace_mb: int, free_mb: int | None, target_name: str, detail: str = ""
) -> InputError:
    """The error for a build that returned no engine, from the builder's error log."""
    if is_out_of_memory(messages):
        return out_of_memory_error(workspace_mb, free_mb, target_name)
    last = next((m.strip() for m in reversed(messages) if m.strip()), detail.strip() or "no error was logged")
    last = last.splitlines()[0][:300]
    return InputError(f"TensorRT failed to build the engine: {last}")
