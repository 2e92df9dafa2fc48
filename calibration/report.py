"""The calibration report: per tensor the amax, the chosen threshold, the scale, the share of
values clipped and a compact |x| histogram, as JSON (also the calibration result cache) and as a
table on the terminal."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from calibration.atomic import atomic_write_text, content_sha256

# 2: a tensor's ``dtype`` and ``zero_point`` are those of the Q/DQ model as written, its ``levels``
# those its threshold was chosen for (format 1 recorded the levels as ``dtype``: int8 for 128)
REPORT_FORMAT = 2
REPORT_HISTOGRAM_BINS = 128  # the calibration histogram merged down for the report: about 0.5 kB a tensor


def compact_histogram(counts: Any, top: float, bins: int = REPORT_HISTOGRAM_BINS) -> dict[str, Any]:
    """A |x| histogram over ``[0, top]`` merged to ``bins`` equal bins, trailing empty bins dropped.

    ``counts`` has a multiple of ``bins`` entries (the observer's are powers of two >= 256).
    Returns ``{"top": top, "bins": bins, "counts": [...]}``: bin i covers
    ``[i, i + 1) * top / bins``; a reader pads the dropped empty bins with zeros.
    """
    import numpy as np

    arr = np.asarray(counts, dtype=np.int64)
    if arr.size % bins:
        raise ValueError(f"{arr.size} histogram bins do not merge evenly into {bins}")
    merged = arr.reshape(bins, -1).sum(axis=1)
    last = int(np.flatnonzero(merged)[-1]) + 1 if merged.any() else 0
    return {"top": float(top), "bins": bins, "counts": [int(c) for c in merged[:last]]}


@dataclass
class TensorReport:
    name: str
    amax: float
    threshold: float
    scale: float
    clipped: float  # share of observed values with |x| > threshold
    # the element type of its QuantizeLinear in the Q/DQ model as written ("int8", "uint8"; "float"
    # when that model leaves it unquantized, calibrated for other exclusions: see ``levels``)
    dtype: str = "int8"
    nonfinite: int = 0  # NaN/Inf values seen in this tensor (ignored by the statistics)
    histogram: dict[str, Any] | None = None  # compact_histogram() of |x|, exact zeros in bin 0
    rule: str = ""  # the algorithm whose threshold this is (auto chooses per tensor)
    # of the Q/DQ model as written: 128 for symmetric uint8, others for asymmetric uint8 (onnxruntime)
    zero_point: int = 0
    minimum: float | None = None  # observed min and max where the Q/DQ range follows them
    maximum: float | None = None
    levels: int = 128  # positive levels the threshold was chosen for: 256 unsigned, 128 signed


@dataclass
class WeightReport:
    name: str
    axis: int | None  # None: one scale for the whole weight (a 1-D or batched MatMul weight)
    channels: int
    bits: int


@dataclass
class CalibrationReport:
    model: str
    model_sha256: str
    key: str  # calibration key: model, algorithm and options, data, preprocessing, tensors
    key_parts: dict[str, Any]
    artifact_key: str  # key plus the Q/DQ and cache options
    algorithm: dict[str, Any]
    data: dict[str, Any]
    synthetic: bool
    samples: int
    placement: str
    weight_bits: int
    seconds: float
    tensors: list[TensorReport] = field(default_factory=list)
    cache_thresholds: dict[str, float] = field(default_factory=dict)  # 128-level amax per tensor
    weights: list[WeightReport] = field(default_factory=list)
    quantized_nodes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    # each --exclude-nodes pattern -> the nodes it selected (a name the model repeats: NAME, NAME#2...)
    exclude_nodes_matched: dict[str, list[str]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> file name
    # file name -> sha256 of the Q/DQ model and the TensorRT cache as written: a rerun reuses them
    # only when their contents are these (calibration/calibrate.py)
    outputs_sha256: dict[str, str] = field(default_factory=dict)
    trt_cache: dict[str, Any] | None = None  # version, header
    warnings: list[str] = field(default_factory=list)
    selection: dict[str, Any] | None = None  # auto: winner, held-out cosine per candidate set
    format: int = REPORT_FORMAT
    # sha256 of everything else in the JSON as written (see content_digest): a report edited since,
    # whose thresholds no longer made the Q/DQ model beside it, is not reused as the calibration
    content_sha256: str = ""

    def thresholds(self) -> dict[str, float]:
        return {t.name: t.threshold for t in self.tensors}

    def gptq_rounded(self) -> bool:
        """Whether auto kept GPTQ-rounded weights (in the ``.calib.rounding.npz`` beside the report)."""
        return bool(((self.selection or {}).get("weight_rounding") or {}).get("kept"))

    def extents(self) -> dict[str, tuple[float, float]]:
        """Observed (min, max) of the tensors whose Q/DQ range follows them (asymmetric uint8)."""
        return {
            t.name: (t.minimum, t.maximum)
            for t in self.tensors
            if t.minimum is not None and t.maximum is not None
        }

    def to_json(self) -> str:
        data = json.loads(json.dumps(asdict(self)))  # as a reader will see it (tuples as lists)
        data["content_sha256"] = content_digest(data)
        return json.dumps(data, indent=2) + "\n"

    def write(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json())


def content_digest(data: dict[str, Any]) -> str:
    """sha256 of a report's JSON content but its ``content_sha256`` (see calibration.atomic)."""
    return content_sha256(data, "content_sha256")


def load_report(path: str | os.PathLike[str]) -> CalibrationReport | None:
    """A previous report, or None when absent, unreadable, of another format or changed since it
    was written (its content no longer its ``content_sha256``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != REPORT_FORMAT or data.get("content_sha256") != content_digest(data):
            return None
        data["tensors"] = [TensorReport(**t) for t in data.get("tensors", [])]
        data["weights"] = [WeightReport(**w) for w in data.get("weights", [])]
        _check_bias_correction(data.get("selection"))
        _check_weight_rounding(data.get("selection"))
        _check_exclusions(data.get("selection"))
        return CalibrationReport(**data)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _check_exclusions(selection: Any) -> None:
    """Raises ValueError unless the ops and node patterns auto chose to leave in float are lists
    of text and the patterns compile: a rewrite from the report plans with them
    (calibration/calibrate.py), and a damaged one would fail there as if the user's
    --exclude-nodes were bad."""
    import re

    for key in ("exclude_ops", "exclude_nodes"):
        values = (selection or {}).get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"recorded {key} is not a list of text")
    for pattern in (selection or {}).get("exclude_nodes", []):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"recorded node pattern {pattern!r}: {exc}") from None


def _check_bias_correction(selection: Any) -> None:
    """Raises ValueError, TypeError or AttributeError unless a kept bias correction's recorded
    means are finite numbers and its sizes whole numbers: a rewrite from the report applies them
    (calibration/calibrate.py ``_reused_bias_shift``)."""
    import numpy as np

    recorded = (selection or {}).get("bias_correction") or {}
    if not recorded.get("kept"):
        return
    for values in recorded.get("means", {}).values():
        if not np.all(np.isfinite(np.asarray(values, np.float64))):
            raise ValueError("a recorded bias-correction mean is not finite")
    for size in recorded.get("sizes", {}).values():  # [] for an input without spatial axes (Gemm)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise ValueError("a recorded input size is not whole numbers")


def _check_weight_rounding(selection: Any) -> None:
    """Raises ValueError unless a recorded GPTQ rounding is a map whose kept rounding names its
    file's sha256 and weight bits: a rewrite from the report reads that file back
    (calibration/calibrate.py ``_rounding_reusable``)."""
    recorded = (selection or {}).get("weight_rounding", {})
    if not isinstance(recorded, dict):
        raise ValueError("recorded weight rounding is not a map")
    if recorded.get("kept") and not (
        isinstance(recorded.get("sha256"), str) and isinstance(recorded.get("weight_bits"), int)
    ):
        raise ValueError("recorded weight rounding names no file hash or weight bits")


def type_label(dtype: str, zero_point: int) -> str:
    """A stored type with its zero point when not 0: ``uint8 (zp 126)``, ``int8``, ``uint8``."""
    return f"{dtype} (zp {zero_point})" if zero_point else dtype


def stored_type(t: TensorReport) -> str:
    """The type the Q/DQ model stores a tensor in, with its zero point when not 0 (ONNX Runtime's
    placement stores a signed tensor as uint8 over its observed range: zero point 126 for a
    tensor centred on 0, 0 for one that never falls below 0)."""
    return type_label(t.dtype, t.zero_point)


def recorded_type(tensor: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """:func:`stored_type` of a tensor of a report read as plain JSON (``edgedeploy report``).

    A report of format 1 recorded the levels the threshold was chosen for as ``dtype`` (int8
    for 128), not the stored type: ONNX Runtime's placement stored every activation as uint8
    (calibration/qdq.py ``activation_qparams``), TensorRT's int8 but for the unsigned ones.
    """
    dtype = str(tensor.get("dtype") or "int8")
    zero = tensor.get("zero_point")
    zero = zero if isinstance(zero, int) and not isinstance(zero, bool) else 0
    version = report.get("format")
    if isinstance(version, int) and version < 2 and report.get("placement") == "onnxruntime":
        dtype = "uint8"
    return type_label(dtype, zero)


def print_table(
    report: CalibrationReport, console: Any = None, limit: int | None = 40, notes: Any = None
) -> None:
    """A rich table of the per-tensor figures (the first ``limit`` tensors, worst clipping first).

    The table goes to ``console``, the lines around it (more tensors, warnings) to ``notes``
    (the same console unless given: the CLI puts words on stderr).
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    notes = notes or console
    title = (
        f"INT8 calibration: {report.algorithm.get('algorithm')} on {report.samples} samples"
        f"{' (SYNTHETIC data)' if report.synthetic else ''}, {report.placement} placement"
    )
    table = Table(title=title)
    for col in ("tensor", "dtype", "amax", "threshold", "scale", "clipped"):
        table.add_column(col, justify="left" if col == "tensor" else "right")
    rows = sorted(report.tensors, key=lambda t: -t.clipped)
    for t in rows[:limit] if limit else rows:
        table.add_row(
            t.name,
            stored_type(t),
            f"{t.amax:.4g}",
            f"{t.threshold:.4g}",
            f"{t.scale:.4g}",
            f"{t.clipped:.3%}",
        )
    console.print(table)
    if limit and len(rows) > limit:
        notes.print(f"... {len(rows) - limit} more tensors in the JSON report")
    for warning in report.warnings:
        notes.print(f"[yellow]warning:[/yellow] {warning}")
