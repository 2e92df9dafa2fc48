"""A subgraph (If branch) that reads an outer initializer or an outer Constant keeps it: write_qdq
dropped both as unread, and ONNX Runtime refused the Q/DQ model (seen on Silero VAD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.sources import open_source


def if_model(path: Path) -> Path:
    """y = Conv(x) then If(flag): Mul by the outer initializer 'gain', else Add the outer Constant 'shift'."""
    rng = np.random.default_rng(0)
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["c", "gain"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", 4, 8, 8])],
    )  # fmt: skip
    else_branch = helper.make_graph(
        [helper.make_node("Add", ["c", "shift"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 4, 8, 8])],
    )  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["shift"], value=numpy_helper.from_array(np.float32(0.5), "v")),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch, name="if"),
    ]
    graph = helper.make_graph(
        nodes,
        "m",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 8, 8]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [
            numpy_helper.from_array(rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(np.float32(2.0), "gain"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_if_branches_keep_the_outer_initializer_and_constant_they_read(tmp_path: Path) -> None:
    model = if_model(tmp_path / "if.onnx")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 2, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    loader = tmp_path / "load.py"  # a scalar input cannot be batched from an .npz: a loader script
    loader.write_text(
        "import numpy as np\n"
        "def load_data():\n"
        f"    for i, x in enumerate(np.load({str(tmp_path / 'x.npy')!r})):\n"
        "        yield {'x': x[None], 'flag': np.array(i % 2 == 0)}\n"
    )
    inputs, _ = model_io(model)
    source = open_source(str(loader), inputs)
    for placement in ("tensorrt", "onnxruntime"):
        result = calibrate(model, source, CalibrationOptions(placement=placement), tmp_path / placement)
        for flag in (True, False):
            feed = {"x": x[:1], "flag": np.array(flag)}
            ref = ort.InferenceSession(str(model)).run(None, feed)[0]
            got = ort.InferenceSession(str(result.model)).run(None, feed)[0]
            assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
