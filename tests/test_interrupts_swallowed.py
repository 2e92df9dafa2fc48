"""A Ctrl-C or SIGTERM is never lost: one whose exception CPython drops (raised in a ``__del__``)
still ends the run with the 'stopped:' line and exit 130/143; heavy imports are not cut in half."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A CLI run in its own process in which the signal's handler runs inside a __del__, as it did when
# SIGTERM landed while a BaseRunner or a WeakKeyDictionary entry was collected: CPython prints
# "Exception ignored in: ..." and the exception never reaches the CLI's top level.
SWALLOWED = """
import signal, sys
import edgedeploy.targets as targets
from edgedeploy.cli import main

SIG = signal.Signals[sys.argv[1]]
real = targets.all_targets

class Collected:
    def __del__(self) -> None:
        signal.getsignal(SIG)(SIG, None)

def all_targets():
    Collected()  # dropped at once: its __del__ runs the handler
    return real()

targets.all_targets = all_targets
main(["targets"])
"""


@pytest.mark.parametrize(
    ("sig", "code", "words"),
    [("SIGINT", 130, "interrupted (Ctrl-C)"), ("SIGTERM", 143, "terminated (SIGTERM)")],
)
def test_a_signal_swallowed_in_a_del_still_stops_the_run(sig: str, code: int, words: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED, sig], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Exception ignored" in done.stderr  # the handler did raise inside __del__
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert f"stopped: {words}" in done.stderr


def test_a_swallowed_stop_stops_the_next_stage() -> None:
    import edgedeploy.interrupts as interrupts
    from edgedeploy.ui import Ui

    ui = Ui(quiet=True)
    interrupts.handle_signals()
    try:
        ui.info("build fp32")  # nothing asked yet
        with contextlib.suppress(interrupts.Terminated):  # as CPython does in a __del__
            interrupts._on_sigterm(signal.SIGTERM, None)
        with pytest.raises(interrupts.Terminated):
            ui.info("build int8")
        with pytest.raises(interrupts.Terminated), ui.progress("calibrating"):
            pass
    finally:
        interrupts.release_signals()
        interrupts._received.clear()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
