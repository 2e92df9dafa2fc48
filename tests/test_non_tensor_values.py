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


def _zipmap(path: Path, with_tensor: bool = True, string_labels: bool = False) -> Path:
    """A classifier as scikit-learn exports it: probabilities y and z = ZipMap(y), a seq(map) keyed by
    the class labels (int64, or strings with ``string_labels``)."""
    if string_labels:
        labels = {"classlabels_strings": ["a", "b", "c", "d"]}
        scores = helper.make_tensor_type_proto(TensorProto.FLOAT, [])
        probs = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.STRING, scores))
    else:
        labels, probs = {"classlabels_int64s": [0, 1, 2, 3]}, PROBS
    zipmap = helper.make_node("ZipMap", ["y"], ["z"], domain="ai.onnx.ml", **labels)  # type: ignore[arg-type]
    outputs = [helper.make_value_info("z", probs)]
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


@pytest.mark.parametrize("string_labels", [False, True], ids=["int64-labels", "string-labels"])
def test_an_onnx_source_with_a_zipmap_output_is_exported_with_its_type_and_values(
    tmp_path: Path, string_labels: bool
) -> None:
    """export of a scikit-learn classifier (ZipMap's seq(map(int64,tensor(float))) output), and run's
    export step of one as [model] source, failed: "the exported model fails onnx.checker ((op_type:ZipMap):
    [TypeInferenceError] type case mismatch. existing=tensor_type inferred=map_type)", for a model
    that passes the full check: onnxslim wrote the output back as seq(tensor(undefined)). The export
    now keeps every output's type, and ONNX Runtime gives the same outputs for it as for the source."""
    import onnxruntime as ort

    from calibration.modelinfo import type_text

    model = _zipmap(tmp_path / "clf.onnx", string_labels=string_labels)
    out = tmp_path / "clean.onnx"
    result = run_cli("export", model, "-o", out)
    assert result.code == 0, result.stderr
    assert "onnxslim could not simplify" not in result.stderr  # simplified, not kept as it was
    exported = onnx.load(out)
    onnx.checker.check_model(exported, full_check=True)
    types = [type_text(o.type) for o in exported.graph.output]
    assert types == [type_text(o.type) for o in onnx.load(model).graph.output]
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})
    got = ort.InferenceSession(str(out)).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1] and len(got[1]) == 5
    config = tmp_path / "run.toml"
    config.write_text(
        f'workdir = "w"\n[model]\nsource = "{model}"\n[build]\nprecisions = ["fp32"]\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
    )
    ran = run_cli("run", config, cwd=tmp_path)
    assert ran.code == 0, ran.stderr


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


def _labelled(path: Path, with_tensor: bool = True) -> Path:
    """y (x @ W, [N,4]) with its labels: z = ZipMap(y) and names[N,1], a string tensor, the name of
    each row's argmax ("zero".."three"); without y among the outputs when not ``with_tensor``."""
    nodes = [
        helper.make_node("ZipMap", ["y"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2, 3]),
        helper.make_node("ArgMax", ["y"], ["best"], axis=1, keepdims=1),
        helper.make_node(
            "LabelEncoder", ["best"], ["names"], domain="ai.onnx.ml", keys_int64s=[0, 1, 2, 3],
            values_strings=["zero", "one", "two", "three"], default_string="?",
        ),
    ]  # fmt: skip
    outputs = [helper.make_tensor_value_info("names", TensorProto.STRING, ["N", 1])]
    if with_tensor:
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]))
        outputs.append(helper.make_value_info("z", PROBS))
    return _save(nodes, outputs, path)


def test_an_accuracy_budget_measures_the_tensor_outputs_of_a_model_with_string_and_map_outputs(
    tmp_path: Path,
) -> None:
    """build --accuracy-budget ended in a traceback on a model with a string output (the class
    names: "ValueError: could not convert string to float: 'zero'") or a ZipMap output ("TypeError:
    float() argument must be ... not 'dict'"): the budget measured every output as numbers. It now
    measures the numeric tensor outputs, as compare does, and a model without one is refused in one
    line before any work."""
    model = _labelled(tmp_path / "clf.onnx")
    for precision in ("fp16", "int8"):
        out = tmp_path / precision
        budget = ("--accuracy-budget", "cosine>=0.9")
        built = run_cli("build", model, "--precision", precision, *budget, "-o", out)
        assert built.code == 0, built.stderr
        assert (out / f"clf.{precision}.onnx").is_file()
    names_only = _labelled(tmp_path / "names.onnx", with_tensor=False)
    refused = run_cli(
        "build", names_only, "--precision", "fp16", "--accuracy-budget", "cosine>=0.9", "-o", tmp_path / "n"
    )
    assert_clean_input_error(refused, "no tensor output", "'names' (tensor(string))")
    assert not (tmp_path / "n").exists() or not any((tmp_path / "n").iterdir())


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


def test_export_lists_a_string_tensor_as_string_as_onnx_says_it(tmp_path: Path) -> None:
    """export printed a string input as "s[N]:object" and wrote "dtype": "object" in its --json
    (NumPy's name for the array that holds text), where ONNX, compare and ONNX Runtime say string."""
    import json

    for model, listed in (
        (_label_encoder(tmp_path / "s.onnx"), "  input  s[N]:string"),
        (_labelled(tmp_path / "names.onnx"), "  output names[N,1]:string"),
    ):
        result = run_cli("export", model, "-o", tmp_path / f"out-{model.name}", "--json", tmp_path / "e.json")
        assert result.code == 0, result.stderr
        assert listed in result.stdout.splitlines() and "object" not in result.stdout, result.stdout
        said = json.loads((tmp_path / "e.json").read_text())
        dtypes = {s["name"]: s["dtype"] for s in said["inputs"] + said["outputs"]}
        assert "string" in dtypes.values() and "object" not in dtypes.values(), dtypes


def test_export_lists_a_sequence_or_map_output_with_its_onnx_type(tmp_path: Path) -> None:
    """export printed ZipMap's seq(map(int64,tensor(float))) output as "z[]:float32", a 0-d float
    tensor, and a seq(tensor(float)) as "s[]:float32", though its --json's kind named the type."""
    import json

    for model, name, kind in (
        (_zipmap(tmp_path / "clf.onnx"), "z", "seq(map(int64,tensor(float)))"),
        (_sequence_only(tmp_path / "seq.onnx"), "s", "seq(tensor(float))"),
    ):
        result = run_cli("export", model, "-o", tmp_path / f"out-{model.name}", "--json", tmp_path / "e.json")
        assert result.code == 0, result.stderr
        assert f"  output {name}:{kind}" in result.stdout.splitlines(), result.stdout
        assert "[]:float32" not in result.stdout, result.stdout
        said = json.loads((tmp_path / "e.json").read_text())
        assert said["outputs"][-1]["kind"] == kind


def test_export_json_gives_a_sequence_or_map_its_type_and_no_tensor_shape(tmp_path: Path) -> None:
    """export --json gave ZipMap's seq(map(int64,tensor(float))) output (and a seq(tensor(float)))
    "shape": [] and "dtype": "float32", a 0-d float tensor, with only its kind naming the real type.
    A value that is not a tensor now has its ONNX type as kind and null shape, dtype and rank_known;
    the tensors are listed as before."""
    import json

    tensor = {"name": "y", "shape": ["N", 4], "dtype": "float32", "rank_known": True, "kind": None}
    for model, name, kind, tensors in (
        (_zipmap(tmp_path / "clf.onnx"), "z", "seq(map(int64,tensor(float)))", [tensor]),
        (_sequence_only(tmp_path / "seq.onnx"), "s", "seq(tensor(float))", []),
    ):
        said = tmp_path / f"{model.stem}.json"
        result = run_cli("export", model, "-o", tmp_path / f"out-{model.name}", "--json", said)
        assert result.code == 0, result.stderr
        value = {"name": name, "shape": None, "dtype": None, "rank_known": None, "kind": kind}
        assert json.loads(said.read_text())["outputs"] == [*tensors, value]


WORDS = ["a", "b", "c", "d", "e", "hello", "world"]


def _text_classifier(path: Path) -> Path:
    """s[N,4] (strings) -> LabelEncoder (WORDS -> -1.0, -0.5 ..., anything else 0.25) -> codes,
    MatMul W1[4,16] -> Relu -> MatMul W2[16,3] -> logits: a text input and float work to convert."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
               (("W1", (4, 16)), ("W2", (16, 3)))]  # fmt: skip
    nodes = [
        helper.make_node(
            "LabelEncoder", ["s"], ["codes"], domain="ai.onnx.ml", name="enc",
            keys_strings=WORDS, values_floats=[i * 0.5 - 1 for i in range(len(WORDS))], default_float=0.25,
        ),
        helper.make_node("MatMul", ["codes", "W1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "W2"], ["logits"], name="mm2"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "text", [helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], weights,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _texts(seed: int, rows: int) -> np.ndarray:
    """``rows`` x 4 words of WORDS and two it lacks, as an object array of str."""
    return np.random.default_rng(seed).choice(np.array([*WORDS, "zzz", "x"], dtype=object), (rows, 4))


def _fp16_storage(model: Path, texts: np.ndarray) -> np.ndarray:
    """What compare runs for the fp16 build of :func:`_text_classifier` (every tensor rounded to
    fp16, the LabelEncoder's output too), worked out here from ONNX Runtime's codes."""
    import onnxruntime as ort

    loaded = onnx.load(model)
    w = {i.name: numpy_helper.to_array(i) for i in loaded.graph.initializer}
    loaded.graph.output[0].CopyFrom(helper.make_tensor_value_info("codes", TensorProto.FLOAT, None))
    (codes,) = ort.InferenceSession(loaded.SerializeToString()).run(None, {"s": texts})

    def half(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16).astype(np.float32)

    hidden = half(np.maximum(half(half(codes) @ half(w["W1"])), 0))
    return half(hidden @ half(w["W2"]))


def test_builds_of_a_string_input_model_run_on_the_data_given(tmp_path: Path) -> None:
    """An fp16 build of a model with a string input exited 2 whenever data was given (--calib-data
    as a file or a loader script, [calibration] data in a config) with ONNX Runtime's "Creation of
    OrtValues is currently only supported from non-string numpy arrays", and so did every int8
    build and calibrate: the statistics pass made an OrtValue of every feed, and ONNX Runtime makes
    none of text. Now they run on that data, and compare's figures on it are ONNX Runtime's."""
    import json

    import onnxruntime as ort

    model = _text_classifier(tmp_path / "t.onnx")
    texts = _texts(1, 16)
    np.savez(tmp_path / "d.npz", s=texts.astype(str))
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    words = np.array({[*WORDS, 'zzz', 'x']!r}, dtype=object)\n"
        "    rng = np.random.default_rng(1)\n"
        "    for _ in range(2):\n        yield {'s': words[rng.integers(0, 9, (8, 4))]}\n"
    )
    for data, name in ((tmp_path / "d.npz", "npz"), (loader, "loader")):
        built = run_cli("build", model, "--precision", "fp16", "--calib-data", data, "-o", tmp_path / name)
        assert built.code == 0, built.stderr
        assert "fp16 range analysis on 16 samples" in built.stderr, built.stderr
    built = run_cli("build", model, "--precision", "int8", "--calib-data", loader, "-o", tmp_path / "i8")
    assert built.code == 0, built.stderr
    calibrated = run_cli(
        "calibrate", model, "--data", tmp_path / "d.npz", "--algorithm", "max", "-o", tmp_path / "c"
    )
    assert calibrated.code == 0, calibrated.stderr

    fp16, int8 = tmp_path / "npz" / "t.fp16.onnx", tmp_path / "i8" / "t.int8.onnx"
    ref = ort.InferenceSession(str(model)).run(None, {"s": texts})[0].astype(np.float64)
    wanted = {
        fp16: _fp16_storage(model, texts).astype(np.float64),
        int8: ort.InferenceSession(str(int8)).run(None, {"s": texts})[0].astype(np.float64),
    }
    for candidate, got in wanted.items():
        said = tmp_path / f"{candidate.stem}.json"
        compared = run_cli("compare", model, candidate, "--data", tmp_path / "d.npz", "--json", said)
        assert compared.code == 0, compared.stderr
        figures = json.loads(said.read_text())["outputs"]["logits"]
        cosine = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
        assert figures["max_abs"] == pytest.approx(float(np.abs(ref - got).max()), rel=1e-6)
        assert figures["cosine"] == pytest.approx(cosine, abs=1e-9)

    config = tmp_path / "run.toml"
    config.write_text(
        f'workdir = "w"\n[model]\nsource = "{model}"\n[build]\nprecisions = ["fp16", "int8"]\n'
        f'[calibration]\ndata = "{loader}"\n[compare]\ndata = "{tmp_path / "d.npz"}"\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
    )
    ran = run_cli("run", config, cwd=tmp_path)
    assert ran.code == 0, ran.stderr
    assert "fp16 range analysis on 16 samples" in ran.stderr, ran.stderr


def test_run_matrix_and_bundle_refuse_a_text_model_for_a_gpu_target_before_any_work(tmp_path: Path) -> None:
    """TensorRT has no string tensors (docs/tensorrt-facts.md, "No string tensors"). run for a GPU
    target, where TensorRT is absent here, fell back to ONNX Runtime and made a bundle whose device
    could build no engine (on a GPU machine the build failed after the export and the fp16
    conversion, in TensorRT's parser words naming no input); matrix with a GPU cell did the same for
    its cells and bundles. Each is now refused in one line naming the input, before any work, where
    TensorRT would build the model (backend auto or tensorrt) or a bundle's device would; backend
    onnxruntime without a bundle still runs it."""
    model = _text_classifier(tmp_path / "t.onnx")
    wanted = ("input 's' is text (tensor(string))", "TensorRT has no string tensors", "rtx4090")

    def config(name: str, body: str) -> Path:
        path = tmp_path / f"{name}.toml"
        text = f'workdir = "{name}"\n[model]\nsource = "{model}"\n{body}[profile]\nenabled = false\n'
        path.write_text(text)
        return path

    gpu = '[build]\ntarget = "rtx4090"\nprecisions = ["fp32"]\n'
    for name, body, said in (
        ("auto", gpu, '[build] backend = "onnxruntime" and [bundle] enabled = false'),
        ("ort-bundle", gpu + 'backend = "onnxruntime"\n', "set [bundle] enabled = false"),
        ("auto-no-bundle", gpu + "[bundle]\nenabled = false\n", 'set [build] backend = "onnxruntime" to'),
    ):
        assert_clean_input_error(run_cli("run", config(name, body), cwd=tmp_path), *wanted, said)
        assert not (tmp_path / name).exists()
    matrix = (
        '[build]\nbackend = "onnxruntime"\n[matrix]\ntargets = ["x86-64-cpu", "rtx4090"]\n'
        f'precisions = ["fp32"]\n[[matrix.models]]\nsource = "{model}"\n'
    )
    path = tmp_path / "matrix.toml"
    path.write_text('workdir = "mx"\n[profile]\nenabled = false\n' + matrix)
    assert_clean_input_error(run_cli("matrix", path, cwd=tmp_path), *wanted, "[bundle] enabled = false")
    assert not (tmp_path / "mx").exists()
    bundled = run_cli("bundle", model, "--target", "rtx4090", "-o", tmp_path / "b")
    assert_clean_input_error(bundled, *wanted)
    assert not (tmp_path / "b").exists()
    ort = config("ort", gpu + 'backend = "onnxruntime"\n[bundle]\nenabled = false\n')
    ran = run_cli("run", ort, cwd=tmp_path)
    assert ran.code == 0, ran.stderr
