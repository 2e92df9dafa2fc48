"""Atomic file writes for calibration outputs (calibration/ must not import edgedeploy).

A file is written to a temporary name beside its destination and renamed into place, so an
interrupted or failed calibration never leaves a half-written model, cache or report.
Temporary names carry the writer's process id (``.NAME.PID.random``), so a later write to the
same destination removes what a killed run (a dead PID) left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def temp_prefix(dest: Path) -> str:
    """Prefix of the temporary names beside ``dest`` written by this process."""
    return f".{dest.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(dest: Path) -> list[Path]:
    """Delete the temporary files and folders that killed writers (dead PIDs) left beside ``dest``."""
    prefix = f".{dest.name}."
    try:
        entries = [e for e in dest.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for entry in entries:
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
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
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=suffix or dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
