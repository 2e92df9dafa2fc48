#!/usr/bin/env python3
"""Manifest, device and engine logic for the bundle's bash scripts, run on the device.

Runs with the system python3 of JetPack (standard library only; NumPy for reference inputs),
without edgedeploy installed, so it cannot share code with the package: the bash scripts stay
short and every parsing or comparison decision lives here, where it is tested. Where a rule is
edgedeploy's own (the calibration cache header check of edgedeploy/backends/trt_plan.py), this
helper keeps a small copy, tested against the original.

Subcommands: get, check-files, check-device, power-mode-id, engine, engine-path, model, build-args,
edgedeploy-args, write-sidecar, ref-inputs, shapes, profile-inputs, run-shapes, run-flags,
edgedeploy-usable, check-out, settings. The bash scripts run no Python of their own: each Python
step is a subcommand here or one of the scripts beside it (verify_outputs.py, tegrastats_power.py),
which all turn a Ctrl-C into the line "interrupted" and exit 130.
Exit codes: 0 ok, 2 damaged or mismatched bundle, 3 "no engine for this device".
``EDGEDEPLOY_ROOT`` prefixes every system path read (/proc/device-tree/model, /etc/nv_tegra_release,
/etc/nvpmodel.conf, /usr/local/cuda), so tests can run against a fake device tree.

It runs on the board's own python3: 3.6 on JetPack 4.6 (Nano, TX2), 3.8 on JetPack 5. So no
syntax or library call newer than 3.6 (no walrus, no zip(strict=), no PEP 585/604 annotations
evaluated at run time; tests/device/test_device_python.py checks).
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Tuple

EXIT_OK, EXIT_BAD_BUNDLE, EXIT_NO_ENGINE = 0, 2, 3
DEVICE_DIR = "device"  # everything the scripts write on the device goes here, outside the manifest
Profile = Dict[str, List[List[int]]]  # a shape profile: input name -> [min, opt, max] dims

# L4T release -> (JetPack, CUDA), from NVIDIA's JetPack and Jetson Linux archives; sources, and what
# is not NVIDIA's word: docs/tensorrt-facts.md, "Jetson Linux (L4T), JetPack and CUDA". A patch release
# not listed reads as the nearest listed one of its major.minor (jetpack_for_l4t).
L4T_TABLE: Dict[str, Tuple[str, str]] = {
    "32.6.1": ("4.6", "10.2"),
    "32.7.1": ("4.6.1", "10.2"),
    "32.7.2": ("4.6.2", "10.2"),
    "32.7.3": ("4.6.3", "10.2"),
    "32.7.4": ("4.6.4", "10.2"),
    "32.7.5": ("4.6.5", "10.2"),
    "32.7.6": ("4.6.6", "10.2"),
    "35.1.0": ("5.0.2", "11.4"),
    "35.2.1": ("5.1", "11.4"),
    "35.3.1": ("5.1.1", "11.4"),
    "35.4.1": ("5.1.2", "11.4"),
    "35.5.0": ("5.1.3", "11.4"),
    "35.6.0": ("5.1.4", "11.4"),
    "35.6.1": ("5.1.5", "11.4"),
    "36.2.0": ("6.0 DP", "12.2"),
    "36.3.0": ("6.0", "12.2"),
    "36.4.0": ("6.1", "12.6"),
    "36.4.3": ("6.2", "12.6"),
    "36.4.4": ("6.2.1", "12.6"),
    "38.2.0": ("7.0", "13.0"),
    "38.2.1": ("7.0", "13.0"),
    "38.4.0": ("7.1", "13.0"),
    "39.2.0": ("7.2", "13.2"),
}


class BundleProblem(Exception):
    """The bundle is damaged or does not fit this device (exit 2)."""


def die(message: str, code: int = EXIT_BAD_BUNDLE) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _structure_problems(data: Any) -> List[str]:
    """The parts of the manifest schema these scripts rely on (the device has no jsonschema)."""
    if not isinstance(data, dict):
        return ["manifest.json is not a JSON object"]
    problems = []
    files = data.get("files")
    if not isinstance(files, dict):
        problems.append("manifest 'files' is not a table of files")
    else:
        for rel, meta in files.items():
            if (
                not isinstance(meta, dict)
                or not isinstance(meta.get("sha256"), str)
                or not isinstance(meta.get("size"), int)
                or isinstance(meta.get("size"), bool)
            ):
                problems.append(f"manifest 'files' entry {rel!r} lacks a sha256 string and an integer size")
                break
    arts = data.get("artifacts")
    if not isinstance(arts, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("precision"), str)
        and isinstance(a.get("model"), str)
        and all(a.get(k) is None or isinstance(a.get(k), str) for k in ARTIFACT_PATHS)
        for a in arts
    ):
        problems.append("manifest 'artifacts' is not a list of {precision, backend, model, ...}")
    target = data.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("name"), str):
        problems.append("manifest 'target' lacks a name")
    io = data.get("io")
    if (
        not isinstance(io, dict)
        or not isinstance(io.get("inputs"), list)
        or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("shape"), list)
            for i in io["inputs"]
        )
    ):
        problems.append("manifest 'io.inputs' is not a list of {name, shape}")
    ref = data.get("reference")
    if ref is not None and not (isinstance(ref, dict) and all(isinstance(v, str) for v in ref.values())):
        problems.append("manifest 'reference' is not a table of paths")
    return problems


def load_manifest(bundle: Path) -> Dict[str, Any]:
    try:
        data = json.loads((bundle / "manifest.json").read_text())
    except FileNotFoundError:
        raise BundleProblem(f"{bundle}/manifest.json is missing: not a bundle") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleProblem(f"manifest.json is not valid JSON ({exc})") from None
    except OSError as exc:
        raise BundleProblem(f"cannot read {bundle}/manifest.json ({exc.strerror or exc})") from None
    problems = _structure_problems(data)
    if problems:
        raise BundleProblem(problems[0])
    return dict(data)


def atomic_write(path: Path, text: str) -> None:
    """``text`` to ``path`` under a temporary name, then renamed; with the mode a plain open() gives
    (0666 less the umask), not mkstemp's 0600. tegrastats_power.py writes its JSON with it too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- files


ARTIFACT_PATHS = ("model", "engine", "calibration_cache", "precision_plan")


def unsafe_path(rel: str) -> bool:
    """A manifest path that is absolute, climbs out (``..``) or is empty."""
    parts = rel.replace("\\", "/").split("/")
    return not rel or rel.startswith(("/", "\\")) or ".." in parts or (len(rel) > 1 and rel[1] == ":")


def manifest_paths(manifest: Dict[str, Any]) -> List[str]:
    """Every path the manifest points at besides its file table: artifacts, reference data, report."""
    paths = [
        art[key]
        for art in manifest.get("artifacts") or []
        if isinstance(art, dict)
        for key in ARTIFACT_PATHS
        if isinstance(art.get(key), str) and art[key]
    ]
    for section in ("reference", "report"):
        table = manifest.get(section)
        if isinstance(table, dict):
            paths += [v for v in table.values() if isinstance(v, str)]
    return paths


def inside(bundle: Path, path: Path) -> bool:
    """``path`` resolves (links followed) to a place inside ``bundle``."""
    try:
        path.resolve().relative_to(bundle.resolve())
    except ValueError:
        return False
    return True


def check_files(bundle: Path, manifest: Dict[str, Any]) -> List[str]:
    """The bundle file contract, shared with the workstation's ``edgedeploy bundle verify``.

    Every listed file is a regular file inside the bundle (no link leaving it, no FIFO or
    device), with its size and sha256; the scripts are executable; every path the manifest
    points at is relative, inside and listed; nothing else is there except ``device/``, where
    the scripts write on the board.
    """
    problems = []
    listed = manifest["files"]
    for rel, meta in sorted(listed.items()):
        path = bundle / rel
        if unsafe_path(rel):
            problems.append(f"{rel}: unsafe path in manifest")
        elif (path.is_symlink() or path.exists()) and not inside(bundle, path):
            problems.append(f"{rel}: link leaves the bundle")
        elif not path.exists() and not path.is_symlink():
            problems.append(f"{rel}: missing")
        elif not path.is_file():
            problems.append(f"{rel}: not a regular file (a FIFO, device or folder)")
        elif path.stat().st_size != meta.get("size"):
            problems.append(f"{rel}: size {path.stat().st_size}, manifest says {meta.get('size')}")
        elif sha256_file(path) != meta.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest (damaged or edited)")
        elif rel.startswith("scripts/") and rel.endswith(".sh") and not os.access(path, os.X_OK):
            problems.append(f"{rel}: not executable")
    for path in sorted(bundle.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(bundle).as_posix()
        parts = rel.split("/")
        if rel == "manifest.json" or rel in listed or parts[0] == DEVICE_DIR or "__pycache__" in parts:
            continue
        problems.append(f"{rel}: not listed in the manifest")
    for rel in manifest_paths(manifest):
        if unsafe_path(rel) or rel not in listed:
            problems.append(f"{rel}: referenced by the manifest but not in its file list")
    precisions = [str(a.get("precision")) for a in manifest.get("artifacts", []) if isinstance(a, dict)]
    if manifest.get("primary_precision") not in precisions:  # verify.sh and benchmark.sh default to it
        problems.append(
            f"manifest.json: primary_precision {manifest.get('primary_precision')!r} names no artifact "
            f"(its artifacts: {', '.join(precisions) or 'none'})"
        )
    return problems


# ---------------------------------------------------------------- device


def _root() -> Path:
    return Path(os.environ.get("EDGEDEPLOY_ROOT", "/"))


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode(errors="replace").strip()
    except OSError:
        return None


def parse_l4t(text: str) -> Optional[str]:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` -> ``36.4.3``."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def jetpack_for_l4t(l4t: Optional[str]) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(JetPack, CUDA, the listed L4T they are read from) for L4T ``36.4.7``: its own row of
    :data:`L4T_TABLE`, else that of the nearest listed patch release of its major.minor (36.4.4; the
    lower of two as near), else (None, None, None): another major.minor may ship another CUDA."""
    if not l4t:
        return None, None, None
    if l4t in L4T_TABLE:
        jetpack, cuda = L4T_TABLE[l4t]
        return jetpack, cuda, l4t
    parts = l4t.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None, None, None
    same = [k for k in L4T_TABLE if k.split(".")[:2] == parts[:2]]
    if not same:
        return None, None, None
    patch = int(parts[2])
    nearest = min(same, key=lambda k: (abs(int(k.split(".")[2]) - patch), int(k.split(".")[2])))
    jetpack, cuda = L4T_TABLE[nearest]
    return jetpack, cuda, nearest


def l4t_words(dev: Dict[str, Any]) -> str:
    """``L4T 36.4.3``, or for a release read as another listed one ``L4T 36.4.7, not listed: read as
    36.4.4``."""
    l4t, listed = dev["l4t"], dev.get("l4t_listed")
    if listed and listed != l4t:
        return f"L4T {l4t}, not listed: read as {listed}"
    return f"L4T {l4t}"


def decode_trt_number(n: int) -> str:
    """trtexec's ``[TensorRT v8602]`` / ``v100300`` -> ``8.6.2`` / ``10.3.0``."""
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def _trt_from_header(root: Path) -> Optional[str]:
    for folder in ("usr/include/aarch64-linux-gnu", "usr/include/x86_64-linux-gnu", "usr/include"):
        text = _read(root / folder / "NvInferVersion.h")
        if not text:
            continue
        parts = {}
        for key in ("MAJOR", "MINOR", "PATCH"):
            m = re.search(rf"#define\s+(?:NV_TENSORRT|TRT)_{key}(?:_ENTERPRISE)?\s+(\d+)", text)
            if m:
                parts[key] = m.group(1)
        if len(parts) == 3:
            return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"
    return None


def _output(argv: List[str], timeout: float = 60) -> str:
    """A command's stdout, "" when it cannot run or takes longer than ``timeout`` seconds (stdout=PIPE
    and universal_newlines: capture_output and text= came with Python 3.7)."""
    try:
        res = subprocess.run(  # noqa: UP022 (capture_output: 3.7)
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,  # noqa: UP021 (text=: 3.7)
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return str(res.stdout)


NVPMODEL_CONF = "etc/nvpmodel.conf"  # what nvpmodel reads unless given -f


def parse_power_models(text: str) -> Dict[str, str]:
    """nvpmodel.conf's ``< POWER_MODEL ID=3 NAME=7W >`` lines -> {"7W": "3"}, in the file's order."""
    modes: Dict[str, str] = {}
    for block in re.finditer(r"<\s*POWER_MODEL\b([^>]*)>", text):
        fields = dict(re.findall(r"(\w+)\s*=\s*([^\s>]+)", block.group(1)))
        if fields.get("ID", "").isdigit() and fields.get("NAME"):
            modes.setdefault(fields["NAME"], fields["ID"])
    return modes


def _trt_from_trtexec(trtexec: Optional[str]) -> Optional[str]:
    if not trtexec:
        return None
    out = _output([trtexec, "--help"])
    m = re.search(r"\[TensorRT v(\d+)\]", out)
    return decode_trt_number(int(m.group(1))) if m else None


def _trt_from_system() -> Optional[str]:
    try:
        import tensorrt  # type: ignore[import-not-found]  # JetPack's system package

        return str(tensorrt.__version__)
    except ImportError:
        pass
    if shutil.which("dpkg-query"):
        for pkg in ("libnvinfer-bin", "tensorrt", "libnvinfer10", "libnvinfer8"):
            m = re.match(r"(\d+\.\d+\.\d+)", _output(["dpkg-query", "-W", "-f=${Version}", pkg]))
            if m:
                return m.group(1)
    return None


def _cuda(root: Path) -> Optional[str]:
    text = _read(root / "usr/local/cuda/version.json")
    if text:
        try:
            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            pass
    text = _read(root / "usr/local/cuda/version.txt")
    m = re.search(r"CUDA Version (\d+\.\d+(?:\.\d+)?)", text or "")
    if m:
        return m.group(1)
    if root == Path("/"):
        nvcc = shutil.which("nvcc") or (
            "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None
        )
        if nvcc:
            m = re.search(r"release (\d+\.\d+)", _output([nvcc, "--version"]))
            if m:
                return m.group(1)
    return None


# A Jetson module's GPU compute capability, by a word of its device-tree model (the targets'
# device_tree_model; docs/tensorrt-facts.md, "Jetson modules and GPUs"), first match wins. Thor's is
# 11.0 from CUDA 13 on, 10.1 before.
JETSON_COMPUTE_CAPABILITY = (
    ("thor", "11.0"),
    ("orin", "8.7"),
    ("xavier", "7.2"),
    ("jetson-agx", "7.2"),  # AGX Xavier's model
    ("tx2", "6.2"),
    ("quill", "6.2"),  # TX2's model
    ("nano", "5.3"),
    ("tx1", "5.3"),
)


def board_compute_capability(board: Optional[str], cuda: Optional[str]) -> Optional[str]:
    """The compute capability of a Jetson board's GPU (None for a model not in the table)."""
    text = (board or "").lower()
    for word, cc in JETSON_COMPUTE_CAPABILITY:
        if word in text:
            if word == "thor" and cuda and int(cuda.split(".")[0]) < 13:
                return "10.1"
            return cc
    return None


NVIDIA_SMI_GPU = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]


def nvidia_smi_gpu() -> Tuple[Optional[str], Optional[str]]:
    """(name, compute capability) of the first GPU nvidia-smi lists; None for what it does not say
    (no driver, or a driver before compute_cap: docs/tensorrt-facts.md, trtexec)."""
    if not shutil.which(NVIDIA_SMI_GPU[0]):
        return None, None
    first = (_output(NVIDIA_SMI_GPU, timeout=30).splitlines() or [""])[0]
    m = re.match(r"^\s*(.+?)\s*,\s*(\d+\.\d+)\s*(?:,|$)", first)
    return (m.group(1), m.group(2)) if m else (None, None)


def detect_gpu(dev: Dict[str, Any]) -> Dict[str, Any]:
    """``dev`` with this device's GPU: ``gpu_name`` and ``compute_capability``, the board's on a Jetson,
    nvidia-smi's elsewhere; None where neither says."""
    cc = board_compute_capability(dev["board"], dev["cuda"])
    name = None
    if cc is None:
        name, cc = nvidia_smi_gpu()
    return dict(dev, gpu_name=name, compute_capability=cc)


def gpu_from_log(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(name, compute capability) trtexec printed in its device information ("Selected Device: NAME",
    "Compute Capability: X.Y"; docs/tensorrt-facts.md, trtexec)."""
    name = re.search(r"\bSelected Device: *(\S[^\r\n]*?) *$", text, flags=re.M)
    cc = re.search(r"\bCompute Capability: *(\d+\.\d+) *$", text, flags=re.M)
    return (name.group(1) if name else None), (cc.group(1) if cc else None)


def detect_device(trtexec: Optional[str], gpu: bool = False) -> Dict[str, Any]:
    """The board, L4T/JetPack, CUDA and TensorRT here; with ``gpu``, its GPU too (:func:`detect_gpu`,
    which may run nvidia-smi)."""
    root = _root()
    model = _read(root / "proc/device-tree/model") or _read(root / "sys/firmware/devicetree/base/model")
    release = _read(root / "etc/nv_tegra_release")
    l4t = parse_l4t(release) if release else None
    jetpack, cuda_expected, listed = jetpack_for_l4t(l4t)
    trt = (
        _trt_from_header(root)
        or (_trt_from_system() if root == Path("/") else None)
        or _trt_from_trtexec(trtexec)
    )
    dev = {
        "board": model,
        "l4t": l4t,
        "l4t_listed": listed,
        "jetpack": jetpack,
        "cuda": _cuda(root),
        "cuda_for_jetpack": cuda_expected,
        "tensorrt": trt,
        "trtexec": trtexec,
    }
    return detect_gpu(dev) if gpu else dev


def _board_key(name: str) -> str:
    text = name.lower()
    for noise in ("nvidia", "engineering reference", "developer kit", "super", "module"):
        text = text.replace(noise, " ")
    return " ".join(text.split())


def board_matches(expected: Optional[str], actual: Optional[str]) -> bool:
    if not expected or not actual:
        return False
    return _board_key(expected) in _board_key(actual)


def version_matches(expected: str, actual: str) -> bool:
    return actual == expected or actual.startswith(expected + ".") or expected.startswith(actual + ".")


def expected_tensorrt(manifest: Dict[str, Any]) -> List[str]:
    built = (manifest.get("tools") or {}).get("tensorrt")
    return [built] if built else list(manifest["target"].get("tensorrt") or [])


def device_report(
    manifest: Dict[str, Any], dev: Dict[str, Any], strict: bool = False
) -> Tuple[List[str], List[str], List[str]]:
    """(ok lines, differences, fatal mismatches) between the bundle's target and this device.

    A desktop target's GPU of another compute capability is a difference (the engine is built here
    for this GPU, and times as this GPU does), a mismatch with ``strict``."""
    target = manifest["target"]
    ok: List[str] = []
    differs: List[str] = []
    fatal: List[str] = []
    if target.get("kind") == "jetson":
        want = target.get("device_tree_model")
        if dev["board"] is None:
            fatal.append(
                f"board: not a Jetson (no device-tree model); the bundle is for {target['name']} ({want})"
            )
        elif board_matches(want, dev["board"]):
            ok.append(f"board: {dev['board']} (target {target['name']})")
        else:
            fatal.append(f"board: this is '{dev['board']}', the bundle is for {target['name']} ('{want}')")
        jetpacks = list(target.get("jetpack") or [])
        if dev["jetpack"] is None:
            differs.append(
                f"JetPack: unknown (L4T {dev['l4t'] or 'not found'}); expected {', '.join(jetpacks)}"
            )
        elif any(version_matches(j, dev["jetpack"].split()[0]) for j in jetpacks):
            ok.append(f"JetPack: {dev['jetpack']} ({l4t_words(dev)})")
        else:
            differs.append(f"JetPack: {dev['jetpack']} ({l4t_words(dev)}), expected {', '.join(jetpacks)}")
        if dev["cuda"] and dev["cuda_for_jetpack"]:
            if version_matches(dev["cuda_for_jetpack"], ".".join(dev["cuda"].split(".")[:2])):
                ok.append(f"CUDA: {dev['cuda']}")
            else:
                differs.append(
                    f"CUDA: {dev['cuda']}, JetPack {dev['jetpack']} ships {dev['cuda_for_jetpack']}"
                )
        elif not dev["cuda"]:
            differs.append("CUDA: not found (/usr/local/cuda)")
    else:
        ok.append(f"target {target['name']} is a {target.get('kind')} target: board checks skipped")
    if target.get("kind") == "desktop":
        want_cc, cc = target.get("compute_capability"), dev.get("compute_capability")
        gpu = f"{dev.get('gpu_name') or 'GPU'} (compute capability {cc})"
        if cc is None:
            differs.append(
                f"GPU: not found (nvidia-smi --query-gpu=name,compute_cap); the bundle is for "
                f"{target['name']} (compute capability {want_cc})"
            )
        elif cc == want_cc:
            ok.append(f"GPU: {gpu}, target {target['name']}")
        else:
            (fatal if strict else differs).append(
                f"GPU: this is {gpu}, the bundle is for {target['name']} (compute capability {want_cc}): "
                "engines are built here for this GPU, and its timings are not the target's"
            )
    if target.get("kind") in ("jetson", "desktop"):
        want_trt = expected_tensorrt(manifest)
        if dev["tensorrt"] is None:
            differs.append(f"TensorRT: not found; expected {', '.join(want_trt)}")
        elif any(version_matches(v, dev["tensorrt"]) for v in want_trt):
            ok.append(f"TensorRT: {dev['tensorrt']}")
        else:
            differs.append(
                f"TensorRT: {dev['tensorrt']}, expected {', '.join(want_trt)} "
                "(engines must be rebuilt here: scripts/build_engine.sh)"
            )
    return ok, differs, fatal


# ---------------------------------------------------------------- artifacts and engines


def artifact(manifest: Dict[str, Any], precision: Optional[str]) -> Dict[str, Any]:
    precision = precision or manifest.get("primary_precision")
    for art in manifest["artifacts"]:
        if art["precision"] == precision:
            for key in ARTIFACT_PATHS:
                rel = art.get(key)
                if rel and (unsafe_path(rel) or rel not in manifest["files"]):
                    raise BundleProblem(f"the {precision} {key} path {rel!r} is not a file of this bundle")
            return dict(art)
    have = ", ".join(a["precision"] for a in manifest["artifacts"])
    raise BundleProblem(f"no {precision} artifact in this bundle (it has: {have})")


def device_engine_path(bundle: Path, art: Dict[str, Any]) -> Path:
    """Where the device builds the engine of an artifact's model: its name without .onnx in any
    case (M.ONNX -> M.engine), a copy of edgedeploy/onnxio.py's onnx_stem (the device cannot
    import edgedeploy; tests/device/test_bundle_defects.py checks the two agree)."""
    name = Path(art["model"]).name
    stem = name[: -len(".onnx")] if name.lower().endswith(".onnx") else name
    return bundle / DEVICE_DIR / "engines" / f"{stem}.engine"


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def trt_minor(version: str) -> Tuple[int, int]:
    major, minor = ([*version.split("."), "0"])[:2]
    return int(major), int(minor)


def build_settings(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """How the bundle's engines were built (``manifest["build"]``): profiles and TF32; {} if unrecorded."""
    settings = manifest.get("build")
    return settings if isinstance(settings, dict) else {}


def fp32_layers(bundle: Path, art: Dict[str, Any]) -> List[str]:
    """Node names the precision plan keeps in fp32 (the layers edgedeploy pins on TensorRT 8.x)."""
    if not art.get("precision_plan"):
        return []
    try:
        data = json.loads((bundle / art["precision_plan"]).read_text())
    except (OSError, ValueError):
        raise BundleProblem(f"cannot read the precision plan {art['precision_plan']}") from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("fp32_nodes", "keep_fp32", "nodes") if k in data), [])
    names = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            if item.get("precision", "fp32") == "fp32":
                names.append(str(item.get("node", item.get("name"))))
        else:
            names.append(str(item))
    return sorted(set(names))


def build_flags(
    manifest: Dict[str, Any],
    art: Dict[str, Any],
    trt: str,
    workspace_mb: Optional[int],
    layers_fp32: Optional[List[str]] = None,
) -> List[str]:
    """trtexec flags that build what ``edgedeploy build`` builds, for this TensorRT version.

    Same rules as edgedeploy's trt_plan: strongly typed from 10 (precision is in the graph); on 8.x
    the FP16 flag beside INT8 (as edgedeploy sets both) and the precision plan's fp32 layers pinned
    with --precisionConstraints=obey --layerPrecisions/--layerOutputTypes; TF32 stays at trtexec's
    default unless the bundle was built with it cleared (--noTF32). Flag names per trtexec release:
    docs/tensorrt-facts.md and tests/data/trtexec-flags.json. trtexec before 8.4 has no
    --layerPrecisions/--layerOutputTypes: there the fp32 layers are not pinned, and one line on
    stderr says so (verify.sh's gate then checks the accuracy).
    """
    flags: List[str] = []
    precision = art["precision"]
    target = manifest["target"]
    if trt_major(trt) >= 10:
        flags.append("--stronglyTyped")  # precision is in the ONNX graph (fp16 casts, Q/DQ)
    elif precision in ("fp16", "int8"):
        if "fp16" in (target.get("precisions") or ["fp16"]):
            flags.append("--fp16")
        if precision == "int8":
            flags.append("--int8")
            # a Q/DQ model quantizes from its own scales: no cache, as edgedeploy build (trt_plan)
            if art.get("calibration_cache") and not art.get("qdq"):
                flags.append(f"--calib={manifest_path_placeholder(art['calibration_cache'])}")
        layers = [n for n in layers_fp32 or [] if n]
        if layers and trt_minor(trt) < TRTEXEC_LAYER_PRECISIONS:
            print(
                f"warning: trtexec {trt} cannot keep the {len(layers)} fp32 layer(s) of the precision plan "
                "in fp32 (--layerPrecisions came with TensorRT 8.4), so the engine may run them in fp16; "
                "scripts/verify.sh's gate checks the accuracy",
                file=sys.stderr,
            )
        elif layers:
            unsafe = [n for n in layers if re.search(r"[,:]", n)]
            if unsafe:
                raise BundleProblem(
                    f"fp32 layer name(s) {', '.join(unsafe)} hold ',' or ':', which trtexec's "
                    "--layerPrecisions cannot carry: build with edgedeploy (scripts/build_engine.sh --tool "
                    "edgedeploy)"
                )
            flags += [
                "--precisionConstraints=obey",
                "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in layers),
                "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in layers),
            ]
    if build_settings(manifest).get("tf32") is False:
        flags.append("--noTF32")
    ws = workspace_mb or target.get("default_workspace_mb") or 0
    if target.get("max_workspace_mb"):
        ws = min(ws, int(target["max_workspace_mb"]))
    if ws:
        flags.append(f"--memPoolSize=workspace:{ws}M" if trt_minor(trt) >= (8, 4) else f"--workspace={ws}")
    return flags


# --layerPrecisions and --layerOutputTypes: in trtexec from 8.4.1 on, not at 8.2.1 (docs/tensorrt-facts.md)
TRTEXEC_LAYER_PRECISIONS = (8, 4)


def manifest_path_placeholder(rel: str) -> str:
    return "{bundle}/" + rel


def shape_text(shape: List[Any], rank_known: bool = True) -> str:
    """A shape as edgedeploy's lines and the bundle README show it, ``[N, 3, H, ?]`` (a dim with
    neither size nor name is ``?``; ``[...]``: no rank known): calibration.modelinfo.shape_text with
    ", " between the dims, which the board cannot import."""
    if not rank_known:
        return "[...]"
    return "[" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in shape) + "]"


def _dynamic_axes(spec: Dict[str, Any]) -> List[int]:
    return [i for i, d in enumerate(spec["shape"]) if not (isinstance(d, int) and d > 0)]


def _is_named(dim: Any) -> bool:
    return isinstance(dim, str) and dim not in ("", "?")


def batch_axes(inputs: List[Dict[str, Any]]) -> Dict[str, List[int]]:
    """Per input, the axes that carry the batch: a dynamic dim 0, and every axis named as the batch
    (silero-vad's ``state[2, batch, 128]`` beside ``input[batch, sequence]``: axis 1). A copy of
    edgedeploy's rule (calibration.modelinfo.batch_names and batch_axes), tested against it: the
    names of the inputs' dim 0; where none is named and their fixed dim 0s differ (a time-first
    GRU's ``x[12, N, 8]`` and ``h0[1, N, 16]``), the one name every input carries."""
    shapes = [list(spec["shape"]) for spec in inputs]
    names = {shape[0] for shape in shapes if shape and _is_named(shape[0])}
    ranked = [shape for shape in shapes if shape]
    if not names and len(ranked) >= 2 and len({repr(shape[0]) for shape in ranked}) >= 2:
        shared = set.intersection(*({d for d in shape if _is_named(d)} for shape in ranked))
        names = shared if len(shared) == 1 else set()
    return {
        spec["name"]: [
            axis
            for axis, dim in enumerate(spec["shape"])
            if (axis == 0 and not isinstance(dim, int)) or (_is_named(dim) and dim in names)
        ]
        for spec in inputs
    }


def input_profiles(manifest: Dict[str, Any], batch: Optional[int]) -> Optional[List[Profile]]:
    """min/opt/max per dynamic input (a static one has none), per shape profile, for trtexec; None when
    every input is static.

    The bundle's recorded profiles (``build.profiles``) win, as edgedeploy built them; a ``batch``
    beyond their max widens the batch axis of the profile reaching furthest. Without a recorded
    profile only a dynamic batch axis (axis 0) can be filled in (1..batch); any other dynamic dim
    (height, width, sequence) has no size to guess, and the build is refused with what to do.
    """
    inputs = manifest["io"]["inputs"]
    if not any(_dynamic_axes(spec) for spec in inputs):
        return None
    batched = batch_axes(inputs)
    recorded = build_settings(manifest).get("profiles") or []
    if recorded:
        profiles = []
        for index, table in enumerate(recorded):
            profile: Profile = {}
            for spec in inputs:
                entry = table.get(spec["name"])
                if entry is None:
                    if _dynamic_axes(spec):
                        raise BundleProblem(
                            f"the bundle's profile {index} has no shape range for input '{spec['name']}'"
                        )
                    continue  # a static input has no range (a scalar's would be an empty dims list)
                profile[spec["name"]] = [list(entry[k]) for k in ("min", "opt", "max")]
            profiles.append(profile)
        if batch:  # only an explicit --max-batch beyond the profiles widens one, on every batch axis
            reach = [max([p[n][2][a] for n, axes in batched.items() for a in axes] or [0]) for p in profiles]
            widest = profiles[reach.index(max(reach))]
            for name, axes in batched.items():
                for axis in axes:
                    widest[name][2][axis] = max(widest[name][2][axis], batch)
        return profiles
    profile = {}
    for spec in inputs:
        if not _dynamic_axes(spec):
            continue
        axes = batched[spec["name"]]
        if set(_dynamic_axes(spec)) - set(axes):
            dims = shape_text(spec["shape"], spec.get("rank_known") is not False)
            raise BundleProblem(
                f"input '{spec['name']}' has dynamic dims {dims} besides the batch and the bundle "
                "records no shape profile for them: rebuild the bundle with --profile NAME:MIN,OPT,MAX"
            )
        lo, hi = list(spec["shape"]), list(spec["shape"])
        for axis in axes:
            lo[axis], hi[axis] = 1, batch or 1
        profile[spec["name"]] = [lo, hi, hi]
    return [profile]


def input_profile(manifest: Dict[str, Any], batch: Optional[int]) -> Optional[Profile]:
    """The first of :func:`input_profiles` (the one trtexec runs unless told --useProfile)."""
    profiles = input_profiles(manifest, batch)
    return profiles[0] if profiles else None


def _io_shapes(manifest: Dict[str, Any], batch: int) -> Optional[Dict[str, List[int]]]:
    """Run shapes: each input's profile OPT shape with its batch axis set to ``batch``; None when static."""
    profile = input_profile(manifest, batch)
    if profile is None:
        return None
    return _shapes_in(manifest, profile, batch)


def _shapes_in(manifest: Dict[str, Any], profile: Profile, batch: int) -> Dict[str, List[int]]:
    """Each input's OPT shape in ``profile`` with ``batch`` on every batch axis (:func:`batch_axes`); a
    static input, which has no range in a profile, its own shape (a scalar's ``[]`` is trtexec's
    ``sr:``)."""
    batched = batch_axes(manifest["io"]["inputs"])
    shapes = {}
    for spec in manifest["io"]["inputs"]:
        if spec["name"] not in profile:
            shapes[spec["name"]] = list(spec["shape"])
            continue
        opt = list(profile[spec["name"]][1])
        for axis in batched[spec["name"]]:
            opt[axis] = batch
        shapes[spec["name"]] = opt
    return shapes


def engine_profiles(
    bundle: Path, manifest: Dict[str, Any], engine: Optional[Path]
) -> Optional[List[Profile]]:
    """The shape profiles an engine was built with: its sidecar's (what was really built), else the
    bundle's (as build_engine.sh builds them); None when every input is static."""
    if engine is not None:
        try:
            meta = json.loads(engine.with_name(engine.name + ".json").read_text())
            recorded = meta["plan"]["profiles"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        if isinstance(recorded, list) and recorded and all(isinstance(p, dict) for p in recorded):
            return [{name: [list(r[0]), list(r[1]), list(r[2])] for name, r in p.items()} for p in recorded]
    return input_profiles(manifest, _max_batch(bundle, manifest, None))


# --profile=N and --useProfile=N: from v9.1.0, not in v8.6.1 (docs/tensorrt-facts.md, "trtexec")
TRTEXEC_PROFILES = (9, 0)


def batch_run(
    manifest: Dict[str, Any],
    profiles: Optional[List[Profile]],
    batch: Optional[int],
    trt: Optional[str],
) -> Tuple[int, List[str]]:
    """The batch a timed run uses (``batch``, or a default that fits) and its trtexec flags
    (``--shapes`` and, past the first profile, ``--useProfile``); a batch no profile takes is
    refused in one line before anything runs.

    ``trt``: the trtexec release that runs it ("" when unknown), or None for ``edgedeploy
    profile``, which runs each batch in the first profile that takes it (its runtime selects it:
    edgedeploy/backends/runtime/engine.py), so it needs no --useProfile and no release."""
    inputs = manifest["io"]["inputs"]
    batched = {name: axes for name, axes in batch_axes(inputs).items() if axes}
    if profiles is None or not batched:
        fixed = {int(s["shape"][0]) for s in inputs if s["shape"] and isinstance(s["shape"][0], int)}
        if batch is not None and fixed and fixed != {batch}:
            raise BundleProblem(
                f"--batch {batch}: the engine's inputs have a fixed batch of "
                f"{', '.join(map(str, sorted(fixed)))}"
            )
        return (batch or (min(fixed) if fixed else 1)), []

    def takes(profile: Profile, size: int) -> bool:
        return all(
            profile[name][0][axis] <= size <= profile[name][2][axis]
            for name, axes in batched.items()
            for axis in axes
        )

    first, axes = next(iter(batched.items()))  # the batch's range, as an input's batch axis reads it
    if batch is None:
        batch = 1 if any(takes(p, 1) for p in profiles) else profiles[0][first][1][axes[0]]
    index = next((i for i, p in enumerate(profiles) if takes(p, batch)), None)
    if index is None:
        lowest = min(p[first][0][axes[0]] for p in profiles)
        if batch > max(p[first][2][axes[0]] for p in profiles):  # --max-batch widens the furthest one
            advice = f", or rebuild with scripts/build_engine.sh --max-batch {batch} --force"
        elif batch < lowest:  # build_engine.sh has no option that lowers a profile's min
            advice = (
                f"; the bundle's profile starts at batch {lowest}, which the engine cannot go below: a "
                "smaller batch needs a bundle made with another --profile"
            )
        else:  # between two profiles: --max-batch widens the one reaching furthest, not this gap
            advice = "; a bundle made with another --profile can take it"
        raise BundleProblem(
            f"--batch {batch} is outside the engine's shape profile (batch "
            f"{batch_ranges(manifest, profiles)}): choose a batch in range{advice}"
        )
    flags = [f"--shapes={shape_spec(_shapes_in(manifest, profiles[index], batch))}"]
    if index > 0 and trt is not None:
        if trt and trt_minor(trt) < TRTEXEC_PROFILES:  # "": release unknown, trtexec itself decides
            raise BundleProblem(
                f"--batch {batch} lies in the engine's profile {index}, and trtexec {trt} runs profile 0 "
                "only (--useProfile came with TensorRT 9)"
            )
        flags.append(f"--useProfile={index}")
    return batch, flags


def batch_ranges(manifest: Dict[str, Any], profiles: List[Profile]) -> str:
    """The batch range of each profile, ``1..4 or 8..16``, as the first batched input's axis reads it."""
    batched = [
        (n, axes) for n, axes in batch_axes(manifest["io"]["inputs"]).items() if axes and n in profiles[0]
    ]
    if not batched:
        return "fixed"
    name, axes = batched[0]
    return " or ".join(f"{p[name][0][axes[0]]}..{p[name][2][axes[0]]}" for p in profiles)


def shape_spec(shapes: Dict[str, List[int]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def reference_path(bundle: Path, manifest: Dict[str, Any], key: str) -> Optional[Path]:
    """The reference file ``key`` (inputs, outputs), refused when it is not a file of this bundle."""
    rel = (manifest.get("reference") or {}).get(key)
    if not rel:
        return None
    if unsafe_path(rel) or rel not in manifest["files"]:
        raise BundleProblem(f"reference {key} path {rel!r} is not a file of this bundle")
    return bundle / rel


def npz_batch(path: Path) -> int:
    """The batch of reference inputs: dim 0 of the file's first array (1 for a scalar)."""
    import numpy as np

    with np.load(str(path)) as data:
        first = data[data.files[0]]
        return int(first.shape[0]) if first.ndim else 1


def engine_key(bundle: Path, art: Dict[str, Any], dev: Dict[str, Any], flags: List[str]) -> Dict[str, Any]:
    return {
        "model": art["model"],
        "model_sha256": sha256_file(bundle / art["model"]),
        "precision": art["precision"],
        "tensorrt": dev["tensorrt"],
        "board": dev["board"],
        "flags": flags,
    }


def usable_engine(
    bundle: Path, manifest: Dict[str, Any], art: Dict[str, Any], dev: Dict[str, Any]
) -> Tuple[Optional[Path], str]:
    """The engine to run on this device and why, or None and why none fits."""
    if art["backend"] != "tensorrt" and not art.get("engine") and manifest["target"].get("kind") == "cpu":
        return None, "this artifact runs on ONNX Runtime: no engine needed"
    built = device_engine_path(bundle, art)
    sidecar = built.with_name(built.name + ".json")
    if built.is_file() and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            meta = {}
        if (
            meta.get("model_sha256") == sha256_file(bundle / art["model"])
            and meta.get("tensorrt") == dev["tensorrt"]
            and meta.get("board") == dev["board"]
            and not cc_differs(meta.get("compute_capability"), dev)
            and meta.get("engine_sha256") == sha256_file(built)
        ):
            return built, f"engine built on this device: {built.relative_to(bundle)}"
    target = manifest["target"]
    if art.get("engine") and dev["tensorrt"] and cc_differs(target.get("compute_capability"), dev):
        return None, (
            f"the bundled engine {art['engine']} is for compute capability {target.get('compute_capability')}"
            f" ({target['name']}), this GPU has {dev['compute_capability']}: no engine for this device"
        )
    if art.get("engine") and dev["tensorrt"]:
        same_trt = any(
            version_matches(v, dev["tensorrt"])
            for v in expected_tensorrt(manifest)
            if (manifest.get("tools") or {}).get("tensorrt")
        )
        same_board = target.get("kind") != "jetson" or board_matches(
            target.get("device_tree_model"), dev["board"]
        )
        if same_trt and same_board:
            why = f"bundled engine {art['engine']} matches TensorRT {dev['tensorrt']}"
            return bundle / art["engine"], why
    trt, board = dev["tensorrt"] or "not found", dev["board"] or "unknown"
    cc = dev.get("compute_capability") or "unknown"
    why = f"no engine for this device (TensorRT {trt}, board {board}, compute capability {cc})"
    return None, why


def cc_differs(recorded: Optional[str], dev: Dict[str, Any]) -> bool:
    """An engine recorded for a compute capability (or for an unknown one) other than this device's GPU's;
    False when this device's is unknown (nothing to compare with)."""
    here = dev.get("compute_capability")
    return bool(here) and recorded != here


# ---------------------------------------------------------------- commands


def cmd_get(bundle: Path, args: argparse.Namespace) -> int:
    value: Any = load_manifest(bundle)
    for key in args.key.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            value = None
            break
    if isinstance(value, (dict, list)):
        print(json.dumps(value) if isinstance(value, dict) else "\n".join(str(v) for v in value))
    elif value is not None:
        print(value)
    return EXIT_OK


def cmd_check_files(bundle: Path, args: argparse.Namespace) -> int:
    manifest = load_manifest(bundle)
    problems = check_files(bundle, manifest)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    if problems:
        print(f"error: bundle damaged: {len(problems)} problem(s) above", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    print(f"files: {len(manifest['files'])} match their sha256 in manifest.json")
    return EXIT_OK


def cmd_check_device(bundle: Path, args: argparse.Namespace) -> int:
    manifest = load_manifest(bundle)
    dev = detect_device(args.trtexec, gpu=True)
    ok, differs, fatal = device_report(manifest, dev, strict=args.strict)
    for line in ok:
        print(f"  ok       {line}")
    for line in differs:
        print(f"  differs  {line}")
    for line in fatal:
        print(f"  MISMATCH {line}")
    if args.json:
        atomic_write(
            Path(args.json),
            json.dumps({"device": dev, "ok": ok, "differs": differs, "mismatch": fatal}, indent=2) + "\n",
        )
    if fatal:
        print("error: this bundle was made for another device", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    if differs and args.strict:
        print("error: versions differ from what the bundle expects (--strict)", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    return EXIT_OK


def cmd_power_mode_id(bundle: Path, args: argparse.Namespace) -> int:
    """Prints "ID board" or "ID profile": nvpmodel's id for power mode NAME. IDs differ per JetPack
    release and board (an Orin Nano's 7W is 1 on JetPack 6.0/6.1 and 3 on a 6.2 Super board, whose 1 is
    25W) while NVIDIA keeps the names, so the board's nvpmodel.conf decides; the target profile's id
    is used only where that file cannot be read (docs/tensorrt-facts.md, "tegrastats, nvpmodel")."""
    name = args.name
    conf = _read(_root() / NVPMODEL_CONF)
    board = parse_power_models(conf) if conf else {}
    if board:
        if name not in board:
            die(f"power mode '{name}' is not one of this board's (/{NVPMODEL_CONF}: {', '.join(board)})")
        print(f"{board[name]} board")
        return EXIT_OK
    profile = load_manifest(bundle)["target"].get("power_modes") or {}
    if name not in profile:
        die(f"power mode '{name}' is not in the target profile (modes: {', '.join(profile) or 'none'})")
    print(f"{int(profile[name])} profile")
    return EXIT_OK


def cmd_engine(bundle: Path, args: argparse.Namespace) -> int:
    manifest = load_manifest(bundle)
    art = artifact(manifest, args.precision)
    dev = detect_device(args.trtexec, gpu=True)
    engine, why = usable_engine(bundle, manifest, art, dev)
    if engine is None:
        print(why, file=sys.stderr)
        return EXIT_NO_ENGINE
    print(engine)
    print(why, file=sys.stderr)
    return EXIT_OK


def cmd_build_args(bundle: Path, args: argparse.Namespace) -> int:
    """One trtexec argument per line (after the output path and the timing cache)."""
    manifest = load_manifest(bundle)
    art = artifact(manifest, args.precision)
    dev = detect_device(args.trtexec)
    if not dev["tensorrt"]:
        die("TensorRT not found on this device (no NvInferVersion.h, python tensorrt, dpkg entry or trtexec)")
    layers = fp32_layers(bundle, art) if art["precision"] != "fp32" else []
    flags = [
        f.replace("{bundle}", str(bundle))
        for f in build_flags(manifest, art, dev["tensorrt"], args.workspace_mb, layers)
    ]
    if any(f.startswith("--calib=") for f in flags):
        check_cache_header(bundle, manifest, art, dev["tensorrt"])
    argv = [f"--onnx={bundle / art['model']}", *flags]
    argv += shape_flags(
        input_profiles(manifest, _max_batch(bundle, manifest, args.max_batch)), dev["tensorrt"]
    )
    print("\n".join(argv))
    return EXIT_OK


def cache_code(trt: str) -> int:
    """The number in a calibration cache header: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    major, minor, patch = (int(p) for p in [*trt.split("."), "0", "0"][:3])
    return major * 1000 + minor * 100 + patch if major < 10 else major * 10000 + minor * 100 + patch


def check_cache_header(bundle: Path, manifest: Dict[str, Any], art: Dict[str, Any], trt: str) -> None:
    """Refuse a calibration cache whose ``TRT-<code>-<Algorithm>`` header is for another TensorRT
    than this device's: TensorRT ignores such a cache, and trtexec, which then has no calibration
    data, fails the build without naming the cache (docs/tensorrt-facts.md, trtexec).

    The rule of edgedeploy's trt_plan.check_cache_header and TrtVersion.cache_code
    (edgedeploy/backends/), copied here: the device has no edgedeploy to import. Keep them equal.
    """
    rel = art["calibration_cache"]
    try:
        with open(bundle / rel, errors="replace") as fh:
            first = fh.readline().strip()
    except OSError:
        raise BundleProblem(f"cannot read the calibration cache {rel}") from None
    match = re.match(r"^TRT-(\d+)-(\w+)$", first)
    if not match:
        raise BundleProblem(f"{rel} is not a TensorRT calibration cache (first line '{first[:40]}')")
    if int(match.group(1)) != cache_code(trt):
        fp32 = next((a["model"] for a in manifest["artifacts"] if a.get("precision") == "fp32"), "MODEL.onnx")
        raise BundleProblem(
            f"calibration cache {rel} is for TensorRT {decode_trt_number(int(match.group(1)))} "
            f"(header {first}), this device has TensorRT {trt} (code {cache_code(trt)}), which would ignore "
            f"it: calibrate again on the workstation for this version (`edgedeploy calibrate "
            f"{Path(fp32).name} --data DATA --target {manifest['target']['name']} --trt-version {trt} "
            "-o DIR`, "
            f'or trt_version = "{trt}" in the run config\'s [calibration]) and bundle again'
        )


def shape_flags(profiles: Optional[List[Profile]], trt: str) -> List[str]:
    """trtexec's build flags for the shape profiles.

    One profile: --minShapes/--optShapes/--maxShapes, on every release. Several: from TensorRT 9 each
    profile is ``--profile=N`` followed right after by its three shape flags (trtexec pairs them by
    position); trtexec 8.x has no --profile and refuses a repeated shape flag, so a bundle with more
    than one profile is refused there in one line (see docs/tensorrt-facts.md, trtexec).
    """
    if not profiles:
        return []

    def three(profile: Profile) -> List[str]:
        return [
            f"--{which}Shapes={shape_spec({n: r[i] for n, r in profile.items()})}"
            for i, which in enumerate(("min", "opt", "max"))
        ]

    if len(profiles) == 1:
        return three(profiles[0])
    if trt_minor(trt) < TRTEXEC_PROFILES:
        raise BundleProblem(
            f"this bundle has {len(profiles)} shape profiles and trtexec {trt} builds one (--profile came "
            "with TensorRT 9): build with scripts/build_engine.sh --tool edgedeploy (TensorRT's python "
            "bindings)"
        )
    return [flag for i, p in enumerate(profiles) for flag in (f"--profile={i}", *three(p))]


def _max_batch(bundle: Path, manifest: Dict[str, Any], asked: Optional[int]) -> Optional[int]:
    """--max-batch, else the reference batch when no profile was recorded (the profile rules otherwise).

    A recorded profile is only widened (:func:`input_profiles`): a --max-batch below its largest batch
    would be dropped without a word, so it is refused."""
    if build_settings(manifest).get("profiles"):
        profiles = input_profiles(manifest, None) or []
        batched = {n: axes for n, axes in batch_axes(manifest["io"]["inputs"]).items() if axes}
        largest = max([p[n][2][a] for p in profiles for n, axes in batched.items() for a in axes] or [0])
        if asked and asked < largest:
            raise BundleProblem(
                f"--max-batch {asked}: the bundle's shape profile takes batch "
                f"{batch_ranges(manifest, profiles)}, and --max-batch only widens it past its largest "
                "batch: leave --max-batch out, or make the bundle with another --profile"
            )
        return asked
    return asked or default_max_batch(manifest, reference_path(bundle, manifest, "inputs"))


def default_max_batch(manifest: Dict[str, Any], reference: Optional[Path]) -> Optional[int]:
    """The batch build_engine.sh widens the profile to without --max-batch: none where the bundle records
    its profiles (built as recorded), else the batch of the ``reference`` inputs (1 without them), as
    the profile of batch 1 to it (:func:`input_profiles`). The bundle's README shows that profile."""
    if build_settings(manifest).get("profiles"):
        return None
    return 1 if reference is None else npz_batch(reference)


def cmd_edgedeploy_args(bundle: Path, args: argparse.Namespace) -> int:
    """``edgedeploy build`` options equal to the trtexec flags: the profile(s) and TF32, one per line."""
    manifest = load_manifest(bundle)
    argv: List[str] = []
    profiles = input_profiles(manifest, _max_batch(bundle, manifest, args.max_batch))
    for profile in profiles or []:  # the profiles trtexec builds; an input named again starts the next
        for name, (lo, opt, hi) in profile.items():
            dims = ",".join("x".join(str(d) for d in shape) for shape in (lo, opt, hi))
            argv.append(f"--profile={name}:{dims}")
    if build_settings(manifest).get("tf32") is False:
        argv.append("--no-tf32")
    print("\n".join(argv))
    return EXIT_OK


def cmd_model(bundle: Path, args: argparse.Namespace) -> int:
    print(bundle / artifact(load_manifest(bundle), args.precision)["model"])
    return EXIT_OK


def cmd_engine_path(bundle: Path, args: argparse.Namespace) -> int:
    manifest = load_manifest(bundle)
    print(device_engine_path(bundle, artifact(manifest, args.precision)))
    return EXIT_OK


SIDECAR_FORMAT = "edgedeploy.engine/1"  # edgedeploy/backends/trt_sidecar.py reads this format
# an input record's "relative_to": its path is from the sidecar's own folder (trt_sidecar.RELATIVE_TO_SIDECAR)
RELATIVE_TO_SIDECAR = "sidecar"


def relative_record(path: Path, folder: Path) -> Dict[str, str]:
    """The ``path`` and ``relative_to`` of a sidecar's input record, for a sidecar in ``folder``: the
    path from there (both resolved first), so the record names the bundle's own file wherever the
    bundle folder is moved or copied. edgedeploy's trt_sidecar.relative_record, copied: the device
    has no edgedeploy to import (trt_sidecar.recorded_path reads what this writes)."""
    where = os.path.relpath(os.path.realpath(str(path)), os.path.realpath(str(folder)))
    return {"path": Path(where).as_posix(), "relative_to": RELATIVE_TO_SIDECAR}


def rebased_inputs(inputs: Any, written_in: Path, folder: Path) -> Any:
    """The input records of a sidecar written in ``written_in`` (``edgedeploy build``'s output folder),
    rewritten from ``folder``, where the sidecar goes: a path from the sidecar's folder named another
    file once moved (edgedeploy build writes one level below the engine's folder)."""
    if not isinstance(inputs, dict):
        return inputs
    rebased: Dict[str, Any] = {}
    for key, record in inputs.items():
        if isinstance(record, dict) and isinstance(record.get("path"), str) and record["path"]:
            relative = record.get("relative_to") == RELATIVE_TO_SIDECAR
            # a record without relative_to holds the path as the build was given it: from the working
            # directory, which build_engine.sh shares with edgedeploy build
            source = written_in / record["path"] if relative else Path(record["path"])
            record = {**record, **relative_record(source, folder)}
        rebased[key] = record
    return rebased


def bundle_placeholder(bundle: Path, text: str) -> str:
    """``text`` with the bundle's folder written ``{bundle}`` (build_flags' placeholder): flags and paths a
    sidecar records stay true when the bundle folder is moved or copied."""
    return text.replace(str(bundle) + os.sep, "{bundle}/")


def cmd_write_sidecar(bundle: Path, args: argparse.Namespace) -> int:
    """The engine's sidecar in edgedeploy's format (so `edgedeploy compare`/`profile` load the engine)
    plus this device's keys; ``--from`` merges the sidecar `edgedeploy build` wrote.

    The GPU is the one the engine was built on: the name and compute capability trtexec printed in
    the build log (``--log``), else this device's (:func:`detect_gpu`), else "unknown"; never the
    target's nominal one (an engine loads only on the compute capability it was built for)."""
    manifest = load_manifest(bundle)
    art = artifact(manifest, args.precision)
    dev = detect_device(args.trtexec, gpu=True)
    logged = gpu_from_log((_read(Path(args.log)) or "") if args.log else "")
    gpu_name = logged[0] or dev["gpu_name"]
    compute_capability = logged[1] or dev["compute_capability"] or "unknown"
    engine = Path(args.engine)
    flags = list(args.flags or [])
    target = manifest["target"]
    meta: Dict[str, Any] = {}
    if args.from_sidecar:
        try:
            meta = json.loads(Path(args.from_sidecar).read_text())
        except (OSError, ValueError):
            meta = {}
    if isinstance(meta, dict) and meta.get("format") == SIDECAR_FORMAT:
        # the sidecar goes beside the engine, not in edgedeploy build's folder: its paths are from there
        meta["inputs"] = rebased_inputs(meta.get("inputs"), Path(args.from_sidecar).parent, engine.parent)
        if isinstance(meta.get("timing_cache"), str):
            meta["timing_cache"] = bundle_placeholder(bundle, meta["timing_cache"])
    if meta.get("format") != SIDECAR_FORMAT:
        tf32 = "--noTF32" not in flags
        layers = fp32_layers(bundle, art) if art["precision"] != "fp32" else []
        shaped = any(f.startswith("--minShapes") for f in flags)
        profiles = (None if shaped else input_profiles(manifest, None)) or _profiles_from_flags(flags)
        meta = {
            "format": SIDECAR_FORMAT,
            "target": target["name"],
            "precision": art["precision"],
            "tensorrt": dev["tensorrt"],
            "gpu_name": gpu_name,
            "compute_capability": compute_capability,
            "cuda_driver": None,
            "jetson_model": dev["board"],
            "l4t_release": dev["l4t"],
            "plan": {
                "precision": art["precision"],
                "tensorrt": dev["tensorrt"],
                "strongly_typed": "--stronglyTyped" in flags,
                "tf32": tf32,
                "fp32_layers": layers,
                "profiles": profiles,
                "version_compatible": False,
                "hardware_compatibility": None,
            },
            "tf32": tf32,
            "dla_core": None,
            "version_compatible": False,
            "inputs": {
                "model": {
                    **relative_record(bundle / art["model"], engine.parent),
                    "sha256": sha256_file(bundle / art["model"]),
                }
            },
        }
    if not meta.get("compute_capability"):  # edgedeploy's sidecar records the GPU it built on
        meta.update(gpu_name=meta.get("gpu_name") or gpu_name, compute_capability=compute_capability)
    meta.update(engine_key(bundle, art, dev, [bundle_placeholder(bundle, f) for f in flags]))
    meta.update(engine_sha256=sha256_file(engine), tool=args.tool, target=target["name"])
    atomic_write(engine.with_name(engine.name + ".json"), json.dumps(meta, indent=2) + "\n")
    return EXIT_OK


def _profiles_from_flags(flags: List[str]) -> List[Profile]:
    """The profiles trtexec built, from its shape flags (each ``--profile=N`` starts the next one)."""
    groups: List[Dict[str, Dict[str, List[int]]]] = [{}]
    for flag in flags:
        key, _, value = flag.partition("=")
        if key == "--profile" and groups[-1]:
            groups.append({})
        if key not in ("--minShapes", "--optShapes", "--maxShapes"):
            continue
        for item in filter(None, value.split(",")):
            name, _, dims = item.rpartition(":")
            groups[-1].setdefault(name, {})[key[2:5]] = [int(d) for d in dims.split("x") if d]
    return [
        {name: [p["min"], p["opt"], p["max"]] for name, p in parts.items() if len(p) == 3}
        for parts in groups
        if parts
    ]


def input_dtypes(art: Dict[str, Any]) -> Dict[str, str]:
    """The inputs the artifact's model declares in another dtype than the bundle's io (the manifest's
    ``input_dtypes``: float16 for an fp16 model built without kept io types)."""
    table = art.get("input_dtypes") or {}
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise BundleProblem(f"the {art['precision']} artifact's input_dtypes is not a table of dtype names")
    return {str(k): v for k, v in table.items()}


def engine_input_dtype(dtype: str, trt: Optional[str]) -> str:
    """The dtype of the engine input TensorRT's ONNX parser makes of a model input of ``dtype``.

    The parser makes DOUBLE a float32 input on every release, and INT64 an int32 one before 10.0
    (DataType has no INT64 there; docs/tensorrt-facts.md, "Integer I/O"): trtexec reads
    --loadInputs files as those raw bytes. ``trt`` is
    the device's TensorRT; an int64 input, whose engine type depends on it, is refused when it is
    unknown (None).
    """
    if dtype == "float64":
        return "float32"
    if dtype == "int64":
        if trt is None:
            raise BundleProblem(
                "TensorRT version not found on this device: cannot tell whether trtexec takes int64 "
                "inputs as int64 (TensorRT 10 and later) or int32 (8.x)"
            )
        return "int64" if trt_major(trt) >= 10 else "int32"
    return dtype


def cmd_ref_inputs(bundle: Path, args: argparse.Namespace) -> int:
    """Write each reference input as raw binary for trtexec, in the dtype the engine takes (the
    precision's model's, as TensorRT's parser converts it: see :func:`engine_input_dtype`); print
    --loadInputs and --shapes values."""
    import numpy as np

    manifest = load_manifest(bundle)
    inputs = reference_path(bundle, manifest, "inputs")
    if inputs is None or reference_path(bundle, manifest, "outputs") is None:
        die("the bundle has no reference inputs/outputs: nothing to verify against")
    # trtexec reads each file as raw bytes of the engine's input type: float32 bytes for a float16
    # input would be twice its size, refused; int64 bytes for TensorRT 8.x's int32 input would be
    # read in part, as garbage
    dtypes = input_dtypes(artifact(manifest, args.precision)) if args.precision else {}
    device: Dict[str, Any] = {}

    def trt() -> Optional[str]:  # asked once, and only where an input or the profile needs it
        if not device:
            device.update(detect_device(args.trtexec))
        return device["tensorrt"]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs, shapes = [], {}
    with np.load(inputs) as data:
        for name in data.files:
            arr = data[name]  # not np.ascontiguousarray: it makes a scalar a [1] array (NumPy before 2.0)
            if name in dtypes:
                try:
                    arr = arr.astype(np.dtype(dtypes[name]))
                except TypeError:
                    raise BundleProblem(f"input '{name}': unknown dtype {dtypes[name]!r}") from None
            want = engine_input_dtype(arr.dtype.name, trt() if arr.dtype.name == "int64" else None)
            if want == "int32" and arr.dtype == np.int64 and arr.size:
                info = np.iinfo(np.int32)
                bad = arr[(arr < info.min) | (arr > info.max)]
                if bad.size:
                    raise BundleProblem(
                        f"input '{name}': value {int(bad.flat[0])} does not fit int32, which TensorRT "
                        f"{trt()} takes for an int64 input (int64 inputs came with TensorRT 10): trtexec "
                        "cannot feed these reference inputs here"
                    )
            arr = arr.astype(np.dtype(want), copy=False)
            path = out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.bin"
            arr.tofile(str(path))  # a Path only from NumPy 1.17; JetPack 4.6's python3-numpy is 1.13
            specs.append(f"{name}:{path}")
            shapes[name] = list(arr.shape)
    print(",".join(specs))
    print(shape_spec(shapes))
    if args.engine:  # the profile that takes the reference shapes (trtexec runs profile 0 unless told)
        profiles = engine_profiles(bundle, manifest, Path(args.engine)) or []
        index = next(
            (
                i
                for i, p in enumerate(profiles)
                if all(
                    name not in p or all(a <= d <= b for a, d, b in zip(p[name][0], dims, p[name][2]))
                    for name, dims in shapes.items()
                )
            ),
            None if profiles else 0,
        )
        if index is None:
            raise BundleProblem(
                f"the reference inputs {shape_spec(shapes)} lie outside every shape profile of the engine: "
                "rebuild it with scripts/build_engine.sh --force"
            )
        release = trt() if index > 0 else None
        if release and trt_minor(release) < TRTEXEC_PROFILES:
            raise BundleProblem(
                f"the reference inputs lie in the engine's profile {index}, and trtexec {release} runs "
                "profile 0 only"
            )
        print(f"--useProfile={index}" if index > 0 else "")
    return EXIT_OK


def run_flags(trt: str, *, cuda_graph: bool, data_transfers: bool, spin_wait: bool = True) -> List[str]:
    """trtexec flags that make a timed run what its JSON says, on this trtexec's defaults.

    trtexec 11 turned data transfers off, CUDA graphs on and spin wait on by default, and made
    --noDataTransfers/--useCudaGraph/--useSpinWait no-ops; before 11 the defaults are the opposite
    (docs/tensorrt-facts.md, "trtexec").
    """
    if trt_major(trt) >= 11:
        flags = [] if data_transfers is False else ["--includeDataTransfers"]
        flags += [] if cuda_graph else ["--noCudaGraph"]
        flags += [] if spin_wait else ["--noSpinWait"]
        return flags
    flags = ["--useCudaGraph"] if cuda_graph else []
    flags += [] if data_transfers else ["--noDataTransfers"]
    flags += ["--useSpinWait"] if spin_wait else []
    return flags


TRTEXEC_FLOAT_DURATION = (8, 4)  # --duration: int32 read with std::stoi at 8.2.1, a float from 8.4.1 on


def trtexec_duration(trt: str, seconds: str) -> str:
    """The --duration value this trtexec runs as asked: before 8.4 trtexec reads whole seconds
    (an int32, read with std::stoi, which cuts 2.5 to 2 and 0.2 to 0; docs/tensorrt-facts.md), so a
    fraction is rounded up and said on stderr; from 8.4.1 on, a float as given."""
    if trt_minor(trt) >= TRTEXEC_FLOAT_DURATION:
        return seconds
    whole = math.ceil(float(seconds))
    if whole != float(seconds):
        print(
            f"note: trtexec {trt} takes whole seconds: --duration {seconds} runs as {whole}", file=sys.stderr
        )
    return str(whole)


def cmd_run_flags(bundle: Path, args: argparse.Namespace) -> int:
    """The run flags for this trtexec, one per line (with ``--duration=S`` when given: the value
    trtexec runs, which benchmark.sh records)."""
    dev = detect_device(args.trtexec)
    if not dev["tensorrt"]:
        die("TensorRT version not found on this device: cannot tell which trtexec defaults apply")
    flags = run_flags(
        dev["tensorrt"], cuda_graph=args.cuda_graph == 1, data_transfers=args.data_transfers == 1
    )
    if args.duration is not None:
        flags.append(f"--duration={trtexec_duration(dev['tensorrt'], args.duration)}")
    print("\n".join(flags))
    return EXIT_OK


def cmd_check_out(bundle: Path, args: argparse.Namespace) -> int:
    """benchmark.sh's ``--out``: refused when it would replace a file of the bundle (the manifest, or a
    file it lists: verify.sh would then fail on it), lie in the bundle outside device/ (an unlisted
    file fails verify.sh too), or replace an existing file that is not an earlier results JSON (of
    benchmark.sh, or of edgedeploy profile for --tool edgedeploy); ``--log``, trtexec's log beside
    it, replaces only the log of the results JSON ``--out`` replaces. A manifest that cannot be read
    lists no files here (the scripts' later steps name what is wrong with it)."""
    out, log = args.out, args.log
    root, real = os.path.realpath(str(bundle)), os.path.realpath(out)

    def refuse(why: str) -> NoReturn:
        die(f"--out {out} {why}")

    try:
        with open(os.path.join(root, "manifest.json"), encoding="utf-8") as fh:
            files = json.loads(fh.read()).get("files") or {}
    except (OSError, ValueError, AttributeError):
        files = {}
    listed = {os.path.realpath(os.path.join(root, name)) for name in ["manifest.json", *files]}
    if real in listed:
        name = os.path.relpath(real, root)
        listed_in = "" if name == "manifest.json" else " (listed in manifest.json)"
        refuse(f"is the bundle's {name}{listed_in}: give a file elsewhere, e.g. under device/results/")
    if os.path.isdir(real):
        refuse("is a folder: give the JSON file to write")
    rel = os.path.relpath(real, root).split(os.sep)
    if rel[0] != os.pardir and rel[0] != DEVICE_DIR:  # verify.sh would find a file the manifest does not list
        refuse(
            "lies inside the bundle, outside device/ (which its manifest would then not list): "
            "use device/results/ or a path outside the bundle"
        )
    if os.path.lexists(out) and not os.path.isfile(real):
        refuse("exists and is not a regular file")
    if os.path.isfile(real) and os.path.getsize(real) > 0:
        try:
            with open(real, encoding="utf-8") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            data = None
        if not (isinstance(data, dict) and ("latency_ms" in data or "batches" in data)):
            refuse("exists and is not a benchmark results JSON: give another file, or remove it first")
    earlier = os.path.isfile(real) and os.path.isfile(log) and os.path.realpath(log) not in listed
    if os.path.lexists(log) and not earlier:
        refuse(
            f"would put the trtexec log on {log}, which exists and is not the log of an earlier results "
            "JSON there: give another file, or remove it first"
        )
    return EXIT_OK


def cmd_settings(bundle: Path, args: argparse.Namespace) -> int:
    """The ``settings`` of benchmark.sh's results JSON (what ran, and how), as one JSON line."""
    settings = {
        "engine": args.engine,
        "precision": args.precision,
        "batch": args.batch,
        "warmup_ms": args.warmup_ms,
        "duration_s": args.duration,
        "cuda_graph": args.cuda_graph == 1,
        "data_transfers": args.data_transfers == 1,
        "spin_wait": True,
        "power_interval_ms": args.interval,
        "power_mode": args.power_mode or None,
        "command": list(args.command),
    }
    print(json.dumps(settings))
    return EXIT_OK


def _reference_shapes(path: Path) -> Dict[str, List[int]]:
    """The reference inputs' shapes, by name; {} without NumPy."""
    try:
        import numpy as np
    except ImportError:
        return {}
    with np.load(path) as data:
        return {name: list(data[name].shape) for name in data.files}


def cmd_profile_inputs(bundle: Path, args: argparse.Namespace) -> int:
    """The batch ``edgedeploy profile`` runs (first line: ``--batch``, else 1 where the model's batch
    is dynamic, else the batch the model fixes, which profile times a static model at), then its
    ``--input`` arguments, one per line, for the inputs whose dims
    beyond the batch are dynamic: their shapes in the reference inputs, at batch ``--batch`` (1 when
    not given) where the batch is dynamic (random data would feed such dims as 1: a 1x1 image).
    When no input needs one, ``--batch-sizes=N`` for an asked batch the model leaves dynamic.
    No argument when every other dim is fixed and no batch was asked, or the bundle has no reference
    inputs (or NumPy is missing: the suggestion goes without shapes). A batch the model fixes
    otherwise is refused (exit 2)."""
    manifest = load_manifest(bundle)
    inputs = manifest["io"]["inputs"]
    size = 1 if args.batch is None else args.batch
    if size < 1:
        raise BundleProblem(f"--batch {size}: a batch is 1 or more")
    # the batch's name (``batch`` of input[batch, T]) where another input names it too: silero-vad's
    # state[2, batch, 128] takes the batch there, which profile gives it from the other input's
    batched = batch_axes(inputs)
    dynamic_batch = any(batched.values())
    fixed = {s["shape"][0] for s in inputs if s["shape"] and isinstance(s["shape"][0], int)}
    if args.batch is not None and not dynamic_batch and fixed and fixed != {size}:
        raise BundleProblem(
            f"--batch {size}: the model's inputs have a fixed batch of {', '.join(map(str, sorted(fixed)))}"
        )
    wanted = {s["name"]: s for s in inputs if set(_dynamic_axes(s)) - set(batched[s["name"]])}
    path = reference_path(bundle, manifest, "inputs")
    lines = []
    for name, shape in (_reference_shapes(path) if wanted and path is not None else {}).items():
        if name in wanted:
            for axis in batched[name]:
                shape[axis] = size
            lines.append(f"--input={shape_spec({name: shape})}")
    if not lines and args.batch is not None and dynamic_batch:
        lines.append(f"--batch-sizes={size}")  # profile's batch is 1 unless told
    ran = size if args.batch is not None or dynamic_batch or not fixed else min(fixed)
    print("\n".join([str(ran), *lines]))
    return EXIT_OK


# What `edgedeploy build --backend tensorrt` and `edgedeploy profile` of an engine need from the
# interpreter edgedeploy runs on (edgedeploy/backends/trt_env.py, availability): the names of those
# checks in `edgedeploy doctor --json` (edgedeploy/pipeline/doctor.py)
EDGEDEPLOY_NEEDS = ("tensorrt", "pycuda", "gpu")


def cmd_edgedeploy_usable(bundle: Path, args: argparse.Namespace) -> int:
    """Whether the edgedeploy command here can build and run engines, from its own ``edgedeploy
    doctor --json`` report: TensorRT, pycuda and a GPU as edgedeploy's interpreter sees them (a venv
    may lack JetPack's system tensorrt, or the reverse). Prints ``yes``, or ``no: why``."""
    try:
        report = json.loads(Path(args.report).read_text())
        checks = {str(c["name"]): c for c in report if isinstance(c, dict) and "name" in c}
    except (OSError, ValueError, TypeError):
        print("no: edgedeploy doctor --json gave no report")
        return EXIT_OK
    missing = [
        f"{name}: {checks[name].get('detail') if name in checks else 'not checked'}"
        for name in EDGEDEPLOY_NEEDS
        if not (name in checks and checks[name].get("ok") is True)
    ]
    print(f"no: {'; '.join(missing)}" if missing else "yes")
    return EXIT_OK


def cmd_shapes(bundle: Path, args: argparse.Namespace) -> int:
    shapes = _io_shapes(load_manifest(bundle), args.batch)
    print(shape_spec(shapes) if shapes else "")
    return EXIT_OK


def cmd_run_shapes(bundle: Path, args: argparse.Namespace) -> int:
    """The batch of a timed run (first line) and trtexec's shape flags for it (one per line);
    exit 2 with one line when no profile of the engine takes that batch."""
    manifest = load_manifest(bundle)
    engine = Path(args.engine) if args.engine else None
    trt = None if args.runner == "edgedeploy" else detect_device(args.trtexec)["tensorrt"] or ""
    batch, flags = batch_run(manifest, engine_profiles(bundle, manifest, engine), args.batch, trt)
    print("\n".join([str(batch), *flags]))
    return EXIT_OK


def unexpected(bundle: Path, cmd: str, exc: BaseException) -> str:
    """The line for an error no check foresaw: a manifest that lacks what the scripts read (beyond
    :func:`_structure_problems`' checks) is one cause, a fault of this helper or of a file it read
    (reference data, a build log, the board's NumPy) another; it names the manifest only when the
    manifest fails those checks, else the subcommand and the error as they are."""
    try:
        load_manifest(bundle)
    except BundleProblem as problem:
        return f"manifest.json does not follow the bundle schema ({problem})"
    return (
        f"bundle_helper.py {cmd} failed: {type(exc).__name__}: {exc} (manifest.json has the structure "
        f"the scripts read; python3 {sys.version_info[0]}.{sys.version_info[1]}"
        f"{numpy_version()}): please report it with this line"
    )


def numpy_version() -> str:
    numpy = sys.modules.get("numpy")
    return f", NumPy {getattr(numpy, '__version__', '?')}" if numpy is not None else ""


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--trtexec", default=None, help="trtexec path (TensorRT version fallback)")
    sub = parser.add_subparsers(dest="cmd")
    sub.required = True  # add_subparsers(required=) came with Python 3.7
    p = sub.add_parser("get")
    p.add_argument("key")
    sub.add_parser("check-files")
    p = sub.add_parser("check-device")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--json")
    p = sub.add_parser("power-mode-id")
    p.add_argument("name")
    for name in ("engine", "build-args", "edgedeploy-args", "engine-path", "write-sidecar", "model"):
        p = sub.add_parser(name)
        p.add_argument("--precision")
        if name in ("build-args", "edgedeploy-args"):
            p.add_argument("--workspace-mb", type=int)
            p.add_argument("--max-batch", type=int)
        if name == "write-sidecar":
            p.add_argument("--engine", required=True)
            p.add_argument("--tool", default="trtexec")
            p.add_argument("--from", dest="from_sidecar", help="the sidecar edgedeploy build wrote")
            p.add_argument("--log", help="the build's log (trtexec prints the GPU it built on there)")
            p.add_argument("flags", nargs="*")
    p = sub.add_parser("ref-inputs")
    p.add_argument("--out", required=True)
    p.add_argument("--precision", help="write the inputs in the dtypes this precision's model takes")
    p.add_argument("--engine", help="also print the --useProfile flag the reference shapes need")
    p = sub.add_parser("shapes")
    p.add_argument("--batch", type=int, default=1)
    p = sub.add_parser("profile-inputs")
    p.add_argument("--batch", type=int, help="the batch the shapes take where it is dynamic (default 1)")
    p = sub.add_parser("run-shapes")
    p.add_argument("--engine")
    p.add_argument("--batch", type=int)
    p.add_argument("--runner", choices=("trtexec", "edgedeploy"), default="trtexec")
    p = sub.add_parser("edgedeploy-usable")
    p.add_argument("report", help="the JSON of `edgedeploy doctor --json`")
    p = sub.add_parser("run-flags")
    p.add_argument("--cuda-graph", type=int, choices=(0, 1), default=1)
    p.add_argument("--data-transfers", type=int, choices=(0, 1), default=1)
    p.add_argument("--duration", help="seconds to run (printed as the --duration this trtexec takes)")
    p = sub.add_parser("check-out")
    p.add_argument("--out", required=True, help="benchmark.sh's --out")
    p.add_argument("--log", required=True, help="the trtexec log benchmark.sh writes beside it")
    p = sub.add_parser("settings")
    p.add_argument("--engine", required=True)
    p.add_argument("--precision", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--warmup-ms", type=float, required=True)
    p.add_argument("--duration", type=float, required=True, help="the seconds trtexec ran")
    p.add_argument("--cuda-graph", type=int, choices=(0, 1), required=True)
    p.add_argument("--data-transfers", type=int, choices=(0, 1), required=True)
    p.add_argument("--interval", type=int, required=True, help="tegrastats' interval, ms")
    p.add_argument("--power-mode", default="", help="nvpmodel's mode name (empty: unknown)")
    p.add_argument("command", nargs="+", help="the trtexec command that ran (after --)")
    args = parser.parse_args(argv)
    commands = {
        "get": cmd_get,
        "check-files": cmd_check_files,
        "check-device": cmd_check_device,
        "power-mode-id": cmd_power_mode_id,
        "engine": cmd_engine,
        "model": cmd_model,
        "build-args": cmd_build_args,
        "edgedeploy-args": cmd_edgedeploy_args,
        "engine-path": cmd_engine_path,
        "write-sidecar": cmd_write_sidecar,
        "ref-inputs": cmd_ref_inputs,
        "shapes": cmd_shapes,
        "profile-inputs": cmd_profile_inputs,
        "run-shapes": cmd_run_shapes,
        "run-flags": cmd_run_flags,
        "edgedeploy-usable": cmd_edgedeploy_usable,
        "check-out": cmd_check_out,
        "settings": cmd_settings,
    }
    try:
        return commands[args.cmd](args.bundle.resolve(), args)
    except BundleProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ImportError as exc:  # a board without NumPy: say what to install, not a traceback
        print(
            f"error: python3 module {exc.name or exc} is needed here (apt install python3-numpy)",
            file=sys.stderr,
        )
    except UnicodeEncodeError as exc:  # Python 3.6 in the C/POSIX locale: ASCII file names only
        print(
            f"error: python3 {sys.version_info[0]}.{sys.version_info[1]} encodes file names and output "
            f"as {sys.getfilesystemencoding()} in this locale and this bundle's names are not ASCII: "
            f"run with a UTF-8 locale (e.g. LC_ALL=C.UTF-8) ({exc})",
            file=sys.stderr,
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        print(f"error: {unexpected(args.bundle.resolve(), args.cmd, exc)}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_BAD_BUNDLE


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: one line and exit 130, as edgedeploy (temporary files are gone)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
