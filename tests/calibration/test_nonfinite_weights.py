"""A weight holding NaN or Inf: calibrate refuses it in one line, the fp16 build says it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.errors import CalibrationError
from calibration.modelinfo import model_io
from calibration.sources import open_source
from tests.conftest import assert_clean_input_error, run_cli


def _mlp(path: Path, bad: float) -> Path:
    """x[N,64] -> MatMul W (one value ``bad``) -> Relu -> MatMul W2 -> y[N,10]."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32) * 0.1
    w[3, 4] = bad
    w2 = rng.standard_normal((64, 10)).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"], name="mm1"),
         helper.make_node("Relu", ["t"], ["u"], name="relu"),
         helper.make_node("MatMul", ["u", "W2"], ["y"], name="mm2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w2, "W2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_calibrate_refuses_a_quantized_weight_holding_nan_or_inf(tmp_path: Path, bad: float) -> None:
    """It wrote an int8 model after 7 numpy RuntimeWarnings (qdq.py, select.py, rounding.py)."""
    model = _mlp(tmp_path / "m.onnx", bad)
    source = open_source("random", model_io(model)[0])
    for algorithm in ("auto", "max"):
        with pytest.raises(CalibrationError, match="weight 'W' of mm1 holds 1 NaN/Inf value"):
            calibrate(model, source, CalibrationOptions(algorithm=algorithm), tmp_path / algorithm)
        assert not (tmp_path / algorithm).exists() or not any((tmp_path / algorithm).iterdir())
    result = run_cli(
        "calibrate", model, "--data", "random", "--target", "jetson-orin-nx", "-o", tmp_path / "o"
    )
    assert_clean_input_error(result, "weight 'W' of mm1", "cannot represent them")


def test_nan_the_fp32_model_computes_is_no_numpy_warning_nor_all_zeros(tmp_path: Path) -> None:
    """With the NaN weight's node left in float, auto scored NaN outputs with numpy's warnings, and
    an output that was NaN everywhere was said to be 'all zeros'."""
    model = _mlp(tmp_path / "m.onnx", np.nan)
    result = run_cli("calibrate", model, "--data", "random", "--exclude-nodes", "mm1", "-o", tmp_path / "o")
    assert result.code == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr and "all zeros" not in result.stderr, result.stderr
    assert "tensor 'y' produced" in result.stderr  # its NaN count is said


def test_an_fp16_build_says_a_weight_is_not_finite(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx", np.inf)
    result = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "o")
    assert result.code == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "not finite" in line]
    assert len(said) == 1 and "weight 'W' of mm1 holds 1 NaN/Inf value" in said[0], result.stderr
