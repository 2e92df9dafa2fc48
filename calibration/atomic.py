"""Atomic file writes for calibration outputs (calibration/ must not import edgedeploy).

A file is written to a temporary name beside its destination and renamed into place, so an
interrupted or failed calibration never leaves a half-written model, cache or report.
Every write goes through :func:`check_dest`, the one output-path guard: inside a
:func:`guarded` block no write may replace a file the command reads, replace a folder that
holds one, or land outside the folders the command was told to write to.
Temporary names carry the writer's process id (``.NAME.PID.random``), so a later write to the
same destination removes what a killed run (a dead PID) left behind; what this process made and
still holds (:func:`held`) is never removed, whatever its time says.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.errors import OutputPathError


@dataclass
class _Guard:
    inputs: list[Path] = field(default_factory=list)
    roots: list[Path] | None = None  # None: anywhere


_GUARD = _Guard()
# every destination check_dest passed since forget_written(): the files and folders this command
# wrote, so that its --json cannot replace one of them (cli/common.write_json)
_WRITTEN: set[Path] = set()


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


@contextlib.contextmanager
def guarded(
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    roots: Iterable[str | os.PathLike[str] | None] | None = None,
) -> Iterator[None]:
    """Within the block, writes may not touch ``inputs`` and must stay under ``roots`` (if given).

    Blocks nest: inputs add up, roots narrow to the innermost set given. Set once per command
    (the CLI entry, the pipeline run), not from worker threads.
    """
    previous = _Guard(list(_GUARD.inputs), None if _GUARD.roots is None else list(_GUARD.roots))
    _GUARD.inputs += [_real(p) for p in inputs if p is not None and os.fspath(p) != ""]
    if roots is not None:
        _GUARD.roots = [_real(r) for r in roots if r is not None and os.fspath(r) != ""]
    try:
        yield
    finally:
        _GUARD.inputs, _GUARD.roots = previous.inputs, previous.roots


_STAGING: dict[Path, Path] = {}  # a folder built under a temporary name -> where it will be renamed
_STAGING_LOCK = threading.Lock()


@contextlib.contextmanager
def staging(tmp: Path, dest: Path) -> Iterator[None]:
    """Writes under ``tmp`` are checked as the writes under ``dest`` they will become (thread-safe)."""
    key = _real(tmp)
    with _STAGING_LOCK:
        _STAGING[key] = _real(dest)
    try:
        yield
    finally:
        with _STAGING_LOCK:
            _STAGING.pop(key, None)


def _logical(real: Path) -> Path:
    with _STAGING_LOCK:
        staged = list(_STAGING.items())
    for tmp, final in staged:
        if real.is_relative_to(tmp):
            return final / real.relative_to(tmp)
    return real


def check_dest(dest: str | os.PathLike[str], *, replaces_folder: bool = False) -> Path:
    """Refuse an output path that is empty, is an input, holds an input, or leaves the allowed roots."""
    if os.fspath(dest) == "":
        raise OutputPathError("an output path is empty")
    real = _logical(_real(dest))
    for source in _GUARD.inputs:
        if real == source or (real.exists() and source.exists() and _same(real, source)):
            raise OutputPathError(f"{dest} is an input of this command: refusing to overwrite it")
        if replaces_folder and source.is_relative_to(real):
            raise OutputPathError(f"{dest} holds {source}, an input of this command: refusing to replace it")
        if source.is_dir() and real != source and real.is_relative_to(source):
            raise OutputPathError(
                f"{dest} lies in {source}, a folder this command reads: refusing to write there"
            )
    if _GUARD.roots is not None and not any(real.is_relative_to(root) for root in _GUARD.roots):
        where = ", ".join(str(r) for r in _GUARD.roots)
        raise OutputPathError(f"{dest} lies outside the output folder ({where}): refusing to write there")
    _WRITTEN.add(real)
    return real


def forget_written() -> None:
    """Start a command's record of what it writes (see :func:`written_here`)."""
    _WRITTEN.clear()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@contextlib.contextmanager
def written_together(*files: Path) -> Iterator[None]:
    """The files of one artifact (a model and its plan, an engine and its sidecar), written in the
    block: when it fails after writing (or removing) any of them, all of them are removed, so a
    failed command leaves the artifact whole or not at all (a full disk at the plan left the
    model alone). A block that fails before touching them leaves an earlier artifact as it was."""
    before = {f: _stamp(f) for f in files}
    try:
        yield
    except BaseException:
        if any(_stamp(f) != was for f, was in before.items()):
            for f in files:
                with contextlib.suppress(OSError):
                    f.unlink(missing_ok=True)
        raise


def written_here(dest: str | os.PathLike[str]) -> Path | None:
    """The file or folder this command wrote that ``dest`` is, or lies in; None if none."""
    real = _logical(_real(dest))
    return next((w for w in list(_WRITTEN) if real == w or real.is_relative_to(w)), None)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def temp_prefix(dest: Path) -> str:
    """Prefix of the temporary names beside ``dest`` written by this process."""
    return f".{dest.name}.{os.getpid()}."


# the temporaries this process made and still uses, as (its pid, real path): after a fork the
# child's pid is another, and its parent's entries are no longer its own
_HELD: set[tuple[int, str]] = set()


def _held_key(folder: str, name: str) -> tuple[int, str]:
    return os.getpid(), os.path.join(folder, name)


@contextlib.contextmanager
def held(tmp: Path) -> Iterator[Path]:
    """Mark ``tmp``, a temporary this process just made with :func:`temp_prefix`, as its own for the
    block: no sweep (:func:`remove_stale_temps`) removes it meanwhile, whatever its time says."""
    key = _held_key(os.path.realpath(tmp.parent), tmp.name)
    _HELD.add(key)
    try:
        yield tmp
    finally:
        _HELD.discard(key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``), None where unknown.

    With the pid it names one process: a pid reused by a later process has a later start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _boot_seconds() -> int | None:
    """When this machine booted (seconds since the epoch, Linux ``/proc/stat``), None where unknown."""
    try:
        with open("/proc/stat") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _started_after(pid: int, entry: Path, boot: int | None) -> bool:
    """Whether process ``pid`` started after ``entry`` was last written (by seconds; False where
    start times are unknown): then the pid was reused and the entry is not that process's.
    ``boot``: :func:`_boot_seconds`."""
    ticks = process_start_ticks(pid)
    try:
        written = entry.lstat().st_mtime
    except OSError:
        return False
    return boot is not None and ticks is not None and boot + ticks / os.sysconf("SC_CLK_TCK") > written + 2


def remove_stale_temps(dest: Path) -> list[Path]:
    """Delete the temporary files and folders that killed writers left beside ``dest``: their pid
    is gone, or held by a process that started after they were last written (a container's rerun
    often gets the killed run's pid, this one's included). This process's own (:func:`held`) are
    never removed: their times can read older than its start (a wall clock stepped forward)."""
    prefix = f".{dest.name}."
    try:
        entries = [e for e in dest.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return []
    folder = os.path.realpath(dest.parent)
    boot = functools.cache(_boot_seconds)  # read once per sweep, by the first entry of a live pid
    removed = []
    for entry in entries:
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _held_key(folder, entry.name) in _HELD:
            continue
        if _alive(int(pid)) and not _started_after(int(pid), entry, boot()):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` on success, else delete it.

    The temporary name keeps ``suffix`` (default: the destination's) for tools that look at it.
    """
    check_dest(dest)
    dest = Path(dest)
    if dest.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file", str(dest))
    made = _missing_folders(dest.parent)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(made)
        raise type(exc)(exc.errno, f"cannot make the folder for it ({exc.strerror})", str(dest)) from None
    remove_stale_temps(dest)
    try:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=suffix or dest.suffix, dir=dest.parent)
    except OSError as exc:  # name the file the user asked for, not our temporary name
        _remove_empty(made)
        raise type(exc)(exc.errno, f"cannot write there ({exc.strerror})", str(dest)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        with held(tmp):
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
            os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _remove_empty(made)
        named = named_after(exc, tmp, dest)
        if named is exc:
            raise
        raise named from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(made)
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, outermost first: what a write makes."""
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.insert(0, folder)
        folder = folder.parent
    return missing


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders a failed write made (:func:`_missing_folders`), innermost first, as long
    as they are empty: a refused artifact leaves no empty output folder behind."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # not empty (another file went there meanwhile), or gone: leave the rest
            return


def named_after(exc: OSError, tmp: Path, dest: Path) -> OSError:
    """``exc`` naming ``dest`` (or the file under it) where it named our temporary ``tmp`` or no file
    at all: a full disk (ENOSPC) raised by a ``write`` carries no file name, and the user knows the
    destination, not our temporary name. Other errors are returned as they are."""
    if exc.filename2 is not None or exc.errno is None or exc.strerror is None:
        return exc
    where = dest
    if exc.filename is not None:
        try:
            where = dest / Path(os.fsdecode(exc.filename)).relative_to(tmp)
        except ValueError:
            return exc  # another file: its own name is the right one
    return type(exc)(exc.errno, exc.strerror, str(where))


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (models and data sets can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(record: Mapping[str, Any], field: str) -> str:
    """sha256 of a JSON record's content but its ``field``, keys sorted: the record keeps the
    digest there, and a record whose digest no longer matches was edited since it was written
    (the calibration report, a pipeline stage's record). ``record`` is as JSON reads it back."""
    rest = {key: value for key, value in record.items() if key != field}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()
