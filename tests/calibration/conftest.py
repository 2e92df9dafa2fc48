"""Fixtures: a digits CNN trained for a few seconds (sklearn's 8x8 digits), its data, and small
hand-built ONNX graphs for the placement rules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@dataclass
class DigitsCNN:
    model: Path
    calib: Path  # .npz with "input": 300 training images
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> DigitsCNN:
    torch = pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    nn = torch.nn
    torch.manual_seed(0)
    torch.set_num_threads(2)
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1300], order[1300:]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(10):
        perm = torch.randperm(len(train))
        for i in range(0, len(train), 64):
            batch = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            opt.step()
    model.eval()
    root = tmp_path_factory.mktemp("digits")
    path = root / "digits.onnx"
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 8, 8),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    calib = root / "calib.npz"
    np.savez(calib, input=x[train][:300])
    return DigitsCNN(path, calib, x[test], y[test])


def conv_residual_model(path: Path) -> Path:
    """x -> Conv_a -> Relu -> Conv_b -> Add(Conv_b, Relu) -> Gemm(transB=0) via Flatten; plus
    a ConvTranspose and a MatMul, to pin every weight axis and the residual rule."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "ra"], ["s"], name="residual_add"),
        helper.make_node("ConvTranspose", ["s", "wt"], ["t"], name="deconv"),
        helper.make_node("GlobalAveragePool", ["t"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["h"], name="gemm", transB=0),
        helper.make_node("MatMul", ["h", "wm"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [
            init("wa", 4, 3, 3, 3),
            init("ba", 4),
            init("wb", 4, 4, 3, 3),
            init("wt", 4, 6, 2, 2),
            init("wg", 6, 7),
            init("bg", 7),
            init("wm", 7, 5),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def residual_model(tmp_path: Path) -> Path:
    return conv_residual_model(tmp_path / "residual.onnx")


def squeeze_conv_opset12(inits: list[onnx.TensorProto], first_pads: int) -> onnx.ModelProto:
    """An opset-12 model x[1,1,1,8,16] -> Squeeze(axes attribute; the version converter makes it an
    input) -> Conv(w1, b1) -> Relu -> Conv(w2, and b2 when ``inits`` has it) -> y[1,2,8,16]."""
    names = {init.name for init in inits}
    second = ["r1", "w2", "b2"] if "b2" in names else ["r1", "w2"]
    nodes = [
        helper.make_node("Squeeze", ["x"], ["s"], axes=[0], name="squeeze"),
        helper.make_node("Conv", ["s", "w1", "b1"], ["c1"], pads=[first_pads] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", second, ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def rapidocr_model(member: str, key: str) -> Path:
    """A model of rapidocr-onnxruntime's wheel (``member``), fetched once with ``pip download``
    into the benchmark cache as ``<key>.wheel.onnx``; without network the test is skipped, except
    in CI where that is a failure."""
    from benchmarks.real_models import MODELS, OCR, wheel_member

    try:
        return wheel_member(OCR, member, MODELS / f"{key}.wheel.onnx")
    except Exception as exc:  # no network
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot fetch {OCR}: {exc}")
