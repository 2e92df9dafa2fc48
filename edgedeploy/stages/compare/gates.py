"""The accuracy gates a candidate must pass against the fp32 reference (compare, build budgets, bundles)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gates:
    atol: float = 1e-3
    rtol: float = 1e-3
    min_cosine: float | None = 0.999
    min_top1: float | None = None
    check_allclose: bool = False  # fail on atol/rtol too (off: low precision rarely meets 1e-3 everywhere)

    def manifest(self) -> dict[str, float | None]:
        """The gates a bundle records for the device's verify.sh."""
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
        }
