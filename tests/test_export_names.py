"""Graph input and output names the user chooses are kept even when the exporter used them for
other values (edgedeploy.stages.export.rename_values)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgedeploy.stages.export import rename_values
from tests.conftest import run_cli

MODULE = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.register_buffer("scale", torch.full((1,), 2.0))

    def forward(self, x):
        return torch.relu(self.conv(x)) * self.scale


def build():
    torch.manual_seed(0)
    return Net().eval()
"""


def test_names_of_inner_values_and_weights_can_be_chosen_for_inputs_and_outputs(tmp_path: Path) -> None:
    """The dynamo exporter named the output 'relu' beside its inner Relu's output 'relu' (and
    'conv.weight' beside the weight): the checker refused the file, exit 2."""
    import importlib.util

    import torch

    (tmp_path / "net.py").write_text(MODULE)
    spec = importlib.util.spec_from_file_location("net_for_names", tmp_path / "net.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = module.build()(torch.from_numpy(x)).numpy()
    for inputs, outputs in (("x", "relu"), ("x", "conv.weight"), ("relu", "conv2d")):
        out = tmp_path / f"{outputs}.onnx"
        names = ["--input-names", inputs, "--output-names", outputs]
        result = run_cli("export", f"{tmp_path / 'net.py'}:build", "--input", "x:1x3x8x8", *names, "-o", out)
        assert result.code == 0, result.stderr
        model = onnx.load(out)
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == [inputs]
        assert [o.name for o in model.graph.output] == [outputs]
        (got,) = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {inputs: x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_rename_values_moves_a_holder_of_the_new_name_aside_in_subgraphs_too() -> None:
    def branch(name: str, value: float) -> onnx.GraphProto:
        const = helper.make_node("Constant", [], [name], value_float=value)
        add = helper.make_node("Add", ["mid", name], [f"{name}_out"])  # reads the outer 'mid'
        return helper.make_graph(
            [const, add], name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1])]
        )

    nodes = [
        helper.make_node("Relu", ["in_ph"], ["mid"]),
        helper.make_node("Greater", ["mid", "zero"], ["above"]),
        helper.make_node("Squeeze", ["above"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["out_ph"], then_branch=branch("a", 1.0), else_branch=branch("b", -1.0)
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("in_ph", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out_ph", TensorProto.FLOAT, [1])],
        [onnx.numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    rename_values(model, {"in_ph": "x", "out_ph": "mid"})  # 'mid' is an inner value, read in the branches
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["mid"]
    assert model.graph.node[0].output[0] == "mid__1"
    assert model.graph.node[-1].attribute[0].g.node[1].input[0] == "mid__1"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for value, want in ((2.0, 3.0), (-2.0, -1.0)):
        (got,) = session.run(None, {"x": np.array([value], np.float32)})
        assert got.tolist() == [want]


DATA_DEPENDENT = """
import torch


class Picks(torch.nn.Module):
    def forward(self, x):
        return torch.nonzero(x > 0), x.reshape(-1) * 2


def build():
    return Picks()
"""

ANONYMOUS = re.compile(r"unk__\d+|[su]\d+")  # onnx shape inference's and torch.export's symbols


def _dims(path: Path) -> dict[str, list[int | str]]:
    graph = onnx.load(path).graph
    return {
        v.name: [d.dim_param or (d.dim_value if d.HasField("dim_value") else "") for d in dims]
        for v in [*graph.input, *graph.output]
        for dims in [v.type.tensor_type.shape.dim]
    }


def test_dynamic_dims_of_inputs_and_outputs_get_names_a_user_can_give_shapes_for(tmp_path: Path) -> None:
    """Dynamic dims came out named unk__0 (onnx's shape inference), u0 (torch.export's data-dependent
    size) or not at all, which Polygraphy's and trtexec's --shapes and profiles cannot name. An
    unnamed dim is now named after its input or output and axis (x_dim2, output_0_dim0); the
    batch stays 'batch', and one symbol keeps one name everywhere."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, None])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "anon.onnx")
    for flag in ("--simplify", "--no-simplify"):
        out = tmp_path / f"anon{flag}.onnx"
        result = run_cli("export", tmp_path / "anon.onnx", "-o", out, flag)
        assert result.code == 0, result.stderr
        dims = _dims(out)
        assert all(isinstance(d, int) or (d and not ANONYMOUS.fullmatch(d)) for v in dims.values() for d in v)
        assert dims["y"] == dims["x"] == ["x_dim0", 3, "x_dim2"], dims  # a Relu's output: its input's dims
        assert "unk__" not in result.stdout, result.stdout
        onnx.checker.check_model(onnx.load(out), full_check=True)
        feed = {"x": np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)}
        (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)
        np.testing.assert_allclose(got, np.maximum(feed["x"], 0))

    (tmp_path / "picks.py").write_text(DATA_DEPENDENT)
    out = tmp_path / "picks.onnx"
    result = run_cli("export", f"{tmp_path / 'picks.py'}:build", "--input", "x:2x8", "-o", out)
    assert result.code == 0, result.stderr
    dims = _dims(out)
    assert dims["x"] == ["batch", 8], dims
    assert dims["output_0"] == ["output_0_dim0", 2], dims
    assert not any(isinstance(d, str) and ANONYMOUS.fullmatch(d) for v in dims.values() for d in v), dims
    onnx.checker.check_model(onnx.load(out), full_check=True)
