"""A real bundle (edgedeploy.stages.bundle.make_bundle) of a tiny dense model for jetson-orin-nano, plus a
fake Jetson: fake nvpmodel, jetson_clocks, tegrastats, trtexec, nvidia-smi and edgedeploy on PATH (the fake
edgedeploy's doctor reports no TensorRT unless FAKE_EDGEDEPLOY_TRT=1, so --tool auto picks trtexec)
and a fake device tree under EDGEDEPLOY_ROOT. The scripts run the helpers on python3 from PATH, or on
EDGEDEPLOY_TEST_DEVICE_PYTHON when set (a board's 3.6 or 3.8 with NumPy: run the device tests on it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.modelinfo import TensorSpec
from edgedeploy.stages.bundle import BundleArtifact, make_bundle
from edgedeploy.targets import load_target

FAKES = Path(__file__).parent / "fakes"
ORIN_NANO_MODEL = "NVIDIA Jetson Orin Nano Developer Kit"
L4T_36_4_3 = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025"
)


def dense_model(fp16: bool) -> onnx.ModelProto:
    """input [batch,1,8,8] -> Flatten -> Gemm(64x10) -> logits; fp16: the Gemm runs in float16."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    dtype = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array(w.astype(dtype), "W"), numpy_helper.from_array(b.astype(dtype), "B")]
    nodes = []
    x = "input"
    if fp16:
        nodes.append(helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "W", "B"], ["y" if fp16 else "logits"]))
    if fp16:
        nodes.append(helper.make_node("Cast", ["y"], ["logits"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_dense_bundle(
    work: Path,
    *,
    batch: int = 16,
    precision_plan: dict[str, Any] | None = None,
    build: dict[str, Any] | None = None,
    target: str = "jetson-orin-nano",
    engine_tensorrt: str | None = None,
    stem: str = "dense",
) -> Path:
    """A ``target`` bundle of the dense model (fp32 and fp16), reference batch ``batch``; with
    ``engine_tensorrt``, the fp16 artifact carries a (fake trtexec) engine built with that TensorRT;
    ``stem``: the model files' name (models/<stem>.onnx, models/<stem>.fp16.onnx, ...)."""
    work.mkdir(parents=True, exist_ok=True)
    fp32, fp16 = work / f"{stem}.onnx", work / f"{stem}.fp16.onnx"
    onnx.save(dense_model(False), fp32)
    onnx.save(dense_model(True), fp16)
    plan = None
    if precision_plan is not None:
        plan = work / f"{stem}.fp16.plan.json"
        plan.write_text(json.dumps(precision_plan))
    x = np.random.default_rng(1).standard_normal((batch, 1, 8, 8)).astype(np.float32)
    engine = None
    if engine_tensorrt:
        engine = work / f"{stem}.fp16.engine"
        engine.write_text(json.dumps({"fake_plan": True, "onnx": str(fp16.resolve())}))
    return write_bundle(
        work / "out" / "dense-orin-nano",
        "dense",
        fp32,
        BundleArtifact(
            "fp16", "tensorrt", fp16, engine=engine, precision_plan=plan, compare={"passed": True}
        ),
        [TensorSpec("input", ("batch", 1, 8, 8), "float32")],
        [TensorSpec("logits", ("batch", 10), "float32")],
        {"input": x},
        target,
        build=build,
        tools={"tensorrt": engine_tensorrt} if engine_tensorrt else None,
    )


def write_bundle(
    out: Path,
    name: str,
    fp32: Path,
    fp16: BundleArtifact | None,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    reference_inputs: dict[str, np.ndarray],
    target: str,
    **more: Any,
) -> Path:
    """``out``, a ``target`` bundle of the model ``name``: ``fp32`` on ONNX Runtime (the source,
    of a dummy hash) and the ``fp16`` artifact, primary where there is one; its reference outputs
    are ONNX Runtime's on ``reference_inputs``, its gates the tests' usual ones. ``more``: the rest
    of make_bundle's arguments."""
    ran = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, reference_inputs)
    make_bundle(
        out,
        model_name=name,
        model_source=str(fp32),
        model_sha256="0" * 64,
        target=load_target(target),
        inputs=inputs,
        outputs=outputs,
        artifacts=[
            BundleArtifact("fp32", "onnxruntime", fp32, compare={"passed": True}),
            *([fp16] if fp16 is not None else []),
        ],
        gates={"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.999, "min_top1": 0.99},
        reference_inputs=reference_inputs,
        reference_outputs=dict(zip((o.name for o in outputs), ran, strict=True)),
        primary="fp16" if fp16 is not None else "fp32",
        **more,
    )
    return out


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dense_bundle(tmp_path_factory.mktemp("bundle-src"))


@pytest.fixture
def bundle(built_bundle: Path, tmp_path: Path) -> Path:
    """A fresh copy per test (tests damage files and build engines in it)."""
    dest = tmp_path / "bundle"
    shutil.copytree(built_bundle, dest, symlinks=True)
    shutil.copy2(built_bundle.with_name(built_bundle.name + ".tar.gz"), tmp_path / "bundle.tar.gz")
    return dest


def make_root(
    root: Path, model: str = ORIN_NANO_MODEL, release: str = L4T_36_4_3, cuda: str = "12.6.68"
) -> Path:
    (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/nv_tegra_release").write_text(release + "\n")
    # a JetPack 6.2 Orin Nano (Super firmware)'s power modes
    (root / "etc/nvpmodel.conf").write_text(
        "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=25W >\n"
        "< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n< POWER_MODEL ID=3 NAME=7W >\n"
    )
    (root / "usr/local/cuda").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/cuda/version.json").write_text(
        f'{{"cuda": {{"name": "CUDA SDK", "version": "{cuda}"}}}}'
    )
    return root


@dataclass
class Device:
    root: Path
    log: Path
    env: dict[str, str]

    def set_board(
        self, model: str = ORIN_NANO_MODEL, release: str = L4T_36_4_3, cuda: str = "12.6.68"
    ) -> None:
        make_root(self.root, model, release, cuda)

    def calls(self, tool: str) -> list[str]:
        if not self.log.exists():
            return []
        return [ln.rstrip() for ln in self.log.read_text().splitlines() if ln.split(" ", 1)[0] == tool]

    def path_without_edgedeploy(self) -> str:
        """A PATH with this test's python3 and the device's fake tools but no edgedeploy (neither the
        fake nor the venv's): a board where edgedeploy is not installed."""
        folder = self.root.parent / "bin-without-edgedeploy"
        if not folder.is_dir():
            folder.mkdir()
            python = folder / "python3"
            python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            python.chmod(0o755)
            for fake in FAKES.iterdir():
                if fake.name != "edgedeploy" and os.access(fake, os.X_OK) and fake.is_file():
                    (folder / fake.name).symlink_to(fake)
        return os.pathsep.join([str(folder), "/usr/bin", "/bin"])

    def run(
        self, script: Path, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd or self.root.parent,
            env={**self.env, **env},
        )


@pytest.fixture
def device(tmp_path: Path) -> Device:
    """A fake Orin Nano on JetPack 6.2 with TensorRT 10.3 (through the fake trtexec's banner)."""
    root = make_root(tmp_path / "root")
    log = tmp_path / "calls.log"
    path = os.pathsep.join([str(FAKES), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "EDGEDEPLOY_ROOT": str(root), "FAKE_LOG": str(log)}
    fakes_env = ("FAKE_TRTEXEC_FAIL", "FAKE_TRTEXEC_NOISE", "FAKE_TRT_VERSION", "TRTEXEC")
    gpu_env = ("FAKE_GPU_NAME", "FAKE_GPU_CC", "FAKE_TRTEXEC_NO_DEVICE", "FAKE_NVIDIA_SMI_FAIL")
    for key in (*fakes_env, *gpu_env, "FAKE_TEGRASTATS_FAIL", "FAKE_TEGRASTATS_LINES", "FAKE_NVP_FAN"):
        env.pop(key, None)
    for key in ("FAKE_EDGEDEPLOY_TRT", "FAKE_EDGEDEPLOY_BUILD_EXIT", "FAKE_EDGEDEPLOY_INTERRUPT", "PYTHON"):
        env.pop(key, None)
    if os.environ.get("EDGEDEPLOY_TEST_DEVICE_PYTHON"):  # the scripts' $PYTHON: e.g. a 3.6 with NumPy
        env["PYTHON"] = os.environ["EDGEDEPLOY_TEST_DEVICE_PYTHON"]
        # as on a board, without edgedeploy on its path (tegrastats_power.py would import this one's)
        env.pop("PYTHONPATH", None)
    return Device(root=root, log=log, env=env)
