"""A fake ``pycuda`` and ``pycuda.driver`` over a simulated GPU (``FakeGpu``) that records every call.

Device memory is numpy byte arrays addressed by fake pointers, copies really copy, and each stream
has a simulated clock in milliseconds that copies and engine launches advance, so CUDA-event
timings are deterministic: a copy takes ``nbytes * ms_per_byte``, an engine launch ``compute_ms``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FakeGpu:
    name: str = "NVIDIA Fake GPU"
    compute_capability: tuple[int, int] = (8, 9)
    total_memory: int = 8 << 30
    free_memory: int = 6 << 30
    driver_version: int = 12040
    compute_ms: float = 1.0
    compute_jitter_ms: float = 0.0
    ms_per_byte: float = 1e-6
    present: bool = True
    memory: dict[int, np.ndarray] = field(default_factory=dict)
    clocks: dict[int, float] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    context_depth: int = 0
    context_alive: bool = False  # the retained primary context (released by its last detach)
    dead_context_cleanups: list[str] = field(default_factory=list)  # frees after the context died
    _next_ptr: int = 0x1000
    _launches: int = 0

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def alloc(self, nbytes: int) -> int:
        ptr = self._next_ptr
        self._next_ptr += max(nbytes, 1) + 256
        self.memory[ptr] = np.zeros(max(nbytes, 1), dtype=np.uint8)
        return ptr

    def advance(self, stream: int, ms: float) -> None:
        self.clocks[stream] = self.clocks.get(stream, 0.0) + ms

    def launch_ms(self) -> float:
        self._launches += 1
        jitter = self.compute_jitter_ms * (1 if self._launches % 2 else -1)
        return self.compute_ms + jitter


def make_pycuda(gpu: FakeGpu) -> tuple[types.ModuleType, types.ModuleType]:
    """Fresh ``pycuda`` and ``pycuda.driver`` modules bound to ``gpu``."""
    pycuda = types.ModuleType("pycuda")
    pycuda.VERSION = (2024, 1, 2)  # type: ignore[attr-defined]
    pycuda.VERSION_TEXT = "2024.1.2"  # type: ignore[attr-defined]
    driver = types.ModuleType("pycuda.driver")
    pycuda.driver = driver  # type: ignore[attr-defined]

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class RuntimeError(Error):
        pass

    class MemoryError(Error):
        pass

    def init(flags: int = 0) -> None:
        gpu.record("init", flags)
        if not gpu.present:
            raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    def get_driver_version() -> int:
        return gpu.driver_version

    def mem_get_info() -> tuple[int, int]:
        if gpu.context_depth == 0:
            raise LogicError("cuMemGetInfo failed: invalid device context")
        return gpu.free_memory, gpu.total_memory

    class DeviceAllocation:
        def __init__(self, ptr: int) -> None:
            self._ptr = ptr

        def __int__(self) -> int:
            return self._ptr

        def __index__(self) -> int:
            return self._ptr

        def free(self) -> None:
            gpu.record("DeviceAllocation.free", self._ptr)
            _cleanup("DeviceAllocation.free")
            gpu.memory.pop(self._ptr, None)

    def mem_alloc(bytes: int) -> DeviceAllocation:
        ptr = gpu.alloc(int(bytes))
        gpu.record("mem_alloc", int(bytes), ptr)
        return DeviceAllocation(ptr)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        gpu.record(
            "pagelocked_empty", tuple(np.atleast_1d(shape)) if shape != () else (), np.dtype(dtype).name
        )
        return np.empty(shape, dtype=dtype, order=order)  # type: ignore[call-overload]

    def _cleanup(what: str) -> None:
        # pycuda frees device objects in their destructors; once the context is gone it prints
        # "PyCUDA WARNING: a clean-up operation failed (dead context maybe?)" and the resource leaks
        # (docs/tensorrt-facts.md, "pycuda clean-up after the context died"): recorded here so tests
        # can refuse it.
        if not gpu.context_alive:
            gpu.dead_context_cleanups.append(what)

    def _stream_handle(stream: Any) -> int:
        return 0 if stream is None else int(stream.handle)

    def memcpy_htod_async(dest: Any, src: Any, stream: Any = None) -> None:
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        gpu.memory[int(dest)][: data.size] = data
        gpu.record("memcpy_htod_async", int(dest), data.size, _stream_handle(stream))
        gpu.advance(_stream_handle(stream), data.size * gpu.ms_per_byte)

    def memcpy_dtoh_async(dest: Any, src: Any, stream: Any = None) -> None:
        view = dest.view(np.uint8).reshape(-1)
        view[:] = gpu.memory[int(src)][: view.size]
        gpu.record("memcpy_dtoh_async", int(src), view.size, _stream_handle(stream))
        gpu.advance(_stream_handle(stream), view.size * gpu.ms_per_byte)

    def memcpy_htod(dest: Any, src: Any) -> None:
        memcpy_htod_async(dest, src, None)

    def memcpy_dtoh(dest: Any, src: Any) -> None:
        memcpy_dtoh_async(dest, src, None)

    class Context:
        def push(self) -> None:
            gpu.record("Context.push")
            gpu.context_depth += 1

        @staticmethod
        def pop() -> None:
            gpu.record("Context.pop")
            gpu.context_depth -= 1

        def detach(self) -> None:
            gpu.record("Context.detach")
            gpu.context_alive = False

        @staticmethod
        def synchronize() -> None:
            gpu.record("Context.synchronize")

    class Device:
        def __init__(self, number: int) -> None:
            if not gpu.present:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self._number = number

        @staticmethod
        def count() -> int:
            return 1 if gpu.present else 0

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.compute_capability

        def total_memory(self) -> int:
            return gpu.total_memory

        def retain_primary_context(self) -> Context:
            gpu.record("Device.retain_primary_context", self._number)
            gpu.context_alive = True
            return Context()

        def make_context(self, flags: int = 0) -> Context:
            gpu.record("Device.make_context", self._number)
            gpu.context_alive = True
            ctx = Context()
            ctx.push()
            return ctx

    class Stream:
        _count = 0

        def __init__(self, flags: int = 0) -> None:
            Stream._count += 1
            self._handle = 0x5000 + Stream._count
            gpu.record("Stream", self._handle)

        @property
        def handle(self) -> int:
            return self._handle

        def synchronize(self) -> None:
            gpu.record("Stream.synchronize", self._handle)

        def is_done(self) -> bool:
            return True

        def __del__(self) -> None:
            _cleanup("Stream.__del__")

    class Event:
        def __init__(self, flags: int = 0) -> None:
            self._time: float | None = None

        def __del__(self) -> None:
            _cleanup("Event.__del__")

        def record(self, stream: Any = None) -> Event:
            self._time = gpu.clocks.get(_stream_handle(stream), 0.0)
            return self

        def synchronize(self) -> Event:
            return self

        def query(self) -> bool:
            return True

        def time_since(self, event: Event) -> float:
            assert self._time is not None and event._time is not None, "event was never recorded"
            return self._time - event._time

        def time_till(self, event: Event) -> float:
            return event.time_since(self)

    for obj in (
        Error,
        LogicError,
        RuntimeError,
        MemoryError,
        init,
        get_driver_version,
        mem_get_info,
        DeviceAllocation,
        mem_alloc,
        pagelocked_empty,
        memcpy_htod_async,
        memcpy_dtoh_async,
        memcpy_htod,
        memcpy_dtoh,
        Context,
        Device,
        Stream,
        Event,
    ):
        setattr(driver, obj.__name__, obj)
    return pycuda, driver
