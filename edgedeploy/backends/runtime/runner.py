"""A Polygraphy runner over :class:`EngineSession`, so ``compare`` treats engines like ONNX files.

Polygraphy's own TrtRunner uses its ctypes CUDA wrapper; the issue asks for a pycuda runtime
(the one Jetson users already have), so this runner wraps ours behind Polygraphy's interface.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from edgedeploy.backends.runtime.engine import EngineSession
from edgedeploy.errors import InputError


class PycudaEngineRunner(BaseRunner):  # type: ignore[misc]
    def __init__(self, engine_path: Path, *, name: str | None = None, device: int = 0) -> None:
        super().__init__(name=name, prefix="trt-pycuda-runner")
        self.engine_path = Path(engine_path)
        self.device = device

    def activate_impl(self) -> None:
        try:
            self.session = EngineSession(self.engine_path, device=self.device).open()
        except AttributeError as exc:  # an API this TensorRT lacks: one line, not a traceback
            missing = exc.name or exc
            raise InputError(f"this TensorRT has no {missing}: cannot run {self.engine_path.name}") from None

    def get_input_metadata_impl(self) -> TensorMetadata:
        meta = TensorMetadata()
        for spec in self.session.inputs:
            meta.add(spec.name, spec.dtype, spec.shape, min_shape=spec.min_shape, max_shape=spec.max_shape)
        return meta

    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict[str, Any]:
        start = time.perf_counter()
        outputs = self.session.infer(feed_dict)
        self.inference_time = time.perf_counter() - start
        return OrderedDict(outputs)

    def deactivate_impl(self) -> None:
        self.session.close()
        del self.session
