"""A fake ``tensorrt`` module that builds and runs "engines" by recording calls and running ONNX Runtime.

The parser reads the real ONNX file (inputs, one layer per node, unsupported ops as parser errors),
the builder records the network flags and the config Polygraphy's loaders set, and the "plan" is
JSON naming the model, so the fake runtime can execute it: ``execute_async_v3`` reads the inputs
from the fake GPU's memory at the addresses bound with ``set_tensor_address``, runs the model with
ONNX Runtime and writes the outputs back. Version-dependent API (TensorRT 8.6 / 10 / 11) follows
docs/tensorrt-facts.md: 11 has no FP16/INT8 builder flags and a different STRONGLY_TYPED value.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
}
INSPECTOR_TYPES = {"CONVOLUTION": "CaskConvolution", "MATRIX_MULTIPLY": "CaskGemmMatrixMultiply"}


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
    builds: int = 0
    calibration_cache_read: bytes | None = None  # what the calibrator served during the last build

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def _enum(name: str, members: list[str], values: dict[str, int] | None = None) -> type[enum.IntEnum]:
    values = values or {}
    pairs = []
    used: set[int] = set(values.values())
    counter = 0
    for member in members:
        if member in values:
            pairs.append((member, values[member]))
            continue
        while counter in used:
            counter += 1
        pairs.append((member, counter))
        used.add(counter)
    return enum.IntEnum(name, pairs)  # type: ignore[return-value]


def _numpy_dtype_to_trt(trt: Any, dtype: np.dtype) -> Any:
    return {
        "float32": trt.float32,
        "float16": trt.float16,
        "int8": trt.int8,
        "int32": trt.int32,
        "int64": trt.int64,
        "bool": trt.bool,
        "uint8": trt.uint8,
    }[np.dtype(dtype).name]


def make_tensorrt(state: FakeTrtState) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module for ``state.version``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = state.version  # type: ignore[attr-defined]
    major = state.major
    rec = state.record

    builder_flags = [
        "FP16", "BF16", "INT8", "FP8", "TF32", "REFIT", "DISABLE_TIMING_CACHE", "GPU_FALLBACK",
        "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "SPARSE_WEIGHTS",
        "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "STRIP_PLAN", "SAFETY_SCOPE",
    ]  # fmt: skip
    if major >= 11:
        builder_flags = [f for f in builder_flags if f not in ("FP16", "INT8", "BF16", "FP8")]
    creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major < 11 else {"STRONGLY_TYPED": 5}
    DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64"])
    enums = {
        "DataType": DataType,
        "BuilderFlag": _enum("BuilderFlag", builder_flags),
        "NetworkDefinitionCreationFlag": _enum("NetworkDefinitionCreationFlag", list(creation), creation),
        "MemoryPoolType": _enum(
            "MemoryPoolType",
            [
                "WORKSPACE",
                "DLA_MANAGED_SRAM",
                "DLA_LOCAL_DRAM",
                "DLA_GLOBAL_DRAM",
                "TACTIC_DRAM",
                "TACTIC_SHARED_MEMORY",
            ],
        ),
        "HardwareCompatibilityLevel": _enum(
            "HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"]
        ),
        "ProfilingVerbosity": _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"]),
        "LayerInformationFormat": _enum("LayerInformationFormat", ["ONELINE", "JSON"]),
        "DeviceType": _enum("DeviceType", ["GPU", "DLA"]),
        "TensorIOMode": _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"]),
        "LayerType": _enum(
            "LayerType", sorted({*ONNX_LAYER_TYPES.values(), "ELEMENTWISE", "SHAPE", "IDENTITY"})
        ),
        "TacticSource": _enum("TacticSource", ["CUBLAS", "CUBLAS_LT", "CUDNN", "EDGE_MASK_CONVOLUTIONS"]),
        "PreviewFeature": _enum("PreviewFeature", ["PROFILE_SHARING_0806"]),
        "QuantizationFlag": _enum("QuantizationFlag", ["CALIBRATE_BEFORE_FUSION"]),
        "EngineCapability": _enum("EngineCapability", ["STANDARD", "SAFETY", "DLA_STANDALONE"]),
        "CalibrationAlgoType": _enum(
            "CalibrationAlgoType",
            ["LEGACY_CALIBRATION", "ENTROPY_CALIBRATION", "ENTROPY_CALIBRATION_2", "MINMAX_CALIBRATION"],
        ),
        "OnnxParserFlag": _enum("OnnxParserFlag", ["NATIVE_INSTANCENORM"]),
    }
    for name, value in enums.items():
        setattr(trt, name, value)
    trt.float32, trt.float16, trt.int8 = DataType.FLOAT, DataType.HALF, DataType.INT8  # type: ignore[attr-defined]
    trt.int32, trt.int64, trt.bool, trt.uint8 = DataType.INT32, DataType.INT64, DataType.BOOL, DataType.UINT8  # type: ignore[attr-defined]
    trt.fp8, trt.bfloat16 = DataType.FP8, DataType.BF16  # type: ignore[attr-defined]

    def nptype(dtype: Any) -> type:
        return {
            DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
            DataType.UINT8: np.uint8,
        }[dtype]  # fmt: skip

    trt.nptype = nptype  # type: ignore[attr-defined]

    class ILogger:
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            pass

    class Logger(ILogger):
        def __init__(self, min_severity: Any = ILogger.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

    class IProfiler:
        def __init__(self) -> None:
            pass

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            pass

    class _Calibrator:
        def __init__(self) -> None:
            pass

    class IInt8EntropyCalibrator2(_Calibrator):
        pass

    class IInt8EntropyCalibrator(_Calibrator):
        pass

    class IInt8MinMaxCalibrator(_Calibrator):
        pass

    class IInt8LegacyCalibrator(_Calibrator):
        pass

    class IInt8Calibrator(_Calibrator):
        pass

    class IHostMemory(bytes):
        @property
        def nbytes(self) -> int:
            return len(self)

        @property
        def dtype(self) -> Any:
            return DataType.UINT8

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self.name = name
            self.shape = shape
            self.dtype = dtype
            self.is_shape_tensor = False
            self.is_network_input = True
            self.is_network_output = False

    class ILayer:
        def __init__(self, name: str, op: str) -> None:
            self.name = name
            self.type = getattr(trt.LayerType, ONNX_LAYER_TYPES.get(op, "ELEMENTWISE"))
            self._precision: Any = None
            self._output_types: dict[int, Any] = {}
            self.num_inputs = 1
            self.num_outputs = 1

        @property
        def precision(self) -> Any:
            return self._precision if self._precision is not None else DataType.FLOAT

        @precision.setter
        def precision(self, value: Any) -> None:
            rec("ILayer.precision", self.name, value)
            self._precision = value

        @property
        def precision_is_set(self) -> bool:
            return self._precision is not None

        def set_output_type(self, index: int, dtype: Any) -> None:
            rec("ILayer.set_output_type", self.name, index, dtype)
            self._output_types[index] = dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self._inputs: list[ITensor] = []
            self._layers: list[ILayer] = []
            self._model_path: str | None = None
            self._output_names: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        @property
        def num_outputs(self) -> int:
            return len(self._output_names)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_layer(self, index: int) -> ILayer:
            return self._layers[index]

        def get_flag(self, flag: Any) -> bool:
            return bool(self.flags & (1 << int(flag)))

        def __len__(self) -> int:
            return len(self._layers)

        def __getitem__(self, index: int) -> ILayer:
            return self._layers[index]

    class ParserError:
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

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self._network = network
            self._errors: list[ParserError] = []
            self.flags = 0

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_flag(self, flag: Any) -> None:
            self.flags &= ~(1 << int(flag))

        def set_flag(self, flag: Any) -> None:
            self.flags |= 1 << int(flag)

        def parse_from_file(self, model: str) -> bool:
            import onnx

            rec("OnnxParser.parse_from_file", model)
            proto = onnx.load(model)
            inits = {i.name for i in proto.graph.initializer}
            for vi in proto.graph.input:
                if vi.name in inits:
                    continue
                dims = tuple(
                    d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                    for d in vi.type.tensor_type.shape.dim
                )
                np_type = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
                self._network._inputs.append(ITensor(vi.name, dims, _numpy_dtype_to_trt(trt, np_type)))
            for index, node in enumerate(proto.graph.node):
                name = node.name or f"node_{index}"
                if node.op_type in state.unsupported_ops:
                    self._errors.append(
                        ParserError(
                            index, name, node.op_type, f"No importer registered for op: {node.op_type}"
                        )
                    )
                    continue
                self._network._layers.append(ILayer(name, node.op_type))
            self._network._model_path = str(Path(model).resolve())
            self._network._output_names = [o.name for o in proto.graph.output]
            return not self._errors

    class IOptimizationProfile:
        def __init__(self) -> None:
            self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            rec("IOptimizationProfile.set_shape", input, tuple(min), tuple(opt), tuple(max))
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, input: str) -> list[tuple[int, ...]]:
            return list(self._shapes[input])

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self._entries = data or b""

        def serialize(self) -> IHostMemory:
            return IHostMemory(self._entries)

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self._entries += input_cache._entries
            return True

        def reset(self) -> bool:
            self._entries = b""
            return True

    class IBuilderConfig:
        def __init__(self) -> None:
            self._flags: set[str] = {"TF32"} if "TF32" in trt.BuilderFlag.__members__ else set()
            self._pools: dict[str, int] = {}
            self._profiles: list[IOptimizationProfile] = []
            self._timing_cache: ITimingCache | None = None
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.builder_optimization_level = 3
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.engine_capability = trt.EngineCapability.STANDARD
            self.int8_calibrator: Any = None
            self._calibration_profile: IOptimizationProfile | None = None
            state.configs.append(self)

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

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            rec("IBuilderConfig.create_timing_cache", bytes(serialized_timing_cache))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
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

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            rec("Builder", logger)
            self.logger = logger
            self.num_DLA_cores = 2

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
            if state.build_errors:
                for message in state.build_errors:
                    self.logger.log(ILogger.ERROR, message)
                return None
            if config._timing_cache is not None:
                config._timing_cache._entries += b"tactic;"
            if "INT8" in config._flags and config.int8_calibrator is not None:
                cache = config.int8_calibrator.read_calibration_cache()  # as TensorRT does before calibrating
                state.calibration_cache_read = bytes(cache) if cache else None
            return IHostMemory(PLAN_MAGIC + json.dumps(_plan_record(network, config)).encode())

    def _plan_record(network: INetworkDefinition, config: IBuilderConfig) -> dict[str, Any]:
        strongly = network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        has_qdq = any(
            layer.type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE) for layer in network._layers
        )
        layers = []
        for layer in network._layers:
            precision = "FP32"
            compute = layer.type in (trt.LayerType.CONVOLUTION, trt.LayerType.MATRIX_MULTIPLY)
            if layer.precision_is_set:
                precision = "FP32"
            elif compute and (has_qdq or "INT8" in config._flags):
                precision = "Int8"
            elif "FP16" in config._flags or (
                strongly and any(t.dtype == DataType.HALF for t in network._inputs)
            ):
                precision = "FP16"
            on_dla = config.default_device_type == trt.DeviceType.DLA and compute
            kind = INSPECTOR_TYPES.get(layer.type.name, layer.type.name.title())
            layers.append(
                {
                    "Name": layer.name,
                    "LayerType": ("DLA " + kind) if on_dla else kind,
                    "Inputs": [
                        {"Name": f"{layer.name}_in", "Format/Datatype": f"Row major linear {precision}"}
                    ],
                    "Outputs": [
                        {"Name": f"{layer.name}_out", "Format/Datatype": f"Row major linear {precision}"}
                    ],
                    "TacticName": "dla_tactic" if on_dla else "sm89_xmma",
                }
            )
        profiles = [{k: [list(s) for s in v] for k, v in p._shapes.items()} for p in config._profiles]
        return {
            "model": network._model_path,
            "version": state.version,
            "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network._inputs],
            "outputs": network._output_names,
            "profiles": profiles,
            "layers": layers,
            "verbosity": config.profiling_verbosity.name,
        }

    class EngineInspector:
        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine

        def get_engine_information(self, format: Any) -> str:
            rec("EngineInspector.get_engine_information", format)
            plan = self._engine._plan
            if plan["verbosity"] != "DETAILED":
                return json.dumps({"Layers": [layer["Name"] for layer in plan["layers"]]})
            return json.dumps({"Layers": plan["layers"], "Bindings": [i[0] for i in plan["inputs"]]})

    class ICudaEngine:
        def __init__(self, plan: dict[str, Any]) -> None:
            import onnxruntime as ort

            self._plan = plan
            self._session = ort.InferenceSession(plan["model"], providers=["CPUExecutionProvider"])
            self._io = [(n, True) for n, _, _ in plan["inputs"]] + [(n, False) for n in plan["outputs"]]
            self._out_types = {o.name: o.type for o in self._session.get_outputs()}

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name: str) -> Any:
            is_input = dict(self._io)[name]
            return trt.TensorIOMode.INPUT if is_input else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            for n, _, dtype in self._plan["inputs"]:
                if n == name:
                    return DataType(dtype)
            return trt.float16 if "float16" in self._out_types[name] else trt.float32

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

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}
            self.profiler: Any = None
            state.contexts.append(self)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            rec("IExecutionContext.set_input_shape", name, tuple(shape))
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name in self._shapes:
                return self._shapes[name]
            feed = {
                n: np.zeros(self._shapes.get(n, tuple(s)), dtype=nptype(DataType(d)))
                for n, s, d in self.engine._plan["inputs"]
            }
            outputs = self.engine._session.run([name], feed)
            return tuple(outputs[0].shape)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            rec("IExecutionContext.set_tensor_address", name, memory)
            self._addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            rec("IExecutionContext.execute_async_v3", stream_handle)
            gpu = state.gpu
            feed = {}
            for name, _shape, dtype in self.engine._plan["inputs"]:
                np_type = np.dtype(nptype(DataType(dtype)))
                shape = self._shapes[name]
                nbytes = int(np.prod(shape)) * np_type.itemsize
                feed[name] = gpu.memory[self._addresses[name]][:nbytes].view(np_type).reshape(shape).copy()
            outputs = self.engine._session.run(self.engine._plan["outputs"], feed)
            for name, value in zip(self.engine._plan["outputs"], outputs, strict=True):
                data = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
                gpu.memory[self._addresses[name]][: data.size] = data
            ms = gpu.launch_ms()
            gpu.advance(stream_handle, ms)
            if self.profiler is not None:
                layers = self.engine._plan["layers"]
                for layer in layers:
                    self.profiler.report_layer_time(layer["Name"], ms / max(len(layers), 1))
            return True

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            data = bytes(serialized_engine)
            rec("Runtime.deserialize_cuda_engine", len(data))
            if not data.startswith(PLAN_MAGIC):
                self.logger.log(ILogger.ERROR, "Serialization assertion failed: magic tag does not match")
                return None
            plan = json.loads(data[len(PLAN_MAGIC) :])
            if plan["version"] != state.version and major >= 10:
                self.logger.log(
                    ILogger.ERROR, "The engine plan file is not compatible with this version of TensorRT"
                )
                return None
            return ICudaEngine(plan)

    for obj in (
        ILogger, Logger, IProfiler, IInt8EntropyCalibrator2, IInt8EntropyCalibrator, IInt8MinMaxCalibrator,
        IInt8LegacyCalibrator, IInt8Calibrator, IHostMemory, ITensor, ILayer, INetworkDefinition, ParserError,
        OnnxParser, IOptimizationProfile, ITimingCache, IBuilderConfig, Builder, EngineInspector, ICudaEngine,
        IExecutionContext, Runtime,
    ):  # fmt: skip
        setattr(trt, obj.__name__, obj)
    trt._fake_state = state  # type: ignore[attr-defined]
    return trt


def make_plan_bytes(
    model: Path, version: str, inputs: list[tuple[str, list[int], str]], outputs: list[str]
) -> bytes:
    """A fake engine plan for ``model`` without building (for runtime-only tests)."""
    dtypes = {"float32": 0, "float16": 1, "int8": 2, "int32": 3, "bool": 4, "uint8": 5, "int64": 8}
    record = {
        "model": str(Path(model).resolve()),
        "version": version,
        "inputs": [[n, s, dtypes[d]] for n, s, d in inputs],
        "outputs": outputs,
        "profiles": [],
        "layers": [],
        "verbosity": "DETAILED",
    }
    return PLAN_MAGIC + json.dumps(record).encode()
