"""What every layer shares about a build: the request, calibration settings and backend options.

The CLI (``edgedeploy build``) and the pipeline (``[build]`` in ``edgedeploy.toml``) both
describe a build in the user's words; :data:`BACKEND_OPTIONS` is the one place that says which
user option fills which :class:`~edgedeploy.backends.base.BuildOptions` field and how its value
is read. A new TensorRT option is one row here, one ``BuildOptions`` field, and its
``[build]`` key and ``--flag`` under the same name. See docs/design.md ("Layers").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from calibration.defaults import DEFAULT_PERCENTILE
from calibration.modelinfo import TensorSpec
from calibration.sources import DataSource, open_source
from edgedeploy.errors import InputError, SettingError
from edgedeploy.fileio import scratch_dir
from edgedeploy.targets import Target

Dims = tuple[int, ...]


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shape per input for one optimization profile (TensorRT)."""

    shapes: dict[str, tuple[Dims, Dims, Dims]]

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> ShapeProfile:
        """``{input = {min = [..], opt = [..], max = [..]}}`` from the config file."""
        if not isinstance(table, dict):
            raise InputError(
                f"config build.profiles items must be tables like {{x = {{min = [1, 3], opt = [4, 3], "
                f"max = [8, 3]}}}}, got {table!r}"
            )
        shapes = {}
        for name, spec in table.items():
            if not isinstance(spec, dict) or set(spec) != {"min", "opt", "max"}:
                raise InputError(f"profile for '{name}' needs exactly min, opt and max shapes")
            dims = [spec[k] for k in ("min", "opt", "max")]
            if not all(isinstance(d, list) and all(type(x) is int for x in d) for d in dims):
                raise InputError(f"profile for '{name}': min, opt and max must be lists of whole numbers")
            shapes[name] = _check_min_opt_max(name, tuple(dims[0]), tuple(dims[1]), tuple(dims[2]))
        return cls(shapes)

    @classmethod
    def parse(cls, items: list[str]) -> ShapeProfile:
        """``NAME:MIN,OPT,MAX`` items such as ``images:1x3x224x224,4x3x224x224,8x3x224x224``."""
        shapes = {}
        for item in items:
            name, sep, ranges = item.rpartition(":")
            parts = ranges.split(",")
            if not sep or not name or len(parts) != 3:
                raise InputError(
                    f"bad --profile '{item}': expected NAME:MIN,OPT,MAX e.g. x:1x3x8x8,4x3x8x8,8x3x8x8"
                )
            try:
                dims = [tuple(int(d) for d in p.split("x")) for p in parts]
            except ValueError:
                raise InputError(f"bad --profile '{item}': dims must be integers") from None
            shapes[name] = _check_min_opt_max(name, dims[0], dims[1], dims[2])
        return cls(shapes)


def _check_min_opt_max(name: str, lo: Dims, opt: Dims, hi: Dims) -> tuple[Dims, Dims, Dims]:
    if not len(lo) == len(opt) == len(hi):
        raise InputError(f"profile for '{name}': min, opt and max must have the same rank")
    if any(not (a <= b <= c) or a < 1 for a, b, c in zip(lo, opt, hi, strict=True)):
        raise InputError(
            f"profile for '{name}': need 1 <= min <= opt <= max in every dim, got {lo}, {opt}, {hi}"
        )
    return tuple(int(d) for d in lo), tuple(int(d) for d in opt), tuple(int(d) for d in hi)


def parse_memory_pools(value: Mapping[str, int] | Sequence[str]) -> dict[str, int]:
    """``NAME=MiB`` items from the command line, or the config's table as it is."""
    if isinstance(value, Mapping):
        return dict(value)
    pools: dict[str, int] = {}
    for item in value:
        name, sep, size = item.partition("=")
        if not sep or not name or not size.strip().isdigit():
            raise InputError(f"bad --memory-pool '{item}': expected NAME=MiB, e.g. tactic_shared_memory=48")
        pools[name.strip().lower()] = int(size)
    return pools


def parse_profiles(value: Sequence[str] | Sequence[dict[str, Any]]) -> list[ShapeProfile]:
    """The command line's ``NAME:MIN,OPT,MAX`` items, or the config's list of tables.

    On the command line an input named again starts the next profile: ``--profile x:A --profile
    y:B --profile x:C`` is two profiles, {x: A, y: B} and {x: C} (the device scripts pass a
    bundle's profiles this way)."""
    if all(isinstance(v, str) for v in value):
        groups: list[list[str]] = []
        names: set[str] = set()
        for item in (str(v) for v in value):
            name = item.rpartition(":")[0]
            if not groups or name in names:
                groups.append([])
                names = set()
            groups[-1].append(item)
            names.add(name)
        return [ShapeProfile.parse(group) for group in groups]
    return [ShapeProfile.from_config(v) for v in value if isinstance(v, dict)]


def _same(value: Any, path: Callable[[str], Path]) -> Any:
    return value


@dataclass(frozen=True)
class BackendOption:
    """One backend build option: the user's name for it and the ``BuildOptions`` field it fills."""

    user: str  # the [build] config key and the `edgedeploy build` parameter (--user-name)
    field: str  # the BuildOptions field
    read: Callable[[Any, Callable[[str], Path]], Any] = _same  # (user value, path resolver) -> field value
    default: Any = None  # a value that means "leave the backend's default" (tf32 = true is TensorRT's)


BACKEND_OPTIONS: tuple[BackendOption, ...] = (
    BackendOption("workspace_mb", "workspace_mb"),
    BackendOption("memory_pools_mb", "memory_pools_mb", lambda v, _path: parse_memory_pools(v)),
    BackendOption("opt_level", "optimization_level"),
    BackendOption("timing_cache", "timing_cache", lambda v, path: path(str(v))),
    BackendOption("dla_core", "dla_core"),
    BackendOption("hardware_compat", "hardware_compatibility", default="none"),  # none: TensorRT's default
    BackendOption("version_compatible", "version_compatible"),
    BackendOption("profiling_verbosity", "profiling_verbosity"),
    BackendOption("tf32", "tf32", default=True),  # only false is passed on: it clears TensorRT's TF32
    BackendOption("profiles", "profiles", lambda v, _path: parse_profiles(v)),
    BackendOption("threads", "threads"),
)
BACKEND_OPTION_NAMES = frozenset(o.user for o in BACKEND_OPTIONS)
# the sections whose settings build's flags name with a prefix: [calibration] data is --calib-data
FLAG_PREFIXES = {"calibration": "calib-"}


# the settings a flag gives one item of, named in the singular: --input x:1x8 --input y:1x4
SINGULAR_FLAGS = {
    ("model", "inputs"): "--input",
    ("model", "dynamic_axes"): "--dynamic",
    ("build", "profiles"): "--profile",
    ("build", "memory_pools_mb"): "--memory-pool",
}
# the export's settings given as export's flags on the command line and as config keys in a config
EXPORT_SETTINGS = (
    ("model", "inputs"),
    ("model", "dynamic_axes"),
    ("export", "opset"),
    ("export", "input_names"),
    ("export", "output_names"),
)


def option_name(section: str, key: str, from_config: bool) -> str:
    """The user's name of setting ``key`` of ``section``: ``[build] dla_core`` or ``[calibration]
    data`` in a config (run, matrix), ``--dla-core`` or ``--calib-data`` on build's command line.
    What the messages of a build say, whichever of the two described it."""
    if from_config:
        return f"[{section}] {key}"
    return SINGULAR_FLAGS.get((section, key)) or f"--{FLAG_PREFIXES.get(section, '')}{key.replace('_', '-')}"


# the compare gates' and profile settings' flags (compare, bundle create, profile) that are not
# named after their config key: [profile] duration_s is profile's --duration
MEASURE_FLAGS = {("profile", "duration_s"): "--duration"}


def setting_named(exc: SettingError, from_config: bool) -> InputError:
    """A stage's refusal of a compare gate or profile setting with the setting named as the user
    gave it: ``min_cosine must lie in (-1, 1]`` is ``config compare.min_cosine must ...`` from a run
    or matrix config, ``--min-cosine must ...`` from a command's flags."""
    section, key = exc.setting
    if from_config:
        return InputError(f"config {section}.{key} {exc.said}")
    return InputError(f"{MEASURE_FLAGS.get(exc.setting) or option_name(section, key, False)} {exc.said}")


@dataclass(frozen=True)
class ModelKeys:
    """How the lines of a config check name the keys of the model they check, and the command:
    run's ``[model]`` section (``model.inputs``, ``[model] inputs``; run), or the entry of a
    matrix's ``[[matrix.models]]`` that gives the model (``matrix.models[1].inputs``; matrix), whose
    config has no [model] section."""

    table: str = "model"
    command: str = "run"

    @classmethod
    def matrix(cls, index: int) -> ModelKeys:
        """The keys of the matrix's model entry ``index`` (0 for the first ``[[matrix.models]]``)."""
        return cls(f"matrix.models[{index}]", "matrix")

    def key(self, name: str) -> str:
        """``model.inputs``; ``matrix.models[1].inputs``."""
        return f"{self.table}.{name}"

    def setting(self, name: str) -> str:
        """The key as :func:`option_name` says a config's settings: ``[model] inputs`` (run's words,
        kept); ``matrix.models[1].inputs``."""
        return option_name("model", name, from_config=True) if self.table == "model" else self.key(name)


RUN_MODEL = ModelKeys()


def in_config_names(message: str, model: ModelKeys = RUN_MODEL) -> str:
    """``message`` with the flags of the export and of build's backend options (``--opset``,
    ``--input``, ``--dla-core``) named as the config's keys (``[export] opset``, ``[model] inputs``,
    ``[build] dla_core``): the same settings, given in a config. The stages and backends say the
    flags whoever asked; run says their messages about its config in its names. A flag is renamed
    as a whole word only: ``--input-names`` is not ``--input``. ``model``: how the model's keys are
    named (a matrix's ``matrix.models[1].inputs``)."""
    settings = [*EXPORT_SETTINGS, *(("build", option.user) for option in BACKEND_OPTIONS)]
    keys = {
        option_name(section, key, from_config=False): (
            model.setting(key) if section == "model" else option_name(section, key, from_config=True)
        )
        for section, key in settings
    }
    flags = "|".join(re.escape(flag) for flag in sorted(keys, key=len, reverse=True))
    return re.sub(rf"(?<![\w-])(?:{flags})(?![\w-])", lambda found: keys[found.group()], message)


def _unset(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, (str, list, tuple, dict)) and not value)


def user_names(fields: Sequence[str]) -> list[str]:
    """The user's names ([build] keys, ``--flags`` without dashes) of ``BuildOptions`` fields, sorted."""
    users = {o.field: o.user for o in BACKEND_OPTIONS}
    return sorted(users.get(f, f) for f in fields)


def backend_options(values: Mapping[str, Any], path: Callable[[str], Path] = Path) -> dict[str, Any]:
    """``BuildOptions`` fields from options in the user's names; unset options are left out.

    Args:
        values: user option name -> value (the ``[build]`` section, or the build command's
            parameters); names that are not backend options are ignored.
        path: resolves a path the user wrote (the config resolves it beside the config file).
    """
    return {
        o.field: o.read(values[o.user], path)
        for o in BACKEND_OPTIONS
        if o.user in values and _given(o, values[o.user])
    }


def _given(option: BackendOption, value: Any) -> bool:
    """Whether the user set ``option``: a value other than its default (or, without one, a value at all)."""
    if option.default is not None:  # tf32 = false is given; an empty text is not
        return value is not None and value != "" and value != option.default
    return not _unset(value)


@dataclass
class Fp16Options:
    """How an fp16 artifact is made: graph I/O types and what stays in fp32."""

    keep_io_types: bool = True
    fp32_ops: Sequence[str] = ()
    fp32_nodes: Sequence[str] = ()
    # each name of the user's fp32_nodes -> the nodes it selects (a name the model gives several
    # nodes: NAME, NAME#2...), once fp16.match_fp32_nodes has set fp32_nodes to them all
    fp32_nodes_matched: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Nodes kept in fp32 by an analysis (node name -> reason); the user's lists add to this.
    auto_fp32_nodes: Mapping[str, str] = field(default_factory=dict)
    # the runtime the artifact is for, which decides which ops of ONNX Runtime's converter's block list
    # stay fp32 (fp16.blocked_ops): "onnxruntime" (CPU targets) or "tensorrt" (GPU targets)
    runtime: str = "onnxruntime"


@dataclass
class CalibrationSettings:
    """How to calibrate: the [calibration] config section and the --calib-* options share these."""

    data: str = ""
    algorithm: str = "auto"
    samples: int = 512
    batch_size: int = 8
    seed: int = 0
    percentile: float = DEFAULT_PERCENTILE
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_ops: list[str] = field(default_factory=list)
    trt_version: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpenedSources:
    """The calibration data one run opens once for all its stages (:meth:`CalibrationRequest.open`),
    each source by its settings and the model's inputs. A loader script's feeds are kept in
    ``folder`` by the first read to the end (:attr:`DataSource.keep_in`): the fp16 and int8 stages
    are keyed by their sha256, and the loader ran once for each key and again for each stage's work."""

    folder: Path
    sources: dict[str, DataSource] = field(default_factory=dict)


@contextlib.contextmanager
def sources_opened_for_command() -> Iterator[OpenedSources]:
    """:class:`OpenedSources` for one command on its own (``build``, ``calibrate``), whose folder
    is a scratch folder in the system temp folder, as every stage's scratch work is
    (:func:`edgedeploy.fileio.scratch_dir`): nothing is written outside the output folder the user
    named, and nothing is made there that a failed command would leave behind. It is removed on
    the way out, or by a later command (``sweep_scratch``) when this one was killed. ``run`` keeps
    its feeds in its workdir instead (the user's folder for the run's work)."""
    with scratch_dir("feeds") as kept:
        yield OpenedSources(kept)


# a loader script's feeds as one process kept them, for another: the key of the source they are of
# (CalibrationRequest.open's), the npz files' paths or bytes, the sha256 of them all, and whether
# they are the first feed's alone (DataSource.replay)
KeptFeeds = tuple[str, list[bytes] | list[Path], str, bool]


@dataclass
class CalibrationRequest(CalibrationSettings):
    """The settings as a build uses them: data resolved to a spec, and shapes for dynamic dims."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # made of a config's [calibration] section (edgedeploy run, matrix), not of build's --calib-*
    # options: what the messages name. Not in the repr, which the stages' cache keys hash.
    from_config: bool = field(default=False, repr=False, compare=False)
    # the sources the requests of one run share (run.py), or None: each open() opens the data anew
    opened: OpenedSources | None = field(default=None, repr=False, compare=False)
    # a loader script's feeds as another process read them (matrix: the driver, for its keys), by
    # the source they are of (open()'s key): see KeptFeeds
    feeds: KeptFeeds | None = field(default=None, repr=False, compare=False, metadata={"json": False})

    def option(self, setting: str) -> str:
        """The user's name of ``setting`` (``data``, ``preprocess``) where this request came from:
        ``[calibration] data`` in a config, ``--calib-data`` on build's command line."""
        return option_name("calibration", setting, self.from_config)

    def _key(self, inputs: Sequence[TensorSpec]) -> str:
        """What the source :meth:`open` opens for ``inputs`` depends on."""
        declare = self.option("preprocess") + ("" if self.from_config else " FILE")
        settings = (self.data, self.samples, self.batch_size, self.seed, self.shapes, self.preprocess)
        return repr((settings, declare, list(inputs)))

    def open(self, inputs: Sequence[TensorSpec]) -> DataSource:
        """The calibration data for a model with ``inputs`` (seeded random data when none is given)."""
        declare = self.option("preprocess") + ("" if self.from_config else " FILE")
        key = self._key(inputs)
        if self.opened is not None and key in self.opened.sources:
            return self.opened.sources[key]
        source = open_source(
            self.data or f"random:{self.seed}", inputs, samples=self.samples, batch_size=self.batch_size,
            seed=self.seed, shapes=self.shapes or None, image_options=self.preprocess or None,
            declare_preprocess=declare,
        )  # fmt: skip
        if self.feeds is not None and self.feeds[0] == key:
            source.replay(self.feeds[1], self.feeds[2], first_only=self.feeds[3])
        if self.opened is not None:
            source.keep_in = self.opened.folder
            self.opened.sources[key] = source
        return source

    def keyed(self) -> CalibrationRequest:
        """This request as a cache key holds it beside the data's identity
        (:meth:`DataSource.identity`, which says what the data is): without the data's path as
        written, so ``in/calib``, ``/abs/in/calib`` and ``./in/../in/calib`` make one key."""
        return replace(self, data="")

    def with_feeds_of(
        self,
        source: DataSource,
        inputs: Sequence[TensorSpec],
        as_paths: bool = False,
        first_only: bool = False,
    ) -> CalibrationRequest:
        """This request carrying the feeds ``source`` (its :meth:`open` of ``inputs``) kept, for
        the same source opened in another process; as it is when nothing was kept. ``as_paths``:
        the kept files' paths, for a process on this machine while they last; else their bytes
        (:meth:`DataSource.kept_files`). ``first_only``: the first feed alone, for a process that
        reads no more (a build of a precision ONNX made already reads it in ``build.data_batch``)."""
        kept = source.kept_files(as_paths, first_only)
        if kept is None:
            return self
        return replace(self, opened=None, feeds=(self._key(inputs), *kept, first_only))

    def notes(self, source: DataSource) -> list[str]:
        """:meth:`DataSource.notes` of ``source`` (opened by :meth:`open`), with the preprocessing
        this request declares."""
        return source.notes(self.option("preprocess") if self.preprocess else None)


@dataclass
class BuildRequest:
    """One build as every layer describes it: precision, target, backend and their options."""

    precision: str
    target: Target
    backend: str = "auto"
    fp16: Fp16Options = field(default_factory=Fp16Options)
    calibration: CalibrationRequest = field(default_factory=CalibrationRequest)
    options: dict[str, Any] = field(default_factory=dict)  # BuildOptions fields, from backend_options()
    fp16_analysis: bool = True  # fp16: range analysis chooses fp32 islands (on calibration.data or random)
    accuracy_budget: str | None = None  # e.g. "cosine>=0.999,top1>=0.99" (fp16 and int8)
