"""``edgedeploy analyze`` on the command line: what it refuses, and its tables cut at --top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import assert_clean_input_error, run_cli


def _overflowing_chain(tmp_path: Path) -> tuple[Path, Path]:
    """x (100..200) * 1000 -> Relu -> * 2 -> Neg -> Abs: five tensors beyond fp16's 65504."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("k", 1000.0), ("two", 2.0))]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a"], name="scale"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Mul", ["b", "two"], ["c"], name="double"),
        helper.make_node("Neg", ["c"], ["d"], name="neg"),
        helper.make_node("Abs", ["d"], ["y"], name="abs"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        consts,
    )
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    data = tmp_path / "chain.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(100, 200, (8, 4)).astype(np.float32))
    return path, data


def test_analyze_refuses_zero_samples_as_calibrate_does(tmp_path: Path) -> None:
    path, data = _overflowing_chain(tmp_path)
    for command in ("analyze", "calibrate"):
        extra = ["-o", str(tmp_path / "out")] if command == "calibrate" else []
        result = run_cli(command, path, "--data", data, "--samples", "0", *extra)
        assert_clean_input_error(result, "number of samples must be >= 1, got 0")


def test_analyze_says_how_many_more_tensors_at_risk_its_top_leaves_out(tmp_path: Path) -> None:
    path, data = _overflowing_chain(tmp_path)
    result = run_cli("analyze", path, "--data", data, "--top", "3", "--json", tmp_path / "r.json")
    assert result.code == 0, result.stderr
    at_risk = json.loads((tmp_path / "r.json").read_text())["tensors_at_risk"]
    assert len(at_risk) == 5
    assert f"... 2 more tensors at risk in the JSON ({tmp_path / 'r.json'})" in result.stderr
    without = run_cli("analyze", path, "--data", data, "--top", "3")
    assert "... 2 more tensors at risk in the JSON (--json FILE)" in without.stderr
    every = run_cli("analyze", path, "--data", data, "--top", "5")
    assert "more tensors at risk" not in every.stderr
