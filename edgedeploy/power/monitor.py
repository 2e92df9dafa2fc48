"""Measure average power and energy per inference beside any piece of work.

``with PowerMonitor() as pm: run()`` picks the first power source this machine has:
tegrastats on Jetson, NVML on a desktop NVIDIA GPU, RAPL counters on a Linux CPU. Inside the
block, ``with pm.window(): timed()`` narrows what is measured to the timed inferences: a
warm-up before them runs with the source already sampling but is not counted. Where none
is usable the result says "not measurable here: ..." with each source's reason, and every
figure is None: a power or energy of zero is never reported for something not measured.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from edgedeploy.power.rapl import POWERCAP_ROOT, RaplSource, find_domains

SOURCES = ("auto", "tegrastats", "nvml", "rapl", "none")


class PowerSource(Protocol):
    """A source may also have ``mark() -> float``, called at the edges of a window, where it reads
    counters (a reading there, so the window's energy is exact); time.monotonic() otherwise."""

    name: str

    def start(self) -> float: ...

    def stop(self) -> float: ...

    def measure(self, t0: float, t1: float) -> tuple[float | None, dict[str, float], str, int]: ...


@dataclass
class PowerResult:
    source: str | None  # "tegrastats" | "nvml" | "rapl" | None
    measurable: bool
    reason: str | None = None  # set when not measurable
    avg_power_w: float | None = None
    energy_j: float | None = None
    energy_per_inference_mj: float | None = None
    rails: dict[str, float] = field(default_factory=dict)  # average watts per rail or domain
    rails_covered: str | None = None  # what the total includes (AGX Orin has no whole-board rail)
    duration_s: float | None = None
    samples: int = 0
    inferences: int | None = None
    interval_ms: int | None = None
    # power over the run, for the report: {"t_s": [...], "rails": {name: [W, ...]}} (None: no trace)
    trace: dict[str, object] | None = None


class PowerMonitor:
    """Context manager that samples power while its block runs; see :meth:`result`."""

    def __init__(
        self,
        interval_ms: int = 100,
        source: str = "auto",
        *,
        tegrastats: str = "tegrastats",
        powercap_root: Path | None = None,
        gpu_index: int = 0,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown power source '{source}'; choose one of {', '.join(SOURCES)}")
        self.interval_ms = interval_ms
        self.requested = source
        self.tegrastats = tegrastats
        self.powercap_root = powercap_root
        self.gpu_index = gpu_index
        self._source: PowerSource | None = None
        self._why: list[str] = []
        self._t0: float | None = None
        self._t1: float | None = None
        self._window: tuple[float, float] | None = None  # set by window(): what result() measures

    def _candidates(self) -> list[str]:
        if self.requested == "auto":
            return ["tegrastats", "nvml", "rapl"]
        return [] if self.requested == "none" else [self.requested]

    def _open(self, kind: str) -> PowerSource | None:
        if kind == "tegrastats":
            from edgedeploy.power.jetson import TegrastatsSource

            path = TegrastatsSource.find(self.tegrastats)
            if path is None:
                self._why.append(f"tegrastats: '{self.tegrastats}' is not on PATH (not a Jetson)")
                return None
            return TegrastatsSource(path, self.interval_ms)
        if kind == "nvml":
            from edgedeploy.power.nvml import NvmlSource, open_nvml

            nvml, handle, why = open_nvml(self.gpu_index)
            if nvml is None:
                self._why.append(why)
                return None
            return NvmlSource(nvml, handle, self.gpu_index, self.interval_ms)

        domains, why = find_domains(self.powercap_root or POWERCAP_ROOT)
        if not domains:
            self._why.append(why)
            return None
        return RaplSource(domains, self.interval_ms)

    def __enter__(self) -> PowerMonitor:
        self._why = [] if self.requested != "none" else ["power measurement switched off"]
        self._source = None
        self._window = None
        for kind in self._candidates():
            source = self._open(kind)
            if source is None:
                continue
            try:
                self._t0 = source.start()
            except Exception as exc:  # a source that cannot start is a reason, not a crash
                self._why.append(f"{kind}: {exc}")
                continue
            self._source = source
            break
        if self._source is None:
            self._t0 = time.monotonic()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._source is not None:
            self._t1 = self._source.stop()
        else:
            self._t1 = time.monotonic()

    def _mark(self) -> float:
        mark = getattr(self._source, "mark", None)
        return float(mark()) if mark is not None else time.monotonic()

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Measure this block only (inside the monitor's with-block): the timed inferences, not the
        warm-up before them nor the work after them."""
        start = self._mark()
        try:
            yield
        finally:
            self._window = (start, self._mark())

    def result(self, inferences: int) -> PowerResult:
        """Average power over the block, or its :meth:`window`, and energy per inference
        (``inferences`` run inside it)."""
        if self._t0 is None or self._t1 is None:
            raise RuntimeError("PowerMonitor.result() called before the with-block finished")
        t0, t1 = self._window or (self._t0, self._t1)
        duration = t1 - t0
        res = PowerResult(
            source=None,
            measurable=False,
            duration_s=duration,
            inferences=inferences,
            interval_ms=self.interval_ms,
        )
        if self._source is None:
            res.reason = "not measurable here: " + "; ".join(self._why)
            return res
        watts, rails, covered, samples = self._source.measure(t0, t1)
        res.source, res.samples = self._source.name, samples
        if watts is None:
            res.reason = (
                f"not measurable here: {self._source.name} gave no power sample in the "
                f"{duration:.3f} s window (sampling every {self.interval_ms} ms)"
            )
            return res
        res.measurable = True
        res.avg_power_w = watts
        res.energy_j = watts * duration
        res.energy_per_inference_mj = res.energy_j * 1000.0 / inferences if inferences > 0 else None
        res.rails, res.rails_covered = rails, covered
        trace = getattr(self._source, "trace", None)
        if trace is not None:
            res.trace = trace(t0, t1)
        return res
