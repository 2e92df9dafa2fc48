"""profile_engine against the fake GPU's simulated clock: trtexec's sections, CV warning, options."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.runtime import profile_engine
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.options import ShapeProfile
from edgedeploy.results import to_jsonable
from edgedeploy.targets import load_target

PROFILE = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})
FAST = {"warmup_ms": 0.0, "duration_s": 0.0, "iterations": 12}


def engine(fake_gpu: Any, model: Path, out: Path) -> Path:
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=[PROFILE])
    built = TensorRTBackend().build(model, opts, out).artifact
    fake_gpu.gpu.calls.clear()  # the build ran the engine once: the calls counted are the profile's
    return built


def run(path: Path, **kw: Any) -> Any:
    args = {**FAST, "shapes": None, "cuda_graph": False, "no_data_transfers": False, "per_layer": False, **kw}
    return profile_engine(path, **args)


def test_profile_reports_trtexec_sections_from_cuda_events(fake_gpu, cnn_models, tmp_path: Path) -> None:
    fake_gpu.gpu.ms_per_byte = 1e-4
    result = run(engine(fake_gpu, cnn_models.fp32, tmp_path), shapes={"input": (2, 1, 8, 8)})
    assert set(result.sections) == {"latency", "enqueue", "h2d", "gpu_compute", "d2h"}
    s = result.sections
    assert s["gpu_compute"].mean_ms == pytest.approx(1.0)
    assert s["h2d"].mean_ms == pytest.approx(2 * 64 * 4 * 1e-4)  # one float32 batch of 2x1x8x8
    assert s["d2h"].mean_ms == pytest.approx(2 * 10 * 4 * 1e-4)
    assert s["latency"].mean_ms == pytest.approx(s["h2d"].mean_ms + 1.0 + s["d2h"].mean_ms)
    for stats in s.values():
        assert stats.count == 12
        assert {"p90_ms", "p95_ms", "p99_ms", "median_ms", "min_ms", "max_ms"} <= set(vars(stats))
    assert result.iterations == 12 and result.throughput_qps > 0 and result.total_wall_s > 0
    assert result.cv_warning is None
    assert result.settings["shapes"] == {"input": [2, 1, 8, 8]}
    assert result.settings["cuda_graph"] is False and result.settings["data_transfers"] is True
    assert to_jsonable(result)["sections"]["gpu_compute"]["mean_ms"] == pytest.approx(1.0)


def test_dynamic_inputs_default_to_the_profile_opt_shape(fake_gpu, cnn_models, tmp_path: Path) -> None:
    result = run(engine(fake_gpu, cnn_models.fp32, tmp_path))
    assert result.settings["shapes"] == {"input": [4, 1, 8, 8]}


def test_unsteady_gpu_compute_time_warns_above_2_5_percent_cv(fake_gpu, cnn_models, tmp_path: Path) -> None:
    fake_gpu.gpu.compute_jitter_ms = 0.05  # 1.05 / 0.95 ms: 5% coefficient of variation
    result = run(engine(fake_gpu, cnn_models.fp32, tmp_path))
    assert result.sections["gpu_compute"].cv_percent == pytest.approx(5.0, rel=0.01)
    assert (
        result.cv_warning is not None and "5.0%" in result.cv_warning and "jetson_clocks" in result.cv_warning
    )


def test_no_data_transfers_times_compute_only(fake_gpu, cnn_models, tmp_path: Path) -> None:
    result = run(engine(fake_gpu, cnn_models.fp32, tmp_path), no_data_transfers=True)
    assert result.sections["h2d"].max_ms == 0.0 and result.sections["d2h"].max_ms == 0.0
    assert result.sections["latency"].mean_ms == pytest.approx(1.0)
    assert result.settings["data_transfers"] is False
    timed_copies = [n for n in fake_gpu.gpu.names() if n.startswith("memcpy")]
    assert len(timed_copies) == 1  # only the initial upload of the inputs


class FakeCudart:
    """The five runtime calls CudaGraph makes, recorded; launches advance the fake stream clock."""

    def __init__(self, gpu: Any) -> None:
        self.gpu = gpu
        self.calls: list[str] = []

    def cudaStreamBeginCapture(self, stream: Any, mode: int) -> int:
        self.calls.append("begin")
        return 0

    def cudaStreamEndCapture(self, stream: Any, graph: Any) -> int:
        self.calls.append("end")
        graph._obj.value = 0xCAFE
        return 0

    def cudaGraphInstantiateWithFlags(self, exec_: Any, graph: Any, flags: Any) -> int:
        self.calls.append("instantiate")
        exec_._obj.value = 0xBEEF
        return 0

    def cudaGraphLaunch(self, exec_: Any, stream: ctypes.c_void_p) -> int:
        self.calls.append("launch")
        self.gpu.advance(stream.value, 0.25)
        return 0

    def cudaGraphExecDestroy(self, exec_: Any) -> int:
        self.calls.append("destroy_exec")
        return 0

    def cudaGraphDestroy(self, graph: Any) -> int:
        self.calls.append("destroy_graph")
        return 0


def test_cuda_graph_captures_one_enqueue_and_replays_it(
    fake_gpu, cnn_models, tmp_path: Path, monkeypatch
) -> None:
    from edgedeploy.backends.runtime import cuda_graph

    cudart = FakeCudart(fake_gpu.gpu)
    monkeypatch.setattr(cuda_graph, "_cudart", lambda: cudart)
    path = engine(fake_gpu, cnn_models.fp32, tmp_path)
    before = fake_gpu.state.names().count("IExecutionContext.execute_async_v3")
    result = run(path, cuda_graph=True)
    enqueues = fake_gpu.state.names().count("IExecutionContext.execute_async_v3") - before
    assert enqueues == 2  # one warm-up outside the capture, one captured
    assert cudart.calls[:3] == ["begin", "end", "instantiate"] and cudart.calls.count("launch") == 12
    assert cudart.calls[-2:] == ["destroy_exec", "destroy_graph"]
    assert result.settings["cuda_graph"] is True
    assert result.sections["gpu_compute"].mean_ms == pytest.approx(0.25)


def test_cuda_graph_failure_falls_back_and_says_so(fake_gpu, cnn_models, tmp_path: Path, monkeypatch) -> None:
    from edgedeploy.backends.runtime import cuda_graph

    cudart = FakeCudart(fake_gpu.gpu)
    monkeypatch.setattr(cudart, "cudaStreamBeginCapture", lambda stream, mode: 900)
    monkeypatch.setattr(cuda_graph, "_cudart", lambda: cudart)
    result = run(engine(fake_gpu, cnn_models.fp32, tmp_path), cuda_graph=True)
    assert result.settings["cuda_graph"] is False
    assert any("CUDA graph capture failed" in n and "900" in n for n in result.notes)


def test_per_layer_times_come_from_an_iprofiler(fake_gpu, cnn_models, tmp_path: Path) -> None:
    result = run(engine(fake_gpu, cnn_models.fp32, tmp_path), per_layer=True)
    assert result.per_layer is not None
    assert {row.name for row in result.per_layer} == {"conv1", "relu1", "flatten", "fc"}
    assert sum(row.percent for row in result.per_layer) == pytest.approx(100.0)
    assert all(row.mean_ms == pytest.approx(0.25) for row in result.per_layer)
    profiler = fake_gpu.state.contexts[-1].profiler
    assert isinstance(profiler, fake_gpu.trt.IProfiler)
