"""The pipeline config file (``edgedeploy.toml``): sections, defaults and strict key checking.

Unknown keys are errors that name the key and suggest the closest valid one, because a
misspelt option silently ignored is the classic way a deployment ends up in the wrong precision.
Relative paths are taken relative to the config file; a leading ``~`` is the home folder.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError, not_a_file
from edgedeploy.options import RUN_MODEL, CalibrationSettings, ModelKeys
from edgedeploy.targets import DEFAULT_TARGET

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelSection:
    source: str = ""  # module:callable, file.py:callable[:inputs], or a .onnx file
    name: str = ""
    inputs: list[str] = field(default_factory=list)  # NAME:SHAPE[:DTYPE] example inputs / shapes
    dynamic_axes: list[str] = field(default_factory=list)  # INPUT:AXIS=NAME, as export's --dynamic


@dataclass
class ExportSection:
    opset: int = 18
    dynamic_batch: bool = True
    simplify: bool = True
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    verify: bool = True  # refuse an export whose outputs differ from the module's (export --verify)


@dataclass
class BuildSection:
    target: str = DEFAULT_TARGET
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16"])
    backend: str = "auto"
    keep_io_types: bool = True
    fp32_ops: list[str] = field(default_factory=list)
    fp32_nodes: list[str] = field(default_factory=list)
    workspace_mb: int | None = None
    memory_pools_mb: dict[str, int] = field(default_factory=dict)  # TensorRT pools other than the workspace
    opt_level: int | None = None
    timing_cache: str | None = None
    dla_core: int | None = None
    hardware_compat: str | None = None
    version_compatible: bool = False
    profiling_verbosity: str | None = None
    tf32: bool = True  # TensorRT's default; false clears BuilderFlag.TF32
    profiles: list[dict[str, Any]] = field(default_factory=list)  # [{input = {min=[..], opt=[..], max=[..]}}]
    threads: int | None = None
    accuracy_budget: str | None = None  # fp16 and int8, as build's --accuracy-budget


@dataclass
class CalibrationSection(CalibrationSettings):
    """[calibration]: the same settings a build takes (data paths relative to the config)."""


@dataclass
class CompareSection:
    data: str = "random"
    samples: int = 64
    batch_size: int = 8
    seed: int = 0
    atol: float = 1e-3
    rtol: float = 1e-3
    check_allclose: bool = False  # fail when any element exceeds atol + rtol*|ref| (as --check-allclose)
    min_cosine: float | None = 0.999
    # argmax (top-1) agreement: a number for every 2-D float output, or a table { output = value }
    # for the outputs named only, with "" = value for every other one (as compare's --min-top1 VALUE
    # or NAME:VALUE, or both)
    min_top1: float | dict[str, float] | None = None


@dataclass
class ProfileSection:
    enabled: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    warmup_ms: float = 200.0
    warmup: int | None = None
    iterations: int | None = None
    duration_s: float = 3.0
    threads: int | None = None


@dataclass
class BundleSection:
    enabled: bool = True
    output: str = "bundle"
    primary: str = ""  # the precision device scripts build by default (default: the fastest-safe last one)


@dataclass
class PipelineConfig:
    model: ModelSection = field(default_factory=ModelSection)
    export: ExportSection = field(default_factory=ExportSection)
    build: BuildSection = field(default_factory=BuildSection)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)
    compare: CompareSection = field(default_factory=CompareSection)
    profile: ProfileSection = field(default_factory=ProfileSection)
    bundle: BundleSection = field(default_factory=BundleSection)
    workdir: str = "edgedeploy-out"
    base_dir: Path = field(default_factory=Path.cwd)
    # section -> the keys the file wrote (a value written equal to its default is still written):
    # what makes another key moot is said for the keys the user gave, not for defaults
    given: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p


_SECTION_CLASSES: dict[str, type] = {
    "model": ModelSection,
    "export": ExportSection,
    "build": BuildSection,
    "calibration": CalibrationSection,
    "compare": CompareSection,
    "profile": ProfileSection,
    "bundle": BundleSection,
}
_TOP_LEVEL_KEYS = ("workdir",)


def _quoted(name: str) -> str:
    """A key as the user wrote it, on one line (TOML allows newlines in quoted keys)."""
    return f"'{name}'" if name.isprintable() else repr(name)


def suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _check_type(where: str, value: Any, default: Any, annotation: str) -> None:
    """Light type check: numbers, booleans, strings and lists must be what the default is."""
    if value is None:  # TOML has no null; a dict built in code may
        if "None" not in annotation:
            raise InputError(f"config key '{where}' must be {annotation}, got None")
        return
    expect: tuple[type, ...]
    if annotation.startswith("float | dict"):  # a number, or a table of numbers (min_top1)
        if not isinstance(value, dict):
            _check_type(where, value, default, "float")
            return
        annotation = annotation.removeprefix("float | ")
    if "list" in annotation:
        expect = (list,)
    elif "dict" in annotation:
        expect = (dict,)
    elif "bool" in annotation:
        expect = (bool,)
    elif "float" in annotation:
        expect = (int, float)
    elif "int" in annotation:
        expect = (int,)
    elif "str" in annotation:
        expect = (str,)
    else:
        return
    if not isinstance(value, expect) or (expect != (bool,) and isinstance(value, bool)):
        raise InputError(f"config key '{where}' must be {annotation.replace(' | None', '')}, got {value!r}")
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else []
    outer = annotation.removesuffix(" | None")
    inner = outer[outer.find("[") + 1 : -1] if "[" in outer else ""
    if outer.startswith("dict"):
        inner = inner.split(",", 1)[-1].strip()  # the value type
    kinds: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float)}
    if inner.startswith("dict"):
        kinds[inner] = (dict,)
    if inner in kinds:
        for item in items:
            if not isinstance(item, kinds[inner]) or isinstance(item, bool):
                raise InputError(f"config key '{where}' must hold {inner} items, got {item!r} in {value!r}")


def from_dict(
    data: dict[str, Any],
    base_dir: Path,
    *,
    require_model: bool = True,
    model: ModelKeys = RUN_MODEL,
    within: str = "",
) -> PipelineConfig:
    """The config ``data`` holds, its keys and their types checked. ``model``: how the lines name the
    keys of its [model] section (a matrix's ``matrix.models[1].inputs``, which has no [model]);
    ``within``: what the lines put before a section's keys (a matrix cell's ``matrix.cells[0].``)."""
    valid_top = list(_SECTION_CLASSES) + list(_TOP_LEVEL_KEYS)
    config = PipelineConfig(base_dir=base_dir)
    for key, value in data.items():
        if key in _TOP_LEVEL_KEYS:
            _check_type(key, value, "", "str")
            config.workdir = value
            continue
        if key == "matrix":
            raise InputError("this config has a [matrix] section: run it with 'edgedeploy matrix CONFIG'")
        if key not in _SECTION_CLASSES:
            raise InputError(f"unknown config section or key {_quoted(key)}{suggest(key, valid_top)}")
        if not isinstance(value, dict):
            raise InputError(f"config '[{key}]' must be a table")
        cls = _SECTION_CLASSES[key]
        section_fields = {f.name: f for f in fields(cls)}
        for sub, subvalue in value.items():
            where = model.key(sub) if key == "model" else f"{within}{key}.{sub}"
            if sub not in section_fields and sub in _TOP_LEVEL_KEYS:  # written below a [section]
                raise InputError(
                    f"unknown config key {_quoted(where)}: {sub} is a top-level key: write it above the "
                    "first [section]"
                )
            if sub not in section_fields:
                raise InputError(f"unknown config key {_quoted(where)}{suggest(sub, list(section_fields))}")
            _check_type(where, subvalue, None, str(section_fields[sub].type))
        setattr(config, key, cls(**value))
        config.given[key] = tuple(value)
    _expand_home(config, model)
    if require_model and not config.model.source:
        raise InputError(
            'config needs [model] source = "module:callable", "file.py:callable" or "model.onnx"'
        )
    return config


def _home(value: str, where: str) -> str:
    """``value`` with a leading ``~`` or ``~user`` made the home folder, as a shell does with a path it
    is given: a config has no shell, and workdir = "~/out" made a folder named ``~`` beside it (which
    ``rm -rf ~`` then cleans up with the home folder). ``$VAR`` stays a name: TOML has no variables."""
    if not value.startswith("~"):
        return value
    try:
        expanded = os.path.expanduser(value)
    except ValueError:  # a NUL in the user's name
        expanded = value
    if expanded.startswith("~"):  # no such user (or no home): it would be a folder named ~user
        user = value[1:].split("/", 1)[0]
        raise InputError(f"config {where} {_quoted(value)}: no user {_quoted(user)} has a home folder here")
    return expanded


def _expand_home(config: PipelineConfig, model: ModelKeys) -> None:
    """The path keys of ``config`` with their leading ``~`` expanded (:func:`_home`), in place;
    ``model`` names the [model] keys (from_dict's)."""
    config.workdir = _home(config.workdir, "workdir")
    source = config.model.source
    if source.startswith("~"):  # a file: model.onnx, or file.py before its :callable
        path, colon, rest = source.partition(":")
        config.model.source = _home(path, model.key("source")) + colon + rest
    config.calibration.data = _home(config.calibration.data, "calibration.data")
    config.compare.data = _home(config.compare.data, "compare.data")
    config.bundle.output = _home(config.bundle.output, "bundle.output")
    if config.build.timing_cache is not None:
        config.build.timing_cache = _home(config.build.timing_cache, "build.timing_cache")


def load_config(path: str | Path) -> PipelineConfig:
    p = Path(path)
    if not p.is_file():
        raise not_a_file("config file", p)
    return from_dict(read_toml(p), p.resolve().parent)


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of the config file ``path`` (run's and matrix's); one that is not TOML is refused
    in one line naming it."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))  # TOML is UTF-8, whatever the locale
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config file {path} is not valid TOML: {exc}") from None
