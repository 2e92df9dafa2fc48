"""The bundle stage: artifacts + manifest + reference data + device scripts, as a folder and a .tar.gz.

Hand-written because no library packs this: the manifest records what every file is (sha256
and size), what it was built for (target, precisions, tool versions) and how well it did
(compare and profile summaries), so a device can check and rebuild itself from the bundle.
The folder and the archive are both written under temporary names and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from calibration.feeds import fixed_width_text
from calibration.modelinfo import TensorSpec, load_model_header, model_io, shape_text
from edgedeploy import __version__
from edgedeploy.device import device_files
from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_dir, atomic_path, atomic_write_json, atomic_write_text, sha256_file
from edgedeploy.onnxio import external_data_files, is_onnx_path
from edgedeploy.results import to_jsonable
from edgedeploy.targets import Target
from edgedeploy.ui import md_code, md_text

SCHEMA_VERSION = 1
# why a model with no numeric tensor output is not bundled (compare refuses it too)
BUNDLE_COMPARES = (
    "a bundle's verify.sh checks numeric tensor outputs only, as compare does, and would pass having "
    "compared nothing"
)
# Writes the report into the bundle folder from the manifest (before its file table is made) and
# returns the paths it wrote, relative to the folder: {"html": ..., "markdown": ...}. Passed in by
# the pipeline, so the bundle stage does not depend on the report stage (which reads bundles).
ReportWriter = Callable[[Path, dict[str, Any]], dict[str, str]]


@dataclass
class BundleArtifact:
    precision: str
    backend: str
    model: Path  # the precision ONNX
    engine: Path | None = None
    calibration_cache: Path | None = None
    precision_plan: Path | None = None
    extra_files: list[Path] = field(default_factory=list)
    compare: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    # How the precision was made: fp32 islands, calibration algorithm, data and preprocessing, ...
    info: dict[str, Any] | None = None


@dataclass
class BundleResult:
    directory: Path
    archive: Path
    manifest: dict[str, Any]
    files: int
    size_bytes: int


def tool_versions(extra: dict[str, str] | None = None) -> dict[str, str | None]:
    """Versions of the tools that shaped the artifacts (TensorRT where it was used)."""
    import onnx
    import onnxruntime
    import polygraphy

    versions: dict[str, str | None] = {
        "edgedeploy": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "polygraphy": polygraphy.__version__,
        "tensorrt": None,
    }
    try:
        import onnxslim

        versions["onnxslim"] = getattr(onnxslim, "__version__", None)
    except ImportError:
        pass
    versions.update(extra or {})
    return versions


def _io_dtypes(model: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> dict[str, Any]:
    """The artifact's ``input_dtypes`` / ``output_dtypes``: the tensors its model declares in another
    dtype than the bundle's io (an fp16 model built without kept io types takes and gives float16);
    empty when they agree. verify.sh feeds the reference inputs in these dtypes."""
    declared = model_io(model)
    found: dict[str, Any] = {}
    for key, specs, own in (("input_dtypes", inputs, declared[0]), ("output_dtypes", outputs, declared[1])):
        io = {s.name: s.dtype for s in specs if s.kind is None}  # a sequence or map has no dtype
        differ = {s.name: s.dtype for s in own if s.name in io and s.dtype != io[s.name]}
        if differ:
            found[key] = differ
    return found


def _without_pickles(name: str, arr: np.ndarray) -> np.ndarray:
    """A reference input as the device's np.load reads it (no pickles): text, which a feed holds as
    an object array, as NumPy's fixed-width strings; refused where those would change it (an item
    ending in NUL characters, which they drop)."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "O":
        return arr
    text = fixed_width_text(arr)
    if text is None:
        raise InputError(f"reference input '{name}' holds objects that are not all str or all bytes")
    if text[1] is not None:
        raise InputError(
            f"reference input '{name}' holds text ending in NUL characters, which the bundle's "
            "reference/inputs.npz (NumPy's fixed-width strings, read without pickles) cannot keep; "
            "compare on data without them"
        )
    return text[0]


def _has_qdq(model: Path) -> bool:
    """Whether an ONNX model holds Q/DQ nodes: TensorRT 8.x then quantizes explicitly and takes no
    calibration cache (edgedeploy build passes none; the device's trtexec flags follow the
    artifact's ``qdq``), so a cache written for another 8.x release does not stop its build."""
    graph = load_model_header(model).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def _copy(src: Path, root: Path, folder: str) -> str:
    """Copy one artifact into the bundle; an ONNX model brings its external data files along."""

    rel = f"{folder}/{src.name}"
    (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, root / rel)
    for data in external_data_files(src):
        shutil.copy2(data, root / folder / data.name)
    return rel


def _unsafe_optimizers_text(manifest: dict[str, Any], root: Path) -> str:
    """The device README's warning for ONNX Runtime models that crash its default optimizations."""
    from edgedeploy.backends.onnxruntime import crashing_optimizers

    found = {
        a["model"]: names
        for a in manifest["artifacts"]
        if a["backend"] == "onnxruntime" and (names := crashing_optimizers(root / a["model"]))
    }
    if not found:
        return ""
    notes = "; ".join(f"{md_code(model)}: {', '.join(names)}" for model, names in found.items())
    switched = sorted({name for names in found.values() for name in names})
    return (
        "\nONNX Runtime on x86-64 dies (SIGSEGV) loading some models at its default optimization level; "
        "give their sessions `disabled_optimizers` (Python: `InferenceSession(path, "
        f"disabled_optimizers={switched})`), as `verify.sh` does: {notes}.\n"
    )


def _io_rows(manifest: dict[str, Any]) -> str:
    """The device README's rows of the model's inputs and outputs, with the dtypes of the precisions
    whose model declares another (``input_dtypes`` / ``output_dtypes`` of an artifact); a value that
    is not a tensor (a ZipMap's seq(map(int64,tensor(float)))) with its type and no shape; shapes as
    TensorSpec.describe() shows them (calibration.modelinfo.shape_text: ``[...]`` for an unknown rank)."""
    rows = []
    for kind in ("input", "output"):
        for spec in manifest["io"][f"{kind}s"]:
            if spec.get("kind"):
                rows.append(f"| {kind} | {md_code(spec['name'], cell=True)} | - | {md_text(spec['kind'])} |")
                continue
            others = [
                f"{a['precision']}: {dtype}"
                for a in manifest["artifacts"]
                if (dtype := (a.get(f"{kind}_dtypes") or {}).get(spec["name"]))
            ]
            dtype = "; ".join([str(spec["dtype"]), *others])
            # as TensorSpec.describe() shows it: [...] where the rank is unknown (rank_known false)
            shape = shape_text(spec["shape"], spec.get("rank_known") is not False, ", ", md_text)
            rows.append(f"| {kind} | {md_code(spec['name'], cell=True)} | {shape} | {md_text(dtype)} |")
    return "\n".join(rows)


def _dynamic(spec: dict[str, Any]) -> bool:
    return spec.get("rank_known") is False or any(not isinstance(d, int) or d < 1 for d in spec["shape"])


def _shapes_text(manifest: dict[str, Any], root: Path) -> str:
    """The device README's words on a dynamic model's shapes ("" when every input is static): the
    shape profiles a GPU target's engine is built with (``build.profiles``), the reference inputs'
    shapes ``verify.sh`` runs, and the shapes ``benchmark.sh`` times by default, as its helper picks
    them (the profile's opt shape at its default batch on a GPU; the reference inputs' shape at batch 1
    on a CPU, where ``edgedeploy profile`` times the model)."""
    tensors = [spec for spec in manifest["io"]["inputs"] if not spec.get("kind")]
    if not any(_dynamic(spec) for spec in tensors):
        return ""
    reference: dict[str, list[int]] = {}
    if manifest.get("reference"):
        with np.load(root / manifest["reference"]["inputs"]) as data:
            reference = {name: list(data[name].shape) for name in data.files}
    gpu = manifest["target"].get("kind") != "cpu"
    table, timed = _profile_blocks(manifest, root) if gpu else ("", _cpu_timed_line(tensors, reference))
    ran = ", ".join(f"{md_code(n)} {shape_text(shape, True, ', ')}" for n, shape in reference.items())
    verified = f"`verify.sh` runs the reference inputs: {ran}." if reference else ""
    return "".join(f"\n{block}\n" for block in (table, verified, timed) if block)


def _profile_blocks(manifest: dict[str, Any], root: Path) -> tuple[str, str]:
    """A GPU bundle's profile table, and the line on the shapes benchmark.sh times, both as
    build_engine.sh and benchmark.sh pick them (bundle_helper): the recorded ``build.profiles``, else
    batch 1 to the reference inputs' batch (a manifest of ``run`` without [build] profiles recorded
    none before pipeline/run.bundle_build; the table showed batch 1..1 there)."""
    from edgedeploy.device import bundle_helper as helper

    reference = (manifest.get("reference") or {}).get("inputs")
    try:
        widened = helper.default_max_batch(manifest, root / reference if reference else None)
        profiles = helper.input_profiles(manifest, widened) or []
        batch, flags = helper.batch_run(manifest, profiles, None, "")
    except helper.BundleProblem as exc:
        return f"`build_engine.sh` cannot build its engine: {md_text(str(exc))}.", ""
    several = len(profiles) > 1
    head = "| profile | input | min | opt | max |" if several else "| input | min | opt | max |"
    rows = [head, "|---" * head.count(" | ") + "|---|"]
    for index, profile in enumerate(profiles):
        for name, ranges in profile.items():
            cells = [md_code(name, cell=True), *(shape_text(r, True, ", ") for r in ranges)]
            rows.append("| " + " | ".join([str(index), *cells] if several else cells) + " |")
    which = "these shape profiles" if several else "this shape profile"
    if widened is None:
        source = "`build.profiles` in manifest.json"
    else:
        reach = f"batch 1 to the reference batch, {widened}" if reference else "no reference inputs: batch 1"
        source = (
            f"the manifest records no `build.profiles`, {reach}; `build_engine.sh --max-batch N` widens it"
        )
    table = "\n".join([f"The engine is built with {which} ({source}):", "", *rows])
    if flags and flags[0].startswith("--shapes="):
        spec = flags[0].removeprefix("--shapes=")
        whose = "the opt shape of the first profile that takes" if several else "the profile's opt shape at"
        other = "a profile takes" if several else "the profile takes"
        return table, (
            f"`benchmark.sh` times batch {batch} at {md_code(spec)} ({whose} that batch; "
            f"`--batch N` for another batch {other})."
        )
    # no dynamic batch: no --shapes, and trtexec sets each dynamic dim to its profile's opt size
    spec = helper.shape_spec({name: ranges[1] for name, ranges in profiles[0].items()})
    return table, f"`benchmark.sh` times batch {batch} at the profile's opt shape, {md_code(spec)}."


def _cpu_timed_line(tensors: list[dict[str, Any]], reference: dict[str, list[int]]) -> str:
    """The shapes a CPU bundle's benchmark.sh times by default: the reference inputs' shapes at batch
    1 where the batch is dynamic (bundle_helper's profile-inputs; without reference inputs, random
    data's: each other dynamic dim 1)."""
    from calibration.modelinfo import batch_axes, batch_names
    from edgedeploy.device.bundle_helper import shape_spec

    specs = [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in tensors]
    names = batch_names(specs)
    dynamic_batch = any(batch_axes(spec.shape, names) for spec in specs)
    fixed = [d for spec in specs if spec.shape and isinstance(d := spec.shape[0], int)]
    batch = 1 if dynamic_batch or not fixed else min(fixed)
    shapes = {}
    for spec in specs:
        shape = list(reference.get(spec.name) or [d if isinstance(d, int) else 1 for d in spec.shape])
        for axis in batch_axes(spec.shape, names):
            shape[axis] = batch
        shapes[spec.name] = shape
    whose = "the reference inputs' shape" if reference else "random data's shape, each dynamic dim 1"
    return (
        f"`benchmark.sh` times batch {batch} at {md_code(shape_spec(shapes))} ({whose} at that batch; "
        "`--batch N` for another)."
    )


def _device_readme(manifest: dict[str, Any], root: Path) -> str:
    """The bundle's README.md. Names come from the user (the model's file, a target's description,
    tensor names) and are escaped as report.md escapes them (edgedeploy/ui.py md_text, md_code): a model named
    ``<img src=x onerror=...>`` or ``a|b`` drew live HTML or broke the tables on GitHub."""
    target = manifest["target"]
    rows = "\n".join(
        f"| {md_text(a['precision'])} | {md_text(a['backend'])} | {md_code(a['model'], cell=True)} "
        f"| {md_text(a.get('engine') or '-')} |"
        for a in manifest["artifacts"]
    )
    return f"""# {md_text(manifest["model"]["name"])} for {md_text(target["name"])}

Made by edgedeploy {manifest["edgedeploy_version"]} on {manifest["created"]}.
Target: {md_text(target.get("description", target["name"]))}.

| precision | backend | model | engine |
|---|---|---|---|
{rows}

| | tensor | shape | dtype |
|---|---|---|---|
{_io_rows(manifest)}
{_shapes_text(manifest, root)}
## On the device

{_device_steps(manifest)}

Each script takes `--help` and works from any folder. `manifest.json` lists every file with
its sha256; `reference/` holds the inputs and fp32 outputs `verify.sh` compares against.
{_preprocess_text(manifest["io"].get("preprocess"))}{_unsafe_optimizers_text(manifest, root)}"""


def _device_steps(manifest: dict[str, Any]) -> str:
    """The device README's scripts, as they act on this bundle's target: a CPU target's bundle runs
    its ONNX models on ONNX Runtime and has no engine to build or time (its README listed the
    Jetson steps: JetPack checks, an engine build, trtexec timing)."""
    primary = manifest.get("primary_precision") or "fp32"
    if manifest["target"].get("kind") == "cpu":
        steps = """```bash
bash scripts/setup.sh          # what this machine has beside what the bundle expects
bash scripts/verify.sh         # checksums, then ONNX Runtime's outputs against the stored fp32 reference
bash scripts/benchmark.sh      # no engine: times the model on ONNX Runtime with edgedeploy profile (JSON)
```

`verify.sh` needs `python3` with numpy and onnxruntime; `benchmark.sh` needs edgedeploy
(`pip install edgedeploy`), and without it prints the `edgedeploy profile` command to run."""
    else:
        steps = """```bash
bash scripts/setup.sh          # check board, JetPack, CUDA, TensorRT; optional power mode and clocks
bash scripts/build_engine.sh   # build the engine here from the bundled ONNX (skipped when one matches)
bash scripts/verify.sh         # checksums, then engine outputs against the stored fp32 reference
bash scripts/benchmark.sh      # latency, throughput, power and energy per inference (JSON)
```"""
        if not any(a.get("engine") for a in manifest["artifacts"]):
            steps += "\n\nThe bundle holds no engine: `build_engine.sh` builds it here from the ONNX model."
    return f"{steps}\n\nThe scripts use the {primary} model unless given `--precision`."


def _resize_text(pre: dict[str, Any]) -> str:
    """The resize step of io.preprocess in words ("" without one)."""
    if not pre.get("resize"):
        return ""
    box = f"{pre['resize'][0]}x{pre['resize'][1]} (height x width)"
    if pre.get("letterbox") is not None:
        return f"resize to fit {box} keeping the aspect ratio, centred, padded with {pre['letterbox']}"
    return f"resize to {box}"


def _wide_text(pre: dict[str, Any]) -> str:
    """An undeclared preprocessing of a folder of 8- and 16-bit images scales each by its depth."""
    wide = pre.get("wide_scale")
    return f" (an image of more than 8 bits per pixel by {wide:.6g})" if wide is not None else ""


def _preprocess_text(pre: dict[str, Any] | None) -> str:
    """The device README's words on the preprocessing of the reference images (io.preprocess)."""
    if not pre:
        return ""
    crop = pre.get("center_crop")
    steps = [
        f"decode as {str(pre['color']).upper()}",
        *([resize] if (resize := _resize_text(pre)) else []),
        *([f"resize the shorter side to {pre['resize_shorter']}"] if pre.get("resize_shorter") else []),
        *([f"center-crop to {crop[0]}x{crop[1]} (height x width)"] if crop else []),
        f"multiply by {pre['scale']:.6g}{_wide_text(pre)}, subtract mean {pre['mean']}, "
        f"divide by std {pre['std']}",
        f"lay out as {str(pre['layout']).upper()} {pre['dtype']}",
    ]
    return f"\nThe reference inputs were images, made into inputs this way: {'; '.join(steps)}.\n"


def make_bundle(
    out_dir: str | os.PathLike[str],
    *,
    model_name: str,
    model_source: str,
    model_sha256: str,
    target: Target,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    artifacts: list[BundleArtifact],
    gates: dict[str, Any],
    reference_inputs: dict[str, np.ndarray] | None = None,
    reference_outputs: dict[str, np.ndarray] | None = None,
    primary: str | None = None,
    tools: dict[str, str] | None = None,
    extras: dict[str, Any] | None = None,
    report: ReportWriter | None = None,
    build: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> BundleResult:
    """Write the bundle folder ``out_dir`` and ``out_dir.tar.gz`` beside it.

    An existing bundle there is replaced whole; any other existing, non-empty folder is refused
    (it may hold the user's models), and so is a bundle whose ``device/`` holds files (the board's
    engines and results).

    Args:
        out_dir: the bundle folder.
        model_name: the model's name in the manifest and file names.
        model_source: where the model came from (spec or path), recorded as given.
        model_sha256: the fp32 model's hash.
        target: what the bundle is for.
        inputs: the model's inputs.
        outputs: the model's outputs.
        artifacts: one entry per precision (model, engine, plan, cache, compare and profile summaries).
        gates: the accuracy gates the device's verify.sh applies.
        reference_inputs: one batch of inputs for verify.sh.
        reference_outputs: the fp32 outputs on ``reference_inputs``.
        primary: the precision the device scripts use by default (default: the lowest that passed).
        tools: more tool versions to record.
        extras: more manifest fields.
        report: writes report.html and report.md into the bundle from its manifest (the pipeline
            passes the report stage's hook); the manifest's ``report`` lists them.
        build: how engines are built (``profiles``: the TensorRT shape profiles as in the config,
            ``tf32``), so the device rebuilds the same engine.
        preprocess: the image preprocessing the reference inputs were made with, when they were
            made from images (``io.preprocess``): what the device's application must do to a frame.
    """
    from edgedeploy.stages.bundle.tools import bundle_totals, check_bundle_output
    from edgedeploy.stages.compare import refuse_without_tensor_outputs

    out = Path(out_dir).resolve()
    if not inputs:  # the manifest schema (and verify.sh) need inputs to run the reference on
        raise InputError(f"{model_name} has no inputs: its outputs are constants, there is nothing to deploy")
    # an empty reference/outputs.npz, which verify.sh passed having compared nothing
    refuse_without_tensor_outputs(model_name, outputs, BUNDLE_COMPARES)
    if reference_inputs is not None:
        reference_inputs = {name: _without_pickles(name, arr) for name, arr in reference_inputs.items()}
    check_bundle_output(out)
    with atomic_dir(out) as root:
        entries = []
        for art in artifacts:
            entry: dict[str, Any] = {
                "precision": art.precision,
                "backend": art.backend,
                "model": _copy(art.model, root, "models"),
                "engine": _copy(art.engine, root, "engines") if art.engine else None,
                "calibration_cache": _copy(art.calibration_cache, root, "models")
                if art.calibration_cache
                else None,
                "precision_plan": _copy(art.precision_plan, root, "models") if art.precision_plan else None,
                "compare": art.compare,
                "profile": art.profile,
                "precision_info": art.info,
            }
            entry.update(_io_dtypes(root / entry["model"], inputs, outputs))
            if art.precision == "int8" and entry["calibration_cache"] and is_onnx_path(entry["model"]):
                entry["qdq"] = _has_qdq(root / entry["model"])
            for extra in art.extra_files:
                _copy(extra, root, "models")
            entries.append(entry)
        (root / "engines").mkdir(exist_ok=True)
        reference: dict[str, str] | None = None
        if reference_inputs is not None and reference_outputs is not None:
            (root / "reference").mkdir()
            np.savez(root / "reference" / "inputs.npz", **reference_inputs)  # type: ignore[arg-type]
            np.savez(root / "reference" / "outputs.npz", **reference_outputs)  # type: ignore[arg-type]
            reference = {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz"}
        for script in device_files():
            _copy(script, root, "scripts")
            if script.suffix == ".sh":
                os.chmod(root / "scripts" / script.name, 0o755)
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "edgedeploy_version": __version__,
            "model": {"name": model_name, "source": model_source, "sha256": model_sha256},
            "target": target_dict(target),
            "tools": tool_versions(tools),
            "io": {
                # as export's --json lists them: a ZipMap's seq(map(...)) has its type, no shape
                "inputs": to_jsonable(inputs),
                "outputs": to_jsonable(outputs),
                **({"preprocess": preprocess} if preprocess else {}),
            },
            "primary_precision": primary or default_primary(artifacts),
            "artifacts": entries,
            "gates": gates,
            "reference": reference,
            **({"build": build} if build else {}),
            **(extras or {}),
        }
        atomic_write_text(root / "README.md", _device_readme(manifest, root))
        manifest["report"] = report(root, manifest) if report is not None else None
        manifest["files"] = file_table(root)
        atomic_write_json(root / "manifest.json", manifest)
        count, size = bundle_totals(root, manifest["files"])
        # The archive is packed from this run's folder, not from ``out``, which a concurrent run
        # into the same folder may be replacing at this moment.
        archive = out.with_name(out.name + ".tar.gz")
        with atomic_path(archive, suffix=".tar.gz") as tmp, tarfile.open(tmp, "w:gz") as tar:
            tar.add(root, arcname=out.name)
    return BundleResult(directory=out, archive=archive, manifest=manifest, files=count, size_bytes=size)


class Gated(Protocol):
    """A precision and its comparison's summary (a bundle artifact, a pipeline outcome)."""

    @property
    def precision(self) -> str: ...

    @property
    def compare(self) -> dict[str, Any] | None: ...


def default_primary(artifacts: Sequence[Gated]) -> str | None:
    """The lowest precision whose accuracy gate passed: what a device should run by default."""
    order = {"int8": 0, "fp16": 1, "fp32": 2}
    passed = [a for a in artifacts if a.compare and a.compare.get("passed")]
    pool = passed or [a for a in artifacts if a.precision == "fp32"] or artifacts
    return min(pool, key=lambda a: order.get(a.precision, 9)).precision if pool else None


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root`` except the manifest itself."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == "manifest.json":
            continue
        table[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def target_dict(target: Target) -> dict[str, Any]:

    data = to_jsonable(target)
    assert isinstance(data, dict)
    return data
