"""Records of finished pipeline stages: a rerun whose inputs did not change does no work.

Each stage's result is recorded under ``workdir/.edgedeploy-cache/`` with a key made of the
hashes of its inputs, its options and the tool versions. A record counts only while every
output file it names still has the sha256 recorded with it (and, where a stage says so, the
output is still intact), and while the record itself is what was written: it carries the sha256
of its own content, so a figure or a path edited in it since (a cosine raised over its gate, a
model path pointed elsewhere) makes the stage run again instead of being believed or crashing a
later stage. A cache hit is verified by content, not existence. A record names its outputs by
absolute path, and counts only in the workdir it was written for: in a copy of a project (a CI
cache restored elsewhere, a colleague's copy) the copied records named the first project's files,
which were hashed, reused and bundled in place of the copy's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedeploy.fileio import CACHE_DIR, atomic_write_json, intact_record, sealed, sha256_file
from edgedeploy.ui import Ui

__all__ = ["CACHE_DIR", "StageCache"]


class StageCache:
    """Records of finished stages, keyed by a hash of their inputs, options and tool versions."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / CACHE_DIR

    def _where(self) -> str:
        """The workdir a record is written for: resolved, so a link to it or a relative path is the
        same workdir."""
        return str(self.workdir.resolve())

    def _path(self, stage: str) -> Path:
        return self.root / f"{stage}.json"

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The recorded result when the key matches and every output file still has its recorded hash.

        Existence is not enough: a model edited or damaged since (NaN weights, a truncated
        archive) must be made again, not reported as up to date.
        """
        return self._check(stage, key)[0]

    def recorded(self, stage: str) -> dict[str, Any] | None:
        """The stage's last recorded result, whatever its key, while it holds as :meth:`lookup`
        checks it (the record as written, every output file with its recorded hash); else None."""
        try:
            key = json.loads(self._path(stage).read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            return None
        return self.lookup(stage, key) if isinstance(key, str) else None

    def _check(self, stage: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """:meth:`lookup`'s result, and why a record of this key, or one that cannot be read, does not
        count (None when there is none, or its key differs: the inputs or options changed, which
        needs no saying)."""
        path = self._path(stage)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None, None  # never run: nothing to say
        except (OSError, ValueError):  # cut short (a full disk, a copy interrupted) or not a file
            return None, f"its record {path} cannot be read"
        if not isinstance(record, dict):
            return None, f"its record {path} cannot be read"
        if record.get("key") != key:
            return None, None
        if not intact_record(record):
            return None, f"its record {self._path(stage)} was edited since it was written"
        if record.get("workdir") != self._where():  # copied or moved: its paths name another folder's files
            written = record.get("workdir")
            where = f"the workdir {written}" if isinstance(written, str) else "another workdir"
            return None, f"its record {self._path(stage)} was written for {where}"
        outputs = record.get("outputs")
        result = record.get("result")
        if not isinstance(outputs, dict) or not isinstance(result, dict):
            return None, f"its record {self._path(stage)} is not one this version wrote"
        for path, digest in outputs.items():
            try:
                if sha256_file(path) != digest:
                    return None, f"{path} changed since this stage wrote it"
            except OSError:
                return None, f"{path} is gone"
        return result, None

    def store(self, stage: str, key: str, outputs: list[Path], result: dict[str, Any]) -> None:
        hashes = {str(p): sha256_file(p) for p in outputs}
        record = {"key": key, "workdir": self._where(), "outputs": hashes, "result": result}
        atomic_write_json(self._path(stage), sealed(record))

    def run(
        self,
        stage: str,
        key: str,
        ui: Ui,
        compute: Callable[[], tuple[list[Path], dict[str, Any]]],
        not_valid: Callable[[dict[str, Any]], str | None] | None = None,
        redo: Callable[[], tuple[list[Path], dict[str, Any]]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The recorded result when the key matches (and ``not_valid`` finds no reason to redo it:
        it returns that reason, said to the user), else compute it. ``redo``, where given, runs
        instead of ``compute`` when the stage runs again for a reason it says ("running it again"):
        the same work reusing nothing of the last (a build forced, as build --force)."""
        cached, why = self._check(stage, key)
        if cached is not None and not_valid is not None:
            why = not_valid(cached)
            cached = None if why else cached
        if cached is not None:
            ui.info(f"{stage}: up to date (inputs and options unchanged), nothing to do")
            return cached, True
        if why:
            ui.info(f"{stage}: {why}: running it again")
        outputs, result = (redo if why and redo is not None else compute)()
        self.store(stage, key, outputs, result)
        return result, False
