"""The accuracy gates a candidate must pass against the fp32 reference (compare, build budgets, bundles)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgedeploy.errors import InputError


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Gates:
    atol: float = 1e-3
    rtol: float = 1e-3
    min_cosine: float | None = 0.999
    min_top1: float | None = None
    check_allclose: bool = False  # fail on atol/rtol too (off: low precision rarely meets 1e-3 everywhere)

    def __post_init__(self) -> None:
        """A gate no model can pass, or every model passes, is a mistake: refuse it before any work."""
        for name, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not _number(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.min_cosine is not None and not (_number(self.min_cosine) and -1 < self.min_cosine <= 1):
            raise InputError(f"min_cosine must lie in (-1, 1], got {self.min_cosine!r}")
        if self.min_top1 is not None and not (_number(self.min_top1) and 0 < self.min_top1 <= 1):
            raise InputError(f"min_top1 must lie in (0, 1], got {self.min_top1!r}")

    def manifest(self) -> dict[str, float | bool | None]:
        """The gates a bundle records for the device's verify.sh (atol/rtol apply with check_allclose)."""
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "check_allclose": self.check_allclose,
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
        }
