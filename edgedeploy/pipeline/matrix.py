"""``edgedeploy matrix``: every (model, target, precision) cell of a ``[matrix]`` config.

The work is a small graph, run by an executor (edgedeploy.executors):

- **export**, once per model, where the model's source is (the driver's machine);
- **precision** (fp16 with its fp32 islands, int8 calibration and Q/DQ), once per model and
  precision *family*: Q/DQ placement and weight bits depend on whether the target is a GPU or a
  CPU (edgedeploy.precision.int8), so targets of one family share one calibration. It reads the
  calibration data, so it too runs on the driver's machine;
- **cell**: the backend build, compare against fp32 and profile, on the cell's own board (Ray:
  the task requests the resource ``target:<name>``; see edgedeploy.executors);
- **bundle**, one per (model, target), from the cells that ran, written here.

Every stage's output is keyed by a hash of its inputs, options and tool versions (the same
ingredients as ``edgedeploy run``'s stage keys) and travels back as bytes; the driver checks
each file's sha256 and writes it atomically into ``workdir/.edgedeploy-cache/matrix/<key>/``.
A rerun looks there first (verifying content, not existence), so a cell built on any node is
never built again and only what is missing runs. A failing cell is recorded with its one-line
reason and never stops the others; Ctrl-C cancels the tasks still running and keeps every
finished cell. Failures are not cached: a rerun tries them again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from calibration.errors import CalibrationError, LoaderFailed
from calibration.feeds import DataSource
from calibration.modelinfo import model_io
from calibration.sources import is_random_spec
from edgedeploy import __version__
from edgedeploy.config import PipelineConfig
from edgedeploy.errors import BudgetMissed, EdgeDeployError, GateFailed, first_line
from edgedeploy.fileio import (
    atomic_dir,
    atomic_write_bytes,
    intact_record,
    scratch_beside,
    scratch_dir,
    sealed,
    sha256_bytes,
    sha256_file,
    sha256_json,
)
from edgedeploy.options import BuildRequest, KeptFeeds, OpenedSources, parse_profiles
from edgedeploy.pipeline.cache import CACHE_DIR, StageCache
from edgedeploy.pipeline.executors import (
    Executor,
    Failed,
    Placement,
    Produced,
    node_versions_task,
    target_resource,
    timing_lock,
)
from edgedeploy.pipeline.matrix_config import Cell, CellPlan, MatrixConfig, matrix_bundle_stage
from edgedeploy.pipeline.run import (
    _calibration_fingerprint,
    _resolve_source,
    _source_fingerprint,
    build_key_request,
    build_request,
    bundle_build,
    bundle_report_writer,
    check_compared_outputs,
    check_op_types,
    compare_gates,
    compare_source,
    export_options,
    known_shapes,
    precision_family,
    profile_options,
    profile_shapes,
    refuse_board_files,
    refuse_profiles_missing,
    refuse_unranged_dims,
)
from edgedeploy.results import to_jsonable
from edgedeploy.stages.build import build, make_precision
from edgedeploy.stages.bundle import (
    BundleArtifact,
    check_bundle_output,
    make_bundle,
    tool_versions,
    verify_bundle,
)
from edgedeploy.stages.compare import Gates, compare, run_pair
from edgedeploy.stages.compare.outputs import compared_file, unapplied
from edgedeploy.stages.export import ExportOptions, export, is_onnx_path, module_search_path
from edgedeploy.stages.precision.budget import AccuracyBudget, refuse_top1_without_scores
from edgedeploy.stages.profile import ProfileOptions, profile
from edgedeploy.stages.report import plotting_missing
from edgedeploy.stages.report.data import at_batch, shown_batches, speedup_over_fp32
from edgedeploy.stages.report.load import REPORT_SIDECARS
from edgedeploy.stages.report.matrix import write_matrix_report
from edgedeploy.stats import slower_on_target
from edgedeploy.targets import Target
from edgedeploy.ui import QUIET, Ui

STORE_DIR = "matrix"
# What a board's cells are keyed on besides their inputs: the versions of these, as installed there.
NODE_PACKAGES = ("edgedeploy", "onnx", "onnxruntime", "polygraphy", "onnxslim", "numpy", "tensorrt")

# ---------------------------------------------------------------- content-addressed store


@dataclass
class Record:
    key: str
    directory: Path
    files: dict[str, Path]  # file name -> path in the store
    result: dict[str, Any]
    node: str


class ArtifactStore:
    """Stage outputs by stage key: ``<key>/record.json`` plus the files, each checked by sha256, and
    the record by a digest of its own (as ``run``'s stage records, pipeline/cache.py)."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / CACHE_DIR / STORE_DIR

    def lookup(self, key: str, said: Callable[[str], None] | None = None) -> Record | None:
        """The finished work of ``key``, or None; ``said`` hears why an entry there does not count
        (as ``run`` says why it redoes a stage)."""
        record, why = self._check(key)
        if why is not None and said is not None:
            said(why)
        return record

    def _check(self, key: str) -> tuple[Record | None, str | None]:
        directory = self.root / key
        try:
            record = json.loads((directory / "record.json").read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError):
            return None, f"its record {directory / 'record.json'} cannot be read"
        if not intact_record(record):
            # edited by hand (a cosine, a gate), or written before records had digests
            return None, f"its record {directory / 'record.json'} was edited since it was written"
        files: dict[str, Path] = {}
        for name, digest in record.get("files", {}).items():
            path = directory / name
            if not path.is_file() or sha256_file(path) != digest:
                return None, f"{path} changed since it was made"
            files[name] = path
        return Record(key, directory, files, record.get("result", {}), record.get("node", "")), None

    def put(self, key: str, produced: Produced) -> Record:
        """Write what a task sent back, atomically: the whole key folder appears at once or not at all."""
        final = self.root / key
        with atomic_dir(final) as tmp:
            digests = {}
            for name, data in produced.files.items():
                if os.path.basename(name) != name or name in ("", ".", "..", "record.json"):
                    raise ValueError(f"a task sent back a file with a bad name: {name!r}")
                atomic_write_bytes(tmp / name, data)
                digests[name] = sha256_bytes(data)
            record = {
                "key": key,
                "files": digests,
                "result": to_jsonable(produced.result),
                "node": produced.node,
                "seconds": round(produced.seconds, 3),
            }
            (tmp / "record.json").write_text(json.dumps(sealed(record), indent=2) + "\n")
        found = self.lookup(key)
        if found is None:  # pragma: no cover - we just wrote it
            raise OSError(f"cannot read back {final}")
        return found


# ---------------------------------------------------------------- tasks (run in workers)


def _read_dir(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def export_task(
    source: str, base_dir: str, dest_name: str, options: ExportOptions
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The export stage in a scratch folder; the fp32 ONNX (with any external data) comes back."""
    with scratch_dir("export") as scratch:
        out = Path(scratch) / "out"
        out.mkdir()
        with module_search_path(Path(base_dir)):
            result = export(source, out / dest_name, options)
        said = {"sha256": result.sha256, "exporter": result.exporter, "warnings": result.warnings}
        return _read_dir(out), said


class _StepsKept(GateFailed):
    """A precision task's missed accuracy budget, with its steps file (name -> bytes): the driver
    writes it beside the model's bundles and names it in the cell's reason."""

    def __init__(self, message: str, files: dict[str, bytes]) -> None:
        super().__init__(message)
        self.files = files


def precision_task(
    fp32: dict[str, bytes], fp32_name: str, request: BuildRequest, feeds: KeptFeeds | None = None
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """fp16 / int8 ONNX from the fp32 model (calibration included), for one precision family.

    ``feeds``: the driver's kept feeds of the request's data (:attr:`CalibrationRequest.feeds`),
    passed beside the request so that the executor shares one copy among the precision tasks
    (:func:`_feeds_apart`)."""
    if feeds is not None:
        request = replace(request, calibration=replace(request.calibration, feeds=feeds))
    ui = Ui(quiet=True)
    with scratch_dir("precision") as scratch, timing_lock(exclusive=False):
        _write_files(Path(scratch) / "in", fp32)
        out = Path(scratch) / "out"
        # a top1 budget's scores, refused before the calibration or conversion: a PyTorch source's
        # export is first seen here (an ONNX source was checked at load, by run.check_config)
        if request.accuracy_budget:
            budget = AccuracyBudget.parse(request.accuracy_budget)
            refuse_top1_without_scores(budget, Path(scratch) / "in" / fp32_name)
        try:
            artifact = make_precision(Path(scratch) / "in" / fp32_name, request, out, ui)
        except BudgetMissed as exc:  # a missed accuracy budget: its steps go back, the scratch goes
            reason, name = first_line(exc).replace(str(exc.steps), exc.steps.name), exc.steps.name
            raise _StepsKept(reason, {name: exc.steps.read_bytes()}) from None
        return _read_dir(out), {
            "model": artifact.path.name,
            "info": to_jsonable(artifact.info),
            "warnings": [m for m in ui.messages if m.startswith("warning")],
        }


def cell_task(
    fp32: dict[str, bytes],
    fp32_name: str,
    precision_files: dict[str, bytes],
    model_name: str,
    request: BuildRequest,
    feeds: list[dict[str, Any]],
    data_description: dict[str, Any],
    gates: Gates,
    profile_options: ProfileOptions | None,
    threads: int | None,
    kept: KeptFeeds | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """One cell on its board: backend build of the precision ONNX, compare with fp32, profile.
    The profile comes back apart (``profile``, ``profile_warnings``): the driver stores it under a
    key of its own (:func:`profile_task` makes it again from the stored artifact).

    ``kept``: the first batch of the request's kept feeds (:attr:`CalibrationRequest.feeds`, which
    its build reads), passed beside the request so that the executor shares one copy among the
    cells of one data set (:func:`_feeds_apart`), as :func:`precision_task` is passed its feeds."""
    if kept is not None:
        request = replace(request, calibration=replace(request.calibration, feeds=kept))
    ui = Ui(quiet=True)
    with scratch_dir("cell") as scratch:
        inp, out = Path(scratch) / "in", Path(scratch) / "out"
        with timing_lock(exclusive=False):
            _write_files(inp, {**fp32, **precision_files})
            # the precision step's file was made from fp32 with the request's calibration data: not
            # "unused", and its first batch is read for the fp32 inputs the driver kept the feeds for
            made_from = inp / fp32_name if model_name != fp32_name else None
            outcome = build(inp / model_name, request, out, ui, made_from=made_from)
            artifact = outcome.build.artifact
            compared = compare(
                inp / fp32_name, compared_file(outcome.precision.path, artifact), feeds, gates,
                data_description, threads=threads,
            )  # fmt: skip
        for warning in unapplied(compared):
            ui.warn(warning)
        profiled = None
        if profile_options is not None:
            profiled = _profile_cell(
                inp / fp32_name, artifact, request, feeds, data_description, profile_options
            )
        result = {
            "backend": outcome.build.backend,
            "backend_note": outcome.backend_note,
            "model": outcome.precision.path.name,
            "artifact": artifact.name,
            "size_bytes": outcome.precision.path.stat().st_size,  # the precision ONNX, as run's table
            "info": to_jsonable({**outcome.precision.info, **outcome.build.info}),
            "compare": to_jsonable(compared.summary()),
            "warnings": [m for m in ui.messages if m.startswith("warning")],
            **(profiled or {"profile": None, "profile_warnings": []}),
        }
        return _read_dir(out), result


def profile_task(
    fp32: dict[str, bytes],
    fp32_name: str,
    cell_files: dict[str, bytes],
    artifact_name: str,
    request: BuildRequest,
    feeds: list[dict[str, Any]],
    data_description: dict[str, Any],
    profile_options: ProfileOptions,
    kept: KeptFeeds | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The profile of a cell whose build and compare are stored (its key matched) but whose
    profile options changed: the stored artifact (``cell_files``, an engine with its sidecar) timed
    on its board, as :func:`cell_task` times it, with nothing built or compared again."""
    if kept is not None:
        request = replace(request, calibration=replace(request.calibration, feeds=kept))
    with scratch_dir("profile") as scratch:
        inp = Path(scratch) / "in"
        with timing_lock(exclusive=False):
            _write_files(inp, {**fp32, **cell_files})
        profiled = _profile_cell(
            inp / fp32_name, inp / artifact_name, request, feeds, data_description, profile_options
        )
        return {}, profiled


def _profile_cell(
    fp32: Path,
    artifact: Path,
    request: BuildRequest,
    feeds: list[dict[str, Any]],
    data_description: dict[str, Any],
    options: ProfileOptions,
) -> dict[str, Any]:
    """A cell's profile (``profile``) and the warnings it gave (``profile_warnings``)."""
    timed_on = _profile_data(fp32, request, feeds, data_description)
    with timing_lock(exclusive=True):  # alone on this machine
        profiled = profile(artifact, options, data=timed_on)
    return {
        "profile": to_jsonable(profiled.summary()),
        "profile_warnings": [f"warning: {w}" for w in profiled.warnings],
    }


def _profile_data(
    fp32: Path, request: BuildRequest, feeds: list[dict[str, Any]], description: dict[str, Any]
) -> DataSource | None:
    """What a cell is timed on, as run's profile stage takes it (run._profile_data): the [compare]
    data's feeds, else the first batch of the [calibration] data (the one its build read, sent with
    the request); None, random inputs, when both are random or the calibration data does not feed
    the model (its build passed over it too)."""
    inputs = model_io(fp32)[0]
    if feeds and not description.get("synthetic"):
        details = {k: v for k, v in description.items() if k not in ("kind", "spec", "synthetic", "limit")}
        return DataSource(
            str(description.get("kind")), str(description.get("spec")), inputs, lambda: feeds, details,
            limit=description.get("limit"),
        )  # fmt: skip
    calibration = request.calibration
    if not calibration.data or is_random_spec(calibration.data):
        return None
    try:
        source = calibration.open(inputs)
        first = source.first_feed()
    except LoaderFailed:
        raise
    except CalibrationError:
        return None
    return replace(source, _make=lambda: [first])


# ---------------------------------------------------------------- results


@dataclass
class CellResult:
    model: str
    target: str
    precision: str
    status: str  # ok | failed | skipped
    reason: str = ""  # why it failed or was skipped (one line)
    backend: str = ""
    node: str = ""  # where the cell ran (Ray node id, or local:<host>)
    cached: bool = False  # found in the store: no work was done
    size_bytes: int | None = None
    # median at batch_size: the smallest batch size every profiled cell of its (model, target) has,
    # else the smallest it shares with that fp32 cell, else its own smallest (report's rule)
    latency_ms: float | None = None
    batch_size: int | None = None
    speedup: float | None = None  # the same target's fp32 p50 over latency_ms, both at batch_size
    no_speedup: str | None = None  # why speedup is None where latency_ms is not
    min_cosine: float | None = None
    # the cell's [compare] min_cosine, which its min cosine is printed against (ui.cosine_figure)
    min_cosine_gate: float | None = None
    top1: float | None = None
    gate: str = ""  # pass | FAIL | "" (no comparison)
    seconds: float | None = None  # how long the task ran (when it ran now)
    artifact: str = ""
    compare: dict[str, Any] | None = field(default=None, repr=False)
    profile: dict[str, Any] | None = field(default=None, repr=False)
    # what making its artifact and its cell said (calibrated on synthetic data, no preprocessing
    # declared...), also when the cell came from the store
    warnings: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """What two runs of the same matrix must agree on (not timings or nodes)."""
        return {
            k: getattr(self, k)
            for k in (
                "model",
                "target",
                "precision",
                "status",
                "reason",
                "backend",
                "size_bytes",
                "min_cosine",
                "min_cosine_gate",
                "top1",
                "gate",
            )
        }


@dataclass
class MatrixResult:
    executor: str
    cells: list[CellResult]
    bundles: dict[str, str]  # "model/target" -> bundle folder
    wall_seconds: float
    tasks_submitted: int
    report: str | None = None  # matrix.html in the workdir, when matplotlib is installed

    def __post_init__(self) -> None:
        """Each profiled cell's p50 and speed-up over fp32, at a batch size both were profiled at:
        cells of one (model, target) may be profiled at other batch sizes ([[matrix.cells]])."""
        groups: dict[tuple[str, str], list[CellResult]] = {}
        for cell in self.cells:
            if cell.status == "ok":
                groups.setdefault((cell.model, cell.target), []).append(cell)
        for cells in groups.values():
            base = next((c.profile for c in cells if c.precision == "fp32"), None)
            batches = shown_batches([(c.precision, c.profile) for c in cells])
            for cell, batch in zip(cells, batches, strict=True):
                if batch is None:
                    continue
                cell.latency_ms = at_batch(cell.profile, batch).get("median_ms")
                cell.batch_size = int(batch) if batch.isdigit() else None
                cell.speedup, cell.no_speedup = speedup_over_fp32(cell.precision, cell.profile, batch, base)

    @property
    def ok(self) -> bool:
        """No cell failed and every gate that was checked passed (skipped cells do not count)."""
        return all(c.status != "failed" and c.gate != "FAIL" for c in self.cells)


# ---------------------------------------------------------------- planning helpers


def _shapes(config: PipelineConfig) -> dict[str, tuple[int, ...]]:
    return {i.name: i.shape for i in export_options(config).inputs}


@dataclass
class _ModelState:
    name: str
    config: PipelineConfig
    fp32: Record | None = None
    shared_fp32: Any = None  # the executor's handle to the fp32 bytes
    inputs: list[Any] = field(default_factory=list)


@dataclass
class _Pending:
    """A cell waiting for its precision artifact, with everything its task needs."""

    plan: CellPlan
    key: str
    request: BuildRequest
    feeds: list[dict[str, Any]]
    description: dict[str, Any]
    gates: Gates
    profile_options: ProfileOptions | None
    # the key of its profile, stored apart from its build and compare (``key``): a change of the
    # profile options times the stored artifact again and builds nothing (None: no profile)
    profile_key: str | None = None


def _split(produced: Produced) -> tuple[Produced, Produced]:
    """A cell task's outcome as the two records the store keeps: its build and compare (with the
    files), and its profile."""
    result = dict(produced.result)
    profiled = {"profile": result.pop("profile", None), "warnings": result.pop("profile_warnings", [])}
    return replace(produced, result=result), Produced({}, profiled, produced.node, produced.seconds)


def _with_profile(cell: Record, profiled: Record | None, spec: str | None = None) -> Record:
    """The cell's record as the tables read it: its build and compare, and its profile (and what
    timing it said), where it was profiled. ``spec``: the data this matrix times the cell on, as its
    config names it (:func:`_timed_spec`), said in place of the one the stored profile holds: the
    record is keyed by the data's content, and one made in another project (a copy of this one, a
    CI cache restored elsewhere) named that project's file."""
    if profiled is None:
        return replace(cell, result={**cell.result, "profile": None})
    warnings = [*cell.result.get("warnings", []), *profiled.result.get("warnings", [])]
    profile = profiled.result.get("profile")
    if spec is not None and isinstance(profile, dict) and isinstance(profile.get("settings"), dict):
        settings = profile["settings"]
        data = settings.get("data")
        if isinstance(data, dict) and not data.get("synthetic") and "spec" in data:
            profile = {**profile, "settings": {**settings, "data": {**data, "spec": spec}}}
    return replace(cell, result={**cell.result, "profile": profile, "warnings": warnings})


def _timed_spec(pending: _Pending) -> str | None:
    """The spec of the data :func:`_profile_data` times ``pending``'s cell on, read from this matrix's
    config: its [compare] data, else its [calibration] data; None for random inputs."""
    if pending.feeds and not pending.description.get("synthetic"):
        spec = pending.description.get("spec")
        return None if spec is None else str(spec)
    data = pending.request.calibration.data
    return data if data and not is_random_spec(data) else None


Progress = Callable[[CellResult, int, int], None]


def _summarise(result: CellResult, record: Record) -> None:
    r = record.result
    result.backend = r.get("backend", "")
    result.size_bytes = r.get("size_bytes")
    result.artifact = str(record.files.get(r.get("artifact", ""), ""))
    result.compare, result.profile = r.get("compare"), r.get("profile")
    outs = list(((result.compare or {}).get("outputs") or {}).values())
    cosines = [o["cosine"] for o in outs if o.get("cosine") is not None]
    # as compare measured it: printed against the cell's gate with the digits that tell them apart
    result.min_cosine = min(cosines) if cosines else None
    result.top1 = next((o["top1_agreement"] for o in outs if o.get("top1_agreement") is not None), None)
    result.gate = "" if result.compare is None else ("pass" if result.compare.get("passed") else "FAIL")
    # its smallest batch size until the MatrixResult places it beside the other cells of its target
    (own,) = shown_batches([(result.precision, result.profile)])
    result.latency_ms = at_batch(result.profile, own).get("median_ms")
    result.node = record.node


# ---------------------------------------------------------------- the run


def _keep_failure_files(
    matrix: MatrixConfig, model: str, pendings: list[_Pending], failed: Failed, ui: Ui
) -> str:
    """The failure's reason, its files (a missed budget's steps) written where the model's bundles
    go as ``<target>.<name>`` for the first target waiting on it, and named in the reason."""
    reason = failed.reason
    if not failed.files or not pendings:
        return reason
    for name, data in failed.files.items():
        if os.path.basename(name) != name or not name.endswith(".json"):
            continue  # not a file a precision task leaves
        path = matrix.kept_file(model, pendings[0].plan.target.name, name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as exc:
            ui.warn(f"{model}: cannot write {path}: {first_line(exc)}")
            continue
        reason = reason.replace(name, str(path))
    return reason


def run_matrix(
    matrix: MatrixConfig,
    executor: Executor,
    ui: Ui = QUIET,
    on_cell: Progress | None = None,
    extra_versions: dict[str, str] | None = None,
) -> MatrixResult:
    """Run every cell that is not already in the store; a failing cell never stops the others."""
    matrix.workdir.mkdir(parents=True, exist_ok=True)
    # the store's folder, made now: a matrix stopped before any of its work finished leaves it empty,
    # which `edgedeploy report` tells from a folder no matrix made (stages/report/load.py)
    ArtifactStore(matrix.workdir).root.mkdir(parents=True, exist_ok=True)
    # the calibration data the cells' keys hash, opened once for all of them (a loader script's
    # feeds kept for the run); the tasks open it themselves: their requests go to other processes
    with scratch_beside(matrix.workdir / "calibration", "feeds") as kept:
        return _run_matrix(matrix, executor, ui, on_cell, extra_versions, OpenedSources(kept))


def _run_matrix(
    matrix: MatrixConfig,
    executor: Executor,
    ui: Ui,
    on_cell: Progress | None,
    extra_versions: dict[str, str] | None,
    opened: OpenedSources,
) -> MatrixResult:
    start = time.perf_counter()
    workdir = matrix.workdir
    store = ArtifactStore(workdir)
    versions = tool_versions(extra_versions)
    results = {
        p.cell: CellResult(
            p.cell.model,
            p.cell.target,
            p.cell.precision,
            "planned",
            min_cosine_gate=compare_gates(p.config).min_cosine,
        )
        for p in matrix.cells
    }
    total = len(results)
    finished = 0

    def note(cell: Cell, record: Record, who: str) -> None:
        """The warnings a task said while making ``record``: on the cell, and said once per ``who``."""
        for said in record.result.get("warnings", []):
            warning = str(said).removeprefix("warning: ")
            if warning not in results[cell].warnings:
                results[cell].warnings.append(warning)
            ui.warn_once(f"{who}: {warning}")

    def finish(
        cell: Cell,
        status: str,
        reason: str = "",
        record: Record | None = None,
        cached: bool = False,
        seconds: float | None = None,
    ) -> None:
        nonlocal finished
        r = results[cell]
        r.status, r.reason, r.cached, r.seconds = status, reason, cached, seconds
        if record is not None:
            _summarise(r, record)
            note(cell, record, cell.label())
        finished += 1
        word = {"ok": "cached" if cached else "ok", "failed": "FAILED", "skipped": "skipped"}[status]
        where = f" on {r.node[:12]}" if r.node and not cached else ""
        ui.info(f"[{finished}/{total}] {cell.label()}: {word}{where}" + (f" ({reason})" if reason else ""))
        if on_cell is not None:
            on_cell(r, finished, total)

    models = {name: _ModelState(name, cfg) for name, cfg in matrix.models.items()}
    by_model: dict[str, list[CellPlan]] = {name: [] for name in models}
    for plan in matrix.cells:
        reason = plan.skip or executor.skip_reason(plan.target, plan.config.build.backend)
        if reason:
            finish(plan.cell, "skipped", reason)
        else:
            by_model[plan.cell.model].append(plan)

    waiting: dict[str, list[_Pending]] = {}  # precision key -> cells that need it
    precision_records: dict[str, tuple[Record, Any]] = {}  # key -> record, shared handle to its files
    feeds_cache: dict[str, tuple[list[dict[str, Any]], DataSource]] = {}
    shared_feeds: dict[int, Any] = {}
    shared_calibration: dict[tuple[str, str, bool], Any] = {}  # kept feeds -> the executor's handle
    # A cell's key holds the tool versions of the node that builds it: the driver's here, a board's
    # (its TensorRT, say) on a cluster, asked once per target before its cells are keyed.
    node_versions: dict[str, dict[str, Any]] = {}
    node_failed: dict[str, str] = {}  # target -> why its node could not be asked
    deferred: dict[str, list[tuple[_ModelState, CellPlan]]] = {}
    held = _board_bundles(matrix)
    # While a bundle holds the board's files, builds wait until every cell is keyed (the exports and
    # the boards' versions are back): a cell that would make that bundle again is refused before
    # any build, not after the cells planned before it started theirs.
    holding: list[tuple[Any, Callable[..., Any], tuple[Any, ...], Placement]] | None = [] if held else None
    preparing = 0  # exports and version probes submitted and not back yet

    def submit(tag: Any, fn: Callable[..., Any], args: tuple[Any, ...], placement: Placement) -> None:
        """A precision or cell task, submitted now or, while ``holding``, once every cell is keyed."""
        if holding is not None:
            holding.append((tag, fn, args, placement))
        else:
            executor.submit(tag, fn, args, placement)

    def release() -> None:
        nonlocal holding
        if holding is not None and preparing == 0:
            # every cell keyed: a held bundle's cells are all cached (any other was refused), and
            # one that is made again all the same is refused now, as run refuses its bundle stage
            _refuse_remade_board_bundles(matrix, models, results, held)
            queued, holding = holding, None
            for job in queued:
                executor.submit(*job)

    def share_kept(feeds: KeptFeeds | None) -> Any:
        """The executor's handle to kept feeds (all of them, or the first batch), one per data set:
        by the source they are of, their sha256 and whether they are the first batch (not their
        bytes). Ray: put once, not sent by value with each task that reads them."""
        if feeds is None:
            return None
        which = (feeds[0], feeds[2], feeds[3])
        if which not in shared_calibration:
            shared_calibration[which] = executor.share(feeds)
        return shared_calibration[which]

    def submit_cell(state: _ModelState, pending: _Pending, precision: tuple[Record, Any] | None) -> None:
        precision_bytes = precision[1] if precision is not None else {}
        fp32_name = _fp32_name(state)
        model_name = precision[0].result["model"] if precision is not None else fp32_name
        request, first = _feeds_apart(pending.request)  # the first batch, shared among the cells
        submit(
            ("cell", pending),
            cell_task,
            (
                state.shared_fp32,
                fp32_name,
                precision_bytes,
                model_name,
                request,
                pending.feeds,
                pending.description,
                pending.gates,
                pending.profile_options,
                pending.plan.config.build.threads,
                share_kept(first),
            ),
            Placement(resource=target_resource(pending.plan.target)),
        )

    def submit_profile(state: _ModelState, pending: _Pending, cell: Record) -> None:
        """Time the stored artifact of ``cell`` (``pending.feeds`` and the fp32 files are shared)."""
        assert pending.profile_options is not None
        request, first = _feeds_apart(pending.request)
        submit(
            ("profile", pending, cell),
            profile_task,
            (
                state.shared_fp32,
                _fp32_name(state),
                executor.share({n: p.read_bytes() for n, p in cell.files.items()}),
                cell.result["artifact"],
                request,
                pending.feeds,
                pending.description,
                pending.profile_options,
                share_kept(first),
            ),
            Placement(resource=target_resource(pending.plan.target)),
        )

    def plan_model(state: _ModelState) -> None:
        """After export: plan every cell whose node's tool versions are known; the others wait for them.
        A PyTorch model whose export has no tensor output is refused here, once, as run refuses it
        after its export (an ONNX source's: at load, run.check_config): every cell failed on it."""
        assert state.fp32 is not None
        fp32 = state.fp32.files[_fp32_name(state)]
        inputs, outputs = model_io(fp32)
        if not is_onnx_path(state.config.model.source):
            check_compared_outputs(fp32, outputs, matrix.model_keys(state.name))
        state.inputs = list(inputs)
        for plan in by_model[state.name]:
            if plan.target.name in node_failed:
                finish(plan.cell, "failed", node_failed[plan.target.name])
            elif plan.target.name in node_versions:
                plan_cell(state, plan)
            else:
                deferred.setdefault(plan.target.name, []).append((state, plan))

    def plan_cell(state: _ModelState, plan: CellPlan) -> None:
        """Key the cell, take it from the store when it is there, else submit what it is missing."""
        assert state.fp32 is not None
        if (
            not executor.same_machine
            and plan.config.build.backend == "tensorrt"
            and node_versions[plan.target.name].get("tensorrt") is None
        ):
            # as the local executor's skip_reason, which asks TensorRT itself where every task runs
            # here (package metadata can miss a TensorRT that imports): the node has no TensorRT
            reason = f"the node that announces target:{plan.target.name} has no TensorRT (backend tensorrt)"
            finish(plan.cell, "skipped", f"{reason}: install it there")
            return
        try:
            if not is_onnx_path(state.config.model.source):  # an ONNX source's: at load (run.check_config)
                # as run says them after its export: the precision task's build said --fp32-ops
                check_op_types(plan.config, state.fp32.files[_fp32_name(state)])
                if isinstance(plan.config.compare.min_top1, dict):  # names of outputs it must have
                    fp32 = state.fp32.files[_fp32_name(state)]
                    names = [o.name for o in model_io(fp32)[1]]
                    said = "config [compare] min_top1"
                    compare_gates(plan.config).check_top1_outputs(names, fp32.name, said)
            pending, precision_key, precision_request = _key_cell(
                plan, state.fp32.result["sha256"], state.inputs, versions, node_versions[plan.target.name],
                feeds_cache, opened, executor.same_machine,
            )  # fmt: skip
        except LoaderFailed:  # a loader script that fails: the matrix is refused, as run is (exit 2)
            raise
        except Exception as exc:  # bad calibration or compare data, an unknown op type: this cell only
            finish(plan.cell, "failed", first_line(exc))
            return
        hit = store.lookup(pending.key, lambda why: ui.info(f"{plan.cell.label()}: {why}: made again"))
        profiled = None
        if hit is not None and pending.profile_key is not None:
            said = plan.cell.label()
            profiled = store.lookup(
                pending.profile_key, lambda why: ui.info(f"{said}: profile: {why}: made again")
            )
        if hit is not None:
            made = store.lookup(precision_key) if precision_key is not None else None
            if made is not None:  # what making its artifact said, said again for the cached cell
                note(plan.cell, made, f"{state.name} {plan.cell.precision}")
            if profiled is not None or pending.profile_key is None:
                finish(
                    plan.cell, "ok", record=_with_profile(hit, profiled, _timed_spec(pending)), cached=True
                )
                return
        if (plan.cell.model, plan.cell.target) in held:
            # built or profiled, whatever its precision (one the bundle lacks, or that failed before),
            # the cell makes its bundle again over what the board wrote there: refused before any work
            check_bundle_output(matrix.bundle_dir(plan.cell.model, plan.cell.target))
        if id(pending.feeds) not in shared_feeds:  # one copy per compare data set, not one per cell
            shared_feeds[id(pending.feeds)] = executor.share(pending.feeds)
        pending.feeds = shared_feeds[id(pending.feeds)]
        if state.shared_fp32 is None:
            state.shared_fp32 = executor.share({n: p.read_bytes() for n, p in state.fp32.files.items()})
        if hit is not None:  # built and compared: its profile options changed, the stored artifact is timed
            submit_profile(state, pending, hit)
            return
        if precision_key is None:  # fp32: the exported model is the precision artifact
            submit_cell(state, pending, None)
            return
        if precision_key in precision_records:
            note(plan.cell, precision_records[precision_key][0], f"{state.name} {plan.cell.precision}")
            submit_cell(state, pending, precision_records[precision_key])
            return
        first_waiter = precision_key not in waiting
        waiting.setdefault(precision_key, []).append(pending)
        if not first_waiter:
            return
        hit = store.lookup(
            precision_key, lambda why: ui.info(f"{state.name} {plan.cell.precision}: {why}: made again")
        )
        if hit is not None:
            precision_done(state, precision_key, hit)
            return
        precision_request, feeds = _feeds_apart(precision_request)
        submit(
            ("precision", state.name, precision_key),
            precision_task,
            (state.shared_fp32, _fp32_name(state), precision_request, share_kept(feeds)),
            Placement(on_driver=True),
        )

    def precision_done(state: _ModelState, key: str, record: Record) -> None:
        files = {n: p.read_bytes() for n, p in record.files.items()}
        precision_records[key] = (record, executor.share(files))
        for pending in waiting.pop(key, []):
            note(pending.plan.cell, record, f"{state.name} {pending.plan.cell.precision}")
            submit_cell(state, pending, precision_records[key])

    try:
        for target in {p.target.name: p.target for ps in by_model.values() for p in ps}.values():
            resource = target_resource(target)
            if executor.same_machine or resource is None:
                node_versions[target.name] = versions
            else:
                probe = (NODE_PACKAGES, extra_versions)
                executor.submit(("versions", target.name), node_versions_task, probe, Placement(resource))
                preparing += 1
        for state in models.values():
            if not by_model[state.name]:
                continue
            source = _resolve_source(state.config)
            options = export_options(state.config)
            export_key = sha256_json(
                {
                    # the stored files carry the model's name: two models of one source (or of
                    # byte-identical files) shared an entry, and one's name was missing from it
                    "model": state.name,
                    "source": _source_fingerprint(state.config.model.source, state.config.base_dir),
                    "options": options,
                    "versions": versions,
                }
            )
            # a PyTorch source is exported every run (see run._export_stage): the cells after it
            # are keyed by the export's sha256, so an unchanged model redoes nothing else
            said = f"{state.name}: export"
            hit = (
                store.lookup(export_key, lambda why: ui.info(f"{said}: {why}: made again"))  # noqa: B023 (called now)
                if is_onnx_path(source)
                else None
            )
            if hit is not None:
                state.fp32 = hit
                plan_model(state)
                continue
            if is_onnx_path(source):  # exported again: its cells are built again (as run refuses it)
                for model, target_name in held:
                    if model == state.name:
                        check_bundle_output(matrix.bundle_dir(model, target_name))
            executor.submit(
                ("export", state.name, export_key),
                export_task,
                (source, str(state.config.base_dir), _fp32_name(state), options),
                Placement(on_driver=True),
            )
            preparing += 1
        while finished < total:
            release()  # every cell keyed once the exports and versions asked for are back
            tag, outcome = executor.next_done()
            kind = tag[0]
            if kind in ("versions", "export"):
                preparing -= 1
            if kind == "versions":
                target_name = tag[1]
                waiters = deferred.pop(target_name, [])
                if isinstance(outcome, Failed):
                    node_failed[target_name] = (
                        f"cannot ask the {target_name} node its versions: {outcome.reason}"
                    )
                    for _, plan in waiters:
                        finish(plan.cell, "failed", node_failed[target_name])
                    continue
                node_versions[target_name] = outcome.result
                for state, plan in waiters:
                    plan_cell(state, plan)
            elif kind == "export":
                _, name, key = tag
                state = models[name]
                if isinstance(outcome, Failed):
                    for plan in by_model[name]:
                        finish(plan.cell, "failed", f"export: {outcome.reason}")
                    continue
                for warning in outcome.result.get("warnings", []):
                    ui.warn(f"{name}: export: {warning}")
                state.fp32 = store.put(key, outcome)
                plan_model(state)
            elif kind == "precision":
                _, name, key = tag
                if isinstance(outcome, Failed):
                    pendings = waiting.pop(key, [])
                    reason = _keep_failure_files(matrix, name, pendings, outcome, ui)
                    for pending in pendings:
                        finish(pending.plan.cell, "failed", f"{pending.plan.cell.precision}: {reason}")
                    continue
                precision_done(models[name], key, store.put(key, outcome))
            elif kind == "profile":
                _, pending, cell = tag
                if isinstance(outcome, Failed):
                    results[pending.plan.cell].node = outcome.node
                    finish(pending.plan.cell, "failed", f"profile: {outcome.reason}")
                    continue
                assert pending.profile_key is not None
                profiled = store.put(pending.profile_key, outcome)
                finish(pending.plan.cell, "ok", record=_with_profile(cell, profiled), seconds=outcome.seconds)
            else:
                pending = tag[1]
                if isinstance(outcome, Failed):
                    results[pending.plan.cell].node = outcome.node
                    finish(pending.plan.cell, "failed", outcome.reason)
                    continue
                built, timed = _split(outcome)
                cell = store.put(pending.key, built)
                stored = store.put(pending.profile_key, timed) if pending.profile_key is not None else None
                finish(pending.plan.cell, "ok", record=_with_profile(cell, stored), seconds=outcome.seconds)
        release()  # every cell came from the store: not released in the loop
    except BaseException:
        executor.cancel()  # Ctrl-C: stop the cluster's tasks; finished cells are already in the store
        raise

    notes = _warn_slower(matrix, results, ui)
    bundles = _bundles(matrix, models, results, versions, ui)
    result = MatrixResult(
        executor=executor.name,
        cells=[results[p.cell] for p in matrix.cells],
        bundles=bundles,
        wall_seconds=round(time.perf_counter() - start, 3),
        tasks_submitted=int(getattr(executor, "submitted", 0)),
    )
    result.report = _matrix_report(result, workdir, ui, notes)
    return result


def _board_bundles(matrix: MatrixConfig) -> set[tuple[str, str]]:
    """The (model, target) pairs whose bundle's ``device/`` holds files the board wrote: made by this
    workdir (the config check refused any other) and left as they are while their cells are cached.
    Any of its cells that would be built (again, or for the first time: a precision the bundle
    lacks, one that failed before) makes that bundle again, so it is refused before any work."""
    if not matrix.base.bundle.enabled:
        return set()
    cache = StageCache(matrix.workdir)
    return {
        (name, target.name)
        for name in matrix.models
        for target in matrix.targets
        if refuse_board_files(
            matrix.bundle_dir(name, target.name), cache, matrix_bundle_stage(name, target.name)
        )
    }


def _warn_slower(matrix: MatrixConfig, results: dict[Cell, CellResult], ui: Ui) -> list[str]:
    """A low precision slower than fp32 on a (model, target) whose figures are the target's, said
    as ``run`` says it (:func:`~edgedeploy.stats.slower_on_target`); returned for the report."""
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for plan in matrix.cells:
        if (cell := results[plan.cell]).status == "ok":
            groups.setdefault((cell.model, cell.target), []).append(cell)
    notes = []
    for (model, target), cells in groups.items():
        slower = slower_on_target(target, [(c.precision, c.backend, c.profile) for c in cells])
        for precision, figures in slower.items():
            notes.append(f"{model}/{target}: {precision} ran slower than fp32 here ({figures})")
            ui.warn(notes[-1])
    return notes


def _matrix_report(result: MatrixResult, workdir: Path, ui: Ui, notes: list[str]) -> str | None:
    """matrix.html and matrix.md in the workdir; a warning, not a failure, without matplotlib."""
    missing = plotting_missing()
    if missing is not None:
        ui.warn(f"no matrix report: {missing}")
        return None
    rows = [{k: v for k, v in asdict(c).items() if k not in ("compare", "profile")} for c in result.cells]
    meta = {
        "executor": result.executor,
        "wall_seconds": result.wall_seconds,
        "tasks_submitted": result.tasks_submitted,
        "notes": notes,
    }
    return str(write_matrix_report(rows, result.bundles, workdir, meta).html)


def _fp32_name(state: _ModelState) -> str:
    return f"{state.name}.fp32.onnx"


def _feeds_apart(request: BuildRequest) -> tuple[BuildRequest, KeptFeeds | None]:
    """``request`` without the kept feeds it carries (:attr:`CalibrationRequest.feeds`), and those
    feeds: what :func:`precision_task` takes as an argument of its own. Carried inside the request,
    they travelled by value with each precision task (fp16, and int8 per target family), a copy in
    Ray's object store per task though every one runs on the driver's node; as their own argument
    they are shared once (``Executor.share``: ``ray.put``, which Ray's docs advise for a large
    argument passed to several tasks, "Anti-pattern: Passing the same large argument by value
    repeatedly harms performance"), and each task is passed the reference. A cell's request carries
    the first batch alone (its build reads no more), shared so among the cells of one data set."""
    feeds = request.calibration.feeds
    if feeds is None:
        return request, None
    return replace(request, calibration=replace(request.calibration, feeds=None)), feeds


def _key_cell(
    plan: CellPlan,
    fp32_sha: str,
    inputs: list[Any],
    versions: dict[str, Any],
    node_versions: dict[str, Any],
    feeds_cache: dict[str, tuple[list[dict[str, Any]], DataSource]],
    opened: OpenedSources,
    same_machine: bool,
) -> tuple[_Pending, str | None, BuildRequest]:
    """The cell's key (build, compare and profile keys' ingredients) and its precision artifact's key.

    ``versions`` are the driver's tools (export and precision run there), ``node_versions`` the
    tools of the node that builds, compares and profiles the cell. ``same_machine``: every task
    runs on this machine, and reads a loader script's kept feeds from where the driver kept them
    (else each task is sent their bytes: a precision task all of them, shared by every precision
    task once they are apart from the request, :func:`_feeds_apart`; a cell task the first).
    """
    config = plan.config
    request = build_request(config, plan.target, plan.cell.precision, _shapes(config))
    keyed = build_key_request(request, request.backend)  # "auto" resolves on the node: its options count
    keyed_data = replace(request, calibration=replace(request.calibration, opened=opened))
    # read once for every cell; an fp32 cell's too, whose build runs its artifact on the first batch
    calibration_data = _calibration_fingerprint(keyed_data, inputs, request.backend)
    precision_request = cell_request = request
    if request.calibration.data:  # the tasks read the data as the key hashed it, sent to them
        shared = keyed_data.calibration.open(inputs)  # the source the fingerprint read
        if calibration_data is None and shared.hash_feeds:
            # fp32 on TensorRT: no key holds the data, but build() reads its first batch all the same
            # (build.data_batch); a loader read here is kept for every cell, not run in each task.
            # Data that fails is the build's to pass over (random inputs then), as in any build; a
            # loader script that fails is refused (LoaderFailed), as the keys of other cells refuse it.
            try:
                shared.first_feed()
            except LoaderFailed:
                raise
            except CalibrationError:
                pass
        if calibration_data is not None and plan.cell.precision != "fp32":
            # the precision task calibrates on every feed
            sent = request.calibration.with_feeds_of(shared, inputs, as_paths=same_machine)
            precision_request = replace(request, calibration=sent)
        # a cell's task builds the precision ONNX made already, and its build reads the first feed
        # alone (build.data_batch): that one is sent, not the data's size per cell
        sent = request.calibration.with_feeds_of(shared, inputs, as_paths=same_machine, first_only=True)
        cell_request = replace(request, calibration=sent)
    build_key = sha256_json(
        {"model": plan.cell.model, "fp32": fp32_sha, "request": keyed, "versions": versions,
         "calibration_data": calibration_data, "node": node_versions}
    )  # fmt: skip
    cmp = config.compare
    shapes = _shapes(config)
    feeds_key = sha256_json(  # feeds read once per run for the cells that name the same data
        {
            "fp32": fp32_sha,
            # the file it is, whichever way its path is written (in/val, ./in/../in/val)
            "data": cmp.data if cmp.data.startswith("random") else os.path.realpath(config.path(cmp.data)),
            "samples": cmp.samples,
            "batch": cmp.batch_size,
            "seed": cmp.seed,
            "shapes": shapes,
        }
    )
    if feeds_key not in feeds_cache:
        source = compare_source(config, inputs, shapes)
        feeds_cache[feeds_key] = (list(source), source)
    feeds, source = feeds_cache[feeds_key]
    description = source.describe()
    gates = compare_gates(config)
    # dynamic dims [model] inputs leave open are timed as the compare data has them (see run.py)
    timed = profile_shapes(shapes, inputs, feeds, bool(description.get("synthetic")))[0]
    popts = profile_options(config, timed) if config.profile.enabled else None
    key = sha256_json(
        {
            "build": build_key,
            "compare": {"data": source.identity(), "gates": gates},  # the data, not its path as written
            "versions": node_versions,
        }
    )
    # what the profile reads: the cell's artifact (its key) and the profile options, nothing more
    profile_key = sha256_json({"cell": key, "profile": popts}) if popts is not None else None
    precision_key = None
    if plan.cell.precision != "fp32":
        precision_key = sha256_json(
            {
                "model": plan.cell.model,
                "fp32": fp32_sha,
                "precision": plan.cell.precision,
                "family": precision_family(plan.target, request),
                "fp16": request.fp16,
                "calibration": request.calibration.keyed(),  # the data as calibration_data says it
                "calibration_data": calibration_data,
                "fp16_analysis": request.fp16_analysis,
                "budget": request.accuracy_budget,
                "versions": versions,
            }
        )
    pending = _Pending(plan, key, cell_request, feeds, description, gates, popts, profile_key)
    return pending, precision_key, precision_request


def _bundles(
    matrix: MatrixConfig,
    models: dict[str, _ModelState],
    results: dict[Cell, CellResult],
    versions: dict[str, Any],
    ui: Ui,
) -> dict[str, str]:
    """One bundle per (model, target) from its cells that ran; made again only when they changed."""
    if not matrix.base.bundle.enabled:
        return {}
    cache = StageCache(matrix.workdir)
    made: dict[str, str] = {}
    for name, state in models.items():
        for target in matrix.targets:
            job = _bundle_job(matrix, state, target, results)
            if job is None:
                continue
            for note in job.notes:
                ui.warn(f"bundle {name}/{target.name}: {note}")
            try:
                made[f"{name}/{target.name}"] = _bundle_one(cache, job, state, target, ui)
            except EdgeDeployError as exc:
                ui.warn(f"bundle {name}/{target.name}: {first_line(exc)}")
    return made


@dataclass
class _BundleJob:
    """One (model, target) bundle as its cells that ran make it, and its stage record's key."""

    stage: str
    key: str
    config: PipelineConfig
    fp32: Path
    out: Path
    artifacts: list[BundleArtifact]
    gates: Gates
    primary: str | None
    build: dict[str, Any]
    notes: list[str]  # what the bundle takes otherwise than the config says


def _bundle_job(
    matrix: MatrixConfig, state: _ModelState, target: Target, results: dict[Cell, CellResult]
) -> _BundleJob | None:
    """The bundle of ``state``'s model on ``target`` from its cells that ran (None: none did)."""
    if state.fp32 is None:
        return None
    cells = [
        results[p.cell]
        for p in matrix.cells
        if p.cell.model == state.name and p.cell.target == target.name and results[p.cell].status == "ok"
    ]
    if not cells:
        return None
    plans = [p for p in matrix.cells if p.cell.model == state.name and p.cell.target == target.name]
    bundled = {c.precision for c in cells}
    notes = []
    gates = {compare_gates(p.config) for p in plans if p.cell.precision in bundled}
    strict = max(gates, key=lambda g: (g.min_cosine or 0.0, g.strictest_top1() or 0.0))
    if len(gates) > 1:  # one manifest, one set of gates for the device's verify.sh
        notes.append(
            f"its cells' gates differ; the manifest records the strictest (min cosine "
            f"{strict.min_cosine}, min top-1 {strict.min_top1})"
        )
    primary = matrix.base.bundle.primary or None
    if primary is not None and primary not in bundled:
        notes.append(f"bundle.primary {primary} was not built here")
        primary = None
    config = plans[0].config
    build = {"profiles": list(config.build.profiles), "tf32": config.build.tf32}  # the device builds the same
    artifacts = []
    for c in cells:
        artifact = Path(c.artifact)
        folder = artifact.parent
        files = sorted(folder.iterdir())
        model = next((f for f in files if f.name.endswith(f".{c.precision}.onnx")), artifact)
        artifacts.append(
            BundleArtifact(
                precision=c.precision,
                backend=c.backend,
                model=model,
                engine=artifact if artifact.suffix == ".engine" else None,
                calibration_cache=next((f for f in files if f.name.endswith(".calib.cache")), None),
                precision_plan=next((f for f in files if f.name.endswith(".plan.json")), None),
                extra_files=[f for f in files if f.name.endswith(REPORT_SIDECARS)],
                compare=c.compare,
                profile=c.profile,
                info=json.loads((folder / "record.json").read_text()).get("result", {}).get("info"),
            )
        )
    out = matrix.bundle_dir(state.name, target.name)
    key = sha256_json(
        {
            "fp32": state.fp32.result["sha256"],
            "cells": [c.row() for c in cells],
            "profiles": [c.profile for c in cells],  # the manifest's figures: a re-profiled cell remakes it
            "files": {str(a.model): sha256_file(a.model) for a in artifacts},
            "gates": strict,
            "primary": primary,
            "build": build,
            # without [build] profiles the manifest records bundle_build's (made with the reference
            # inputs, in do_bundle): bundles made before it recorded none, and are made again
            "unranged": "bundle_build" if not build["profiles"] else None,
            "version": __version__,
            "dir": str(out),
        }
    )
    fp32 = state.fp32.files[_fp32_name(state)]
    stage = matrix_bundle_stage(state.name, target.name)
    return _BundleJob(stage, key, config, fp32, out, artifacts, strict, primary, build, notes)


def _bundle_damaged(record: dict[str, Any]) -> str | None:
    """Why a recorded bundle is made again although its key matches: it fails its check."""
    check = verify_bundle(Path(record["directory"]))
    return None if check.ok else f"the bundle {record['directory']} fails its check"


def _refuse_remade_board_bundles(
    matrix: MatrixConfig,
    models: dict[str, _ModelState],
    results: dict[Cell, CellResult],
    held: set[tuple[str, str]],
) -> None:
    """Refuse (check_bundle_output's line) a bundle whose ``device/`` holds the board's files and
    that would be made again although every cell of it is cached: its own inputs changed
    (``[bundle] primary``, the edgedeploy release), as ``run`` refuses its bundle stage."""
    cache = StageCache(matrix.workdir)
    targets = {t.name: t for t in matrix.targets}
    for name, target_name in sorted(held):
        job = _bundle_job(matrix, models[name], targets[target_name], results)
        if job is None:  # no cell of it ran: no bundle is made, the board's stays
            continue
        record = cache.lookup(job.stage, job.key)
        if record is None or _bundle_damaged(record) is not None:
            check_bundle_output(job.out)


def _bundle_one(cache: StageCache, job: _BundleJob, state: _ModelState, target: Target, ui: Ui) -> str:
    config, fp32, out = job.config, job.fp32, job.out

    def do_bundle() -> tuple[list[Path], dict[str, Any]]:
        inputs, outputs = model_io(fp32)
        reference = compare_source(config, list(inputs), _shapes(config))
        ref_in = next(iter(reference))
        if target.kind != "cpu" and not config.build.profiles:  # the device's engine needs a shape range
            # a [[matrix.cells]] entry for this model and target: [build] profiles would reach every
            # model's cells (refused where a model lacks the input); any backend takes it for the bundle
            entry = (
                f'a [[matrix.cells]] entry of model = "{state.name}", target = "{target.name}" and '
                "build = { profiles = {profiles} }"
            )
            refuse_unranged_dims(inputs, known_shapes(reference, ref_in), "[build] profiles", entry)
        elif target.kind != "cpu":  # and verify.sh runs the reference inputs there
            from edgedeploy.backends.trt_plan import resolve_profiles

            given = resolve_profiles(fp32, parse_profiles(config.build.profiles))
            refuse_profiles_missing(ref_in, given, "[build] profiles")
        ref_out, _ = run_pair(fp32, fp32, [ref_in])
        engines = [a.engine for a in job.artifacts if a.engine is not None]
        device_build = bundle_build(config, fp32, list(inputs), target, ref_in, engines)  # as bundle create's
        result = make_bundle(
            out,
            model_name=state.name,
            model_source=config.model.source,
            model_sha256=sha256_file(fp32),
            target=target,
            inputs=inputs,
            outputs=outputs,
            artifacts=job.artifacts,
            gates=job.gates.manifest(),
            reference_inputs=ref_in,
            reference_outputs=ref_out[0],
            report=bundle_report_writer(ui),
            primary=job.primary,
            build=device_build,
            preprocess=reference.describe().get("preprocess"),
        )
        ui.info(f"bundle {state.name}/{target.name}: {result.directory}")
        return [result.directory / "manifest.json", result.archive], {"directory": str(result.directory)}

    record, _ = cache.run(job.stage, job.key, QUIET, do_bundle, _bundle_damaged)
    return str(record["directory"])
