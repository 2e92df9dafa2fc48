"""Desktop GPU power from NVML (``nvidia-ml-py``, module ``pynvml``), imported lazily.

Volta and newer expose a total-energy counter in millijoules, which is exact over any window;
older GPUs only report instantaneous board power in milliwatts, which is sampled and averaged.
NVML covers the GPU board only (not the CPU or host memory), and does not exist on Jetson.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from edgedeploy.power.integrate import counter_delta, counter_power, make_trace, window_average
from edgedeploy.power.polling import PollingSource


def open_nvml(index: int = 0) -> tuple[Any, Any, str]:
    """(pynvml module, device handle, "") or (None, None, why NVML is unusable here)."""
    try:
        import pynvml
    except ImportError:
        return None, None, "NVML: nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() <= index:
            pynvml.nvmlShutdown()
            return None, None, f"NVML: no GPU {index}"
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), ""
    except Exception as exc:  # pynvml raises NVMLError subclasses; no driver is the common case
        return None, None, f"NVML: {exc}"


class NvmlSource(PollingSource):
    name = "nvml"

    def __init__(self, nvml: Any, handle: Any, index: int = 0, interval_ms: int = 100) -> None:
        super().__init__(interval_ms)
        self.nvml = nvml
        self.handle = handle
        self.label = f"gpu{index}"
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.counter = True
        except Exception:
            self.counter = False
        self._values: list[float] = []  # mJ counter readings, or mW power readings

    def _read(self) -> None:
        if self.counter:
            value = float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        else:
            value = float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))
        self._times.append(time.monotonic())
        self._values.append(value)

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()

    def measure(self, t0: float, t1: float) -> tuple[float | None, dict[str, float], str, int]:
        keep = self._in_window(t0, t1)
        times, values = [self._times[i] for i in keep], [self._values[i] for i in keep]
        if self.counter:
            joules = counter_delta(values, None) / 1000.0
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            watts: float | None = joules / span if span > 0 else None
            how = "total-energy counter"
        else:
            avg_mw = window_average(self._times, self._values, t0, t1)
            watts = None if avg_mw is None else avg_mw / 1000.0
            how = "sampled power"
        rails = {} if watts is None else {self.label: watts}
        covered = (
            f"GPU board power of {self.label} (NVML {how}): "
            "not the CPU, host memory or the rest of the system"
        )
        return watts, rails, covered, len(times)

    def trace(self, t0: float, t1: float) -> dict[str, object] | None:
        """GPU board power per reading (from the energy counter's steps, or the sampled power)."""
        if self.counter:
            watts = counter_power(self._times, self._values, None, 1e-3)  # mJ -> W
        else:
            watts = [v / 1000.0 for v in self._values]
        return make_trace(self._times, {self.label: watts}, t0, t1)
