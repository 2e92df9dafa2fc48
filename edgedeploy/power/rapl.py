"""CPU package energy from Linux RAPL powercap counters (``/sys/class/powercap/*-rapl:*``).

Each top-level domain (``package-0``, ``package-1``, ``psys``) exposes ``energy_uj``, a counter
in microjoules that wraps at ``max_energy_range_uj``. Since Linux 5.10 these files are root-only
(CVE-2020-8694), so "present but unreadable" is a common case and is reported as such.
Subdomains (core, uncore, dram) are reported as rails but not added to the total.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgedeploy.power.integrate import counter_delta, counter_power, make_trace
from edgedeploy.power.polling import PollingSource

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass
class RaplDomain:
    name: str
    path: Path
    top_level: bool
    wrap_uj: float | None
    readings: list[float] = field(default_factory=list)


def find_domains(root: Path = POWERCAP_ROOT) -> tuple[list[RaplDomain], str]:
    """Readable RAPL domains under ``root``, or none and one line saying why."""
    if not root.is_dir():
        return [], f"RAPL: {root} does not exist"
    found: list[RaplDomain] = []
    unreadable: list[str] = []
    for zone in sorted(root.glob("*-rapl:*")):
        energy = zone / "energy_uj"
        enabled = zone / "enabled"
        if not energy.exists() or (enabled.exists() and enabled.read_text().strip() == "0"):
            continue
        name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
        try:
            float(energy.read_text())
        except (OSError, ValueError):
            unreadable.append(str(energy))
            continue
        try:
            wrap: float | None = float((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            wrap = None
        top = zone.name.count(":") == 1
        label = name if top else f"{name}@{zone.name}"
        found.append(RaplDomain(name=label, path=energy, top_level=top, wrap_uj=wrap))
    if found:
        return found, ""
    if unreadable:
        return [], f"RAPL: {unreadable[0]} is not readable (root only since Linux 5.10)"
    return [], f"RAPL: no *-rapl:* domain under {root}"


class RaplSource(PollingSource):
    """Reads every domain's counter at start, every interval (to catch wrap-arounds) and at stop."""

    name = "rapl"

    def __init__(self, domains: list[RaplDomain], interval_ms: int = 100) -> None:
        super().__init__(interval_ms)
        self.domains = domains
        self._lock = threading.Lock()

    def _read(self) -> None:
        now = time.monotonic()
        values = [float(d.path.read_text()) for d in self.domains]  # all read, or none kept
        with self._lock:
            self._times.append(now)
            for d, value in zip(self.domains, values, strict=True):
                d.readings.append(value)

    def measure(self, t0: float, t1: float) -> tuple[float | None, dict[str, float], str, int]:
        """Average watts over the window (total of package domains), per-domain watts, coverage."""
        with self._lock:
            keep = self._in_window(t0, t1)
            times = [self._times[i] for i in keep]
            readings = {d.name: [d.readings[i] for i in keep] for d in self.domains}
        if len(times) < 2 or times[-1] <= times[0]:
            return None, {}, "", len(times)
        duration = times[-1] - times[0]
        rails = {d.name: counter_delta(readings[d.name], d.wrap_uj) / 1e6 / duration for d in self.domains}
        packages = [d.name for d in self.domains if d.top_level and d.name != "psys"]
        if packages:
            total = sum(rails[n] for n in packages)
            covered = (
                f"CPU package domains {', '.join(packages)} (RAPL): not DRAM, GPU or the rest of the board"
            )
        else:
            total = sum(rails[d.name] for d in self.domains if d.top_level)
            covered = "RAPL platform domain (psys)"
        return total, rails, covered, len(times)

    def trace(self, t0: float, t1: float) -> dict[str, object] | None:
        """Every domain's power between consecutive counter readings."""
        with self._lock:
            times = list(self._times)
            rails = {d.name: counter_power(times, list(d.readings), d.wrap_uj, 1e-6) for d in self.domains}
        return make_trace(times, rails, t0, t1)
