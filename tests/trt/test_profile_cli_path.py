"""The profile stage on an engine (fake GPU): per batch size, trtexec's sections, static batch refused."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

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


def _save(path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Path:
    model = helper.make_model(
        helper.make_graph(nodes, path.stem, inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def _state_model(folder: Path) -> Path:
    """silero-vad's layout: x[batch, 16] beside state[2, batch, 8], the batch on axis 1 there."""
    rng = np.random.default_rng(0)
    value = helper.make_tensor_value_info
    return _save(
        folder / "state.onnx",
        [
            helper.make_node("Transpose", ["state"], ["st"], perm=[1, 0, 2]),
            helper.make_node("Reshape", ["st", "shp"], ["sr"]),
            helper.make_node("Add", ["x", "sr"], ["s"]),
            helper.make_node("MatMul", ["s", "w"], ["y"]),
        ],
        [value("x", TensorProto.FLOAT, ["batch", 16]), value("state", TensorProto.FLOAT, [2, "batch", 8])],
        [value("y", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array([-1, 16], np.int64), "shp"),
        ],
    )


def _set_shapes(fake_gpu: Any) -> list[tuple[str, tuple[int, ...]]]:
    """The shapes the engine's inputs were set to, in order."""
    return [args for name, args in fake_gpu.state.calls if name == "IExecutionContext.set_input_shape"]


STATE_PROFILE = ShapeProfile({"x": ((1, 16), (4, 16), (8, 16))})  # state[2, batch, 8] follows x


@pytest.mark.trt_versions("10.13.0")
def test_engine_profile_sets_the_batch_on_every_axis_the_model_names_as_the_batch(
    fake_gpu: Any, tmp_path: Path
) -> None:
    """The engine keeps no dim names (state reads [2, -1, 8]): bare ``profile ENGINE`` refused with
    "input 'state' has a static batch of 2; cannot profile batch 1", and ``--batch-sizes 2`` set x
    (2, 16) beside state (2, 4, 8), the opt batch. The names come from the model it was built from."""
    engine = _engine(_state_model(tmp_path), tmp_path / "out", [STATE_PROFILE])
    result = profile(engine, ProfileOptions(warmup_ms=0.0, iterations=2, measure_power=False))
    assert [b.batch_size for b in result.batches] == [1]
    assert {("x", (1, 16)), ("state", (2, 1, 8))} <= set(_set_shapes(fake_gpu))
    fake_gpu.state.calls.clear()
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(2, 8), measure_power=False)
    result = profile(engine, options)
    assert [b.batch_size for b in result.batches] == [2, 8]
    shapes = set(_set_shapes(fake_gpu))
    assert {("x", (2, 16)), ("state", (2, 2, 8)), ("x", (8, 16)), ("state", (2, 8, 8))} <= shapes
    assert ("state", (2, 4, 8)) not in shapes


@pytest.mark.trt_versions("10.13.0")
def test_engine_profile_finds_the_dim_names_where_the_engine_travels_without_its_model(
    fake_gpu: Any, tmp_path: Path
) -> None:
    """Copied apart from the ONNX beside it: the model the sidecar records; in a bundle whose
    sidecar records a path of the build machine, the manifest's inputs."""
    engine = _engine(_state_model(tmp_path), tmp_path / "out", [STATE_PROFILE])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in (engine, engine.with_name(engine.name + ".json")):
        shutil.copy(path, elsewhere / path.name)
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(2,), measure_power=False)
    profile(elsewhere / engine.name, options)
    assert ("state", (2, 2, 8)) in _set_shapes(fake_gpu)

    bundle = tmp_path / "bundle"
    (bundle / "engines").mkdir(parents=True)
    shutil.copy(engine, bundle / "engines" / engine.name)
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    sidecar["inputs"]["model"]["path"] = "out/state.fp32.onnx"  # as a build from another folder wrote it
    (bundle / "engines" / f"{engine.name}.json").write_text(json.dumps(sidecar))
    inputs = [
        {"name": "x", "shape": ["batch", 16], "dtype": "float32", "rank_known": True, "kind": None},
        {"name": "state", "shape": [2, "batch", 8], "dtype": "float32", "rank_known": True, "kind": None},
    ]
    (bundle / "manifest.json").write_text(json.dumps({"schema_version": 1, "io": {"inputs": inputs}}))
    fake_gpu.state.calls.clear()
    profile(bundle / "engines" / engine.name, options)
    assert ("state", (2, 2, 8)) in _set_shapes(fake_gpu)


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


def _shared_model(folder: Path) -> Path:
    """a[N, T, 8] + b[N, T, 8]: T one length on both, as the name says."""
    value = helper.make_tensor_value_info
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    return _save(
        folder / "shared.onnx",
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])],
        [value("a", TensorProto.FLOAT, ["N", "T", 8]), value("b", TensorProto.FLOAT, ["N", "T", 8])],
        [value("y", TensorProto.FLOAT, ["N", "T", 4])],
        [w],
    )


@pytest.mark.trt_versions("10.13.0")
def test_engine_profile_gives_a_dim_named_on_several_inputs_the_length_input_gives_it(
    fake_gpu: Any, tmp_path: Path
) -> None:
    """``profile ENGINE --input a:2x5x8`` fed b at the opt shape (2, 16, 8), and the engine failed on
    the broadcast; the ONNX path gives b T = 5 as the model's names say."""
    profiles = [ShapeProfile({"a": ((1, 1, 8), (4, 16, 8), (8, 32, 8))})]  # b follows a
    engine = _engine(_shared_model(tmp_path), tmp_path / "out", profiles)
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_from_shapes=True, measure_power=False)
    result = profile(engine, replace(options, shapes={"a": (2, 5, 8)}))
    assert [b.batch_size for b in result.batches] == [2]
    assert ("b", (2, 5, 8)) in _set_shapes(fake_gpu)
    fake_gpu.state.calls.clear()
    profile(engine, replace(options, shapes={"b": (2, 7, 8)}, batch_sizes=(3,), batch_from_shapes=False))
    assert {("a", (3, 7, 8)), ("b", (3, 7, 8))} <= set(_set_shapes(fake_gpu))


@pytest.mark.trt_versions("10.13.0")
def test_engine_profile_records_the_input_shapes_of_every_batch_as_onnx_runtime_does(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """Profiled at batches 1 and 4, an engine's JSON kept one ``settings.shapes``, the last batch's;
    the ONNX Runtime JSON has ``settings.input_shapes`` per batch, and so has the engine's now."""
    engine = _engine(cnn_models.fp32, tmp_path, [PROFILE])
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(1, 4), measure_power=False)
    settings = profile(engine, options).settings
    assert settings["input_shapes"] == {"1": {"input": [1, 1, 8, 8]}, "4": {"input": [4, 1, 8, 8]}}
    assert "shapes" not in settings


@pytest.mark.trt_versions("10.13.0")
def test_engine_profile_defaults_to_the_opt_batch_where_batch_1_is_outside_the_profile(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """An engine whose profile starts at batch 2: a bare ``profile ENGINE`` failed ("outside the
    engine's profile; rebuild with a wider --profile"), where the bundle's benchmark.sh takes the
    profile's opt batch. So does profile now, and says so; a batch asked for is not replaced."""
    profiles = [ShapeProfile({"input": ((2, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})]
    engine = _engine(cnn_models.fp32, tmp_path, profiles)
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_from_shapes=True, measure_power=False)
    result = profile(engine, options)
    assert [b.batch_size for b in result.batches] == [4]
    assert any(
        "batch 1 is outside the engine's profile (batch 2..8): profiled its opt batch 4" in w
        for w in result.warnings
    ), result.warnings
    with pytest.raises(InputError, match="batch 1 is below the engine's profile minimum 2"):
        profile(engine, replace(options, batch_sizes=(1,), batch_from_shapes=False))
