"""The TensorRT build calls, composed from Polygraphy's loaders: the one module that drives the builder.

Polygraphy does what it does well: ``CreateConfig`` (profiles, memory pools, timing cache, flags,
DLA, calibrator), ``EngineBytesFromNetwork`` (the build) and ``Calibrator`` (serving the 8.x
calibration cache). Three things are ours, because Polygraphy's loaders hide what we must report:
the builder and network are created with our own logger (to recognise out-of-memory messages), the
ONNX parser's errors are read one by one (to name the failing node and op), and the timing cache is
loaded and saved by us (Polygraphy's util.LockFile leaves its ``.lock`` beside the cache for good):
saved atomically with what another build saved meanwhile combined in (:func:`save_timing_cache`).
The network creation flag for strong typing is computed from the enum: its value changed in
TensorRT 11. The layer report deserializes the plan only after the builder, network and
parser are freed (a 4 GB Jetson holds them and an engine at once otherwise), with the runtime set
up as trtexec does: host code allowed for version-compatible plans, DLA core set (docs/tensorrt-facts.md,
"Behaviour the JSON cannot express").
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedeploy.backends import trt_errors
from edgedeploy.backends.trt_env import free_memory_mb
from edgedeploy.backends.trt_plan import EnginePlan, TrtVersion
from edgedeploy.fileio import atomic_write_bytes, file_lock, scratch_dir

if TYPE_CHECKING:
    import tensorrt as trt

_log = logging.getLogger(__name__)  # build()'s ``log`` is the builder's messages


@dataclass
class BuildLog:
    """Messages the builder, parser and runtime logged, for error translation and the build record."""

    messages: list[tuple[str, str]] = field(default_factory=list)

    def add(self, severity: str, text: str) -> None:
        self.messages.append((severity, text))

    def errors(self) -> list[str]:
        return [text for severity, text in self.messages if severity in ("ERROR", "INTERNAL_ERROR")]

    def warnings(self) -> list[str]:
        return [text for severity, text in self.messages if severity == "WARNING"]


@dataclass
class BuiltEngine:
    plan_bytes: bytes
    layer_info_json: str
    seconds: float
    fp32_layers_pinned: list[str]
    fp32_layers_unmatched: list[str]
    layer_info_problem: str | None = None


def make_logger(log: BuildLog) -> trt.ILogger:
    """A TensorRT logger that records every message and forwards warnings and errors to Polygraphy's."""
    import tensorrt as trt_mod
    from polygraphy.logger import G_LOGGER

    severities = {
        trt_mod.ILogger.INTERNAL_ERROR: "INTERNAL_ERROR",
        trt_mod.ILogger.ERROR: "ERROR",
        trt_mod.ILogger.WARNING: "WARNING",
        trt_mod.ILogger.INFO: "INFO",
        trt_mod.ILogger.VERBOSE: "VERBOSE",
    }

    class RecordingLogger(trt_mod.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            name = severities.get(severity, "VERBOSE")
            log.add(name, msg)
            if name in ("ERROR", "INTERNAL_ERROR"):
                G_LOGGER.error(msg)
            elif name == "WARNING":
                G_LOGGER.warning(msg)

    logger: trt.ILogger = RecordingLogger()
    return logger


def network_flags(version: TrtVersion, strongly_typed: bool) -> int:
    """Creation flags: EXPLICIT_BATCH before 10 (ignored since), STRONGLY_TYPED from the enum."""
    import tensorrt as trt_mod

    flags = 0
    creation = trt_mod.NetworkDefinitionCreationFlag
    if version.major < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed:
        strong = getattr(creation, "STRONGLY_TYPED", None)
        if strong is not None:  # TensorRT 11 networks are always strongly typed
            flags |= 1 << int(strong)
    return flags


def parse_onnx(
    logger: trt.ILogger, model: Path, flags: int, parser_flags: list[str] | None = None
) -> tuple[trt.Builder, trt.INetworkDefinition, trt.OnnxParser]:
    import tensorrt as trt_mod

    builder = trt_mod.Builder(logger)
    network = builder.create_network(flags)
    parser = trt_mod.OnnxParser(network, logger)
    for name in parser_flags or []:  # set before parsing: the importers read them
        parser.set_flag(getattr(trt_mod.OnnxParserFlag, name))
    if not parser.parse_from_file(str(model)) or parser.num_errors:
        failures = []
        for index in range(parser.num_errors):
            err = parser.get_error(index)
            node = int(err.node())
            if node < 0:  # an error of the model, not of a node (docs/tensorrt-facts.md)
                node_name, op = "", ""
            elif hasattr(err, "node_name"):  # ParserError.node_name/node_operator: 10.0 on
                node_name, op = str(err.node_name()), str(err.node_operator())
            else:  # 8.x names only the node's index in the graph
                node_name, op = _node_at(model, node)
            failures.append(trt_errors.ParserFailure(node_name, op, str(err.desc())))
        raise trt_errors.parser_error(model.name, failures)
    return builder, network, parser


def _node_at(model: Path, index: int) -> tuple[str, str]:
    """Name and op of the ``index``-th node of ``model`` (read without its weights), or ``#index``."""
    from calibration.modelinfo import load_model_header

    try:
        nodes = load_model_header(model).graph.node
        node = nodes[index]
    except Exception:
        return f"#{index}", ""
    return node.name or f"#{index}", node.op_type


def pin_fp32_layers(network: trt.INetworkDefinition, names: list[str]) -> tuple[list[str], list[str]]:
    """TensorRT 8.x: run the layers made from these ONNX nodes in FP32. Returns (pinned, unmatched).

    A layer matches a node by its exact name (the ONNX parser names a node's layer after the node; a
    prefix would also catch ``conv_1`` for ``conv``). Only floating-point outputs get an output type:
    TopK's indices and shape operations' outputs are Int32 and TensorRT refuses any other type for
    them (docs/tensorrt-facts.md, "Output types"); a layer with no float output is left alone.
    """
    import tensorrt as trt_mod

    floats = {trt_mod.float32, trt_mod.float16}
    wanted = set(names)
    pinned: list[str] = []
    matched: set[str] = set()
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.name not in wanted:
            continue
        matched.add(layer.name)
        float_outputs = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype in floats]
        if not float_outputs:
            continue
        layer.precision = trt_mod.float32
        for out in float_outputs:
            layer.set_output_type(out, trt_mod.float32)
        pinned.append(layer.name)
    return pinned, sorted(wanted - matched)


def place_on_dla(config: trt.IBuilderConfig, core: int, gpu_fallback: bool) -> None:
    """Default device DLA on ``core``, with GPU fallback for the layers DLA cannot run.

    Ours rather than CreateConfig(use_dla=...): Polygraphy always picks core 0 and, before
    TensorRT 11, also sets PREFER_PRECISION_CONSTRAINTS, which strongly typed networks refuse.
    """
    import tensorrt as trt_mod

    config.default_device_type = trt_mod.DeviceType.DLA
    config.DLA_core = core
    if gpu_fallback:
        config.set_flag(trt_mod.BuilderFlag.GPU_FALLBACK)


def _calibrator(cache: Path, workdir: Path) -> Any:
    """Polygraphy's Calibrator serving an existing cache (copied, so TensorRT never rewrites ours)."""
    import tensorrt as trt_mod
    from polygraphy.backend.trt import Calibrator

    from calibration.trt_cache import CALIBRATORS

    algorithm = cache.read_text(errors="replace").splitlines()[0].split("-")[-1].strip()
    base = getattr(trt_mod, CALIBRATORS.get(algorithm, "IInt8EntropyCalibrator2"))
    copy = workdir / cache.name
    shutil.copyfile(cache, copy)
    return Calibrator(data_loader=iter(()), cache=str(copy), BaseClass=base)


def build(
    model: Path, plan: EnginePlan, *, timing_cache: Path | None, log: BuildLog, target_name: str
) -> BuiltEngine:
    """Parse, configure and build ``model`` per ``plan``; raises InputError with a translated message."""
    import tensorrt as trt_mod
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, Profile
    from polygraphy.exception import PolygraphyException

    version = TrtVersion.parse(trt_mod.__version__)
    logger = make_logger(log)
    builder, network, parser = parse_onnx(
        logger, model, network_flags(version, plan.strongly_typed), plan.parser_flags
    )
    pinned, unmatched = pin_fp32_layers(network, plan.fp32_layers) if plan.fp32_layers else ([], [])

    profiles = []
    for shapes in plan.profiles:
        profile = Profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.add(name, min=tuple(lo), opt=tuple(opt), max=tuple(hi))
        profiles.append(profile)
    workspace_mb = plan.memory_pools["WORKSPACE"] >> 20

    loaded = b""
    if timing_cache is not None:
        with _cache_lock(timing_cache):  # trtexec writes the cache in place under its lock
            loaded = _read_cache(timing_cache)
    with scratch_dir("trt") as tmp:
        calibrator = _calibrator(Path(plan.calibration_cache), Path(tmp)) if plan.calibration_cache else None
        create = CreateConfig(
            tf32=plan.tf32,
            fp16=plan.fp16_flag,  # False on strongly typed builds: the flags are gone in TensorRT 11
            int8=plan.int8_flag,
            calibrator=calibrator,
            profiles=profiles or None,
            memory_pool_limits={getattr(trt_mod.MemoryPoolType, k): v for k, v in plan.memory_pools.items()},
            builder_optimization_level=plan.optimization_level,
            hardware_compatibility_level=(
                getattr(trt_mod.HardwareCompatibilityLevel, plan.hardware_compatibility)
                if plan.hardware_compatibility
                else None
            ),
            version_compatible=plan.version_compatible or None,
            profiling_verbosity=getattr(trt_mod.ProfilingVerbosity, plan.profiling_verbosity),
            precision_constraints="obey" if pinned else None,
        )
        started = time.perf_counter()
        try:
            config = create(builder, network)  # with an empty timing cache
            # ours, not CreateConfig(load_timing_cache=): its LockFile leaves PATH.lock. Set strictly, as
            # CreateConfig sets it: another GPU's cache is refused here and combined in at the save
            # (docs/tensorrt-facts.md, "The timing cache")
            loaded_cache = config.create_timing_cache(loaded) if loaded else None
            used = loaded_cache is not None and config.set_timing_cache(loaded_cache, ignore_mismatch=False)
            if plan.dla_core is not None:
                place_on_dla(config, plan.dla_core, plan.gpu_fallback)
            plan_bytes = EngineBytesFromNetwork((builder, network, parser), config=config)()
        except PolygraphyException as exc:
            raise trt_errors.build_failure(
                log.errors(),
                workspace_mb=workspace_mb,
                free_mb=free_memory_mb(),
                target_name=target_name,
                detail=str(exc),
            ) from None
        seconds = time.perf_counter() - started
        if timing_cache is not None:
            save_timing_cache(config, timing_cache, loaded if used else b"")
    data = bytes(memoryview(plan_bytes))
    del plan_bytes, config, create, calibrator, parser, network, builder  # freed before the engine loads
    info, problem = layer_information(logger, data, plan, log)
    return BuiltEngine(data, info, seconds, pinned, unmatched, problem)


def _cache_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """The lock on the timing cache ``path``: ``PATH.lock``, as Polygraphy's util.LockFile and trtexec's
    FileLock name it, with their kind of lock too (lockf: docs/tensorrt-facts.md, "The timing cache")."""
    return file_lock(path.with_name(path.name + ".lock"), peers=True)


def _read_cache(path: Path | None) -> bytes:
    """A timing cache's bytes, b"" when there is none yet (read under :func:`_cache_lock`)."""
    try:
        return path.read_bytes() if path is not None else b""
    except FileNotFoundError:
        return b""


def save_timing_cache(config: trt.IBuilderConfig, path: Path, loaded: bytes) -> None:
    """Save the build's timing cache to ``path``, with what the file holds besides ``loaded`` (what
    the build started from) combined in: two builds sharing a cache each keep their entries.

    Read, combined and written under ``PATH.lock`` (:func:`_cache_lock`, which excludes Polygraphy's
    and trtexec's lock and they ours), which its last holder removes. ``combine`` is in every
    release we ship (8.5 to 11.1). As Polygraphy's EngineBytesFromNetwork: another GPU's entries
    are combined in (``ignore_mismatch=True``) and kept, and a cache ``combine`` refuses (another
    TensorRT release's) is replaced, with a warning (docs/tensorrt-facts.md, "The timing cache")."""
    cache = config.get_timing_cache()
    if cache is None:
        return
    with _cache_lock(path):
        current = _read_cache(path)
        merged = config.create_timing_cache(current) if current and current != loaded else None
        if merged is not None and not cache.combine(merged, ignore_mismatch=True):
            _log.warning(
                f"timing cache {path}: its entries could not be combined with this build's (another "
                "TensorRT release's cache, or a damaged one): replaced"
            )
        atomic_write_bytes(path, bytes(memoryview(cache.serialize())))


def prepare_runtime(runtime: trt.Runtime, *, version_compatible: bool, dla_core: int | None) -> None:
    """Set up a runtime for a plan as trtexec does, before deserializing it (docs/tensorrt-facts.md).

    A version-compatible plan embeds the lean runtime and deserializes to None unless host code is
    allowed (``engine_host_code_allowed``, 8.6+); a DLA plan runs on the core the runtime names.
    """
    if version_compatible:
        runtime.engine_host_code_allowed = True
    if dla_core is not None:
        runtime.DLA_core = dla_core


def layer_information(
    logger: trt.ILogger, plan_bytes: bytes, plan: EnginePlan, log: BuildLog
) -> tuple[str, str | None]:
    """The engine inspector's JSON for every layer (placement, precision, tactic), or "" and why not."""
    import tensorrt as trt_mod

    runtime = trt_mod.Runtime(logger)
    prepare_runtime(runtime, version_compatible=plan.version_compatible, dla_core=plan.dla_core)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        errors = log.errors()
        why = f": {errors[-1]}" if errors else ""
        return "", f"no layer report: TensorRT could not load the engine it built{why}"
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt_mod.LayerInformationFormat.JSON)), None
