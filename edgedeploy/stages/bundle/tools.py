"""Workstation-side bundle tools: verify a bundle (folder or .tar.gz), summarise it, extract it safely.

Verification is the same contract the device's verify.sh enforces: every file listed in the
manifest with its size and sha256, no file missing or unlisted (``device/``, where the scripts
write on the board, is allowed), manifest paths relative and inside the bundle, the manifest
valid against ``manifest.schema.json``. Extraction refuses absolute paths, ``..`` components,
links leaving the bundle and device files before writing anything (tarfile's own filters
arrived in 3.12 and are applied on top where present).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.fileio import sha256_file

DEVICE_DIR = "device"


@dataclass
class BundleCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    root: str = ""
    files_checked: int = 0
    device_outputs: list[str] = field(default_factory=list)  # files the device scripts wrote


def manifest_schema() -> dict[str, Any]:
    data = json.loads(resources.files("edgedeploy").joinpath("manifest.schema.json").read_text())
    assert isinstance(data, dict)
    return data


def schema_problems(manifest: Any) -> list[str]:
    """JSON Schema violations (needs ``jsonschema``; without it, only the required keys are checked)."""
    schema = manifest_schema()
    try:
        import jsonschema
    except ImportError:
        missing = [k for k in schema["required"] if not isinstance(manifest, dict) or k not in manifest]
        return [f"manifest lacks '{k}'" for k in missing]
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))):
        deepest = jsonschema.exceptions.best_match([error])  # the branch of a oneOf that nearly matched
        where = "".join(f"[{p!r}]" for p in deepest.absolute_path)
        problems.append(f"manifest{where}: {deepest.message}")
    return problems


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.parts or p.is_absolute() or ".." in p.parts or name.startswith("\\")


def _manifest_paths(manifest: dict[str, Any]) -> list[str]:
    paths = []
    for art in manifest.get("artifacts") or []:
        for key in ("model", "engine", "calibration_cache", "precision_plan"):
            if art.get(key):
                paths.append(art[key])
    for section in ("reference", "report"):
        for value in (manifest.get(section) or {}).values():
            if isinstance(value, str):
                paths.append(value)
    return paths


def check_dir(root: Path) -> BundleCheck:
    check = BundleCheck(ok=False, root=str(root))
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        check.problems.append(f"{root}: no manifest.json (not a bundle)")
        return check
    except json.JSONDecodeError as exc:
        check.problems.append(f"manifest.json is not valid JSON: {exc}")
        return check
    check.problems += schema_problems(manifest)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return check
    for rel, meta in sorted(files.items()):
        path = root / rel
        if _unsafe(rel):
            check.problems.append(f"{rel}: unsafe path in manifest")
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            check.problems.append(f"{rel}: link leaves the bundle")
        elif not path.is_file():
            check.problems.append(f"{rel}: missing")
        elif path.stat().st_size != meta.get("size"):
            check.problems.append(f"{rel}: size {path.stat().st_size}, manifest says {meta.get('size')}")
        elif sha256_file(path) != meta.get("sha256"):
            check.problems.append(f"{rel}: sha256 differs from the manifest (damaged or edited)")
        else:
            check.files_checked += 1
            if rel.startswith("scripts/") and rel.endswith(".sh") and not os.access(path, os.X_OK):
                check.problems.append(f"{rel}: not executable")
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel == "manifest.json" or rel in files or "__pycache__" in rel.split("/"):
            continue
        if rel.split("/")[0] == DEVICE_DIR:
            check.device_outputs.append(rel)
        else:
            check.problems.append(f"{rel}: not listed in the manifest")
    for rel in _manifest_paths(manifest):
        if _unsafe(rel) or rel not in files:
            check.problems.append(f"{rel}: referenced by the manifest but not in its file list")
    check.ok = not check.problems
    return check


def _single_top(dest: Path) -> Path:
    entries = [p for p in dest.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    name = member.name
    if PurePosixPath(name).is_absolute() or name.startswith("\\"):
        raise InputError(f"archive member '{name}' has an absolute path: refusing to extract")
    if ".." in PurePosixPath(name).parts:
        raise InputError(f"archive member '{name}' has a '..' component: refusing to extract")
    if member.isdev() or member.isfifo():
        raise InputError(f"archive member '{name}' is a device or FIFO: refusing to extract")
    if member.issym() or member.islnk():
        target = member.linkname
        if PurePosixPath(target).is_absolute():
            raise InputError(f"archive link '{name}' -> '{target}' leaves the bundle: refusing to extract")
        base = (root / name).parent if member.issym() else root
        resolved = os.path.normpath(base / target)
        if not Path(resolved).is_relative_to(root):
            raise InputError(f"archive link '{name}' -> '{target}' leaves the bundle: refusing to extract")


def safe_extract(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a bundle archive under ``dest``; return the bundle folder (the archive's top folder).

    Every member is checked before anything is written; the tree is extracted into a temporary
    folder beside its destination and renamed into place, so a refusal leaves nothing behind.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    if not tar_path.is_file():
        raise InputError(f"bundle archive not found: {tar_path}")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest))
    try:
        try:
            with tarfile.open(tar_path, "r:*") as tar:
                members = tar.getmembers()
                root = tmp.resolve()
                for member in members:
                    _check_member(member, root)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputError(f"{tar_path}: not a readable tar archive ({exc})") from None
        top = _single_top(tmp)
        final = (
            dest / top.name
            if top != tmp
            else dest / tar_path.name.removesuffix(".tar.gz").removesuffix(".tgz")
        )
        if final.exists():
            raise InputError(f"{final} already exists: remove it or extract elsewhere")
        os.replace(top, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify_bundle(path: str | os.PathLike[str]) -> BundleCheck:
    """Check a bundle folder or ``.tar.gz`` against its manifest; ``ok`` is False with the problems."""
    path = Path(path)
    if path.is_dir():
        return check_dir(path)
    if not path.is_file():
        raise InputError(f"bundle not found: {path}")
    with tempfile.TemporaryDirectory(prefix="edgedeploy-verify-") as tmp:
        try:
            root = safe_extract(path, tmp)
        except InputError as exc:
            return BundleCheck(ok=False, problems=[str(exc)], root=str(path))
        check = check_dir(root)
        check.root = str(path)
        return check


def inspect_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary for people: model, target, artifacts with accuracy, latency and energy, size."""
    path = Path(path)
    if path.is_dir():
        return _summary(path, verify_bundle(path))
    with tempfile.TemporaryDirectory(prefix="edgedeploy-inspect-") as tmp:
        root = safe_extract(path, tmp)
        summary = _summary(root, check_dir(root))
        summary["path"] = str(path)
        return summary


def _summary(root: Path, check: BundleCheck) -> dict[str, Any]:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{root}: cannot read manifest.json ({exc})") from None
    target = manifest.get("target") or {}
    artifacts = []
    for art in manifest.get("artifacts") or []:
        profile = art.get("profile") or {}
        batches = profile.get("batch_sizes") or {}
        first = batches.get("1") or (next(iter(batches.values())) if batches else {})
        energy = profile.get("energy") or {}
        artifacts.append(
            {
                "precision": art.get("precision"),
                "backend": art.get("backend"),
                "model": art.get("model"),
                "engine": art.get("engine"),
                "compare_passed": (art.get("compare") or {}).get("passed"),
                "median_ms": first.get("median_ms") if isinstance(first, dict) else None,
                "energy_per_inference_mj": energy.get("energy_per_inference_mj")
                if isinstance(energy, dict)
                else None,
            }
        )
    files = manifest.get("files") or {}
    return {
        "path": str(root),
        "valid": check.ok,
        "problems": check.problems,
        "model": (manifest.get("model") or {}).get("name"),
        "created": manifest.get("created"),
        "edgedeploy_version": manifest.get("edgedeploy_version"),
        "target": target.get("name"),
        "target_kind": target.get("kind"),
        "tensorrt": (manifest.get("tools") or {}).get("tensorrt"),
        "expected_tensorrt": target.get("tensorrt"),
        "primary_precision": manifest.get("primary_precision"),
        "artifacts": artifacts,
        "gates": manifest.get("gates"),
        "files": len(files),
        "size_bytes": sum(int(m.get("size", 0)) for m in files.values()),
        "scripts": sorted(f.removeprefix("scripts/") for f in files if f.startswith("scripts/")),
        "device_outputs": check.device_outputs,
    }
