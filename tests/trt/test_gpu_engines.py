"""Real engines on a real GPU: build, compare against ONNX Runtime and profile in fp32, fp16 and int8.

Marked ``gpu``: ``pytest -m gpu`` runs them where TensorRT, pycuda and a GPU answer; elsewhere they
are skipped with the reason ``edgedeploy doctor`` also prints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend, gpu_tests_can_run
from edgedeploy.backends.trt_env import environment
from edgedeploy.options import ShapeProfile
from edgedeploy.targets import Target, all_targets, load_target

CAN_RUN, WHY = gpu_tests_can_run()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CAN_RUN, reason=WHY)]
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.25}
PROFILE = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})


def local_target() -> Target:
    """The target that describes this machine: the Jetson by its device-tree model, else a desktop GPU."""
    env = environment()
    if env["jetson_model"]:
        for target in all_targets():
            if target.device_tree_model and target.device_tree_model in env["jetson_model"]:
                return target
        return load_target("jetson-agx-orin")
    return dataclasses.replace(
        load_target("rtx4090"),
        compute_capability=env["compute_capability"] or "8.9",
        precisions=("fp32", "fp16", "int8"),
    )


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_engine_builds_matches_onnxruntime_and_profiles(
    cnn_models, tmp_path: Path, precision: str
) -> None:
    target = local_target()
    if precision not in target.precisions:
        pytest.skip(f"{target.name} has no fast {precision}")
    model = getattr(cnn_models, precision)
    backend = TensorRTBackend()
    result = backend.build(
        model, BuildOptions(precision=precision, target=target, profiles=[PROFILE]), tmp_path
    )
    assert result.artifact.is_file() and not result.skipped
    assert backend.build(
        model, BuildOptions(precision=precision, target=target, profiles=[PROFILE]), tmp_path
    ).skipped

    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(cnn_models.fp32), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    with backend.runner(result.artifact) as runner:
        got = runner.infer({"input": x})["logits"]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE[precision], rtol=TOLERANCE[precision])

    from edgedeploy.backends.runtime import profile_engine

    profile = profile_engine(
        result.artifact, warmup_ms=50, duration_s=0.2, iterations=10, shapes={"input": (4, 1, 8, 8)},
        cuda_graph=True, no_data_transfers=False, per_layer=True,
    )  # fmt: skip
    assert profile.iterations >= 10 and profile.sections["gpu_compute"].mean_ms > 0
    assert profile.per_layer


def test_real_engine_with_two_profiles_runs_batches_only_the_second_takes(cnn_models, tmp_path: Path) -> None:
    profiles = [
        ShapeProfile({"input": ((1, 1, 8, 8), (1, 1, 8, 8), (2, 1, 8, 8))}),
        ShapeProfile({"input": ((4, 1, 8, 8), (8, 1, 8, 8), (8, 1, 8, 8))}),
    ]
    backend = TensorRTBackend()
    opts = BuildOptions(precision="fp32", target=local_target(), profiles=profiles)
    engine = backend.build(cnn_models.fp32, opts, tmp_path).artifact
    session = ort.InferenceSession(str(cnn_models.fp32), providers=["CPUExecutionProvider"])
    with backend.runner(engine) as runner:
        for batch in (1, 6, 2):  # profile 0, then 1, then back to 0
            x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
            np.testing.assert_allclose(
                runner.infer({"input": x})["logits"], session.run(None, {"input": x})[0], atol=1e-4, rtol=1e-4
            )
