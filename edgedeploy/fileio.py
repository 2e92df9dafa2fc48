"""Atomic file writes and content hashes.

Every artifact is written to a temporary name beside its destination and renamed into place,
so an interrupted run never leaves a half-written model, engine, report or bundle. The file
primitive lives in calibration/ (the lower layer, which cannot import edgedeploy); folders,
JSON and hashes are added here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calibration.atomic import (
    atomic_path,
    check_dest,
    guarded,
    remove_stale_temps,
    sha256_file,
    staging,
    temp_prefix,
)
from edgedeploy.results import dumps

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_dest",
    "guarded",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(dest, text.encode())


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> Path:

    return atomic_write_text(dest, dumps(obj))


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``dest``; on success it replaces ``dest`` whole."""
    check_dest(dest, replaces_folder=True)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with staging(tmp, dest):
            yield tmp
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` over ``dest``, moving an existing ``dest`` aside first.

    Concurrent writers of one folder each move the current one to a name of their own, so none
    of them meets a folder that vanished under it; the last rename wins whole.
    """
    for _ in range(100):
        try:
            os.rename(tmp, dest)  # succeeds when dest is absent or an empty folder
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(dest) + "old.", dir=dest.parent))
        with contextlib.suppress(FileNotFoundError):  # another writer moved it aside first
            os.rename(dest, old / dest.name)
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(errno.EBUSY, f"{dest} kept changing while it was being replaced")
