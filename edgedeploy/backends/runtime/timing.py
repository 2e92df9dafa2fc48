"""Engine latency as trtexec reports it, measured with CUDA events on one stream.

Each iteration records events around the input copies, the enqueue and the output copies, so
one run yields trtexec's five sections: Latency (H2D + compute + D2H), Enqueue Time (host wall
time of ``execute_async_v3`` or the graph launch), H2D, GPU Compute and D2H. Iterations run one
at a time (synchronised), which is what an application that waits for each result sees. Options
mirror trtexec's: warm-up, duration, minimum iterations, CUDA graphs, no data transfers, and a
separate per-layer pass through an IProfiler (a profiler serialises layers, so it never shares
the timed loop). Settings, clocks and power mode go into every result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.backends.runtime.clocks import read_clock_settings
from edgedeploy.backends.runtime.engine import EngineSession
from edgedeploy.backends.trt_env import tensorrt_version
from edgedeploy.stats import LatencyStats, latency_quantiles

CV_WARN_PERCENT = 2.5
# what an engine is timed on without data (EngineSession.random_feed), as a profile's settings.data
# says it: floats standard normal, booleans 0/1, integers 0..7
RANDOM_FEED: dict[str, Any] = {
    "kind": "random", "spec": "random", "synthetic": True, "seed": 0,
    "generator": "floats standard normal, integers 0..7",
}  # fmt: skip
SECTIONS = ("latency", "enqueue", "h2d", "gpu_compute", "d2h")
PER_LAYER_RUNS = 20


@dataclass
class LayerTime:
    name: str
    mean_ms: float
    median_ms: float
    percent: float  # of the summed per-layer mean times


@dataclass
class EngineProfile:
    engine: str
    sections: dict[str, LatencyStats]
    throughput_qps: float
    total_wall_s: float
    iterations: int
    cv_warning: str | None
    settings: dict[str, Any]
    clocks: dict[str, str]
    per_layer: list[LayerTime] | None = None
    notes: list[str] = field(default_factory=list)
    quantiles_ms: dict[str, list[float]] = field(default_factory=dict)  # per section, 0..100 %


def _layer_profiler() -> Any:
    import tensorrt as trt_mod

    class LayerProfiler(trt_mod.IProfiler):  # type: ignore[misc]
        def __init__(self) -> None:
            trt_mod.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.setdefault(layer_name, []).append(float(ms))

    return LayerProfiler()


def per_layer_times(session: EngineSession, runs: int = PER_LAYER_RUNS) -> list[LayerTime]:
    """Per-layer times from TensorRT's IProfiler over ``runs`` synchronised inferences."""
    profiler = _layer_profiler()
    session.context.profiler = profiler  # stays attached: this pass runs last in a session
    for _ in range(runs):
        session.enqueue()
        session.synchronize()
    means = {name: float(np.mean(v)) for name, v in profiler.times.items()}
    total = sum(means.values()) or 1.0
    rows = [
        LayerTime(name, means[name], float(np.median(v)), 100.0 * means[name] / total)
        for name, v in profiler.times.items()
    ]
    return sorted(rows, key=lambda r: r.mean_ms, reverse=True)


def profile_engine(
    engine: Path,
    *,
    warmup_ms: float = 200.0,
    duration_s: float = 3.0,
    iterations: int = 10,
    shapes: dict[str, tuple[int, ...]] | None = None,
    cuda_graph: bool = False,
    no_data_transfers: bool = False,
    per_layer: bool = False,
    timed: AbstractContextManager[object] | None = None,
    feed: Mapping[str, np.ndarray] | None = None,
) -> EngineProfile:
    """Time ``engine`` for at least ``duration_s`` and ``iterations`` after ``warmup_ms`` of warm-up.

    ``timed`` (the power monitor's window) is entered after the warm-up and left after the last
    timed iteration: loading, warm-up and the per-layer pass are outside it. ``feed``: the inputs
    timed (the user's data, at its own shapes), else seeded random inputs (:data:`RANDOM_FEED`) of
    ``shapes``.
    """
    import pycuda.driver as cuda

    notes: list[str] = []
    with EngineSession(Path(engine)) as session:
        if feed is not None:
            session.load(feed)
        else:
            session.set_input_shapes(shapes or {})
            session.load(session.random_feed(seed=RANDOM_FEED["seed"]))
        session.copy_inputs()  # device inputs hold data even when timed runs skip the copies
        session.synchronize()
        used_shapes = {spec.name: list(session.host(spec.name).shape) for spec in session.inputs}

        graph = None
        if cuda_graph:
            from edgedeploy.backends.runtime.cuda_graph import CudaGraph

            session.enqueue()  # the first enqueue may allocate; keep it out of the capture
            session.synchronize()
            assert session.stream is not None
            try:
                graph = CudaGraph(int(session.stream.handle)).capture(session.enqueue)
            except Exception as exc:
                notes.append(f"CUDA graph capture failed ({exc}); timed plain enqueues instead")
                graph = None
        launch = graph.launch if graph is not None else session.enqueue

        events = [cuda.Event() for _ in range(4)]
        samples: dict[str, list[float]] = {name: [] for name in SECTIONS}

        def one(record: bool) -> None:
            h2d_start, h2d_end, compute_end, d2h_end = events
            h2d_start.record(session.stream)
            if not no_data_transfers:
                session.copy_inputs()
            h2d_end.record(session.stream)
            t0 = time.perf_counter()
            launch()
            enqueue_ms = (time.perf_counter() - t0) * 1e3
            compute_end.record(session.stream)
            if not no_data_transfers:
                session.copy_outputs()
            d2h_end.record(session.stream)
            d2h_end.synchronize()
            if record:
                samples["h2d"].append(h2d_end.time_since(h2d_start))
                samples["gpu_compute"].append(compute_end.time_since(h2d_end))
                samples["d2h"].append(d2h_end.time_since(compute_end))
                samples["latency"].append(d2h_end.time_since(h2d_start))
                samples["enqueue"].append(enqueue_ms)

        warm_end = time.perf_counter() + warmup_ms / 1e3
        while time.perf_counter() < warm_end:
            one(record=False)
        with timed if timed is not None else contextlib.nullcontext():
            started = time.perf_counter()
            count = 0
            while count < max(iterations, 1) or time.perf_counter() - started < duration_s:
                one(record=True)
                count += 1
            wall = time.perf_counter() - started
        if graph is not None:
            graph.close()

        layers = per_layer_times(session) if per_layer else None
        events.clear()  # CUDA events are destroyed while the session's context still lives

    sections = {name: LatencyStats.from_samples(samples[name]) for name in SECTIONS}
    quantiles = {name: latency_quantiles(samples[name]) for name in ("latency", "gpu_compute")}
    cv = sections["gpu_compute"].cv_percent
    cv_warning = (
        f"GPU compute time varies by {cv:.1f}% (coefficient of variation > {CV_WARN_PERCENT}%): "
        "pin clocks (sudo jetson_clocks, or nvidia-smi --lock-gpu-clocks) and close other GPU work"
        if cv > CV_WARN_PERCENT
        else None
    )
    settings = {
        "warmup_ms": warmup_ms,
        "duration_s": duration_s,
        "min_iterations": iterations,
        "cuda_graph": graph is not None,
        "data_transfers": not no_data_transfers,
        "spin_wait": False,
        "streams": 1,
        "inflight": 1,
        "shapes": used_shapes,
        "per_layer": per_layer,
        "tensorrt": tensorrt_version(),
        "timer": "CUDA events",
    }
    return EngineProfile(
        engine=str(engine),
        sections=sections,
        throughput_qps=count / wall if wall > 0 else 0.0,
        total_wall_s=wall,
        iterations=count,
        cv_warning=cv_warning,
        settings=settings,
        clocks=read_clock_settings(),
        per_layer=layers,
        notes=notes,
        quantiles_ms=quantiles,
    )
