"""A power source that reads its counters at start, every interval on a thread, and at stop.

NVML and RAPL both work this way (interval readings catch counter wrap-arounds and sample
instantaneous power); each subclass only says how to take one reading. ``mark`` takes one more at
a window's edge (the monitor's ``window()``), so a counter's energy over the window is exact.
"""

from __future__ import annotations

import threading


class PollingSource:
    name = "polling"

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_s = interval_ms / 1000.0
        self._times: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reading = threading.Lock()  # one reading at a time: the poller's, a mark's, stop's

    def _read(self) -> None:
        """Append one reading and its time.monotonic() to self._times."""
        raise NotImplementedError

    def _close(self) -> None:
        """Release the source after the last reading (nothing by default)."""

    def _take(self) -> float:
        with self._reading:
            self._read()
            return self._times[-1]

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def start(self) -> float:
        first = self._take()
        self._thread = threading.Thread(target=self._poll, name=f"{self.name}-poll", daemon=True)
        self._thread.start()
        return first

    def mark(self) -> float:
        """A reading now, for the edge of a window; its time."""
        return self._take()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        last = self._take()
        self._close()
        return last

    def _in_window(self, t0: float, t1: float) -> list[int]:
        """Indices of the readings taken in [t0, t1] (a window's edges are readings: see mark)."""
        return [i for i, t in enumerate(self._times) if t0 <= t <= t1]
