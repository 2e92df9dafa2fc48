"""The types of the JSON fields the report reads, checked in one place when a file is read.

The report draws from files a user can edit or another tool can write (load.py): a field of the
wrong type (a latency of "fast", a compare's outputs given as a list) reached stats.py or the
page's formatting as a traceback. Each kind of file has a spec of the fields the page uses; a
field that is absent is fine (the page shows "–"), one of another type refuses the file by name.

A spec is a tuple of types (``None`` among them where null is a value the writers use), a dict
(an object and the spec of its fields), a list of one spec (a list of such items), :class:`Each`
(an object of any keys, each value one spec) or :class:`Needed` (a field that must be there, not
null). An object or list given as a field may be null: the readers take null for absent there.
Latencies are :data:`MS` (a finite number >= 0) and :class:`Rising` (percentiles in order): a file
edited to a p50 of -1, NaN or a p50 above its p99 is damaged, refused by name as a wrong type is.
So are the other measured figures (:data:`MEASURED`: throughput, iterations, peak memory, power and
energy) and sizes (:data:`COUNT`, a whole number >= 0): a throughput of -5 or NaN, a negative size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

NULL = type(None)
NUM = (int, float, NULL)  # a figure: null where nothing was measured
NUMBER = (int, float)
FIGURE = (int, float, str, NULL)  # compare's per-output figures: "NaN", "Infinity", "-Infinity" too
INT = (int, NULL)
STR = (str, NULL)
BOOL = (bool, NULL)
TEXT = (str, int, float, bool, NULL)  # shown as it is
ANY = (object,)
OBJECT: dict[str, Any] = {}  # an object, whatever its fields


@dataclass(frozen=True)
class Each:
    """An object of any keys, each value of ``spec``."""

    spec: Any


@dataclass(frozen=True)
class Needed:
    """A field the readers index: it must be there and not null."""

    spec: Any


@dataclass(frozen=True)
class Measured:
    """A figure that cannot be negative: a finite number >= 0 (``whole``: an integer >= 0, a count of
    bytes), or null where nothing was measured."""

    whole: bool = False
    least: int = 0  # the smallest figure that can be: a batch has at least one sample


@dataclass(frozen=True)
class Rising:
    """``spec`` (an object or a list), whose ``keys`` (an object's, in order; a list's items) do not
    fall: percentiles, a latency CDF's quantiles."""

    spec: Any
    keys: tuple[str, ...] = ()


MEASURED = Measured()  # throughput, iterations, memory, power, energy
MS = MEASURED  # a latency
COUNT = Measured(whole=True)  # a size in bytes
BATCH = Measured(whole=True, least=1)  # a batch size: 0 and -2 were printed as the batch "for" a latency

# ---------------------------------------------------------------- the forms the files share

TOOLS = Each(TEXT)
# min_top1: one value for every 2-D float output, or {output: value} for the outputs named only
TOP1_GATE = (int, float, dict, NULL)
GATES = {"min_cosine": NUM, "min_top1": TOP1_GATE, "check_allclose": TEXT, "atol": NUM, "rtol": NUM}
INFO = {"task_metric": {"name": Needed(TEXT), "value": NUM}}  # a precision's build info
SETTINGS = {"host_target": STR, "cpu": STR, "onnxruntime": STR, "tensorrt": STR}
ENERGY = {
    "measurable": BOOL,
    "source": STR,
    "reason": STR,
    "avg_power_w": MEASURED,
    "energy_per_inference_mj": MEASURED,
    "rails": Each(Needed(MEASURED)),  # watts
    "rails_covered": STR,
    "trace": {"t_s": [NUMBER], "rails": Each([MEASURED])},
}
LATENCY_FIGURES = {"median_ms": MS, "p90_ms": MS, "p99_ms": MS, "mean_ms": MS, "cv_percent": MS}
PERCENTILES = ("median_ms", "p90_ms", "p99_ms")
LATENCY = Rising(LATENCY_FIGURES, PERCENTILES)
BATCH_FIGURES = {
    "iterations": MEASURED,
    "throughput_ips": MEASURED,
    "throughput_qps": MEASURED,
    "model_peak_rss_mb": MEASURED,
    "peak_rss_mb": MEASURED,  # files written before model_peak_rss_mb: the whole process's peak
    "energy": ENERGY,
    "quantiles_ms": Rising([Needed(MS)]),  # 0..100 %
}
# ProfileResult.summary(): what a run record and a manifest keep
PROFILE_SUMMARY = {
    "backend": STR,
    "settings": SETTINGS,
    "batch_sizes": Each(Rising({**LATENCY_FIGURES, **BATCH_FIGURES}, PERCENTILES)),
}
OUTPUT_FIGURES = {
    "max_abs": NUM,
    "cosine": NUM,
    "norm_ratio": NUM,
    "snr_db": NUM,
    "top1_agreement": NUM,
    "top1_gated": NUM,
    "equal_share": NUM,
}
# CompareResult.summary()
COMPARE_SUMMARY = {
    "passed": BOOL,
    "mode": STR,
    "iterations": TEXT,
    "outputs": Each({**OUTPUT_FIGURES, "nan_inf": NUM, "nonfinite_mismatches": NUM, "identical": BOOL}),
}
PRECISION = {
    "precision": STR,
    "backend": STR,
    "model": STR,
    "compare": COMPARE_SUMMARY,
    "profile": PROFILE_SUMMARY,
}

# ---------------------------------------------------------------- sidecars and analysis files

RANGES = {
    "model": STR,
    "summary": OBJECT,
    "tensors": [
        {"tensor": TEXT, "op": TEXT, "producer": TEXT, "absmax": NUM, "absmin": NUM, "risks": [TEXT]}
    ],
}
PLAN = {"nodes_total": TEXT, "nodes": [{"node": TEXT, "op": TEXT, "precision": STR, "reason": TEXT}]}
CALIBRATION = {
    "model": STR,
    "format": TEXT,
    "algorithm": {"algorithm": TEXT},
    "samples": TEXT,
    "synthetic": TEXT,
    "placement": TEXT,
    "weight_bits": TEXT,
    "quantized_nodes": [ANY],
    "excluded_nodes": [(str,)],
    "tensors": [
        {
            "name": TEXT,
            "dtype": TEXT,
            "zero_point": TEXT,
            "amax": NUM,
            "threshold": NUM,
            "scale": NUM,
            "clipped": NUM,
            "histogram": {"top": Needed(NUMBER), "bins": INT, "counts": [NUMBER]},
        }
    ],
}
BUDGET = {
    "precision": TEXT,
    "budget": TEXT,
    "met": BOOL,
    "higher": STR,
    "steps": [{"kept": [TEXT], "measured": Each(NUM), "met": BOOL}],
    "measurements": INT,
    "probe_measurements": INT,
    "ranking": STR,
    "ranking_seconds": NUM,
    "seconds": NUM,
}
PER_LAYER = {
    "precision": TEXT,
    "mode": TEXT,
    "gates": GATES,
    "layers": [{"order": (int,), "tensor": TEXT, "cosine": FIGURE, "exceeds": TEXT}],
}

# ---------------------------------------------------------------- each kind of file, by load.py's name

COMPARE = {
    "reference": STR,
    "candidate": STR,
    "reference_sha256": STR,  # absent in files written before compare recorded them
    "candidate_sha256": STR,
    "candidate_precision": STR,
    "precision": STR,
    "mode": STR,
    "passed": BOOL,
    "iterations": TEXT,
    "gates": GATES,
    "outputs": Each(
        {
            **dict.fromkeys(OUTPUT_FIGURES, FIGURE),
            "nan_count": NUM,
            "inf_count": NUM,
            "nonfinite_mismatches": NUM,
            "identical": BOOL,
        }
    ),
}
SCHEMAS: dict[str, Any] = {
    "run": {
        "model_name": STR,
        "target": STR,
        "created": STR,
        "tools": TOOLS,
        "gates": GATES,
        "precisions": [{**PRECISION, "info": INFO, "files": [(str,)]}],
        "not_built": Each({"reason": TEXT, "steps": STR}),
        "bundle": {"directory": STR},
    },
    "bundle": {
        "model": {"name": STR},
        "target": {"name": STR, "description": STR},
        "tools": TOOLS,
        "gates": GATES,
        "primary_precision": STR,
        "created": STR,
        "artifacts": [{**PRECISION, "precision_info": INFO}],
    },
    "compare": COMPARE,
    "compare-per-layer": {"compare": Needed(COMPARE), "per_layer": Needed(PER_LAYER)},
    "profile": {
        "artifact": STR,
        "backend": STR,
        "precision": STR,
        "candidate_precision": STR,
        "mode": STR,
        "bytes": COUNT,
        "sha256": STR,  # absent in files written before profile recorded it
        "settings": SETTINGS,
        "batches": [{"batch_size": BATCH, "latency": LATENCY, **BATCH_FIGURES}],
    },
    "analyze": RANGES,
    "calibrate": {"target": STR, "report": Needed(CALIBRATION)},
    "build": {
        "precision": Needed({"precision": STR, "path": STR, "bytes": COUNT, "info": INFO, "files": [(str,)]}),
        "build": {"backend": STR, "info": {"target": STR, "onnxruntime": TEXT, "tensorrt": TEXT}},
    },
    "ranges": RANGES,  # the sidecars, by load.py's SIDECARS
    "plan": PLAN,
    "calibration": CALIBRATION,
    "budget": BUDGET,
}


def _what(value: Any) -> str:
    """A JSON value's type in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _wanted(spec: Any) -> str:
    if isinstance(spec, (Needed, Rising)):
        return _wanted(spec.spec)
    if isinstance(spec, Measured):
        return "a whole number" if spec.whole else "a number"
    if isinstance(spec, (dict, Each)):
        return "an object"
    if isinstance(spec, list):
        return "a list"
    # an int that is not a float: a whole number (1.5 was "a number (1.5), not a number or null")
    whole = "a number" if float in spec else "a whole number"
    words = {int: whole, float: "a number", str: "a string", bool: "true/false", NULL: "null"}
    return " or ".join(dict.fromkeys(words[t] for t in spec if t in words)) or "a value"


def _fits(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types and object not in types:
        return False  # JSON's true is no number
    return isinstance(value, types)


def _falls(value: Any, spec: Rising, where: str) -> str | None:
    """Where ``value`` (of ``spec.spec`` already) falls, in words, or None."""
    if isinstance(value, list):
        for i in range(1, len(value)):
            if value[i] < value[i - 1]:
                return f"{where}[{i}] ({value[i]!r}) < [{i - 1}] ({value[i - 1]!r}), not in order"
    elif isinstance(value, dict):
        named = [key for key in spec.keys if value.get(key) is not None]
        for low, high in itertools.pairwise(named):
            if value[high] < value[low]:
                name = f"{where}.{low}" if where else low
                return f"{name} ({value[low]!r}) > {high} ({value[high]!r}), not in order"
    return None


def problem(value: Any, spec: Any, where: str = "", field: bool = False) -> str | None:
    """Where ``value`` is not of ``spec``, in words (``batches[0].latency.median_ms is a string,
    not a number``), or None. ``field``: ``value`` is an object's field, where null means absent."""
    if isinstance(spec, Needed):
        if value is None:
            return f"{where} is missing or null"
        return problem(value, spec.spec, where)
    if isinstance(spec, Rising):
        return problem(value, spec.spec, where, field) or _falls(value, spec, where)
    if isinstance(spec, Measured) and _fits(value, NUM):
        if spec.whole and (value is None or (isinstance(value, int) and value >= spec.least)):
            return None
        if not spec.whole and (value is None or (math.isfinite(value) and value >= spec.least)):
            return None
        wanted = "a whole number" if spec.whole else "a finite number"
        return f"{where} is {value!r}, not {wanted} >= {spec.least}"
    if isinstance(spec, tuple):
        if _fits(value, spec):
            return None
    elif value is None and field:
        return None
    elif isinstance(spec, list) and isinstance(value, list):
        for i, item in enumerate(value):
            if found := problem(item, spec[0], f"{where}[{i}]"):
                return found
        return None
    elif isinstance(spec, (dict, Each)) and isinstance(value, dict):
        for key, item in value.items():
            inner = spec.spec if isinstance(spec, Each) else spec.get(key)
            name = f"{where}.{key}" if where else key
            if inner is not None and (found := problem(item, inner, name, not isinstance(spec, Each))):
                return found
        if isinstance(spec, dict):
            missing = [key for key, inner in spec.items() if isinstance(inner, Needed) and key not in value]
            if missing:
                return f"{where + '.' if where else ''}{missing[0]} is missing"
        return None
    shown = (
        f" ({value!r:.40})" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    )
    return f"{where or 'the file'} is {_what(value)}{shown}, not {_wanted(spec)}"
