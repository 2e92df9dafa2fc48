"""A Ctrl-C or SIGTERM is never lost: one whose exception CPython drops (raised in a ``__del__``)
still ends the run with the 'stopped:' line and exit 130/143; heavy imports are not cut in half."""

from __future__ import annotations

import ast
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
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert f"stopped: {words}" in done.stderr
    # the handler raised inside __del__, which CPython printed as "Exception ignored in: <function
    # BaseRunner.__del__ ...>" and a traceback above the one line (1 Ctrl-C in 5 during run)
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"stopped: {words}"), done.stderr


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


# Importing onnx, onnxruntime or torch is not interrupt-safe: a Ctrl-C or SIGTERM landing in their
# extensions' initialization crashed the process (SIGSEGV in onnx_cpp2py_export, SIGABRT
# "terminate called after throwing an instance of nanobind::python_error"). The commands import
# them lazily, through our modules, so every such import sits inside interrupts.deferred().
LIGHT = set(sys.stdlib_module_names) | {"rich", "typer"}


def _heavy(node: ast.Import | ast.ImportFrom) -> list[str]:
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return [name for name in names if name.split(".")[0] not in LIGHT]


def _under_deferred(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call)
            and isinstance(item.context_expr.func, ast.Name)
            and item.context_expr.func.id == "deferred"
            for item in node.items
        ):
            return True
    return False


def lazy_imports_outside_deferred(source: str) -> list[str]:
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            heavy = _heavy(node) if isinstance(node, ast.Import | ast.ImportFrom) else []
            if heavy and not _under_deferred(node, parents):
                problems.append(f"{function.name}:{node.lineno} {', '.join(heavy)}")
    return problems


def test_every_lazy_import_of_the_commands_is_under_deferred() -> None:
    problems = [
        f"{path.name}:{problem}"
        for path in sorted((ROOT / "edgedeploy" / "cli").glob("*.py"))
        for problem in lazy_imports_outside_deferred(path.read_text())
    ]
    assert problems == []


def test_the_check_sees_an_import_outside_deferred() -> None:
    bad = "def command():\n    import json\n    from edgedeploy.onnxio import load_onnx\n"
    good = "def command():\n    with deferred():\n        from edgedeploy.onnxio import load_onnx\n"
    assert lazy_imports_outside_deferred(bad) == ["command:3 edgedeploy.onnxio"]
    assert lazy_imports_outside_deferred(good) == []


def test_a_signal_started_ignored_stays_ignored() -> None:
    """nohup and a shell's background jobs start a command with SIGINT (nohup: SIGHUP) ignored; a
    Ctrl-C meant for the foreground job must not stop it, during a stage or a deferred block."""
    import edgedeploy.interrupts as interrupts

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        interrupts.handle_signals()
        try:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is interrupts._on_sigterm
            with interrupts.deferred() as check:
                assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGINT)
                check()
            assert interrupts._received == []
        finally:
            interrupts.release_signals()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


# Below the commands, the packages that no command imports before its work starts, and whose
# import takes seconds (a Ctrl-C lands there most often): their first import sits in deferred() too.
SLOW_FIRST_IMPORTS = ("torch", "matplotlib", "ray", "sklearn", "onnxscript")


def test_the_slow_first_imports_below_the_commands_are_under_deferred() -> None:
    problems = []
    for path in sorted((ROOT / "edgedeploy").rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts:
            continue  # all of the commands' lazy imports: the test above
        for problem in lazy_imports_outside_deferred(path.read_text()):
            if any(name.split(".")[0] in SLOW_FIRST_IMPORTS for name in problem.split(" ", 1)[1].split(", ")):
                problems.append(f"{path.relative_to(ROOT)}:{problem}")
    assert problems == []
