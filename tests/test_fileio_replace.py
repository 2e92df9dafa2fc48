"""Replacing a folder whole (fileio.atomic_dir): an interrupt or error at any point leaves the old
folder or the new one, never neither."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import edgedeploy.fileio as fio


def _folder(path: Path, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "f.txt").write_text(text)


def test_an_interrupt_while_the_old_folder_is_removed_keeps_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old folder was removed before the new one was renamed in: an interrupt during that
    removal (0.24 s for a 300 MB bundle) went to atomic_dir's cleanup, which removed the new one."""
    dest = tmp_path / "bundle"
    _folder(dest, "old")
    real = fio.shutil.rmtree

    def interrupted(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        if ".old." in os.fspath(path):
            raise KeyboardInterrupt
        real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fio.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt), fio.atomic_dir(dest) as root:
        _folder(root, "new")
    assert (dest / "f.txt").read_text() == "new"


def test_a_failed_rename_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "bundle"
    _folder(dest, "old")
    real = os.rename
    calls = {"n": 0}

    def failing(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if os.fspath(dst) == os.fspath(dest) and ".old." not in os.fspath(src):
            calls["n"] += 1
            if calls["n"] > 1:  # the first meets the old folder; the one after moving it aside fails
                raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(fio.os, "rename", failing)
    with pytest.raises(OSError, match="I/O error"), fio.atomic_dir(dest) as root:
        _folder(root, "new")
    assert (dest / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_refused_artifact_leaves_no_empty_folder_behind(tmp_path: Path) -> None:
    """A build refused at its artifact check (``-o out`` did not exist) left an empty ``out``: the
    write made the folders for the file and kept them when the file was not kept. Folders that were
    there before stay."""
    import onnx

    from edgedeploy.errors import InputError
    from edgedeploy.onnxio import save_onnx

    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))

    def refuse(_: Path, content: bytes | None) -> None:  # save_onnx's check: the file and its bytes
        raise InputError("fails onnx.checker")

    for dest in (tmp_path / "out" / "deeper" / "m.fp16.onnx", tmp_path / "m.fp16.onnx"):
        with pytest.raises(InputError):
            save_onnx(model, dest, check=refuse)
    assert sorted(tmp_path.iterdir()) == [] and tmp_path.is_dir()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(InputError):
        save_onnx(model, kept / "new" / "m.onnx", check=refuse)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not any(kept.iterdir())
