"""The demo's digits CNN through the whole GPU path: build (fp32/fp16/int8), compare, profile.

Marked ``gpu``: runs with ``pytest -m gpu`` where TensorRT, pycuda and a GPU answer; skipped with the
reason ``edgedeploy doctor`` prints elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedeploy.backends.tensorrt import gpu_tests_can_run
from edgedeploy.options import BuildRequest, CalibrationRequest
from edgedeploy.stages.build import build
from edgedeploy.stages.compare import Gates, compare
from edgedeploy.stages.profile import ProfileOptions, profile
from tests.conftest import Digits
from tests.trt.test_gpu_engines import local_target

CAN_RUN, WHY = gpu_tests_can_run()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CAN_RUN, reason=WHY)]
MIN_TOP1 = {"fp32": 0.999, "fp16": 0.995, "int8": 0.99}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_demo_model_engine_is_accurate_and_profiled(digits: Digits, tmp_path: Path, precision: str) -> None:
    target = local_target()
    if precision not in target.precisions:
        pytest.skip(f"{target.name} has no fast {precision}")
    request = BuildRequest(
        precision=precision, target=target, backend="tensorrt",
        calibration=CalibrationRequest(data=str(digits.test_npz), samples=256, batch_size=32),
    )  # fmt: skip
    outcome = build(digits.onnx_path, request, tmp_path)
    engine = outcome.build.artifact
    assert engine.suffix == ".engine" and outcome.build.backend == "tensorrt"
    feeds = [{"input": digits.x_test[i : i + 50]} for i in range(0, len(digits.x_test), 50)]
    result = compare(digits.onnx_path, engine, feeds, Gates(min_cosine=0.99, min_top1=MIN_TOP1[precision]))
    assert result.passed, result.outputs
    timing = profile(engine, ProfileOptions(warmup_ms=50, duration_s=0.3, batch_sizes=(1, 8)))
    assert [b.batch_size for b in timing.batches] == [1, 8]
    assert all(b.sections and b.sections["gpu_compute"].median_ms > 0 for b in timing.batches)
    assert np.isfinite(timing.batches[0].throughput_ips)
