"""GPU runtime for TensorRT engines through pycuda: a Polygraphy runner and trtexec-grade timing.

Nothing here imports tensorrt or pycuda at import time; they are loaded by the functions that
need them, so ``import edgedeploy.backends.runtime`` works on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgedeploy.backends.runtime.timing import EngineProfile, LayerTime, profile_engine

__all__ = ["EngineProfile", "LayerTime", "profile_engine"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edgedeploy.backends.runtime import timing

        return getattr(timing, name)
    raise AttributeError(name)
