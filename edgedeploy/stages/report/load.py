"""What a report is made from: a run workdir, a bundle (folder or .tar.gz) or ``--json`` files, read
into one :class:`RunData`.

Every reader here only reads: a bundle archive is unpacked with the bundle stage's safe extraction
into a temporary folder and checked against its manifest first. Each ``--json`` file is recognised
by the keys its command writes (build, compare, profile, analyze, calibrate, run, bundle); a file
of another kind is refused by name. Hand-written: these are our own formats.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.fileio import CACHE_DIR, scratch_dir, sha256_file
from edgedeploy.results import figure_from_json
from edgedeploy.stages.report import fields

PRECISION_ORDER = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 3, "fp8": 4, "int8": 5, "fp4": 6}
RUN_RECORD = "run.json"  # what `edgedeploy run` leaves in its workdir for the report
MATRIX_HTML = "matrix.html"  # what `edgedeploy matrix` leaves in its workdir (stages/report/matrix.py)
MATRIX_MARKDOWN = "matrix.md"
# where `edgedeploy matrix` keeps its finished cells in its workdir, with a record per bundle beside
# it (pipeline/matrix.py's STORE_DIR; a stage does not import it)
MATRIX_CACHE = CACHE_DIR
MATRIX_STORE = "matrix"
SIDECARS = {
    "ranges": ".ranges.json",  # fp16 range analysis (analyze --json writes the same form)
    "plan": ".plan.json",  # fp16 precision plan: per node precision and reason
    "calibration": ".calib.json",  # INT8 calibration report
    "budget": ".budget.json",  # accuracy-budget search
}
# The sidecars a bundle carries in models/ beside the precision plan (which has a manifest field)
REPORT_SIDECARS = tuple(suffix for kind, suffix in SIDECARS.items() if kind != "plan")


@dataclass
class PrecisionData:
    precision: str
    backend: str = "onnxruntime"
    size_bytes: int | None = None
    compare: dict[str, Any] | None = None  # CompareResult.summary() form
    profile: dict[str, Any] | None = None  # ProfileResult.summary() form
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunData:
    """Everything the report can show; each part is optional and drawn only where present."""

    sources: list[str]
    kind: str  # "run", "bundle" or "json"
    model: str | None = None
    target: str | None = None
    target_description: str | None = None
    tools: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    primary: str | None = None  # the bundle's default precision, when a bundle says so
    created: str | None = None
    precisions: list[PrecisionData] = field(default_factory=list)
    ranges: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    per_layer: list[dict[str, Any]] = field(default_factory=list)  # compare --per-layer results
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)  # precision -> budget search
    not_built: dict[str, str] = field(default_factory=dict)  # precision -> why (a missed accuracy budget)
    notes: list[str] = field(default_factory=list)
    # (host target, CPU) that profile's ONNX Runtime figures were measured on: the target of a
    # report of --json files when no build, calibrate or bundle file names one
    measured_on: tuple[str, str | None] | None = None

    def row(self, precision: str) -> PrecisionData:
        """The precision's entry, created (in precision order) when it is not there yet."""
        for row in self.precisions:
            if row.precision == precision:
                return row
        row = PrecisionData(precision)
        self.precisions.append(row)
        self.precisions.sort(key=lambda r: PRECISION_ORDER.get(r.precision, 99))
        return row


def precision_from_name(path: str) -> str | None:
    """``model.int8.onnx`` -> int8: the precision our stages put in every artifact name."""
    found = re.findall(r"\.(fp32|fp16|bf16|tf32|fp8|int8|fp4)(?=\.)", Path(path).name)
    return found[-1] if found else None


def _read_json(path: Path, kind: str | None) -> Any:
    """``path``'s content, with the fields the report uses checked against the spec of ``kind``
    (fields.SCHEMAS; None: a --json file, whose kind its keys tell). An object of the wrong form
    is refused here by file and field; other content is left to the caller to refuse."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    spec = fields.SCHEMAS.get(kind or json_kind(content) or "")
    if isinstance(content, dict) and spec is not None and (found := fields.problem(content, spec)):
        raise InputError(f"{path}: field {found}")
    return content


def _sidecar_kind(name: str) -> str | None:
    return next((kind for kind, suffix in SIDECARS.items() if name.endswith(suffix)), None)


def _add_sidecar(data: RunData, path: Path) -> None:
    kind = _sidecar_kind(path.name)
    if kind is None or not path.is_file():
        return
    content = _read_json(path, kind)
    if not isinstance(content, dict):
        return
    if kind == "ranges":
        data.ranges = content
    elif kind == "plan":
        data.plan = content
    elif kind == "calibration":
        data.calibration = content
    elif kind == "budget":
        data.budgets[str(content.get("precision") or precision_from_name(path.name) or "?")] = content


# ---------------------------------------------------------------- run workdir


def _from_run_record(record: dict[str, Any], data: RunData, base: Path | None) -> None:
    """A ``PipelineResult`` as JSON (``run --json``, or ``run.json`` in a workdir)."""
    data.model = record.get("model_name")
    data.target = record.get("target")
    data.tools = dict(record.get("tools") or {})
    data.gates = dict(record.get("gates") or {})
    for item in record.get("precisions") or []:
        _fill_row(data, item, item.get("info"), _resolve(item.get("model"), base))
        for name in item.get("files") or []:
            _add_sidecar(data, _resolve(name, base) or Path(name))
    for precision, missed in (record.get("not_built") or {}).items():  # a missed budget, its steps
        if not isinstance(missed, dict):
            continue
        data.not_built[str(precision)] = str(missed.get("reason") or "not built")
        steps = _resolve(missed.get("steps"), base)
        if steps is not None:
            _add_sidecar(data, steps)
    bundle = record.get("bundle") or {}
    manifest = Path(bundle["directory"]) / "manifest.json" if bundle.get("directory") else None
    if manifest is not None and manifest.is_file():
        info = _read_json(manifest, "bundle")
        if isinstance(info, dict):
            data.primary = info.get("primary_precision")
            data.tools = data.tools or dict(info.get("tools") or {})
            data.target_description = (info.get("target") or {}).get("description")


def _fill_row(data: RunData, entry: dict[str, Any], info: Any, model: Path | None) -> None:
    """One precision from a run record or a manifest entry (the same fields under both)."""
    row = data.row(str(entry.get("precision")))
    row.backend = entry.get("backend") or row.backend
    row.compare = entry.get("compare")
    row.profile = entry.get("profile")
    row.info = dict(info or {})
    if model is not None and model.is_file():
        row.size_bytes = model.stat().st_size


def _resolve(name: Any, base: Path | None) -> Path | None:
    if not isinstance(name, str) or not name:
        return None
    path = Path(name)
    return path if path.is_absolute() or base is None else base / path


def _matrix_advice(page: str | None, bundles: Sequence[str]) -> str:
    """What to report instead of a whole matrix: its own page, or one (model, target)'s bundle."""
    where = f"{page} shows every cell; " if page else ""
    if not bundles:
        return (
            f"{where}report one (model, target) with its bundle folder, <bundle output>/<model>/<target> "
            "(made with [bundle] enabled = true)"
        )
    more = f" (one of its {len(bundles)} bundles)" if len(bundles) > 1 else ""
    return f"{where}report one (model, target) with its bundle folder, which has its own report: " + (
        f"edgedeploy report {bundles[0]}{more}"
    )


def _matrix_bundles(workdir: Path) -> list[str]:
    """The bundle folders a matrix workdir's records name (``bundle-<model>-<target>.json``, written
    by pipeline/matrix.py's _bundle_one), those still there; best effort: [] when none reads."""
    found = []
    for record in sorted((workdir / MATRIX_CACHE).glob("bundle-*.json")):
        try:
            directory = json.loads(record.read_text(encoding="utf-8"))["result"]["directory"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
        if isinstance(directory, str) and (Path(directory) / "manifest.json").is_file():
            found.append(directory)
    return found


def is_matrix_workdir(path: Path) -> bool:
    """Whether ``path`` is the workdir of an ``edgedeploy matrix`` run (its cells' store, or its page)."""
    return (path / MATRIX_CACHE / MATRIX_STORE).is_dir() or (path / MATRIX_MARKDOWN).is_file()


def _no_stage_finished(cache: Path) -> bool:
    """Whether a run's cache folder holds no record of a finished stage (``<stage>.json``,
    pipeline/cache.py; a temporary ``.<name>.<pid>.*`` a writer stopped midway left is none).
    A folder that cannot be listed is not said to be empty."""
    try:
        return not any(p.suffix == ".json" and not p.name.startswith(".") for p in cache.iterdir())
    except OSError:
        return False


def _no_matrix_record(workdir: Path) -> bool:
    """Whether a matrix workdir holds neither its page nor a finished record in its store
    (``<key>/record.json``, pipeline/matrix.py's ArtifactStore: an export, a precision, a cell).
    A store that cannot be listed is not said to be empty."""
    if (workdir / MATRIX_MARKDOWN).is_file() or (workdir / MATRIX_HTML).is_file():
        return False
    try:
        entries = list((workdir / MATRIX_CACHE / MATRIX_STORE).iterdir())
    except OSError:
        return False
    return not any(not e.name.startswith(".") and (e / "record.json").is_file() for e in entries)


def _why_no_run_record(workdir: Path) -> str:
    """What a workdir without run.json is, and what to do: a matrix's (stopped before any of its work
    finished, or finished), a run's stopped before any stage finished or before its end, or none."""
    if is_matrix_workdir(workdir):
        if _no_matrix_record(workdir):
            # the store a matrix makes at its start (pipeline/matrix.py's run_matrix), and nothing in it
            return (
                f"{workdir} is an `edgedeploy matrix` workdir whose matrix stopped before any of its work "
                "finished (interrupted, or an error), so there is nothing to report yet; rerun `edgedeploy "
                "matrix CONFIG` with this workdir, then report one (model, target) with its bundle folder, "
                "or read its matrix.html"
            )
        page = workdir / MATRIX_HTML
        advice = _matrix_advice(str(page) if page.is_file() else None, _matrix_bundles(workdir))
        return f"{workdir} is an `edgedeploy matrix` workdir, not one run's: {advice}"
    if (workdir / CACHE_DIR).is_dir():  # stages' records, no run's
        if _no_stage_finished(workdir / CACHE_DIR):
            # the folder a run makes at its start (pipeline/run.py's _start), and no stage finished in it
            return (
                f"{workdir}: no {RUN_RECORD}: the `edgedeploy run` that made it stopped before any stage "
                "finished (interrupted, or an error), so there is nothing to report yet; rerun "
                "`edgedeploy run CONFIG` with this workdir to run its stages from the first"
            )
        return (
            f"{workdir}: no {RUN_RECORD}: the `edgedeploy run` that made it stopped before its end "
            "(interrupted, or an error); rerun `edgedeploy run CONFIG` to finish it "
            "(the finished stages are reused)"
        )
    return (
        f"{workdir}: no {RUN_RECORD} (not an `edgedeploy run` workdir, or made before reports existed; "
        "rerun edgedeploy run)"
    )


def load_workdir(workdir: Path) -> RunData:
    record_path = workdir / RUN_RECORD
    if not record_path.is_file():
        raise InputError(_why_no_run_record(workdir))
    record = _read_json(record_path, "run")
    if not isinstance(record, dict) or "precisions" not in record:
        raise InputError(f"{record_path}: not a run record")
    data = RunData(sources=[str(workdir)], kind="run", created=record.get("created"))
    _from_run_record(record, data, workdir)
    return data


# ---------------------------------------------------------------- bundle


def from_manifest(manifest: dict[str, Any], root: Path, source: str | None = None) -> RunData:
    """A bundle's manifest and the sidecars it carries (``root`` is the bundle folder)."""
    target = manifest.get("target") or {}
    data = RunData(
        sources=[source or str(root)],
        kind="bundle",
        model=(manifest.get("model") or {}).get("name"),
        target=target.get("name"),
        target_description=target.get("description"),
        tools=dict(manifest.get("tools") or {}),
        gates=dict(manifest.get("gates") or {}),
        primary=manifest.get("primary_precision"),
        created=manifest.get("created"),
    )
    for art in manifest.get("artifacts") or []:
        _fill_row(data, art, art.get("precision_info"), _resolve(art.get("model"), root))
    models = root / "models"
    if models.is_dir():
        for path in sorted(models.iterdir()):
            _add_sidecar(data, path)
    return data


def load_bundle(path: Path) -> RunData:
    """A bundle folder, or a .tar.gz unpacked safely into a temporary folder; both checked first."""
    from edgedeploy.stages.bundle.tools import check_dir, safe_extract

    if path.is_dir():
        return _checked_bundle(path, str(path), check_dir)
    with scratch_dir("report") as tmp:
        root = safe_extract(path, tmp)
        return _checked_bundle(root, str(path), check_dir)


def _checked_bundle(root: Path, source: str, check_dir: Any) -> RunData:
    check = check_dir(root)
    if not check.ok:
        raise InputError(f"bundle {source} is damaged: {'; '.join(check.problems[:3])}")
    manifest = _read_json(root / "manifest.json", "bundle")
    return from_manifest(manifest, root, source)


# ---------------------------------------------------------------- --json files


def json_kind(content: Any) -> str | None:
    """Which command wrote this ``--json`` content (None: not one we read)."""
    if not isinstance(content, dict):
        return None
    keys = set(content)
    if {"model_name", "precisions"} <= keys:
        return "run"
    if {"executor", "cells", "bundles"} <= keys:
        return "matrix"  # not one model's: refused
    if {"schema_version", "artifacts", "files"} <= keys:
        return "bundle"
    if {"compare", "per_layer"} <= keys:
        return "compare-per-layer"
    if {"reference", "candidate", "outputs", "passed"} <= keys:
        return "compare"
    if {"artifact", "backend", "settings", "batches"} <= keys:
        return "profile"
    if {"thresholds", "tensors", "summary"} <= keys:
        return "analyze"
    if {"artifact", "report"} <= keys and isinstance(content.get("report"), dict):
        return "calibrate"
    if {"precision", "build"} <= keys and isinstance(content.get("precision"), dict):
        return "build"
    return None


def _candidate_precision(content: dict[str, Any], path_key: str) -> str:
    """The precision of a compare's candidate or a profile's artifact: from its name as our stages
    write it, else from its content as compare and profile recorded it (``model.quant.onnx``)."""
    name = str(content.get(path_key) or "")
    found = precision_from_name(name) or content.get("candidate_precision") or content.get("precision")
    if found:
        return str(found)
    mode = str(content.get("mode") or "")
    return "fp16" if mode.startswith("fp16") else "candidate"


def _compare_summary(content: dict[str, Any]) -> dict[str, Any]:
    """A full CompareResult as JSON -> the summary form the manifest keeps."""
    outputs = content.get("outputs") or {}
    return {
        "passed": content.get("passed"),
        "mode": content.get("mode"),
        "iterations": content.get("iterations"),
        "outputs": {
            name: {
                # compare --json writes NaN/Inf figures as text: "NaN", "-Infinity" (null: identical)
                **{key: figure_from_json(m.get(key)) for key in fields.OUTPUT_FIGURES},
                "identical": m.get("identical"),
                "nan_inf": (m.get("nan_count") or 0) + (m.get("inf_count") or 0),
                "nonfinite_mismatches": m.get("nonfinite_mismatches"),
                "failures": m.get("failures") or [],
            }
            for name, m in outputs.items()
            if isinstance(m, dict)
        },
    }


def _profile_summary(content: dict[str, Any]) -> dict[str, Any]:
    """A full ProfileResult as JSON -> the summary form the pipeline keeps."""
    batches: dict[str, Any] = {}
    for b in content.get("batches") or []:
        lat = b.get("latency") or {}
        batches[str(b.get("batch_size"))] = {
            "median_ms": lat.get("median_ms"),
            "p90_ms": lat.get("p90_ms"),
            "p99_ms": lat.get("p99_ms"),
            "mean_ms": lat.get("mean_ms"),
            "cv_percent": lat.get("cv_percent"),
            "iterations": b.get("iterations"),
            "throughput_ips": b.get("throughput_ips"),
            "throughput_qps": b.get("throughput_qps"),
            "model_peak_rss_mb": b.get("model_peak_rss_mb"),
            "energy": b.get("energy"),
            "quantiles_ms": b.get("quantiles_ms"),
        }
    return {
        "backend": content.get("backend"),
        "settings": content.get("settings") or {},
        "batch_sizes": batches,
    }


RECORDED_TOOLS = ("onnxruntime", "tensorrt")  # the versions build (its info) and profile (settings) record


def _add_tools(data: RunData, recorded: Any) -> None:
    """The tool versions a build or profile ``--json`` file recorded, into the report's tools; files
    that disagree (made with two releases) show both, as "1.19.2 / 1.20.0"."""
    if not isinstance(recorded, dict):
        return
    for tool in RECORDED_TOOLS:
        version = recorded.get(tool)
        if not isinstance(version, str) or not version or version == "unknown":
            continue
        known = str(data.tools.get(tool) or "")
        if not known:
            data.tools[tool] = version
        elif version not in known.split(" / "):
            data.tools[tool] = f"{known} / {version}"


def _add_json(data: RunData, path: Path, content: Any) -> None:
    kind = json_kind(content)
    if kind is None:
        raise InputError(
            f"{path}: not a JSON file edgedeploy wrote with --json "
            "(report reads build, compare, profile, analyze, calibrate, run and bundle results)"
        )
    assert isinstance(content, dict)
    if kind == "matrix":
        bundles = content["bundles"] if isinstance(content["bundles"], dict) else {}
        page = content.get("report") if isinstance(content.get("report"), str) else None
        advice = _matrix_advice(page or f"{MATRIX_HTML} in its workdir", [str(b) for b in bundles.values()])
        raise InputError(f"{path} is an `edgedeploy matrix` result, not one model's report: {advice}")
    if kind == "run":
        _from_run_record(content, data, path.parent)
    elif kind == "bundle":
        bundle = from_manifest(content, path.parent)
        data.model, data.target = data.model or bundle.model, data.target or bundle.target
        data.tools, data.gates = data.tools or bundle.tools, data.gates or bundle.gates
        data.primary = data.primary or bundle.primary
        for row in bundle.precisions:
            merged = data.row(row.precision)
            merged.backend, merged.compare, merged.profile = row.backend, row.compare, row.profile
            merged.info = row.info or merged.info
    elif kind in ("compare", "compare-per-layer"):
        full = content["compare"] if kind == "compare-per-layer" else content
        row = data.row(_candidate_precision(full, "candidate"))
        row.compare = _compare_summary(full)
        data.gates = data.gates or dict(full.get("gates") or {})
        if kind == "compare-per-layer":
            layers = dict(content["per_layer"])
            layers.setdefault("precision", row.precision)
            data.per_layer.append(layers)
    elif kind == "profile":
        row = data.row(_candidate_precision(content, "artifact"))
        row.backend = str(content.get("backend") or row.backend)
        row.profile = _profile_summary(content)
        if isinstance(content.get("bytes"), int):  # recorded by profile (its artifact path may be relative)
            row.size_bytes = row.size_bytes or content["bytes"]
        settings = content.get("settings") or {}
        _add_tools(data, settings)
        if settings.get("host_target"):  # ONNX Runtime's figures: the CPU they were measured on
            data.measured_on = data.measured_on or (str(settings["host_target"]), settings.get("cpu"))
    elif kind == "analyze":
        data.ranges = content
    elif kind == "calibrate":
        data.calibration = content["report"]
        data.target = data.target or content.get("target")
    elif kind == "build":
        artifact = content["precision"]
        row = data.row(str(artifact.get("precision")))
        row.backend = str((content.get("build") or {}).get("backend") or row.backend)
        row.info = {**row.info, **(artifact.get("info") or {})}
        built = content.get("build") or {}
        _add_tools(data, built.get("info"))
        data.target = data.target or (built.get("info") or {}).get("target")
        named = Path(str(artifact.get("path") or "")).name.removesuffix(".onnx")
        data.model = data.model or named.removesuffix(f".{artifact.get('precision')}") or None
        model = _resolve(artifact.get("path"), path.parent)
        if artifact.get("bytes") is not None:  # recorded when it was built (its path may be relative)
            row.size_bytes = int(artifact["bytes"])
        elif model is not None and model.is_file():
            row.size_bytes = model.stat().st_size
        for name in artifact.get("files") or []:
            _add_sidecar(data, _resolve(name, path.parent) or Path(name))


# What an artifact's file name carries besides its model's name, stripped from its end: the extension
# of what the report reads (ONNX, TensorRT plans as backends/__init__.py's ENGINE_SUFFIXES name them),
# ONNX Runtime's saved form (``.ort``), the precision our stages write (``m.int8.onnx``) and the
# suffixes other tools put in the name (``m.quant.onnx``, ``m_int8.onnx``, ``m-opt.onnx``, ``m_sim.onnx``)
NAME_EXTENSIONS = (".onnx", ".engine", ".plan", ".trt")
TOOL_SUFFIXES = ("ort", "quant", "quantized", "qdq", "opt", "optimized", "sim", "simplified")
NAME_SUFFIXES = (*PRECISION_ORDER, *TOOL_SUFFIXES)
_NAME_SUFFIX = re.compile(rf"(.+)[._-](?:{'|'.join(NAME_SUFFIXES)})", re.IGNORECASE)


def model_base(path: str) -> str:
    """The model an artifact is of, by its file name: ``m`` for ``m.onnx``, ``out/m.fp16.ort.onnx``,
    ``m.quant.onnx``, ``m_int8.onnx`` and ``m.fp16.int8.engine``; ``det-v2`` is another model's name
    than ``det`` (only the suffixes above are taken off, not any part after a separator)."""
    name = Path(path).name
    extension = next((e for e in NAME_EXTENSIONS if name.lower().endswith(e)), "")
    name = name[: len(name) - len(extension)]
    while found := _NAME_SUFFIX.fullmatch(name):
        name = found.group(1)
    return name


def _run_models(content: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The precision models and built artifacts a run record names, with the sha256 their build
    recorded of each (info: source_sha256, artifact_sha256)."""
    named: list[tuple[Any, Any]] = []
    for item in content.get("precisions") or []:
        if isinstance(item, dict):
            info: dict[str, Any] = item["info"] if isinstance(item.get("info"), dict) else {}
            named += [(item.get("model"), info.get("source_sha256"))]
            named += [(item.get("artifact"), info.get("artifact_sha256"))]
    return named


def _bundle_models(content: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The models (and engines) a bundle manifest carries, with the sha256 their build recorded."""
    named: list[tuple[Any, Any]] = []
    for art in content.get("artifacts") or []:
        if isinstance(art, dict):
            recorded = art.get("precision_info")
            info: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
            named += [(art.get("model"), info.get("source_sha256"))]
            named += [(art.get("engine"), info.get("artifact_sha256"))]
    return named


def _recorded_models(content: Any) -> list[tuple[str, str | None]]:
    """The model files a ``--json`` file names, as the command recorded them: compare's reference and
    candidate, profile's artifact, the model analyze, calibrate or build read or wrote, the precision
    models and artifacts of a run record or a bundle; each with the sha256 compare and profile record
    of the files they measured and a run's or bundle's build of what it built (None from the others,
    and in files written before they recorded it)."""
    kind = json_kind(content)
    if kind == "compare-per-layer":
        content, kind = content.get("compare"), "compare"
    if not isinstance(content, dict):
        return []
    named = {
        "compare": lambda c: [
            (c.get("reference"), c.get("reference_sha256")),
            (c.get("candidate"), c.get("candidate_sha256")),
        ],
        "profile": lambda c: [(c.get("artifact"), c.get("sha256"))],
        "analyze": lambda c: [(c.get("model"), None)],
        "calibrate": lambda c: [((c.get("report") or {}).get("model"), None)],
        "build": lambda c: [((c.get("precision") or {}).get("path"), None)],
        "run": _run_models,
        "bundle": _bundle_models,
    }.get(kind or "", lambda _c: [])(content)
    return [(str(name), digest or None) for name, digest in named if isinstance(name, str) and name]


def _model_of(content: Any) -> str | None:
    """The model a ``--json`` file is about, as :func:`model_base` names it (``ocr-cls`` for
    ``ocr-cls.fp16.ort.onnx``); None when the file does not say."""
    names = _recorded_models(content)
    return model_base(names[0][0]) if names else None


def _other_content(a: str, b: str, a_sha256: str | None = None, b_sha256: str | None = None) -> bool:
    """Whether two recorded paths of one file name are files of different content: two models (or
    two versions of one) whose figures a report would put side by side. The sha256 a command
    recorded is of the file it measured and decides when both have one; else paths are as the
    commands recorded them, relative to where they ran, and a file not found here says nothing.
    Sizes first, so a model is hashed only when another of its size is there."""
    if a_sha256 and b_sha256:
        return a_sha256 != b_sha256
    first, second = Path(a), Path(b)
    try:
        if a == b or not first.is_file() or not second.is_file() or first.samefile(second):
            return False
        if known := a_sha256 or b_sha256:  # one recorded: the other file's content here against it
            return sha256_file(second if a_sha256 else first) != known
        if first.stat().st_size != second.stat().st_size:
            return True
        return sha256_file(first) != sha256_file(second)
    except OSError:  # unreadable here: the names alone decide
        return False


# The --json kinds a report holds one of (RunData.calibration, RunData.ranges): a second would
# silently replace the first
SINGLE_KINDS = {
    "calibrate": "INT8 calibration reports (calibrate --json)",
    "analyze": "fp16 range analyses (analyze --json)",
}


def load_json_files(paths: Sequence[Path]) -> RunData:
    data = RunData(sources=[str(p) for p in paths], kind="json")
    about: dict[str, Path] = {}  # model -> the first file about it
    # a model file's name -> (its recorded path, its recorded sha256, the file naming it)
    files: dict[str, tuple[str, str | None, Path]] = {}
    digests: dict[str, str] = {}  # a recorded sha256 -> the model of the first file that recorded it
    # (kind, precision) -> the file that gave them, its kind and what a compare of it holds
    figures: dict[tuple[str, str], tuple[Path, str | None, str | None]] = {}
    single: dict[str, Path] = {}  # calibrate, analyze -> the file that gave the report's only one
    for path in paths:
        content = _read_json(path, None)
        recorded_files = _recorded_models(content)
        if (model := _model_of(content)) is not None:
            # a file another one recorded by content is of that one's model, whatever its name
            model = next((digests[d] for _, d in recorded_files if d and d in digests), model)
            for other, where in about.items():
                if other != model:  # one model's artifacts reduce to one name (model_base)
                    raise InputError(
                        f"{path} is about {model}, {where} about {other}: a report is of one model"
                    )
            about.setdefault(model, path)
            digests.update((d, model) for _, d in recorded_files if d and d not in digests)
        for recorded, digest in recorded_files:
            named, named_digest, where = files.setdefault(Path(recorded).name, (recorded, digest, path))
            if _other_content(recorded, named, digest, named_digest):
                raise InputError(
                    f"{path} is about {recorded}, {where} about {named}: two files named "
                    f"{Path(recorded).name} with other content are two models; a report is of one model"
                )
        kind = json_kind(content)
        held = _compare_held(content)
        for figure, precision in _figures_given(content):
            earlier, earlier_kind, earlier_held = figures.setdefault((figure, precision), (path, kind, held))
            if earlier != path and not _one_compare(figure, {kind, earlier_kind}, held, earlier_held):
                if {kind, earlier_kind} & {"run", "bundle"}:
                    why = "a run record or bundle carries its precisions' figures; pass it alone"
                elif {kind, earlier_kind} == {"compare", "compare-per-layer"}:
                    why = (
                        "a compare --per-layer file's output table is its compare; beside a plain "
                        "compare it must hold the same figures: pass the two of one compare run, or one"
                    )
                else:
                    why = "are they of two models?"
                raise InputError(
                    f"{path} and {earlier} both give {precision}'s {figure} figures: a report shows one "
                    f"per precision ({why})"
                )
        if kind in SINGLE_KINDS and (earlier := single.setdefault(kind, path)) != path:
            raise InputError(
                f"{path} and {earlier} are both {SINGLE_KINDS[kind]}: a report shows one "
                "(pass the one behind the model you report)"
            )
        _add_json(data, path, content)
    if data.model is None:
        data.model = next(iter(_model_names(data)), None) or next(iter(about), None)
    if data.target is None and data.measured_on is not None:  # no build, calibrate or bundle said it
        data.target, data.target_description = data.measured_on
    return data


def _figures_given(content: Any) -> list[tuple[str, str]]:
    """(kind, precision) of the profile, compare and per-layer figures a ``--json`` file gives: a
    profile's or a compare's one, a ``compare --per-layer`` file's compare (its output table) and
    per-layer ones, and every precision's of a run record or bundle that has them."""
    kind = json_kind(content)
    if not isinstance(content, dict):
        return []
    if kind in ("profile", "compare"):
        return [(kind, _candidate_precision(content, "artifact" if kind == "profile" else "candidate"))]
    if kind == "compare-per-layer":
        precision = _candidate_precision(content["compare"], "candidate")
        return [("per-layer", precision), ("compare", precision)]
    entries = content.get({"run": "precisions", "bundle": "artifacts"}.get(kind or "", ""))
    return [
        (figure, str(entry.get("precision")))
        for entry in entries or []
        if isinstance(entry, dict)
        for figure in ("profile", "compare")
        if entry.get(figure)
    ]


def _compare_held(content: Any) -> str | None:
    """What a compare or ``compare --per-layer`` file gives the page, as canonical JSON: its output
    table's summary (:func:`_compare_summary`, the figures as written), its gates and the sha256 of
    the candidate it measured; None for other files."""
    kind = json_kind(content)
    if kind not in ("compare", "compare-per-layer"):
        return None
    full = content["compare"] if kind == "compare-per-layer" else content
    outputs = full.get("outputs") or {}
    held = {
        "summary": {**_compare_summary(full), "outputs": outputs},  # figures as written ("NaN")
        "gates": full.get("gates"),
        "candidate_sha256": full.get("candidate_sha256"),
    }
    return json.dumps(held, sort_keys=True)


def _one_compare(figure: str, kinds: set[str | None], held: str | None, earlier_held: str | None) -> bool:
    """Whether a plain compare file and a ``compare --per-layer`` one of its precision are one source:
    the per-layer file's output table (its ``compare``) holds exactly the plain file's figures, gates
    and candidate, as when one compare run wrote both. The page then takes those figures and the
    per-layer view; other figures would be two compares of one precision, one silently dropped."""
    return figure == "compare" and kinds == {"compare", "compare-per-layer"} and held == earlier_held


def _model_names(data: RunData) -> Iterator[str]:
    """The model the calibration report or range analysis is of, named as the other files' (model_base)."""
    if data.calibration and data.calibration.get("model"):
        yield model_base(str(data.calibration["model"]))
    if data.ranges and data.ranges.get("model"):
        yield model_base(str(data.ranges["model"]))


# ---------------------------------------------------------------- entry


def load_run(paths: Sequence[Path]) -> RunData:
    """RUN: a run workdir, a bundle folder or archive, or one or more ``--json`` files."""
    if not paths:
        raise InputError("report needs RUN: a run workdir, a bundle (folder or .tar.gz) or --json files")
    if len(paths) == 1:
        path = paths[0]
        if path.is_dir():
            if (path / "manifest.json").is_file():
                return load_bundle(path)
            return load_workdir(path)
        if path.name.endswith((".tar.gz", ".tgz")):
            return load_bundle(path)
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:  # there, but a workdir or bundle is read alone
        raise InputError(
            f"{', '.join(folders)}: {'is a folder' if len(folders) == 1 else 'are folders'} among "
            f"{len(paths)} inputs: RUN is one workdir or one bundle alone, or JSON files written with --json"
        )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"not found or not a file: {', '.join(missing)}")
    not_json = [str(p) for p in paths if p.suffix != ".json"]
    if not_json:
        raise InputError(
            f"{', '.join(not_json)}: RUN is one workdir, one bundle, or JSON files written with --json"
        )
    return load_json_files(paths)
