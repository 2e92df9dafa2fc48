"""A power source that reads its counters at start, every interval on a thread, and at stop.

NVML and RAPL both work this way (interval readings catch counter wrap-arounds and sample
instantaneous power); each subclass only says how to take one reading.
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

    def _read(self) -> None:
        """Append one reading and its time.monotonic() to self._times."""
        raise NotImplementedError

    def _close(self) -> None:
        """Release the source after the last reading (nothing by default)."""

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def start(self) -> float:
        self._read()
        self._thread = threading.Thread(target=self._poll, name=f"{self.name}-poll", daemon=True)
        self._thread.start()
        return self._times[0]

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()
        self._close()
        return self._times[-1]
