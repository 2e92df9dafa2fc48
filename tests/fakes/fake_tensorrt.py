"""A fake ``tensorrt`` module per release, generated from TensorRT's own bindings (tests/fakes/trt_api.py).

What exists is the real API of the requested release and nothing more: every enum is built from
tests/data/trt-python-api.json with its real members and values (STRONGLY_TYPED is 1 on 10.x and 0
on 11.x, EXPLICIT_BATCH is gone on 11), and every fake class hides each method or property that
release does not bind: reading or setting it raises AttributeError as the pybind11 object would,
so code that calls a newer API fails the tests of older releases.

Behind that surface the fake builds and runs "engines": the parser reads the real ONNX file (one
layer per node, unsupported ops as parser errors), the builder records the network and config, the
"plan" is JSON naming the model, and ``execute_async_v3`` runs it with ONNX Runtime on the fake GPU's
memory. Behaviour the JSON cannot express is written here, each with the source it follows.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.fakes import trt_api
from tests.fakes.fake_pycuda import FakeGpu

PLAN_MAGIC = b"FAKETRT\x00"

ONNX_LAYER_TYPES = {
    "Conv": "CONVOLUTION",
    "ConvTranspose": "DECONVOLUTION",
    "Gemm": "MATRIX_MULTIPLY",
    "MatMul": "MATRIX_MULTIPLY",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    "Softmax": "SOFTMAX",
    "MaxPool": "POOLING",
    "AveragePool": "POOLING",
    "Reshape": "SHUFFLE",
    "Flatten": "SHUFFLE",
    "Cast": "CAST",
    "TopK": "TOPK",
    "Shape": "SHAPE",
    "Range": "FILL",
    "InstanceNormalization": "NORMALIZATION",
}
INSPECTOR_TYPES = {"CONVOLUTION": "CaskConvolution", "MATRIX_MULTIPLY": "CaskGemmMatrixMultiply"}

# The engine inspector's "Format/Datatype" strings for a layer's outputs, as TensorRT's engine
# explorer (trex) lists them: docs/tensorrt-facts.md, "Engine inspector".
INSPECTOR_FORMATS = {
    "FP32": "Row major linear FP32",
    "FP16": "Row major linear FP16 format",
    "Int8": "Thirty-two wide channel vectorized row major Int8 format",
    "BF16": "Row major linear BFloat16 format",
    "FP8": "Row major linear FP8 format",
    "Int32": "Row major linear Int32",
    "Int64": "Row major linear Int64 format",
}


@dataclass
class FakeTrtState:
    """What the fake saw and how it should misbehave."""

    gpu: FakeGpu
    version: str = "10.13.0"
    unsupported_ops: set[str] = field(default_factory=set)
    build_errors: list[str] = field(default_factory=list)  # logged at ERROR, then the build fails
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    networks: list[Any] = field(default_factory=list)
    configs: list[Any] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    runtimes: list[Any] = field(default_factory=list)
    logged: list[tuple[int, str]] = field(default_factory=list)  # every message the fake logged
    builds: int = 0
    calibration_cache_read: bytes | None = None  # what the calibrator served during the last build
    alive: dict[str, int] = field(default_factory=dict)  # live builders/networks/parsers/configs

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3])


class _StrictMeta(type):
    """Class-level reads of a name the release does not bind raise AttributeError."""

    def __getattribute__(cls, name: str) -> Any:
        if _hidden(cls, name):
            raise AttributeError(
                f"type object '{type.__getattribute__(cls, '__name__')}' has no attribute '{name}'"
            )
        return type.__getattribute__(cls, name)


def _api_class(cls: type) -> type | None:
    """The fake API class ``cls`` is or derives from (user subclasses derive from one)."""
    for klass in type.__getattribute__(cls, "__mro__"):
        if "_api_name" in klass.__dict__:
            return klass
    return None


def _hidden(cls: type, name: str, instance_dict: dict[str, Any] | None = None) -> bool:
    if name.startswith("_"):
        return False
    api = _api_class(cls)
    if api is None:
        return False
    for klass in type.__getattribute__(cls, "__mro__"):
        if klass is api or "_api_name" in klass.__dict__:
            break
        if name in klass.__dict__:  # defined by a user subclass (a logger, profiler, calibrator)
            return False
    if instance_dict is not None and name in instance_dict and cls is not api:
        return False  # an attribute a user subclass set on itself
    return name not in api.__dict__["_surface"]


class _Api(metaclass=_StrictMeta):
    """Base of every fake class: only the names the release binds are visible."""

    _api_name = ""
    _surface: frozenset[str] = frozenset()
    _readonly: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and _hidden(type(self), name, object.__getattribute__(self, "__dict__")):
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        api = _api_class(type(self))
        if not name.startswith("_") and api is not None and type(self) is api:
            # a pybind11 object has no __dict__: an unbound name cannot be set, a read-only one neither
            if name not in api.__dict__["_surface"]:
                raise AttributeError(f"'tensorrt.{api.__name__}' object has no attribute '{name}'")
            if name in api.__dict__["_readonly"]:
                raise AttributeError(f"can't set attribute '{name}'")
        object.__setattr__(self, name, value)


def _enum(name: str, members: dict[str, int]) -> type[enum.IntEnum]:
    # pybind11 enums are int-like with .name/.value/__members__; aliases (same value) keep their name
    ordered = sorted(members.items(), key=lambda kv: (kv[1], kv[0]))
    return enum.IntEnum(name.rpartition(".")[2], ordered)  # type: ignore[return-value]


def _onnx_to_trt(trt: Any, elem_type: int) -> Any:
    """The TensorRT type of an ONNX tensor type; INT64 becomes INT32 where DataType has no INT64 (8.x:
    onnx-tensorrt casts INT64 to INT32, "Your ONNX model has been generated with INT64 weights ...")."""
    import onnx

    name = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    table = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "bool": "BOOL",
             "uint8": "UINT8", "int64": "INT64"}  # fmt: skip
    member = table.get(name, "FLOAT")
    if member == "INT64" and "INT64" not in trt.DataType.__members__:
        member = "INT32"
    return trt.DataType[member]


# What TensorRT's ONNX parser says when it has no TensorRT type for an input's ONNX type, the same
# words on 8.6 and 10.1 (docs/tensorrt-facts.md, "Parser errors of no node")
PARSER_INPUT_TYPE_ERROR = (
    "Assertion failed: convertDtype(onnxDtype.elem_type(), &trtDtype) && "
    '"Failed to convert ONNX date type to TensorRT data type."'
)


# ... and when it has none for an output's (a string tensor, or a sequence or map, whose tensor type
# reads as UNDEFINED), as it marks the outputs (docs/tensorrt-facts.md, "No string tensors")
PARSER_OUTPUT_TYPE_ERROR = (
    "Assertion failed: convertDtype(output.type().tensor_type().elem_type(), &output_trt_dtype) && "
    '"Failed to convert ONNX date type to TensorRT data type."'
)


def _parser_input_types(major: int) -> set[int]:
    """ONNX types of inputs and outputs the parser maps to a TensorRT type: on 8.5 and 8.6 DOUBLE,
    FLOAT, INT8, UINT8, FLOAT16, BOOL, INT32, INT64; on 10.0 and 10.1 also BFLOAT16, FLOAT8E4M3FN,
    INT4 (docs/tensorrt-facts.md, "Integer I/O"); no STRING on any."""
    import onnx

    t = onnx.TensorProto
    types = {t.DOUBLE, t.FLOAT, t.INT8, t.UINT8, t.FLOAT16, t.BOOL, t.INT32, t.INT64}
    return types | ({t.BFLOAT16, t.FLOAT8E4M3FN, t.INT4} if major >= 10 else set())


def make_tensorrt(state: FakeTrtState) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module with the API of ``state.version``'s release."""
    release = trt_api.release_for(state.version)
    api = trt_api.api(state.version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = state.version  # type: ignore[attr-defined]
    major = state.major
    rec = state.record

    enums: dict[str, type[enum.IntEnum]] = {}
    for enum_name, members in api["enums"].items():
        enums[enum_name] = _enum(enum_name, members)
        if "." not in enum_name:
            setattr(trt, enum_name, enums[enum_name])
    for const, spec in api["constants"].items():
        if const.startswith("_"):
            continue
        if "python" in spec:  # float32 = DataType.FLOAT
            owner, member = spec["python"].split(".")
            setattr(trt, const, enums[owner][member])
        elif "alias_of" in spec and spec["alias_of"] in enums:
            setattr(trt, const, enums[spec["alias_of"]])
    DataType = enums["DataType"]
    Severity = enums["ILogger.Severity"]

    def has_enum(enum_name: str, member: str) -> bool:
        return enum_name in enums and member in enums[enum_name].__members__

    def nptype(dtype: Any) -> type:
        return {
            "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
            "BOOL": np.bool_, "UINT8": np.uint8,
        }[DataType(dtype).name]  # fmt: skip

    def volume(iterable: Any) -> int:
        return int(np.prod(list(iterable))) if len(list(iterable)) else 0

    trt.nptype = nptype  # type: ignore[attr-defined]
    trt.volume = volume  # type: ignore[attr-defined]

    def log(logger: Any, severity: Any, message: str) -> None:
        state.logged.append((int(severity), message))
        logger.log(severity, message)

    def alive(kind: str, delta: int) -> None:
        state.alive[kind] = state.alive.get(kind, 0) + delta

    class ILogger(_Api):
        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            pass

    for member in Severity:  # py::enum_<ILogger::Severity>(...).export_values()
        type.__setattr__(ILogger, member.name, member)
    type.__setattr__(ILogger, "Severity", Severity)

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            super().__init__()
            self._min_severity = min_severity

        @property
        def min_severity(self) -> Any:
            return self._min_severity

    class IProfiler(_Api):
        def __init__(self) -> None:
            pass

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            pass

    class IInt8Calibrator(_Api):
        def __init__(self) -> None:
            pass

    class IInt8EntropyCalibrator2(IInt8Calibrator):
        pass

    class IInt8EntropyCalibrator(IInt8Calibrator):
        pass

    class IInt8MinMaxCalibrator(IInt8Calibrator):
        pass

    class IInt8LegacyCalibrator(IInt8Calibrator):
        pass

    class IHostMemory(bytes, _Api):  # bytes for py::buffer_protocol() (memoryview, bytes())
        @property
        def nbytes(self) -> int:
            return len(self)

        @property
        def dtype(self) -> Any:
            return DataType.UINT8

    class ITensor(_Api):
        def __init__(
            self, name: str, shape: tuple[int, ...], dtype: Any, network_input: bool = False
        ) -> None:
            self._name, self._shape, self._dtype = name, shape, dtype
            self._input = network_input

        name = property(lambda self: self._name)
        shape = property(lambda self: self._shape)
        dtype = property(lambda self: self._dtype)
        is_network_input = property(lambda self: self._input)
        is_network_output = property(lambda self: False)
        is_shape_tensor = property(lambda self: False)

    class ILayer(_Api):
        def __init__(self, name: str, op: str, outputs: list[ITensor]) -> None:
            self._name = name
            self._op = op
            members = enums["LayerType"].__members__
            self._type = members.get(ONNX_LAYER_TYPES.get(op, "ELEMENTWISE"), members["ELEMENTWISE"])
            self._precision: Any = None
            self._output_types: dict[int, Any] = {}
            self._outputs = outputs

        name = property(lambda self: self._name)
        type = property(lambda self: self._type)
        num_inputs = property(lambda self: 1)
        num_outputs = property(lambda self: len(self._outputs))

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        @property
        def precision(self) -> Any:
            return self._precision if self._precision is not None else DataType.FLOAT

        @precision.setter
        def precision(self, value: Any) -> None:
            rec("ILayer.precision", self._name, value)
            self._precision = value

        @property
        def precision_is_set(self) -> bool:
            return self._precision is not None

        def set_output_type(self, index: int, dtype: Any) -> None:
            rec("ILayer.set_output_type", self._name, index, dtype)
            out = self._outputs[index]
            if out._dtype not in (DataType.FLOAT, DataType.HALF) and dtype != out._dtype:
                # TopK's second output is always Int32 and shape operations' outputs Int32; another
                # output type is ignored with an error logged (docs/tensorrt-facts.md, "Output types").
                state.logged.append(
                    (int(Severity.ERROR), f"{self._name}: cannot set output type of {out._name}")
                )
                return
            self._output_types[index] = dtype

    class INetworkDefinition(_Api):
        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: list[ITensor] = []
            self._layers: list[ILayer] = []
            self._model_path: str | None = None
            self._output_names: list[str] = []
            self._output_types: dict[str, Any] = {}
            self._has_instancenorm = False
            alive("network", 1)

        def __del__(self) -> None:
            alive("network", -1)

        num_inputs = property(lambda self: len(self._inputs))
        num_layers = property(lambda self: len(self._layers))
        num_outputs = property(lambda self: len(self._output_names))
        flags = property(lambda self: self._flags)
        has_implicit_batch_dimension = property(lambda self: False)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_layer(self, index: int) -> ILayer:
            return self._layers[index]

        def get_output(self, index: int) -> ITensor:
            name = self._output_names[index]
            return ITensor(name, (), self._output_types.get(name, DataType.FLOAT))

        def get_flag(self, flag: Any) -> bool:
            return bool(self._flags & (1 << int(flag)))

        def __len__(self) -> int:
            return len(self._layers)

        def __getitem__(self, index: int) -> ILayer:
            return self._layers[index]

        def _strongly_typed(self) -> bool:
            if major >= 11:
                return True  # TensorRT 11 networks are always strongly typed
            return has_enum("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") and bool(
                self._flags & (1 << int(enums["NetworkDefinitionCreationFlag"].STRONGLY_TYPED))
            )

    class ParserError(_Api):
        def __init__(self, node: int, node_name: str, op: str, desc: str) -> None:
            self._node, self._name, self._op, self._desc = node, node_name, op, desc

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return self._name

        def node_operator(self) -> str:
            return self._op

        def desc(self) -> str:
            return self._desc

        def code(self) -> int:
            return 8

    class OnnxParser(_Api):
        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self._network = network
            self._logger = logger
            self._errors: list[ParserError] = []
            # NATIVE_INSTANCENORM is off by default on 8.6 (InstanceNormalization becomes a plugin) and
            # on by default from 10.0 (docs/tensorrt-facts.md, "NATIVE_INSTANCENORM").
            self._flags = 1 if major >= 10 else 0
            alive("parser", 1)

        def __del__(self) -> None:
            alive("parser", -1)

        num_errors = property(lambda self: len(self._errors))

        @property
        def flags(self) -> int:
            return self._flags

        @flags.setter
        def flags(self, value: int) -> None:
            self._flags = int(value)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_flag(self, flag: Any) -> None:
            self._flags &= ~(1 << int(flag))

        def set_flag(self, flag: Any) -> None:
            rec("OnnxParser.set_flag", enums["OnnxParserFlag"](int(flag)).name)
            self._flags |= 1 << int(flag)

        def get_flag(self, flag: Any) -> bool:
            return bool(self._flags & (1 << int(flag)))

        def parse_from_file(self, model: str) -> bool:
            import onnx

            rec("OnnxParser.parse_from_file", model)
            proto = onnx.load(model)
            try:
                inferred = onnx.shape_inference.infer_shapes(proto)
            except Exception:
                inferred = proto
            types_of = {  # of tensors only: a ZipMap's sequence of maps has no TensorRT type
                vi.name: vi.type.tensor_type.elem_type
                for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
                if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type
            }
            inits = {i.name for i in proto.graph.initializer}
            net = self._network
            types = _parser_input_types(major)
            for vi in proto.graph.input:
                if vi.name in inits:
                    continue
                if vi.type.tensor_type.elem_type not in types:
                    # an error of the model, not of a node: node -1, node name and operator ""
                    # (docs/tensorrt-facts.md, "Parser errors of no node"); the parse fails
                    self._errors.append(ParserError(-1, "", "", PARSER_INPUT_TYPE_ERROR))
                    return False
                dims = tuple(
                    d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                    for d in vi.type.tensor_type.shape.dim
                )
                net._inputs.append(
                    ITensor(vi.name, dims, _onnx_to_trt(trt, vi.type.tensor_type.elem_type), True)
                )
            for index, node in enumerate(proto.graph.node):
                name = node.name or f"node_{index}"
                if node.op_type in state.unsupported_ops:
                    # the ONNX parser's error for an op it has no importer for (docs/tensorrt-facts.md)
                    self._errors.append(
                        ParserError(
                            index, name, node.op_type, f"No importer registered for op: {node.op_type}"
                        )
                    )
                    continue
                outputs = [ITensor(o, (), _onnx_to_trt(trt, types_of.get(o, 1))) for o in node.output]
                net._layers.append(ILayer(name, node.op_type, outputs))
                if node.op_type == "InstanceNormalization" and not (self._flags & 1):
                    net._has_instancenorm = True  # imported as the InstanceNormalization_TRT plugin
            for vi in proto.graph.output:
                if not vi.type.HasField("tensor_type") or vi.type.tensor_type.elem_type not in types:
                    # marking the outputs, once the nodes are imported: the same conversion as an
                    # input's, of no node (docs/tensorrt-facts.md, "No string tensors")
                    self._errors.append(ParserError(-1, "", "", PARSER_OUTPUT_TYPE_ERROR))
                    return False
            net._model_path = str(Path(model).resolve())
            net._output_names = [o.name for o in proto.graph.output]
            net._output_types = {
                o.name: _onnx_to_trt(trt, o.type.tensor_type.elem_type) for o in proto.graph.output
            }
            return not self._errors

    class IOptimizationProfile(_Api):
        def __init__(self) -> None:
            self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            rec("IOptimizationProfile.set_shape", input, tuple(min), tuple(opt), tuple(max))
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, input: str) -> list[tuple[int, ...]]:
            return list(self._shapes[input])

        def __bool__(self) -> bool:
            return True

    class ITimingCache(_Api):
        """Entries as bytes. A cache whose bytes start with ``gpu=`` was made on another device, with
        ``trt=`` by another TensorRT release (docs/tensorrt-facts.md, "The timing cache": ``setTimingCache``
        fails on another device's cache unless ignoreMismatch; ``combine`` skips another release's,
        returning false, and another device's unless ignoreMismatch)."""

        def __init__(self, data: bytes) -> None:
            self._entries = data or b""

        def _usable(self, ignore_mismatch: bool) -> bool:
            return not self._entries.startswith(b"trt=") and (
                ignore_mismatch or not self._entries.startswith(b"gpu=")
            )

        def serialize(self) -> IHostMemory:
            return IHostMemory(self._entries)

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            rec("ITimingCache.combine", bytes(input_cache._entries), ignore_mismatch)
            if not input_cache._usable(ignore_mismatch):
                return False
            self._entries += input_cache._entries
            return True

        def reset(self) -> bool:
            self._entries = b""
            return True

    class IBuilderConfig(_Api):
        def __init__(self) -> None:
            # TF32 is on by default (docs/tensorrt-facts.md, "TF32")
            self._flags: set[str] = {"TF32"}
            self._pools: dict[str, int] = {}
            self._profiles: list[IOptimizationProfile] = []
            self._timing_cache: ITimingCache | None = None
            self._props: dict[str, Any] = {
                "profiling_verbosity": enums["ProfilingVerbosity"].LAYER_NAMES_ONLY,
                "builder_optimization_level": 3,
                "hardware_compatibility_level": enums["HardwareCompatibilityLevel"].NONE
                if "HardwareCompatibilityLevel" in enums
                else None,
                "default_device_type": enums["DeviceType"].GPU,
                "DLA_core": -1,
                "engine_capability": enums["EngineCapability"].STANDARD
                if has_enum("EngineCapability", "STANDARD")
                else enums["EngineCapability"](0),
                "int8_calibrator": None,
                "max_aux_streams": -1,
                "progress_monitor": None,
                "runtime_platform": None,
                "tiling_optimization_level": None,
            }
            self._calibration_profile: IOptimizationProfile | None = None
            alive("config", 1)
            state.configs.append(self)

        def __del__(self) -> None:
            alive("config", -1)

        def _prop(name: str) -> property:  # type: ignore[misc]
            def get(self: IBuilderConfig) -> Any:
                return self._props[name]

            def put(self: IBuilderConfig, value: Any) -> None:
                rec(f"IBuilderConfig.{name}", value)
                self._props[name] = value

            return property(get, put)

        profiling_verbosity = _prop("profiling_verbosity")
        builder_optimization_level = _prop("builder_optimization_level")
        hardware_compatibility_level = _prop("hardware_compatibility_level")
        default_device_type = _prop("default_device_type")
        DLA_core = _prop("DLA_core")
        engine_capability = _prop("engine_capability")
        int8_calibrator = _prop("int8_calibrator")
        max_aux_streams = _prop("max_aux_streams")
        progress_monitor = _prop("progress_monitor")
        runtime_platform = _prop("runtime_platform")
        tiling_optimization_level = _prop("tiling_optimization_level")
        del _prop

        def set_flag(self, flag: Any) -> None:
            rec("IBuilderConfig.set_flag", flag.name)
            self._flags.add(flag.name)

        def clear_flag(self, flag: Any) -> None:
            rec("IBuilderConfig.clear_flag", flag.name)
            self._flags.discard(flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self._flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            rec("IBuilderConfig.set_memory_pool_limit", pool.name, pool_size)
            self._pools[pool.name] = pool_size

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self._pools.get(pool.name, 0)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        num_optimization_profiles = property(lambda self: len(self._profiles))

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            rec("IBuilderConfig.create_timing_cache", bytes(serialized_timing_cache))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            rec("IBuilderConfig.set_timing_cache", bytes(cache._entries), ignore_mismatch)
            if not cache._usable(ignore_mismatch):
                return False
            self._timing_cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._timing_cache

        def get_tactic_sources(self) -> int:
            return 0

        def get_preview_feature(self, feature: Any) -> bool:
            return False

        def get_quantization_flag(self, flag: Any) -> bool:
            return False

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self._calibration_profile = profile
            return True

        def get_calibration_profile(self) -> IOptimizationProfile | None:
            return self._calibration_profile

    class Builder(_Api):
        def __init__(self, logger: ILogger) -> None:
            rec("Builder", logger)
            self._logger = logger
            alive("builder", 1)

        def __del__(self) -> None:
            alive("builder", -1)

        logger = property(lambda self: self._logger)
        num_DLA_cores = property(lambda self: 2)
        platform_has_fast_fp16 = property(lambda self: True)
        platform_has_fast_int8 = property(lambda self: True)
        platform_has_tf32 = property(lambda self: True)

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            rec("Builder.create_network", flags)
            network = INetworkDefinition(flags)
            state.networks.append(network)
            return network

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(
            self, network: INetworkDefinition, config: IBuilderConfig
        ) -> IHostMemory | None:
            rec("Builder.build_serialized_network", network, config)
            state.builds += 1
            errors = list(state.build_errors)
            compatible = "VERSION_COMPATIBLE" in config._flags or (
                config._props["hardware_compatibility_level"] not in (None, 0)
            )
            if compatible and network._has_instancenorm:
                # version- and hardware-compatible engines need the native InstanceNorm layer
                # (docs/tensorrt-facts.md, "NATIVE_INSTANCENORM")
                errors.append(
                    "InstanceNormalization_TRT plugin cannot be used in a version or hardware compatible "
                    "engine: set OnnxParserFlag.NATIVE_INSTANCENORM"
                )
            if errors:
                for message in errors:
                    log(self._logger, Severity.ERROR, message)
                return None
            if config._timing_cache is not None:
                config._timing_cache._entries += b"tactic;"
            if "INT8" in config._flags and config._props["int8_calibrator"] is not None:
                cache = config._props["int8_calibrator"].read_calibration_cache()  # read before calibrating
                state.calibration_cache_read = bytes(cache) if cache else None
            return IHostMemory(PLAN_MAGIC + json.dumps(_plan_record(network, config)).encode())

    def _plan_record(network: INetworkDefinition, config: IBuilderConfig) -> dict[str, Any]:
        strongly = network._strongly_typed()
        LT = enums["LayerType"]
        has_qdq = any(layer._type in (LT.QUANTIZE, LT.DEQUANTIZE) for layer in network._layers)
        on_dla_device = config._props["default_device_type"] == enums["DeviceType"].DLA
        layers = []
        for layer in network._layers:
            precision = "FP32"
            compute = layer._type in (LT.CONVOLUTION, LT.MATRIX_MULTIPLY)
            out_type = layer._outputs[0]._dtype if layer._outputs else DataType.FLOAT
            if out_type == DataType.INT32:
                precision = "Int32"
            elif has_enum("DataType", "INT64") and out_type == DataType.INT64:
                precision = "Int64"
            elif layer._precision is not None:
                precision = "FP32"
            elif compute and (has_qdq or "INT8" in config._flags):
                precision = "Int8"
            elif "FP16" in config._flags or (
                strongly and any(t._dtype == DataType.HALF for t in network._inputs)
            ):
                precision = "FP16"
            on_dla = on_dla_device and compute
            kind = INSPECTOR_TYPES.get(layer._type.name, layer._type.name.title())
            fmt = INSPECTOR_FORMATS[precision]
            layers.append(
                {
                    "Name": layer._name,
                    "LayerType": ("DLA " + kind) if on_dla else kind,
                    "Inputs": [{"Name": f"{layer._name}_in", "Format/Datatype": fmt}],
                    "Outputs": [{"Name": f"{layer._name}_out", "Format/Datatype": fmt}],
                    "TacticName": "dla_tactic" if on_dla else "sm89_xmma",
                }
            )
        profiles = [{k: [list(s) for s in v] for k, v in p._shapes.items()} for p in config._profiles]
        hardware = config._props["hardware_compatibility_level"]
        return {
            "model": network._model_path,
            "version": state.version,
            "version_compatible": "VERSION_COMPATIBLE" in config._flags,
            "exclude_lean_runtime": "EXCLUDE_LEAN_RUNTIME" in config._flags,
            "hardware_compatibility": hardware.name if hardware is not None else "NONE",
            "compute_capability": list(state.gpu.compute_capability),
            "gpu_name": state.gpu.name,
            "dla_core": config._props["DLA_core"] if on_dla_device else None,
            "tf32": "TF32" in config._flags,
            "inputs": [[t._name, list(t._shape), int(t._dtype)] for t in network._inputs],
            "outputs": network._output_names,
            "output_types": {k: int(v) for k, v in network._output_types.items()},
            "profiles": profiles,
            "layers": layers,
            "verbosity": config._props["profiling_verbosity"].name,
        }

    class EngineInspector(_Api):
        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine

        def get_engine_information(self, format: Any) -> str:
            rec("EngineInspector.get_engine_information", format)
            plan = self._engine._plan
            if plan["verbosity"] != "DETAILED":
                return json.dumps({"Layers": [layer["Name"] for layer in plan["layers"]]})
            return json.dumps({"Layers": plan["layers"], "Bindings": [i[0] for i in plan["inputs"]]})

    class ICudaEngine(_Api):
        def __init__(self, plan: dict[str, Any]) -> None:
            import onnxruntime as ort

            self._plan = plan
            self._session = ort.InferenceSession(plan["model"], providers=["CPUExecutionProvider"])
            self._io = [(n, True) for n, _, _ in plan["inputs"]] + [(n, False) for n in plan["outputs"]]

        num_io_tensors = property(lambda self: len(self._io))
        num_optimization_profiles = property(lambda self: max(len(self._plan["profiles"]), 1))

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name: str) -> Any:
            is_input = dict(self._io)[name]
            return enums["TensorIOMode"].INPUT if is_input else enums["TensorIOMode"].OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            for n, _, dtype in self._plan["inputs"]:
                if n == name:
                    return DataType(dtype)
            return DataType(self._plan["output_types"].get(name, 0))

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            for n, shape, _ in self._plan["inputs"]:
                if n == name:
                    return tuple(shape)
            output = next(o for o in self._session.get_outputs() if o.name == name)
            return tuple(d if isinstance(d, int) else -1 for d in output.shape)

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            profiles = self._plan["profiles"]
            if profiles and name in profiles[profile_index]:
                return [tuple(s) for s in profiles[profile_index][name]]
            shape = self.get_tensor_shape(name)
            return [shape, shape, shape]

        def create_execution_context(self) -> IExecutionContext:
            rec("ICudaEngine.create_execution_context")
            return IExecutionContext(self)

        def create_engine_inspector(self) -> EngineInspector:
            return EngineInspector(self)

    class IExecutionContext(_Api):
        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}
            self._profiler: Any = None
            self._profile = 0  # a new context starts on profile 0 (docs/tensorrt-facts.md, "Optimization
            # profiles at run time")
            state.contexts.append(self)

        engine = property(lambda self: self._engine)
        active_optimization_profile = property(lambda self: self._profile)

        def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
            rec("IExecutionContext.set_optimization_profile_async", profile_index, stream_handle)
            if not 0 <= profile_index < self._engine.num_optimization_profiles:
                state.logged.append((int(Severity.ERROR), f"setOptimizationProfileAsync: {profile_index}"))
                return False
            self._profile = profile_index
            self._shapes.clear()  # input shapes must be set again after a switch
            return True

        @property
        def profiler(self) -> Any:
            return self._profiler

        @profiler.setter
        def profiler(self, value: Any) -> None:
            self._profiler = value

        def set_input_shape(self, name: str, shape: Any) -> bool:
            rec("IExecutionContext.set_input_shape", name, tuple(shape))
            lo, _opt, hi = self._engine.get_tensor_profile_shape(name, self._profile)
            shape = tuple(shape)
            if len(shape) != len(lo) or not all(a <= d <= b for d, a, b in zip(shape, lo, hi, strict=False)):
                # set_input_shape returns False on error, and a shape outside the profile is one
                # (docs/tensorrt-facts.md, "`set_input_shape`").
                state.logged.append((int(Severity.ERROR), f"setInputShape: {name} {shape} outside profile"))
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name in self._shapes:
                return self._shapes[name]
            feed = {
                n: np.zeros(self._shapes.get(n, tuple(s)), dtype=nptype(DataType(d)))
                for n, s, d in self._engine._plan["inputs"]
            }
            outputs = self._engine._session.run([name], feed)
            return tuple(outputs[0].shape)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            rec("IExecutionContext.set_tensor_address", name, memory)
            self._addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            rec("IExecutionContext.execute_async_v3", stream_handle)
            gpu = state.gpu
            plan = self._engine._plan
            feed = {}
            for name, _shape, dtype in plan["inputs"]:
                np_type = np.dtype(nptype(DataType(dtype)))
                shape = self._shapes[name]
                nbytes = int(np.prod(shape)) * np_type.itemsize
                feed[name] = gpu.memory[self._addresses[name]][:nbytes].view(np_type).reshape(shape).copy()
            outputs = self._engine._session.run(plan["outputs"], feed)
            for name, value in zip(plan["outputs"], outputs, strict=True):
                engine_type = np.dtype(nptype(DataType(plan["output_types"].get(name, 0))))
                data = np.ascontiguousarray(np.asarray(value).astype(engine_type)).view(np.uint8).reshape(-1)
                gpu.memory[self._addresses[name]][: data.size] = data
            ms = gpu.launch_ms()
            gpu.advance(stream_handle, ms)
            if self._profiler is not None:
                layers = plan["layers"]
                for layer in layers:
                    self._profiler.report_layer_time(layer["Name"], ms / max(len(layers), 1))
            return True

    class Runtime(_Api):
        def __init__(self, logger: ILogger) -> None:
            self._logger = logger
            self._props: dict[str, Any] = {"DLA_core": -1, "engine_host_code_allowed": False}
            state.runtimes.append(self)

        logger = property(lambda self: self._logger)
        num_DLA_cores = property(lambda self: 2)

        @property
        def DLA_core(self) -> int:
            return int(self._props["DLA_core"])

        @DLA_core.setter
        def DLA_core(self, value: int) -> None:
            rec("Runtime.DLA_core", value)
            self._props["DLA_core"] = int(value)

        @property
        def engine_host_code_allowed(self) -> bool:
            return bool(self._props["engine_host_code_allowed"])

        @engine_host_code_allowed.setter
        def engine_host_code_allowed(self, value: bool) -> None:
            rec("Runtime.engine_host_code_allowed", value)
            self._props["engine_host_code_allowed"] = bool(value)

        def _refuse(self, message: str) -> None:
            log(self._logger, Severity.ERROR, message)

        def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
            data = bytes(serialized_engine)
            # what else is alive at this point: a 4 GB board cannot hold builder and engine at once
            rec("Runtime.deserialize_cuda_engine", len(data), dict(state.alive), self._props["DLA_core"])
            if not data.startswith(PLAN_MAGIC):
                self._refuse("Serialization assertion failed: magic tag does not match")
                return None
            plan = json.loads(data[len(PLAN_MAGIC) :])
            built, here = _version_tuple(plan["version"]), _version_tuple(state.version)
            # NVIDIA's developer guide, "Version Compatibility": a plan built with VERSION_COMPATIBLE
            # runs on later TensorRT versions (8.6 -> 9.x/10.x, 10.x -> 11.x); any other plan only on
            # the exact version that built it.
            if built != here and (not plan.get("version_compatible") or here < built):
                self._refuse(
                    "The engine plan file is not compatible with this version of TensorRT, expecting "
                    f"library version {state.version} got {plan['version']}, please rebuild."
                )
                return None
            # a version-compatible plan deserializes only with host code allowed (docs/tensorrt-facts.md,
            # "Version-compatible plans need host code allowed")
            lean = plan.get("version_compatible") and not plan.get("exclude_lean_runtime")
            if lean and not self._props["engine_host_code_allowed"]:
                self._refuse(
                    "Cannot deserialize engine with lean runtime since the runtime does not allow "
                    "engine host code."
                )
                return None
            cc_built, cc_here = tuple(plan["compute_capability"]), tuple(state.gpu.compute_capability)
            hardware = plan.get("hardware_compatibility", "NONE")
            if cc_built != cc_here:
                ampere = hardware == "AMPERE_PLUS" and cc_here >= (8, 0)
                if not ampere:
                    self._refuse(
                        "The engine plan file is generated on an incompatible device, expecting compute "
                        f"{cc_here[0]}.{cc_here[1]} got compute {cc_built[0]}.{cc_built[1]}, please rebuild."
                    )
                    return None
            elif plan.get("gpu_name") != state.gpu.name and hardware == "NONE":
                # same compute capability, another GPU model: TensorRT loads it with this warning
                log(
                    self._logger,
                    Severity.WARNING,
                    "Using an engine plan file across different models of devices is not recommended and "
                    "is likely to affect performance or even cause errors.",
                )
            engine = ICudaEngine(plan)
            engine._dla_core = self._props["DLA_core"]
            return engine

    classes = {
        cls.__name__: cls
        for cls in (
            ILogger,
            Logger,
            IProfiler,
            IInt8Calibrator,
            IInt8EntropyCalibrator2,
            IInt8EntropyCalibrator,
            IInt8MinMaxCalibrator,
            IInt8LegacyCalibrator,
            IHostMemory,
            ITensor,
            ILayer,
            INetworkDefinition,
            ParserError,
            OnnxParser,
            IOptimizationProfile,
            ITimingCache,
            IBuilderConfig,
            Builder,
            EngineInspector,
            ICudaEngine,
            IExecutionContext,
            Runtime,
        )
    }
    for name, cls in classes.items():
        type.__setattr__(cls, "_api_name", name)
        type.__setattr__(cls, "_surface", trt_api.class_surface(release, name))
        type.__setattr__(cls, "_readonly", trt_api.readonly(release, name))
        if name in api["classes"]:
            setattr(trt, name, cls)
    trt._fake_state = state  # type: ignore[attr-defined]
    trt._fake_classes = classes  # type: ignore[attr-defined]
    return trt


def make_plan_bytes(
    model: Path,
    version: str,
    inputs: list[tuple[str, list[int], str]],
    outputs: list[str],
    *,
    output_types: dict[str, str] | None = None,
    gpu: FakeGpu | None = None,
    **plan: Any,
) -> bytes:
    """A fake engine plan for ``model`` without building (for runtime-only tests)."""
    dtypes = {"float32": 0, "float16": 1, "int8": 2, "int32": 3, "bool": 4, "uint8": 5, "int64": 8}
    gpu = gpu or FakeGpu()
    record = {
        "model": str(Path(model).resolve()),
        "version": version,
        "version_compatible": False,
        "exclude_lean_runtime": False,
        "hardware_compatibility": "NONE",
        "compute_capability": list(gpu.compute_capability),
        "gpu_name": gpu.name,
        "dla_core": None,
        "tf32": True,
        "inputs": [[n, s, dtypes[d]] for n, s, d in inputs],
        "outputs": outputs,
        "output_types": {k: dtypes[v] for k, v in (output_types or {}).items()},
        "profiles": [],
        "layers": [],
        "verbosity": "DETAILED",
        **plan,
    }
    return PLAN_MAGIC + json.dumps(record).encode()
