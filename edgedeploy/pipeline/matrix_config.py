"""The ``[matrix]`` config section: models x targets x precisions, with per-cell overrides.

A matrix config is an ordinary pipeline config (``[build]``, ``[calibration]``, ``[compare]``,
``[profile]``, ``[bundle]`` hold the settings every cell shares) plus::

    [matrix]
    targets = ["jetson-orin-nano", "jetson-agx-orin", "rtx4090"]
    precisions = ["fp32", "fp16", "int8"]

    [[matrix.models]]          # the keys of [model]
    name = "detector"
    source = "detector.onnx"

    [[matrix.cells]]           # overrides for the cells it selects (an omitted selector matches all)
    model = "detector"
    target = "jetson-orin-nano"
    precision = "int8"
    calibration = { data = "calib/orin" }

Each cell's settings go through the same strict checks as ``edgedeploy run`` (unknown keys are
errors that suggest the right one), and everything is checked before any work starts. A
precision the target cannot serve (int8 on a Jetson Nano) is not an error in a matrix: that
cell is planned as skipped, with the target's reason.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.config import PipelineConfig, from_dict, read_toml, suggest
from edgedeploy.errors import InputError
from edgedeploy.fileio import CACHE_DIR, not_an_input, not_written, outside_cache
from edgedeploy.onnxio import model_stem
from edgedeploy.options import ModelKeys
from edgedeploy.pipeline.cache import StageCache
from edgedeploy.pipeline.run import check_config, input_files, refuse_board_files, refuse_for_tensorrt
from edgedeploy.stages.export import is_onnx_path, is_python_path
from edgedeploy.stages.report.load import MATRIX_HTML, MATRIX_MARKDOWN
from edgedeploy.targets import BUILDABLE_PRECISIONS, Target, load_target

# Sections a [[matrix.cells]] entry may override. Export and [model] are per model (export runs
# once per model), bundles per (model, target), so they are not per-cell settings.
CELL_SECTIONS = ("build", "calibration", "compare", "profile")
SELECTORS = ("model", "target", "precision")
MATRIX_KEYS = ("targets", "precisions", "models", "cells")


@dataclass(frozen=True)
class Cell:
    """One (model, target, precision) of the matrix."""

    model: str
    target: str
    precision: str

    def label(self) -> str:
        return f"{self.model}/{self.target}/{self.precision}"


@dataclass
class CellPlan:
    cell: Cell
    config: PipelineConfig  # the cell's settings: base config + model + overrides
    target: Target
    skip: str | None = None  # why the cell cannot be built at all (set while planning)


@dataclass
class MatrixConfig:
    """The validated matrix: one model config per model (for export) and one plan per cell."""

    base: PipelineConfig  # the shared sections, no model
    models: dict[str, PipelineConfig]  # name -> the config its export runs from
    targets: list[Target]
    precisions: list[str]
    cells: list[CellPlan] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return self.base.path(self.base.workdir)

    @property
    def bundles_root(self) -> Path:
        """``<bundle.output>``: the folder the bundles go in, no bundle itself."""
        return self.base.path(self.base.bundle.output or "bundles")

    def model_keys(self, model: str) -> ModelKeys:
        """How lines name the keys of ``model``: by its ``[[matrix.models]]`` entry (``matrix.models[1]``)."""
        return ModelKeys.matrix(list(self.models).index(model))

    def bundle_dir(self, model: str, target: str) -> Path:
        """One bundle per (model, target): ``<bundle.output>/<model>/<target>``."""
        return self.bundles_root / model / target

    def kept_file(self, model: str, target: str, name: str) -> Path:
        """Where a failed cell's file ``name`` (``*.json``: a missed budget's steps) is kept, beside
        the bundles of its model: ``<bundle.output>/<model>/<target>.<name>``."""
        return self.bundle_dir(model, target).parent / f"{target}.{name}"

    def writes_in_bundles(self, path: Path) -> str | None:
        """What ``path`` is, or lies in, of the files the matrix writes in its bundles' folder (said
        for a refusal): a bundle, replaced whole, its archive, or a failed cell's kept file
        (:meth:`kept_file`, also without bundles); None for any other path (``out/matrix.json``
        beside the bundles)."""
        real = path.resolve()
        for model in self.models:
            for target in self.targets:
                bundle = self.bundle_dir(model, target.name).resolve()
                archive = bundle.with_name(bundle.name + ".tar.gz")
                if self.base.bundle.enabled and real.is_relative_to(bundle):
                    return f"lies in {bundle}, a bundle this command writes"
                if self.base.bundle.enabled and real == archive:
                    return f"is {archive}, a bundle archive this command writes"
                kept = real.name.startswith(f"{target.name}.") and real.name.endswith(".json")
                if kept and real.parent == bundle.parent:
                    return f"is where this command keeps a failed {model}/{target.name} cell's files"
        return None


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"config '{where}' must be a table")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InputError(
            f'config matrix.{where} must be a non-empty list of names, e.g. {where} = ["a", "b"]'
        )
    if len(set(value)) != len(value):
        raise InputError(f"config matrix.{where} names something twice: {', '.join(value)}")
    return list(value)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for section, table in overrides.items():
        merged.setdefault(section, {}).update(copy.deepcopy(table))
    return merged


def _model_name(entry: dict[str, Any]) -> str:
    if entry.get("name"):
        return str(entry["name"])
    source = str(entry.get("source", ""))
    where = source if is_onnx_path(source) else source.split(":")[0]
    if is_onnx_path(where) or is_python_path(where):
        return model_stem(Path(where).stem) or "model"
    return where.rpartition(".")[2] or "model"  # package.module:callable -> module


def matrix_from_dict(data: dict[str, Any], base_dir: Path) -> MatrixConfig:
    """Check the whole matrix and plan every cell; raises InputError on the first problem."""
    data = dict(data)
    if "matrix" not in data:
        raise InputError("config has no [matrix] section; e.g. [matrix] targets = [...], precisions = [...]")
    matrix = _table(data.pop("matrix"), "[matrix]")
    for key in matrix:
        if key == "workdir":  # written below [matrix]
            raise InputError(
                "unknown config key 'matrix.workdir': workdir is a top-level key: write it above the "
                "first [section]"
            )
        if key not in MATRIX_KEYS:
            raise InputError(f"unknown config key 'matrix.{key}'{suggest(key, list(MATRIX_KEYS))}")
    if "model" in data:
        raise InputError("a matrix config lists its models in [[matrix.models]], not in [model]")
    build = data.get("build", {})
    for key, where in (("target", "targets"), ("precisions", "precisions")):
        if isinstance(build, dict) and key in build:
            raise InputError(f"a matrix config sets {where} in [matrix], not build.{key}")

    written = _strings(matrix.get("targets"), "targets")
    targets = [load_target(name) for name in written]
    named = [t.name for t in targets]  # JETSON-ORIN-NANO, host: names load_target resolves
    if twice := next((name for name in named if named.count(name) > 1), None):
        said = ", ".join(repr(w) for w, n in zip(written, named, strict=True) if n == twice)
        raise InputError(f"config matrix.targets names {twice} twice ({said})")
    precisions = _strings(matrix.get("precisions"), "precisions")
    for p in precisions:
        if p not in BUILDABLE_PRECISIONS:
            raise InputError(
                f"config matrix.precisions: '{p}' is not one of {', '.join(BUILDABLE_PRECISIONS)}"
            )

    model_entries = matrix.get("models")
    if not isinstance(model_entries, list) or not model_entries:
        raise InputError(
            'config needs [[matrix.models]] entries, each with source = "model.onnx" or a module'
        )
    models: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(model_entries):
        entry = _table(entry, f"matrix.models[{i}]")
        if "name" in entry and not isinstance(entry["name"], str):  # as [model] name is checked
            raise InputError(f"config key 'matrix.models[{i}].name' must be str, got {entry['name']!r}")
        if not entry.get("source"):
            raise InputError(f'config matrix.models[{i}] needs source = "model.onnx" or "module:callable"')
        name = _model_name(entry)
        if name in models:
            raise InputError(f"config matrix.models: two models are named '{name}'; give one a name = ...")
        if "/" in name or name.startswith("."):
            raise InputError(f"config matrix.models: model name '{name}' must be a plain file name")
        models[name] = {**entry, "name": name}

    base = from_dict(data, base_dir, require_model=False)
    # a model's keys named as its entry's (matrix.models[1].inputs): a matrix config has no [model]
    keys = {name: ModelKeys.matrix(index) for index, name in enumerate(models)}
    model_configs = {
        name: from_dict({**data, "model": entry}, base_dir, model=keys[name])
        for name, entry in models.items()
    }

    overrides = []
    cells = matrix.get("cells", [])
    if not isinstance(cells, list):  # [matrix.cells], one table: its keys were read as cells
        raise InputError(
            "config matrix.cells must be a list of tables ([[matrix.cells]] entries), each selecting "
            "cells with model/target/precision"
        )
    for i, entry in enumerate(cells):
        entry = dict(_table(entry, f"matrix.cells[{i}]"))
        select = {k: entry.pop(k) for k in SELECTORS if k in entry}
        if isinstance(select.get("target"), str):  # named as matrix.targets may name it
            with contextlib.suppress(InputError):
                select["target"] = load_target(select["target"]).name
        known = {"model": list(models), "target": [t.name for t in targets], "precision": precisions}
        for key, value in select.items():
            if value not in known[key]:
                raise InputError(
                    f"config matrix.cells[{i}].{key} = '{value}' is not in the matrix "
                    f"({', '.join(known[key])})"
                )
        for section in entry:
            if section not in CELL_SECTIONS:
                raise InputError(
                    f"config matrix.cells[{i}].{section}: a cell overrides only "
                    f"{', '.join(CELL_SECTIONS)} (selectors: {', '.join(SELECTORS)})"
                    + suggest(section, [*CELL_SECTIONS, *SELECTORS])
                )
            if section == "build" and {"target", "precisions"} & set(_table(entry[section], section)):
                raise InputError(
                    f"config matrix.cells[{i}].build: select cells with target/precision instead"
                )
            _table(entry[section], f"matrix.cells[{i}].{section}")
            # its keys and types, named as the cell's (the merged config names them as [section]'s)
            from_dict({section: entry[section]}, base_dir, require_model=False, within=f"matrix.cells[{i}].")
        overrides.append((select, entry))

    config = MatrixConfig(base=base, models=model_configs, targets=targets, precisions=precisions)
    if base.bundle.primary and base.bundle.primary not in precisions:
        raise InputError(
            f"config bundle.primary '{base.bundle.primary}' is not among matrix.precisions "
            f"({', '.join(precisions)})"
        )
    for name, entry in models.items():
        for target in targets:
            for precision in precisions:
                cell = Cell(name, target.name, precision)
                cell_data = {**data, "model": entry}
                for select, table in overrides:
                    if all(getattr(cell, k) == v for k, v in select.items()):
                        cell_data = _merge(cell_data, table)
                cell_data = _merge(cell_data, {"build": {"target": target.name, "precisions": [precision]}})
                cell_data.setdefault("bundle", {})
                # bundles are per model and target (pipeline/matrix.py): a cell builds one precision
                cell_data["bundle"] = {**cell_data["bundle"], "enabled": False, "primary": ""}
                cell_config = from_dict(cell_data, base_dir, model=keys[name])
                if cell_config.build.backend == "tensorrt" and not target.is_gpu:
                    # no node of any executor builds it: locally a skip (exit 0, nothing built),
                    # on Ray a task sent to a node that failed asking to install TensorRT
                    raise InputError(
                        f'config [build] backend = "tensorrt" for {cell.label()}: {target.name} is a CPU '
                        'target, which TensorRT builds for on no machine; set backend = "onnxruntime" '
                        '(or "auto") for it, or leave it out of matrix.targets'
                    )
                skip = None
                try:
                    target.check_precision(precision)
                except InputError as exc:
                    skip = str(exc)
                if skip is None:
                    check_config(cell_config, keys[name], bundled=base.bundle.enabled)
                    if base.bundle.enabled:  # a cell's config makes none: the matrix bundles each target
                        refuse_for_tensorrt(cell_config, target, bundled=True)
                config.cells.append(CellPlan(cell, cell_config, target, skip))
    _refuse_own_timing_caches(config)
    if base.bundle.enabled:
        root = config.bundles_root  # no bundle itself, nor in one, nor among the stage records
        outside_cache(root, config.workdir, "bundle.output")
        inside = next((f for f in (root, *root.parents) if (f / "manifest.json").is_file()), None)
        if inside is not None and (inside / "scripts").is_dir():  # a run's bundle (both default to
            # bundle/ beside the config): the matrix's bundles inside it broke it for verify and run
            raise InputError(
                f"bundle.output {root} lies in the bundle {inside}: set another bundle.output for the matrix"
            )
        for name in models:
            for target in targets:
                out = config.bundle_dir(name, target.name)
                # a file where a folder of the path goes (<output>/<model> named like the source
                # model with output "."): the bundle stage's mkdir failed after every cell was built
                blocker = next((p for p in (out.parent, *out.parents) if p.exists() and not p.is_dir()), None)
                if blocker is not None:
                    raise InputError(
                        f"bundle folder {out} cannot be made: {blocker} is a file: set another bundle.output"
                    )
                if out.exists() and (
                    not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())
                ):
                    raise InputError(
                        f"bundle folder {out} exists and is not a bundle: set another bundle.output"
                    )
                # the board's files in its device/: refused now unless it is this workdir's bundle,
                # which run_matrix refuses before a cell of it is built again (matrix_bundle_stage)
                refuse_board_files(out, StageCache(config.workdir), matrix_bundle_stage(name, target.name))
    return config


def _refuse_own_timing_caches(matrix: MatrixConfig) -> None:
    """A ``[build] timing_cache`` (the matrix's or a cell's) may not be a file the matrix reads (models,
    data) or writes (its report, stage cache, bundles, their archives, a failed cell's kept files):
    refused before any work, as build's ``--timing-cache`` and run's are."""
    option = "config build.timing_cache:"
    workdir = matrix.workdir
    inputs = [path for plan in matrix.cells for path in input_files(plan.config)]
    caches = {plan.config.path(named) for plan in matrix.cells if (named := plan.config.build.timing_cache)}
    for cache in sorted(caches):
        if cache.absolute() == workdir.absolute():
            raise InputError(f"{option} {cache} is the matrix's workdir: name a file")
        not_an_input(cache, inputs, option)
        not_written(cache, [workdir / MATRIX_HTML, workdir / MATRIX_MARKDOWN], [workdir / CACHE_DIR], option)
        if (written := matrix.writes_in_bundles(cache)) is not None:
            raise InputError(f"{option} {cache} {written}: name another file")


def matrix_bundle_stage(model: str, target: str) -> str:
    """The stage record of the bundle of (model, target) in the matrix workdir's cache."""
    return f"bundle-{model}-{target}"


def load_matrix_config(path: str | Path) -> MatrixConfig:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: {p}")
    return matrix_from_dict(read_toml(p), p.resolve().parent)
