"""Turn BuildOptions into the exact TensorRT build settings, refusing what cannot work, before any build.

Pure Python (no tensorrt import), so every rule is tested on the CPU: which precision path a
TensorRT version takes (strongly typed on >= 10, builder flags plus calibration cache on 8.x, no
FP16/INT8 flags on 11), the workspace default and Jetson cap, optimization profiles, DLA, hardware
and version compatibility. Every option is checked against the TensorRT release first
(trt_versions: which release binds which API), so an option the release lacks is one line, never
an AttributeError from deep inside a build. The resulting :class:`EnginePlan` is JSON-able: it goes
into the sidecar and into the build key, so two builds with the same plan, inputs and machine are the
same build.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.errors import CalibrationError
from calibration.modelinfo import graph_io, is_named, load_model_header, shape_text
from calibration.trt_cache import read_cache
from edgedeploy.backends import trt_versions
from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.trt_versions import TrtVersion
from edgedeploy.errors import InputError
from edgedeploy.options import ShapeProfile

__all__ = ["EnginePlan", "ModelFacts", "TrtVersion", "plan_build", "read_model_facts"]

MEMORY_POOLS = (
    "workspace",
    "tactic_shared_memory",
    "dla_managed_sram",
    "dla_local_dram",
    "dla_global_dram",
    "tactic_dram",
)
HARDWARE_COMPAT = {
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
}
PROFILING_VERBOSITY = {"detailed": "DETAILED", "layer_names_only": "LAYER_NAMES_ONLY", "none": "NONE"}


@dataclass
class EnginePlan:
    """Resolved build settings: what trt_build hands to Polygraphy's loaders."""

    precision: str
    tensorrt: str
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    fp8_flag: bool
    tf32: bool  # True is TensorRT's (and trtexec's) default; False only when asked (--no-tf32)
    memory_pools: dict[str, int]  # MemoryPoolType member name -> bytes
    profiles: list[dict[str, list[list[int]]]]  # per profile: input -> [min, opt, max]
    optimization_level: int | None
    dla_core: int | None
    gpu_fallback: bool
    hardware_compatibility: str | None  # HardwareCompatibilityLevel member name
    version_compatible: bool
    profiling_verbosity: str  # ProfilingVerbosity member name
    calibration_cache: str | None  # path, only on the 8.x implicit INT8 path
    fp32_layers: list[str] = field(default_factory=list)  # 8.x: layers pinned to FP32
    parser_flags: list[str] = field(default_factory=list)  # OnnxParserFlag members to set
    notes: list[str] = field(default_factory=list)  # told to the user, not part of the key

    def key_fields(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("notes")
        data.pop("calibration_cache")  # its hash is in the key instead of its path
        return data


@dataclass(frozen=True)
class ModelFacts:
    """What the plan needs to know about the ONNX (read without its weights)."""

    inputs: dict[str, tuple[int | str | None, ...]]
    has_qdq: bool
    has_fp16: bool
    has_fp8: bool


def read_model_facts(model: Path) -> ModelFacts:
    import onnx

    try:
        proto = load_model_header(model)
    except CalibrationError as exc:
        raise InputError(str(exc)) from None
    inputs, _ = graph_io(proto)
    ops = {node.op_type for node in proto.graph.node}
    fp16 = onnx.TensorProto.FLOAT16
    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}
    elem_types = {init.data_type for init in proto.graph.initializer}
    for vi in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        elem_types.add(vi.type.tensor_type.elem_type)
    for node in proto.graph.node:
        if node.op_type == "Cast":
            elem_types.update(a.i for a in node.attribute if a.name == "to")
    return ModelFacts(
        inputs={spec.name: spec.shape for spec in inputs},
        has_qdq=bool(ops & {"QuantizeLinear", "DequantizeLinear"}),
        has_fp16=fp16 in elem_types,
        has_fp8=bool(fp8 & elem_types),
    )


def refuse_values_tensorrt_lacks(model: Path, target: str, instead: str) -> None:
    """InputError, before any work, for a model with an input or output TensorRT cannot hold: a string
    tensor (text a tokenizer in the graph reads, class names from a LabelEncoder), or a value that
    is not a tensor (scikit-learn's ZipMap of class probabilities, a sequence, an optional).
    TensorRT's DataType has no string type and its engines take and give tensors only; its ONNX
    parser refuses such an input, and such an output once its nodes are imported
    (docs/tensorrt-facts.md, "No string tensors"). ``target``: the target whose engine it would be;
    ``instead``: what the user can do, as the command words it."""
    try:
        inputs, outputs = graph_io(load_model_header(model))
    except CalibrationError as exc:
        raise InputError(str(exc)) from None
    for role, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            if spec.kind is not None:
                why = f"is {spec.kind}, not a tensor, and TensorRT takes and gives tensors only"
            elif spec.dtype == "object":
                why = "is text (tensor(string)), and TensorRT has no string tensors"
            else:
                continue
            raise InputError(
                f"{model.name}: {role} '{spec.name}' {why} (its ONNX parser refuses it): no {target} "
                f"engine can be built from this model; {instead}"
            )


def read_fp32_layers(precision_plan: Path | None) -> list[str]:
    """Node names the precision stage kept in FP32, from its plan JSON.

    Reads precision/fp16.py's plan (``{"nodes": [{"node": ..., "precision": "fp32"|"fp16"}, ...]}``),
    and also a plain list of names or ``{"fp32_nodes": [...]}``.
    """
    if precision_plan is None:
        return []
    try:
        data = json.loads(Path(precision_plan).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read precision plan {precision_plan}: {exc}") from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("fp32_nodes", "keep_fp32", "nodes") if k in data), [])
    if not isinstance(data, list):
        raise InputError(f"precision plan {precision_plan}: expected a list of nodes")
    names: list[object] = []
    for item in data:
        if isinstance(item, dict):
            if item.get("precision", "fp32") == "fp32":
                names.append(item.get("node", item.get("name")))
        else:
            names.append(item)
    if not all(isinstance(n, str) for n in names):
        raise InputError(f"precision plan {precision_plan}: node names must be strings")
    return sorted({str(n) for n in names})


def _resolve_profiles(given: list[ShapeProfile], facts: ModelFacts) -> list[dict[str, list[list[int]]]]:
    profiles: list[dict[str, list[list[int]]]] = []
    for index, profile in enumerate(given):
        resolved: dict[str, list[list[int]]] = {}
        for name, (lo, opt, hi) in profile.shapes.items():
            where = f"profile {index} input '{name}'"
            if name not in facts.inputs:
                raise InputError(
                    f"{where}: the model has no such input; inputs: {', '.join(facts.inputs) or '(none)'}"
                )
            model_shape = facts.inputs[name]
            if not len(lo) == len(opt) == len(hi) == len(model_shape):
                raise InputError(
                    f"{where}: min/opt/max must all have rank {len(model_shape)} like the model "
                    f"({list(lo)}, {list(opt)}, {list(hi)})"
                )
            for axis, (a, b, c, m) in enumerate(zip(lo, opt, hi, model_shape, strict=True)):
                if a < 1 or not a <= b <= c:
                    raise InputError(f"{where}: axis {axis} needs 1 <= min <= opt <= max, got {a}/{b}/{c}")
                if isinstance(m, int) and not a == b == c == m:
                    raise InputError(f"{where}: axis {axis} is fixed at {m} in the model, got {a}/{b}/{c}")
            resolved[name] = [list(lo), list(opt), list(hi)]
        _refuse_split_names(resolved, facts, index)
        profiles.append(resolved)
    dynamic = [n for n, s in facts.inputs.items() if any(not isinstance(d, int) for d in s)]
    for name in dynamic:
        for ranged in profiles:
            if name not in ranged and (
                follows := shared_dim_ranges(facts.inputs[name], ranged, facts.inputs)
            ):
                ranged[name] = follows
        missing = [i for i, p in enumerate(profiles) if name not in p]
        if not profiles or missing:
            raise InputError(
                f"input '{name}' has dynamic dims {shape_text(facts.inputs[name], sep=', ')}: give its shape "
                f"range with --profile {profile_example(name, facts.inputs[name])} (NAME:MIN,OPT,MAX) "
                "in every profile"
            )
    return profiles


def shared_dim_ranges(
    shape: tuple[int | str | None, ...],
    profile: Mapping[str, list[list[int]]],
    inputs: Mapping[str, tuple[int | str | None, ...]],
) -> list[list[int]] | None:
    """[min, opt, max] for an input whose every dynamic dim is named as a dim of an input the
    profile ranges (silero-vad's ``state[2, batch, 128]`` beside ``input[batch, sequence]``): an
    ONNX dim name stands for one size across the model, so the state takes the batch's range
    instead of needing a range of its own. None when a dynamic dim has no such name."""
    ranges: list[list[int]] = [[], [], []]
    for dim in shape:
        if isinstance(dim, int) and dim > 0:
            sizes = [dim] * 3
        else:
            found = [
                [rng[axis] for rng in profile[other]]
                for other, other_shape in inputs.items()
                if other in profile
                for axis, named in enumerate(other_shape)
                if is_named(dim) and named == dim
            ]
            if not found:
                return None
            sizes = found[0]
        for k in range(3):
            ranges[k].append(sizes[k])
    return ranges


def _refuse_split_names(resolved: Mapping[str, list[list[int]]], facts: ModelFacts, index: int) -> None:
    """A dim the model names in two inputs must get one range from a profile: TensorRT would build
    for shapes the model cannot run (a batch of 8 inputs beside a state of 1)."""
    seen: dict[str, tuple[str, list[int]]] = {}
    for name, rng in resolved.items():
        for axis, dim in enumerate(facts.inputs[name]):
            if not is_named(dim):
                continue
            sizes = [r[axis] for r in rng]
            first = seen.setdefault(dim, (name, sizes))
            if first[1] != sizes:
                raise InputError(
                    f"profile {index}: inputs '{first[0]}' and '{name}' share the dim '{dim}' but are "
                    f"given {'/'.join(map(str, first[1]))} and {'/'.join(map(str, sizes))} (min/opt/max) "
                    f"for it: give them the same range, or leave '{name}' out to take '{first[0]}''s"
                )


def resolve_profiles(model: Path, profiles: list[ShapeProfile]) -> list[dict[str, list[list[int]]]]:
    """``profiles`` checked against ``model`` as a build checks them (input names, ranks, fixed dims,
    every dynamic input in every profile): per profile, input -> [min, opt, max]."""
    return _resolve_profiles(profiles, read_model_facts(model))


def check_option_values(model: Path | None, options: BuildOptions) -> None:
    """The TensorRT option values that are wrong whatever the TensorRT version or backend.

    Run before any work, also where ONNX Runtime builds (a bad value in a config must not wait
    for the GPU machine to be found out).
    """
    unknown = {name.lower() for name in options.memory_pools_mb} - set(MEMORY_POOLS)
    if unknown:
        raise InputError(
            f"unknown memory pool(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEMORY_POOLS)}"
        )
    if any(not isinstance(mb, int) or mb <= 0 for mb in options.memory_pools_mb.values()) or (
        options.workspace_mb is not None and options.workspace_mb <= 0
    ):
        raise InputError("memory pool limits (and --workspace-mb) must be positive MB values")
    if options.optimization_level is not None and not 0 <= options.optimization_level <= 5:
        raise InputError(f"--opt-level must be 0..5, got {options.optimization_level}")
    key = (options.hardware_compatibility or "none").lower()
    if key not in HARDWARE_COMPAT:
        raise InputError(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}, got '{key}'")
    if (options.profiling_verbosity or "detailed").lower() not in PROFILING_VERBOSITY:
        raise InputError(f"--profiling-verbosity must be one of {', '.join(PROFILING_VERBOSITY)}")
    if options.profiles and model is not None:  # as a build checks them: names, ranks, fixed dims
        _resolve_profiles(options.profiles, read_model_facts(model))


def profile_example(name: str, shape: tuple[int | str | None, ...]) -> str:
    """A ``--profile`` value the parser accepts for this input: dynamic dims 1, 4 and 8, fixed dims kept."""

    def dims(size: int) -> str:
        return "x".join(str(d) if isinstance(d, int) and d > 0 else str(size) for d in shape)

    return f"{name}:{dims(1)},{dims(4)},{dims(8)}"


def _is_dynamic(profiles: list[dict[str, list[list[int]]]]) -> bool:
    return any(rng[0] != rng[2] for p in profiles for rng in p.values())


def check_settings(
    options: BuildOptions, version: TrtVersion, profiles: list[dict[str, list[list[int]]]]
) -> None:
    """Refuse what the options ask of this TensorRT ``version`` and the target, given the resolved
    shape ``profiles``: every rule that needs no precision artifact. The build runs it on the
    artifact's plan, and the backend's check_options before the precision stage writes anything
    (DLA with dynamic shapes was refused only after the fp16 artifact, plan and ranges were written)."""
    target = options.target
    precision = options.precision
    if not target.is_gpu:
        raise InputError(
            f"target '{target.name}' is not a GPU; TensorRT builds for Jetson and desktop GPU targets"
        )
    target.check_precision(precision)
    check_release(options, version)
    if precision == "fp8" and (target.cc_tuple < (8, 9) or version.major < 10):
        raise InputError(
            f"fp8 needs compute capability >= 8.9 and TensorRT >= 10 ({target.name}: "
            f"{target.compute_capability}, TensorRT {version})"
        )
    check_option_values(None, options)
    if options.dla_core is not None:
        target.check_dla(options.dla_core)
        if precision not in ("fp16", "int8"):
            raise InputError(f"DLA runs FP16 and INT8 only; build {precision} on the GPU (drop --dla-core)")
        if _is_dynamic(profiles):
            raise InputError(
                "DLA needs static shapes: give profiles with min = opt = max, or drop --dla-core"
            )
    compat = (options.hardware_compatibility or "none").lower()
    if compat != "none":
        if target.kind == "jetson" or options.dla_core is not None:
            raise InputError("hardware-compatible engines are for desktop GPUs only (not Jetson, not DLA)")
        if compat == "ampere_plus" and target.cc_tuple < (8, 0):
            raise InputError(
                f"ampere_plus needs compute capability >= 8.0; {target.name} has {target.compute_capability}"
            )


def plan_build(model: Path, options: BuildOptions, version: TrtVersion, facts: ModelFacts) -> EnginePlan:
    """Decide every TensorRT setting for ``model`` or refuse with the reason."""
    target = options.target
    precision = options.precision
    notes: list[str] = []
    profiles = _resolve_profiles(options.profiles, facts)
    check_settings(options, version, profiles)

    strongly_typed = version.major >= 10
    fp16_flag = int8_flag = fp8_flag = False
    calibration_cache: str | None = None
    fp32_layers: list[str] = []
    if strongly_typed:
        # Precision is in the ONNX graph; TensorRT 11 has no FP16/INT8 flags, TensorRT 10 forbids them
        # on strongly typed networks.
        if precision == "fp16" and not facts.has_fp16:
            raise InputError(
                f"{model.name} has no float16 tensors: TensorRT {version} builds precision from the graph, "
                "so pass the fp16 ONNX from the precision stage"
            )
        if precision == "int8" and not facts.has_qdq:
            raise InputError(
                f"{model.name} has no Q/DQ nodes: TensorRT {version} builds INT8 only from the Q/DQ ONNX "
                "made by calibration (implicit INT8 calibration is deprecated in 10 and gone in 11)"
            )
        if precision == "fp8" and not facts.has_fp8:
            raise InputError(f"{model.name} has no FP8 Q/DQ nodes; fp8 needs an FP8-quantized ONNX")
        if options.calibration_cache is not None:
            notes.append(
                f"calibration cache ignored: TensorRT {version} builds the Q/DQ graph strongly typed"
            )
        if options.precision_plan is not None:
            notes.append("precision plan already applied in the graph (strongly typed build keeps its casts)")
    else:
        fp16_flag = precision in ("fp16", "int8") and "fp16" in target.precisions
        int8_flag = precision == "int8"
        if int8_flag and not facts.has_qdq:
            if options.calibration_cache is None:
                raise InputError(
                    f"{model.name} has no Q/DQ nodes, so INT8 on TensorRT {version} needs the calibration "
                    "cache from the calibration stage (--calibration-cache FILE)"
                )
            calibration_cache = str(options.calibration_cache)
            check_cache_header(Path(options.calibration_cache), version)
            try:  # every line as TensorRT writes it, as calibrate --from-cache checks it
                read_cache(options.calibration_cache)
            except CalibrationError as exc:
                raise InputError(str(exc)) from None
        fp32_layers = read_fp32_layers(options.precision_plan) if precision != "fp32" else []

    workspace_mb = options.workspace_mb or target.default_workspace_mb
    pools_mb = {name.lower(): mb for name, mb in options.memory_pools_mb.items()}
    workspace_mb = pools_mb.pop("workspace", workspace_mb)  # names and values: check_settings
    if target.max_workspace_mb and workspace_mb > target.max_workspace_mb:
        notes.append(
            f"workspace capped at {target.max_workspace_mb} MB for {target.name} "
            f"(asked {workspace_mb} MB; a larger pool makes Jetson builds run out of memory)"
        )
        workspace_mb = target.max_workspace_mb
    pools = {"WORKSPACE": workspace_mb << 20}
    pools.update({name.upper(): mb << 20 for name, mb in pools_mb.items()})

    gpu_fallback = options.dla_core is not None  # layers the DLA cannot run fall back to the GPU
    hardware = None
    if options.hardware_compatibility and options.hardware_compatibility.lower() != "none":
        hardware = HARDWARE_COMPAT[options.hardware_compatibility.lower()]
    parser_flags = []
    if (hardware or options.version_compatible) and version.major < 10:
        # 8.6's parser imports InstanceNormalization as a plugin unless NATIVE_INSTANCENORM is set, and
        # compatible engines need the native layer, as trtexec sets it; from 10.0 the flag is on by
        # default (docs/tensorrt-facts.md, "NATIVE_INSTANCENORM").
        parser_flags.append("NATIVE_INSTANCENORM")

    verbosity_key = (options.profiling_verbosity or "detailed").lower()
    if verbosity_key != "detailed":
        notes.append("profiling verbosity below 'detailed': the layer report shows names only")

    return EnginePlan(
        precision=precision,
        tensorrt=str(version),
        strongly_typed=strongly_typed,
        fp16_flag=fp16_flag,
        int8_flag=int8_flag,
        fp8_flag=fp8_flag,
        tf32=options.tf32 is not False,
        memory_pools=pools,
        profiles=profiles,
        optimization_level=options.optimization_level,
        dla_core=options.dla_core,
        gpu_fallback=gpu_fallback,
        hardware_compatibility=hardware,
        version_compatible=options.version_compatible,
        profiling_verbosity=PROFILING_VERBOSITY[verbosity_key],
        calibration_cache=calibration_cache,
        fp32_layers=fp32_layers,
        parser_flags=parser_flags,
        notes=notes,
    )


def check_release(options: BuildOptions, version: TrtVersion) -> None:
    """Refuse, in one line naming the release that has it, every option this TensorRT lacks."""
    if trt_versions.reference_release(version) is None:
        raise InputError(f"TensorRT {version} is too old; edgedeploy needs TensorRT 8.5 or newer")
    require = trt_versions.require
    for pool in options.memory_pools_mb:
        item = trt_versions.MEMORY_POOL_ITEMS.get(pool.lower())
        if item:
            require(f"--memory-pool {pool.lower()}", (item,), version)
    if options.optimization_level is not None:
        require("--opt-level", trt_versions.PATH_ITEMS["optimization_level"], version)
    compat = (options.hardware_compatibility or "none").lower()
    if compat in trt_versions.HARDWARE_COMPAT_ITEMS:
        require(f"--hardware-compat {compat}", trt_versions.HARDWARE_COMPAT_ITEMS[compat], version)
    if options.version_compatible:
        require("--version-compatible", trt_versions.PATH_ITEMS["version_compatible"], version)
    if options.dla_core is not None:
        trt_versions.require_dla(version)
    verbosity = (options.profiling_verbosity or "detailed").lower()
    if verbosity in trt_versions.VERBOSITY_ITEMS:
        require(f"--profiling-verbosity {verbosity}", (trt_versions.VERBOSITY_ITEMS[verbosity],), version)
    if options.precision == "bf16":
        require("bf16", ("DataType.BF16",), version)
    if options.tf32 is False:
        require("--no-tf32", trt_versions.PATH_ITEMS["tf32_cleared"], version)
    if version.major >= 10:
        require("a strongly typed build", trt_versions.PATH_ITEMS["strongly_typed"], version)
    else:
        if options.precision in ("fp16", "int8"):
            require(f"{options.precision} builder flags", trt_versions.PATH_ITEMS["fp16_flag"], version)
        if options.precision == "int8":
            require("int8 builder flags", trt_versions.PATH_ITEMS["int8_flag"], version)
        if options.calibration_cache is not None:
            require("--calibration-cache", trt_versions.PATH_ITEMS["calibration_cache"], version)
        if options.precision_plan is not None and options.precision != "fp32":
            require("fp32 layers of the precision plan", trt_versions.PATH_ITEMS["fp32_layers"], version)


def check_cache_header(cache: Path, version: TrtVersion) -> str:
    """Refuse a calibration cache written for another TensorRT version (TensorRT would ignore it silently)."""
    try:
        first = cache.read_text(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        raise InputError(f"cannot read calibration cache {cache}") from None
    match = re.match(r"^TRT-(\d+)-(\w+)$", first)
    if not match:
        raise InputError(f"{cache} is not a TensorRT calibration cache (first line '{first[:40]}')")
    if int(match.group(1)) != version.cache_code:
        raise InputError(
            f"calibration cache {cache} is for TensorRT code {match.group(1)}, this is TensorRT {version} "
            f"(code {version.cache_code}); TensorRT would ignore it: "
            "rewrite it for this version with calibration"
        )
    return match.group(2)
