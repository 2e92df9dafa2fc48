"""The pycuda engine runner against the fake GPU: TensorRT 10 call sequence, results, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.errors import InputError
from edgedeploy.options import ShapeProfile
from edgedeploy.targets import load_target

PROFILE = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})


def build(model: Path, out: Path, precision: str = "fp32") -> Path:
    opts = BuildOptions(precision=precision, target=load_target("rtx4090"), profiles=[PROFILE])
    return TensorRTBackend().build(model, opts, out).artifact


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def assert_batches_match(runner, model: Path, batches: tuple[int, ...], fill: float) -> None:
    """The runner gives ONNX Runtime's logits for each batch size in turn."""
    for batch in batches:
        x = np.full((batch, 1, 8, 8), fill, np.float32)
        np.testing.assert_allclose(runner.infer({"input": x})["logits"], reference(model, x), rtol=1e-6)


def test_runner_infers_like_onnxruntime_through_the_tensorrt_10_call_sequence(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    engine = build(cnn_models.fp32, tmp_path)
    fake_gpu.state.calls.clear()  # the build ran the engine once: the calls counted are the runner's
    fake_gpu.gpu.calls.clear()
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with TensorRTBackend().runner(engine) as runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        assert tuple(meta["input"].shape) == (-1, 1, 8, 8)
        out = runner.infer({"input": x})
    np.testing.assert_allclose(out["logits"], reference(cnn_models.fp32, x), rtol=1e-6)
    calls = fake_gpu.state.calls
    names = [n for n, _ in calls]
    assert ("IExecutionContext.set_input_shape", ("input", (3, 1, 8, 8))) in calls
    bound = {args[0] for n, args in calls if n == "IExecutionContext.set_tensor_address"}
    assert bound == {"input", "logits"}
    stream = next(args[0] for n, args in calls if n == "IExecutionContext.execute_async_v3")
    assert stream != 0  # a non-default stream
    assert names.index("IExecutionContext.set_input_shape") < names.index(
        "IExecutionContext.execute_async_v3"
    )
    gpu = fake_gpu.gpu.names()
    assert "pagelocked_empty" in gpu and "Device.retain_primary_context" in gpu
    assert gpu.count("Context.push") == gpu.count("Context.pop") == 1  # deactivation released the context
    assert not fake_gpu.gpu.memory  # every device buffer freed


def test_runner_reallocates_when_a_larger_batch_arrives(fake_gpu, cnn_models, tmp_path: Path) -> None:
    engine = build(cnn_models.fp32, tmp_path)
    with TensorRTBackend().runner(engine) as runner:
        assert_batches_match(runner, cnn_models.fp32, (1, 8, 2), 0.5)
        with pytest.raises(InputError, match=r"outside the engine's profile .* wider --profile"):
            runner.infer({"input": np.zeros((9, 1, 8, 8), np.float32)}, check_inputs=False)


def test_polygraphy_comparator_accepts_the_engine_runner(fake_gpu, cnn_models, tmp_path: Path) -> None:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    engine = build(cnn_models.fp16, tmp_path, "fp16")
    feeds = [
        {"input": np.random.default_rng(i).standard_normal((2, 1, 8, 8)).astype(np.float32)} for i in range(3)
    ]
    runners = [OnnxrtRunner(SessionFromOnnx(str(cnn_models.fp32))), TensorRTBackend().runner(engine)]
    results = Comparator.run(runners, data_loader=feeds)
    assert bool(Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=0.05, rtol=0.05)))


def test_runner_refuses_an_engine_from_another_tensorrt_version_and_says_how_to_rebuild(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    engine = build(cnn_models.fp32, tmp_path)
    built_with = fake_gpu.state.version
    other = "10.9.0" if built_with != "10.9.0" else "10.7.0"
    fake_gpu.install(other)
    with pytest.raises(InputError) as err:
        TensorRTBackend().runner(engine)
    message = str(err.value)
    assert f"TensorRT {built_with} (here {other})" in message
    assert f"edgedeploy build {cnn_models.fp32} --backend tensorrt --target rtx4090" in message


def test_runner_refuses_an_engine_built_for_another_gpu(fake_gpu, cnn_models, tmp_path: Path) -> None:
    engine = build(cnn_models.fp32, tmp_path)
    fake_gpu.gpu.compute_capability = (8, 7)
    fake_gpu.gpu.name = "Orin"
    with pytest.raises(InputError, match=r"compute capability 8\.9 \(here 8\.7\)"):
        TensorRTBackend().runner(engine)


def test_same_compute_capability_on_another_gpu_model_loads_with_a_warning(
    fake_gpu, cnn_models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = build(cnn_models.fp32, tmp_path)
    fake_gpu.gpu.name = "NVIDIA L4"  # also compute capability 8.9
    x = np.ones((2, 1, 8, 8), np.float32)
    with TensorRTBackend().runner(engine) as runner:
        np.testing.assert_allclose(
            runner.infer({"input": x})["logits"], reference(cnn_models.fp32, x), rtol=1e-6
        )
    assert any("running on NVIDIA L4 (same compute capability 8.9)" in r.message for r in caplog.records)
    assert any("across different models of devices" in m for _, m in fake_gpu.state.logged)


@pytest.mark.parametrize(
    ("built", "here", "loads"),
    [
        ("8.6.1", "10.3.0", True),  # "engines built with TensorRT 8 work with TensorRT 9 and 10 runtimes"
        ("10.3.0", "11.1.0", True),  # "engines built with TensorRT 10 work with TensorRT 11"
        ("10.3.0", "10.13.0", True),
        ("10.13.0", "10.3.0", False),  # never on an older runtime
        ("11.1.0", "10.13.0", False),
        ("8.5.3", "8.6.1", False),  # version compatibility starts at 8.6
    ],
)
def test_version_compatible_plans_follow_nvidias_rules(built: str, here: str, loads: bool) -> None:
    from edgedeploy.backends.trt_sidecar import differences

    record = {"tensorrt": built, "compute_capability": "8.9", "plan": {"version_compatible": True}}
    facts = {"tensorrt": here, "compute_capability": "8.9", "gpu_name": "NVIDIA Fake GPU"}
    assert (differences(record, facts) == []) is loads
    record["plan"]["version_compatible"] = False
    assert differences(record, facts) == [f"TensorRT {built} (here {here})"]


def test_hardware_compatible_plans_follow_nvidias_rules() -> None:
    from edgedeploy.backends.trt_sidecar import differences

    record = {
        "tensorrt": "10.13.0",
        "compute_capability": "8.9",
        "plan": {"hardware_compatibility": "AMPERE_PLUS"},
    }
    here = {"tensorrt": "10.13.0", "compute_capability": "8.6", "gpu_name": "A10"}
    assert differences(record, here) == []
    assert differences(record, {**here, "compute_capability": "7.5"}) == ["compute capability 8.9 (here 7.5)"]
    record["plan"]["hardware_compatibility"] = "SAME_COMPUTE_CAPABILITY"
    assert differences(record, here) == ["compute capability 8.9 (here 8.6)"]


@pytest.mark.trt_versions("8.6.1", "10.3.0")
def test_version_compatible_engine_runs_on_the_next_major_release(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    opts = BuildOptions(
        precision="fp32", target=load_target("rtx4090"), profiles=[PROFILE], version_compatible=True
    )
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    fake_gpu.install({"8.6.1": "10.3.0", "10.3.0": "11.1.0"}[fake_gpu.state.version])
    x = np.ones((2, 1, 8, 8), np.float32)
    with TensorRTBackend().runner(engine) as runner:  # engine_host_code_allowed set, as trtexec does
        np.testing.assert_allclose(
            runner.infer({"input": x})["logits"], reference(cnn_models.fp32, x), rtol=1e-6
        )
    assert ("Runtime.engine_host_code_allowed", (True,)) in fake_gpu.state.calls


def test_runner_refuses_non_engine_files_and_corrupt_sidecars(fake_gpu, cnn_models, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a TensorRT engine"):
        TensorRTBackend().runner(cnn_models.fp32)
    engine = build(cnn_models.fp32, tmp_path)
    sidecar = tmp_path / "cnn.fp32.engine.json"
    sidecar.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not an edgedeploy engine sidecar"):
        TensorRTBackend().runner(engine)


def test_describe_reports_versions_and_gpu(fake_gpu) -> None:
    described = TensorRTBackend().describe()
    assert described["tensorrt"] == fake_gpu.state.version and described["pycuda"] == "2024.1.2"
    assert described["gpu_name"] == "NVIDIA Fake GPU" and described["compute_capability"] == "8.9"
    assert described["jetson_model"] == "unknown"


TWO_PROFILES = [
    ShapeProfile({"input": ((1, 1, 8, 8), (2, 1, 8, 8), (2, 1, 8, 8))}),
    ShapeProfile({"input": ((4, 1, 8, 8), (8, 1, 8, 8), (8, 1, 8, 8))}),
]


def test_runner_switches_to_the_profile_that_covers_each_batch(fake_gpu, cnn_models, tmp_path: Path) -> None:
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=TWO_PROFILES)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    with TensorRTBackend().runner(engine) as runner:
        assert_batches_match(runner, cnn_models.fp32, (2, 6, 1), 0.25)
        with pytest.raises(InputError, match=r"outside the engine's profile \(profile 0: .*; profile 1: "):
            runner.infer({"input": np.zeros((3, 1, 8, 8), np.float32)}, check_inputs=False)
    calls = fake_gpu.state.calls
    switches = [args[0] for n, args in calls if n == "IExecutionContext.set_optimization_profile_async"]
    assert switches == [1, 0]  # batch 2 runs in the first profile, 6 needs profile 1, then 1 goes back
    names = [n for n, _ in calls]
    first_switch = names.index("IExecutionContext.set_optimization_profile_async")
    assert calls[first_switch + 1] == ("IExecutionContext.set_input_shape", ("input", (6, 1, 8, 8)))


def test_a_pinned_profile_refuses_shapes_only_another_profile_takes(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    from edgedeploy.backends.runtime.engine import EngineSession

    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=TWO_PROFILES)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    with EngineSession(engine, profile=1) as session:
        assert session.default_shapes() == {"input": (8, 1, 8, 8)}
        assert session.infer({"input": np.ones((4, 1, 8, 8), np.float32)})["logits"].shape[0] == 4
        with pytest.raises(InputError, match=r"shape \[2, 1, 8, 8\] is outside"):
            session.infer({"input": np.ones((2, 1, 8, 8), np.float32)})
    with pytest.raises(InputError, match=r"has 2 optimization profile.*no profile 2"):
        EngineSession(engine, profile=2).open()


def test_profile_of_an_engine_refuses_an_input_shape_for_an_input_it_lacks(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """--input naming no input of the engine is refused, as for ONNX models, not dropped."""
    from calibration.errors import DataError
    from edgedeploy.stages.profile import ProfileOptions, profile_engine_batches

    engine = build(cnn_models.fp32, tmp_path)
    with pytest.raises(DataError, match="no input 'image'"):
        profile_engine_batches(engine, ProfileOptions(iterations=1, shapes={"image": (1, 1, 8, 8)}))
    with pytest.raises(DataError, match="has 4 dims, not 2"):
        profile_engine_batches(engine, ProfileOptions(iterations=1, shapes={"input": (1, 64)}))
