"""The whole pipeline from one config: export -> precision/build -> compare -> profile -> bundle.

:func:`run_pipeline` calls one function per stage; each stage function computes the key of
its inputs (hashes of files and options, tool versions) and lets :class:`StageCache` decide
whether to do the work. A rerun whose keys match does nothing and says so; an interrupted run
resumes from the last finished stage.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from calibration.algorithms import ALGORITHMS
from calibration.errors import CalibrationError, LoaderFailed
from calibration.modelinfo import TensorSpec, batch_axes, batch_names, model_io, shape_text
from calibration.sources import DataSource, Feed, check_fixed_dims, check_shapes, is_random_spec, open_source
from edgedeploy import __version__
from edgedeploy.backends import BACKEND_NAMES, BuildOptions, resolve_backend
from edgedeploy.backends.trt_plan import check_option_values, refuse_values_tensorrt_lacks
from edgedeploy.config import PipelineConfig
from edgedeploy.errors import BudgetMissed, InputError, SettingError, first_line, naming_guessed_dims
from edgedeploy.fileio import (
    CACHE_DIR,
    atomic_write_json,
    check_read_and_written,
    guarded,
    nearest_existing,
    not_an_input,
    not_an_output,
    not_written,
    outside_cache,
    refuse_unwritable,
    scratch_beside,
    sha256_file,
    sha256_json,
)
from edgedeploy.onnxio import external_data_files, load_onnx, model_stem
from edgedeploy.options import (
    RUN_MODEL,
    BuildRequest,
    CalibrationRequest,
    CalibrationSettings,
    Fp16Options,
    ModelKeys,
    OpenedSources,
    ShapeProfile,
    backend_options,
    in_config_names,
    option_name,
    parse_profiles,
    setting_named,
    user_names,
)
from edgedeploy.pipeline.cache import StageCache
from edgedeploy.results import to_jsonable
from edgedeploy.stages.build import BUNDLED_OPTIONS, CPU_OPTIONS, build
from edgedeploy.stages.bundle import (
    BundleArtifact,
    archive_not_ours,
    check_bundle_output,
    device_outputs,
    make_bundle,
    not_ours,
    tool_versions,
    verify_bundle,
)
from edgedeploy.stages.bundle.make import ReportWriter, default_primary
from edgedeploy.stages.compare import Gates, compare, refuse_without_tensor_outputs, run_pair
from edgedeploy.stages.compare.outputs import compared_file, unapplied
from edgedeploy.stages.export import (
    ONNX_KEEPS,
    DynamicAxis,
    ExportOptions,
    InputShape,
    check_names,
    check_opset,
    export,
    is_onnx_path,
    is_python_path,
    module_search_path,
    parse_model_spec,
    pytorch_only,
)
from edgedeploy.stages.precision.fp16 import runtime_for
from edgedeploy.stages.precision.int8 import cache_version_for, placement_for, weight_bits_for
from edgedeploy.stages.profile import ProfileOptions, profile
from edgedeploy.stages.report import HTML_NAME, MARKDOWN_NAME, plotting_missing
from edgedeploy.stages.report.load import REPORT_SIDECARS, RUN_RECORD
from edgedeploy.stats import slower_on_target
from edgedeploy.targets import Target, load_target
from edgedeploy.ui import QUIET, Ui


def bundle_report_writer(ui: Ui) -> ReportWriter | None:
    """The bundle's report hook, or None (with a warning) where matplotlib is missing."""
    from edgedeploy.stages.report import write_bundle_report

    missing = plotting_missing()
    if missing:
        ui.warn(f"bundle made without report.html: {missing}")
        return None
    return write_bundle_report


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


# a precision's task figure from its built model: (name, value), or None (pipeline.run_pipeline)
TaskMetric = Callable[[PrecisionOutcome], "tuple[str, float] | None"]


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
    report: Path | None = None  # report.html in the workdir (None: not written, see the warning)
    # precisions not built because their accuracy budget was missed: precision -> {"reason": the
    # one line, "steps": the search's steps file, which the report shows}
    not_built: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return not self.not_built and all(
            p.compare is None or p.compare.get("passed", False) for p in self.precisions
        )


@dataclass
class _Run:
    """What every stage of one run shares: config, target, folders, cache, and what ran."""

    config: PipelineConfig
    ui: Ui
    target: Target
    workdir: Path
    name: str
    source: str
    versions: dict[str, str | None]
    cache: StageCache
    extra_versions: dict[str, str] | None = None
    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    calibration_sources: OpenedSources | None = None  # shared by the stages' keys and builds
    # the bundle folder, when its device/ holds files the board wrote: this run's last bundle (the
    # config check refused any other), which only a run with nothing to redo leaves as it is
    board_bundle: Path | None = None

    def stage(
        self,
        stage: str,
        key: str,
        compute: Callable[[], tuple[list[Path], dict[str, Any]]],
        not_valid: Callable[[dict[str, Any]], str | None] | None = None,
        *,
        touches_bundle: bool = True,
        redo: Callable[[], tuple[list[Path], dict[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        """The stage's recorded result when its key matches, else computed (``redo`` instead, where
        given, when it runs again for a reason said: see StageCache.run); noted as skipped or run.

        ``touches_bundle``: computing it makes the bundle again (every stage up to the bundle's but
        a PyTorch source's export, which runs every time; not the report after it). While the bundle
        folder holds the board's files (:func:`refuse_board_files`) it is refused before its work."""
        if touches_bundle and self.board_bundle is not None:
            compute = _refusing_first(self.board_bundle, compute)
            redo = None if redo is None else _refusing_first(self.board_bundle, redo)
        result, was_skipped = self.cache.run(stage, key, self.ui, compute, not_valid, redo)
        (self.skipped if was_skipped else self.ran).append(stage)
        return result


def _refusing_first(
    bundle: Path, compute: Callable[[], tuple[list[Path], dict[str, Any]]]
) -> Callable[[], tuple[list[Path], dict[str, Any]]]:
    """``compute``, refused (check_bundle_output's line) before it starts while ``bundle/device``
    holds files the board wrote: a stage that runs again makes the bundle again, over them."""

    def refused() -> tuple[list[Path], dict[str, Any]]:
        check_bundle_output(bundle)
        return compute()

    return refused


def refuse_board_files(folder: Path, cache: StageCache, stage: str) -> bool:
    """Refuse (InputError, one line) a bundle output whose ``device/`` holds files the board wrote
    (engines, results) unless it is the bundle the ``stage`` record in ``cache`` made and still
    vouches for. True when it holds them (an up-to-date run leaves that bundle as it is; a stage
    that would run again is refused before its work), False when it holds none."""
    if not folder.is_dir() or not device_outputs(folder):
        return False
    made = cache.recorded(stage)
    if made is None or Path(str(made.get("directory"))).resolve() != folder.resolve():
        check_bundle_output(folder)  # not the bundle this workdir made as it made it: any bundle replaces it
    return True


@dataclass
class _Exported:
    fp32: Path
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    shapes: dict[str, tuple[int, ...]]


@dataclass
class _CompareData:
    source: DataSource
    feeds: list[Feed]
    gates: Gates


def run_pipeline(
    config: PipelineConfig,
    ui: Ui = QUIET,
    extra_versions: dict[str, str] | None = None,
    *,
    report: bool = True,
    task_metric: TaskMetric | None = None,
) -> PipelineResult:
    """Run every stage the config asks for and return what each produced.

    Args:
        config: the loaded ``edgedeploy.toml`` (relative paths resolve beside it).
        ui: where progress and notes go (stderr in the CLI; silent by default).
        extra_versions: more tool versions to key the stages on and record in the manifest.
        report: write ``report.html`` and ``report.md`` into the workdir (the bundle carries its
            own either way); the run record ``run.json`` they are made from is always written.
        task_metric: a precision's task figure (name, value), or None, measured on its built model
            (the demo's accuracy on held-out digits); recorded in its info as ``task_metric``, so
            run.json, the bundle's manifest and every report made from them show it.
    """
    target = check_config(config)
    if config.build.timing_cache:  # read and replaced: refused as build's --timing-cache is
        not_the_runs(config.path(config.build.timing_cache), config, "config build.timing_cache:")
    # Every write stays in the workdir, the bundle folder and its archive (and a timing cache
    # the config names), and none replaces a file the run reads (model, data, calibration set).
    with guarded(inputs=input_files(config), roots=_output_roots(config)):
        return _run_stages(config, target, ui, extra_versions, report, task_metric)


def _run_stages(
    config: PipelineConfig,
    target: Target,
    ui: Ui,
    extra_versions: dict[str, str] | None,
    report: bool,
    task_metric: TaskMetric | None = None,
) -> PipelineResult:
    run = _start(config, target, ui, extra_versions)
    # the calibration data, opened once for every stage; a loader script's feeds kept for the run
    with scratch_beside(run.workdir / "calibration", "feeds") as kept:
        run.calibration_sources = OpenedSources(kept)
        return _stages(run, report, task_metric)


def _stages(run: _Run, report: bool, task_metric: TaskMetric | None = None) -> PipelineResult:
    config, target, ui = run.config, run.target, run.ui
    for warning in config_warnings(config):
        ui.warn(warning)
    exported = _export_stage(run)
    check_named_nodes(config, exported.fp32)
    if not is_onnx_path(run.source):  # an ONNX source's outputs and ops were checked at the config check
        check_compared_outputs(exported.fp32, exported.outputs)
        check_budget_outputs(config, exported.fp32, exported.outputs)
        check_op_types(config, exported.fp32)
    data = _compare_data(run, exported)
    if config.bundle.enabled and target.kind != "cpu" and config.build.profiles:
        # the profiles the device builds with: checked as a TensorRT build and `bundle create` check them
        from edgedeploy.backends.trt_plan import resolve_profiles

        given = resolve_profiles(exported.fp32, parse_profiles(config.build.profiles))
        refuse_profiles_missing(data.feeds[0], given, "[build] profiles")
    if config.bundle.enabled and target.kind != "cpu" and not config.build.profiles:
        # the bundle's device builds an engine for a shape range: refused now, not after every build
        refuse_unranged_dims(exported.inputs, known_shapes(data.source, data.feeds[0]), "[build] profiles")
    timed = exported.shapes
    if config.profile.enabled:
        timed, taken = profile_shapes(exported.shapes, exported.inputs, data.feeds, data.source.synthetic)
        if taken:
            ui.info(f"profile: dynamic input dims as in the compare data ({', '.join(taken)})")
    outcomes: list[PrecisionOutcome] = []
    not_built: dict[str, dict[str, str | None]] = {}
    for precision in config.build.precisions:
        try:
            outcome = _build_stage(run, exported, precision)
        except BudgetMissed as exc:  # a missed accuracy budget fails that precision, as a failed gate does
            not_built[precision] = {"reason": first_line(exc), "steps": str(exc.steps)}
            ui.warn(f"{precision}: not built: {first_line(exc)}")
            continue
        _compare_stage(run, exported, data, outcome)
        if task_metric is not None and (measured := task_metric(outcome)) is not None:
            outcome.info = {**outcome.info, "task_metric": {"name": measured[0], "value": measured[1]}}
        if config.profile.enabled:
            _profile_stage(run, outcome, timed, _profile_data(run, exported, data))
        outcomes.append(outcome)
    _warn_slower(run, outcomes)
    bundle = _bundle_stage(run, exported, data, outcomes) if config.bundle.enabled and outcomes else None
    result = PipelineResult(
        model_name=run.name,
        fp32=exported.fp32,
        target=run.target.name,
        precisions=outcomes,
        bundle=bundle,
        stages_skipped=run.skipped,
        stages_run=run.ran,
        tools=dict(run.versions),
        gates=data.gates.manifest(),
        not_built=not_built,
    )
    record = to_jsonable(result)
    atomic_write_json(run.workdir / RUN_RECORD, record)  # what `edgedeploy report WORKDIR` reads
    if report:
        result.report = _report_stage(run, record)
    return result


def check_named_nodes(config: PipelineConfig, exported: Path) -> None:
    """``[build] fp32_nodes`` and ``[calibration] exclude_nodes`` name nodes of the exported model:
    refused right after the export, before any precision is built, with the names the export's
    simplification took away said so and the closest names offered. Before, fp16's build found it
    after fp32's, as ``--fp32-nodes: no node named bn``: a BatchNormalization that onnxslim had
    folded into its Conv."""
    import difflib

    from calibration.qdq import unmatched_patterns
    from edgedeploy.stages.precision.fp16 import ensure_node_names, unknown_fp32_nodes

    b, cal = config.build, config.calibration
    asked: list[tuple[str, list[str], Callable[[Sequence[str], Any], list[str]]]] = []
    if "fp16" in b.precisions:
        asked.append(("[build] fp32_nodes", b.fp32_nodes, unknown_fp32_nodes))
    if "int8" in b.precisions:
        asked.append(("[calibration] exclude_nodes", cal.exclude_nodes, unmatched_patterns))
    if not any(wanted for _, wanted, _ in asked):
        return
    model = load_onnx(exported, load_external_data=False)
    for key, wanted, unknown_in in asked:
        unknown = unknown_in(wanted, model)
        if not unknown:
            continue
        first = unknown[0]
        source = config.path(config.model.source) if is_onnx_path(config.model.source) else None
        why = ""
        # a node of the source ONNX that the export's onnxslim took away (read only now: rare)
        if (
            source
            and config.export.simplify
            and first in ensure_node_names(load_onnx(source, load_external_data=False))
        ):
            why = (
                f" ({first} is a node of {source.name}; the export's simplification removed or merged it: "
                "name nodes of the exported model, or set [export] simplify = false)"
            )
        close = difflib.get_close_matches(first, sorted(ensure_node_names(model)), n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        missing = ", ".join(unknown)
        raise InputError(f"{key}: no node named {missing} in the exported model {exported}{why}{hint}")


def check_op_types(config: PipelineConfig, model: Path) -> None:
    """``[build] fp32_ops`` and ``[calibration] exclude_ops`` name op types: one that neither ONNX
    defines nor ``model`` uses (a custom op) is a typo, refused before any precision is built, at the
    config check for an ONNX source and right after the export for a PyTorch one, whose custom ops
    are known only then. Before, the fp16 or int8 build refused it as ``--fp32-ops`` after the other
    precisions were built and compared."""
    from calibration.qdq import unknown_op_types

    b, cal = config.build, config.calibration
    asked = [("build", "fp32_ops", b.fp32_ops)] if "fp16" in b.precisions else []
    asked += [("calibration", "exclude_ops", cal.exclude_ops)] if "int8" in b.precisions else []
    if not any(ops for _, _, ops in asked):
        return
    loaded = load_onnx(model, load_external_data=False)
    for section, key, ops in asked:
        if unknown := unknown_op_types(ops, loaded):
            named = option_name(section, key, from_config=True)
            raise InputError(f"config {named}: no ONNX op type named {', '.join(unknown)}")


def check_compared_outputs(model: Path, outputs: Sequence[TensorSpec], keys: ModelKeys = RUN_MODEL) -> None:
    """A model with no numeric tensor output, which compare refuses (every precision is compared with
    fp32) and whose bundle's verify.sh would pass having compared nothing: refused at the config
    check for an ONNX source and right after the export for a PyTorch one, where the compare stage
    refused it only after the export and the builds were written. ``keys``: how the line names the
    config key that gives the model and the command refusing it (matrix's, see check_config)."""
    refuse_without_tensor_outputs(
        f"config {keys.key('source')}: {model.name}", outputs,
        f"{keys.command} compares every precision with fp32 on numeric tensor outputs only, as compare does",
    )  # fmt: skip


def check_budget_outputs(
    config: PipelineConfig, model: Path, outputs: Sequence[TensorSpec] | None = None
) -> None:
    """A ``[build] accuracy_budget`` that bounds top1 needs an output of (batch, classes) scores:
    refused before any precision is built, at the config check for an ONNX source and right after
    the export for a PyTorch one (the fp16 or int8 build refused it only after its calibration or
    conversion, with the files those wrote left in the workdir). Once per model: the builds do not
    check it again. ``outputs``: the model's declared outputs, when already read. A ``[compare]
    min_top1`` table naming an output the model lacks is refused then too."""
    from edgedeploy.stages.precision.budget import AccuracyBudget, refuse_top1_without_scores

    if isinstance(config.compare.min_top1, dict):
        names = [o.name for o in (model_io(model)[1] if outputs is None else outputs)]
        compare_gates(config).check_top1_outputs(names, model.name, "config [compare] min_top1")
    b = config.build
    if b.accuracy_budget is None or not {"fp16", "int8"} & set(b.precisions):
        return
    said = "config [build] accuracy_budget"
    refuse_top1_without_scores(AccuracyBudget.parse(b.accuracy_budget), model, said, outputs)


def _warn_slower(run: _Run, outcomes: list[PrecisionOutcome]) -> None:
    """A low precision that ran slower than fp32, where the figures are the target's (not a GPU
    target's measured on this CPU): said once, with the figures (the report says it too)."""
    config = run.config.bundle
    # the bundle makes it the device's default: the lowest precision that passed (unless set)
    shipped = default_primary(outcomes) if config.enabled and not config.primary else None
    slower = slower_on_target(run.target.name, [(o.precision, o.backend, o.profile) for o in outcomes])
    for precision, figures in slower.items():
        run.ui.warn(
            f"{precision} ran slower than fp32 here ({figures})"
            + (f'; the bundle makes {precision} its default (the lowest precision that passed): '
               '[bundle] primary = "fp32" ships fp32' if precision == shipped else "")
        )  # fmt: skip


def _report_stage(run: _Run, record: dict[str, Any]) -> Path | None:
    """report.html and report.md in the workdir, from run.json; skipped with a warning without matplotlib."""
    from edgedeploy.stages.report import (
        HTML_NAME,
        MARKDOWN_NAME,
        load_workdir,
        plotting_missing,
        write_report,
    )

    missing = plotting_missing()
    if missing:
        run.ui.warn(f"report not written: {missing}")
        return None
    html, md = run.workdir / HTML_NAME, run.workdir / MARKDOWN_NAME
    content = {k: v for k, v in record.items() if k not in ("stages_skipped", "stages_run", "report")}
    sidecars = {
        f: sha256_file(f)
        for p in record.get("precisions") or []
        for f in p.get("files") or []
        if f.endswith((".plan.json", *REPORT_SIDECARS)) and Path(f).is_file()
    }  # what the charts draw besides run.json
    # the recommended precision is the bundle's primary: a new one redid the bundle only
    manifest = bundle_dir(run.config) / "manifest.json"
    try:
        primary = json.loads(manifest.read_text()).get("primary_precision") if record.get("bundle") else None
    except (OSError, ValueError, AttributeError):
        primary = None
    key = sha256_json({"run": content, "sidecars": sidecars, "primary": primary, "version": __version__})

    def do_report() -> tuple[list[Path], dict[str, Any]]:
        written = write_report(load_workdir(run.workdir), run.workdir)
        return [written.html, written.markdown], {"html": str(written.html), "sections": written.sections}

    run.stage("report", key, do_report, touches_bundle=False)
    return html if html.is_file() and md.is_file() else None


def input_files(config: PipelineConfig) -> list[Path]:
    source = _resolve_source(config)
    where = Path(source if is_onnx_path(source) else source.split(":")[0])
    paths = [where] if is_onnx_path(where) or is_python_path(where) else []
    paths += external_data_files(where) if is_onnx_path(source) else []  # the weights of an ONNX source
    for spec in (config.compare.data, config.calibration.data):
        if spec and not is_random_spec(spec):
            paths.append(config.path(spec))
    return [p for p in paths if p.exists()]


def not_owned(path: Path | None, config: PipelineConfig, option: str = "--json") -> None:
    """``--json FILE`` of ``run`` (or another file ``option``: a timing cache) may not be the run's
    record or a file of its bundle or archive, which the run writes itself (refused before any work,
    even when they are up to date)."""
    if path is None:
        return
    bundle = bundle_dir(config)
    target = path.resolve()
    record = (config.path(config.workdir) / RUN_RECORD).resolve()
    archive = bundle.with_name(bundle.name + ".tar.gz").resolve()
    if target in (record, archive) or target.is_relative_to(bundle.resolve()):
        what = "the run's record" if target == record else "the run's bundle"
        raise InputError(f"{option} {path}: that is {what}, which the run writes: name another file")


def not_the_runs(path: Path | None, config: PipelineConfig, option: str) -> None:
    """A file ``option`` names (run's ``--json``, ``[build] timing_cache``) may not be one the run
    reads (model, data) or writes (its record, bundle and archive, the stage outputs ``NAME.*``
    and the report in the workdir, its stage cache, the workdir itself), up to date or not:
    refused before any work. A file of another name in the workdir is the user's."""
    if path is None:
        return
    workdir = config.path(config.workdir)
    if path.absolute() == workdir.absolute():
        raise InputError(f"{option} {path} is the run's workdir: name a file")
    not_an_input(path, input_files(config), option)
    not_owned(path, config, option)
    not_an_output(path, workdir, run_name(config), option)
    not_written(path, [workdir / HTML_NAME, workdir / MARKDOWN_NAME], [workdir / CACHE_DIR], option)


def run_name(config: PipelineConfig) -> str:
    """The stem of the files the run writes in its workdir (``NAME.fp16.onnx``, ``NAME.calib.json``...)."""
    source = _resolve_source(config)
    return config.model.name or model_stem(Path(source.split(":")[0]).stem) or "model"


def _output_roots(config: PipelineConfig) -> list[Path]:
    bundle = bundle_dir(config)
    roots = [config.path(config.workdir), bundle, bundle.with_name(bundle.name + ".tar.gz")]
    if config.build.timing_cache:
        roots.append(config.path(config.build.timing_cache))
    return roots


def bundle_dir(config: PipelineConfig) -> Path:
    """Where the bundle goes: ``[bundle] output`` beside the config, else ``workdir/bundle``.

    Symlinks resolved, as ``bundle create`` writes: a link to a folder gets the bundle in that
    folder and the archive beside it, and the run's checks and writes name the same paths."""
    if config.bundle.output:
        return config.path(config.bundle.output).resolve()
    return (config.path(config.workdir) / "bundle").resolve()


def _start(config: PipelineConfig, target: Target, ui: Ui, extra_versions: dict[str, str] | None) -> _Run:
    workdir = config.path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # the stage records' folder, made now: a run stopped before any stage finished leaves it empty,
    # which `edgedeploy report` tells from a folder no run made (stages/report/load.py)
    (workdir / CACHE_DIR).mkdir(exist_ok=True)
    source = _resolve_source(config)
    name = run_name(config)
    cache, bundle = StageCache(workdir), bundle_dir(config)
    held = config.bundle.enabled and refuse_board_files(bundle, cache, "bundle")
    # the last run's record goes: until this run writes its own at its end, `edgedeploy report`
    # says the workdir's run stopped before its end, not that the last one is this one's
    record = workdir / RUN_RECORD
    if record.is_file() or record.is_symlink():
        record.unlink()
    return _Run(
        config,
        ui,
        target,
        workdir,
        name,
        source,
        tool_versions(extra_versions),
        cache,
        extra_versions,
        board_bundle=bundle if held else None,
    )


def export_options(config: PipelineConfig) -> ExportOptions:
    """The export the config's [model] and [export] sections describe."""
    ex = config.export
    return ExportOptions(
        opset=ex.opset,
        dynamic_batch=ex.dynamic_batch,
        simplify=ex.simplify,
        inputs=[InputShape.parse(i) for i in config.model.inputs],
        dynamic_axes=[DynamicAxis.parse(item) for item in config.model.dynamic_axes],
        input_names=ex.input_names or None,
        output_names=ex.output_names or None,
        verify=ex.verify,
    )


def compare_gates(config: PipelineConfig) -> Gates:
    cmp = config.compare
    return Gates(
        atol=cmp.atol,
        rtol=cmp.rtol,
        min_cosine=cmp.min_cosine,
        min_top1=cmp.min_top1,
        check_allclose=cmp.check_allclose,
    )


def profile_options(
    config: PipelineConfig, shapes: dict[str, tuple[int, ...]] | None = None
) -> ProfileOptions:
    """The profile the config's [profile] section describes, on random inputs of ``shapes`` (the
    exported model's names for ``[model] inputs``; by default those as written)."""
    p = config.profile
    return ProfileOptions(
        warmup_iterations=p.warmup,
        warmup_ms=p.warmup_ms,
        iterations=p.iterations,
        duration_s=p.duration_s,
        batch_sizes=tuple(p.batch_sizes),
        # an engine whose profile does not take them is timed at its opt batch (said in a warning):
        # the batch sizes are every artifact's, and the engine's profile is known once it is built
        opt_batch_outside_profile=True,
        batch_sizes_option="[profile] batch_sizes",
        threads=p.threads or config.build.threads,
        # [model] inputs: the shapes of the random data, as profile's --input
        shapes=(
            dict(shapes)
            if shapes is not None
            else {s.name: s.shape for s in (InputShape.parse(i) for i in config.model.inputs)}
        ),
    )


def profile_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    inputs: Sequence[TensorSpec],
    feeds: Sequence[Feed],
    synthetic: bool,
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The shapes the profile's random inputs take: ``shapes`` (``[model] inputs``), and for an
    input they leave out whose dims beyond the batch are dynamic, the shape it has in the first
    batch of the compare data, unless that data is random too. Without it, random data feeds such
    dims as 1: PP-OCR's direction classifier, [N, 3, ?, ?], was timed on 1x1 images while its
    compare data were 48x192 text lines. The profile's batch sizes still replace dim 0 where the
    batch is dynamic. Returns the shapes and, per input taken from the data, ``name AxBxC``."""
    found = dict(shapes)
    taken: list[str] = []
    first = feeds[0] if feeds and not synthetic else {}
    for spec in inputs:
        dynamic = any(not isinstance(d, int) or d < 0 for d in spec.shape[1:])
        array = first.get(spec.name)
        if spec.name in found or not dynamic or array is None or array.ndim != len(spec.shape):
            continue
        found[spec.name] = tuple(int(d) for d in array.shape)
        taken.append(f"{spec.name} {'x'.join(str(d) for d in array.shape)}")
    return found, taken


def known_shapes(source: DataSource, feed: Mapping[str, Any]) -> Mapping[str, Any]:
    """The inputs of ``feed`` (the first of ``source``) whose shapes are the data's: every one of
    real data; of random data, those whose shape was given (``[model] inputs``), not guessed as 1."""
    if not source.synthetic:
        return feed
    guessed = {entry.rsplit(" ", 1)[0] for entry in source.fed_as_one}
    return {name: value for name, value in feed.items() if name not in guessed}


def refuse_unranged_dims(
    inputs: Sequence[TensorSpec], reference_inputs: Mapping[str, Any], option: str, entry: str = ""
) -> None:
    """InputError for the first of ``inputs`` with a dynamic dim besides the batch: a GPU device
    builds its engine for a shape range, which only the batch has a default for (1 to the
    reference batch); ``option`` is where the user gives it (``--profile``, ``[build] profiles``,
    with `` and ...`` for what else the config needs), with the reference data's shape as the
    example (``reference_inputs`` empty: random data, dynamic dims 1, 4 and 8 as the example).
    ``entry``: the TOML the example goes in, ``{profiles}`` standing for the profiles' value (a
    matrix's ``[[matrix.cells]]`` entry for one model and target), instead of ``option = ...``."""
    batch = batch_names(inputs)  # a dim named as an input's batch is the batch wherever it is
    others = [
        s for s in inputs if any(not (isinstance(d, int) and d > 0) and d not in batch for d in s.shape[1:])
    ]
    if not others:
        return
    spec = others[0]
    ref = reference_inputs.get(spec.name)
    if ref is not None and ref.ndim:  # the data's own sizes: they must fit the profile anyway
        high = [int(d) for d in ref.shape]
        ranges, why = [[1, *high[1:]], high, high], " (the reference data's shape; widen it to the device's)"
    else:
        ranges = [[d if isinstance(d, int) and d > 0 else n for d in spec.shape] for n in (1, 4, 8)]
        why = ""
    key, _, rest = option.partition(" and ")  # what else the config needs, e.g. a backend
    if key == "--profile":
        example = f"--profile {spec.name}:{','.join('x'.join(map(str, r)) for r in ranges)}"
    else:  # [build] profiles, as TOML
        lo, opt, hi = (", ".join(map(str, r)) for r in ranges)
        value = f"[{{ {spec.name} = {{ min = [{lo}], opt = [{opt}], max = [{hi}] }} }}]"
        example = entry.replace("{profiles}", value) if entry else f"{key} = {value}"
    raise InputError(
        f"input '{spec.name}' has dynamic dims {shape_text(spec.shape, sep=', ')} besides the batch: give "
        f"the device's shape range with {example}{why}" + (f" and {rest}" if rest else "")
    )


def refuse_profiles_missing(
    reference_inputs: Mapping[str, Any],
    resolved: Sequence[Mapping[str, Sequence[Sequence[int]]]],
    option: str,
) -> None:
    """InputError when a reference input lies outside every shape profile (``resolved``: per profile,
    input -> [min, opt, max]): verify.sh runs it on the device; ``option``: what to widen."""
    for name, value in reference_inputs.items():
        shape = list(value.shape)
        if (
            resolved
            and name in resolved[0]
            and not any(
                all(a <= d <= b for a, d, b in zip(p[name][0], shape, p[name][2], strict=False))
                for p in resolved
            )
        ):
            raise InputError(
                f"the reference input '{name}' {shape} lies outside every shape profile: verify.sh on the "
                f"device runs it, so widen {option} to take it"
            )


def compare_source(config: PipelineConfig, inputs: list[TensorSpec], shapes: dict[str, Any]) -> DataSource:
    """The compare data the config's [compare] section names, for a model with ``inputs``: an image
    folder is read with ``[calibration] preprocess``, as the calibration images are (the model's
    inputs are the same whatever the data is for)."""
    cmp = config.compare
    spec = cmp.data if is_random_spec(cmp.data) else str(config.path(cmp.data))
    return open_source(
        spec, inputs, samples=cmp.samples, batch_size=cmp.batch_size, seed=cmp.seed, shapes=shapes or None,
        image_options=config.calibration.preprocess or None, declare_preprocess="[calibration] preprocess",
    )  # fmt: skip


def _export_stage(run: _Run) -> _Exported:
    config, ui = run.config, run.ui
    fp32 = run.workdir / f"{run.name}.fp32.onnx"
    options = export_options(config)
    key = sha256_json(
        {
            "source": _source_fingerprint(config.model.source, config.base_dir),
            "options": options,
            "versions": run.versions,
            "dest": str(fp32),
        }
    )

    # [model] inputs shape an ONNX source's export check too, and compare's and profile's random data
    ignored = [
        f"[{'model' if name == 'dynamic_axes' else 'export'}] {name}" for name in pytorch_only(options)
    ]
    if ignored and is_onnx_path(run.source):
        ui.warn(f"{', '.join(ignored)}: {ONNX_KEEPS}")

    # A PyTorch source is exported every run: what its factory reads (a checkpoint, the modules
    # it imports) is not in the key, so a record cannot vouch for it. The later stages are keyed
    # by the exported model's sha256, so an export that comes out the same redoes nothing else.
    before = None if is_onnx_path(run.source) else run.cache.lookup("export", key)

    def do_export() -> tuple[list[Path], dict[str, Any]]:
        with ui.progress("export") as advance:
            with module_search_path(config.base_dir):  # module:callable beside the config file
                result = export(run.source, fp32, options, notify=ui.info)
            advance(1.0)
        how = "an ONNX file, checked" if result.exporter == "onnx" else f"{result.exporter} exporter"
        nodes = f"{result.nodes_before} -> {result.nodes_after} nodes"
        ui.info(f"export: {how}, opset {result.opset}, {nodes} -> {fp32}")
        for warning in result.warnings:
            ui.warn(f"export: {warning}")
        return [fp32], {"sha256": result.sha256, "exporter": result.exporter}

    every_run = None if is_onnx_path(run.source) else lambda _: "a PyTorch source is exported on every run"
    # a PyTorch source's export runs every time: the stages after it run again (and are refused
    # while the bundle holds the board's files) only when it comes out changed
    record = run.stage("export", key, do_export, every_run, touches_bundle=is_onnx_path(run.source))
    if before is not None and before.get("sha256") == record["sha256"]:  # nothing changed after all
        ui.info("export: the same model as the last run's")
        run.ran.remove("export")
        run.skipped.append("export")
    inputs, outputs = model_io(fp32)
    shapes = {i.name: i.shape for i in options.inputs}
    names = [i.name for i in inputs]
    renamed = not is_onnx_path(run.source)  # [export] input_names rename a PyTorch export's inputs
    if renamed and not set(shapes) <= set(names) and len(shapes) == len(names):
        shapes = dict(zip(names, shapes.values(), strict=True))
    return _Exported(fp32, record["sha256"], list(inputs), list(outputs), shapes)


def _compare_data(run: _Run, exported: _Exported) -> _CompareData:
    """One fixed set of feeds for every precision: the compare data and the gates."""
    source = compare_source(run.config, exported.inputs, exported.shapes)
    if note := source.guessed():
        run.ui.warn(f"[compare] data: {note}")
    return _CompareData(source, list(source), compare_gates(run.config))


def build_request(
    config: PipelineConfig, target: Target, precision: str, shapes: dict[str, Any]
) -> BuildRequest:
    """The build the config's [build] and [calibration] sections describe for one precision."""
    b = config.build
    section = {f.name: getattr(b, f.name) for f in fields(b)}
    options = backend_options(section, path=config.path)
    if b.backend == "onnxruntime":  # the bundle's, for its device's engine (check_config took them for it)
        options = {k: v for k, v in options.items() if k not in BUNDLED_OPTIONS}
    return BuildRequest(
        precision=precision,
        target=target,
        backend=b.backend,
        fp16=Fp16Options(keep_io_types=b.keep_io_types, fp32_ops=b.fp32_ops, fp32_nodes=b.fp32_nodes),
        calibration=_calibration_request(config, shapes),
        options=options,
        # fp32 has no lower precision to take layers from
        accuracy_budget=b.accuracy_budget if precision in ("fp16", "int8") else None,
    )


def precision_family(target: Target, request: BuildRequest) -> dict[str, Any]:
    """What of the target shapes the precision ONNX (on any backend): the runtime for
    fp16 (the ops it keeps in fp32, fp16.runtime_for), Q/DQ placement for int8. In the keys of run's
    build stages and of matrix's precision artifacts: an artifact made under other rules (another
    version's, as b24050c changed them) is made again, not reused."""
    if request.precision == "fp16":
        return {"runtime": runtime_for(target)}
    if request.precision != "int8":
        return {}
    return {
        "placement": placement_for(target),
        "weight_bits": weight_bits_for(target),
        "trt_cache": cache_version_for(target, request.calibration.trt_version),
    }


def _build_stage(run: _Run, exported: _Exported, precision: str) -> PrecisionOutcome:
    request = build_request(run.config, run.target, precision, exported.shapes)
    request.calibration.opened = run.calibration_sources  # the key's read of the data is the build's
    backend = resolve_backend(request.backend, request.target.is_gpu)[0].name
    keyed = build_key_request(request, backend)
    family = precision_family(run.target, request)  # the rules it is made by (fp32's: none)
    key = sha256_json(
        {"fp32": exported.sha256, "request": keyed, "versions": run.versions,
         "calibration_data": _calibration_fingerprint(request, exported.inputs, backend),
         **({"family": family} if family else {})}
    )  # fmt: skip

    def do_build(force: bool = False) -> tuple[list[Path], dict[str, Any]]:
        forced = replace(request, options={**request.options, "force": True}) if force else request
        outcome = build(exported.fp32, forced, run.workdir, run.ui)
        files = [*outcome.precision.files, *outcome.build.files]
        run.ui.info(
            f"build {request.precision}: {outcome.precision.path.name} -> {outcome.build.artifact.name}"
        )
        return files, {
            "model": str(outcome.precision.path),
            "artifact": str(outcome.build.artifact),
            "backend": outcome.build.backend,
            "files": [str(f) for f in files],
            "info": {**outcome.precision.info, **to_jsonable(outcome.build.info)},
        }

    # run again for a reason it says (a file it wrote changed, its record edited): nothing reused, as
    # build --force (the backend's artifact, the calibration, the budget's search)
    built = run.stage(f"build-{precision}", key, do_build, redo=lambda: do_build(force=True))
    return PrecisionOutcome(
        precision=precision,
        backend=built["backend"],
        model=Path(built["model"]),
        artifact=Path(built["artifact"]),
        files=[Path(f) for f in built["files"]],
        info=built.get("info", {}),
    )


def build_key_request(request: BuildRequest, backend: str) -> BuildRequest:
    """``request`` as it shapes its precision's build on ``backend`` (the one that builds it), for
    the stage's key: the settings only another precision or another backend uses are left out. The
    int8 algorithm redid the fp16 build, [build] fp32_ops the fp32 and int8 ones, and TensorRT's
    profiles every build that fell back to ONNX Runtime; each rebuilt the same bytes. The data's
    path is left out too (its identity is in the key: :func:`_calibration_fingerprint`)."""
    calibration, fp16 = request.calibration, request.fp16
    if request.precision == "fp32":  # without data its artifact is checked on random inputs of these shapes
        calibration, fp16 = CalibrationRequest(shapes=calibration.shapes), Fp16Options()
    elif request.precision == "fp16":  # its range analysis and budget read the data, not the int8 rules
        calibration = replace(
            calibration, algorithm="", percentile=0.0, exclude_nodes=[], exclude_ops=[], trt_version=None
        )
    else:
        fp16 = Fp16Options()
    calibration = calibration.keyed()  # the data is in the key as its identity (_calibration_fingerprint)
    options = request.options
    if backend == "onnxruntime":
        options = {k: v for k, v in options.items() if k in CPU_OPTIONS}
    return replace(
        request,
        calibration=calibration,
        fp16=fp16,
        options=options,
        fp16_analysis=request.fp16_analysis if request.precision == "fp16" else True,
        accuracy_budget=None if request.precision == "fp32" else request.accuracy_budget,
    )


def _compare_stage(run: _Run, exported: _Exported, data: _CompareData, outcome: PrecisionOutcome) -> None:
    key = sha256_json(
        {
            "ref": exported.sha256,
            # what is compared is the artifact; what is bundled is the precision ONNX too
            "cand": sha256_json({str(f): sha256_file(f) for f in {outcome.model, outcome.artifact}}),
            "data": data.source.identity(),  # the data, not how its path was written
            "gates": data.gates,
            "versions": run.versions,
        }
    )

    def do_compare() -> tuple[list[Path], dict[str, Any]]:
        # on random data, a refusal names the dims guessed as 1 and how to give them, as compare's
        with (
            run.ui.progress(f"compare {outcome.precision}") as advance,
            naming_guessed_dims(data.source.fed_as_one),
        ):
            result = compare(
                exported.fp32, compared_file(outcome.model, outcome.artifact), data.feeds, data.gates,
                data.source.describe(), threads=run.config.build.threads,
            )  # fmt: skip
            advance(1.0)
        for warning in unapplied(result):
            run.ui.warn(f"{outcome.precision}: {warning}")
        return [], to_jsonable(result.summary())

    outcome.compare = run.stage(f"compare-{outcome.precision}", key, do_compare)
    if not outcome.compare.get("passed"):
        run.ui.warn(f"{outcome.precision}: accuracy gate failed: {_failure_text(outcome.compare)}")


def _profile_data(run: _Run, exported: _Exported, data: _CompareData) -> DataSource | None:
    """What the profile times on: the run's own data, as a user who gave data expects (random ids
    can fail a model its data runs): the [compare] data's feeds (read once already), else the
    [calibration] data (the build's opened source); None for random inputs when both are random."""
    if not data.source.synthetic:
        return replace(data.source, _make=lambda: data.feeds)
    if not run.config.calibration.data or is_random_spec(run.config.calibration.data):
        return None
    request = _calibration_request(run.config, exported.shapes)
    request.opened = run.calibration_sources
    return request.open(exported.inputs)


def _profile_stage(
    run: _Run, outcome: PrecisionOutcome, shapes: dict[str, tuple[int, ...]], data: DataSource | None = None
) -> None:
    options = profile_options(run.config, shapes)
    key = sha256_json(
        {"artifact": sha256_file(outcome.artifact), "options": options, "versions": run.versions,
         **({"data": data.identity()} if data is not None else {})}
    )  # fmt: skip

    def do_profile() -> tuple[list[Path], dict[str, Any]]:
        with run.ui.progress(f"profile {outcome.precision}") as advance:
            result = profile(outcome.artifact, options, lambda _batch, frac: advance(frac), data)
        for warning in result.warnings:
            run.ui.warn(f"{outcome.precision}: {warning}")
        return [], to_jsonable(result.summary())

    outcome.profile = run.stage(f"profile-{outcome.precision}", key, do_profile)


def _bundle_stage(
    run: _Run, exported: _Exported, data: _CompareData, outcomes: list[PrecisionOutcome]
) -> dict[str, Any]:
    config = run.config
    out = bundle_dir(config)
    primary = config.bundle.primary or None  # None: make_bundle picks the lowest precision that passed
    if primary is not None and primary not in {o.precision for o in outcomes}:
        run.ui.warn(f"bundle: bundle.primary {primary} was not built; the bundle picks its primary itself")
        primary = None
    engines = [o.artifact for o in outcomes if o.artifact.suffix == ".engine"]
    build = bundle_build(config, exported.fp32, exported.inputs, run.target, data.feeds[0], engines)
    preprocess = data.source.describe().get("preprocess")  # describe() hashes every data file: once
    key = sha256_json(
        {
            "fp32": exported.sha256,
            "outcomes": [to_jsonable(o) for o in outcomes],
            "files": {str(f): sha256_file(f) for o in outcomes for f in o.files},
            "primary": primary,
            "gates": data.gates,
            "version": __version__,
            "dir": str(out),
            "report": plotting_missing() is None,  # a bundle made without its report is remade with it
            "build": build,
            "preprocess": preprocess,
        }
    )

    def do_bundle() -> tuple[list[Path], dict[str, Any]]:
        ref_in = data.feeds[0]
        ref_out_batches, _ = run_pair(exported.fp32, exported.fp32, [ref_in])
        artifacts = [
            BundleArtifact(
                precision=o.precision,
                backend=o.backend,
                model=o.model,
                engine=o.artifact if o.artifact.suffix == ".engine" else None,
                calibration_cache=_find(o.files, ".cache"),
                precision_plan=_find(o.files, ".plan.json"),
                extra_files=[f for f in o.files if f.name.endswith(REPORT_SIDECARS)],
                compare=o.compare,
                profile=o.profile,
                info=o.info,
            )
            for o in outcomes
        ]
        result = make_bundle(
            out,
            model_name=run.name,
            model_source=config.model.source,
            model_sha256=exported.sha256,
            target=run.target,
            inputs=exported.inputs,
            outputs=exported.outputs,
            artifacts=artifacts,
            gates=data.gates.manifest(),
            reference_inputs=ref_in,
            reference_outputs=ref_out_batches[0],
            primary=primary,
            tools=run.extra_versions,
            report=bundle_report_writer(run.ui),
            build=build,
            preprocess=preprocess,
        )
        run.ui.info(f"bundle: {result.directory} ({result.files} files) and {result.archive}")
        return [result.directory / "manifest.json", result.archive], {
            "directory": str(result.directory),
            "archive": str(result.archive),
            "files": result.files,
            "size_bytes": result.size_bytes,
        }

    def bundle_damaged(record: dict[str, Any]) -> str | None:
        check = verify_bundle(Path(record["directory"]))  # a damaged bundle is made again
        if check.ok:
            return None
        return f"the bundle {record['directory']} fails its check ({(check.problems or ['damaged'])[0]})"

    return run.stage("bundle", key, do_bundle, bundle_damaged)


def build_settings(
    reference: Path,
    inputs: list[TensorSpec],
    engines: list[Path],
    target: Target,
    reference_inputs: dict[str, Any],
    profiles: list[ShapeProfile],
) -> dict[str, Any]:
    """How the device builds its engines (the manifest's ``build``): shape profiles and TF32.

    The profiles are, in this order: the ones given (``--profile``), checked against the model as a
    build checks them; the ones the bundled engines were built with (their sidecars); else, for a
    model whose only dynamic dim is the batch, batch 1 to the reference batch (the batch verify.sh
    runs). Other dynamic dims (height, width, sequence) have no size to guess: a GPU target is
    refused without --profile. Every profile must take the reference inputs, or verify.sh could not
    run them on the device.
    """
    from edgedeploy.backends.trt_plan import resolve_profiles
    from edgedeploy.backends.trt_sidecar import read_sidecar

    sidecars = [s for s in (read_sidecar(e) for e in engines) if s is not None]
    tf32 = all(s.get("tf32", True) is not False for s in sidecars)
    dynamic = [s for s in inputs if any(not (isinstance(d, int) and d > 0) for d in s.shape)]
    if profiles:
        resolved = resolve_profiles(reference, profiles)
    elif not dynamic or target.kind == "cpu":
        return {"profiles": [], "tf32": tf32}  # nothing to range, or ONNX Runtime (no profiles)
    else:
        built = [s["plan"]["profiles"] for s in sidecars if (s.get("plan") or {}).get("profiles")]
        if any(b != built[0] for b in built):
            raise InputError(
                "the engines were built with different shape profiles: give the ones the device "
                "builds with --profile NAME:MIN,OPT,MAX"
            )
        resolved = built[0] if built else []
    if not resolved:
        refuse_unranged_dims(dynamic, reference_inputs, "--profile")
        batch = int(next(iter(reference_inputs.values())).shape[0])
        resolved = [{}]
        names = batch_names(inputs)
        for spec in dynamic:  # the batch on dim 0 and on every axis named as the batch
            shapes = [[d if isinstance(d, int) and d > 0 else 1 for d in spec.shape] for _ in range(3)]
            for axis in batch_axes(spec.shape, names):
                shapes[1][axis] = shapes[2][axis] = batch
            resolved[0][spec.name] = shapes
    refuse_profiles_missing(reference_inputs, resolved, "a --profile")
    tables = [{n: dict(zip(("min", "opt", "max"), r, strict=True)) for n, r in p.items()} for p in resolved]
    return {"profiles": tables, "tf32": tf32}


def bundle_build(
    config: PipelineConfig,
    fp32: Path,
    inputs: list[TensorSpec],
    target: Target,
    reference_inputs: dict[str, Any],
    engines: list[Path],
) -> dict[str, Any]:
    """How the device builds the engines of run's and matrix's bundles (the manifest's ``build``):
    the config's [build] profiles and tf32, or without profiles the ones `bundle create` records for
    the same model and engines (:func:`build_settings`: the engines' own, else batch 1 to the
    reference batch), which build_engine.sh then builds as recorded."""
    if config.build.profiles:
        return {"profiles": list(config.build.profiles), "tf32": config.build.tf32}
    settings = build_settings(fp32, inputs, engines, target, reference_inputs, [])
    return {"profiles": settings["profiles"], "tf32": config.build.tf32}


def _source_fingerprint(source: str, base: Path) -> dict[str, Any]:
    """What identifies the model's source: the file's hash and those of its external data files (the
    weights of a model saved with external data are there, not in the .onnx), or the module's file hash."""
    if is_onnx_path(source):
        path = Path(source) if Path(source).is_absolute() else base / source
        if not path.is_file():
            return {"missing": str(path)}
        found: dict[str, Any] = {"onnx_sha256": sha256_file(path)}
        if data := external_data_files(path):
            found["external_data"] = {str(p.relative_to(path.parent)): sha256_file(p) for p in data}
        return found
    where = parse_model_spec(source)[0]
    path = Path(where) if Path(where).is_absolute() else base / where
    if is_python_path(path) and path.is_file():
        return {"spec": source, "file_sha256": sha256_file(path)}
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
    if (is_python_path(where) or is_onnx_path(where)) and not Path(where).is_absolute():
        resolved = str(config.path(where))
        return resolved + source[len(where) :]
    return source


def check_config(config: PipelineConfig, keys: ModelKeys = RUN_MODEL, bundled: bool | None = None) -> Target:
    """Refuse, before any work, what the config asks for and cannot be served; returns the target.
    ``keys``: how the lines about the model name its keys and the command (matrix checks each
    cell's config here: ``matrix.models[1].inputs``, matrix). ``bundled``: a bundle is made of
    what the config builds (default: the config's ``[bundle] enabled``; a matrix cell's config
    makes none, the matrix bundles it)."""

    b = config.build
    target = load_target(b.target)
    name = config.model.name
    if name and (
        name in (".", "..") or "/" in name or "\\" in name or name.startswith(".") or Path(name).is_absolute()
    ):
        raise InputError(
            f"config {keys.key('name')} '{name}' must be a plain file name (no folders, no leading dot): "
            "it names the files written in the workdir"
        )
    if not config.workdir or not str(config.workdir).strip():
        raise InputError('config workdir is empty; e.g. workdir = "edgedeploy-out"')
    folders = [("workdir", config.path(config.workdir))]
    folders += [("bundle.output", bundle_dir(config))] if config.bundle.enabled else []
    for key, folder in folders:
        # said as such, not as the OS error of making it ("File exists", "Not a directory")
        ancestor = nearest_existing(folder)
        if not ancestor.is_dir():
            where = "exists and is not a folder" if ancestor == folder else f"lies in {ancestor}, a file"
            raise InputError(f"config {key}: {folder} {where}")
        # the bundle replaces its folder whole, from a temporary folder made beside it
        written = nearest_existing(folder.parent) if key == "bundle.output" else ancestor
        refuse_unwritable(written, f"config {key}: {folder}")
    if b.timing_cache:  # read, then replaced beside itself: refused before any work as a folder above
        check_read_and_written("config build.timing_cache:", config.path(b.timing_cache))
    if not b.precisions:
        raise InputError('config [build] precisions is empty; e.g. precisions = ["fp32", "fp16"]')
    repeated = sorted({p for p in b.precisions if b.precisions.count(p) > 1})
    if repeated:
        raise InputError(f"config build.precisions names {', '.join(repeated)} more than once")
    for precision in b.precisions:
        target.check_precision(precision)
    if b.backend not in BACKEND_NAMES:
        raise InputError(
            f"config build.backend '{b.backend}' is unknown; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if b.accuracy_budget is not None:
        from edgedeploy.stages.precision.budget import AccuracyBudget

        try:
            AccuracyBudget.parse(b.accuracy_budget)
        except InputError as exc:
            said = str(exc).removeprefix("--accuracy-budget")
            raise InputError(f"config [build] accuracy_budget{said}") from None
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
    if config.bundle.enabled and (
        why := not_ours(bundle_dir(config).resolve()) or archive_not_ours(bundle_dir(config).resolve())
    ):
        raise InputError(f"config bundle.output: {why}; choose another folder")
    if config.bundle.enabled:  # the board's files in it: refused now unless this run may be up to date
        refuse_board_files(bundle_dir(config), StageCache(config.path(config.workdir)), "bundle")
    _check_sections(config, target, config.bundle.enabled if bundled is None else bundled)
    _check_export(config, keys)
    _check_files(config, keys)
    refuse_for_tensorrt(config, target, bundled=config.bundle.enabled)
    return target


def refuse_for_tensorrt(config: PipelineConfig, target: Target, bundled: bool) -> None:
    """An ONNX source TensorRT cannot build (a string input or output, a ZipMap's sequence of maps:
    trt_plan.refuse_values_tensorrt_lacks) for a GPU target, refused before any work where TensorRT
    would build it: backend auto (TensorRT wherever it is present) or tensorrt, or a bundle
    (``bundled``), whose device builds its engine with TensorRT. Before, the build failed after the
    export and the fp16 conversion (TensorRT's parser error, naming no input), or the run made a
    bundle that no board could build."""
    source = _resolve_source(config)
    on_tensorrt = config.build.backend != "onnxruntime"
    if not target.is_gpu or not is_onnx_path(source) or not (on_tensorrt or bundled):
        return
    needs = ['[build] backend = "onnxruntime"'] if on_tensorrt else []
    needs += ["[bundle] enabled = false (the bundle's device builds a TensorRT engine)"] if bundled else []
    instead = f"in the config, set {' and '.join(needs)} to run it on ONNX Runtime, or choose a CPU target"
    refuse_values_tensorrt_lacks(Path(source), target.name, instead)


def _check_export(config: PipelineConfig, keys: ModelKeys) -> None:
    """The [model] and [export] values and the random data specs the export or the data would refuse
    after the workdir was made (and the export written), refused now in the config's names: a bad
    ``[model] inputs`` item was ``bad --input ...`` with an empty workdir left behind. (The data
    specs, ``random:abc`` too, are checked with the other [compare] and [calibration] values.)
    ``keys``: as check_config's."""
    try:
        options = export_options(config)
        if not is_onnx_path(config.model.source):  # an ONNX source keeps its opset and names
            check_opset(options.opset)
            check_names(options)
    except InputError as exc:
        raise InputError(f"config {in_config_names(str(exc).removeprefix('bad '), keys)}") from None
    if config.build.profiles and not is_onnx_path(config.model.source):  # an ONNX source's: at _check_files
        _check_profile_ranks(config, options, keys)


def _check_profile_ranks(config: PipelineConfig, options: ExportOptions, keys: ModelKeys) -> None:
    """``[build] profiles`` of another rank than the shape ``[model] inputs`` gives that input (renamed
    by ``[export] input_names``) are refused before the export; the build refused them after it.
    ``keys``: as check_config's."""
    given = {i.name: len(i.shape) for i in options.inputs}
    if options.input_names and len(options.input_names) == len(options.inputs):
        given = dict(zip(options.input_names, given.values(), strict=True))
    for index, ranges in enumerate(parse_profiles(config.build.profiles)):  # read by _check_sections
        for name, (lo, opt, hi) in ranges.shapes.items():
            rank = given.get(name)
            if rank is not None and not len(lo) == len(opt) == len(hi) == rank:
                raise InputError(
                    f"config [build] profiles: profile {index} input '{name}': min/opt/max must all have "
                    f"rank {rank} like {keys.setting('inputs')} gives it "
                    f"({list(lo)}, {list(opt)}, {list(hi)})"
                )


def _check_files(config: PipelineConfig, keys: ModelKeys) -> None:
    """The files the config names exist, and an ONNX source has the inputs ``[model] inputs``
    names, at their rank: refused before any work (``matrix`` ran every cell and failed each one
    with the same reason, exit 1, where ``run`` refused with exit 2 after its export). ``keys``: as
    check_config's."""
    source = _resolve_source(config)
    where = Path(source if is_onnx_path(source) else source.split(":")[0])
    if (is_onnx_path(where) or is_python_path(where)) and not where.is_file():
        raise InputError(f"config {keys.key('source')}: {where} not found")
    if not is_onnx_path(source):  # a spec of no module or callable: before the workdir is made
        parse_model_spec(source)
    if is_onnx_path(source):
        check_compared_outputs(where, model_io(where)[1], keys)
        check_budget_outputs(config, where)
        check_op_types(config, where)
        if config.build.profiles:  # as a build checks them: names, ranks, fixed dims
            from edgedeploy.backends.trt_plan import resolve_profiles

            try:
                resolve_profiles(where, parse_profiles(config.build.profiles))
            except InputError as exc:
                raise InputError(f"config [build] profiles: {exc}") from None
    for key, spec in (("compare.data", config.compare.data), ("calibration.data", config.calibration.data)):
        if spec and not is_random_spec(spec) and not config.path(spec).exists():
            raise InputError(
                f"config {key}: {config.path(spec)} not found (expected random, a .npz/.npy file, "
                "a folder or a .py loader)"
            )
    if is_onnx_path(source) and config.model.inputs and not config.export.input_names:
        inputs = model_io(where)[0]
        shapes = {s.name: s.shape for s in (InputShape.parse(i) for i in config.model.inputs)}
        try:
            check_shapes(shapes, {s.name: s.rank for s in inputs})
            check_fixed_dims(shapes, inputs)  # as the export refuses them
        except CalibrationError as exc:
            raise InputError(f"config {keys.key('inputs')}: {str(exc).removeprefix('--input ')}") from None


def config_warnings(config: PipelineConfig) -> list[str]:
    """Keys the config gave that another key makes moot, as the CLI says for its options."""
    given = {section: set(keys) for section, keys in config.given.items()}
    cmp, cal, p = given.get("compare", set()), given.get("calibration", set()), given.get("profile", set())
    warnings = []
    profiled = config.profile.enabled and config.profile.iterations is not None
    if {"iterations", "duration_s"} <= p and profiled:
        warnings.append("config [profile] iterations is used instead of duration_s")
    if {"warmup", "warmup_ms"} <= p and config.profile.enabled and config.profile.warmup is not None:
        warnings.append("config [profile] warmup is used instead of warmup_ms")
    if cmp & {"atol", "rtol"} and not config.compare.check_allclose:
        warnings.append("config [compare] atol/rtol gate only with check_allclose = true: not applied")
    algorithm = config.calibration.algorithm
    if "percentile" in cal and algorithm not in ("percentile", "auto") and "int8" in config.build.precisions:
        used = "used by algorithms percentile and auto"
        warnings.append(f"config [calibration] percentile: {used}, not {algorithm}")
    return warnings + [f"config {note}" for note in _seeds(config)]


def _seeds(config: PipelineConfig) -> list[str]:
    """What calibration.sources.seed_unused says of each seed the config gave beside its data (a
    seed file data does not use). A data spec ``random:N`` naming another seed is refused
    (CalibrationError)."""
    from calibration.sources import seed_unused

    notes = []
    for section in ("compare", "calibration"):
        settings = getattr(config, section)
        if "seed" in config.given.get(section, ()) and settings.data:
            names = (f"config [{section}] data", f"[{section}] seed")
            if note := seed_unused(settings.data, settings.seed, names):
                notes.append(note)
    return notes


def _check_sections(config: PipelineConfig, target: Target, bundled: bool) -> None:
    """Every value a later stage would refuse, refused now: before export, build and profile ran."""
    cmp, cal, p = config.compare, config.calibration, config.profile
    for where, value in (
        ("compare.samples", cmp.samples),
        ("compare.batch_size", cmp.batch_size),
        ("calibration.samples", cal.samples),
        ("calibration.batch_size", cal.batch_size),
    ):
        if value < 1:
            raise InputError(f"config {where} must be >= 1, got {value}")
    for section, settings in (("compare", cmp), ("calibration", cal)):  # numpy takes no negative seed
        if settings.seed < 0:
            raise InputError(f"config {section}.seed must be >= 0, got {settings.seed}")
    for where, threads in (("build.threads", config.build.threads), ("profile.threads", p.threads)):
        if threads is not None and threads < 1:
            raise InputError(f"config {where} must be >= 1, got {threads}")
    if "int8" in config.build.precisions:
        _check_calibration(cal)
    from calibration.errors import CalibrationError
    from calibration.sources import check_spec

    try:
        for section, settings in (("compare", cmp), ("calibration", cal)):
            # config.path("") is the config's folder, not data the user named
            if "data" in config.given.get(section, ()) and not settings.data.strip():
                raise InputError(f"config [{section}] data is empty: name a file or folder (or random)")
            try:
                check_spec(settings.data)
            except CalibrationError as exc:
                raise InputError(f"config [{section}] data: {exc}") from None
        _seeds(config)
    except CalibrationError as exc:
        raise InputError(str(exc)) from None
    workdir, bundle = config.path(config.workdir).resolve(), bundle_dir(config).resolve()
    if config.bundle.enabled and (bundle == workdir or workdir.is_relative_to(bundle)):
        raise InputError(f"config bundle.output {bundle} holds the workdir: the bundle replaces that folder")
    if config.bundle.enabled:
        outside_cache(bundle, workdir, "config bundle.output")
    try:  # said in the config's names: "config compare.min_cosine", not the stage's "min_cosine"
        compare_gates(config)
        ProfileOptions(
            warmup_iterations=p.warmup,
            warmup_ms=p.warmup_ms,
            iterations=p.iterations,
            duration_s=p.duration_s,
            batch_sizes=tuple(p.batch_sizes),
            threads=p.threads,
        )
    except SettingError as exc:
        raise setting_named(exc, from_config=True) from None
    b = config.build
    options = backend_options({f.name: getattr(b, f.name) for f in fields(b)}, path=config.path)
    try:  # said in the config's names: "[build] dla_core", not build's "--dla-core"
        target.check_dla(options.get("dla_core"))
        check_option_values(None, BuildOptions(precision="fp32", target=target, **options))
    except InputError as exc:
        raise InputError(in_config_names(str(exc))) from None
    # a GPU target's bundle keeps the profiles and tf32 for the device's engine build, which is
    # TensorRT's whatever backend builds here (before, "unused" here and asked for by the bundle)
    kept = BUNDLED_OPTIONS if bundled and target.is_gpu else frozenset()
    tensorrt_only = user_names([k for k in options if k not in CPU_OPTIONS | kept])
    if b.backend == "onnxruntime" and tensorrt_only:
        raise InputError(
            f"config [build] {', '.join(tensorrt_only)}: TensorRT options, unused by the onnxruntime backend"
        )


def _check_calibration(cal: CalibrationSettings) -> None:
    """The [calibration] values calibration would refuse after export and the other builds."""
    from calibration.algorithms import AlgorithmOptions
    from calibration.errors import CalibrationError
    from calibration.images import Preprocess
    from calibration.qdq import QuantizeOptions
    from calibration.trt_cache import encode_version

    try:
        AlgorithmOptions(cal.algorithm, percentile=cal.percentile)
        QuantizeOptions(exclude_nodes=tuple(cal.exclude_nodes))
        if cal.preprocess:
            Preprocess.from_dict(cal.preprocess)
        if cal.trt_version is not None:
            encode_version(cal.trt_version)
    except CalibrationError as exc:
        raise InputError(f"config [calibration]: {exc}") from None


def _calibration_request(config: PipelineConfig, shapes: dict[str, tuple[int, ...]]) -> CalibrationRequest:
    c = config.calibration
    data = c.data if not c.data or is_random_spec(c.data) else str(config.path(c.data))
    settings = {f.name: getattr(c, f.name) for f in fields(CalibrationSettings)}
    return CalibrationRequest(**{**copy.deepcopy(settings), "data": data}, shapes=shapes, from_config=True)


def _calibration_fingerprint(
    request: BuildRequest, inputs: list[Any], backend: str = "auto"
) -> dict[str, Any] | None:
    """The calibration data's content (file hashes, or generator and seed) for the builds it shapes.

    Paths alone would let an edited calibration set reuse a stale artifact. int8 and fp16 builds
    calibrate or analyse on the data; an fp32 build on ONNX Runtime runs its artifact once on the
    data's first batch (build.data_batch) and records what that found ("loaded and run once", or
    "loaded, not run" on data that fails the model; a graph that fails it where the model runs is
    saved at a lower optimization level). ``backend``: the one that builds ("auto" where it resolves
    on another node); TensorRT runs its engine once on that batch too, but the engine does not
    depend on it and its build key holds none (a rebuild costs minutes). Data an fp32 build cannot
    feed the model is passed over by its build (random inputs then): keyed as none; a loader script
    that fails (:class:`~calibration.errors.LoaderFailed`) is refused here, by the first stage that
    reads it.
    """
    calib = request.calibration
    if not calib.data:
        return None
    if request.precision in ("fp16", "int8"):
        return calib.open(inputs).identity()
    if backend == "tensorrt":
        return None
    try:
        return calib.open(inputs).identity()
    except LoaderFailed:  # the user's script failed, before any build: refused, not passed over
        raise
    except CalibrationError:
        return None


def _find(files: list[Path], suffix: str) -> Path | None:
    return next((f for f in files if f.name.endswith(suffix)), None)


def _failure_text(compare_summary: dict[str, Any]) -> str:
    """The gates that failed, per output, as compare says them (``cosine 0.947650 < 0.99``)."""
    parts = []
    for name, m in compare_summary.get("outputs", {}).items():
        if m.get("failures"):
            parts.append(f"{name}: {', '.join(m['failures'])}")
    return "; ".join(parts) or "see the compare figures"  # a record from before failures were listed
