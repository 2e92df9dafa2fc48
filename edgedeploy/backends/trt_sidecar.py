"""The JSON beside every engine: what it was built for, from what, and whether it may load here.

Engines stay byte-pure plans (trtexec reads them as they are); everything else lives in
``<stem>.engine.json``. An engine only runs on the TensorRT version and GPU it was built for
(unless built version- or hardware-compatible), and TensorRT's own refusal is a cryptic
deserialization error, so the runner compares the sidecar with this machine first and says
what differs and how to rebuild (docs/design.md, problem 1).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from calibration.errors import CalibrationError
from calibration.modelinfo import TensorSpec, model_io
from edgedeploy.backends.trt_plan import TrtVersion
from edgedeploy.errors import InputError
from edgedeploy.fileio import sha256_file
from edgedeploy.onnxio import is_onnx_path

SIDECAR_FORMAT = "edgedeploy.engine/1"
log = logging.getLogger(__name__)


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def layers_path(engine: Path) -> Path:
    return engine.with_name(engine.name.removesuffix(".engine") + ".layers.json")


def read_sidecar(engine: Path, *, check_engine: bool = True) -> dict[str, Any] | None:
    """``engine``'s sidecar, None where it has none. With ``check_engine``, a sidecar whose
    ``engine_sha256`` is not the engine's is another engine's (a device build killed between its
    two moves, an engine copied over another): it is ignored with a warning, as the device's
    up-to-date check ignores it (edgedeploy/device/bundle_helper.py rebuilds such an engine). A
    sidecar without ``engine_sha256`` (written before it was recorded) is believed."""
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"engine sidecar {path} is not JSON ({exc}); rebuild the engine") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise InputError(f"{path} is not an edgedeploy engine sidecar; rebuild the engine")
    recorded = data.get("engine_sha256")
    if check_engine and isinstance(recorded, str) and engine.is_file() and recorded != _engine_sha256(engine):
        key = (os.path.realpath(engine), recorded)
        if key not in _WARNED:
            _WARNED.add(key)
            log.warning(
                "%s is not %s's (its engine_sha256 is another engine's: a build killed before it "
                "finished, or an engine copied over): ignored, so nothing checks the engine was built "
                "for this TensorRT and GPU; rebuild the engine",
                path.name,
                engine.name,
            )
        return None
    return data


# an engine's sha256 by its real path, size and mtime: compare and profile read the sidecar a few
# times a run, and an engine can be hundreds of MB
_SHA256: dict[tuple[str, int, int], str] = {}
_WARNED: set[tuple[str, str]] = set()


def _engine_sha256(engine: Path) -> str:
    st = engine.stat()
    key = (os.path.realpath(engine), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(engine)
    return _SHA256[key]


# what "relative_to" says of an input record's path: from the sidecar's own folder. A record without
# it (a sidecar written before) holds the path as the build was given it: from the folder it ran in.
RELATIVE_TO_SIDECAR = "sidecar"


def relative_record(path: Path, sidecar: Path) -> dict[str, str]:
    """The ``path`` and ``relative_to`` of an input record: ``path`` as seen from ``sidecar``'s
    folder (both resolved first, so a symlinked folder on the way does not mislead ``..``)."""
    where = os.path.relpath(os.path.realpath(path), os.path.realpath(sidecar.parent))
    return {"path": Path(where).as_posix(), "relative_to": RELATIVE_TO_SIDECAR}


def recorded_path(engine: Path, record: object) -> Path | None:
    """The file an input record of ``engine``'s sidecar names: from the sidecar's folder where the
    record says so (:func:`relative_record`), else as written (an older sidecar: from the working
    directory, as it was read before); None where the record names none."""
    if not isinstance(record, dict):
        return None
    path = record.get("path")
    if not isinstance(path, str) or not path:
        return None
    if record.get("relative_to") == RELATIVE_TO_SIDECAR:
        return sidecar_path(engine).parent / path
    return Path(path)


def _model_candidates(engine: Path) -> Iterator[Path]:
    """Where the ONNX model an engine was built from may be: the sidecar's record
    (:func:`recorded_path`, then its name beside the engine), then the model of the engine's stem
    beside it (``build`` writes ``model.fp16.engine`` beside ``model.fp16.onnx``)."""
    try:
        recorded = ((read_sidecar(engine) or {}).get("inputs") or {}).get("model") or {}
    except InputError:
        recorded = {}
    path = recorded_path(engine, recorded)
    if path is not None:
        yield path
        yield engine.parent / path.name
    yield engine.with_suffix(".onnx")


def _manifest_inputs(engine: Path) -> Iterator[list[TensorSpec]]:
    """The inputs a bundle's manifest lists, for an engine in it (``engines/``, ``device/engines/``)."""
    for folder in list(engine.resolve().parents)[:3]:
        try:
            listed = json.loads((folder / "manifest.json").read_text())["io"]["inputs"]
            yield [
                TensorSpec(str(i["name"]), tuple(i["shape"]), str(i.get("dtype") or "float32"))
                for i in listed
                if isinstance(i.get("shape"), list)
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue


def engine_model_inputs(engine: Path, ranks: Mapping[str, int]) -> list[TensorSpec] | None:
    """The inputs, with their dim names, of the ONNX model ``engine`` was built from. TensorRT keeps
    no names (a dynamic dim reads -1), and only they say which axis of silero-vad's
    ``state[2, batch, 128]`` is the batch, or that ``a[N, T, 8]`` and ``b[N, T, 8]`` share T. Looked
    for in the model the sidecar records, the model beside the engine, then the manifest of a
    bundle holding it; taken where it has every input of the engine (``ranks``: name -> rank) at
    that rank, else None."""

    def fits(specs: list[TensorSpec]) -> bool:
        found = {s.name: len(s.shape) for s in specs if s.kind is None and s.rank_known}
        return all(found.get(name) == rank for name, rank in ranks.items())

    seen: set[Path] = set()
    for path in _model_candidates(engine):
        if path in seen or not is_onnx_path(path) or not path.is_file():
            continue
        seen.add(path)
        try:
            specs = model_io(path)[0]
        except (CalibrationError, OSError):
            continue
        if fits(specs):
            return specs
    return next((specs for specs in _manifest_inputs(engine) if fits(specs)), None)


# NVIDIA's "Version Compatibility" (TensorRT developer guide): a version-compatible plan (8.6 on) runs
# on later runtimes, "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10 runtimes" and
# "engines built with TensorRT 10 work with TensorRT 11"; never on an older runtime.
VERSION_COMPATIBLE_MAJORS = {(8, 8), (8, 9), (8, 10), (9, 9), (9, 10), (10, 10), (10, 11), (11, 11)}


def version_loads(built: TrtVersion, here: TrtVersion, version_compatible: bool) -> bool:
    if built == here:
        return True
    return (
        version_compatible
        and built >= TrtVersion(8, 6)
        and here > built
        and (built.major, here.major) in VERSION_COMPATIBLE_MAJORS
    )


def _cc(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def differences(built: dict[str, Any], here: dict[str, str | None]) -> list[str]:
    """What about this machine keeps the engine from loading (NVIDIA's rules); empty when it may load."""
    plan = built.get("plan", {})
    diffs: list[str] = []
    b_trt, h_trt = built.get("tensorrt"), here.get("tensorrt")
    if b_trt and h_trt:
        bv, hv = TrtVersion.parse(b_trt), TrtVersion.parse(h_trt)
        if not version_loads(bv, hv, bool(plan.get("version_compatible"))):
            diffs.append(f"TensorRT {b_trt} (here {h_trt})")
    b_cc, h_cc = built.get("compute_capability"), here.get("compute_capability")
    if b_cc and h_cc and b_cc != h_cc:
        # AMPERE_PLUS runs on any compute capability >= 8.0; SAME_COMPUTE_CAPABILITY and plain plans
        # only on the compute capability they were built for
        ampere_ok = plan.get("hardware_compatibility") == "AMPERE_PLUS" and _cc(h_cc) >= (8, 0)
        if not ampere_ok:
            diffs.append(f"compute capability {b_cc} (here {h_cc})")
    return diffs


def load_warnings(built: dict[str, Any], here: dict[str, str | None]) -> list[str]:
    """What loads but deserves a word: another GPU model of the same compute capability."""
    plan = built.get("plan", {})
    b_gpu, h_gpu = built.get("gpu_name"), here.get("gpu_name")
    same_cc = built.get("compute_capability") == here.get("compute_capability")
    if b_gpu and h_gpu and b_gpu != h_gpu and same_cc and not plan.get("hardware_compatibility"):
        # TensorRT loads it and logs "Using an engine plan file across different models of devices is
        # not recommended and is likely to affect performance or even cause errors."
        cc = here.get("compute_capability")
        return [
            f"engine built on {b_gpu}, running on {h_gpu} (same compute capability {cc}): "
            "TensorRT allows it but tactics were timed on the other GPU; rebuild here for best latency"
        ]
    return []


def check_loadable(engine: Path, built: dict[str, Any] | None, here: dict[str, str | None]) -> list[str]:
    """Refuse an engine this machine cannot load, in one line; return warnings for one it can."""
    if built is None:
        return []
    diffs = differences(built, here)
    if diffs:
        recorded = recorded_path(engine, (built.get("inputs") or {}).get("model"))
        source = os.path.normpath(recorded) if recorded is not None else "the ONNX model"
        target = built.get("target", "TARGET")
        raise InputError(
            f"{engine.name} was built for {', '.join(diffs)}: rebuild it on this machine with "
            f"`edgedeploy build {source} --backend tensorrt --target {target}`"
        )
    return load_warnings(built, here)
