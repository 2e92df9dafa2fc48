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
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from edgedeploy.errors import InputError, first_line
from edgedeploy.fileio import DEVICE_DIR, bundle_holding, scratch_dir


@dataclass
class BundleCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    root: str = ""
    files_checked: int = 0
    device_outputs: list[str] = field(default_factory=list)  # files the device scripts wrote

    def summary(self, limit: int = 3) -> str:
        """The first problems on one short line (an archive of 30k stray members gives one line too)."""
        shown = "; ".join(p if len(p) <= 200 else p[:197] + "..." for p in self.problems[:limit])
        rest = len(self.problems) - limit
        return shown + (f" (and {rest} more problems)" if rest > 0 else "")


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


def not_ours(folder: Path) -> str | None:
    """Why ``folder`` may not be replaced by a new bundle, or None when it may (absent, empty, ours).

    A folder is ours only when its manifest.json is an edgedeploy manifest (``schema_version``,
    ``edgedeploy_version`` and a ``files`` table) and every file in it is listed there (``device/``,
    which the device scripts write, aside): a web app's manifest.json or a bundle the user added
    files to is not ours, and replacing it would delete their files.
    """
    if not folder.exists() and not folder.is_symlink():
        return None
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    if not any(folder.iterdir()):
        return None
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return f"{folder} is not empty and is not a bundle (no edgedeploy manifest.json)"
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("schema_version"), int)
        or "edgedeploy_version" not in manifest
        or not isinstance(manifest.get("files"), dict)
    ):
        return f"{folder} is not a bundle (its manifest.json is not an edgedeploy manifest)"
    listed = manifest["files"]
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(folder).as_posix()
        parts = rel.split("/")
        if rel == "manifest.json" or rel in listed or parts[0] == DEVICE_DIR or "__pycache__" in parts:
            continue
        return f"{folder} is not a bundle: it holds {rel}, which its manifest does not list"
    return None


def device_outputs(folder: Path) -> list[str]:
    """The files under ``folder/device`` (bundle-relative, sorted): what the device scripts wrote on the
    board (engines, timing cache, benchmark and verify results), which no manifest lists."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in (folder / DEVICE_DIR).rglob("*")
        if not p.is_dir() and "__pycache__" not in p.parts
    )


def check_bundle_output(folder: Path) -> None:
    """Refuse ``folder`` as a new bundle's output (InputError, one line) when replacing it or its archive
    would delete files that are not ours (:func:`not_ours`, :func:`archive_not_ours`) or the board's
    outputs in an existing bundle's ``device/``; an empty ``device/`` goes with the old bundle. A folder
    inside another bundle is refused too: its manifest does not list the new files, so that bundle's
    ``verify.sh`` and ``bundle verify`` would fail on them (as ``--json`` is refused there, cli/guard.py)."""
    if parent := bundle_holding(folder, device_too=True):  # "bundle/models/../sub" lies in the bundle too
        raise InputError(
            f"bundle output: {folder} lies in the bundle {parent}, whose manifest would not list it: "
            "choose an -o folder outside that bundle"
        )
    if why := not_ours(folder) or archive_not_ours(folder):
        raise InputError(f"bundle output: {why}; choose another -o folder")
    if folder.is_dir() and (written := device_outputs(folder)):
        files = f"{len(written)} file{'s' if len(written) > 1 else ''}"
        raise InputError(
            f"bundle output: {folder / DEVICE_DIR} holds {files} written on the board ({written[0]}"
            f"{', ...' if len(written) > 1 else ''}), which a new bundle would delete: move them out of "
            f"the bundle or remove {folder / DEVICE_DIR} first, or choose another -o folder"
        )


def archive_not_ours(folder: Path) -> str | None:
    """Why ``folder.tar.gz`` may not be replaced by a new bundle's archive, or None when it may:
    absent, beside a bundle folder of ours (the pair is remade), or a tar whose first member is a
    bundle's folder (``bundle create -o mydata`` replaced an unrelated ``mydata.tar.gz``)."""
    archive = folder.with_name(folder.name + ".tar.gz")
    if not archive.exists() and not archive.is_symlink():
        return None
    if not archive.is_file():
        return f"{archive} exists and is not a file"
    if folder.is_dir() and any(folder.iterdir()) and not_ours(folder) is None:
        return None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            first = tar.next()
    except (OSError, tarfile.TarError, EOFError):
        first = None
    if first is None or first.name.split("/")[0] != folder.name:
        return f"{archive} exists and is not a bundle archive of {folder.name}"
    return None


def check_dir(root: Path) -> BundleCheck:
    """The device's check (``bundle_helper.check_files``, what verify.sh runs) plus the JSON Schema."""
    from edgedeploy.device import bundle_helper

    check = BundleCheck(ok=False, root=str(root))
    try:
        manifest = bundle_helper.load_manifest(root)
    except bundle_helper.BundleProblem as exc:
        data = _read_json(root / "manifest.json")
        check.problems += (schema_problems(data) if isinstance(data, dict) else []) or [str(exc)]
        return check
    check.problems += schema_problems(manifest)
    check.problems += bundle_helper.check_files(root, manifest)
    files = manifest["files"]
    check.files_checked = sum(1 for rel in files if not any(p.startswith(f"{rel}:") for p in check.problems))
    check.device_outputs = device_outputs(root)
    check.ok = not check.problems
    return check


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


# A bundle holds a dozen files; an archive with far more members, or members its own manifest does
# not list (or lists with another size), is refused before a byte is written.
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 64 << 20
MAX_UNLISTED_BYTES = 256 << 20  # device/ outputs a board may have added to the archive


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


def _members(tar: tarfile.TarFile, tar_path: Path) -> list[tarfile.TarInfo]:
    members = []
    for member in tar:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise InputError(
                f"{tar_path}: more than {MAX_MEMBERS} members: not a bundle, refusing to extract"
            )
    return members


def _check_against_manifest(tar: tarfile.TarFile, members: list[tarfile.TarInfo], tar_path: Path) -> None:
    """Every regular member is manifest.json or a file its manifest lists, with the listed size."""
    tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
    prefix = (
        f"{tops.pop()}/" if len(tops) == 1 and not any(m.name == "manifest.json" for m in members) else ""
    )
    found = next((m for m in members if m.name == prefix + "manifest.json" and m.isfile()), None)
    if found is None:
        raise InputError(f"{tar_path}: no manifest.json in the archive (not a bundle)")
    if found.size > MAX_MANIFEST_BYTES:
        raise InputError(
            f"{tar_path}: manifest.json of {found.size} bytes: not a bundle, refusing to extract"
        )
    fh = tar.extractfile(found)
    try:
        manifest = json.loads(fh.read() if fh else b"")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{tar_path}: manifest.json is not valid JSON ({first_line(exc)})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise InputError(f"{tar_path}: manifest.json has no 'files' table (not a bundle)")
    unlisted = 0
    for member in members:
        if not member.isfile() or member is found:
            continue
        rel = member.name.removeprefix(prefix)
        meta = files.get(rel)
        if isinstance(meta, dict):
            if member.size != meta.get("size"):
                raise InputError(
                    f"{tar_path}: member {rel} has {member.size} bytes, its manifest says {meta.get('size')}"
                )
        elif rel.split("/")[0] == DEVICE_DIR and unlisted + member.size <= MAX_UNLISTED_BYTES:
            unlisted += member.size
        else:
            raise InputError(f"{tar_path}: member {rel} is not listed in its manifest: refusing to extract")


def safe_extract(
    tar_path: str | os.PathLike[str], dest: str | os.PathLike[str], *, check_manifest: bool = False
) -> Path:
    """Extract a bundle archive under ``dest``; return the bundle folder (the archive's top folder).

    Every member is checked before anything is written (paths, links, count, and with
    ``check_manifest`` every regular member against the archive's own manifest: listed, with
    the listed size, so a tar bomb is refused before a byte is written); the tree is extracted
    into a temporary folder beside its destination and renamed into place, so a refusal leaves
    nothing behind.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    if not tar_path.is_file():
        what = "a folder, not a .tar.gz" if tar_path.is_dir() else "not found"
        raise InputError(f"bundle archive {tar_path}: {what}")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest))
    try:
        try:
            with tarfile.open(tar_path, "r:*") as tar:
                members = _members(tar, tar_path)
                root = tmp.resolve()
                for member in members:
                    _check_member(member, root)
                if check_manifest:
                    _check_against_manifest(tar, members, tar_path)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise InputError(f"{tar_path}: not a readable tar archive ({first_line(exc)})") from None
        except OSError as exc:
            raise InputError(f"{tar_path}: cannot extract ({exc.strerror or first_line(exc)})") from None
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
    with scratch_dir("verify") as tmp:
        try:
            root = safe_extract(path, tmp, check_manifest=True)
        except InputError as exc:
            return BundleCheck(ok=False, problems=[str(exc)], root=str(path))
        check = check_dir(root)
        check.root = str(path)
        return check


def inspect_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary for people: model, target, artifacts with accuracy, latency and energy, size."""
    path = Path(path)
    if path.is_dir():
        return _summary(path, verify_bundle(path), path)
    with scratch_dir("inspect") as tmp:
        root = safe_extract(path, tmp, check_manifest=True)
        summary = _summary(root, check_dir(root), path)
        summary["path"] = str(path)
        return summary


def _summary(root: Path, check: BundleCheck, shown: Path) -> dict[str, Any]:
    """The summary of the bundle at ``root``, named ``shown`` in errors (an archive's name, not the
    scratch folder it was extracted to, which is gone when the user reads the line)."""
    from edgedeploy.device.bundle_helper import BundleProblem, load_manifest

    try:
        manifest = load_manifest(root)
    except BundleProblem as exc:
        raise InputError(f"bundle {shown} is damaged: {exc}") from None
    try:
        return _summary_of(root, manifest, check)
    except (AttributeError, TypeError, ValueError, StopIteration) as exc:
        raise InputError(
            f"bundle {shown} is damaged: manifest.json breaks its schema ({first_line(exc)})"
        ) from None


def bundle_totals(root: Path, files: dict[str, Any]) -> tuple[int, int]:
    """Files and bytes of the bundle at ``root`` whose manifest lists ``files``: the listed ones
    and the manifest itself, which its own table cannot list."""
    manifest = root / "manifest.json"
    size = manifest.stat().st_size if manifest.is_file() else 0
    return len(files) + 1, size + sum(int(f.get("size", 0)) for f in files.values())


def _summary_of(root: Path, manifest: dict[str, Any], check: BundleCheck) -> dict[str, Any]:
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
    count, size = bundle_totals(root, files)
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
        "preprocess": (manifest.get("io") or {}).get("preprocess"),  # what a frame needs before the model
        "artifacts": artifacts,
        "gates": manifest.get("gates"),
        "files": count,
        "size_bytes": size,
        "scripts": sorted(f.removeprefix("scripts/") for f in files if f.startswith("scripts/")),
        "device_outputs": check.device_outputs,
    }
