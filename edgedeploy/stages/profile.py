"""The profile stage: latency distribution, throughput and the model's peak memory, per batch size.

ONNX artifacts are timed here on ONNX Runtime with host wall-clock timing around each
``run``; TensorRT engines are handed to ``edgedeploy.backends.runtime`` (CUDA events, trtexec's
sections). Every report records the settings that shaped the numbers: threads, provider,
batch, warm-up and duration, so figures from two runs can be compared honestly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from calibration.feeds import DataSource, Feed, check_feed, feed_rows, rebatch, static_batch
from calibration.modelinfo import TensorSpec, batch_axes, batch_names, model_io
from calibration.sources import check_shapes, is_random_spec, named_dims, open_source
from calibration.threads import usable_cores
from edgedeploy.backends import backend_for_artifact
from edgedeploy.backends.onnxruntime import PROVIDERS, create_session
from edgedeploy.backends.runtime import profile_engine
from edgedeploy.backends.runtime.engine import (
    EngineSession,
    TensorInfo,
    batch_range,
    batch_ranges,
    engine_batch_axes,
)
from edgedeploy.backends.trt_sidecar import engine_model_inputs
from edgedeploy.errors import InputError, naming_guessed_dims, not_a_file, user_failure
from edgedeploy.fileio import sha256_file
from edgedeploy.onnxio import external_data_files, is_onnx_path
from edgedeploy.power import PowerMonitor
from edgedeploy.results import to_jsonable
from edgedeploy.stages.precision.emulate import onnx_precision
from edgedeploy.stats import LatencyStats, latency_quantiles
from edgedeploy.targets import cpu_model, has_vnni, host_target_name

Progress = Callable[[float], None]  # fraction done, 0..1
BULK_SPREAD_WARN = 0.25  # (p90 - median) / median above which a CPU profile is called unsteady
# what ``model_peak_rss_mb`` is, in the settings of every ONNX Runtime profile
MODEL_MEMORY = (
    "peak resident memory (RSS) the model's ONNX Runtime session added to the process, from its "
    "creation through each batch size's first and warm-up runs (the timed runs repeat them), over "
    "the RSS just before it was made: not the process's total, nor ONNX Runtime's code paged in"
)


@dataclass
class ProfileOptions:
    warmup_iterations: int | None = None
    warmup_ms: float = 200.0  # trtexec's default warm-up
    iterations: int | None = None
    duration_s: float = 3.0  # trtexec's default duration
    min_iterations: int = 10
    batch_sizes: Sequence[int] = (1,)
    # the batch sizes are dim 0 of ``shapes`` where the batch is dynamic (as trtexec's --shapes),
    # ``batch_sizes`` when no shape is given for such an input
    batch_from_shapes: bool = False
    threads: int | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    measure_power: bool = True
    # what artifacts are timed on (a data spec, as compare's --data): random inputs of ``shapes``,
    # or each batch size's first samples of the data (image folders read with ``preprocess``), as
    # trtexec's --loadInputs; ONNX models and engines alike
    data: str = "random"
    preprocess: dict[str, Any] | None = None
    # the option that gave ``preprocess`` (``--preprocess FILE``), named in a warning where the data is
    # not an image folder (DataSource.notes, as compare says it)
    preprocess_option: str | None = None
    # TensorRT engines only
    # batch sizes an engine's profile does not take are timed at its opt batch, said in a warning
    # (run and matrix: the config's batch sizes serve every artifact, built before the engine's
    # profile is known); else one asked for is refused before any batch is timed
    opt_batch_outside_profile: bool = False
    batch_sizes_option: str = "--batch-sizes"  # where other batch sizes are given, for that warning
    cuda_graph: bool = False
    no_data_transfers: bool = False
    per_layer: bool = False

    def __post_init__(self) -> None:
        """Refuse what would hang or mean nothing (a NaN duration never ends), from the CLI or a config."""
        from edgedeploy.errors import InputError, SettingError

        def number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not number(self.duration_s) or self.duration_s < 0:
            said = f"must be a number of seconds >= 0, got {self.duration_s!r}"
            raise SettingError(("profile", "duration_s"), "profile duration", said)
        if not number(self.warmup_ms) or self.warmup_ms < 0:
            said = f"must be a number of ms >= 0, got {self.warmup_ms!r}"
            raise SettingError(("profile", "warmup_ms"), "profile warm-up", said)
        for name, key, value, least in (
            ("iterations", "iterations", self.iterations, 1),
            ("warm-up iterations", "warmup", self.warmup_iterations, 0),
            ("threads", "threads", self.threads, 1),
            ("minimum iterations", None, self.min_iterations, 1),  # no config key nor flag sets it
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                said = f"must be a whole number >= {least}, got {value!r}"
                if key is None:
                    raise InputError(f"profile {name} {said}")
                raise SettingError(("profile", key), f"profile {name}", said)
        if not self.batch_sizes or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in self.batch_sizes
        ):
            said = f"must be whole numbers >= 1, got {list(self.batch_sizes)!r}"
            raise SettingError(("profile", "batch_sizes"), "profile batch sizes", said)


@dataclass
class BatchProfile:
    batch_size: int
    latency: LatencyStats
    throughput_ips: float  # inferences (samples) per second
    throughput_qps: float  # batches (queries) per second
    iterations: int
    wall_s: float
    # the peak resident memory the model's session added to the process, from its creation through
    # this batch's warm-up (:data:`MODEL_MEMORY`); None for engines and where Linux's counters are not
    model_peak_rss_mb: float | None
    energy: dict[str, Any] | None = None  # PowerResult as a dict, where measurable
    # TensorRT engines: trtexec's sections (latency, enqueue, h2d, gpu_compute, d2h) and layer times
    sections: dict[str, LatencyStats] | None = None
    per_layer: list[Any] | None = None
    # the latency distribution: 101 quantiles, 0 % (min) to 100 % (max), for the report's CDF
    quantiles_ms: list[float] | None = None


@dataclass
class ProfileResult:
    artifact: str
    backend: str
    settings: dict[str, Any]
    batches: list[BatchProfile]
    warnings: list[str] = field(default_factory=list)
    # what an ONNX artifact computes in, from its content (precision.emulate.onnx_precision); None
    # for an engine, whose name and sidecar say it
    precision: str | None = None
    bytes: int | None = None  # the artifact's size on disk (an ONNX with its external data files)
    # the artifact's file by content: report tells two models of one file name apart by it
    # (edgedeploy/stages/report/load.py), where a path alone names whatever is there now
    sha256: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "settings": self.settings,
            "batch_sizes": {
                str(b.batch_size): {
                    "median_ms": b.latency.median_ms,
                    "p90_ms": b.latency.p90_ms,
                    "p99_ms": b.latency.p99_ms,
                    "mean_ms": b.latency.mean_ms,
                    "cv_percent": b.latency.cv_percent,
                    "iterations": b.iterations,
                    "throughput_ips": b.throughput_ips,
                    "throughput_qps": b.throughput_qps,
                    "model_peak_rss_mb": b.model_peak_rss_mb,
                    "energy": b.energy,
                    "quantiles_ms": b.quantiles_ms,
                }
                for b in self.batches
            },
        }


def _reset_peak_rss() -> bool:
    """Linux lets a process reset its own VmHWM (peak RSS) to its RSS by writing 5 to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_mb(key: str) -> float | None:
    """A figure of /proc/self/status in MB (``VmRSS``, ``VmHWM``); None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim), so that what the session
    allocates next is memory it adds, not pages earlier work freed and the process still holds."""
    with contextlib.suppress(Exception):
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)


def rss_baseline_mb() -> tuple[float, float] | None:
    """The process's RSS and its file-backed part, in MB, with the peak reset to the RSS: what a
    session made next adds is measured from here (:func:`model_peak_rss_mb`). Garbage is collected
    and free heap returned first. None where Linux cannot reset the peak: the process's lifetime
    peak would then count everything that ran before."""
    gc.collect()
    _trim_heap()
    if not _reset_peak_rss():
        return None
    rss, files = _status_mb("VmRSS"), _status_mb("RssFile")
    return None if rss is None or files is None else (rss, files)


def model_peak_rss_mb(baseline: tuple[float, float] | None) -> float | None:
    """The peak resident memory added since :func:`rss_baseline_mb`, in MB, less the file-backed
    pages paged in meanwhile: ONNX Runtime's own code, which the first session of a process pages
    in (14 MB of the library for a 66 kB model here) and later ones find there. The peak of the
    rest cannot be read apart, so it is the peak's growth less the file pages' growth, and at
    least the anonymous memory grown by now."""
    if baseline is None:
        return None
    peak, rss, files = _status_mb("VmHWM"), _status_mb("VmRSS"), _status_mb("RssFile")
    if peak is None or rss is None or files is None:
        return None
    base_rss, base_files = baseline
    file_growth = files - base_files
    anon_growth = (rss - files) - (base_rss - base_files)
    return max(0.0, peak - base_rss - file_growth, anon_growth)


def unsteady_warning(stats: LatencyStats) -> str | None:
    """A warning when the bulk of the latencies is spread, not when a few outliers are.

    Host timings of sub-millisecond runs carry rare scheduler hiccups that inflate the CV on
    their own, so the CV alone would warn on every quiet run.
    """
    spread = (stats.p90_ms - stats.median_ms) / stats.median_ms if stats.median_ms > 0 else 0.0
    if spread <= BULK_SPREAD_WARN:
        return None
    return (
        f"p90 latency is {spread * 100:.0f}% above the median (CV {stats.cv_percent:.1f}%): "
        "a busy or throttled machine; compare medians"
    )


def check_batch_sizes(
    inputs: Sequence[TensorSpec], batch_sizes: Sequence[int], option: str = "--batch-sizes"
) -> None:
    """InputError for batch sizes that are not positive, or that a model fixing its batch cannot take
    (``option``: where the user gives them)."""
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InputError("--batch-sizes must be positive integers, e.g. 1,2,4,8")
    if any(spec.shape and not isinstance(spec.shape[0], int) for spec in inputs):
        return  # the batch is dynamic; an input with a fixed first dim beside it is not batched
        # on that axis (a recurrent state [layers, batch, hidden], a table) and keeps its shape
    for spec in inputs:
        first = spec.shape[0] if spec.shape else None
        if isinstance(first, int):
            wrong = list(dict.fromkeys(b for b in batch_sizes if b != first))
            if wrong:
                # not "export with --dynamic-batch": export keeps an ONNX file's fixed dims as they
                # are (akiki-vad's [1, 576]), so that advice changed nothing for a downloaded model
                given = f"{option} {first}" if option.startswith("--") else f"{option} = [{first}]"
                raise InputError(
                    f"input '{spec.name}' has a static batch of {first}; cannot profile batch size(s) "
                    f"{', '.join(map(str, wrong))}: the model fixes its batch, profile it with {given} "
                    "(a PyTorch model exported with --static takes other batches once exported with "
                    "--dynamic-batch, the default)"
                )


def resolved_batch_sizes(
    options: ProfileOptions, dynamic: Sequence[str], static: int | None = None
) -> tuple[int, ...]:
    """The batch sizes to time: ``options.batch_sizes``, or with ``batch_from_shapes`` (no
    ``--batch-sizes``) dim 0 of the shapes given for the inputs whose batch is dynamic
    (``dynamic``), which must agree, else the model's own fixed batch (``static``), as trtexec
    runs a static model at its shapes."""
    given = {name: dims[0] for name, dims in options.shapes.items() if dims and name in dynamic}
    if options.batch_from_shapes and not given and not dynamic and static:
        return (static,)
    if not options.batch_from_shapes or not given:
        return tuple(options.batch_sizes)
    sizes = tuple(dict.fromkeys(given.values()))
    if len(sizes) > 1:
        raise InputError(
            f"--input: dim 0 is the batch and differs between inputs "
            f"({', '.join(f'{n} {d}' for n, d in given.items())}); give the batch sizes with --batch-sizes"
        )
    return sizes


def batch_shapes(
    inputs: Sequence[TensorSpec], overrides: dict[str, tuple[int, ...]], batch: int
) -> dict[str, tuple[int, ...]]:
    """``--input`` shapes with dim 0 set to ``batch`` where the model's batch is dynamic, and every
    axis named as an input's batch too (silero-vad's ``state[2, batch, 128]`` beside
    ``input[batch, sequence]``: ``--batch-sizes 4`` with ``state:2x1x128`` fed a state of 1).

    Dynamic dims with no override are fed as 1 (recorded in the report's settings).
    """
    named = batch_names(inputs)
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in inputs:
        if spec.name in overrides:
            shape = list(overrides[spec.name])
            for axis in batch_axes(spec.shape[: len(shape)], named):
                shape[axis] = batch
            shapes[spec.name] = tuple(shape)
    return shapes


def _time_loop(
    run: Callable[[], object],
    options: ProfileOptions,
    progress: Progress | None,
    timed: AbstractContextManager[object] | None = None,
    warm: Callable[[], object] | None = None,
) -> tuple[list[float], float]:
    """Warm up, then time ``run`` for N iterations or a duration (at least min_iterations): the
    latencies in ms and the wall time of the timed loop in s. ``warm`` is called after the warm-up;
    ``timed`` (the power monitor's window) is entered then and left after the last timed run."""
    if options.warmup_iterations is not None:
        for _ in range(options.warmup_iterations):
            run()
    else:
        end = time.perf_counter() + options.warmup_ms / 1000.0
        while time.perf_counter() < end:
            run()
    if warm is not None:
        warm()
    samples: list[float] = []
    with timed if timed is not None else contextlib.nullcontext():
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            run()
            samples.append((time.perf_counter() - t0) * 1000.0)
            elapsed = time.perf_counter() - start
            if options.iterations is not None:
                done = len(samples) / options.iterations
                finished = len(samples) >= options.iterations
            else:
                done = min(1.0, elapsed / options.duration_s)
                finished = elapsed >= options.duration_s and len(samples) >= options.min_iterations
            if progress:
                progress(done)
            if finished:
                break
    return samples, elapsed


def _data_feed(data: DataSource, inputs: Sequence[TensorSpec], batch: int) -> tuple[Feed, str | None]:
    """The first ``batch`` samples of ``data`` as one feed, and a warning when the data holds fewer:
    its samples are then repeated to fill the batch (a batch size is timed at that size)."""
    taken: list[Feed] = []
    rows = 0
    for feed in data:
        taken.append(feed)
        rows += feed_rows(feed, inputs)
        if rows >= batch:
            break
    repeats = -(-batch // max(rows, 1))
    feed = _in_input_dtypes(next(iter(rebatch(taken * repeats, batch, inputs, batch))), inputs, data)
    if repeats == 1:
        return feed, None
    return feed, f"batch {batch}: the data holds {rows} sample(s), repeated to fill the batch"


def _in_input_dtypes(feed: Feed, inputs: Sequence[TensorSpec], data: DataSource) -> Feed:
    """``feed`` cast to the dtypes of the artifact's ``inputs``: a run reads its data once, for the
    fp32 model, and times every precision on it, where an fp16 model built with keep_io_types off
    takes float16 (ONNX Runtime refused the float32 arrays). Cast as a data source casts its feeds
    to the model it was opened for (calibration/feeds.py check_feed: exactly, an overflow refused);
    a feed already in them is returned as it is."""
    dtypes = {spec.name: spec.np_dtype for spec in inputs if spec.kind is None}
    if all(name not in dtypes or arr.dtype == dtypes[name] for name, arr in feed.items()):
        return feed
    return check_feed(feed, inputs, data.spec)


def profile_onnx(
    model: Path,
    options: ProfileOptions,
    progress: Callable[[int, float], None] | None = None,
    data: DataSource | None = None,
) -> ProfileResult:
    """Time an ONNX artifact on ONNX Runtime's CPU provider for each batch size, on ``data`` (opened
    by the caller, a run's compare data) or ``options.data``."""
    import onnxruntime as ort

    inputs, _ = model_io(model)
    check_shapes(options.shapes, {s.name: s.rank for s in inputs})
    dynamic = [s.name for s in inputs if s.shape and not isinstance(s.shape[0], int)]
    sizes = resolved_batch_sizes(options, dynamic, static_batch(inputs))
    options = replace(options, batch_sizes=sizes, batch_from_shapes=False)
    check_batch_sizes(inputs, options.batch_sizes, options.batch_sizes_option)
    # the model's memory: the peak from here (the session's creation) through each batch's warm
    # runs, so that one model reads alike in profile, run or after anything else in the process
    baseline = rss_baseline_mb()
    session = create_session(model, options.threads)
    batches: list[BatchProfile] = []
    warnings: list[str] = []
    cores = usable_cores()
    if options.threads and options.threads > cores:
        warnings.append(
            f"--threads {options.threads} is more than the {cores} core(s) this process may use: the "
            "threads take turns, so the latency measures the oversubscription as much as the model"
        )
    shapes_used: dict[str, dict[str, list[int]]] = {}
    if data is None and not is_random_spec(options.data):
        most = max(options.batch_sizes)
        data = open_source(
            options.data, inputs, samples=most, batch_size=most, image_options=options.preprocess
        )
    if data is not None:
        warnings.extend(data.notes(options.preprocess_option))
    for batch in options.batch_sizes:
        if data is not None:
            source, (feed, repeated) = data, _data_feed(data, inputs, batch)
            warnings.extend([repeated] if repeated else [])
        else:
            shapes = batch_shapes(inputs, options.shapes, batch)
            source = open_source(options.data, inputs, samples=batch, batch_size=batch, shapes=shapes)
            # said for the first batch size only: the others differ in dim 0, not in the dims guessed
            if batch == options.batch_sizes[0]:
                warnings.extend(source.notes(options.preprocess_option))
            feed = next(iter(source))
        shapes_used[str(batch)] = {name: list(arr.shape) for name, arr in feed.items()}
        with random_data_failing(source), naming_guessed_dims(source.fed_as_one):  # the first run
            session.run(None, feed)  # allocates: counted in the peak
        monitor = PowerMonitor() if options.measure_power else None
        cb = (lambda f, b=batch: progress(b, f)) if progress else None
        run = functools.partial(session.run, None, feed)
        # the model's memory is read once it has run warm: the timed runs repeat those runs, and what
        # grows while they do is the list of their times (6 MB for 200,000 runs), not the model's
        memory: dict[str, float | None] = {}

        def warm(memory: dict[str, float | None] = memory) -> None:
            memory["mb"] = model_peak_rss_mb(baseline)

        # the monitor samples through the warm-up; its window (energy, duration) is the timed loop
        with monitor if monitor is not None else contextlib.nullcontext():
            window = monitor.window() if monitor is not None else None
            samples, wall = _time_loop(run, options, cb, window, warm)
        stats = LatencyStats.from_samples(samples)
        energy = None
        if monitor is not None:
            energy = _power_dict(monitor.result(len(samples) * batch))
        # trtexec's throughput: the queries over the wall time from the first timed one to the last
        # (the time between runs counts: 1 / mean latency read 7 % high on a tiny model)
        qps = len(samples) / wall if wall > 0 else 0.0
        batches.append(
            BatchProfile(
                batch_size=batch,
                latency=stats,
                throughput_ips=qps * batch,
                throughput_qps=qps,
                iterations=len(samples),
                wall_s=wall,
                model_peak_rss_mb=memory.get("mb"),
                energy=energy,
                quantiles_ms=latency_quantiles(samples),
            )
        )
        unsteady = unsteady_warning(stats)
        if unsteady:
            warnings.append(f"batch {batch}: {unsteady}")
    settings = {
        "provider": PROVIDERS[0],
        "onnxruntime": ort.__version__,
        "threads": options.threads or f"default ({os.cpu_count()} cores)",
        "warmup": (
            f"{options.warmup_iterations} iterations"
            if options.warmup_iterations is not None
            else f"{options.warmup_ms:g} ms"
        ),
        "measure": (
            f"{options.iterations} iterations"
            if options.iterations is not None
            else f"{options.duration_s:g} s (at least {options.min_iterations} iterations)"
        ),
        "timing": "host wall clock around session.run (data already in host memory)",
        "model_peak_rss_mb": MODEL_MEMORY,
        "cpu": f"{cpu_model()} ({platform.machine()}, VNNI: {'yes' if has_vnni() else 'no'})",
        "host_target": host_target_name(),  # the CPU target these figures were measured on
        "input_shapes": shapes_used,
        # what was timed: the data's kind and spec (random: generator and seed), each batch size on
        # its first samples
        "data": {k: v for k, v in (data or source).describe().items() if k in DATA_FIELDS},
    }
    precision = onnx_precision(onnx.load(os.fspath(model), load_external_data=False))
    size = model.stat().st_size + sum(p.stat().st_size for p in external_data_files(model))
    return ProfileResult(
        artifact=str(model), backend="onnxruntime", settings=settings, batches=batches, warnings=warnings,
        precision=precision, bytes=size,
    )  # fmt: skip


# what the JSON's settings say of the data timed on (DataSource.describe())
DATA_FIELDS = (
    "kind", "spec", "synthetic", "seed", "integer_ranges", "files", "script", "sha256", "feeds_sha256"
)  # fmt: skip


@contextlib.contextmanager
def random_data_failing(source: DataSource) -> Iterator[None]:
    """ONNX Runtime refusing random inputs (ids beyond the table they index, through ops no range
    can follow): one line that says the inputs were random and names the data option."""
    try:
        yield
    except Exception as exc:
        if not source.synthetic or (type(exc).__module__ or "").split(".")[0] != "onnxruntime":
            raise
        raise InputError(
            f"random inputs fail the model ({user_failure(exc)}): time it on real inputs with --data "
            "(run: [compare] or [calibration] data)"
        ) from None


def _power_dict(result: Any) -> dict[str, Any] | None:

    data = to_jsonable(result)
    return data if isinstance(data, dict) else None


def profile(
    artifact: Path,
    options: ProfileOptions,
    progress: Callable[[int, float], None] | None = None,
    data: DataSource | None = None,
) -> ProfileResult:
    """Profile an ONNX model (ONNX Runtime) or a TensorRT engine (edgedeploy.backends.runtime);
    ``data``: what either is timed on instead of ``options.data`` (:func:`profile_onnx`,
    :func:`profile_engine_batches`)."""
    if not artifact.is_file():
        raise not_a_file("artifact", artifact)
    if is_onnx_path(artifact):
        engine_only = [
            flag
            for flag, on in (
                ("--cuda-graph", options.cuda_graph),
                ("--no-data-transfers", options.no_data_transfers),
                ("--per-layer", options.per_layer),
            )
            if on
        ]
        if engine_only:
            raise InputError(
                f"{', '.join(engine_only)}: for TensorRT engines; {artifact.name} is an ONNX model "
                "timed on ONNX Runtime (build an engine first)"
            )
        digest = sha256_file(artifact)  # of the file as it is measured
        return replace(profile_onnx(artifact, options, progress, data), sha256=digest)

    backend_for_artifact(str(artifact))  # raises a clear line where TensorRT is missing
    digest = sha256_file(artifact)
    return replace(profile_engine_batches(artifact, options, progress, data), sha256=digest)


def engine_batch_shapes(
    inputs: Sequence[TensorInfo],
    batch: int,
    axes: Mapping[str, list[int]],
    overrides: Mapping[str, tuple[int, ...]] | None = None,
    specs: Sequence[TensorSpec] = (),
) -> dict[str, tuple[int, ...]]:
    """Input shapes for one batch size: ``--input`` shapes (``overrides``), else the OPT shape of the
    first profile that takes ``batch`` with the length ``--input`` gives a dim the model names on
    several inputs (``specs``, the model the engine was built from: T of ``a[N, T, 8]`` given as
    2x5x8 is b's T too), and ``batch`` on every batch axis (``axes``, :func:`engine_batch_axes`:
    silero-vad's ``state[2, batch, 128]`` on axis 1), as on the ONNX path. An engine with no batch
    axis runs its fixed dim 0 only."""
    overrides = overrides or {}
    by_name = {s.name: s for s in specs}
    named = named_dims(specs, overrides)
    batched = [t for t in inputs if axes.get(t.name)]
    if not batched:
        for tensor in inputs:
            if tensor.shape and tensor.shape[0] != batch:
                raise InputError(
                    f"input '{tensor.name}' has a static batch of {tensor.shape[0]}; "
                    f"cannot profile batch {batch}"
                )
    count = max((len(t.profiles) for t in inputs), default=0)
    ranges = [batch_range(inputs, axes, p) for p in range(count)]
    taking = [p for p, r in enumerate(ranges) if r is not None and r[0] <= batch <= r[1]]
    if batched and count and not taking:
        tensor = batched[0]
        low, high = tensor.min_shape or (), tensor.max_shape or ()
        axis = axes[tensor.name][0]
        if high and batch > high[axis]:
            raise InputError(
                f"input '{tensor.name}': batch {batch} exceeds the engine's profile maximum "
                f"{high[axis]}; rebuild with a larger --profile"
            )
        if low and batch < low[axis]:
            raise InputError(
                f"input '{tensor.name}': batch {batch} is below the engine's profile minimum "
                f"{low[axis]}; rebuild with a wider --profile"
            )
    index = taking[0] if taking else 0
    shapes: dict[str, tuple[int, ...]] = {}
    for tensor in inputs:
        if tensor.name in overrides:
            shape = list(overrides[tensor.name])
        elif -1 in tensor.shape:
            shape = list(tensor.profiles[index][1] if tensor.profiles else (max(d, 1) for d in tensor.shape))
            dims = by_name[tensor.name].shape if tensor.name in by_name else ()
            for axis, dim in enumerate(dims if len(dims) == len(shape) else ()):
                if axis > 0 and tensor.shape[axis] == -1 and isinstance(dim, str) and dim in named:
                    shape[axis] = named[dim]
        else:
            continue
        for axis in axes.get(tensor.name, []):
            shape[axis] = batch
        shapes[tensor.name] = tuple(shape)
    return shapes


def _engine_specs(inputs: Sequence[TensorInfo], specs: Sequence[TensorSpec]) -> list[TensorSpec]:
    """The engine's inputs as the model it was built from declares them (``specs``), else as the
    engine does, a dynamic dim named by its input and axis (dim 0 the batch), to open data for."""
    if specs:
        return list(specs)
    return [
        TensorSpec(
            t.name,
            tuple(
                ("batch" if axis == 0 else f"{t.name}_{axis}") if d < 0 else d
                for axis, d in enumerate(t.shape)
            ),
            t.dtype.name,
        )
        for t in inputs
    ]


def profile_engine_batches(
    engine: Path,
    options: ProfileOptions,
    progress: Callable[[int, float], None] | None = None,
    data: DataSource | None = None,
) -> ProfileResult:
    """Time a TensorRT engine per batch size with CUDA events (trtexec's sections): on ``data``
    (opened by the caller, a run's data) or ``options.data``, each batch size on the data's first
    samples as :func:`profile_onnx` takes them, at the data's own shapes; else on seeded random
    inputs of the ``--input`` shapes or the profile's opt shapes. ``settings.data`` says which."""
    from edgedeploy.backends.runtime.timing import RANDOM_FEED

    with EngineSession(engine) as session:
        inputs = [t for t in session.tensors if t.is_input]
    ranks = {t.name: len(t.shape) for t in inputs}
    check_shapes(options.shapes, ranks)
    # which axes carry the batch, and which dims are one: the engine keeps no dim names, the model
    # it came from has them
    specs = engine_model_inputs(engine, ranks) or []
    axes = engine_batch_axes(inputs, specs)
    dynamic = [t.name for t in inputs if 0 in axes[t.name]]
    fixed = {int(t.shape[0]) for t in inputs if t.shape and t.shape[0] > 0}
    static = next(iter(fixed)) if len(fixed) == 1 else None
    sizes = resolved_batch_sizes(options, dynamic, static)
    warnings: list[str] = []
    # no batch asked (neither --batch-sizes nor dim 0 of --input): 1, or where no profile takes 1
    # the first profile's opt batch, as the bundle's benchmark.sh picks it; run's and matrix's batch
    # sizes (opt_batch_outside_profile) take it in place of those the profile does not take
    asked = not options.batch_from_shapes or any(dims and n in dynamic for n, dims in options.shapes.items())
    ranges = batch_ranges(inputs, axes)
    outside = [b for b in sizes if ranges and not any(lo <= b <= hi for lo, hi in ranges)]
    if outside and (not asked or options.opt_batch_outside_profile):
        first = next(t for t in inputs if axes[t.name])
        opt = first.profiles[0][1][axes[first.name][0]]
        sizes = tuple(dict.fromkeys(opt if b in outside else b for b in sizes))
        spans = " or ".join(f"{lo}..{hi}" for lo, hi in ranges)
        were = (
            f"batch {outside[0]} is" if len(outside) == 1 else f"batches {', '.join(map(str, outside))} are"
        )
        warnings.append(
            f"{were} outside the engine's profile{'s' if len(ranges) > 1 else ''} (batch {spans}): "
            f"profiled its opt batch {opt} (give others with {options.batch_sizes_option})"
        )
    options = replace(options, batch_sizes=sizes, batch_from_shapes=False)
    # each batch's shapes (--input fixes the other dims; the batch follows --batch-sizes), all made
    # before any batch is timed: a batch the engine cannot take is refused first
    shapes_of = [
        (b, engine_batch_shapes(inputs, b, axes, options.shapes, specs)) for b in options.batch_sizes
    ]
    if data is None and not is_random_spec(options.data):
        most = max(options.batch_sizes)
        data = open_source(
            options.data, _engine_specs(inputs, specs), samples=most, batch_size=most,
            image_options=options.preprocess,
        )  # fmt: skip
    if data is not None:
        warnings.extend(data.notes(options.preprocess_option))
    names = {t.name for t in inputs}
    batches: list[BatchProfile] = []
    settings: dict[str, Any] = {}
    shapes_used: dict[str, dict[str, list[int]]] = {}  # per batch, as the ONNX Runtime JSON has them
    for batch, shapes in shapes_of:
        feed: Feed | None = None
        if data is not None:  # the data's first samples, at its own shapes
            feed, repeated = _data_feed(data, data.inputs, batch)
            feed = {name: array for name, array in feed.items() if name in names}
            warnings.extend([repeated] if repeated else [])
        monitor = PowerMonitor() if options.measure_power else None

        def run(
            shapes: dict[str, tuple[int, ...]] = shapes,
            monitor: PowerMonitor | None = monitor,
            feed: Feed | None = feed,
        ) -> Any:
            return profile_engine(
                engine,
                warmup_ms=options.warmup_ms,
                duration_s=0.0 if options.iterations else options.duration_s,
                iterations=options.iterations or options.min_iterations,
                shapes=shapes or None,
                cuda_graph=options.cuda_graph,
                no_data_transfers=options.no_data_transfers,
                per_layer=options.per_layer,
                timed=monitor.window() if monitor is not None else None,
                feed=feed,
            )

        # the monitor samples through loading and warm-up; its window is the timed loop
        with monitor if monitor is not None else contextlib.nullcontext():
            result = run()
        if progress:
            progress(batch, 1.0)
        main = "gpu_compute" if options.no_data_transfers else "latency"
        energy = _power_dict(monitor.result(result.iterations * batch)) if monitor is not None else None
        batches.append(
            BatchProfile(
                batch_size=batch,
                latency=result.sections[main],
                throughput_ips=result.throughput_qps * batch,
                throughput_qps=result.throughput_qps,
                iterations=result.iterations,
                wall_s=result.total_wall_s,
                model_peak_rss_mb=None,
                energy=energy,
                sections=result.sections,
                per_layer=result.per_layer,
                quantiles_ms=result.quantiles_ms.get(main),
            )
        )
        if result.cv_warning:
            warnings.append(f"batch {batch}: {result.cv_warning}")
        warnings.extend(f"batch {batch}: {note}" for note in result.notes)
        shapes_used[str(batch)] = result.settings.get("shapes") or {}
        settings = {k: v for k, v in result.settings.items() if k != "shapes"}
        settings.update(clocks=result.clocks, input_shapes=shapes_used)
        # what was timed: the data (as profile_onnx says it), else the seeded random inputs
        described = data.describe() if data is not None else RANDOM_FEED
        settings["data"] = {k: v for k, v in described.items() if k in (*DATA_FIELDS, "generator")}
    if options.warmup_iterations is not None:
        warnings.append("engines warm up by time (--warmup-ms); --warmup iterations were ignored")
    return ProfileResult(
        artifact=str(engine), backend="tensorrt", settings=settings, batches=batches, warnings=warnings,
        bytes=engine.stat().st_size,
    )  # fmt: skip
