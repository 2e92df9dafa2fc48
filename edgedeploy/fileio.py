"""Atomic file writes, content hashes, and our scratch folders in the system temp folder.

Every artifact is written to a temporary name beside its destination and renamed into place,
so an interrupted run never leaves a half-written model, engine, report or bundle. The file
primitive lives in calibration/ (the lower layer, which cannot import edgedeploy); folders,
JSON and hashes are added here.

Scratch folders (:func:`scratch_dir`) live in ``tempfile.gettempdir()``. Ctrl-C and SIGTERM
unwind and remove them; SIGKILL (the OOM killer, a CI timeout) cannot, so each one records its
owner (pid, process start time, host) in a file inside it, and :func:`sweep_scratch`, run at
the start of every command, removes those whose owner is gone. It touches nothing else: not a
folder without our prefix or owner file, not another user's, not one made on another host
(its pid means nothing here), not one whose owner still runs. Hand-written: ``tempfile`` has no
notion of an owner, and the sweep is a dozen lines.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from calibration.atomic import (
    atomic_path,
    check_dest,
    content_sha256,
    forget_written,
    guarded,
    held,
    named_after,
    process_start_ticks,
    remove_stale_temps,
    sha256_file,
    staging,
    temp_prefix,
    written_here,
    written_together,
)
from edgedeploy.errors import InputError
from edgedeploy.results import dumps

__all__ = [
    "CACHE_DIR",
    "RECORD_DIGEST",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "bundle_holding",
    "check_dest",
    "check_output",
    "check_read_and_written",
    "content_sha256",
    "file_lock",
    "forget_written",
    "guarded",
    "intact_record",
    "nearest_existing",
    "no_folder_at_outputs",
    "not_an_input",
    "not_an_output",
    "not_written",
    "outside_cache",
    "refuse_unwritable",
    "scratch_beside",
    "scratch_dir",
    "sealed",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
    "sweep_scratch",
    "written_here",
    "written_together",
]


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute, or its nearest ancestor that exists: where a write there would
    start (an output option's check and a config's folders say "X is a file" from it)."""
    ancestor = Path(path).absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def refuse_unwritable(folder: Path, said: str) -> None:
    """InputError when files cannot be made in the existing ``folder`` (read-only mount, no
    permission), said as ``said`` (``-o out``, ``config workdir: out``): before any work, for the
    output options (edgedeploy/cli/guard.py) and run's folders (edgedeploy/pipeline/run.py)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{said}: cannot write in {folder} (read-only or no permission)")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, exclusive: bool = True, peers: bool = False) -> Iterator[None]:
    """Hold an flock on the file ``path`` (made if missing) for the block: exclusively, or shared
    with other shared holders. Every process and every open of the file takes its turn.

    The last holder removes the file, so none is left behind (Polygraphy's util.LockFile left its
    ``.lock`` for good): on the way out a holder that gets the lock exclusively without waiting
    holds it alone and unlinks the file before letting go; a process that was waiting then holds
    a file no longer at the path, sees so, and takes the lock again on a new file. A file of that
    name with content is not a lock of ours: it is locked as it is and left in place.

    With ``peers`` (a TensorRT timing cache's ``FILE.lock``), an fcntl lock on the whole file is held
    too, after the flock: Polygraphy's util.LockFile and trtexec's FileLock lock that file with
    lockf, which on Linux an flock does not exclude (docs/tensorrt-facts.md, "The timing cache").
    They never look at the path again, so the file stays while another process holds or waits for
    an fcntl lock on it (:func:`_fcntl_locked`)."""
    import fcntl

    while True:
        fh = open(path, "a+")  # noqa: SIM115 (held open across the yield, closed below); readable: F_RDLCK
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if os.path.samestat(os.fstat(fh.fileno()), os.stat(path)):
                break  # the file at the path: ours until the last holder removes it
        except FileNotFoundError:  # removed by its last holder while we waited: take a new one
            pass
        except BaseException:
            fh.close()
            raise
        fh.close()
    try:
        if peers:
            _record_lock(fh, exclusive)
        yield
    finally:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other holder, none to wait
            if not os.fstat(fh.fileno()).st_size and not (peers and _fcntl_locked(fh)):
                os.unlink(path)
        except OSError:  # another holds it (or waits): the file stays for them
            pass
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()  # and with it the fcntl lock


def _record_lock(fh: IO[str], exclusive: bool) -> None:
    """Wait for an fcntl write (or read) lock on the whole of ``fh``'s file. An open file
    description lock (Linux 3.15+) where there is one: it conflicts with lockf's process-owned locks
    and, like flock, belongs to this open of the file, so that closing another descriptor of the
    file in this process (another thread's turn) does not let it go; lockf elsewhere."""
    import fcntl
    import struct

    command = getattr(fcntl, "F_OFD_SETLKW", None)
    if command is None:
        fcntl.lockf(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        return
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    # struct flock {short l_type, l_whence; off_t l_start, l_len; pid_t l_pid}: the whole file, pid 0
    fcntl.fcntl(fh, command, struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0))


def _fcntl_locked(fh: IO[str]) -> bool:
    """Whether a process holds or waits for an fcntl lock on ``fh``'s file besides our own open file
    description lock, as ``/proc/locks`` (Linux) lists them; True where that cannot be told (no
    ``/proc/locks``, or our own lock not found in it). A process that opened the file and has not
    asked for the lock yet cannot be seen."""
    info = os.fstat(fh.fileno())
    ident = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return True
    ours = False
    for line in lines:
        fields = line.split()
        if ident not in fields:
            continue
        waiting = len(fields) > 2 and fields[1] == "->"
        kind = fields[2] if waiting else fields[1] if len(fields) > 1 else ""
        if kind == "FLOCK":  # ours and our other processes' (which look at the path again)
            continue
        if kind == "OFDLCK" and not waiting and not ours:
            ours = True
            continue
        return True
    return not ours


def check_output(option: str, path: Path, kind: str) -> None:
    """Refuse, before any work, an output that is empty, of the wrong kind, or not writable: the
    commands' output options (edgedeploy/cli/guard.py) and the files they read and update."""
    text = os.fspath(path)
    if not text.strip():
        raise InputError(f"{option} is empty: name a {kind}")
    if kind == "file" and (path.is_dir() or text.endswith(os.sep)):
        raise InputError(f"{option} {path} is a folder: name a file")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} exists and is not a folder")
    parent = path.parent if kind == "file" or not path.exists() else path
    ancestor = nearest_existing(parent)
    if not ancestor.is_dir():
        raise InputError(f"{option} {path}: {ancestor} is a file, not a folder")
    refuse_unwritable(ancestor, f"{option} {path}")


def check_read_and_written(option: str, path: Path) -> None:
    """Refuse, before any work, a file the command reads and then replaces (a timing cache) that it
    could not replace (its folder read-only) or could not read (no permission)."""
    check_output(option, path, "file")
    if path.exists() and not os.access(path, os.R_OK):
        raise InputError(f"{option} {path}: cannot read it (no permission)")


def not_an_input(path: Path, inputs: Iterable[Path], option: str) -> None:
    """A file ``option`` names (a config-driven command's ``--json``, a config's timing cache) may not
    be, or lie in, a file or data folder the config reads: refused before any work."""
    target = path.resolve()
    for given in inputs:
        where = given.resolve()
        if target == where or (given.is_dir() and target.is_relative_to(where)):
            raise InputError(f"{option} {path}: {given} is an input of this run (its config reads it)")


def not_an_output(path: Path | None, out_dir: Path, stem: str, option: str = "--json") -> None:
    """``--json FILE`` (or another file ``option``: a timing cache) may not take a name this command's
    outputs take (``STEM.*`` in ``-o`` or run's workdir: the int8 model, cache, calibration report,
    plans, engine, sidecars): refused before any work, not after it (where cli/guard.py and write_json
    would refuse --json, the outputs written; an engine replaced a timing cache of its name)."""
    if path is None:
        return
    target, folder = path.absolute(), out_dir.absolute()
    if target.parent == folder and target.name.startswith(f"{stem}."):
        raise InputError(
            f"{option} {path}: {stem}.* in {out_dir} are this command's outputs: name another file"
        )


# what the names of a command's output files end with (models, plans, reports, caches, engines, sidecars)
_OUTPUT_ENDINGS = (".onnx", ".json", ".cache", ".npz", ".engine")


def no_folder_at_outputs(out_dir: Path, stem: str, parts: Iterable[str], option: str = "-o") -> None:
    """Refuse (one line, before any work) a folder in ``out_dir`` named as one of this command's output
    files are, ``STEM.PART.*`` for each of ``parts`` (``m.fp16.ort.onnx/``, ``m.calib.json/``): the write
    there failed "is a folder, not a file" only after the conversion, the artifact's first files
    written. A folder of another name (``m.notes/``) is the user's."""
    try:
        entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    except OSError:  # unreadable: the write says so
        return
    names = tuple(f"{stem}.{part}." for part in parts)
    for entry in entries:
        if entry.name.startswith(names) and entry.name.endswith(_OUTPUT_ENDINGS) and entry.is_dir():
            raise InputError(
                f"{option} {out_dir}: {out_dir / entry.name} is a folder where this command writes one of "
                f"its {stem}.* files: move it, or choose another {option}"
            )


def outside_cache(folder: Path, workdir: Path, option: str) -> None:
    """Refuse ``folder`` (an output folder a config names, ``option``) where it lies in ``workdir``'s
    stage cache (CACHE_DIR): the stage records and finished cells live there, not the user's files."""
    cache = workdir.resolve() / CACHE_DIR
    if folder.resolve().is_relative_to(cache):
        raise InputError(f"{option} {folder} lies in the stage cache {cache}: set a folder outside it")


# a bundle's folder where the board's scripts write (engines, timing cache, results), which no manifest lists
DEVICE_DIR = "device"


def bundle_holding(path: Path, *, itself: bool = False, device_too: bool = False) -> Path | None:
    """The bundle folder (``manifest.json`` beside ``scripts/``) that ``path`` lies in, or is where
    ``itself``; None elsewhere, and under the bundle's DEVICE_DIR, where the board's scripts write
    (build_engine.sh's build folder, benchmark.sh's results), unless ``device_too`` (a file may go
    there, a new bundle may not: stages/bundle/tools.check_bundle_output). A file written anywhere
    else in a bundle is one its manifest does not list, or a listed one replaced: ``bundle verify``
    and the board's verify.sh then find it damaged."""
    absolute = Path(os.path.abspath(path))  # "bundle/device/../x.json" lies in the bundle
    for folder in [absolute, *absolute.parents] if itself else absolute.parents:
        if (folder / "manifest.json").is_file() and (folder / "scripts").is_dir():
            if not device_too and folder != absolute and absolute.relative_to(folder).parts[0] == DEVICE_DIR:
                return None
            return folder
    return None


def not_written(
    path: Path | None, files: Iterable[Path] = (), folders: Iterable[Path] = (), option: str = "--json"
) -> None:
    """``--json FILE`` (or another file ``option``: a timing cache) may not be one of the ``files`` this
    command writes, nor lie in one of the ``folders`` it writes (a bundle, replaced as one; a stage
    cache): refused before any work, not after it (where write_json would refuse it, the outputs
    written)."""
    if path is None:
        return
    target = path.resolve()
    for file in files:
        if target == file.resolve():
            raise InputError(f"{option} {path} is a file this command writes: name another file")
    for folder in folders:
        if target.is_relative_to(folder.resolve()):
            raise InputError(
                f"{option} {path} lies in {folder}, a folder this command writes: name another file"
            )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


RECORD_DIGEST = "record_sha256"  # where a record keeps the digest of its own content


def sealed(record: Any) -> dict[str, Any]:
    """``record`` as JSON reads it back, with the sha256 of that content under ``RECORD_DIGEST``
    (calibration.atomic.content_sha256): run's stage records, matrix's cells, the int8 budget's
    search and ONNX Runtime's build sidecars keep it, and one edited since it was written no longer
    matches (:func:`intact_record`)."""
    content = json.loads(dumps(record))
    return {**content, RECORD_DIGEST: content_sha256(content, RECORD_DIGEST)}


def intact_record(record: Any) -> bool:
    """Whether ``record`` (as JSON read it) holds the digest of its own content (:func:`sealed`)."""
    return isinstance(record, dict) and record.get(RECORD_DIGEST) == content_sha256(record, RECORD_DIGEST)


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
        with held(tmp):
            with staging(tmp, dest):
                yield tmp
            _replace_dir(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        named = named_after(exc, tmp, dest)  # a full disk names the file in dest, not in our tmp
        if named is exc:
            raise
        raise named from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` over ``dest``, moving an existing ``dest`` aside first.

    Concurrent writers of one folder each move the current one to a name of their own, so none
    of them meets a folder that vanished under it; the last rename wins whole. The folders moved
    aside are removed only once ``tmp`` is in place: an interrupt while the old one was being
    removed (a large bundle) lost both, the new one with the failed write.
    """
    aside: list[Path] = []
    holding = contextlib.ExitStack()  # the folders moved aside are ours until removed
    try:
        for _ in range(100):
            try:
                os.rename(tmp, dest)  # succeeds when dest is absent or an empty folder
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(dest) + "old.", dir=dest.parent))
            aside.append(holding.enter_context(held(old)))
            with contextlib.suppress(FileNotFoundError):  # another writer moved it aside first
                os.rename(dest, old / dest.name)
        raise OSError(errno.EBUSY, f"{dest} kept changing while it was being replaced")
    except BaseException:  # not replaced (an error, an interrupt): the folder moved aside goes back
        if aside and not os.path.lexists(dest) and os.path.lexists(aside[-1] / dest.name):
            with contextlib.suppress(OSError):
                os.rename(aside[-1] / dest.name, dest)
        raise
    finally:
        for old in aside:
            shutil.rmtree(old, ignore_errors=True)
        holding.close()


# the folder in a workdir where run and matrix keep their stage records and finished cells (read by
# the report, refused as a --json output: cli/guard.py)
CACHE_DIR = ".edgedeploy-cache"
SCRATCH_PREFIX = "edgedeploy-"
OWNER_FILE = ".edgedeploy-owner.json"


def _owner_alive(pid: int, started: int | None) -> bool:
    """Whether the process that made a scratch folder still runs (a reused pid does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone's process: alive
        return True
    now = process_start_ticks(pid)
    return started is None or now is None or now == started


@contextlib.contextmanager
def scratch_beside(dest: str | os.PathLike[str], kind: str) -> Iterator[Path]:
    """A private folder beside ``dest`` (in the output folder, for work whose files are large or
    must stay on its file system), removed on the way out.

    Named like the temporary files of an atomic write of ``dest`` (``.NAME.PID.KIND.XXXX``), so
    that the next write of ``dest`` or the next scratch folder beside it removes it if this
    process was killed before it could (``remove_stale_temps``: the pid is gone)."""
    dest = Path(dest)
    remove_stale_temps(dest)
    prefix = f"{temp_prefix(dest)}{kind}."
    with tempfile.TemporaryDirectory(prefix=prefix, dir=dest.parent) as tmp, held(Path(tmp)) as folder:
        yield folder


@contextlib.contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private folder in the system temp folder for one piece of work, removed on the way out.

    Named ``edgedeploy-KIND-PID-XXXX`` and holding an owner file, so that a later command can
    remove it (:func:`sweep_scratch`) if this process is killed before it can."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-"))
    try:
        pid = os.getpid()
        owner = {"pid": pid, "started": process_start_ticks(pid), "host": socket.gethostname()}
        (tmp / OWNER_FILE).write_text(json.dumps(owner))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stale(entry: Path) -> bool:
    """Whether ``entry`` is a scratch folder of ours whose owner is gone."""
    if not entry.name.startswith(SCRATCH_PREFIX) or entry.is_symlink() or not entry.is_dir():
        return False
    try:
        info = entry.stat()
    except OSError:  # its owner removed it since the listing (another command on this machine)
        return False
    if info.st_uid != os.getuid():
        return False
    try:
        owner = json.loads((entry / OWNER_FILE).read_text())
        pid, started, host = int(owner["pid"]), owner.get("started"), str(owner["host"])
    except FileNotFoundError:  # killed between making the folder and writing its owner file
        return _orphan(entry, info.st_mtime)
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    return not _owner_alive(pid, started if isinstance(started, int) else None)


ORPHAN_SECONDS = 60.0


def _orphan(entry: Path, modified: float) -> bool:
    """A scratch folder without an owner file is stale when the pid in its name
    (``edgedeploy-KIND-PID-XXXX``) is gone and it has not changed for a minute; the owner file is
    written right after the folder is made, so a younger one may still get it."""
    found = re.fullmatch(rf"{re.escape(SCRATCH_PREFIX)}.+-(\d+)-[^-]+", entry.name)
    if found is None or int(found.group(1)) == os.getpid() or time.time() - modified < ORPHAN_SECONDS:
        return False
    return not _owner_alive(int(found.group(1)), None)


def sweep_scratch(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the scratch folders that killed runs left in ``root`` (the system temp folder).

    Never raises: a folder that cannot be read or removed is left as it is."""
    try:
        entries = list(Path(root or tempfile.gettempdir()).iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        if _stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    return removed
