"""A real pretrained model from a pip wheel: PaddleOCR's PP-OCRv4 recognizer (SVTR: convolutions,
attention, opset 12) from rapidocr-onnxruntime, on rendered text lines.

Regression for the crashes seen on real recognizers (``IndexError`` in write_qdq on the CPU
placement, "the Q/DQ model has a cycle" on the GPU one): both placements must calibrate, load
in ONNX Runtime and read the same text as FP32 on most lines. The wheel is fetched once with
``pip download`` into the benchmark cache (PyPI is reachable in CI); without network the test is
skipped, except in CI where that is a failure. About 20 s on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.real_models import rec_inputs, text_equal_batch_major
from edgedeploy.stages.precision.int8 import make_int8, open_calibration_data
from edgedeploy.targets import load_target
from tests.calibration.conftest import rapidocr_model

MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"


@pytest.fixture(scope="module")
def recognizer() -> Path:
    return rapidocr_model(MEMBER, "ocr-rec")


@pytest.mark.parametrize("target", ["jetson-orin-nx", "x86-64-cpu"])
def test_real_ocr_recognizer_calibrates_and_reads_like_fp32(
    recognizer: Path, target: str, tmp_path: Path
) -> None:
    np.savez(tmp_path / "calib.npz", **rec_inputs(8, seed=1))
    evaluate = rec_inputs(8, seed=2)
    source = open_calibration_data(recognizer, str(tmp_path / "calib.npz"), batch_size=4)
    artifact = make_int8(recognizer, tmp_path / "rec.int8.onnx", target=load_target(target), source=source)
    ref = ort.InferenceSession(str(recognizer)).run(None, evaluate)
    got = ort.InferenceSession(str(artifact.path)).run(None, evaluate)
    assert artifact.info["quantized_nodes"] >= 40
    assert text_equal_batch_major([ref], [got]) >= 0.75
