"""Scratch folders that SIGKILLed runs leave in the system temp folder are removed by the next
command, and nothing else there is touched (issue 12's leftover).

The killed run is a real ``edgedeploy compare`` in a subprocess with its own TMPDIR; the sweep is
the next real command. About 6 s, most of it the two subprocesses' start-up.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import onnx
import pytest

from edgedeploy.fileio import OWNER_FILE, scratch_dir, sweep_scratch
from tests.device.conftest import dense_model

REPO = Path(__file__).resolve().parents[1]


def _edgedeploy(args: list[str], cwd: Path, tmpdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgedeploy", *args],
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(root: Path, name: str, owner: dict[str, object] | None) -> Path:
    path = root / name
    path.mkdir()
    (path / "work.bin").write_bytes(b"x" * 10)
    if owner is not None:
        (path / OWNER_FILE).write_text(json.dumps(owner))
    return path


def test_scratch_folder_of_a_sigkilled_compare_is_removed_by_the_next_command(tmp_path: Path) -> None:
    project, tmpdir = tmp_path / "proj", tmp_path / "tmp"
    project.mkdir()
    tmpdir.mkdir()
    onnx.save(dense_model(False), project / "model.onnx")
    onnx.save(dense_model(True), project / "model.fp16.onnx")
    host, dead = socket.gethostname(), _dead_pid()
    # what the sweep must leave alone, beside the killed run's folder
    keep = [
        _folder(tmpdir, "edgedeploy-nofile-1-abc", None),  # our prefix, no owner file
        _folder(tmpdir, "othertool-compare-1-abc", {"pid": dead, "host": host}),  # not our prefix
        _folder(tmpdir, "edgedeploy-remote-1-abc", {"pid": dead, "host": host + "-elsewhere"}),
        _folder(tmpdir, "edgedeploy-alive-1-abc", {"pid": os.getpid(), "host": host}),
        _folder(tmpdir, "edgedeploy-damaged-1-abc", None),
    ]
    (keep[-1] / OWNER_FILE).write_text("{not json")
    (tmpdir / "edgedeploy-a-file").write_text("not a folder")

    args = ["compare", "model.onnx", "model.fp16.onnx", "--samples", "4000", "--batch-size", "1"]
    run = _edgedeploy(args, project, tmpdir)
    try:
        end = time.monotonic() + 60
        while not list(tmpdir.glob("edgedeploy-compare-*")) and run.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        (scratch,) = tmpdir.glob("edgedeploy-compare-*")
        while not (scratch / OWNER_FILE).exists() and time.monotonic() < end:
            time.sleep(0.02)
        # while the run lives, another command leaves its folder alone
        beside = _edgedeploy(["--version"], project, tmpdir)
        assert beside.wait(60) == 0, beside.communicate()
        assert scratch.is_dir() and run.poll() is None
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == -signal.SIGKILL
    assert scratch.is_dir()  # SIGKILL cannot clean up
    owner = json.loads((scratch / OWNER_FILE).read_text())
    assert owner["pid"] == run.pid and owner["host"] == host

    next_command = _edgedeploy(["targets", "--json", str(tmp_path / "t.json")], project, tmpdir)
    _, err = next_command.communicate(timeout=120)
    assert next_command.returncode == 0, err
    assert not scratch.exists()
    assert sorted(p.name for p in tmpdir.iterdir()) == sorted([p.name for p in keep] + ["edgedeploy-a-file"])
    assert all((p / "work.bin").is_file() for p in keep)


def test_a_reused_pid_does_not_keep_a_dead_runs_folder(tmp_path: Path) -> None:
    """The owner file names the process by pid and start time: a later, live process with the same
    pid (here a running ``sleep``, recorded with another start time) is not the owner."""
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("process start times are read from Linux /proc")
    other = subprocess.Popen(["sleep", "30"])
    try:
        host = socket.gethostname()
        reused = _folder(tmp_path, "edgedeploy-compare-1-abc", {"pid": other.pid, "started": 1, "host": host})
        kept = _folder(tmp_path, "edgedeploy-compare-2-abc", {"pid": other.pid, "host": host})
        assert sweep_scratch(tmp_path) == [reused]
        assert kept.is_dir()
    finally:
        other.kill()
        other.wait()


def test_a_folder_its_owner_removes_while_the_sweep_looks_at_it_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands on one machine (two CI jobs): the sweep of one lists the other's scratch
    folder, which its owner removes on the way out before the sweep stats it. The sweep crashed
    the command with UnboundLocalError in fileio._stale; the folder is gone, nothing to do."""
    folder = _folder(tmp_path, "edgedeploy-feeds-1-abc", {"pid": 1, "host": socket.gethostname()})
    real_stat = Path.stat

    def vanishing(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        if self == folder:  # its owner removed it after the listing
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_stat(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "is_dir", lambda self: True)
    monkeypatch.setattr(Path, "is_symlink", lambda self: False)
    monkeypatch.setattr(Path, "stat", vanishing)
    assert sweep_scratch(tmp_path) == []


def test_a_folder_killed_before_its_owner_file_is_swept_by_the_pid_in_its_name(tmp_path: Path) -> None:
    """A run killed between making its scratch folder and writing the owner file left a folder
    with no owner file: it goes once the pid in its name is gone and it is a minute old."""
    other = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        old = time.time() - 120
        orphan = tmp_path / f"edgedeploy-cell-{dead.pid}-x1y2z3"
        alive = tmp_path / f"edgedeploy-cell-{other.pid}-x1y2z3"
        young = tmp_path / f"edgedeploy-cell-{dead.pid}-a1b2c3"
        unnamed = tmp_path / "edgedeploy-cell-nopid"
        for folder in (orphan, alive, young, unnamed):
            folder.mkdir()
            (folder / "work.bin").write_bytes(b"x")
        for folder in (orphan, alive, unnamed):
            os.utime(folder, (old, old))
        assert sweep_scratch(tmp_path) == [orphan]
        assert alive.is_dir() and young.is_dir() and unnamed.is_dir()
    finally:
        other.kill()
        other.wait()


def test_scratch_dir_records_its_owner_and_is_removed_on_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(KeyboardInterrupt), scratch_dir("compare") as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(f"edgedeploy-compare-{os.getpid()}-")
        assert json.loads((scratch / OWNER_FILE).read_text())["pid"] == os.getpid()
        assert sweep_scratch(tmp_path) == []  # its owner (this process) runs
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_no_code_makes_a_system_temp_folder_but_through_scratch_dir() -> None:
    """A folder made in the system temp folder any other way would never be swept."""
    offenders = []
    for path in sorted((REPO / "edgedeploy").rglob("*.py")) + sorted((REPO / "calibration").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"mkdtemp", "TemporaryDirectory", "mkstemp", "NamedTemporaryFile"}
                and not any(k.arg == "dir" for k in node.keywords)
                and path.name != "fileio.py"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_scratch_beside_an_output_is_removed_after_a_kill_by_the_next_write_there(tmp_path: Path) -> None:
    """A budget search or an export keeps its large scratch files beside its output; a run
    killed with SIGKILL leaves them, and the next one for the same output removes them (a
    live writer's are left alone)."""
    from edgedeploy.fileio import scratch_beside

    dest = tmp_path / "model.int8.onnx"
    killed = _folder(tmp_path, f".{dest.name}.{_dead_pid()}.budget.abc123", None)
    live = _folder(tmp_path, f".{dest.name}.1.budget.def456", None)  # pid 1 always runs
    other = _folder(tmp_path, f".other.onnx.{_dead_pid()}.budget.x", None)  # beside another output
    with pytest.raises(KeyboardInterrupt), scratch_beside(dest, "budget") as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(f".{dest.name}.{os.getpid()}.budget.")
        assert not killed.exists() and live.exists() and other.exists()
        (scratch / "v.int8.onnx").write_bytes(b"x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_a_killed_runs_feeds_are_removed_though_its_pid_was_reused(tmp_path: Path) -> None:
    """`run` keeps a loader script's feeds (the data's size) beside its workdir's calibration; a run
    SIGKILLed left them for the next run to remove by their dead pid. In a container the rerun
    often gets the same pid (its own pid was skipped) or another process holds it, and the feeds
    stayed for good, one copy per kill: a pid whose process started after the folder was last
    written is not its writer."""
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("process start times are read from Linux /proc")
    from edgedeploy.fileio import scratch_beside

    dest = tmp_path / "calibration"
    other = subprocess.Popen(["sleep", "30"])
    try:
        old = time.time() - 3600
        mine = _folder(tmp_path, f".{dest.name}.{os.getpid()}.feeds.abc123", None)
        reused = _folder(tmp_path, f".{dest.name}.{other.pid}.feeds.def456", None)
        live = _folder(tmp_path, f".{dest.name}.1.feeds.ghi789", None)  # pid 1 started before it
        for folder in (mine, reused):
            os.utime(folder, (old, old))
        with scratch_beside(dest, "feeds") as scratch:
            assert not mine.exists() and not reused.exists() and live.exists()
        assert not scratch.exists()
    finally:
        other.kill()
        other.wait()


def test_a_temporary_of_the_running_process_is_never_removed_whatever_its_age(tmp_path: Path) -> None:
    """A temporary named with the running process's pid was kept only because it was written after
    the process started (the rule that tells a reused pid): one whose time reads older (a wall clock
    stepped forward since it was written, a time kept from a copy) was removed under its writer by
    the next write beside the same output. What this process made and still holds is kept, whatever
    its age; an entry of its pid it did not make (a killed run that had the same pid) still goes."""
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("process start times are read from Linux /proc")
    from calibration.atomic import atomic_path, remove_stale_temps
    from edgedeploy.fileio import atomic_dir, scratch_beside

    dest = tmp_path / "calibration"
    old = time.time() - 3600
    predecessor = _folder(tmp_path, f".{dest.name}.{os.getpid()}.feeds.killed", None)
    os.utime(predecessor, (old, old))
    with scratch_beside(dest, "feeds") as feeds:
        assert not predecessor.exists()
        (feeds / "x.npz").write_bytes(b"x")
        os.utime(feeds, (old, old))
        with atomic_path(dest) as tmp:  # sweeps beside dest first
            tmp.write_bytes(b"model")
            os.utime(tmp, (old, old))
            assert feeds.is_dir() and (feeds / "x.npz").is_file()
            assert remove_stale_temps(dest) == []
            assert tmp.is_file()
        assert dest.read_bytes() == b"model"
        with atomic_dir(tmp_path / "bundle") as folder:
            (folder / "f").write_text("f")
            os.utime(folder, (old, old))
            assert remove_stale_temps(tmp_path / "bundle") == []
        assert (tmp_path / "bundle" / "f").is_file()
        assert feeds.is_dir()
    # released on the way out: a leftover of that name now reads as a killed run's
    leftover = _folder(tmp_path, feeds.name, None)
    os.utime(leftover, (old, old))
    assert remove_stale_temps(dest) == [leftover]


def test_a_sweep_reads_the_boot_time_once_whatever_the_number_of_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remove_stale_temps read /proc/stat (a line per CPU and per interrupt source) again for every
    temporary entry of a live pid it looked at, to tell a reused pid; the boot time is the same for
    the whole sweep and is read once."""
    if not Path("/proc/stat").exists():
        pytest.skip("process start times are read from Linux /proc")
    from calibration import atomic

    dest = tmp_path / "calibration"
    live = [_folder(tmp_path, f".{dest.name}.1.feeds.{i}", None) for i in range(5)]  # pid 1 started before
    reads: list[str] = []
    real_open = open

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == "/proc/stat":
            reads.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", counting, raising=False)
    assert atomic.remove_stale_temps(dest) == []
    assert all(folder.is_dir() for folder in live)
    assert len(reads) == 1
