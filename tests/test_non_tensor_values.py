"""Models with values that are not tensors (scikit-learn's ZipMap of class probabilities, sequence
outputs, optional inputs) through calibrate's auto, compare and the data sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.errors import CalibrationError, DataError
from calibration.modelinfo import model_io
from calibration.select import scored_tensors
from calibration.sources import open_source
from tests.conftest import assert_clean_input_error, run_cli

FLOAT_SEQ = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
PROBS = helper.make_sequence_type_proto(
    helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
)


def _save(nodes: list[onnx.NodeProto], outputs: list[onnx.ValueInfoProto], path: Path) -> Path:
    """x[N,8] -> MatMul W[8,4] -> y, then ``nodes`` making ``outputs``."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"), *nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])], outputs, [w],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _zipmap(path: Path, with_tensor: bool = True) -> Path:
    """A classifier as scikit-learn exports it: probabilities y and z = ZipMap(y), a seq(map)."""
    zipmap = helper.make_node("ZipMap", ["y"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2, 3])
    outputs = [helper.make_value_info("z", PROBS)]
    if with_tensor:
        outputs.insert(0, helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]))
    return _save([zipmap], outputs, path)


def _sequence_only(path: Path, integer: bool = False) -> Path:
    """One output, SequenceConstruct of y (of Cast(y) to int64 with ``integer``)."""
    nodes = [helper.make_node("Cast", ["y"], ["yi"], to=TensorProto.INT64)] if integer else []
    nodes.append(helper.make_node("SequenceConstruct", ["yi" if integer else "y"], ["s"]))
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, None))
    return _save(nodes, [helper.make_value_info("s", seq if integer else FLOAT_SEQ)], path)


def _calibrate_auto(model: Path, out: Path) -> None:
    source = open_source("random", model_io(model)[0], samples=8, batch_size=2)
    calibrate(model, source, CalibrationOptions(algorithm="auto"), out)


def test_auto_scores_the_tensor_outputs_of_a_model_with_a_zipmap_output(tmp_path: Path) -> None:
    """auto's model-level score took float() of ZipMap's dicts: TypeError in output_cosine."""
    model = _zipmap(tmp_path / "clf.onnx")
    assert scored_tensors(onnx.load(model)) == ["y"]
    _calibrate_auto(model, tmp_path / "out")
    assert (tmp_path / "out" / "clf.int8.onnx").is_file()


@pytest.mark.parametrize("with_tensor", [True, False])
def test_auto_calibrates_a_model_with_a_0d_output(tmp_path: Path, with_tensor: bool) -> None:
    """A 0-d output (a mean, a count; torch's ``.mean()`` exports as one) crashed auto's vote with a
    traceback (numpy AxisError in select._sample_sums)."""
    square = helper.make_node("Mul", ["y", "y"], ["y2"], name="square")
    mean = helper.make_node("ReduceMean", ["y2"], ["m"], name="mean", keepdims=0)
    outputs = [helper.make_tensor_value_info("m", TensorProto.FLOAT, [])]
    if with_tensor:
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]))
    model = _save([square, mean], outputs, tmp_path / "loss.onnx")
    _calibrate_auto(model, tmp_path / "out")
    assert (tmp_path / "out" / "loss.int8.onnx").is_file()


def test_auto_scores_what_the_non_tensor_outputs_are_made_of_when_no_output_is_a_tensor(
    tmp_path: Path,
) -> None:
    zipmap_only = _zipmap(tmp_path / "probs.onnx", with_tensor=False)
    assert scored_tensors(onnx.load(zipmap_only)) == ["y"]  # ZipMap's probabilities
    _calibrate_auto(zipmap_only, tmp_path / "out")
    integers = _sequence_only(tmp_path / "ints.onnx", integer=True)
    with pytest.raises(CalibrationError, match="--algorithm entropy"):
        scored_tensors(onnx.load(integers))
    assert_clean_input_error(
        run_cli("calibrate", integers, "--data", "random", "-o", tmp_path / "ints"),
        "'s' (seq(tensor(int64)))",
    )
    assert not (tmp_path / "ints").exists() or not any((tmp_path / "ints").iterdir())


def test_compare_compares_the_tensor_outputs_and_names_the_others(tmp_path: Path) -> None:
    """Polygraphy stopped on ZipMap's list: 'dtype is unsupported for objects of type: list'."""
    model = _zipmap(tmp_path / "clf.onnx")
    candidate = shutil.copy(model, tmp_path / "copy.onnx")
    result = run_cli("compare", model, candidate, "--json", tmp_path / "c.json")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "not compared" in line]
    assert len(skipped) == 1 and "'z' (seq(map(int64,tensor(float))))" in skipped[0], result.stderr
    assert " y " in result.stdout


def test_compare_refuses_a_model_without_a_tensor_output(tmp_path: Path) -> None:
    model = _sequence_only(tmp_path / "seq.onnx")
    candidate = shutil.copy(model, tmp_path / "copy.onnx")
    assert_clean_input_error(
        run_cli("compare", model, candidate), "no tensor output", "'s' (seq(tensor(float)))"
    )


def _optional_input(path: Path) -> Path:
    """x[2,8] and opt: optional(tensor(float)[2,8]); y = x @ W where opt is absent, else opt."""
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "W")
    opt = helper.make_value_info(
        "opt", helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 8]))
    )
    graph = helper.make_graph(
        [helper.make_node("OptionalHasElement", ["opt"], ["has"]),
         helper.make_node("MatMul", ["x", "W"], ["t"], name="mm"),
         helper.make_node("Where", ["has", "t", "x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]), opt],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_an_optional_input_is_refused_by_compare_as_by_the_data_sources(tmp_path: Path) -> None:
    """compare crashed in Polygraphy's coerce_buffer ('str' object has no attribute 'is_integral');
    calibrate and analyze gave ONNX Runtime's 'Invalid rank for input: opt'."""
    model = _optional_input(tmp_path / "opt.onnx")
    with pytest.raises(
        DataError, match=r"input 'opt' \(optional\(tensor\(float\)\)\), which is not a tensor"
    ):
        next(iter(open_source("random", model_io(model)[0])))
    candidate = shutil.copy(model, tmp_path / "copy.onnx")
    wording = "input 'opt' (optional(tensor(float))), which is not a tensor"
    assert_clean_input_error(run_cli("compare", model, candidate), wording)
    assert_clean_input_error(run_cli("analyze", model, "--data", "random"), wording)
    # an fp16 build needs no data: it is still made (its range analysis skipped)
    built = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "fp16")
    assert built.code == 0, built.stderr


def _label_encoder(path: Path) -> Path:
    """s[N] (strings) -> LabelEncoder -> y[N] float: "a" 1.0, "b" 2.0, anything else 0.0."""
    node = helper.make_node(
        "LabelEncoder", ["s"], ["y"], domain="ai.onnx.ml",
        keys_strings=["a", "b"], values_floats=[1.0, 2.0], default_float=0.0,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_compare_runs_a_model_with_a_string_input(tmp_path: Path) -> None:
    """compare of a model with a string input ended on Polygraphy's "unexpected dtype: object"
    (its input check maps only numpy's zero-length <U0 to STRING); the feeds go to ONNX Runtime
    unchecked by Polygraphy, as those of an input without a shape, on random data (numbers as
    text) and on the user's strings."""
    import json

    model = _label_encoder(tmp_path / "s.onnx")
    batch = next(iter(open_source("random", model_io(model)[0], samples=4, batch_size=4)))
    assert all(isinstance(v, str) for v in batch["s"].flat)  # text, not numbers as objects
    result = run_cli("compare", model, model, "--json", tmp_path / "r.json")
    assert result.code == 0, result.stderr
    np.savez(tmp_path / "d.npz", s=np.array(["a", "b", "c", "a"]))
    result = run_cli("compare", model, model, "--data", tmp_path / "d.npz", "--json", tmp_path / "d.json")
    assert result.code == 0, result.stderr
    said = json.loads((tmp_path / "d.json").read_text())
    assert said["outputs"]["y"]["cosine"] == pytest.approx(1.0)
