"""The calibration report names each tensor's type as the written Q/DQ model stores it: ONNX
Runtime's placement stores every activation as uint8 (a signed one over its observed range, a ReLU
that follows no weighted op with zero point 0), though its threshold was chosen for 128 levels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.report import print_table
from calibration.sources import open_source
from edgedeploy.stages.report import load_run, write_report
from edgedeploy.stages.report.data import clipping_panels
from tests.calibration.test_qdq_onnxruntime_precision import silu_model


def relu_late_model(path: Path) -> Path:
    """x -> Conv -> SiLU -> ReLU (follows no weighted op: planned signed, never below 0) -> Conv."""
    return silu_model(path, relu_after=True)


def _zero_points(model_path: Path) -> dict[str, tuple[str, int]]:
    """tensor -> (type, zero point) of the ``<tensor>_zero_point`` initializers write_qdq names."""
    model = onnx.load(model_path)
    return {
        i.name.removesuffix("_zero_point"): (
            TensorProto.DataType.Name(i.data_type).lower(),
            int(numpy_helper.to_array(i)),
        )
        for i in model.graph.initializer
        if i.name.endswith("_zero_point") and not i.dims
    }


def _calibrate(tmp_path: Path, placement: str, out: str, exclude: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "m.onnx"
    if not path.exists():
        relu_late_model(path)
        x = np.random.default_rng(2).standard_normal((32, 4, 32)).astype(np.float32)
        np.savez(tmp_path / "calib.npz", x=x)
    source = open_source(str(tmp_path / "calib.npz"), model_io(path)[0], batch_size=8)
    options = CalibrationOptions(algorithm="max", placement=placement, exclude_nodes=exclude)
    return calibrate(path, source, options, tmp_path / out).report


def test_the_report_records_the_type_and_zero_point_the_qdq_model_stores(tmp_path: Path) -> None:
    for placement in ("onnxruntime", "tensorrt"):
        report_path = _calibrate(tmp_path, placement, placement)
        report = json.loads(report_path.read_text())
        stored = _zero_points(report_path.parent / "m.int8.onnx")
        recorded = {t["name"]: (t["dtype"], t["zero_point"]) for t in report["tensors"]}
        assert recorded == {name: stored[name] for name in recorded}, placement
        levels = {t["name"]: t["levels"] for t in report["tensors"]}
        if placement == "onnxruntime":
            # a signed input and Conv output over their ranges, a ReLU planned signed (its range
            # starts at 0): all stored as uint8, though their thresholds were chosen for 128 levels
            assert recorded["x"][0] == recorded["a"][0] == "uint8" and recorded["x"][1] not in (0, 128)
            assert recorded["r"] == ("uint8", 0) and levels["r"] == 128
        else:
            assert recorded["x"] == recorded["r"] == ("int8", 0)


def test_a_tensor_the_written_model_leaves_in_float_is_recorded_as_float(tmp_path: Path) -> None:
    _calibrate(tmp_path, "onnxruntime", "out")
    again = _calibrate(tmp_path, "onnxruntime", "out", exclude=("conv1",))  # reuses the calibration
    tensors = {t["name"]: t for t in json.loads(again.read_text())["tensors"]}
    assert "r" not in _zero_points(again.parent / "m.int8.onnx")
    assert (tensors["r"]["dtype"], tensors["r"]["zero_point"]) == ("float", 0)
    assert tensors["x"]["dtype"] == "uint8"


def test_the_calibrate_table_and_the_html_report_show_the_stored_type(tmp_path: Path) -> None:
    from rich.console import Console

    from calibration.report import load_report

    report_path = _calibrate(tmp_path, "onnxruntime", "out")
    report = load_report(report_path)
    assert report is not None
    console = Console(record=True, width=200)
    print_table(report, console)
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in console.export_text().splitlines() if line.count("│") > 3}  # fmt: skip
    assert rows["r"] == "uint8" and rows["x"].startswith("uint8 (zp ")  # was int8 both
    written = tmp_path / "calibrate.json"  # as `edgedeploy calibrate --json` writes it
    written.write_text(json.dumps({"artifact": {}, "report": json.loads(report_path.read_text())}))
    run = load_run([written])
    panels = {p.tensor: p.dtype for p in clipping_panels(run, limit=10)}
    assert panels["r"] == "uint8" and panels["x"].startswith("uint8 (zp ")
    page = (write_report(run, tmp_path / "report").html).read_text()
    assert '<td class="text wrap">r</td><td class="text">uint8</td>' in page
    assert re.search(r'<td class="text wrap">x</td><td class="text">uint8 \(zp \d+\)</td>', page)


def test_a_format_1_report_read_by_edgedeploy_report_shows_onnxruntime_activations_as_uint8() -> None:
    from calibration.report import recorded_type

    # format 1 recorded the levels the threshold was chosen for as dtype (int8 for 128)
    old = {"format": 1, "placement": "onnxruntime"}
    assert recorded_type({"dtype": "int8", "zero_point": 0}, old) == "uint8"
    assert recorded_type({"dtype": "int8", "zero_point": 17}, old) == "uint8 (zp 17)"
    trt = {"format": 1, "placement": "tensorrt"}
    assert recorded_type({"dtype": "int8", "zero_point": 0}, trt) == "int8"
    assert recorded_type({"dtype": "uint8", "zero_point": 0}, trt) == "uint8"
    assert recorded_type({"dtype": "float", "zero_point": 0}, {"format": 2}) == "float"
