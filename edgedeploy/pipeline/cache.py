"""Records of finished pipeline stages: a rerun whose inputs did not change does no work.

Each stage's result is recorded under ``workdir/.edgedeploy-cache/`` with a key made of the
hashes of its inputs, its options and the tool versions. A record counts only while every
output file it names is still there (and, where a stage says so, still intact).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedeploy.fileio import atomic_write_json
from edgedeploy.ui import Ui

CACHE_DIR = ".edgedeploy-cache"


class StageCache:
    """Records of finished stages, keyed by a hash of their inputs, options and tool versions."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / CACHE_DIR

    def _path(self, stage: str) -> Path:
        return self.root / f"{stage}.json"

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The recorded result when the key matches and every output file still exists."""
        try:
            record = json.loads(self._path(stage).read_text())
        except (OSError, ValueError):
            return None
        if record.get("key") != key:
            return None
        if not all(Path(p).is_file() for p in record.get("outputs", [])):
            return None
        result = record.get("result")
        return result if isinstance(result, dict) else None

    def store(self, stage: str, key: str, outputs: list[Path], result: dict[str, Any]) -> None:
        atomic_write_json(
            self._path(stage), {"key": key, "outputs": [str(p) for p in outputs], "result": result}
        )

    def run(
        self,
        stage: str,
        key: str,
        ui: Ui,
        compute: Callable[[], tuple[list[Path], dict[str, Any]]],
        still_valid: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The recorded result when the key matches (and ``still_valid`` agrees), else compute it."""
        cached = self.lookup(stage, key)
        if cached is not None and (still_valid is None or still_valid(cached)):
            ui.info(f"{stage}: up to date (inputs and options unchanged), nothing to do")
            return cached, True
        outputs, result = compute()
        self.store(stage, key, outputs, result)
        return result, False
