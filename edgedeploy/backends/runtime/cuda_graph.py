"""Capture one ``execute_async_v3`` into a CUDA graph and replay it, as ``trtexec --useCudaGraph`` does.

pycuda has no stream-capture API, so this calls the CUDA runtime through ctypes, reusing the
libcudart that Polygraphy already locates. ``cudaGraphInstantiateWithFlags`` keeps one
signature across CUDA 11.4-13 (``cudaGraphInstantiate`` changed in 12). Where capture fails
(old CUDA, an engine with unsupported layers) the caller falls back to plain enqueues and says so.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

CAPTURE_MODE_THREAD_LOCAL = 1


def _cudart() -> Any:
    from polygraphy.cuda import wrapper

    return wrapper().handle


class CudaGraph:
    """A captured, instantiated graph bound to one stream handle."""

    def __init__(self, stream_handle: int, cudart: Any | None = None) -> None:
        self.stream = ctypes.c_void_p(stream_handle)
        self.cudart = cudart if cudart is not None else _cudart()
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with CUDA error {status}")

    def capture(self, enqueue: Callable[[], None]) -> CudaGraph:
        rt = self.cudart
        self._check(
            rt.cudaStreamBeginCapture(self.stream, CAPTURE_MODE_THREAD_LOCAL), "cudaStreamBeginCapture"
        )
        try:
            enqueue()
        finally:
            status = rt.cudaStreamEndCapture(self.stream, ctypes.byref(self._graph))
        self._check(status, "cudaStreamEndCapture")
        self._check(
            rt.cudaGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph, ctypes.c_ulonglong(0)),
            "cudaGraphInstantiateWithFlags",
        )
        return self

    def launch(self) -> None:
        self._check(self.cudart.cudaGraphLaunch(self._exec, self.stream), "cudaGraphLaunch")

    def close(self) -> None:
        if self._exec.value:
            self.cudart.cudaGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph.value:
            self.cudart.cudaGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()
