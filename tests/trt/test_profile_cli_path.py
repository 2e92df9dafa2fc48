"""The profile stage on an engine (fake GPU): per batch size, trtexec's sections, static batch refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.errors import InputError
from edgedeploy.options import ShapeProfile
from edgedeploy.stages.profile import ProfileOptions, profile
from edgedeploy.targets import load_target

PROFILE = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})


def _engine(model: Path, out: Path, profiles: list[ShapeProfile]) -> Path:
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    return TensorRTBackend().build(model, opts, out).artifact


def test_engine_profile_runs_each_batch_size_with_trtexec_sections(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    engine = _engine(cnn_models.fp32, tmp_path, [PROFILE])
    options = ProfileOptions(warmup_ms=0.0, iterations=12, batch_sizes=(1, 8), measure_power=False)
    result = profile(engine, options)
    assert result.backend == "tensorrt"
    assert [b.batch_size for b in result.batches] == [1, 8]
    for b in result.batches:
        assert b.sections is not None and set(b.sections) == {
            "latency",
            "enqueue",
            "h2d",
            "gpu_compute",
            "d2h",
        }
        assert b.latency == b.sections["latency"]
        assert b.throughput_ips == pytest.approx(b.throughput_qps * b.batch_size)
    assert result.settings["timer"] == "CUDA events"


def test_engine_profile_refuses_a_batch_above_the_profile_max(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    engine = _engine(cnn_models.fp32, tmp_path, [PROFILE])
    with pytest.raises(InputError, match="exceeds the engine's profile maximum 8"):
        profile(engine, ProfileOptions(iterations=2, batch_sizes=(16,), measure_power=False))


def test_engine_without_transfers_reports_gpu_compute(fake_gpu: Any, cnn_models: Any, tmp_path: Path) -> None:
    engine = _engine(cnn_models.fp32, tmp_path, [PROFILE])
    result = profile(
        engine, ProfileOptions(warmup_ms=0.0, iterations=5, no_data_transfers=True, measure_power=False)
    )
    batch = result.batches[0]
    assert batch.sections is not None and batch.latency == batch.sections["gpu_compute"]


@pytest.mark.usefixtures("ten_watts")
def test_engine_energy_counts_the_timed_inferences_only_not_the_warm_up(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """A constant 10 W: the energy window is the timed loop (as on the ONNX Runtime path), not the
    engine's loading, its warm-up and its per-layer pass around it."""
    engine = _engine(cnn_models.fp32, tmp_path, [PROFILE])
    options = ProfileOptions(warmup_ms=500.0, duration_s=0.2, batch_sizes=(2,), per_layer=True)
    batch = profile(engine, options).batches[0]
    energy = batch.energy
    assert energy is not None and energy["measurable"] and energy["inferences"] == 2 * batch.iterations
    assert 0.2 <= batch.wall_s < 0.35
    assert energy["duration_s"] == pytest.approx(batch.wall_s, abs=0.02)
    expected_mj = 10.0 * 1000.0 * batch.wall_s / (2 * batch.iterations)
    assert energy["energy_per_inference_mj"] == pytest.approx(expected_mj, rel=0.1)
