"""A bundle of an fp16 model built without kept io types (``edgedeploy build --precision fp16
--no-keep-io-types``): its model takes and gives float16 where the fp32 model, and the reference
inputs, are float32. verify.sh crashed on it with ONNX Runtime's "Unexpected input data type"
traceback (exit 1, which says "accuracy failed"); it now feeds each model its inputs in the dtype
the model declares, and the manifest and README say which precision takes which dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import Device, dense_model
from onnx import TensorProto

from calibration.modelinfo import TensorSpec
from edgedeploy.stages.bundle import BundleArtifact, make_bundle
from edgedeploy.targets import load_target
from tests.conftest import validate_manifest


def fp16_io_model() -> onnx.ModelProto:
    """The dense model in float16 end to end: input and logits declared float16, no Casts at its edges."""
    model = dense_model(True)
    graph = model.graph
    kept = [n for n in graph.node if n.op_type != "Cast"]
    kept[0].input[0] = "input"  # Flatten reads the float16 input itself
    kept[-1].output[0] = "logits"
    del graph.node[:]
    graph.node.extend(kept)
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model)
    return model


def fp16_io_bundle(work: Path, target: str) -> Path:
    """A bundle for ``target`` of the dense model, fp32 and fp16 (float16 io), fp16 primary."""
    fp32, fp16 = work / "dense.onnx", work / "dense.fp16.onnx"
    onnx.save(dense_model(False), fp32)
    onnx.save(fp16_io_model(), fp16)
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    backend = "onnxruntime" if target == "x86-64-cpu" else "tensorrt"
    return make_bundle(
        work / "out" / f"dense-{target}",
        model_name="dense",
        model_source=str(fp32),
        model_sha256="0" * 64,
        target=load_target(target),
        inputs=[TensorSpec("input", ("batch", 1, 8, 8), "float32")],
        outputs=[TensorSpec("logits", ("batch", 10), "float32")],
        artifacts=[
            BundleArtifact("fp32", backend, fp32, compare={"passed": True}),
            BundleArtifact("fp16", backend, fp16, compare={"passed": True}),
        ],
        gates={"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.999, "min_top1": 0.99},
        reference_inputs={"input": x},
        reference_outputs={"logits": y},
        primary="fp16",
    ).directory


def _no_traceback(res: object) -> None:
    assert "Traceback" not in getattr(res, "stderr", "") + getattr(res, "stdout", "")


def test_verify_feeds_a_cpu_fp16_io_model_float16_and_passes(tmp_path: Path, device: Device) -> None:
    bundle = fp16_io_bundle(tmp_path, "x86-64-cpu")
    res = device.run(bundle / "scripts" / "verify.sh")
    _no_traceback(res)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accuracy: pass" in res.stdout
    assert json.loads((bundle / "device/results/verify-fp16.json").read_text())["passed"] is True
    res = device.run(bundle / "scripts" / "verify.sh", "--precision", "fp32")  # the float32 model as before
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_manifest_and_readme_give_the_dtypes_of_each_precision(tmp_path: Path) -> None:
    bundle = fp16_io_bundle(tmp_path, "x86-64-cpu")
    manifest = json.loads((bundle / "manifest.json").read_text())
    validate_manifest(manifest)
    arts = {a["precision"]: a for a in manifest["artifacts"]}
    assert arts["fp16"]["input_dtypes"] == {"input": "float16"}
    assert arts["fp16"]["output_dtypes"] == {"logits": "float16"}
    # only where they differ from the bundle's io
    assert "input_dtypes" not in arts["fp32"] and "output_dtypes" not in arts["fp32"]
    readme = (bundle / "README.md").read_text()
    assert "| input | `input` | [batch, 1, 8, 8] | float32; fp16: float16 |" in readme
    assert "| output | `logits` | [batch, 10] | float32; fp16: float16 |" in readme


def test_verify_feeds_a_jetson_fp16_io_engine_float16_bytes(tmp_path: Path, device: Device) -> None:
    """trtexec reads --loadInputs files as raw bytes of the engine's input type (the fake as well):
    float32 bytes for a float16 input were twice its size."""
    bundle = fp16_io_bundle(tmp_path, "jetson-orin-nano")
    res = device.run(bundle / "scripts" / "build_engine.sh")
    assert res.returncode == 0, res.stdout + res.stderr
    res = device.run(bundle / "scripts" / "verify.sh")
    _no_traceback(res)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accuracy: pass" in res.stdout


def test_a_model_onnxruntime_cannot_load_is_one_line_and_exit_2(tmp_path: Path, device: Device) -> None:
    """ONNX Runtime's errors are no RuntimeError: a model it could not load or run gave a traceback
    and exit 1 ("accuracy failed"); the check could not run, which is exit 2 in one line."""
    import subprocess
    import sys

    bundle = fp16_io_bundle(tmp_path, "x86-64-cpu")
    model = tmp_path / "other.onnx"
    model.write_bytes(b"not an onnx model")
    check = [str(bundle / "scripts" / "verify_outputs.py"), "--bundle", str(bundle)]
    res = subprocess.run(
        [sys.executable, *check, "--onnxruntime", str(model)],
        capture_output=True,
        text=True,
        timeout=60,
        env=device.env,
    )
    _no_traceback(res)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ONNX Runtime cannot run"), res.stderr
