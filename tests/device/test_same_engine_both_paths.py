"""On the board, build_engine.sh builds with `edgedeploy build` or with trtexec: both must build the
same engine. This pins the trtexec flags (device/bundle_helper.py, stdlib only) to edgedeploy's own
build plan (backends/trt_plan.py) for every shipped TensorRT release, precision and TF32 setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.trt_plan import ModelFacts, plan_build
from edgedeploy.backends.trt_versions import TrtVersion
from edgedeploy.device import bundle_helper
from edgedeploy.options import ShapeProfile
from edgedeploy.stages.bundle.make import target_dict
from edgedeploy.targets import load_target

PROFILE = {"input": {"min": [1, 1, 8, 8], "opt": [4, 1, 8, 8], "max": [8, 1, 8, 8]}}


@pytest.mark.parametrize("version", ["8.5.3", "8.6.1", "10.3.0", "10.13.0", "11.1.0"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("tf32", [True, False])
def test_trtexec_flags_build_what_edgedeploys_plan_builds(
    tmp_path: Path, version: str, precision: str, tf32: bool
) -> None:
    target = load_target("jetson-agx-orin")
    plan_file = tmp_path / "model.plan.json"
    plan_file.write_text(json.dumps({"fp32_nodes": ["head/Gemm"]}))
    facts = ModelFacts(
        inputs={"input": ("batch", 1, 8, 8)}, has_qdq=precision == "int8", has_fp16=True, has_fp8=False
    )
    options = BuildOptions(
        precision=precision,
        target=target,
        profiles=[ShapeProfile.from_config(PROFILE)],
        precision_plan=plan_file,
        tf32=tf32,
    )
    plan = plan_build(tmp_path / "model.onnx", options, TrtVersion.parse(version), facts)

    manifest = {
        "target": target_dict(target),
        "io": {"inputs": [{"name": "input", "shape": ["batch", 1, 8, 8]}]},
        "build": {"profiles": [PROFILE], "tf32": tf32},
    }
    art = {"precision": precision, "precision_plan": "models/model.plan.json"}
    layers = bundle_helper.fp32_layers(tmp_path.parent, {"precision_plan": str(plan_file)})
    flags = bundle_helper.build_flags(manifest, art, version, None, layers if precision != "fp32" else [])

    assert plan.strongly_typed == ("--stronglyTyped" in flags)
    assert plan.fp16_flag == ("--fp16" in flags)
    assert plan.int8_flag == ("--int8" in flags)
    assert plan.tf32 == ("--noTF32" not in flags)
    pinned = next((f.split("=", 1)[1] for f in flags if f.startswith("--layerPrecisions=")), "")
    assert [p.removesuffix(":fp32") for p in pinned.split(",") if p] == plan.fp32_layers
    assert bool(plan.fp32_layers) == ("--precisionConstraints=obey" in flags)
    assert f"--memPoolSize=workspace:{plan.memory_pools['WORKSPACE'] >> 20}M" in flags
    assert bundle_helper.input_profile(manifest, None) == plan.profiles[0]
