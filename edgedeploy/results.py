"""One function that turns result dataclasses into JSON, so CLI, manifest and report agree.

Conversion only; files are written by :func:`edgedeploy.fileio.atomic_write_json`, the one JSON writer.
NaN and infinities are null, except in a dataclass that sets ``JSON_NONFINITE_AS_TEXT`` (compare's
per-output figures, where null means "identical"): there they are the strings "NaN", "Infinity" and
"-Infinity" (protobuf's JSON mapping; ``float()`` reads them back, :func:`figure_from_json`).
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
NONFINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_jsonable(obj: Any, nonfinite_as_text: bool = False) -> Any:
    """Dataclasses (but their :data:`NOT_JSON` fields; one with an ``as_json()`` method as what that
    returns: a TensorSpec's dtype "object" as "string", a ZipMap output's type and no tensor shape),
    paths, numpy scalars and arrays, enums -> plain JSON values (NaN/Inf -> None, or their text inside
    a dataclass that sets ``JSON_NONFINITE_AS_TEXT``: see the module's doc)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        text = nonfinite_as_text or bool(getattr(obj, "JSON_NONFINITE_AS_TEXT", False))
        if callable(view := getattr(type(obj), "as_json", None)):
            return to_jsonable(view(obj), text)
        return {
            f.name: to_jsonable(getattr(obj, f.name), text)
            for f in dataclasses.fields(obj)
            if f.metadata.get("json", True)
        }
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, nonfinite_as_text) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, nonfinite_as_text) for v in obj]
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), nonfinite_as_text)
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), nonfinite_as_text)
    if isinstance(obj, float) and not math.isfinite(obj):
        if not nonfinite_as_text:
            return None
        return "NaN" if math.isnan(obj) else "Infinity" if obj > 0 else "-Infinity"
    return obj


def figure_from_json(value: Any) -> Any:
    """A figure as :func:`to_jsonable` wrote it -> the number: "NaN", "Infinity" and "-Infinity"
    as floats, other text as None (no figure), anything else as it is."""
    if isinstance(value, str):
        return NONFINITE_TEXT.get(value)
    return value


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2) + "\n"
