"""Jetson power from a ``tegrastats`` process running beside the measured work.

Every line is time-stamped on arrival and parsed; each rail's *current* value is integrated
over the window (the printed average runs since tegrastats started, so it would include
whatever ran before). Which rails make the total depends on the module: Nano, TX2, Xavier NX,
Orin Nano/NX and Thor have a whole-module input rail (POM_5V_IN, VDD_IN, VIN); AGX Orin and
AGX Xavier do not, so their total is the sum of the rails printed, and the result says so.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

from edgedeploy.power.integrate import make_trace, window_average
from edgedeploy.power.tegrastats import parse_line

BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")


def total_rail(rail_names: list[str]) -> tuple[list[str], str]:
    """Rails that add up to the reported total, and one line saying what the total covers."""
    for name in BOARD_INPUT_RAILS:
        if name in rail_names:
            return [name], f"{name}: whole-module input power"
    return list(rail_names), (
        f"sum of {', '.join(rail_names)}: this module has no whole-board input rail, "
        "so carrier board, fan and any unlisted rail are not included"
    )


class TegrastatsSource:
    name = "tegrastats"

    def __init__(
        self, command: str = "tegrastats", interval_ms: int = 100, first_line_timeout_s: float = 3.0
    ) -> None:
        self.command = command
        self.interval_ms = interval_ms
        self.first_line_timeout_s = first_line_timeout_s
        self.times: list[float] = []
        self.rails: list[dict[str, float]] = []  # watts per rail, one dict per line
        self.bad_lines = 0
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def find(command: str = "tegrastats") -> str | None:
        return shutil.which(command)

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            now = time.monotonic()
            try:
                sample = parse_line(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if not sample.rails:
                continue
            with self._lock:
                self.times.append(now)
                self.rails.append({n: r.current_mw / 1000.0 for n, r in sample.rails.items()})
            self._first.set()

    def start(self) -> float:
        """Start tegrastats and wait for its first line, so the window begins with a sample."""
        argv = [self.command, "--interval", str(self.interval_ms)]
        stdbuf = shutil.which("stdbuf")
        if stdbuf:  # tegrastats writes through stdio: keep it line-buffered into our pipe
            argv = [stdbuf, "-oL", *argv]
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL
        )
        self._thread = threading.Thread(target=self._reader, name="tegrastats-reader", daemon=True)
        self._thread.start()
        if not self._first.wait(self.first_line_timeout_s):
            self.stop()
            raise RuntimeError(f"tegrastats printed no power line within {self.first_line_timeout_s:g} s")
        return time.monotonic()

    def stop(self) -> float:
        end = time.monotonic()
        if self._proc is not None and self._proc.poll() is None:
            # let the sample that covers the window's end arrive, then stop the process we started
            time.sleep(min(self.interval_ms / 1000.0 * 1.5, 1.0))
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return end

    def measure(self, t0: float, t1: float) -> tuple[float | None, dict[str, float], str, int]:
        with self._lock:
            times, rails = list(self.times), list(self.rails)
        names = sorted({n for r in rails for n in r}, key=lambda n: (n not in BOARD_INPUT_RAILS, n))
        avg: dict[str, float] = {}
        for name in names:
            pts = [(t, r[name]) for t, r in zip(times, rails, strict=True) if name in r]
            value = window_average([p[0] for p in pts], [p[1] for p in pts], t0, t1)
            if value is not None:
                avg[name] = value
        used = sum(1 for t in times if t0 <= t <= t1)
        if not avg:
            return None, {}, "", used
        parts, covered = total_rail(list(avg))
        return sum(avg[n] for n in parts), avg, covered, used

    def trace(self, t0: float, t1: float) -> dict[str, object] | None:
        """Every rail's power per tegrastats line over the window."""
        with self._lock:
            times, rails = list(self.times), list(self.rails)
        names = sorted({n for r in rails for n in r}, key=lambda n: (n not in BOARD_INPUT_RAILS, n))
        return make_trace(times, {n: [r.get(n) for r in rails] for n in names}, t0, t1)
