"""Defects that only the per-release fakes show: each test fails on the release where it bites.

The behaviour behind each (what TensorRT does) is written in tests/fakes/fake_tensorrt.py with its
source; docs/tensorrt-facts.md lists the facts.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.options import ShapeProfile
from edgedeploy.targets import load_target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
BATCH = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})


def options(precision: str = "fp32", **kw: Any) -> BuildOptions:
    kw.setdefault("profiles", [BATCH])
    return BuildOptions(precision=precision, target=load_target("rtx4090"), **kw)


@pytest.mark.trt_versions(min="8.6")
def test_version_compatible_build_gets_its_layer_report(fake_gpu, cnn_models, tmp_path: Path) -> None:
    """Deserializing a version-compatible plan needs engine_host_code_allowed, or the report is empty."""
    result = TensorRTBackend().build(cnn_models.fp32, options(version_compatible=True), tmp_path)
    layers = json.loads((tmp_path / "cnn.fp32.layers.json").read_text())
    assert [layer["Name"] for layer in layers["Layers"]] == ["conv1", "relu1", "flatten", "fc"]
    assert result.info["layer_summary"]["layers"] == 4 and result.info["version_compatible"] is True
    names = fake_gpu.state.names()
    assert names.index("Runtime.engine_host_code_allowed") < names.index("Runtime.deserialize_cuda_engine")


def test_layer_report_is_read_after_the_builder_and_parser_are_freed(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    alive = next(args[1] for name, args in fake_gpu.state.calls if name == "Runtime.deserialize_cuda_engine")
    assert alive.get("builder", 0) == 0 and alive.get("parser", 0) == 0


def instancenorm_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 8, 8])
    inits = [
        numpy_helper.from_array(np.ones(1, np.float32), "s"),
        numpy_helper.from_array(np.zeros(1, np.float32), "b"),
    ]
    node = helper.make_node("InstanceNormalization", ["input", "s", "b"], ["y"], name="norm")
    model = helper.make_model(
        helper.make_graph([node], "norm", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.trt_versions(min="8.6")
@pytest.mark.parametrize("compat", [{"version_compatible": True}, {"hardware_compatibility": "ampere_plus"}])
def test_compatible_builds_use_the_native_instancenorm(
    fake_gpu, tmp_path: Path, compat: dict[str, Any]
) -> None:
    """8.6's parser makes InstanceNormalization a plugin unless NATIVE_INSTANCENORM is set (on from 10)."""
    model = instancenorm_model(tmp_path / "norm.onnx")
    TensorRTBackend().build(model, options(**compat), tmp_path / "out")
    assert fake_gpu.state.builds == 1 and (tmp_path / "out" / "norm.engine").is_file()
    if fake_gpu.state.major < 10:
        assert ("OnnxParser.set_flag", ("NATIVE_INSTANCENORM",)) in fake_gpu.state.calls


def test_tf32_stays_at_tensorrts_default_unless_asked_and_is_recorded(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    backend = TensorRTBackend()
    result = backend.build(cnn_models.fp32, options(), tmp_path / "a")
    assert "TF32" in fake_gpu.config()._flags and result.info["tf32"] is True
    assert json.loads((tmp_path / "a" / "cnn.fp32.engine.json").read_text())["tf32"] is True
    result = backend.build(cnn_models.fp32, options(tf32=False), tmp_path / "b")
    assert "TF32" not in fake_gpu.config()._flags and result.info["tf32"] is False


def mixed_model(path: Path) -> Path:
    """mm and mm_1 (MatMul), TopK (float values + integer indices), Shape and Range (integer outputs)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    outs = [
        helper.make_tensor_value_info("values", TensorProto.FLOAT, [2, 2]),
        helper.make_tensor_value_info("indices", TensorProto.INT64, [2, 2]),
        helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        helper.make_tensor_value_info("range", TensorProto.INT64, [5]),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array([2], np.int64), "k"),
        numpy_helper.from_array(np.array(0, np.int64), "start"),
        numpy_helper.from_array(np.array(5, np.int64), "limit"),
        numpy_helper.from_array(np.array(1, np.int64), "delta"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("MatMul", ["h", "w1"], ["h1"], name="mm_1"),
        helper.make_node("TopK", ["h1", "k"], ["values", "indices"], name="topk"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Range", ["start", "limit", "delta"], ["range"], name="range"),
    ]
    graph = helper.make_graph(nodes, "mixed", [x], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.mark.trt_versions(max="10.0")
def test_fp32_pinning_matches_names_exactly_and_skips_integer_and_shape_outputs(
    fake_gpu, tmp_path: Path
) -> None:
    model = mixed_model(tmp_path / "mixed.onnx")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"fp32_nodes": ["mm", "topk", "shape", "range"]}))
    result = TensorRTBackend().build(
        model, options("fp16", precision_plan=plan, profiles=[]), tmp_path / "out"
    )
    typed = [(args[0], args[1]) for name, args in fake_gpu.state.calls if name == "ILayer.set_output_type"]
    assert typed == [("mm", 0), ("topk", 0)]  # not mm_1 (a prefix match), not indices/shape/range
    assert result.info["fp32_layers_pinned"] == ["mm", "topk"]
    assert not [m for severity, m in fake_gpu.state.logged if severity <= 1]  # no TensorRT error


@pytest.mark.trt_versions(max="10.0")
def test_integer_outputs_come_back_in_the_engines_dtype(fake_gpu, tmp_path: Path) -> None:
    model = mixed_model(tmp_path / "mixed.onnx")
    engine = TensorRTBackend().build(model, options(profiles=[]), tmp_path / "out").artifact
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with TensorRTBackend().runner(engine) as runner:
        out = runner.infer({"x": x})
    assert out["indices"].dtype == np.int32  # TensorRT 8.x has no INT64: onnx-tensorrt casts to INT32
    assert out["shape"].tolist() == [2, 4] and out["range"].tolist() == [0, 1, 2, 3, 4]


def test_profiling_frees_cuda_events_and_buffers_before_the_context_is_released(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    from edgedeploy.backends.runtime.timing import profile_engine

    engine = TensorRTBackend().build(cnn_models.fp32, options(), tmp_path).artifact
    profile_engine(engine, warmup_ms=0, duration_s=0, iterations=3, per_layer=True)
    gc.collect()
    assert fake_gpu.gpu.dead_context_cleanups == []


def test_polygraphy_floor_is_the_first_release_that_runs_on_tensorrt_11() -> None:
    """Polygraphy 0.49.20 reads config.int8_calibrator unguarded (AttributeError on 11); 0.49.22 guards it
    (docs/tensorrt-facts.md, "Polygraphy", with its source)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "polygraphy>=0.49.22" in project["dependencies"]
