"""The export stage: a PyTorch model (or an existing ONNX file) -> a checked, simplified fp32 ONNX.

PyTorch models are exported with torch.onnx.export's dynamo exporter, falling back to the
TorchScript exporter with a notice when it fails. Every result then goes through onnx's
checker, shape inference and onnxslim, and is saved atomically (external data over 2 GB).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.artifacts import output_difference
from calibration.atomic import temp_prefix
from calibration.errors import raised
from calibration.graphs import all_graphs, opset_of, unshadow_subgraph_names
from calibration.modelinfo import TensorSpec
from edgedeploy.errors import EdgeDeployError, InputError, first_line
from edgedeploy.fileio import atomic_path, scratch_beside, sha256_file
from edgedeploy.interrupts import deferred
from edgedeploy.onnxio import check_model, io_specs, is_onnx_path, load_onnx, save_onnx, verify
from edgedeploy.ui import quiet_descriptors

DEFAULT_OPSET = 18
MIN_OPSET = 13  # calibration.qdq.MIN_OPSET: what ONNX files are converted to
TORCHSCRIPT_MAX_OPSET = 20  # the newest opset torch.onnx's TorchScript exporter writes
Notify = Callable[[str], None]


@dataclass(frozen=True)
class InputShape:
    """``--input NAME:SHAPE[:DTYPE]``: an example input for export or a shape for random data."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def parse(cls, text: str) -> InputShape:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise InputError(f"bad --input '{text}': expected NAME:SHAPE[:DTYPE], e.g. images:1x3x224x224")
        try:
            dims = tuple(int(d) for d in parts[1].replace(",", "x").split("x") if d)
        except ValueError:
            raise InputError(f"bad --input '{text}': dims must be integers, e.g. 1x3x224x224") from None
        if not dims or any(d < 1 for d in dims):
            raise InputError(f"bad --input '{text}': dims must be positive integers")
        dtype = parts[2] if len(parts) == 3 else "float32"
        try:
            np.dtype(dtype)
        except (TypeError, ValueError, SyntaxError):  # numpy reads "a,b" as a record dtype
            raise InputError(f"bad --input '{text}': unknown dtype '{dtype}'") from None
        return cls(parts[0], dims, dtype)


DIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # torch.export.Dim takes identifiers only


@dataclass(frozen=True)
class DynamicAxis:
    """``--dynamic INPUT:AXIS=NAME``: an axis of a graph input, besides the batch, that a PyTorch
    export leaves dynamic under the dim name NAME (a sequence length, an image's height). Axes
    given one name are one size (``x:1=seq``, ``mask:1=seq``)."""

    input: str
    axis: int
    dim: str

    @classmethod
    def parse(cls, text: str) -> DynamicAxis:
        where, eq, dim = text.rpartition("=")
        name, colon, axis = where.rpartition(":")
        if not eq or not colon or not name or not dim:
            raise InputError(f"bad --dynamic '{text}': expected INPUT:AXIS=NAME, e.g. x:1=seq")
        if not axis.isdigit():
            raise InputError(f"bad --dynamic '{text}': the axis must be a whole number >= 0, e.g. x:1=seq")
        if not DIM_NAME.fullmatch(dim) or ANONYMOUS_DIM.fullmatch(dim) or EXPORTER_DIM.fullmatch(dim):
            raise InputError(
                f"bad --dynamic '{text}': the dim name must be letters, digits and _ (not first), and not "
                "one the exporters make up (s0, u0, unk__0), e.g. seq"
            )
        return cls(name, int(axis), dim)

    def __str__(self) -> str:
        return f"{self.input}:{self.axis}={self.dim}"


@dataclass
class ExportOptions:
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = True
    # axes besides the batch a PyTorch export leaves dynamic, named (--dynamic x:1=seq)
    dynamic_axes: list[DynamicAxis] = field(default_factory=list)
    simplify: bool = True
    inputs: list[InputShape] = field(default_factory=list)
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    verify: bool = True  # refuse an export whose outputs differ from the module's (compare_with_module)


def pytorch_only(options: ExportOptions) -> list[str]:
    """The fields of ``options`` set away from their defaults that only shape a PyTorch export:
    an ONNX file keeps its inputs, batch and opset (below 13 it is converted to 13). Not ``inputs``:
    their shapes are those an ONNX file's export is run on (:func:`onnx_input_shapes`)."""
    return [
        name
        for name, given in (
            ("dynamic_batch", not options.dynamic_batch),
            ("dynamic_axes", bool(options.dynamic_axes)),
            ("opset", options.opset != DEFAULT_OPSET),
            ("input_names", bool(options.input_names)),
            ("output_names", bool(options.output_names)),
            ("verify", not options.verify),
        )
        if given
    ]


ONNX_KEEPS = (
    "for PyTorch export only; an ONNX file keeps its inputs, batch and opset (below 13 it is converted to 13)"
)


@dataclass
class ExportResult:
    path: Path
    source: str
    exporter: str  # "dynamo", "torchscript" or "onnx" (an existing file)
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    simplified: bool
    nodes_before: int
    nodes_after: int
    sha256: str
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what came out other than asked


def max_opset() -> int:
    """The newest opset the installed onnx knows: the dynamo exporter converts its model to the
    opset asked with onnx's version converter, which refuses newer ones (the export went on at its
    own opset 18, after printing the converter's traceback)."""
    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """Refuse an ``--opset`` a PyTorch export cannot write, before any work."""
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        which = "too old" if opset < MIN_OPSET else "newer than the installed onnx knows"
        raise InputError(
            f"--opset {opset} is {which}: use {MIN_OPSET} to {newest} (onnx {onnx.__version__}); "
            f"default {DEFAULT_OPSET}"
        )


def is_python_path(where: str | Path) -> bool:
    """Whether the part of a model spec before its ``:callable`` (or a file) names a Python file:
    its suffix .py whatever its case (``nets/Model.PY``), as a data loader script's is."""
    return str(where).lower().endswith(".py")


def _import_object(spec: str, attr: str) -> Any:
    """Resolve ``module`` or ``path/to/file.py`` and return its attribute ``attr``."""
    with deferred(), contextlib.suppress(ImportError):
        import torch  # noqa: F401  (which the user's module imports: here, where a Ctrl-C waits for it)
    if _is_file_spec(spec):
        from calibration.sources import python_file_spec

        path = Path(spec)
        if not path.is_file():
            raise InputError(f"model spec: file not found: {spec}")
        name = f"_edgedeploy_model_{abs(hash(str(path.resolve())))}"
        mod_spec = python_file_spec(path, name)  # Model.PY too
        if mod_spec is None or mod_spec.loader is None:
            raise InputError(f"model spec: cannot import {spec}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # a user's sys.exit() must not look like success
            raise InputError(f"model spec: importing {spec} {raised(exc)}") from None
    else:
        try:
            # the user's folders come after the installed packages, so that a stray onnx.py or
            # torch.py beside the user cannot replace a library (a shadowed name is said below)
            with module_search_path(Path.cwd()):
                module = importlib.import_module(spec)
        except (Exception, SystemExit) as exc:
            raise InputError(f"model spec: importing module '{spec}' {raised(exc)}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        shadowed = _shadowed_file(spec, module)
        if shadowed is not None:
            raise InputError(
                f"model spec: '{spec}' is an installed package ({getattr(module, '__file__', '?')}), "
                f"not {shadowed}: give the file instead ({shadowed}:{attr}) or rename it"
            )
        raise InputError(f"model spec: '{spec}' has no attribute '{attr}'")
    return obj


def _shadowed_file(spec: str, module: Any) -> str | None:
    """The user's ``spec.py`` (or package) in the current folder when the import found another
    module of that name first (``calibration:build`` found edgedeploy's own ``calibration``)."""
    top = Path.cwd() / Path(*spec.split("."))
    origin = getattr(module, "__file__", None)
    for candidate in (top.with_suffix(".py"), top / "__init__.py"):
        if candidate.is_file() and (origin is None or Path(origin).resolve() != candidate.resolve()):
            return os.path.relpath(candidate)
    return None


@contextlib.contextmanager
def module_search_path(*folders: Path) -> Iterator[None]:
    """Let ``module:callable`` specs import modules from ``folders`` (the current and config folders)."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path.extend(added)  # after the installed packages, in the order given
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def _spec_folder(spec: str) -> list[Path]:
    """The folder of a ``path/file.py:callable`` spec's file (none for ``module:callable``)."""
    where = parse_model_spec(spec)[0]
    if _is_file_spec(where) and Path(where).is_file():
        return [Path(where).resolve().parent]
    return []


def _is_file_spec(where: str) -> bool:
    return is_python_path(where) or os.sep in where or "/" in where


# the suffixes of files torch.save, torch.jit.save and torch.export.save write
TORCH_SAVED_SUFFIXES = (".pt", ".pth", ".pt2")


def parse_model_spec(spec: str) -> tuple[str, str, str | None]:
    """``module:callable[:inputs_callable]`` or ``file.py:callable[:inputs_callable]``."""
    parts = spec.split(":")
    if len(parts) < 2 or not all(parts[:2]) or len(parts) > 3:
        # a saved PyTorch file holds weights (or a pickled module) that only the user's code can
        # load: say how to give it, as README's export section does
        saved = spec.lower().endswith(TORCH_SAVED_SUFFIXES) and ":" not in spec
        raise InputError(
            f"model spec '{spec}' does not resolve: expected module:callable, file.py:callable "
            "(optionally :example_inputs_callable) or a .onnx file"
            + (
                f"; {Path(spec).name} is a saved PyTorch file: give a file.py:callable that loads it "
                "(torch.load, with the model's class for a state_dict) and returns the torch.nn.Module"
                if saved
                else ""
            )
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None


def resolve_torch_model(spec: str) -> tuple[Any, Any | None]:
    """Build the torch.nn.Module (and example inputs, when a second callable is given)."""
    torch = _import_torch()
    where, fn_name, inputs_fn_name = parse_model_spec(spec)
    factory = _import_object(where, fn_name)
    try:
        model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    except (Exception, SystemExit) as exc:
        raise InputError(f"model spec: {fn_name}() {raised(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model spec: {fn_name}() returned {type(model).__name__}, not a torch.nn.Module")
    example = None
    if inputs_fn_name:
        inputs_fn = _import_object(where, inputs_fn_name)
        try:
            example = inputs_fn() if callable(inputs_fn) else inputs_fn
        except (Exception, SystemExit) as exc:
            raise InputError(f"model spec: {inputs_fn_name}() {raised(exc)}") from None
    return model.eval(), example


def _import_torch() -> Any:
    try:
        with deferred():  # a signal inside torch's extensions' initialization crashes the process
            import torch
    except ImportError:
        raise InputError(
            "exporting a PyTorch model needs torch: pip install torch==2.13.0 (CPU), "
            "or pip install 'edgedeploy[torch]'"
        ) from None
    return torch


def _example_args(
    model: Any, example: Any, options: ExportOptions
) -> tuple[tuple[Any, ...], list[str], list[str]]:
    """Normalise example inputs into args, their names and the names of the last of them that go
    to forward's keyword-only arguments (see :func:`_bind`)."""
    torch = _import_torch()
    if example is None:
        if not options.inputs:
            raise InputError(
                "exporting needs example inputs: add --input NAME:SHAPE[:DTYPE] "
                "or a second callable in the model spec (module:model_fn:inputs_fn)"
            )
        _unique("input", [i.name for i in options.inputs])
        args = {i.name: torch.from_numpy(np.zeros(i.shape, dtype=i.dtype)) for i in options.inputs}
        return _bind(args, _positional_parameters(model), "--input", _keyword_parameters(model, list(args)))
    if isinstance(example, dict) and _takes_one_dict(model, list(example)):
        return (example,), [], []  # as ({..},): torch.onnx's args for a dict argument
    if isinstance(example, dict):
        keywords = _keyword_parameters(model, list(example))
        return _bind(example, _positional_parameters(model), "the example inputs", keywords)
    if isinstance(example, (list, tuple)):
        return tuple(example), [], []
    return (example,), [], []


def _takes_one_dict(model: Any, keys: list[str]) -> bool:
    """Whether ``model.forward`` takes one argument, annotated as a dict (``batch: dict``,
    ``Dict[str, Tensor]``, a Mapping), and none of ``keys`` names it: an example dict given bare is
    then that argument, as torch.onnx's ``args=({..},)`` is. Keys naming forward's arguments still
    give those arguments (``{"batch": {..}}``), and any other dict is read by :func:`_bind`."""
    import collections.abc
    import inspect
    import typing

    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return False
    if len(parameters) != 1 or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    if parameters[0].name in keys:
        return False
    try:  # the annotation as written, resolved where it is a string (from __future__ import annotations)
        annotation = typing.get_type_hints(model.forward).get(parameters[0].name)
    except Exception:  # a name the module cannot resolve: the annotation as written
        annotation = parameters[0].annotation
    origin = typing.get_origin(annotation) or annotation
    if isinstance(origin, str):  # unresolved: read by its name
        return origin.split("[", 1)[0].rpartition(".")[2] in ("dict", "Dict", "Mapping", "MutableMapping")
    return isinstance(origin, type) and issubclass(origin, collections.abc.Mapping)


def _unique(kind: str, names: list[str]) -> None:
    """Graph input or output names given twice are refused (the exporter renamed the second: q.1)."""
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise InputError(f"{kind} name {', '.join(map(repr, twice))} given twice: graph names are unique")


def check_names(options: ExportOptions) -> None:
    """Refuse, before any work, graph names given twice: within ``--input-names``, within
    ``--output-names``, or as an input's and an output's (an ONNX value has one name; the exporter
    wrote both and the checker refused the file, naming our scratch copy)."""
    inputs = options.input_names or [i.name for i in options.inputs]
    _unique("input", options.input_names or [])
    _unique("output", options.output_names or [])
    _distinct(inputs, options.output_names or [])
    if options.input_names and options.inputs and len(options.input_names) != len(options.inputs):
        raise InputError(
            f"--input-names gives {len(options.input_names)} names for {len(options.inputs)} --input"
        )
    if options.inputs:  # the graph's inputs are known: --dynamic is checked against them now
        names = options.input_names or [i.name for i in options.inputs]
        shapes = {name: i.shape for name, i in zip(names, options.inputs, strict=True)}
        batch = {names[0]: 0} if options.dynamic_batch else {}
        check_dynamic_axes(options.dynamic_axes, shapes, batch)
    else:
        check_dynamic_axes(options.dynamic_axes, None, {})


def check_dynamic_axes(
    axes: Sequence[DynamicAxis], shapes: dict[str, tuple[int, ...]] | None, batch: dict[str, int]
) -> None:
    """Refuse ``--dynamic`` items that cannot be served, in one line: an axis given twice, one name
    for axes of other sizes, the batch's name or axis, and (with ``shapes``: the graph's input names
    -> the example's shapes) an unknown input, an axis out of range, an example size of 1 (which
    torch.export fixes). ``batch``: input -> the axis holding the dynamic batch (empty: --static)."""
    seen: dict[tuple[str, int], DynamicAxis] = {}
    for item in axes:
        if (item.input, item.axis) in seen:
            raise InputError(
                f"--dynamic {item.input}:{item.axis} is given twice ({seen[item.input, item.axis]}, {item})"
            )
        seen[item.input, item.axis] = item
        if batch.get(item.input) == item.axis:
            raise InputError(
                f"--dynamic {item}: axis {item.axis} of {item.input} is the batch, already dynamic (named "
                "'batch') with --dynamic-batch: name the other axes, or give --static to name it yourself"
            )
        if batch and item.dim == "batch":
            raise InputError(
                f"--dynamic {item}: 'batch' names the dynamic batch (--dynamic-batch): choose another name"
            )
        if shapes is None:
            continue
        if item.input not in shapes:
            raise InputError(
                f"--dynamic {item}: the model has no input '{item.input}' (its inputs: {', '.join(shapes)})"
            )
        rank = len(shapes[item.input])
        if item.axis >= rank:
            raise InputError(
                f"--dynamic {item}: {item.input} has {rank} dims (axes 0 to {rank - 1}), no axis {item.axis}"
            )
        if shapes[item.input][item.axis] == 1:
            raise InputError(
                f"--dynamic {item}: the example's {item.input} is 1 on axis {item.axis}: give an example of "
                "2 or more there (torch.export fixes a dim it sees at 1)"
            )
    if shapes is not None:
        sizes: dict[str, tuple[DynamicAxis, int]] = {}
        for item in axes:
            size = shapes[item.input][item.axis]
            first = sizes.setdefault(item.dim, (item, size))
            if first[1] != size:
                raise InputError(
                    f"--dynamic {first[0]} and {item}: one name is one size, and the example has "
                    f"{first[1]} and {size} there: name them apart"
                )


def _distinct(inputs: list[str], outputs: list[str]) -> None:
    if both := [name for name in outputs if name in inputs]:
        raise InputError(
            f"{', '.join(map(repr, both))} named both an input and an output: input and output names "
            "must differ (--input-names, --output-names)"
        )


def _positional_parameters(model: Any) -> list[str] | None:
    """The names of ``model.forward``'s arguments that can be passed by position, or None when it
    takes ``*args`` (or has no readable signature)."""
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _keyword_parameters(model: Any, given: Sequence[str]) -> list[str]:
    """The names of ``model.forward``'s keyword-only arguments (after ``*``), in its order, and
    when it takes ``**kwargs``, the names ``given`` that are none of its arguments, in their order:
    forward(self, x, **kwargs) given x, bias and scale was passed all three by position, and
    refused them ("takes 2 positional arguments but 4 were given")."""
    import inspect

    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return []
    keywords = [p.name for p in parameters if p.kind == p.KEYWORD_ONLY]
    if any(p.kind == p.VAR_KEYWORD for p in parameters) and not any(
        p.kind == p.VAR_POSITIONAL for p in parameters
    ):
        keywords += [name for name in given if name not in {p.name for p in parameters}]
    return keywords


def _bind(
    named: dict[str, Any], params: list[str] | None, what: str, keywords: Sequence[str] = ()
) -> tuple[tuple[Any, ...], list[str], list[str]]:
    """Named example inputs (a dict, or ``--input`` items) as args, graph input names and the names
    of the last args, which go to forward's keyword-only arguments (``keywords``).

    Their names are the graph's input names, passed to ``forward`` in their order; but when every
    name is one of ``forward``'s arguments (``params``) they go to the arguments of those names,
    in ``forward``'s order (``{"b": .., "a": ..}`` for ``forward(a, b)`` was exported with ``a``
    and ``b`` swapped, without a word). Names of which some are arguments, at other positions
    than theirs, are refused: either reading would surprise someone. A keyword-only argument
    (``forward(self, x, *, scale)``) was passed by position, and forward refused it ("takes 2
    positional arguments but 3 were given"): those come last, in forward's order, passed by name
    (:func:`_by_keyword`).
    """
    if params is None or not named:  # forward(*args): the order given is all there is
        return tuple(named.values()), list(named), []
    given = [k for k in keywords if k in named]
    if given and set(named) <= set(params) | set(given):
        args, order, _ = _bind({n: v for n, v in named.items() if n not in given}, params, what)
        return (*args, *(named[k] for k in given)), [*order, *given], given
    if not set(named) <= set(params):
        misplaced = [n for i, n in enumerate(named) if n in params and params.index(n) != i]
        if misplaced:
            raise InputError(
                f"{what} name {', '.join(map(repr, misplaced))} as forward's arguments, but not in "
                f"its order ({', '.join(params)}): name every input after its argument, or none"
            )
        return tuple(named.values()), list(named), []
    last = max(params.index(name) for name in named)
    if missing := [p for p in params[: last + 1] if p not in named]:
        raise InputError(
            f"{what} leave out {', '.join(map(repr, missing))}, an argument of forward before "
            f"{params[last]!r}: give it too (arguments are passed by position)"
        )
    order = params[: last + 1]
    return tuple(named[p] for p in order), order, []


def _by_keyword(model: Any, keywords: list[str], count: int) -> Any:
    """``model`` as a module whose forward takes its ``count`` inputs by position and passes the last
    ``len(keywords)`` to ``model.forward``'s keyword-only arguments of those names: the exporters,
    the comparison with the module and the batch checks all pass the inputs by position.

    It is the model itself seen through a subclass of its class that overrides forward only: the
    same instance dict, so its parameters, buffers, tensor attributes and hooks are the model's and
    the exporters name them as they name the model's. A module holding the model as a child named
    them after that child: ``model.a.weight`` where the same model without ``*`` gave ``a.weight``.
    Where a subclass would not do (a forward set on the instance, which would hide the subclass's;
    a class that refuses subclasses) a plain module is given the model's state the same way, all
    but that forward, and calls the model's forward: the names are the model's there too. A
    scripted model, whose state is not in its instance dict, is still held as the child ``model``
    (:func:`_scripted_by_keyword`)."""
    torch = _import_torch()

    def by_keyword(forward: Any, args: tuple[Any, ...]) -> Any:
        split = len(args) - len(keywords)
        return forward(*args[:split], **dict(zip(keywords, args[split:], strict=True)))

    if not isinstance(model, torch.jit.ScriptModule) and "forward" not in vars(model):
        base: Any = type(model)
        try:

            class Viewed(base):
                def forward(self, *args: Any) -> Any:
                    return by_keyword(super().forward, args)

                def __del__(self) -> None:  # the model's __del__, if it has one, is the model's to run
                    pass

            view = object.__new__(Viewed)
        except Exception:  # the class's __init_subclass__ or __new__ refused: the holder below
            pass
        else:
            object.__setattr__(view, "__dict__", model.__dict__)
            return view.eval()

    module: Any = torch.nn.Module

    class ByKeyword(module):
        def forward(self, *args: Any) -> Any:
            # the model's forward, not its __call__: the hooks, in the shared state, ran for this call
            return by_keyword(model.forward, args)

    if not isinstance(model, torch.jit.ScriptModule):
        holder = object.__new__(ByKeyword)
        object.__setattr__(holder, "__dict__", {k: v for k, v in vars(model).items() if k != "forward"})
        return holder.eval()

    return _scripted_by_keyword(model, keywords, count)


def _scripted_by_keyword(model: Any, keywords: list[str], count: int) -> Any:
    """A scripted ``model`` (torch.jit.script) as a scripted module holding it as its child ``model``,
    whose forward takes ``count`` inputs by position and passes the last ``len(keywords)`` by name.
    A Python module holding it did not export: the dynamo exporter takes no ScriptModule, and the
    TorchScript one, tracing the holder, failed with "Tried to trace <...> but it is not part of the
    active trace" (a trace cannot enter a ScriptModule it does not own). A scripted holder is
    exported from its graph, as a ScriptModule is, without a trace; its forward is compiled from
    text (``define``) with the argument types of the model's own schema."""
    torch = _import_torch()
    arguments = {a.name: a for a in model.forward.schema.arguments[1:]}  # [0] is self
    positional = [a.name for a in arguments.values() if not a.kwarg_only]
    positional = positional[: count - len(keywords)]  # the arguments given: the first ones (_bind)
    params = ", ".join(f"{name}: {arguments[name].type.annotation_str}" for name in [*positional, *keywords])
    call = ", ".join([*positional, *(f"{name}={name}" for name in keywords)])
    source = f"def forward(self, {params}):\n    return self.model({call})\n"
    base: Any = torch.jit.ScriptModule

    class ScriptedByKeyword(base):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.define(source)

    return ScriptedByKeyword().eval()


def _names(given: list[str] | None, fallback: list[str], count: int, prefix: str) -> list[str]:
    if given:
        return given
    if fallback and len(fallback) == count:
        return fallback
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _input_names(given: list[str] | None, args: tuple[Any, ...], fallback: list[str]) -> list[str]:
    """The graph's input names, one per leaf of ``args`` (:func:`_flatten`): ``--input-names`` as
    given when it names every leaf, as torch.onnx's ``input_names`` do; or, when it names every
    argument of forward, a nested one's leaves named after it (``--input-names x,state`` for
    ``(x, (h0, c0))``: x, state_0, state_1, as torch.onnx names them unasked). Without
    ``given``, from ``fallback`` (forward's arguments or the example's names), else ``input_N``."""
    leaves = _flatten(args)
    if not given:
        return _names(None, _flat_names(args, fallback), len(leaves), "input")
    if len(given) == len(leaves):
        return given
    if len(given) == len(args):
        return _flat_names(args, given)
    names = "name" if len(given) == 1 else "names"
    if len(args) == len(leaves):
        raise InputError(f"--input-names gives {len(given)} {names} for {len(leaves)} inputs")
    raise InputError(
        f"--input-names gives {len(given)} {names}: give one per argument of forward ({len(args)} arguments) "
        f"or one per graph input ({len(leaves)} graph inputs, a nested argument's tensors each)"
    )


def _torch_export(
    model: Any,
    args: tuple[Any, ...],
    dest: Path,
    input_names: list[str],
    output_names: list[str],
    options: ExportOptions,
    notify: Notify,
    batched: list[int | None],
    extra: list[dict[int, str]] | None = None,
) -> tuple[str, list[str]]:
    """Export with the dynamo exporter; fall back to TorchScript with a notice. Returns the
    exporter's name and the TracerWarnings of the TorchScript trace, one line each (see
    :func:`_traced_warnings`); the exporters' own printing and logging are kept off the terminal.
    ``batched``: the axis of each leaf of ``args`` (:func:`_flatten`: ``input_names`` name them)
    declared the dynamic batch, or None (:func:`_batched`). A scripted model (torch.jit.script)
    goes to the TorchScript exporter at once: the dynamo exporter cannot take a ScriptModule, and
    every scripted model printed its failure as a notice."""
    torch = _import_torch()
    extra = extra or [{} for _ in batched]
    if not isinstance(model, torch.jit.ScriptModule):
        try:
            return _dynamo_export(model, args, dest, input_names, output_names, options, batched, extra), []
        except _GuardedDim:  # the TorchScript exporter would freeze the same branch, unguarded
            raise
        except ImportError:
            dynamo_error = "onnxscript is not installed"
        except _OpsetNotConverted as exc:
            dynamo_error = str(exc)
        except Exception as exc:
            dynamo_error = f"{type(exc).__name__}: {first_line(exc)}"
        notify(
            f"notice: the dynamo exporter failed ({dynamo_error[:200]}); falling back to the TorchScript "
            "exporter"
        )

    def axes_of(with_batch: bool) -> dict[str, dict[int, str]] | None:
        axes: dict[str, dict[int, str]] = {}
        for name, b, more in zip(input_names, batched, extra, strict=True):
            named = {**({b: "batch"} if with_batch and b is not None else {}), **more}
            if named:
                axes[name] = named
        if with_batch and _any_batch(batched):
            axes.update({n: {0: "batch"} for n in output_names})
        return axes or None

    dynamic_axes = axes_of(True)

    def torchscript(axes: dict[str, dict[int, str]] | None) -> list[str]:
        with warnings.catch_warnings(record=True) as caught, _quiet_exporter():
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", torch.jit.TracerWarning)
            torch.jit.TracerWarning.ignore_lib_warnings()  # torch's own (nn's shape checks), as torch does
            torch.onnx.export(
                model,
                _exporter_args(args),
                os.fspath(dest),
                dynamo=False,
                opset_version=min(options.opset, TORCHSCRIPT_MAX_OPSET),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
            )
        return _traced_warnings(caught)

    try:
        traced = torchscript(dynamic_axes)
        # the trace declares dim 0 dynamic as told, whatever forward does with it: a GRU's state
        # h0[layers, B, H] came out as h0[batch, 2, 16], and the model ran at its example's batch
        # only. As on the dynamo path, what does not run at another batch is exported fixed (and
        # export warns).
        if _any_batch(batched) and (
            not _runs_at_another_batch(dest, args, input_names, batched)
            or _wrong_at_another_batch(model, dest, args, input_names, batched)
        ):  # a trace keeps what forward did at the example's batch (if x.shape[0] > 1:) as well
            traced = torchscript(axes_of(False))  # --dynamic's axes stay dynamic
    except Exception as exc:
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise InputError(f"export failed with both exporters: {why}") from None
    return "torchscript", traced


def _dynamo_export(
    model: Any,
    args: tuple[Any, ...],
    dest: Path,
    input_names: list[str],
    output_names: list[str],
    options: ExportOptions,
    batched: list[int | None],
    extra: list[dict[int, str]],
) -> str:
    """Export with the dynamo exporter (see :func:`_torch_export`): its name, or an exception (also
    when its model does not run at other sizes of ``extra``'s dims, --dynamic's: the TorchScript
    exporter is tried then)."""
    torch = _import_torch()
    import inspect

    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read
        parameters = []

    def dynamo_done() -> str:
        """The exporter's name when the exported file has the opset asked. The dynamo exporter writes 18
        and converts; a conversion it cannot make (ReduceMean's axes back to an attribute, below
        18) is logged and the model left at 18: the TorchScript exporter writes the old opsets."""
        got = opset_of(onnx.load(os.fspath(dest), load_external_data=False))
        if got != options.opset and options.opset <= TORCHSCRIPT_MAX_OPSET:
            raise _OpsetNotConverted(f"it could not convert the model from opset {got} to {options.opset}")
        return "dynamo"

    with deferred():
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)

    batch = torch.export.Dim("batch", min=1, max=4096)
    named = {dim: torch.export.Dim(dim, min=1) for more in extra for dim in more.values()}

    def shapes_of(with_batch: bool) -> Any:
        leaves = [
            {**({b: batch} if with_batch and b is not None else {}), **{a: named[d] for a, d in more.items()}}
            for b, more in zip(batched, extra, strict=True)
        ]
        if not any(leaves):
            return None
        per_input = _rebuild(args, [leaf or None for leaf in leaves])
        if parameters and parameters[0].kind == parameters[0].VAR_POSITIONAL:  # forward(*args)
            return (tuple(per_input),)  # torch.export's form for *args (_by_keyword's)
        return {p.name: s for p, s in zip(parameters, per_input, strict=False)}

    dynamic_shapes = shapes_of(True)
    programs: list[Any] = []  # what each dynamo() returned: its ExportedProgram holds the guards

    def checked(example: tuple[Any, ...]) -> str:
        if any(extra) and not _runs_with(dest, _resized(args, extra, LENGTH_RULES[0])[0], input_names):
            raise ValueError("its model does not run at other sizes of the --dynamic dims")
        lowest = guarded(example, batch=False)
        for item in options.dynamic_axes:
            if item.dim in lowest:
                raise _GuardedDim(
                    f"--dynamic {item}: the exported graph holds for {item.dim} >= {lowest[item.dim]} "
                    f"only: forward computes otherwise below that (a branch on the size, such as "
                    f"`if x.shape[{item.axis}] > {lowest[item.dim] - 1}:`), which the graph left out; export "
                    f"at the example's size (without --dynamic {item}) or make forward take every size alike"
                )
        return dynamo_done()

    def guarded(example: tuple[Any, ...], batch: bool) -> dict[str, int]:
        """The dims (the batch, --dynamic's) the last export's graph is wrong for below some size,
        as the model run there shows: dim -> the lowest size it holds for. It is run just below
        the start of the dim's range in the export (:func:`_range_starts`), or at 1 where that
        range starts at 1: torch.export takes every dynamic dim for 2 or more without a guard
        (its 0/1 specialization), so a branch on ``x.shape[0] > 1`` left batch 1 out unsaid."""
        axes = [
            ({b: "batch"} if b is not None else {}) if batch else more
            for b, more in zip(batched, extra, strict=True)
        ]
        starts = _range_starts(programs[-1] if programs else None, _flatten(example), axes)
        below = {dim: max(start - 1, 1) for dim, start in starts.items()}
        wrong = {
            dim: size + 1
            for dim, size in below.items()
            if _wrong_below(model, dest, example, input_names, axes, dim, size)
        }
        if (
            batch
            and "batch" not in starts
            and _wrong_at_another_batch(model, dest, example, input_names, batched)
        ):
            wrong["batch"] = 0  # a batch the graph fixes inside, though declared dynamic: one more row tells
        return wrong

    def dynamo(example: tuple[Any, ...], shapes: Any = dynamic_shapes) -> None:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            programs[:] = []
            programs.append(
                torch.onnx.export(
                    model,
                    _exporter_args(example),
                    os.fspath(dest),
                    dynamo=True,
                    opset_version=options.opset,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_shapes=shapes,
                    external_data=False,
                    verbose=False,
                )
            )

    doubled = _batch_of_two(args, batched)
    if doubled is not None:
        try:
            dynamo(doubled)
            batch_axes = {n: b for n, b in zip(input_names, batched, strict=True) if b is not None}
            if (
                not _fixed_batch(dest, batch_axes)
                and _runs_at_another_batch(dest, doubled, input_names, batched)
                and "batch"
                not in guarded(doubled, batch=True)  # a graph of 2 rows and more: not the example's
            ):
                return checked(doubled)
        except (_OpsetNotConverted, _GuardedDim):
            raise
        except Exception:  # forward may take batch 1 only: exported as given below
            pass
    dynamo(args)
    if _any_batch(batched) and (
        not _runs_at_another_batch(dest, args, input_names, batched) or "batch" in guarded(args, batch=True)
    ):  # a dim 0 the graph fixes inside, or holds from more rows than forward takes: exported fixed,
        # which export says
        dynamo(args, shapes_of(False))
    return checked(args)


def _traced_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The TracerWarnings of a TorchScript export, as torch.onnx.export's caller sees them, one
    line each and each once: the trace runs forward once and keeps what it read from a tensor (a
    branch on ``x.sum() > 0``, a Python number) as a constant of the graph, and these name the
    lines of forward where it did. They were silenced, and such a model was exported with one
    branch frozen without a word."""
    import linecache

    lines: list[str] = []
    for item in caught:
        where = item.filename
        with contextlib.suppress(ValueError):  # another drive (Windows)
            if not os.path.relpath(where).startswith(".."):
                where = os.path.relpath(where)
        code = linecache.getline(item.filename, item.lineno).strip()
        message = " ".join(str(item.message).split())
        cited = f" ({code[:120]})" if code else ""
        line = f"TracerWarning at {where}:{item.lineno}{cited}: {message[:300]}"
        if line not in lines:
            lines.append(line)
    return lines


class _OpsetNotConverted(Exception):
    """The dynamo exporter wrote another opset than the one asked (see ``dynamo_done``)."""


class _GuardedDim(InputError):
    """A --dynamic dim the dynamo exporter's graph holds for from some size up only, while forward
    computes otherwise below it (see :func:`_range_starts`): refused, not handed to the TorchScript
    exporter, whose trace would freeze the same branch without a guard."""


def _range_starts(program: Any, leaves: list[Any], axes: list[dict[int, str]]) -> dict[str, int]:
    """The dims of ``axes`` (per leaf of the example: axis -> dim name) that the ExportedProgram of
    the dynamo exporter's ``program`` keeps dynamic, with the start of their range there (1 where it
    gives none): torch.export guards the graph it captures where forward branches on a size (``if
    x.shape[1] > 5:`` at an example of 10 gives seq >= 6), and torch.onnx.export's fallback
    strategies keep such a graph where torch.export alone refuses it, its range in
    ``range_constraints``. {} where the program cannot tell (no ExportedProgram, inputs that do not
    line up with ``leaves``)."""
    ep: Any = getattr(program, "exported_program", None)
    if ep is None:
        return {}
    try:
        user = set(ep.graph_signature.user_inputs)
        nodes = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
        ranges = ep.range_constraints
    except Exception:
        return {}
    if len(nodes) != len(leaves):
        return {}
    starts: dict[str, int] = {}
    for node, named in zip(nodes, axes, strict=True):
        shape = getattr(node.meta.get("val"), "shape", None)
        for axis, dim in named.items():
            if shape is None or axis >= len(shape):
                continue
            expr = getattr(getattr(shape[axis], "node", None), "expr", None)
            if expr is None or getattr(expr, "is_number", True):  # a size the export fixed
                continue
            try:
                start = int(ranges[expr].lower)
            except (KeyError, TypeError, ValueError, AttributeError):
                start = 1
            starts[dim] = max(starts.get(dim, 1), start)
    return starts


def _wrong_at_another_batch(
    model: Any, path: Path, args: tuple[Any, ...], names: list[str], batched: list[int | None]
) -> bool:
    """Whether the exported model at ``path`` computes otherwise than ``model`` at one more row
    than the example ``args`` on the batch axes ``batched`` (:func:`_wrong_below`)."""
    rows = next(
        (int(a.shape[b]) for a, b in zip(_flatten(args), batched, strict=True) if b is not None), None
    )
    if rows is None:
        return False
    axes = [{} if b is None else {b: "batch"} for b in batched]
    return _wrong_below(model, path, args, names, axes, "batch", rows + 1)


def _wrong_below(
    model: Any,
    path: Path,
    args: tuple[Any, ...],
    names: list[str],
    axes: list[dict[int, str]],
    dim: str,
    size: int,
) -> bool:
    """Whether the exported model at ``path`` fails or computes otherwise than ``model`` with the
    axes of ``axes`` named ``dim`` at ``size`` (new seeded values, :func:`_resized`); False where
    forward refuses that size itself (then the graph's range is forward's)."""
    probe, _ = _resized(
        args, [{a: d for a, d in named.items() if d == dim} for named in axes], lambda _n: size
    )
    try:
        expected = [value for _, value in _forward_leaves(model, probe)]
    except InputError:
        return False
    got = _runs_with(path, probe, names)
    if got is None:
        return True
    return len(got) != len(expected) or any(
        want is not None and output_difference(want, have, "torch gives") is not None
        for want, have in zip(expected, got.values(), strict=False)
    )


BATCH_GUESSES = 8  # the most choices of batch axes forward is run on (:func:`_batched`)


def _batched(model: Any, args: tuple[Any, ...]) -> list[int | None]:
    """The axis of each leaf of ``args`` (:func:`_flatten`) that holds the batch (None where none
    does): dim 0 of the first tensor; for another tensor, an axis whose size is that batch, dim 0
    first, as a recurrent layer's state ``h0[layers, B, H]`` holds it on axis 1 (torch's RNN, GRU
    and LSTM take their states so, batch_first or not). Every input's dim 0 was declared the
    batch, and one that is none was refused or mislabelled: ``scale[8]`` beside ``x[3, 8]`` (dynamo
    tied 3 to 8 and failed, and the TorchScript exporter's model was refused by ONNX Runtime); a
    GRU's state ``h0[1, 2, 16]`` beside ``x[2, 10, 8]`` then kept the model at batch 2.

    Where a tensor has the batch's size on several axes (a 2-layer GRU's ``h0[2, 2, 16]`` at batch
    2: its layers were taken for the batch and the model exported fixed), ``model`` is run with
    one more row on each choice in turn and the first it takes is kept (:func:`_grown`). A guess,
    not a proof: the export is run at another batch (:func:`_runs_at_another_batch`)."""
    import itertools

    choices = list(itertools.islice(itertools.product(*_batch_axes(_flatten(args))), BATCH_GUESSES))
    if len(choices) > 1:
        for choice in choices:
            try:
                _forward_leaves(model, _rebuild(args, _grown(_flatten(args), list(choice))))
            except InputError:  # forward refuses that batch axis
                continue
            return list(choice)
    return list(choices[0])


def _batch_axes(leaves: list[Any]) -> list[list[int | None]]:
    """The axes of each of ``leaves`` that may hold the batch, likeliest first (see :func:`_batched`)."""
    torch = _import_torch()
    tensors = [a for a in leaves if isinstance(a, torch.Tensor) and a.dim() > 0]
    if not tensors:
        return [[None] for _ in leaves]
    batch = int(tensors[0].shape[0])

    def axes(arg: Any) -> list[int | None]:
        if arg is tensors[0]:
            return [0]
        if not isinstance(arg, torch.Tensor) or arg.dim() == 0:
            return [None]
        holding: list[int | None] = [k for k, size in enumerate(arg.shape) if int(size) == batch]
        if batch == 1 and holding[:1] != [0]:  # a size of 1 elsewhere is too common to mean the batch
            return [None]
        return holding or [None]

    return [axes(a) for a in leaves]


def _grown(leaves: list[Any], batched: list[int | None]) -> list[Any]:
    """``leaves`` with one more row (a copy of the first) on the ``batched`` axis of each."""
    torch = _import_torch()
    pairs = zip(leaves, batched, strict=True)
    return [a if b is None else torch.cat([a, a.narrow(b, 0, 1)], dim=b) for a, b in pairs]


def _any_batch(batched: list[int | None]) -> bool:
    return any(b is not None for b in batched)


def _flatten(args: Sequence[Any]) -> list[Any]:
    """The leaves of ``args`` in order, nested tuples, lists and dicts (their values, in their order)
    flattened as the exporters flatten them into graph inputs: an LSTM's ``forward(x, (h0, c0))``
    has the three inputs x, h0, c0. Taken whole, the state was no tensor, and its batch, its names
    and the checks of the export against torch were all lost on it."""
    return [leaf for arg in args for leaf in (_flatten(_children(arg)) if _nested(arg) else [arg])]


def _nested(arg: Any) -> bool:
    return isinstance(arg, (list, tuple, dict))


def _children(arg: Any) -> list[Any]:
    return list(arg.values()) if isinstance(arg, dict) else list(arg)


def _exporter_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` as torch.onnx.export takes them: both exporters take a dict at the end of ``args``
    as forward's keyword arguments, and forward(self, batch: dict) failed with both ("missing 1
    required positional argument: 'batch'"); torch's workaround, a trailing ``{}`` (no keyword
    arguments), passes such a dict by position."""
    return (*args, {}) if args and isinstance(args[-1], dict) else args


def _rebuild(args: tuple[Any, ...], leaves: Sequence[Any]) -> tuple[Any, ...]:
    """``args`` with its leaves (:func:`_flatten`) replaced by ``leaves``, in order."""
    given = iter(leaves)

    def rebuilt(arg: Any) -> Any:
        if isinstance(arg, dict):
            return type(arg)((key, rebuilt(item)) for key, item in arg.items())
        if isinstance(arg, (list, tuple)):
            return type(arg)(rebuilt(item) for item in arg)
        return next(given)

    return tuple(rebuilt(arg) for arg in args)


def _flat_names(args: tuple[Any, ...], names: list[str]) -> list[str]:
    """The names of the leaves of ``args`` (:func:`_flatten`) from ``names``, one per arg: a nested
    arg's leaves are named after it and their index or key (``state_0``, ``state_1`` for forward's
    ``state`` given ``(h0, c0)``; ``batch_x`` for ``batch`` given ``{"x": ..}``), as torch.onnx
    names them; ``[]`` when ``names`` does not name every arg."""
    if len(names) != len(args):
        return []

    def named(arg: Any, name: str) -> list[str]:
        if isinstance(arg, dict):
            return [leaf for key, item in arg.items() for leaf in named(item, f"{name}_{key}")]
        if isinstance(arg, (list, tuple)):
            return [leaf for i, item in enumerate(arg) for leaf in named(item, f"{name}_{i}")]
        return [name]

    return [leaf for arg, name in zip(args, names, strict=True) for leaf in named(arg, name)]


def _batch_of_two(args: tuple[Any, ...], batched: list[int | None]) -> tuple[Any, ...] | None:
    """``args`` with every ``batched`` tensor of batch 1 repeated to batch 2 (on its batch axis), or
    None when none has batch 1. torch.export specializes a dim whose example size is 1 wherever
    the traced code could tell 1 from more (TransformerEncoder does): a model exported from a batch
    of 1 then takes batch 1 only, though its batch was declared dynamic (torch.export's docs, "0/1
    specialization", advise examples of size 2 or more)."""
    torch = _import_torch()
    pairs = list(zip(_flatten(args), batched, strict=True))
    if not _any_batch(batched) or any(int(a.shape[b]) != 1 for a, b in pairs if b is not None):
        return None
    return _rebuild(args, [a if b is None else torch.cat([a, a], dim=b) for a, b in pairs])


def _extra_axes(
    axes: Sequence[DynamicAxis], leaves: list[Any], names: list[str], batched: list[int | None]
) -> list[dict[int, str]]:
    """``--dynamic``'s axes of each of ``leaves`` (the graph inputs ``names``: axis -> dim name),
    checked against the example (:func:`check_dynamic_axes`) now that its inputs are known."""
    torch = _import_torch()
    shapes = {
        n: tuple(int(d) for d in a.shape)
        for n, a in zip(names, leaves, strict=True)
        if isinstance(a, torch.Tensor)
    }
    batch = {n: b for n, b in zip(names, batched, strict=True) if b is not None}
    check_dynamic_axes(axes, shapes, batch)
    return [{item.axis: item.dim for item in axes if item.input == name} for name in names]


# the other sizes a --dynamic dim is checked at, in turn until forward takes one: twice the
# example's size (a multiple of whatever it is a multiple of: a stride-32 CNN's 640 -> 1280), half
# of it, one more
LENGTH_RULES: tuple[Callable[[int], int], ...] = (lambda n: 2 * n, lambda n: max(n // 2, 2), lambda n: n + 1)


def _resized(
    args: tuple[Any, ...], extra: list[dict[int, str]], rule: Callable[[int], int]
) -> tuple[tuple[Any, ...], dict[str, int]]:
    """``args`` with each ``extra`` axis (--dynamic's) at ``rule`` of its example size, one size per
    dim name, and those sizes. New values, seeded: a float tensor's drawn around its mean and std
    (tiled copies of the example would hide a slice the export fixed), an integer or boolean one's
    drawn from its values (token ids stay in the vocabulary)."""
    torch = _import_torch()
    rng = np.random.default_rng(1)
    sizes: dict[str, int] = {}
    made = []
    for leaf, axes in zip(_flatten(args), extra, strict=True):
        if not axes or not isinstance(leaf, torch.Tensor):
            made.append(leaf)
            continue
        shape = [int(d) for d in leaf.shape]
        for axis, dim in axes.items():
            shape[axis] = sizes.setdefault(dim, rule(shape[axis]))
        example = leaf.detach().cpu()
        if example.is_floating_point():
            values = example.double().numpy()
            finite = values[np.isfinite(values)]
            mean, std = (float(finite.mean()), float(finite.std())) if finite.size else (0.0, 1.0)
            drawn = mean + (std if std > 0 else 1.0) * rng.standard_normal(shape)
        else:
            drawn = rng.choice(example.numpy().reshape(-1), size=shape)
        made.append(torch.from_numpy(np.ascontiguousarray(drawn)).to(dtype=leaf.dtype, device=leaf.device))
    return _rebuild(args, made), sizes


def _other_lengths(
    model: Any, args: tuple[Any, ...], extra: list[dict[int, str]]
) -> tuple[tuple[Any, ...], list[np.ndarray | None], str] | None:
    """Inputs at the first of :data:`LENGTH_RULES` forward takes, what it returns for them and how
    to name them; None when it takes none."""
    for rule in LENGTH_RULES:
        other, sizes = _resized(args, extra, rule)
        try:
            expected = [value for _, value in _forward_leaves(model, other)]
        except InputError:
            continue
        said = ", ".join(f"{dim}={size}" for dim, size in sizes.items())
        return other, expected, f"inputs at other sizes of the --dynamic dims ({said})"
    return None


def _runs_with(path: Path, args: tuple[Any, ...], names: list[str]) -> dict[str, np.ndarray] | None:
    """The outputs of the model at ``path`` in ONNX Runtime on ``args`` (one tensor per graph input
    ``names``), or None when it fails on them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        feed = {
            n: a.detach().cpu().numpy() for n, a in zip(names, _flatten(args), strict=True) if n in wanted
        }
        got = session.run(None, feed)
    except Exception:
        return None
    return {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), got, strict=True)}


def _loosen_outputs(model: onnx.ModelProto, path: Path, args: tuple[Any, ...], names: list[str]) -> None:
    """Clear, in ``model`` (saved at ``path``), the fixed output dims that the model, run at other
    sizes of --dynamic's dims, does not keep, and then the exporter's shapes of the values inside,
    which fixed them the same way: the dynamo exporter declared a batch-first LSTM's output
    [batch, 10, 4] (and its MatMul's) at its example's 10 steps though it gives [batch, seq, 4].
    Shape inference then names them (seq), or :func:`name_dynamic_dims` does (output_dim1)."""
    onnx.save(model, os.fspath(path))
    got = _runs_with(path, args, names)
    if got is None:  # said by the comparison with the module
        return
    cleared = False
    for value in model.graph.output:
        shape = got[value.name].shape if value.name in got else ()
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if axis < len(shape) and dim.HasField("dim_value") and dim.dim_value != shape[axis]:
                dim.Clear()
                cleared = True
    if cleared:
        del model.graph.value_info[:]


def _check_named(model: onnx.ModelProto, axes: Sequence[DynamicAxis]) -> None:
    """Each --dynamic axis is dynamic in the exported ``model``: one the exporters fixed is refused
    (forward makes it a constant), before the model takes its name."""
    inputs = {value.name: value for value in model.graph.input}
    for item in axes:
        dim = inputs[item.input].type.tensor_type.shape.dim[item.axis]
        if dim.HasField("dim_value"):
            raise InputError(
                f"--dynamic {item}: the export came out with {item.input} fixed at {dim.dim_value} on axis "
                f"{item.axis}: forward makes it a constant (int(x.shape[{item.axis}]), a reshape to a fixed "
                "size, ...)"
            )


def _runs_at_another_batch(
    path: Path, args: tuple[Any, ...], names: list[str], batched: list[int | None]
) -> bool:
    """Whether the exported model at ``path`` runs in ONNX Runtime with one more row on the batch
    axis of every ``batched`` input than the example ``args`` it was traced from have. The dynamo
    exporter can declare a dim 0 dynamic and still fix it inside the graph: an LSTM fed time-major
    ([T, B, C], dim 0 the time) came out as x[batch, 1, 8] with a Reshape to its example's 20
    steps, which every other size fails. True when that cannot be tried (an input that is not one
    tensor per graph input). ``args`` may nest (:func:`_flatten`); ``names`` and ``batched`` are
    of its leaves."""
    torch = _import_torch()
    leaves = _flatten(args)
    if len(names) != len(leaves) or not all(isinstance(a, torch.Tensor) for a in leaves):
        return True
    return _runs_with(path, tuple(_grown(leaves, batched)), names) is not None


def _fixed_batch(path: Path, axes: dict[str, int]) -> bool:
    """Whether an input of the exported model at ``path`` has a fixed batch axis (``axes``: input
    name -> its batch axis)."""
    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        axis = axes.get(value.name)
        if axis is not None and len(dims) > axis and dims[axis].HasField("dim_value"):
            return True
    return False


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporters' printing and logging, noise here, off the terminal: the dynamo exporter
    prints its steps to stdout and logs warnings about optional ops (torchvision); torch.export
    prints the partial graph of a capture that failed (its error's ``partial_fx_graph``) to
    stderr and torch's symbolic shapes log a line about it ("Unable to find user code
    corresponding to {u0}"): some 50 lines before the fallback's notice. onnxscript's version
    converter logs a traceback for a conversion it cannot make (the opset that comes out is
    checked instead: ``dynamo_done`` in :func:`_torch_export`). What the exporters say that
    matters comes back otherwise: their errors as exceptions, the tracer's warnings as warnings.
    (torch's loggers write through their own handlers, which a redirect does not reach; the
    ``torch`` logger's level is the one of every torch logger that sets none.)"""
    loggers = [logging.getLogger("torch"), logging.getLogger("torch.onnx"), logging.getLogger("onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with (
            quiet_descriptors(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _forward_leaves(model: Any, args: tuple[Any, ...]) -> list[tuple[str, Any]]:
    """What ``forward`` returns for ``args``, flattened as the exporters flatten it: nested tuples
    and lists in order, a dict's values in its order (named after its keys), ``None`` left out (it
    is no graph output); each with its name: its dict key, else ``output`` or ``output_N``. Counting
    only the top level refused three names for ``(a, (b, c))`` and took two for ``(a, None)``, one
    of them silently dropped."""
    torch = _import_torch()
    try:
        with torch.no_grad():
            out = model(*args)
    except (Exception, SystemExit) as exc:  # the forward pass is the user's code
        raise InputError(f"the example inputs do not fit the model: its forward() {raised(exc)}") from None

    def leaves(value: Any, name: str) -> list[tuple[str, Any]]:
        if value is None:
            return []
        if isinstance(value, dict):
            named = [(f"{name}_{key}" if name else str(key), item) for key, item in value.items()]
            return [leaf for inner, item in named for leaf in leaves(item, inner)]
        if isinstance(value, (list, tuple)):
            return [leaf for i, item in enumerate(value) for leaf in leaves(item, f"{name or 'output'}_{i}")]
        return [(name or "output", value)]

    found = leaves(out, "")
    names = [name for name, _ in found]
    if not (isinstance(out, dict) and len(set(names)) == len(names)):
        names = ["output"] if len(names) == 1 else [f"output_{i}" for i in range(len(names))]
    return [(name, _as_array(value)) for name, (_, value) in zip(names, found, strict=True)]


def _as_array(value: Any) -> np.ndarray | None:
    """A copy of an output of forward as a numpy array (None for what numpy cannot hold: bfloat16,
    an object that is no tensor or number), taken at once so that a later forward cannot change it."""
    torch = _import_torch()
    try:
        if isinstance(value, torch.Tensor):
            return np.array(value.detach().cpu().numpy(), copy=True)
        if isinstance(value, (bool, int, float)):
            return np.asarray(value)
    except (TypeError, RuntimeError):
        return None
    return None


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-node removal, fusions; keeps the graph's I/O: every input
    (but a weight also listed as one, as IR 3 required) and every output the graph declares, in its
    order. onnxslim drops an input no node reads, unasked and with no option to keep it (its graph
    cleanups pass ``remove_unused_graph_inputs=True``): x[2,8] with an unused[2,3] came out with x
    alone, and an application that feeds every input the model declared failed. What it drops is
    put back; an output it dropped that cannot be (its value gone) fails the simplification.

    A value that is not a tensor keeps the type it had: onnxslim writes a sequence back as a
    sequence of tensors, so scikit-learn's ZipMap output, seq(map(int64,tensor(float))), came out
    seq(tensor(undefined)), which the checker refused ("type case mismatch")."""
    import onnxslim

    inits = {i.name for i in model.graph.initializer}
    inputs = [_copied(v) for v in model.graph.input if v.name not in inits]
    outputs = [_copied(v) for v in model.graph.output]
    g = model.graph
    not_tensors = {v.name: _copied(v).type for v in [*g.input, *g.output, *g.value_info] if _not_tensor(v)}
    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(model)
    if not isinstance(slimmed, onnx.ModelProto):
        raise InputError("onnxslim returned no model")
    graph = slimmed.graph
    kept = {v.name: _copied(v) for v in graph.input}
    declared = {v.name for v in inputs}
    restored = [kept.get(v.name, v) for v in inputs]
    restored += [v for name, v in kept.items() if name not in declared]
    del graph.input[:]
    graph.input.extend(restored)
    if [v.name for v in graph.output] != [v.name for v in outputs]:
        values = {name for node in graph.node for name in node.output}
        values |= {v.name for v in graph.input} | {i.name for i in graph.initializer}
        if lost := [v.name for v in outputs if v.name not in values]:
            raise ValueError(f"onnxslim dropped the output {lost[0]!r}")
        produced = {v.name: _copied(v) for v in graph.output}
        del graph.output[:]
        graph.output.extend(produced.get(v.name, v) for v in outputs)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name in not_tensors:
            value.type.CopyFrom(not_tensors[value.name])
    # onnxslim gives a body's folded Constants the names of the main graph's equal ones, in a model
    # handed to it unshadowed too (hey_jarvis: tests/test_export_onnx_io.py): its own, so unsaid
    unshadow_subgraph_names(slimmed)
    return slimmed


def _copied(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    return copy


def _not_tensor(value: onnx.ValueInfoProto) -> bool:
    """Whether ``value`` is typed as something other than a tensor (a sequence, map or optional)."""
    return value.type.WhichOneof("value") not in (None, "tensor_type")


def finalize_onnx(
    src: Path,
    dest: Path,
    options: ExportOptions,
    notify: Notify = lambda _msg: None,
    name: str | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[onnx.ModelProto, int, int, bool]:
    """Check, infer shapes, simplify and save ``src`` as ``dest``; returns node counts. ``name``:
    how errors name ``src`` (default its path; a PyTorch export's scratch file is named otherwise).
    ``shapes``: for an ONNX file, the input shapes its run-once check feeds (``--input``, ``[model]
    inputs``; each dynamic dim left as 1 without one), checked by :func:`onnx_input_shapes`."""
    what = name or str(src)
    check_model(src, name=name)
    model = load_onnx(src)
    before = len(model.graph.node)  # the file's own count, before any conversion
    if opset_of(model) < MIN_OPSET:  # per-channel Q/DQ and the fp16 converter's ops need 13
        from calibration.errors import CalibrationError, ConversionError
        from calibration.qdq import convert_opset

        old = opset_of(model)
        try:  # checked against the file on a seeded random feed, its IR version raised as opset 13 needs
            model, unchecked = convert_opset(model, name=what)
        except ConversionError as exc:
            raise InputError(f"{exc}; not exported") from None
        except CalibrationError as exc:
            raise InputError(str(exc)) from None
        if unchecked:  # never claimed checked: said with why
            notify(
                f"notice: converted {Path(what).name} from opset {old} to {opset_of(model)} "
                f"(onnx.version_converter), not checked against it: {unchecked}"
            )
        else:
            new = opset_of(model)
            notify(f"notice: converted the model from opset {old} to {new} (onnx.version_converter)")
    name_dynamic_dims(model, exported=name is not None, outputs=False)
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise InputError(f"{what}: shape inference failed: {first_line(exc)}") from None
    exported = name is not None
    feed, fed = None, "random inputs"
    if shapes:  # random values of the shapes given, as profile's and compare's --input
        from calibration.artifacts import default_feed

        feed = default_feed(model, shapes)
        fed = "random inputs of the shapes given (" + ", ".join(_dims(n, d) for n, d in shapes.items()) + ")"
    # without them, random inputs that fail a model of dynamic dims say where to give them
    hint = _shapes_hint(model, shapes) if shapes is not None else ""
    _unshadow(model, notify)  # once, before onnxslim: both candidates below come from it
    if options.simplify:
        unsimplified = onnx.ModelProto()
        unsimplified.CopyFrom(model)  # onnxslim may change its input in place
        try:
            slimmed = simplify(model)
        except Exception as exc:  # onnxslim is best-effort: keep the checked model
            notify(
                f"notice: onnxslim could not simplify the model ({type(exc).__name__}); kept it as exported"
            )
            model = unsimplified
        else:
            from calibration.artifacts import ArtifactError, SourceModelError, verify_artifact

            try:  # its output checked as the export is: the checker, ONNX Runtime's load and one run
                unrun = _saved(
                    slimmed, src, dest, exported, "onnxslim's output", feed, fed, verify_artifact, notify
                )
            except SourceModelError:  # ONNX Runtime cannot load the file itself: said of the file below
                model = unsimplified
            except ArtifactError as exc:  # best effort too: its invalid output is not the model's fault
                why = str(exc).removesuffix("; it was not kept")
                notify(f"notice: {why}; kept the model unsimplified")
                model = unsimplified
            else:
                _say_unrun(unrun, hint, notify)
                return slimmed, before, len(slimmed.graph.node), True
    unrun = _saved(model, src, dest, exported, "the exported model", feed, fed, notify=notify)
    _say_unrun(unrun, hint, notify)
    return model, before, len(model.graph.node), False


def _unshadow(model: onnx.ModelProto, notify: Notify) -> None:
    """Leave no name a body defines repeating an outer one (:func:`unshadow_subgraph_names`), a file
    that onnxslim, onnx's type inference and the fp16 converter read as one tensor: a body's weight
    an enclosing name hides goes (the runtimes read the outer one), other repeated body names are
    renamed. A dropped weight of other values than the outer one is said, in one notice each."""
    for body, weight, same in unshadow_subgraph_names(model).dropped:
        if not same:
            notify(
                f"notice: body '{body}' holds a weight '{weight}' that an enclosing graph's '{weight}' "
                "hides (ONNX Runtime and onnx's reference evaluator read the enclosing one, of other "
                "values): dropped, the model computes what it did"
            )


def _saved(
    model: onnx.ModelProto,
    src: Path,
    dest: Path,
    exported: bool,
    what: str,
    feed: dict[str, Any] | None,
    fed: str,
    checker: Callable[..., str | None] = verify,
    notify: Notify = lambda _msg: None,
) -> list[str]:
    """Save ``model`` (finalize_onnx's, simplified or not) as ``dest``, checked (full onnx checker)
    and run once by ONNX Runtime on ``feed`` (None: random inputs, dynamic dims 1), which ``fed``
    names, before it takes its name; returns why it was loaded only, if it was. ``checker``:
    :func:`edgedeploy.onnxio.verify` (a failed check is an InputError) or calibration's
    verify_artifact (an ArtifactError, for the caller to word)."""
    name_dynamic_dims(model, exported=exported)
    unrun: list[str] = []

    def check(tmp: Path, content: bytes | None) -> None:
        if (why := checker(tmp, feed, source=src, what=what, fed=fed, content=content)) is not None:
            unrun.append(why)

    save_onnx(model, dest, check=check)
    return unrun


def _say_unrun(unrun: list[str], hint: str, notify: Notify) -> None:
    for why in unrun:
        notify(f"notice: the exported model was loaded by ONNX Runtime, not run: {why}{hint}")


def _dims(name: str, shape: Sequence[int]) -> str:
    return f"{name} {'x'.join(map(str, shape))}"


def _shapes_hint(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> str:
    """Where an ONNX file's check ran on random inputs whose dynamic dims were 1: the inputs of
    dynamic dims no shape was given for, and how to give them ("" when there are none)."""
    from calibration.modelinfo import graph_io

    inputs, _ = graph_io(model)
    dynamic = [s for s in inputs if any(not isinstance(d, int) for d in s.shape)]
    if not (open_ := [s.describe() for s in dynamic if s.name not in shapes]):
        return ""
    return (
        f"; give the shapes to run it on with --input NAME:SHAPE ([model] inputs in a config): "
        f"{', '.join(open_)}"
    )


def onnx_input_shapes(src: Path, options: ExportOptions) -> dict[str, tuple[int, ...]]:
    """The shapes ``--input`` (``[model] inputs``) gives the inputs of the ONNX file ``src``, for
    its export's run-once check: each names an input of the file, once, at its rank and at the
    sizes of the dims the file fixes (refused before any work otherwise). The file's dtypes stand."""
    from calibration.modelinfo import graph_io
    from calibration.sources import check_fixed_dims, check_shapes

    shapes: dict[str, tuple[int, ...]] = {}
    for given in options.inputs:
        if given.name in shapes:
            twice = f"'{given.name}' is given a shape twice"
            raise InputError(f"--input {_dims(given.name, given.shape)}: {twice}")
        shapes[given.name] = given.shape
    if shapes:
        inputs, _ = graph_io(load_onnx(src, load_external_data=False))
        check_shapes(shapes, {s.name: s.rank for s in inputs})
        check_fixed_dims(shapes, inputs)
    return shapes


ANONYMOUS_DIM = re.compile(r"unk__\d+")  # onnx's shape inference names an unknown dim so
EXPORTER_DIM = re.compile(r"[su]\d+")  # torch.export's symbols: s0 a size, u0 a data-dependent one


def name_dynamic_dims(model: onnx.ModelProto, exported: bool = False, outputs: bool = True) -> None:
    """Name, in place, the dynamic dims of the graph's inputs and outputs that have no name a user
    can use: none at all, onnx's ``unk__N`` or (``exported`` from PyTorch) torch.export's ``s0`` and
    ``u0``. Polygraphy's and trtexec's ``--shapes``, ``--profile`` and the build's profiles name
    them, and these meant nothing (and unk__N changes with the graph). Each takes the name of its
    input or output and axis (``x_dim2``, ``output_0_dim0``); a symbol met again keeps the name it
    took first (inputs before outputs), also in the graph's value_info. Named dims (``batch``,
    ``8*batch``) are kept. ``outputs=False``: the inputs only, named before shape inference, which
    then carries their names to the outputs (a Relu's y[x_dim0, 3, x_dim2], not y_dim0)."""
    graph = model.graph
    pattern = re.compile(f"{ANONYMOUS_DIM.pattern}|{EXPORTER_DIM.pattern}") if exported else ANONYMOUS_DIM
    inits = {i.name for i in graph.initializer}
    values = [*(v for v in graph.input if v.name not in inits), *(graph.output if outputs else [])]
    taken = {
        d.dim_param
        for g in all_graphs(graph)
        for info in [*g.input, *g.output, *g.value_info]
        for d in info.type.tensor_type.shape.dim
        if d.dim_param
    }
    renamed: dict[str, str] = {}
    for value in values:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") or (dim.dim_param and not pattern.fullmatch(dim.dim_param)):
                continue
            if dim.dim_param in renamed:
                dim.dim_param = renamed[dim.dim_param]
                continue
            new, suffix = f"{value.name}_dim{axis}", 1
            while new in taken:
                new, suffix = f"{value.name}_dim{axis}_{suffix}", suffix + 1
            taken.add(new)
            if dim.dim_param:
                renamed[dim.dim_param] = new
            dim.dim_param = new
    for info in graph.value_info:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param in renamed:
                dim.dim_param = renamed[dim.dim_param]


def export(
    spec: str,
    dest: str | os.PathLike[str],
    options: ExportOptions | None = None,
    notify: Notify = lambda _msg: None,
) -> ExportResult:
    """Export ``spec`` (a module:callable, file.py:callable, or .onnx path) to ``dest``."""
    options = options or ExportOptions()
    if not is_onnx_path(spec):  # an ONNX file keeps its opset (>= 13) and names
        check_opset(options.opset)
        check_names(options)
    dest = Path(dest)
    notices: list[str] = []

    def note(msg: str) -> None:
        notices.append(msg)
        notify(msg)

    if is_onnx_path(spec):
        src = Path(spec)
        load_onnx(src, load_external_data=False)  # clear error for missing/corrupt files
        shapes = onnx_input_shapes(src, options)
        with naming_output(dest), atomic_path(dest, suffix=".onnx") as tmp:
            model, before, after, simplified = finalize_onnx(src, tmp, options, note, shapes=shapes)
        done = _Exported("onnx", model, before, after, simplified, [], {})
    else:
        # as ``python path/file.py`` would, the file's folder is searched for the modules it imports
        # (helper.py beside it was "No module named 'helper'"), while forward runs too
        with module_search_path(*_spec_folder(spec)):
            torch_model, example = resolve_torch_model(spec)
            done = _export_module(torch_model, example, dest, options, note, spec)
    result = _result(
        dest, spec, done.exporter, done.model, done.nodes_before, done.nodes_after, done.simplified, notices
    )
    result.warnings.extend(done.warnings)
    if result.opset != options.opset and not is_onnx_path(spec):
        result.warnings.append(_other_opset(options.opset, result))
    result.warnings.extend(_fixed_batch_warning(result, done))
    return result


def _fixed_batch_warning(result: ExportResult, done: _Exported) -> list[str]:
    """The warning for the inputs whose batch axis (``done.batched``: none for a static export) came
    out a constant, given to the caller of :func:`export` and :func:`export_module` alike."""
    fixed = [
        f"{i.name} ({i.shape[done.batched[i.name]]})"
        for i in result.inputs
        if i.name in done.batched
        and len(i.shape) > done.batched[i.name]
        and isinstance(i.shape[done.batched[i.name]], int)
    ]
    if not fixed:
        return []
    return [
        f"--dynamic-batch: the batch of {', '.join(fixed)} came out fixed: forward or the exporter makes "
        "dim 0 a constant (int(x.shape[0]), a reshape to a fixed size, a recurrent layer fed time first "
        "[T, B, C], another input holding the batch on another dim, as a GRU's state h0[layers, B, H], "
        "...), so the model takes that batch only"
    ]


def _other_opset(asked: int, result: ExportResult) -> str:
    """What the export wrote when it is not the opset asked: the TorchScript exporter (the dynamo
    one's fallback) writes up to opset 20, the dynamo one opset 18 when it cannot convert."""
    if result.exporter == "torchscript" and asked > TORCHSCRIPT_MAX_OPSET:
        why = f"the TorchScript exporter writes {TORCHSCRIPT_MAX_OPSET} at most"
    else:
        why = f"the {result.exporter} exporter could not convert the model to {asked}"
    return f"--opset {asked}: exported at opset {result.opset} ({why})"


def _result(
    dest: Path,
    source: str,
    exporter: str,
    model: onnx.ModelProto,
    before: int,
    after: int,
    simplified: bool,
    notices: list[str],
) -> ExportResult:
    inputs, outputs = io_specs(model)
    return ExportResult(
        path=dest,
        source=source,
        exporter=exporter,
        opset=opset_of(model),
        inputs=inputs,
        outputs=outputs,
        simplified=simplified,
        nodes_before=before,
        nodes_after=after,
        sha256=sha256_file(dest),
        notices=notices,
    )


def _export_module(
    torch_model: Any, example: Any, dest: Path, options: ExportOptions, note: Notify, source: str
) -> _Exported:
    """Export ``torch_model`` (``source``: how errors name it, the model spec or its class)."""
    with _plain_attention():
        return _export_plain(torch_model, example, dest, options, note, source)


@contextlib.contextmanager
def _plain_attention() -> Iterator[None]:
    """torch's fast path of nn.MultiheadAttention and TransformerEncoder(Layer) off, and put back
    after: the module then runs as the exporters trace it. In eval mode with a padding mask the
    fast path writes 0 at the padded positions where the traced path computes them, and a
    TransformerEncoder given src_key_padding_mask was refused ("output 'hidden' differs by up to
    3.17") though every unpadded value was torch's."""
    torch = _import_torch()
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


def _export_plain(
    torch_model: Any, example: Any, dest: Path, options: ExportOptions, note: Notify, source: str
) -> _Exported:
    args, example_names, keywords = _example_args(torch_model, example, options)
    if keywords:
        torch_model = _by_keyword(torch_model, keywords, len(args))
    reference = _forward_leaves(torch_model, args)
    returned = [name for name, _ in reference]
    n_out = len(returned)
    leaves = _flatten(args)
    if any(map(_nested, args)) and not example_names:  # a nested input is named after forward's argument
        example_names = _positional_parameters(torch_model) or []
    input_names = _input_names(options.input_names, args, example_names)
    output_names = _names(options.output_names, returned, n_out, "output")
    if len(output_names) != n_out:
        raise InputError(f"--output-names gives {len(output_names)} names for {n_out} outputs")
    _unique("input", input_names)
    _unique("output", output_names)
    _distinct(input_names, output_names)  # a name from forward's arguments or its dict of outputs
    dest.parent.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:  # a notice quoting an exporter's error names no scratch file either
        note(_scrubbed(msg, dest))

    with naming_output(dest), scratch_beside(dest, "export") as scratch:
        raw = Path(scratch) / "raw.onnx"
        held_in = [f"{PLACEHOLDER}input_{i}" for i in range(len(input_names))]
        held_out = [f"{PLACEHOLDER}output_{i}" for i in range(len(output_names))]
        batched: list[int | None] = [None] * len(leaves)
        if options.dynamic_batch:
            batched = _batched(torch_model, args)
        extra = _extra_axes(options.dynamic_axes, leaves, input_names, batched)
        exporter, traced = _torch_export(
            torch_model, args, raw, held_in, held_out, options, say, batched, extra
        )
        exported = onnx.load(os.fspath(raw))
        rename_values(exported, dict(zip(held_in + held_out, input_names + output_names, strict=True)))
        if any(extra):
            _loosen_outputs(exported, raw, _resized(args, extra, LENGTH_RULES[0])[0], input_names)
        onnx.save(exported, os.fspath(raw))
        with atomic_path(dest, suffix=".onnx") as tmp:
            name = f"the model exported for {dest}"
            try:
                model, before, after, simplified = finalize_onnx(raw, tmp, options, say, name=name)
            except InputError as exc:
                if (why := _float64_refusal(str(exc), source, torch_model, args)) is None:
                    raise
                raise InputError(why) from None
            exported_io = _ExportedIO(input_names, output_names, [value for _, value in reference], extra)
            _check_named(model, options.dynamic_axes)
            differs = compare_with_module(tmp, model.graph, torch_model, args, exported_io, traced, say)
            if differs and simplified:  # onnxslim's doing or the exporter's: the unsimplified model tells
                plain = finalize_onnx(raw, tmp, replace(options, simplify=False), _quiet, name=name)
                again = compare_with_module(tmp, plain[0].graph, torch_model, args, exported_io, [], _quiet)
                if again is None:
                    slim = differs.removeprefix("the exported model ")
                    say(f"notice: onnxslim's output {slim}; kept the model unsimplified")
                    (model, before, after, simplified), differs = plain, None
                elif not options.verify:  # the exporter's: kept simplified, as asked
                    model, before, after, simplified = finalize_onnx(raw, tmp, options, _quiet, name=name)
            if differs and options.verify:
                raise InputError(f"{differs}; it was not kept (keep it with {KEEP_ANYWAY})")
    warned = [*traced, *([f"{differs}; kept anyway ({KEEP_ANYWAY})"] if differs else [])]
    batch_inputs = {name: b for name, b in zip(input_names, batched, strict=True) if b is not None}
    return _Exported(exporter, model, before, after, simplified, warned, batch_inputs)


def _quiet(_msg: str) -> None:
    """A Notify that says nothing: for a pass whose notices were given already."""


def _float64_refusal(error: str, source: str, model: Any, args: tuple[Any, ...]) -> str | None:
    """The error for a float64 model that ONNX Runtime has no kernel for, or None for another error.
    ONNX Runtime's CPU kernels of Conv (and others) are float32 and float16 only, and such a model
    was refused as "ONNX Runtime cannot load raw.onnx itself (... Conv(11) ...)", naming our
    scratch file and not what to do."""
    torch = _import_torch()
    missing = re.search(r"Could not find an implementation for (\w+)\(\d+\)", error)
    leaves = _flatten(args)
    tensors = [*model.parameters(), *model.buffers(), *(a for a in leaves if isinstance(a, torch.Tensor))]
    if missing is None or not any(t.dtype == torch.float64 for t in tensors):
        return None
    return (
        f"{source}: the model is float64 and ONNX Runtime has no float64 kernel for "
        f"{missing.group(1)}: export it in float32 (.float() on the model and its example inputs)"
    )


@dataclass
class _Exported:
    exporter: str
    model: onnx.ModelProto
    nodes_before: int
    nodes_after: int
    simplified: bool
    warnings: list[str]
    batched: dict[str, int]  # the inputs declared to hold the batch -> its axis (see _batched)


@dataclass
class _ExportedIO:
    """The graph's input names (one per example tensor, in order), its output names, and what
    forward returned for the example, flattened as the exporters flatten it."""

    inputs: list[str]
    outputs: list[str]
    reference: list[np.ndarray | None]
    extra: list[dict[int, str]] = field(default_factory=list)  # --dynamic's axes per input (_extra_axes)


KEEP_ANYWAY = "export --no-verify, or verify = false in a config's [export]"


def compare_with_module(
    path: Path,
    graph: onnx.GraphProto,
    model: Any,
    args: tuple[Any, ...],
    io_names: _ExportedIO,
    traced: list[str],
    notify: Notify,
) -> str | None:
    """Run the exported model at ``path`` (its ``graph`` as saved there) in ONNX Runtime (CPU) on
    the example inputs ``args`` and on two more sets of other values of their shapes
    (:func:`_other_inputs`), compare its outputs with the module's, and say the first that differs
    beyond float32's rounding: by more than
    ``FLOAT32_ATOL + FLOAT32_RTOL * max|torch|`` (None when all agree;
    :func:`~calibration.artifacts.output_difference`).

    A trace (the TorchScript exporter, the dynamo one's fallback) runs forward once and keeps
    what it reads from a tensor as a constant: ``x.sum() > 0 and l(x) or -l(x)`` came out as one
    branch, exported without a word (tests/test_export_verify.py). The example alone may not show it
    (the branch frozen is the example's), hence the other values. A comparison that cannot be made
    (an input that is no tensor, an output numpy cannot hold) is skipped with a notice."""
    torch = _import_torch()
    import onnxruntime as ort

    inits = {i.name for i in graph.initializer}
    why = None
    if not all(isinstance(a, torch.Tensor) and _numpy_dtype(a) for a in _flatten(args)):
        why = "an example input is not a tensor numpy can hold"
    elif [i.name for i in graph.input if i.name not in inits] != io_names.inputs:
        why = "its inputs are not the example's tensors"
    elif [o.name for o in graph.output] != io_names.outputs or any(r is None for r in io_names.reference):
        why = "an output of forward is not a tensor numpy can hold"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = None
    try:
        if why is None:
            session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # verify() loaded it at the default level: not expected
        why = first_line(exc)[:200]
    if session is None:
        notify(f"notice: the exported model was not compared with the PyTorch module ({why})")
        return None
    batches: list[tuple[str, tuple[Any, ...], list[np.ndarray | None]]] = [
        ("the example inputs", args, io_names.reference)
    ]
    for i, other in enumerate(_other_inputs(args)):
        try:
            expected = [value for _, value in _forward_leaves(model, other)]
        except InputError:  # forward refuses these values (an assert on them): nothing to compare
            continue
        if len(expected) == len(io_names.outputs):
            label = f"a {('second', 'third')[i]} set of inputs of the example's shapes"
            batches.append((label, other, expected))
    if any(io_names.extra):
        lengths = _other_lengths(model, args, io_names.extra)
        if lengths is None:
            notify(
                "notice: the exported model was not compared with the PyTorch module at other sizes of its "
                "--dynamic dims: forward refuses twice, half and one more than the example's sizes"
            )
        else:
            other, expected, label = lengths
            if len(expected) == len(io_names.outputs):
                batches.append((label, other, expected))
    traced_at = f"; the TorchScript trace warned at {', '.join(_cited(traced))}" if traced else ""
    # On a constant example (--input's zeros) the values a TopK or sort ranks all tie, and torch and
    # ONNX Runtime order ties each its own way (ONNX: lower index first): its integer outputs are
    # judged on the other sets, whose values do not tie, where there are any
    ties = len(batches) > 1 and _constant(_flatten(args))
    for label, inputs, expected in batches:
        feed = {n: a.detach().cpu().numpy() for n, a in zip(io_names.inputs, _flatten(inputs), strict=True)}
        try:
            got = session.run(io_names.outputs, feed)
        except Exception as exc:
            return f"the exported model fails in ONNX Runtime on {label}: {first_line(exc)[:200]}{traced_at}"
        for name, want, have in zip(io_names.outputs, expected, got, strict=True):
            if want is None or (ties and inputs is args and want.dtype.kind in "iu"):
                continue
            if differs := output_difference(want, np.asarray(have), "torch gives"):
                if random := _nondeterministic(model, inputs, expected, io_names.outputs, label):
                    return random
                return (
                    f"the exported model computes other values than the PyTorch module: output '{name}' "
                    f"{differs} on {label}{traced_at}"
                )
    return None


def _constant(leaves: list[Any]) -> bool:
    """Whether every one of ``leaves`` (tensors) holds one value throughout, as ``--input``'s zeros do."""
    torch = _import_torch()
    return all(
        isinstance(a, torch.Tensor) and a.numel() > 0 and bool((a == a.reshape(-1)[0]).all()) for a in leaves
    )


def _nondeterministic(
    model: Any, inputs: tuple[Any, ...], expected: list[np.ndarray | None], names: list[str], label: str
) -> str | None:
    """Why no export can match ``model`` when forward, run again on ``inputs``, gives other outputs
    than ``expected`` (its first run's): randomness in forward (dropout applied in eval mode too,
    ``torch.rand``). Such a model failed the comparison as "the exported model computes other
    values than the PyTorch module", as if the export were wrong. None when forward repeats itself."""
    try:
        again = [value for _, value in _forward_leaves(model, inputs)]
    except InputError:
        return None
    for name, first, second in zip(names, expected, again, strict=False):
        if first is None or second is None:
            continue
        if (differs := output_difference(first, second, "torch gives")) is None:
            continue
        return (
            f"the model is not deterministic: two torch runs on the same inputs differ (output '{name}' "
            f"{differs.split(' (')[0]} on {label}), so the export cannot be checked: forward draws random "
            "numbers (dropout kept on, as F.dropout(x, training=True); torch.rand, randn): tie them to "
            "self.training"
        )
    return None


def _cited(traced: list[str]) -> list[str]:
    """``FILE:LINE`` of each TracerWarning line (:func:`_traced_warnings`), each once."""
    cited = [line.split(" ")[2] for line in traced if line.startswith("TracerWarning at ")]
    return list(dict.fromkeys(cited))


def _numpy_dtype(tensor: Any) -> bool:
    try:
        tensor.detach().cpu().reshape(-1)[:0].numpy()
    except (TypeError, RuntimeError):  # bfloat16, a quantized tensor
        return False
    return True


def _other_inputs(args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Two sets of other inputs of the example tensors' shapes, dtypes and devices, seeded: for a
    float tensor ``e``, ``-e + s * z`` and ``e - s * z`` (``z`` standard normal, ``s`` the std of
    ``e``, 1 when ``e`` is constant: the ``zeros`` of ``--input``), so that a branch on the sign of
    a sum, a mean or a value takes its other side in one of them; for an integer or boolean tensor,
    two shuffles of its values (token ids stay in the vocabulary, a mask stays 0/1). A set that is
    the example over again (an integer example of one value) is left out."""
    torch = _import_torch()
    rng = np.random.default_rng(0)
    sets: tuple[list[Any], list[Any]] = ([], [])
    leaves = _flatten(args)
    for arg in leaves:
        if not isinstance(arg, torch.Tensor) or arg.numel() == 0 or arg.is_complex():
            for made in sets:
                made.append(arg)
            continue
        if arg.is_floating_point():
            e = arg.detach().cpu().double().numpy()
            finite = np.isfinite(e)
            scale = float(e[finite].std()) if finite.any() else 0.0
            noise = (scale if scale > 0 else 1.0) * rng.standard_normal(e.shape)
            pair = (np.where(finite, -e + noise, e), np.where(finite, e - noise, e))
        else:
            flat = arg.detach().cpu().numpy().reshape(-1)
            pair = (rng.permutation(flat).reshape(arg.shape), rng.permutation(flat).reshape(arg.shape))
        for made, values in zip(sets, pair, strict=True):
            made.append(torch.from_numpy(np.ascontiguousarray(values)).to(dtype=arg.dtype, device=arg.device))

    def same(made: list[Any]) -> bool:
        return all(a is b or torch.equal(a, b) for a, b in zip(made, leaves, strict=True))

    return [_rebuild(args, made) for made in sets if not same(made)]


PLACEHOLDER = "edgedeploy_placeholder_"  # the graph's input and output names during an export


def rename_values(model: onnx.ModelProto, names: dict[str, str]) -> None:
    """Rename the values ``names`` maps, in place, in the graph and its subgraphs; a value that
    already holds one of the new names is renamed aside first (``NAME__1``).

    The export names the graph's inputs and outputs with placeholders and this gives them the
    names the user chose: the exporters name them as asked but do not keep another value from
    holding that name. The dynamo exporter named the outputs ``--output-names relu`` and
    ``conv.weight`` beside an inner Relu's output and a weight of those names, and the checker
    refused the file (tests/test_export_names.py). Hand-written: neither onnx nor onnxslim
    renames a value everywhere it is read."""
    graphs = all_graphs(model.graph)
    taken = {name for graph in graphs for name in _value_names(graph)}
    mapping = dict(names)
    for new in names.values():
        if new in taken and new not in names:
            suffix = 1
            while f"{new}__{suffix}" in taken or f"{new}__{suffix}" in names.values():
                suffix += 1
            mapping[new] = f"{new}__{suffix}"
            taken.add(mapping[new])

    def renamed(items: Any) -> None:
        for i, name in enumerate(items):
            if name in mapping:
                items[i] = mapping[name]

    for graph in graphs:
        for node in graph.node:
            renamed(node.input)
            renamed(node.output)
        for info in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
            info.name = mapping.get(info.name, info.name)
        for sparse in graph.sparse_initializer:
            sparse.values.name = mapping.get(sparse.values.name, sparse.values.name)


def _value_names(graph: onnx.GraphProto) -> Iterator[str]:
    yield from (i.name for i in [*graph.input, *graph.output, *graph.value_info, *graph.initializer])
    yield from (s.values.name for s in graph.sparse_initializer)
    for node in graph.node:
        yield from node.input
        yield from node.output


def _scratch_paths(dest: Path) -> re.Pattern[str]:
    """Paths of our temporary files and folders beside ``dest``: the export's scratch folder
    (``scratch_beside``) and an atomic write's temporary file, both named ``.NAME.PID.…``
    (``temp_prefix`` in calibration/atomic.py), relative or not, with what is inside them."""
    return re.compile(r"(?:[^\s'\"]*/)?" + re.escape(temp_prefix(dest)) + r"[^\s'\"/:]*(?:/[^\s'\"/:]*)*")


def _scrubbed(text: str, dest: Path) -> str:
    return _scratch_paths(dest).sub(lambda _m: str(dest), text)


@contextlib.contextmanager
def naming_output(dest: Path) -> Iterator[None]:
    """An error that names one of our temporary files beside ``dest`` (the checker's, a library's,
    a full disk's) names ``dest``, the file the user asked for, instead."""
    try:
        yield
    except EdgeDeployError as exc:
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (_scrubbed(exc.args[0], dest), *exc.args[1:])
        raise
    except OSError as exc:
        for attr in ("filename", "filename2"):
            value = getattr(exc, attr)
            if isinstance(value, (str, os.PathLike)) and _scratch_paths(dest).fullmatch(os.fspath(value)):
                setattr(exc, attr, os.fspath(dest))
        raise


def export_module(
    torch_model: Any,
    example: Any,
    dest: str | os.PathLike[str],
    options: ExportOptions | None = None,
    notify: Notify = lambda _msg: None,
) -> ExportResult:
    """Export an in-memory torch.nn.Module (used by the demo and by Python callers). The result's
    warnings say what came out other than asked, as :func:`export`'s do (the opset, a batch fixed)."""
    options = options or ExportOptions()
    check_opset(options.opset)
    check_names(options)
    dest = Path(dest)
    notices: list[str] = []

    def note(msg: str) -> None:
        notices.append(msg)
        notify(msg)

    done = _export_module(torch_model.eval(), example, dest, options, note, type(torch_model).__name__)
    result = _result(
        dest,
        type(torch_model).__name__,
        done.exporter,
        done.model,
        done.nodes_before,
        done.nodes_after,
        done.simplified,
        notices,
    )
    result.warnings.extend(done.warnings)
    if result.opset != options.opset:
        result.warnings.append(_other_opset(options.opset, result))
    result.warnings.extend(_fixed_batch_warning(result, done))
    return result
