"""Fixtures for the TensorRT backend and runtime tests: small ONNX models and the fake GPU stack.

``fake_gpu`` puts fake ``tensorrt``/``pycuda`` modules (tests/fakes) into sys.modules for one test and
resets Polygraphy's cached lazy ``tensorrt`` import around it, so each test sees its own fake and a
real TensorRT (in ``-m gpu`` runs) is never shadowed. Every test that uses it runs once per TensorRT
release we ship (``SHIPPED``: JetPack 5's 8.5, JetPack 6.0's 8.6, JetPack 6.1/6.2's 10.3, JetPack 7's
10.13, and 11.1), each with the API that release really has, so a call that only exists on newer
releases fails the older ones. ``@pytest.mark.trt_versions(...)`` narrows a test to the releases it is
about (a version list, or ``min=``/``max=`` bounds).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.fakes.fake_pycuda import FakeGpu, make_pycuda
from tests.fakes.fake_tensorrt import FakeTrtState, make_tensorrt


def _cnn(kind: str) -> onnx.ModelProto:
    """input[batch,1,8,8] -> Conv -> Relu -> Flatten -> Gemm -> logits[batch,10]; fp32, fp16 or Q/DQ."""
    rng = np.random.default_rng(0)
    fp16 = kind == "fp16"
    ftype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    npt = np.float16 if fp16 else np.float32
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.zeros(4, npt), "B1"),
        numpy_helper.from_array((rng.standard_normal((10, 256)) * 0.1).astype(npt), "W2"),
        numpy_helper.from_array(np.zeros(10, npt), "B2"),
    ]
    nodes = []
    x = "input"
    if fp16:
        nodes.append(helper.make_node("Cast", ["input"], ["x16"], to=ftype, name="cast_in"))
        x = "x16"
    if kind == "int8":
        scale = np.array(np.abs(w1).max() / 127, np.float32)
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "s_in"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
            numpy_helper.from_array(np.round(w1 / scale).astype(np.int8), "W1q"),
            numpy_helper.from_array(scale, "s_w"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", [x, "s_in", "zp"], ["xq"], name="input_q"),
            helper.make_node("DequantizeLinear", ["xq", "s_in", "zp"], ["xdq"], name="input_dq"),
            helper.make_node("DequantizeLinear", ["W1q", "s_w", "zp"], ["W1"], name="w1_dq"),
        ]
        x = "xdq"
    else:
        inits.append(numpy_helper.from_array(w1.astype(npt), "W1"))
    out = "g" if fp16 else "logits"
    nodes += [
        helper.make_node("Conv", [x, "W1", "B1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W2", "B2"], [out], transB=1, name="fc"),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["g"], ["logits"], to=TensorProto.FLOAT, name="cast_out"))
    graph = helper.make_graph(
        nodes,
        f"cnn_{kind}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@dataclass
class Models:
    fp32: Path
    fp16: Path
    int8: Path
    static: Path  # fp32 with a fixed batch of 2


@pytest.fixture(scope="session")
def cnn_models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("trt-models")
    paths = {}
    for kind in ("fp32", "fp16", "int8"):
        paths[kind] = root / f"cnn.{kind}.onnx"
        onnx.save(_cnn(kind), paths[kind])
    static = _cnn("fp32")
    for vi in (*static.graph.input, *static.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 2
    paths["static"] = root / "cnn.static.onnx"
    onnx.save(static, paths["static"])
    return Models(**paths)


@dataclass
class FakeStack:
    gpu: FakeGpu
    state: FakeTrtState
    trt: ModuleType
    cuda: ModuleType

    def config(self) -> Any:
        return self.state.configs[-1]

    def network(self) -> Any:
        return self.state.networks[-1]


def _reset_polygraphy_trt_cache() -> None:
    """Forget the tensorrt module Polygraphy's lazy importers and TensorRT logger have cached."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy") or module is None:
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "LazyModule":
                cached = value.__dict__.get("module")
                if getattr(cached, "__name__", None) in ("tensorrt", "tensorrt_rtx"):
                    object.__setattr__(value, "module", None)
        if name == "polygraphy.backend.trt.util":
            module.TRT_LOGGER = None  # type: ignore[attr-defined]


SHIPPED = ("8.5.3", "8.6.1", "10.3.0", "10.13.0", "11.1.0")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def versions_for(marker: pytest.Mark | None) -> list[str]:
    if marker is None:
        return list(SHIPPED)
    chosen = list(marker.args) or list(SHIPPED)
    lo, hi = marker.kwargs.get("min"), marker.kwargs.get("max")
    if lo:
        chosen = [v for v in chosen if _key(v) >= _key(lo)]
    if hi:
        chosen = [v for v in chosen if _key(v) < _key(hi)]
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trt_version" in metafunc.fixturenames:
        versions = versions_for(metafunc.definition.get_closest_marker("trt_versions"))
        metafunc.parametrize("trt_version", versions, ids=[f"trt{v}" for v in versions])


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trt_version: str) -> Iterator[FakeStack]:
    """Fake TensorRT ``trt_version`` (each shipped release in turn) and pycuda on a fake Ada GPU."""
    gpu = FakeGpu()
    state = FakeTrtState(gpu=gpu, version=trt_version)
    pycuda, driver = make_pycuda(gpu)
    stack = FakeStack(gpu, state, ModuleType("placeholder"), driver)

    def install(version: str | None = None) -> ModuleType:
        if version:
            state.version = version
        stack.trt = make_tensorrt(state)
        monkeypatch.setitem(sys.modules, "tensorrt", stack.trt)
        _reset_polygraphy_trt_cache()
        return stack.trt

    stack.install = install  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    from edgedeploy.backends import trt_env

    monkeypatch.setattr(trt_env, "DEVICE_TREE_MODEL", tmp_path / "no-device-tree")
    monkeypatch.setattr(trt_env, "NV_TEGRA_RELEASE", tmp_path / "no-tegra-release")
    install()
    yield stack
    monkeypatch.undo()
    _reset_polygraphy_trt_cache()
