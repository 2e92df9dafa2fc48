"""The accuracy gates a candidate must pass against the fp32 reference (compare, build budgets, bundles)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.device.verify_outputs import top1_limit
from edgedeploy.errors import InputError, SettingError

# Polygraphy's Comparator (CompareFunc.simple) raises a float reference's zeros by this before it
# divides: an error e where the reference is 0 reads e / 2.22e-16 (docs/tensorrt-facts.md, "Polygraphy")
POLYGRAPHY_EPSILON = 2.220446049250313e-16


def relative_error(abs_err: np.ndarray, ref: np.ndarray, discrete: bool) -> np.ndarray:
    """|error| / |reference| element by element, as Polygraphy's Comparator computes it, so compare's
    relative figures are its figures: a float reference's zeros are raised by
    :data:`POLYGRAPHY_EPSILON`; a bool or integer one is divided as it is (x / 0 is inf, 0 / 0 NaN,
    which makes the figure NaN, as Polygraphy's is: a relative error means nothing there).
    Call it with NumPy's warnings off."""
    magnitude = np.abs(np.asarray(ref, np.float64))
    if not discrete:
        magnitude = np.where(magnitude == 0, POLYGRAPHY_EPSILON, magnitude)
    return np.asarray(abs_err, np.float64) / magnitude


def snr_db(signal: float, noise: float) -> float:
    """The SNR in dB of sums of squares over the pairs both finite (a NaN/Inf unlike the reference's
    is counted and gated apart, not folded in as an infinite noise): +inf where those pairs are
    equal (not identical: a NaN/Inf differs), -inf for a reference of zeros beside a candidate not."""
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_min_top1(values: Iterable[str], said: str = "--min-top1") -> float | dict[str, float] | None:
    """``--min-top1`` as Polygraphy's per-output tolerances read (``args_util.parse_arglist_to_dict``,
    ``--atol 1e-5 out0:1e-4``): a bare value (or ``:VALUE``) gates every 2-D float output
    (``0.99``), ``NAME:VALUE`` pairs the named outputs (``logits:0.99 aux:0.9``), and both together
    the named outputs at their own value and every other one at the bare value, ``{"": 0.9, NAME:
    value}`` (Polygraphy's ``value_or_from_dict``). One value may hold several, split by spaces or
    commas; a name may hold colons: the last one splits. A name, or the bare value, given twice is
    refused (Polygraphy keeps the last: which was meant cannot be told)."""
    items = [item for value in values for item in re.split(r"[\s,]+", value.strip()) if item]
    if not items:
        return None
    named: dict[str, float] = {}
    for name, _, text in (item.rpartition(":") for item in items):
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{said}: '{text}' is not a number (use VALUE or NAME:VALUE)") from None
        if name in named:
            if name:
                raise InputError(f"{said}: output '{name}' is given twice")
            raise InputError(
                f"{said}: the value for every output is given twice ({named[name]:g}, {value:g}); "
                "name outputs as NAME:VALUE"
            )
        named[name] = value
    return named[""] if list(named) == [""] else named


@dataclass(frozen=True)
class Gates:
    atol: float = 1e-3
    rtol: float = 1e-3
    min_cosine: float | None = 0.999
    # argmax (top-1) agreement: a number for every 2-D float output, or {output: value} for those named
    # (and, under "", for every output not named: Polygraphy's default beside per-output values)
    min_top1: float | dict[str, float] | None = None
    check_allclose: bool = False  # fail on atol/rtol too (off: low precision rarely meets 1e-3 everywhere)

    def __post_init__(self) -> None:
        """A gate no model can pass, or every model passes, is a mistake: refuse it before any work."""
        for name, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not _number(value) or value < 0:
                raise SettingError(("compare", name), name, f"must be a finite number >= 0, got {value!r}")
        if self.min_cosine is not None and not (_number(self.min_cosine) and -1 < self.min_cosine <= 1):
            raise SettingError(
                ("compare", "min_cosine"), "min_cosine", f"must lie in (-1, 1], got {self.min_cosine!r}"
            )
        named: dict[str, float | None] = (
            dict(self.min_top1) if isinstance(self.min_top1, dict) else {"": self.min_top1}
        )
        if not named:
            raise SettingError(
                ("compare", "min_top1"), "min_top1", "names no output; give a value, or NAME:VALUE pairs"
            )
        for output, top1 in named.items():
            if top1 is not None and not (_number(top1) and 0 < top1 <= 1):
                where = f" (output '{output}')" if output else ""
                raise SettingError(
                    ("compare", "min_top1"), "min_top1", f"must lie in (0, 1]{where}, got {top1!r}"
                )

    def __hash__(self) -> int:  # frozen, with a dict field: hashed by its gates' text
        return hash(repr(self))

    def top1_for(self, output: str) -> float | None:
        """The argmax agreement ``output`` must reach (None: not gated on it)."""
        return top1_limit(self.min_top1, output)

    def strictest_top1(self) -> float | None:
        """The highest argmax agreement any output must reach."""
        if isinstance(self.min_top1, dict):
            return max(self.min_top1.values())
        return self.min_top1

    def check_top1_outputs(self, outputs: Sequence[str], model: str, said: str = "--min-top1") -> None:
        """InputError naming an output the per-output ``min_top1`` names that ``model`` lacks."""
        if not isinstance(self.min_top1, dict):
            return
        unknown = [name for name in self.min_top1 if name and name not in outputs]
        if unknown:
            raise InputError(
                f"{said}: {model} has no output named '{unknown[0]}' (its outputs: {', '.join(outputs)})"
            )

    def manifest(self) -> dict[str, Any]:
        """The gates a bundle records for the device's verify.sh (atol/rtol apply with check_allclose)."""
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "check_allclose": self.check_allclose,
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
        }
