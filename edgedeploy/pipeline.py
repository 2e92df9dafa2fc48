"""The whole pipeline from one config: export -> precision/build -> compare -> profile -> bundle.

Each stage's result is recorded under ``workdir/.edgedeploy-cache/`` with a key made of the
hashes of its inputs, its options and the tool versions. A rerun whose key matches, and whose
output files are still there, does no work and says so; an interrupted run resumes from the
last finished stage.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from calibration.modelinfo import model_io
from calibration.sources import open_source
from edgedeploy import __version__
from edgedeploy.backends import ShapeProfile
from edgedeploy.build import BuildRequest, CalibrationRequest, CalibrationSettings, build, precision_of_model
from edgedeploy.bundle import BundleArtifact, BundleResult, make_bundle, tool_versions
from edgedeploy.compare import Gates, compare, run_pair
from edgedeploy.config import PipelineConfig
from edgedeploy.export import (
    ExportOptions,
    InputShape,
    export,
    is_onnx_path,
    module_search_path,
    parse_model_spec,
)
from edgedeploy.fileio import atomic_write_json, sha256_file, sha256_json
from edgedeploy.precision.fp16 import Fp16Options
from edgedeploy.profile import ProfileOptions, profile
from edgedeploy.targets import Target, load_target
from edgedeploy.ui import QUIET, Ui

CACHE_DIR = ".edgedeploy-cache"
RUN_RECORD = "run.json"


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


@dataclass
class PrecisionOutcome:
    precision: str
    backend: str
    model: Path
    artifact: Path
    files: list[Path]
    info: dict[str, Any]
    compare: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None


@dataclass
class PipelineResult:
    model_name: str
    fp32: Path
    target: str
    precisions: list[PrecisionOutcome]
    bundle: dict[str, Any] | None
    stages_skipped: list[str] = field(default_factory=list)
    stages_run: list[str] = field(default_factory=list)
    tools: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return all(p.compare is None or p.compare.get("passed", False) for p in self.precisions)


def _source_fingerprint(source: str, base: Path) -> dict[str, Any]:
    """What identifies the model's source: the file's hash, or the module's file hash."""
    if is_onnx_path(source):
        path = Path(source) if Path(source).is_absolute() else base / source
        return {"onnx_sha256": sha256_file(path)} if path.is_file() else {"missing": str(path)}
    where = parse_model_spec(source)[0]
    path = Path(where) if Path(where).is_absolute() else base / where
    if path.suffix == ".py" and path.is_file():
        return {"spec": source, "file_sha256": sha256_file(path)}
    import importlib.util

    try:
        with module_search_path(base, Path.cwd()):
            spec = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        return {"spec": source, "file_sha256": sha256_file(spec.origin)}
    return {"spec": source}


def _resolve_source(config: PipelineConfig) -> str:
    source = config.model.source
    where = source if is_onnx_path(source) else source.split(":")[0]
    if where.endswith((".py", ".onnx")) and not Path(where).is_absolute():
        resolved = str(config.path(where))
        return resolved + source[len(where) :]
    return source


def run_pipeline(
    config: PipelineConfig, ui: Ui = QUIET, extra_versions: dict[str, str] | None = None
) -> PipelineResult:
    """Run every stage the config asks for and return what each produced."""
    target = check_config(config)
    workdir = config.path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = StageCache(workdir)
    source = _resolve_source(config)
    name = config.model.name or Path(source.split(":")[0]).stem.removesuffix(".fp32") or "model"
    versions = tool_versions(extra_versions)
    skipped: list[str] = []
    ran: list[str] = []

    def track(stage: str, was_skipped: bool) -> None:
        (skipped if was_skipped else ran).append(stage)

    # export
    fp32 = workdir / f"{name}.fp32.onnx"
    ex = config.export
    export_options = ExportOptions(
        opset=ex.opset,
        dynamic_batch=ex.dynamic_batch,
        simplify=ex.simplify,
        inputs=[InputShape.parse(i) for i in config.model.inputs],
        input_names=ex.input_names or None,
        output_names=ex.output_names or None,
    )
    export_key = sha256_json(
        {
            "source": _source_fingerprint(config.model.source, config.base_dir),
            "options": export_options,
            "versions": versions,
            "dest": str(fp32),
        }
    )

    def do_export() -> tuple[list[Path], dict[str, Any]]:
        with ui.progress("export") as advance:
            with module_search_path(config.base_dir):  # module:callable beside the config file
                result = export(source, fp32, export_options, notify=ui.info)
            advance(1.0)
        ui.info(
            f"export: {result.exporter} exporter, opset {result.opset}, "
            f"{result.nodes_before} -> {result.nodes_after} nodes -> {fp32}"
        )
        return [fp32], {"sha256": result.sha256, "exporter": result.exporter}

    export_record, was = cache.run("export", export_key, ui, do_export)
    track("export", was)
    fp32_sha = export_record["sha256"]
    inputs, outputs = model_io(fp32)
    shapes = {i.name: i.shape for i in export_options.inputs}

    # compare data: one fixed set of feeds for every precision, and the reference outputs
    cmp = config.compare
    data_spec = cmp.data if _is_random(cmp.data) else str(config.path(cmp.data))
    source_data = open_source(
        data_spec,
        inputs,
        samples=cmp.samples,
        batch_size=cmp.batch_size,
        seed=cmp.seed,
        shapes=shapes or None,
    )
    feeds = list(source_data)
    gates = Gates(atol=cmp.atol, rtol=cmp.rtol, min_cosine=cmp.min_cosine, min_top1=cmp.min_top1)

    outcomes: list[PrecisionOutcome] = []
    b = config.build
    for precision in b.precisions:
        request = BuildRequest(
            precision=precision,
            target=target,
            backend=b.backend,
            fp16=Fp16Options(keep_io_types=b.keep_io_types, fp32_ops=b.fp32_ops, fp32_nodes=b.fp32_nodes),
            calibration=_calibration_request(config, shapes),
            options=_backend_options(config),
        )
        keyed = request if precision != "fp32" else replace(request, calibration=CalibrationRequest())
        build_key = sha256_json(
            {"fp32": fp32_sha, "request": keyed, "versions": versions,
             "calibration_data": _calibration_fingerprint(request, inputs)}
        )  # fmt: skip

        def do_build(request: BuildRequest = request) -> tuple[list[Path], dict[str, Any]]:
            outcome = build(fp32, request, workdir, ui)
            files = [*outcome.precision.files, *outcome.build.files]
            ui.info(
                f"build {request.precision}: {outcome.precision.path.name} -> {outcome.build.artifact.name}"
            )
            return files, {
                "model": str(outcome.precision.path),
                "artifact": str(outcome.build.artifact),
                "backend": outcome.build.backend,
                "files": [str(f) for f in files],
                "info": {**outcome.precision.info, **_jsonable(outcome.build.info)},
            }

        built, was = cache.run(f"build-{precision}", build_key, ui, do_build)
        track(f"build-{precision}", was)
        outcome = PrecisionOutcome(
            precision=precision,
            backend=built["backend"],
            model=Path(built["model"]),
            artifact=Path(built["artifact"]),
            files=[Path(f) for f in built["files"]],
            info=built.get("info", {}),
        )
        artifact_sha = sha256_file(outcome.artifact)

        compare_key = sha256_json(
            {
                "ref": fp32_sha,
                "cand": artifact_sha,
                "data": source_data.describe(),
                "gates": gates,
                "versions": versions,
            }
        )

        def do_compare(outcome: PrecisionOutcome = outcome) -> tuple[list[Path], dict[str, Any]]:
            with ui.progress(f"compare {outcome.precision}") as advance:
                result = compare(
                    fp32, outcome.artifact, feeds, gates, source_data.describe(), threads=b.threads
                )
                advance(1.0)
            return [], _jsonable(result.summary())

        outcome.compare, was = cache.run(f"compare-{precision}", compare_key, ui, do_compare)
        track(f"compare-{precision}", was)
        if not outcome.compare.get("passed"):
            ui.warn(f"{precision}: accuracy gate failed: {_failure_text(outcome.compare)}")

        if config.profile.enabled:
            p = config.profile
            popts = ProfileOptions(
                warmup_iterations=p.warmup,
                warmup_ms=p.warmup_ms,
                iterations=p.iterations,
                duration_s=p.duration_s,
                batch_sizes=tuple(p.batch_sizes),
                threads=p.threads or b.threads,
            )
            profile_key = sha256_json({"artifact": artifact_sha, "options": popts, "versions": versions})

            def do_profile(
                outcome: PrecisionOutcome = outcome, popts: ProfileOptions = popts
            ) -> tuple[list[Path], dict[str, Any]]:
                with ui.progress(f"profile {outcome.precision}") as advance:
                    result = profile(outcome.artifact, popts, progress=lambda _batch, frac: advance(frac))
                for warning in result.warnings:
                    ui.warn(f"{outcome.precision}: {warning}")
                return [], _jsonable(result.summary())

            outcome.profile, was = cache.run(f"profile-{precision}", profile_key, ui, do_profile)
            track(f"profile-{precision}", was)
        outcomes.append(outcome)

    bundle_info = None
    if config.bundle.enabled:
        bundle_dir = config.path(config.bundle.output) if config.bundle.output else workdir / "bundle"
        primary = config.bundle.primary or None  # None: make_bundle picks the lowest precision that passed
        bundle_key = sha256_json(
            {
                "fp32": fp32_sha,
                "outcomes": [_jsonable(o) for o in outcomes],
                "files": {str(f): sha256_file(f) for o in outcomes for f in o.files},
                "primary": primary,
                "gates": gates,
                "version": __version__,
                "dir": str(bundle_dir),
            }
        )

        def do_bundle() -> tuple[list[Path], dict[str, Any]]:
            ref_in = feeds[0]
            ref_out_batches, _ = run_pair(fp32, fp32, [ref_in])
            artifacts = [
                BundleArtifact(
                    precision=o.precision,
                    backend=o.backend,
                    model=o.model,
                    engine=o.artifact if o.artifact.suffix == ".engine" else None,
                    calibration_cache=_find(o.files, ".cache"),
                    precision_plan=_find(o.files, ".plan.json"),
                    compare=o.compare,
                    profile=o.profile,
                    info=o.info,
                )
                for o in outcomes
            ]
            result = make_bundle(
                bundle_dir,
                model_name=name,
                model_source=config.model.source,
                model_sha256=fp32_sha,
                target=target,
                inputs=inputs,
                outputs=outputs,
                artifacts=artifacts,
                gates=gates.manifest(),
                reference_inputs=ref_in,
                reference_outputs=ref_out_batches[0],
                primary=primary,
                tools=extra_versions,
            )
            ui.info(f"bundle: {result.directory} ({result.files} files) and {result.archive}")
            return [result.directory / "manifest.json", result.archive], {
                "directory": str(result.directory),
                "archive": str(result.archive),
                "files": result.files,
                "size_bytes": result.size_bytes,
            }

        def bundle_intact(record: dict[str, Any]) -> bool:
            from edgedeploy.bundle_tools import verify_bundle

            return verify_bundle(Path(record["directory"])).ok  # a damaged bundle is made again

        bundle_info, was = cache.run("bundle", bundle_key, ui, do_bundle, bundle_intact)
        track("bundle", was)
    result = PipelineResult(
        model_name=name,
        fp32=fp32,
        target=target.name,
        precisions=outcomes,
        bundle=bundle_info,
        stages_skipped=skipped,
        stages_run=ran,
        tools=dict(versions),
        gates=gates.manifest(),
    )
    atomic_write_json(workdir / RUN_RECORD, result)  # what `edgedeploy report WORKDIR` reads
    return result


def check_config(config: PipelineConfig) -> Target:
    """Refuse, before any work, what the config asks for and cannot be served; returns the target."""
    from calibration.algorithms import ALGORITHMS
    from edgedeploy.backends import BACKEND_NAMES
    from edgedeploy.errors import InputError

    b = config.build
    target = load_target(b.target)
    if not b.precisions:
        raise InputError('config [build] precisions is empty; e.g. precisions = ["fp32", "fp16"]')
    for precision in b.precisions:
        target.check_precision(precision)
    if b.backend not in BACKEND_NAMES:
        raise InputError(
            f"config build.backend '{b.backend}' is unknown; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if "int8" in b.precisions and config.calibration.algorithm not in ALGORITHMS:
        raise InputError(
            f"config calibration.algorithm '{config.calibration.algorithm}' is unknown; "
            f"choose one of {', '.join(ALGORITHMS)}"
        )
    if config.bundle.primary and config.bundle.primary not in b.precisions:
        raise InputError(
            f"config bundle.primary '{config.bundle.primary}' is not among build.precisions "
            f"({', '.join(b.precisions)})"
        )
    if config.bundle.enabled:
        out = config.path(config.bundle.output or "bundle").resolve()
        if out.exists() and (
            not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())
        ):
            raise InputError(f"config bundle.output {out} exists and is not a bundle: choose another folder")
    return target


def _calibration_request(config: PipelineConfig, shapes: dict[str, tuple[int, ...]]) -> CalibrationRequest:
    c = config.calibration
    data = c.data if not c.data or _is_random(c.data) else str(config.path(c.data))
    settings = {f.name: getattr(c, f.name) for f in fields(CalibrationSettings)}
    return CalibrationRequest(**{**copy.deepcopy(settings), "data": data}, shapes=shapes)


def _calibration_fingerprint(request: BuildRequest, inputs: list[Any]) -> dict[str, Any] | None:
    """The calibration data's content (file hashes, or generator and seed) for int8 and fp16 builds.

    Paths alone would let an edited calibration set reuse a stale artifact.
    """
    calib = request.calibration
    if request.precision not in ("fp16", "int8") or not calib.data:
        return None
    return calib.open(inputs).describe()


def _backend_options(config: PipelineConfig) -> dict[str, Any]:
    b = config.build
    options: dict[str, Any] = {}
    if b.workspace_mb is not None:
        options["workspace_mb"] = b.workspace_mb
    if b.memory_pools_mb:
        options["memory_pools_mb"] = dict(b.memory_pools_mb)
    if b.opt_level is not None:
        options["optimization_level"] = b.opt_level
    if b.timing_cache:
        options["timing_cache"] = config.path(b.timing_cache)
    if b.dla_core is not None:
        options["dla_core"] = b.dla_core
    if b.hardware_compat:
        options["hardware_compatibility"] = b.hardware_compat
    if b.version_compatible:
        options["version_compatible"] = True
    if b.profiling_verbosity:
        options["profiling_verbosity"] = b.profiling_verbosity
    if b.profiles:
        options["profiles"] = [ShapeProfile.from_config(p) for p in b.profiles]
    if b.threads:
        options["threads"] = b.threads
    return options


def _is_random(spec: str) -> bool:
    return spec == "random" or spec.startswith("random:")


def _find(files: list[Path], suffix: str) -> Path | None:
    return next((f for f in files if f.name.endswith(suffix)), None)


def _failure_text(compare_summary: dict[str, Any]) -> str:
    parts = []
    for name, m in compare_summary.get("outputs", {}).items():
        parts.append(
            f"{name}: cosine={m.get('cosine')}, top1={m.get('top1_agreement')}, nan/inf={m.get('nan_inf')}"
        )
    return "; ".join(parts)


def _jsonable(obj: Any) -> Any:
    from edgedeploy.results import to_jsonable

    return to_jsonable(obj)


def bundle_artifacts(
    reference: Path,
    artifacts: list[Path],
    output: Path,
    target: Target,
    feeds: list[dict[str, Any]],
    data_description: dict[str, Any],
    gates: Gates,
) -> BundleResult:
    """Bundle an fp32 model and precision artifacts made elsewhere (``edgedeploy bundle``).

    Each artifact is compared with the reference on ``feeds`` for its manifest entry; its
    companions beside it (precision plan, calibration cache) come along.
    """
    inputs, outputs = model_io(reference)
    entries = [BundleArtifact("fp32", "onnxruntime", reference)]
    for path in artifacts:
        result = compare(reference, path, feeds, gates, data_description)
        if path.suffix == ".onnx":
            precision = precision_of_model(path)
            entry = BundleArtifact(precision, "onnxruntime", model=path)
        else:  # an engine: its precision ONNX, when it lies beside it, is what the device rebuilds from
            precision = next((p for p in ("int8", "fp16", "fp32") if f".{p}." in path.name), "fp32")
            onnx_beside = path.with_name(path.name.split(f".{precision}.")[0] + f".{precision}.onnx")
            entry = BundleArtifact(
                precision, "tensorrt", model=onnx_beside if onnx_beside.is_file() else reference, engine=path
            )
        base = entry.model.name.removesuffix(".onnx").removesuffix(f".{precision}")
        plan = entry.model.with_name(f"{base}.{precision}.plan.json")
        cache = entry.model.with_name(f"{base}.calib.cache")
        entry.precision_plan = plan if plan.is_file() else None
        entry.calibration_cache = cache if cache.is_file() and precision == "int8" else None
        entry.compare = result.summary()
        entries.append(entry)
    ref_out, _ = run_pair(reference, reference, feeds[:1])
    return make_bundle(
        output,
        model_name=reference.name.removesuffix(".onnx").removesuffix(".fp32"),
        model_source=str(reference),
        model_sha256=sha256_file(reference),
        target=target,
        inputs=inputs,
        outputs=outputs,
        artifacts=entries,
        gates=gates.manifest(),
        reference_inputs=feeds[0],
        reference_outputs=ref_out[0],
    )
