"""The precision stage: one ONNX per precision, decided and checked on the CPU.

fp32 is the exported model itself; fp16 is float16 weights and compute with fp32 islands;
int8 is a Q/DQ model from calibration/. Each producer returns a :class:`PrecisionArtifact`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.results import NOT_JSON


@dataclass
class PrecisionArtifact:
    precision: str
    path: Path  # the precision ONNX (what a backend builds)
    files: list[Path] = field(default_factory=list)  # everything written: plan JSON, cache, report
    skipped: bool = False  # key matched: nothing was recomputed
    info: dict[str, Any] = field(default_factory=dict)  # e.g. fp32 nodes kept, calibration summary
    # the first batch of the user's calibration data, when this step read it: what the build runs the
    # built artifact on once, instead of opening the data again (not in the JSON: see to_jsonable)
    first_batch: dict[str, Any] | None = field(default=None, repr=False, compare=False, metadata=NOT_JSON)
