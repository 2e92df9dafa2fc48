"""One TensorRT engine on one GPU through pycuda: the session the runner and the profiler share.

The TensorRT 10 execution path, by name only (binding indices are gone): page-locked host
buffers and device buffers per I/O tensor, one non-default stream, ``set_input_shape`` for each
input, ``set_tensor_address`` for every I/O tensor, then ``execute_async_v3(stream.handle)``.
pycuda retains the device's primary context, the one TensorRT's CUDA runtime calls use too.
The runtime is set up from the engine's sidecar before deserializing, as trtexec does (host code
allowed for version-compatible plans, the DLA core of a DLA engine), and TensorRT's own error is
quoted when it refuses a plan. ``close`` frees every device object while the context still lives.

Engines built with several shape profiles (``--profile`` given more than once): each input
shape set picks the first profile whose min..max covers every input, selected with
``set_optimization_profile_async`` before ``set_input_shape``, as TensorRT requires
(docs/tensorrt-facts.md, "Optimization profiles at run time"). ``profile=`` pins one instead,
like trtexec's ``--useProfile``.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calibration.modelinfo import TensorSpec, batch_axes, batch_names
from edgedeploy.errors import InputError

if TYPE_CHECKING:
    import pycuda.driver
    import tensorrt as trt


def dims(value: Any) -> tuple[int, ...]:
    """A TensorRT Dims (indexable, not iterable in the stubs) as a tuple of ints."""
    return tuple(int(value[i]) for i in range(len(value)))


@dataclass
class TensorInfo:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]  # as the engine declares it; -1 for dynamic dims
    # inputs only: min and max over every profile (the envelope), OPT of profile 0
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    # inputs only: (min, opt, max) per optimization profile, in the engine's order
    profiles: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = ()

    def covers(self, shape: tuple[int, ...], profile: int) -> bool:
        """Whether ``shape`` lies inside this input's range in ``profile``."""
        lo, _opt, hi = self.profiles[profile]
        return len(shape) == len(lo) and all(a <= d <= b for d, a, b in zip(shape, lo, hi, strict=True))

    def ranges(self) -> str:
        return "; ".join(
            f"profile {i}: {list(lo)}..{list(hi)}" for i, (lo, _opt, hi) in enumerate(self.profiles)
        )


def engine_batch_axes(inputs: Sequence[TensorInfo], specs: Sequence[TensorSpec]) -> dict[str, list[int]]:
    """The axes of each engine input that carry the batch: its dynamic axes the model the engine
    was built from (``specs``, :func:`~edgedeploy.backends.trt_sidecar.engine_model_inputs`) names
    as the batch, as the ONNX path reads them (silero-vad's ``state[2, batch, 128]``: axis 1), and
    a dynamic dim 0 where the model is not known."""
    by_name = {s.name: s for s in specs}
    names = batch_names(specs)
    axes: dict[str, list[int]] = {}
    for t in inputs:
        spec = by_name.get(t.name)
        if spec is not None and len(spec.shape) == len(t.shape):
            axes[t.name] = [a for a in batch_axes(spec.shape, names) if t.shape[a] == -1]
        else:
            axes[t.name] = [0] if t.shape and t.shape[0] == -1 else []
    return axes


def batch_range(
    inputs: Sequence[TensorInfo], axes: Mapping[str, list[int]], profile: int
) -> tuple[int, int] | None:
    """The batch sizes ``profile`` takes on every batch axis (``axes``, :func:`engine_batch_axes`),
    lowest and highest (low above high where none); None where no input has a batch axis."""
    ranges = [
        (t.profiles[profile][0][a], t.profiles[profile][2][a])
        for t in inputs
        if t.profiles
        for a in axes.get(t.name, [])
    ]
    if not ranges:
        return None
    return max(lo for lo, _ in ranges), min(hi for _, hi in ranges)


def batch_ranges(inputs: Sequence[TensorInfo], axes: Mapping[str, list[int]]) -> list[tuple[int, int]]:
    """The batch range of each profile that takes one (:func:`batch_range`), in the engine's order;
    empty where no input has a batch axis."""
    count = max((len(t.profiles) for t in inputs), default=0)
    found = (batch_range(inputs, axes, p) for p in range(count))
    return [r for r in found if r is not None and r[0] <= r[1]]


def engine_batch_ranges(engine: Path, specs: Sequence[TensorSpec]) -> list[tuple[int, int]]:
    """:func:`batch_ranges` of ``engine``, its batch axes named as ``specs`` name them (the model it
    runs for: :func:`engine_batch_axes`)."""
    with EngineSession(engine) as session:
        inputs = session.inputs
    return batch_ranges(inputs, engine_batch_axes(inputs, specs))


@dataclass
class _Buffer:
    host: np.ndarray
    device: pycuda.driver.DeviceAllocation
    capacity: int  # bytes allocated on the device


class EngineSession:
    """Load an engine, own its context, stream and buffers; ``close`` releases all of them."""

    def __init__(
        self,
        engine_path: Path,
        *,
        device: int = 0,
        version_compatible: bool | None = None,
        dla_core: int | None = None,
        profile: int | None = None,
    ) -> None:
        """``version_compatible``/``dla_core`` default to what the engine's sidecar says.

        ``profile`` pins one optimization profile; ``None`` picks, per input shape set, the first
        profile that covers it.
        """
        self.engine_path = Path(engine_path)
        self.pinned_profile = profile
        self.active_profile = 0  # a new context starts on profile 0 (docs/tensorrt-facts.md)
        self.profile_count = 1
        self.device = device
        self.version_compatible = version_compatible
        self.dla_core = dla_core
        self.tensors: list[TensorInfo] = []
        self._buffers: dict[str, _Buffer] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._cuda_context: pycuda.driver.Context | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self.stream: pycuda.driver.Stream | None = None

    # -- lifetime -------------------------------------------------------------------------------

    def open(self) -> EngineSession:
        import pycuda.driver as cuda
        import tensorrt as trt_mod

        from edgedeploy.backends.trt_build import BuildLog, make_logger, prepare_runtime
        from edgedeploy.backends.trt_sidecar import read_sidecar

        built = read_sidecar(self.engine_path) or {}
        plan = built.get("plan") or {}  # sidecars before the top-level keys kept these in the plan
        if self.version_compatible is None:
            self.version_compatible = bool(built.get("version_compatible", plan.get("version_compatible")))
        dla_core = built.get("dla_core", plan.get("dla_core"))
        if self.dla_core is None and dla_core is not None:
            self.dla_core = int(dla_core)
        cuda.init()
        self._cuda_context = cuda.Device(self.device).retain_primary_context()
        self._cuda_context.push()
        try:
            messages = BuildLog()
            runtime = trt_mod.Runtime(make_logger(messages))
            prepare_runtime(runtime, version_compatible=self.version_compatible, dla_core=self.dla_core)
            engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is None:
                said = messages.errors()
                because = f": {said[-1].strip().splitlines()[0][:300]}" if said else ""
                raise InputError(
                    f"TensorRT {trt_mod.__version__} could not load {self.engine_path.name}{because}; "
                    "rebuild it here with --backend tensorrt"
                )
            self._engine = engine
            self._context = engine.create_execution_context()
            self.stream = cuda.Stream()
            self.profile_count = count = max(int(engine.num_optimization_profiles), 1)
            self.tensors = self._describe(engine, count)
            if self.pinned_profile is not None and not 0 <= self.pinned_profile < count:
                raise InputError(
                    f"{self.engine_path.name} has {count} optimization profile(s); "
                    f"there is no profile {self.pinned_profile}"
                )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Free buffers, context, engine and stream, then release the CUDA context (in that order)."""
        for buffer in self._buffers.values():
            buffer.device.free()
        self._buffers.clear()
        self._shapes.clear()
        self._context = None
        self._engine = None
        self.stream = None
        gc.collect()  # pycuda objects held in cycles must go while the context lives
        if self._cuda_context is not None:
            import pycuda.driver as cuda

            cuda.Context.pop()
            self._cuda_context.detach()
            self._cuda_context = None

    def __enter__(self) -> EngineSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- description ----------------------------------------------------------------------------

    @staticmethod
    def _describe(engine: trt.ICudaEngine, count: int) -> list[TensorInfo]:
        """Every I/O tensor; an input with its range in each of the engine's ``count`` profiles."""
        import tensorrt as trt_mod

        tensors = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt_mod.TensorIOMode.INPUT
            info = TensorInfo(
                name=name,
                is_input=is_input,
                dtype=np.dtype(trt_mod.nptype(engine.get_tensor_dtype(name))),
                shape=dims(engine.get_tensor_shape(name)),
            )
            if is_input:
                info.profiles = tuple(
                    (dims(lo), dims(opt), dims(hi))
                    for lo, opt, hi in (engine.get_tensor_profile_shape(name, i) for i in range(count))
                )
                lows, highs = [p[0] for p in info.profiles], [p[2] for p in info.profiles]
                info.min_shape = tuple(min(d) for d in zip(*lows, strict=True))
                info.max_shape = tuple(max(d) for d in zip(*highs, strict=True))
                info.opt_shape = info.profiles[0][1]
            tensors.append(info)
        return tensors

    @property
    def inputs(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [t for t in self.tensors if not t.is_input]

    @property
    def context(self) -> trt.IExecutionContext:
        if self._context is None:
            raise RuntimeError("engine session is not open")
        return self._context

    def default_shapes(self) -> dict[str, tuple[int, ...]]:
        """Static shapes as declared, dynamic inputs at the OPT shape of the pinned (else first) profile."""
        index = self.pinned_profile or 0
        return {
            t.name: (t.profiles[index][1] if t.profiles else t.shape) if -1 in t.shape else t.shape
            for t in self.inputs
        }

    def _profile_for(self, wanted: Mapping[str, tuple[int, ...]]) -> int:
        """The pinned profile, else the first whose ranges cover every dynamic input of ``wanted``."""
        dynamic = [t for t in self.inputs if -1 in t.shape and t.profiles]
        candidates = [self.pinned_profile] if self.pinned_profile is not None else range(self.profile_count)
        for index in candidates:
            if all(t.covers(wanted[t.name], index) for t in dynamic):
                return index
        for t in dynamic:
            if not any(t.covers(wanted[t.name], i) for i in candidates):
                raise InputError(
                    f"input '{t.name}' shape {list(wanted[t.name])} is outside the engine's profile "
                    f"({t.ranges()}); rebuild with a wider --profile"
                )
        raise InputError(
            "no single optimization profile covers the input shapes "
            + ", ".join(f"{t.name} {list(wanted[t.name])}" for t in dynamic)
            + " ("
            + " | ".join(f"{t.name}: {t.ranges()}" for t in dynamic)
            + "); rebuild with a profile that spans them together"
        )

    # -- shapes and buffers ---------------------------------------------------------------------

    def set_input_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Set every input's shape, then size buffers and bind every tensor address."""
        wanted = {**self.default_shapes(), **{k: tuple(v) for k, v in shapes.items()}}
        unknown = set(wanted) - {t.name for t in self.inputs}
        if unknown:
            raise InputError(f"engine has no input(s) {', '.join(sorted(unknown))}")
        if wanted == self._shapes:
            return
        profile = self._profile_for(wanted)
        if profile != self.active_profile:
            assert self.stream is not None
            if not self.context.set_optimization_profile_async(profile, self.stream.handle):
                raise InputError(f"TensorRT refused optimization profile {profile}")
            self.stream.synchronize()  # the switch may copy on this stream; enqueue follows it
            self.active_profile = profile
        for spec in self.inputs:
            shape = wanted[spec.name]
            if not self.context.set_input_shape(spec.name, shape):
                raise InputError(f"TensorRT refused shape {list(shape)} for input '{spec.name}'")
        for spec in self.tensors:
            shape = dims(self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise InputError(
                    f"output '{spec.name}' has a data-dependent shape {list(shape)}; not supported"
                )
            self._bind(spec, shape)
        self._shapes = wanted

    def _bind(self, spec: TensorInfo, shape: tuple[int, ...]) -> None:
        import pycuda.driver as cuda

        nbytes = max(int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize, 1)
        buffer = self._buffers.get(spec.name)
        if buffer is None or buffer.capacity < nbytes:
            if buffer is not None:
                buffer.device.free()
            buffer = _Buffer(
                host=cuda.pagelocked_empty(shape, spec.dtype),
                device=cuda.mem_alloc(nbytes),
                capacity=nbytes,
            )
            self._buffers[spec.name] = buffer
        elif buffer.host.shape != shape:
            buffer.host = cuda.pagelocked_empty(shape, spec.dtype)
        self.context.set_tensor_address(spec.name, int(buffer.device))

    def host(self, name: str) -> np.ndarray:
        return self._buffers[name].host

    # -- execution ------------------------------------------------------------------------------

    def load(self, feed: Mapping[str, np.ndarray]) -> None:
        """Set shapes from ``feed`` and copy it into the page-locked input buffers."""
        self.set_input_shapes({k: tuple(np.shape(v)) for k, v in feed.items()})
        for spec in self.inputs:
            if spec.name not in feed:
                raise InputError(f"missing input '{spec.name}'")
            np.copyto(self.host(spec.name), np.asarray(feed[spec.name]), casting="same_kind")

    def copy_inputs(self) -> None:
        import pycuda.driver as cuda

        for spec in self.inputs:
            buffer = self._buffers[spec.name]
            cuda.memcpy_htod_async(buffer.device, buffer.host, self.stream)

    def enqueue(self) -> None:
        assert self.stream is not None
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT failed to enqueue {self.engine_path.name}")

    def copy_outputs(self) -> None:
        import pycuda.driver as cuda

        for spec in self.outputs:
            buffer = self._buffers[spec.name]
            cuda.memcpy_dtoh_async(buffer.host, buffer.device, self.stream)

    def synchronize(self) -> None:
        assert self.stream is not None
        self.stream.synchronize()

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load(feed)
        self.copy_inputs()
        self.enqueue()
        self.copy_outputs()
        self.synchronize()
        return {spec.name: self.host(spec.name).copy() for spec in self.outputs}

    def random_feed(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs at the current shapes, filled with seeded data of each input's dtype."""
        rng = np.random.default_rng(seed)
        feed = {}
        for spec in self.inputs:
            shape = self._shapes.get(spec.name) or self.default_shapes()[spec.name]
            if spec.dtype.kind == "f":
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype.kind == "b":
                feed[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
            else:
                feed[spec.name] = rng.integers(0, 8, shape).astype(spec.dtype)
        return feed
