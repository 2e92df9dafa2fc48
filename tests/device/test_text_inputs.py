"""A bundle of a model with a string input (text tokenized in the graph, as magika's or a
LabelEncoder's): its reference inputs were saved as a NumPy object array, which only a pickle holds,
and verify.sh ended on the device with "cannot compare with the reference (ValueError: Object
arrays cannot be loaded when allow_pickle=False)", exit 2, for a bundle that was fine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import Device
from onnx import TensorProto, helper, numpy_helper

from calibration.modelinfo import TensorSpec
from edgedeploy.errors import InputError
from edgedeploy.stages.bundle import BundleArtifact, make_bundle
from edgedeploy.targets import load_target

WORDS = ["a", "b", "hello", "a\0b"]


def text_model() -> onnx.ModelProto:
    """s[batch, 3] strings -> LabelEncoder (WORDS -> 1, 2, 3, 4; else 0) -> MatMul W[3, 2] -> y."""
    encode = helper.make_node(
        "LabelEncoder", ["s"], ["codes"], domain="ai.onnx.ml",
        keys_strings=WORDS, values_floats=[1.0, 2.0, 3.0, 4.0], default_float=0.0,
    )  # fmt: skip
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32), "W")
    graph = helper.make_graph(
        [encode, helper.make_node("MatMul", ["codes", "W"], ["y"])], "text",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def text_bundle(work: Path, texts: np.ndarray) -> Path:
    """A CPU bundle of :func:`text_model`, its reference inputs ``texts`` as a feed holds them (an
    object array of str), its reference outputs ONNX Runtime's on them."""
    model = work / "text.onnx"
    onnx.save(text_model(), model)
    (y,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"s": texts})
    return make_bundle(
        work / "out",
        model_name="text",
        model_source=str(model),
        model_sha256="0" * 64,
        target=load_target("x86-64-cpu"),
        inputs=[TensorSpec("s", ("batch", 3), "object")],
        outputs=[TensorSpec("y", ("batch", 2), "float32")],
        artifacts=[BundleArtifact("fp32", "onnxruntime", model, compare={"passed": True})],
        gates={"atol": 1e-6, "rtol": 0.0, "check_allclose": True, "min_cosine": 0.9999},
        reference_inputs={"s": texts},
        reference_outputs={"y": y},
        primary="fp32",
    ).directory


def test_verify_runs_a_bundle_of_a_string_input_model_on_its_text(tmp_path: Path, device: Device) -> None:
    """The text is kept as NumPy's fixed-width strings, which np.load reads without pickles, and fed
    to ONNX Runtime as str objects, as the host fed it: from a fixed-width array ONNX Runtime takes
    an item only up to a NUL in it ("a\\0b" read as "a", another word here)."""
    texts = np.array([["a", "hello", "zz"], ["a\0b", "", "b"]], dtype=object)
    bundle = text_bundle(tmp_path, texts)
    with np.load(bundle / "reference" / "inputs.npz", allow_pickle=False) as data:
        assert data["s"].tolist() == texts.tolist()
    res = device.run(bundle / "scripts" / "verify.sh")
    assert "Traceback" not in res.stdout + res.stderr
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accuracy: pass" in res.stdout
    said = json.loads((bundle / "device" / "results" / "verify-fp32.json").read_text())
    assert said["passed"] is True and said["outputs"]["y"]["max_abs"] == 0.0


def test_reference_text_ending_in_nul_is_refused_in_one_line(tmp_path: Path) -> None:
    """NumPy's fixed-width strings drop trailing NULs: such text could not be the device's reference
    inputs, so the bundle is refused naming the input, not made to fail verify.sh."""
    texts = np.array([["a", "hello\0", "zz"]], dtype=object)
    with pytest.raises(InputError, match=r"^reference input 's' holds text ending in NUL characters"):
        text_bundle(tmp_path, texts)
    assert not (tmp_path / "out").exists()


def test_the_manifest_and_readme_give_a_string_input_onnx_type_name(tmp_path: Path) -> None:
    """manifest.json's io and the bundle README's table gave the text input's dtype as "object"
    (NumPy's, for the array that holds it), where ONNX and every other listing say string."""
    bundle = text_bundle(tmp_path, np.array([["a", "hello", "zz"]], dtype=object))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [(s["name"], s["dtype"]) for s in manifest["io"]["inputs"]] == [("s", "string")]
    assert [(s["name"], s["dtype"]) for s in manifest["io"]["outputs"]] == [("y", "float32")]
    readme = (bundle / "README.md").read_text()
    assert "| input | `s` | [batch, 3] | string |" in readme and "object" not in readme
