"""One function that turns result dataclasses into JSON, so CLI, manifest and report agree.

Conversion only; files are written by :func:`edgedeploy.fileio.atomic_write_json`, the one JSON writer.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

# the metadata of a dataclass field to_jsonable leaves out (arrays a stage hands to the next one)
NOT_JSON = {"json": False}


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (but their :data:`NOT_JSON` fields), paths, numpy scalars and arrays, enums -> plain
    JSON values (NaN/Inf -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("json", True)
        }
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2) + "\n"
