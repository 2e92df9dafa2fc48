"""The names build and calibrate give their outputs: ``STEM.PRECISION.onnx`` and ``STEM.calib.*``,
STEM the model's file name without .onnx and the precision marker before it, whatever their case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.onnxio import model_stem
from tests.conftest import run_in_process as cli


def _gemm_model(fp16: bool = False) -> onnx.ModelProto:
    """x [N,4] -> y [N,8], one Gemm (its weights float16 for ``fp16``, with casts around it)."""
    rng = np.random.default_rng(0)
    kind = np.float16 if fp16 else np.float32
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 4)).astype(kind), "W"),
        numpy_helper.from_array(rng.standard_normal(8).astype(kind), "B"),
    ]
    if fp16:
        nodes = [
            helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16, name="in"),
            helper.make_node("Gemm", ["x16", "W", "B"], ["y16"], transB=1, name="gemm"),
            helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT, name="out"),
        ]
    else:
        nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1, name="gemm")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("m.onnx", "m"),
        ("m.fp32.onnx", "m"),
        ("m.fp16.onnx", "m"),
        ("m.int8.onnx", "m"),
        ("M.FP16.ONNX", "M"),
        ("M.Fp32.onnx", "M"),
        ("m.INT8.onnx", "m"),
        ("m.int8.fp16.onnx", "m"),
        ("m.ort.onnx", "m.ort"),
        ("det-v2.onnx", "det-v2"),
        ("fp16.onnx", "fp16"),
        ("m.fp16x.onnx", "m.fp16x"),
    ],
)
def test_the_stem_of_a_model_name_drops_its_precision_marker_whatever_its_case(name: str, stem: str) -> None:
    assert model_stem(name) == stem


def test_a_build_of_an_upper_case_precision_name_names_its_artifact_once(tmp_path: Path) -> None:
    """``build M.FP16.ONNX --precision fp16`` wrote M.FP16.fp16.onnx, where m.fp16.onnx gave
    m.fp16.onnx: the marker was matched as written. It now gives M.fp16.onnx."""
    onnx.save(_gemm_model(fp16=True), tmp_path / "M.FP16.ONNX")
    code, _, err = cli("build", tmp_path / "M.FP16.ONNX", "--precision", "fp16", "-o", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.onnx")) == ["M.fp16.onnx", "M.fp16.ort.onnx"]


@pytest.mark.parametrize(
    ("name", "stem"),
    [("m.onnx", "m"), ("m.fp32.onnx", "m"), ("M.FP32.ONNX", "M"), ("m.int8.onnx", "m"), ("M.INT8.onnx", "M")],
)
def test_build_and_calibrate_name_the_int8_model_of_one_input_alike(
    tmp_path: Path, name: str, stem: str
) -> None:
    """``calibrate m.int8.onnx`` (an fp32 model so named) wrote m.int8.int8.onnx and
    m.int8.calib.json, where ``build --precision int8`` wrote m.int8.onnx and m.calib.json: calibrate
    took ``model.stem`` without ``.fp32`` only. Both now name STEM as build's output_names does."""
    onnx.save(_gemm_model(), tmp_path / name)
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32))
    data = tmp_path / "data.npz"
    built = cli("build", tmp_path / name, "--precision", "int8", "--calib-data", data, "-o", tmp_path / "b")
    assert built[0] == 0, built[2]
    calibrated = cli("calibrate", tmp_path / name, "--data", data, "-o", tmp_path / "c")
    assert calibrated[0] == 0, calibrated[2]
    ours = {f"{stem}.int8.onnx", f"{stem}.calib.json"}
    assert ours <= {p.name for p in (tmp_path / "b").iterdir()}
    written = {p.name for p in (tmp_path / "c").iterdir()}
    assert ours <= written and all(n.startswith((f"{stem}.int8.", f"{stem}.calib.")) for n in written), (
        written
    )


def test_calibrate_refuses_a_folder_where_builds_int8_model_goes(tmp_path: Path) -> None:
    """The folder check of calibrate's outputs looks at the names it writes: a folder
    ``m.int8.onnx/`` in -o is refused for ``m.INT8.onnx`` (an fp32 model so named), not passed over
    to fail when the model is written."""
    onnx.save(_gemm_model(), tmp_path / "m.INT8.onnx")
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 4), np.float32))
    (tmp_path / "c" / "m.int8.onnx").mkdir(parents=True)
    code, _, err = cli(
        "calibrate", tmp_path / "m.INT8.onnx", "--data", tmp_path / "data.npz", "-o", tmp_path / "c"
    )
    assert code == 2, err
    assert "Traceback" not in err and "m.int8.onnx" in err, err


def test_run_matrix_and_bundle_name_an_upper_case_source_as_build_does(tmp_path: Path) -> None:
    """run, matrix and bundle took ``.fp32`` (or an artifact's own precision) off a name only as
    written: run's files of ``[model] source = "M.FP32.onnx"`` were M.FP32.fp32.onnx..., matrix named
    that model M.FP32, bundle create's manifest named its reference M.FP32 and missed the precision
    plan beside an artifact M.FP16.onnx. Each now names STEM by onnxio.model_stem, as build does."""
    import json

    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.matrix_config import _model_name
    from edgedeploy.pipeline.pack import _companions
    from edgedeploy.pipeline.run import run_name

    for source in ("M.FP32.onnx", "M.FP32.ONNX", "nets/M.Fp32.py:make"):
        assert run_name(from_dict({"model": {"source": source}}, tmp_path)) == "M", source
        assert _model_name({"source": source}) == "M", source
    assert _model_name({"source": "m.fp32.onnx"}) == "m"
    assert _companions(tmp_path / "M.FP16.onnx", "fp16")["plan"] == tmp_path / "M.fp16.plan.json"
    assert _companions(tmp_path / "M.INT8.ONNX", "int8")["report"] == tmp_path / "M.calib.json"

    onnx.save(_gemm_model(), tmp_path / "M.FP32.onnx")
    code, _, err = cli("build", tmp_path / "M.FP32.onnx", "--precision", "fp16", "-o", tmp_path / "out")
    assert code == 0, err
    code, _, err = cli(
        "bundle", "create", tmp_path / "M.FP32.onnx", tmp_path / "out" / "M.fp16.onnx", "-o", tmp_path / "b"
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "M", manifest["model"]
