from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.results import dumps
from edgedeploy.stages.compare import Gates, output_metrics
from tests.conftest import Digits, assert_clean_input_error, run_cli


def test_metrics_of_identical_outputs() -> None:
    a = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    m = output_metrics("y", [a], [a.copy()], Gates())
    assert (
        m.max_abs == 0 and m.cosine > 0.999999 and m.snr_db is None and m.top1_agreement == 1.0 and m.passed
    )


def test_metrics_measure_error_snr_and_top1() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    cand = np.array([[1.0, 2.0, 3.5], [1.0, 2.0, 3.0]], np.float32)
    m = output_metrics("y", [ref], [cand], Gates(min_cosine=0.99))
    assert m.max_abs == 2.0
    assert m.top1_agreement == 0.5
    expected_snr = 10 * np.log10(
        (ref.astype(np.float64) ** 2).sum() / ((ref - cand).astype(np.float64) ** 2).sum()
    )
    assert abs(m.snr_db - expected_snr) < 1e-6
    assert not m.passed and any("cosine" in f for f in m.failures)


def test_nan_in_candidate_fails_the_gate() -> None:
    ref = np.ones((2, 3), np.float32)
    cand = ref.copy()
    cand[0, 0] = np.nan
    m = output_metrics("y", [ref], [cand], Gates(min_cosine=None))
    assert m.nan_count == 1 and not m.passed


def test_a_reference_inf_the_candidate_does_not_reproduce_fails_as_a_mismatch() -> None:
    """A reference Inf beside a finite candidate value was dropped with every non-finite pair: max
    abs 0, a pass of --check-allclose --atol 0 --rtol 0 --min-cosine 1, while the reference
    against itself failed for its Inf. It is a mismatch of infinite error (numpy's allclose(1, inf)
    is False); the finite pairs keep their figures."""
    ref = np.array([[np.inf, 0.1, 0.1, 0.1]], np.float32)
    cand = np.array([[1.0, 0.1, 0.1, 0.1]], np.float32)
    strict = Gates(atol=0.0, rtol=0.0, min_cosine=None, check_allclose=True)
    m = output_metrics("y", [ref], [cand], strict)
    assert m.nonfinite_mismatches == 1 and m.max_abs == np.inf and not m.allclose
    assert m.mean_abs == 0.0 and m.snr_db == np.inf and not m.passed  # no error among the finite pairs
    assert any("1 NaN/Inf value(s) unlike the reference's" in f for f in m.failures)


def test_nan_and_inf_the_candidate_reproduces_are_equal_and_others_mismatch() -> None:
    ref = np.array([np.inf, -np.inf, np.nan, 1.0, 2.0, 3.0], np.float32)
    same = output_metrics("y", [ref], [ref.copy()], Gates(atol=0.0, rtol=0.0, check_allclose=True))
    assert same.passed and same.allclose and same.nonfinite_mismatches == 0 and same.max_abs == 0.0
    assert (same.nan_count, same.inf_count, same.reference_nan_inf) == (1, 2, 3)
    cand = np.array([-np.inf, -np.inf, 5.0, np.nan, 2.0, 3.0], np.float32)  # +inf/-inf, NaN/5, 1/NaN
    m = output_metrics("y", [ref], [cand], Gates(min_cosine=None))
    assert m.nonfinite_mismatches == 3 and m.max_abs == np.inf and not m.passed


def test_empty_outputs_of_equal_shapes_are_identical() -> None:
    """NonZero with no hits gave [2, 0] on both sides and failed "no finite values to compare" even
    against itself (Polygraphy passes it); so did an output NaN everywhere on both sides."""
    idx = np.zeros((2, 0), np.int64)
    m = output_metrics("idx", [idx, idx], [idx.copy(), idx.copy()], Gates(check_allclose=True))
    assert m.passed and m.failures == [] and m.equal_share == 1.0
    assert (m.max_abs, m.mean_abs, m.p99_abs, m.max_rel, m.cosine, m.snr_db) == (0, 0, 0, 0, 1.0, None)
    empty = np.zeros((0, 4), np.float32)
    assert output_metrics("y", [empty], [empty.copy()], Gates(min_cosine=1.0)).passed
    nan = np.full((2, 3), np.nan, np.float32)
    assert output_metrics("y", [nan], [nan.copy()], Gates(min_cosine=1.0)).passed


def test_identical_outputs_have_a_cosine_of_exactly_1_and_no_cosine_exceeds_1() -> None:
    """A bit-identical copy failed --min-cosine 1 at cosine 0.9999999999999999 (random:1), and
    1.0000000000000002 was written for others: float64 rounding of dot / (norm * norm)."""
    a = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    same = output_metrics("y", [a], [a.copy()], Gates(min_cosine=1.0))
    assert same.cosine == 1.0 and same.passed
    b = a.copy()
    b[0, 0] = np.nextafter(b[0, 0], np.float32(10))  # one ulp off: a cosine that rounds above 1
    near = output_metrics("y", [a], [b], Gates(min_cosine=None))
    assert -1.0 <= near.cosine <= 1.0 and near.max_abs > 0
    assert output_metrics("y", [a], [-a], Gates(min_cosine=None)).cosine >= -1.0
    from edgedeploy.stages.compare.layers import _metrics, _Running  # --per-layer's figures

    run = _Running()
    run.add(a, a.copy())
    assert _metrics("t", run, Gates(min_cosine=1.0)) == (1.0, None, [])


def test_class_ids_and_masks_are_gated_on_equal_elements_not_cosine() -> None:
    """A class id 4 for 3 in one row of fifty kept a cosine above 0.999 (passing the gate), and a
    bool mask got an arg-max 'top-1'; both now read the share of equal elements."""
    ref = np.array([3, 1, 7, 7, 2, 9, 5, 5, 8, 6] * 5, np.int64)
    cand = ref.copy()
    cand[0] = 4
    m = output_metrics("cls", [ref], [cand], Gates())
    assert m.cosine > 0.999 and m.equal_share == 0.98
    assert not m.passed and m.failures == ["equal elements 0.9800 < 0.999 (a bool/integer output)"]
    mask = np.random.default_rng(0).standard_normal((8, 10)) > 0
    same = output_metrics("mask", [mask], [mask.copy()], Gates())
    assert same.passed and same.equal_share == 1.0 and same.top1_agreement is None
    floats = output_metrics("y", [ref.astype(np.float32)], [cand.astype(np.float32)], Gates())
    assert floats.equal_share is None and floats.passed  # float outputs keep the cosine gate


def test_integer_outputs_are_compared_in_their_own_dtype() -> None:
    """int64 ids + 2**60 against ids + 2**60 + 1 were cast to float64 first, where both round to
    the same number: equal share 1.0 and max abs 0 for outputs that differ everywhere."""
    ids = np.arange(8, dtype=np.int64).reshape(2, 4) + 2**60
    m = output_metrics("y", [ids], [ids + 1], Gates())
    assert m.equal_share == 0.0 and m.max_abs == 1.0 and m.mean_abs == 1.0 and not m.passed
    assert m.snr_db is not None and m.snr_db > 0
    same = output_metrics("y", [ids], [ids.copy()], Gates(min_cosine=1.0))
    assert same.passed and same.max_abs == 0 and same.cosine == 1.0
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    wide = output_metrics("y", [np.array([lo, 0])], [np.array([hi, 0])], Gates(min_cosine=None))
    assert wide.max_abs == float(2**64 - 1) and wide.equal_share == 0.5  # no int64 overflow
    top = np.array([np.iinfo(np.uint64).max, 0], np.uint64)
    mixed = output_metrics("y", [top], [np.array([-1, 0], np.int64)], Gates(min_cosine=None))
    assert mixed.max_abs == float(2**64) and mixed.equal_share == 0.5


def _polygraphy_relative_errors(ref: np.ndarray, cand: np.ndarray) -> list[float]:
    """max, mean and (not bool: Polygraphy's quantile of a bool error raises) p99 relative error of
    Polygraphy's own Comparator (CompareFunc.simple) on the same arrays, as compare's README says."""
    from polygraphy.comparator import IterationResult, SimpleCompareFunc

    quantile = ref.dtype != bool
    func = SimpleCompareFunc(check_error_stat="quantile" if quantile else "max", error_quantile=0.99)
    ours, theirs = IterationResult({"y": cand}, runner_name="c"), IterationResult({"y": ref}, runner_name="r")
    res = func(ours, theirs)["y"]
    figures = [float(res.max_reldiff), float(res.mean_reldiff)]
    return [*figures, float(res.quantile_reldiff)] if quantile else figures


def test_relative_errors_are_polygraphys_where_the_reference_is_zero_or_discrete() -> None:
    """Where the reference was 0, compare divided by float32's tiny (max rel 1.69e35 for an error
    of 0.002), where Polygraphy's Comparator adds its epsilon 2.22e-16 (8.97e12); and integer and
    bool outputs read finite relative errors where Polygraphy's are NaN (0 / 0). The figures are
    now Polygraphy's own, on the same arrays."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.1, 2.0, (8, 6)).astype(np.float32)
    ref[:, 5] = 0.0
    cand = ref * np.float32(1.01)
    cand[:, 5] = np.float32(0.001) * rng.uniform(0.1, 2.0, 8).astype(np.float32)
    ids = np.floor(ref * 3).astype(np.int64)
    other_ids = ids.copy()
    other_ids[:, 2] += 1
    mask = ref > 0.5
    for r, c in ((ref, cand), (ids, other_ids), (mask, ~mask), (ref * 0, cand)):
        m = output_metrics("y", [r], [c], Gates())
        theirs = _polygraphy_relative_errors(r, c)
        ours = [m.max_rel, m.mean_rel, m.p99_rel][: len(theirs)]
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, equal_nan=True)
    zero = output_metrics("y", [ref * 0], [cand], Gates())
    assert zero.max_rel == pytest.approx(zero.max_abs / 2.220446049250313e-16)  # not / 1.18e-38


def test_the_json_tells_identical_outputs_from_non_finite_figures() -> None:
    """An SNR of -inf (reference all zeros, candidate not) and a NaN cosine were written as null,
    which the result defines as identical (infinite SNR); the JSON stays standard (no bare
    Infinity) and says which."""
    from edgedeploy.results import dumps, figure_from_json

    def as_json(m: object) -> dict[str, object]:
        return json.loads(dumps(m), parse_constant=lambda word: pytest.fail(f"bare {word} in the JSON"))

    zeros = np.zeros((2, 4), np.float32)
    worse = as_json(output_metrics("y", [zeros], [zeros + 1e-3], Gates()))
    assert worse["snr_db"] == "-Infinity" and worse["identical"] is False
    assert figure_from_json(worse["snr_db"]) == -np.inf
    same = as_json(output_metrics("y", [zeros], [zeros.copy()], Gates()))
    assert same["snr_db"] is None and same["identical"] is True
    other = as_json(output_metrics("y", [zeros], [zeros[:1]], Gates()))  # another shape: no figures
    assert (other["cosine"], other["max_abs"], other["identical"]) == ("NaN", "Infinity", False)
    assert np.isnan(figure_from_json(other["cosine"])) and figure_from_json(None) is None


def test_an_output_of_another_size_fails_the_gate_instead_of_refusing_the_input() -> None:
    """A data-dependent output (NonZero, NMS) that came out with fewer rows used to exit 2 as bad
    input ("has 12 values in the reference, 9 in the candidate"); it is an accuracy failure."""
    ref = np.arange(12, dtype=np.int64).reshape(4, 3)
    m = output_metrics("boxes", [ref, ref], [ref, ref[:3]], Gates(min_cosine=None))
    assert not m.passed
    assert m.failures == ["another shape than the reference's (batch 1: shape [3, 3], reference [4, 3])"]


def test_cli_compare_of_discrete_outputs(tmp_path: Path) -> None:
    def model(path: Path, noise: float) -> Path:
        w = np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)
        w += noise * np.random.default_rng(1).standard_normal(w.shape).astype(np.float32)
        nodes = [
            helper.make_node("MatMul", ["x", "W"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["cls"], axis=1, keepdims=0),
            helper.make_node("Greater", ["logits", "zero"], ["mask"]),
        ]
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.float32(0), "zero")]
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
            [
                helper.make_tensor_value_info("cls", TensorProto.INT64, ["N"]),
                helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 10]),
            ],
            inits,
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    ref, cand = model(tmp_path / "ref.onnx", 0.0), model(tmp_path / "cand.onnx", 0.3)
    result = run_cli("compare", ref, cand, "--json", tmp_path / "c.json")
    assert result.code == 1, result.stderr
    assert "cls: equal elements" in result.stderr and "mask: equal elements" in result.stderr
    outputs = json.loads((tmp_path / "c.json").read_text())["outputs"]
    assert 0 < outputs["cls"]["equal_share"] < 0.999 and outputs["mask"]["top1_agreement"] is None
    assert run_cli("compare", ref, ref).code == 0


def _write_scaled_copy(src: Path, dest: Path, factor: float) -> None:
    model = onnx.load(src)
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_pre" if o == out else o for o in node.output]
    model.graph.initializer.append(helper.make_tensor("factor", TensorProto.FLOAT, [], [factor]))
    model.graph.node.append(helper.make_node("Mul", [f"{out}_pre", "factor"], [out], name="scale"))
    onnx.save(model, dest)


def test_cli_compare_passes_on_real_data_and_writes_json(digits: Digits, tmp_path: Path) -> None:
    result = run_cli(
        "compare",
        digits.onnx_path,
        digits.onnx_path,
        "--data",
        digits.test_npz,
        "--samples",
        "100",
        "--min-top1",
        "0.99",
        "--json",
        tmp_path / "c.json",
    )
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["passed"] and report["outputs"]["logits"]["top1_agreement"] == 1.0
    assert report["data"]["samples"] == 100 and report["data"]["samples_compared"] == 100
    many = run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", digits.test_npz,
                   "--samples", "100000", "--json", tmp_path / "all.json")  # fmt: skip
    held = json.loads((tmp_path / "all.json").read_text())["data"]
    assert many.code == 0 and held["samples_compared"] < 100000  # what the data holds, not what was asked
    for key in (
        "max_abs",
        "mean_abs",
        "p99_abs",
        "max_rel",
        "mean_rel",
        "p99_rel",
        "cosine",
        "snr_db",
        "nan_count",
        "inf_count",
    ):
        assert key in report["outputs"]["logits"]


def test_cli_compare_exits_1_when_a_gate_fails(digits: Digits, tmp_path: Path) -> None:
    flipped = tmp_path / "flipped.onnx"
    _write_scaled_copy(digits.onnx_path, flipped, -1.0)
    result = run_cli("compare", digits.onnx_path, flipped, "--data", digits.test_npz, "--samples", "50")
    assert result.code == 1
    assert "Traceback" not in result.stderr and "cosine" in result.stderr


def test_compare_accepts_a_folder_of_npy_and_a_loader_script(digits: Digits, tmp_path: Path) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"{i:03d}.npy", digits.x_test[i * 4 : i * 4 + 4])
    assert run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", folder).code == 0
    script = tmp_path / "loader.py"
    script.write_text(
        "import numpy as np\n\ndef load_data():\n    for i in range(3):\n"
        "        yield {'input': np.full((2, 1, 8, 8), i / 3, dtype=np.float32)}\n"
    )
    assert run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", script).code == 0


def test_random_data_on_a_two_input_model(two_io_onnx: Path) -> None:
    result = run_cli("compare", two_io_onnx, two_io_onnx, "--data", "random:3", "--samples", "4")
    assert result.code == 0, result.stderr
    assert "scores" in result.stdout and "mean" in result.stdout


def test_data_with_the_wrong_shape_exits_2(digits: Digits, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 1, 7, 7), np.float32))
    assert_clean_input_error(
        run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", bad),
        "input",
        "[batch,1,8,8]",
        "[4, 1, 7, 7]",
    )


def test_data_with_the_wrong_dtype_or_name_exits_2(digits: Digits, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 1, 8, 8), np.complex64))
    assert_clean_input_error(run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", bad), "dtype")
    np.savez(bad, images=np.zeros((4, 1, 8, 8), np.float32))
    assert_clean_input_error(run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", bad), "images")


def test_loader_script_that_raises_exits_2(digits: Digits, tmp_path: Path) -> None:
    script = tmp_path / "broken_loader.py"
    script.write_text("def load_data():\n    raise RuntimeError('camera unplugged')\n    yield {}\n")
    assert_clean_input_error(
        run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", script), "camera unplugged"
    )


def test_random_data_a_model_refuses_names_the_guessed_dims(reflect_padded_onnx: Path) -> None:
    model = reflect_padded_onnx
    result = run_cli("compare", model, model)
    assert_clean_input_error(result, "dynamic dims fed as 1: x ", "--input NAME:SHAPE")
    assert run_cli("compare", model, model, "--input", "x:2x16").code == 0


def test_a_top1_gate_no_output_can_take_is_said_not_applied(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "feature_map",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 3])],
    )
    model = tmp_path / "map.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    result = run_cli("compare", model, model, "--min-top1", "0.9", "--json", tmp_path / "c.json")
    assert result.code == 0, result.stderr
    assert "the top-1 gate was not applied" in result.stderr
    assert "not applied" not in run_cli("compare", model, model).stderr


def test_an_fp16_candidate_from_elsewhere_runs_as_it_is_and_says_why(tmp_path: Path) -> None:
    w = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])
    opset = [helper.make_opsetid("", 18)]
    ref = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "ref", [x], [y], [numpy_helper.from_array(w, "w")]
    )
    other = helper.make_graph(  # another tool's fp16 graph: its own weight names
        [
            helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
            helper.make_node("Add", ["x16", "w16_renamed"], ["y16"]),
            helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
        ],
        "other",
        [x],
        [y],
        [numpy_helper.from_array(w.astype(np.float16), "w16_renamed")],
    )
    onnx.save(helper.make_model(ref, opset_imports=opset), tmp_path / "ref.onnx")
    onnx.save(helper.make_model(other, opset_imports=opset), tmp_path / "other.onnx")
    result = run_cli("compare", tmp_path / "ref.onnx", tmp_path / "other.onnx", "--min-cosine", "0.99")
    assert result.code == 0, result.stderr
    assert "not converted from this reference" in result.stderr
    assert "w16_renamed" in result.stdout  # the reason, in the table's "run as"


def test_a_candidate_with_other_inputs_than_the_reference_exits_2(digits: Digits, two_io_onnx: Path) -> None:
    result = run_cli("compare", digits.onnx_path, two_io_onnx)
    assert_clean_input_error(result, "takes inputs", "but the reference")


def test_analyze_on_random_data_a_model_refuses_names_the_guessed_dims(reflect_padded_onnx: Path) -> None:
    result = run_cli("analyze", reflect_padded_onnx, "--data", "random")
    assert_clean_input_error(result, "dynamic dims fed as 1: x ", "--input NAME:SHAPE")


def test_a_feed_polygraphy_refuses_raises_without_its_own_lines_on_stderr(
    digits: Digits, capfd: pytest.CaptureFixture[str]
) -> None:
    """Polygraphy's critical log printed '[!]' lines to stderr before its exception, which the CLI
    turns into one line: the user saw the message three times, in two formats."""
    from polygraphy.exception import PolygraphyException

    from edgedeploy.errors import user_failure
    from edgedeploy.stages.compare.outputs import run_pair

    with pytest.raises(PolygraphyException) as caught:  # a shape our own checks would have refused first
        run_pair(digits.onnx_path, digits.onnx_path, [{"input": np.zeros((2, 3), np.float32)}])
    assert "[!]" not in capfd.readouterr().err
    line = user_failure(caught.value)
    assert line is not None
    assert line.startswith("Polygraphy: Input tensor: input | Received incompatible shape"), line


def test_int8_and_fp16_builds_on_random_data_a_model_refuses_name_the_guessed_dims(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """build --precision int8, calibrate and bundle said only ONNX Runtime's error ("Pad reflect requires
    axis length >= 2"), and build fp16's skipped range analysis too, without the dims random data
    had fed as 1 or how to give them, which analyze, compare and profile say."""

    padded = onnx.load(reflect_padded_onnx)  # then a 1-D convolution, for int8 to quantize
    weight = np.random.default_rng(0).normal(size=(4, 1, 3)).astype(np.float32)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    padded.graph.node.extend(
        [
            helper.make_node("Unsqueeze", ["y", "axes"], ["y3"]),
            helper.make_node("Conv", ["y3", "w"], ["z"]),
        ]
    )
    padded.graph.initializer.extend([axes, numpy_helper.from_array(weight, "w")])
    del padded.graph.output[:]
    padded.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4, None]))
    model = tmp_path / "conv.onnx"
    onnx.save(padded, model)
    before = sorted(tmp_path.rglob("*"))
    for args in (
        ("build", model, "--precision", "int8", "-o", tmp_path / "int8"),
        ("calibrate", model, "--data", "random", "-o", tmp_path / "cal"),
        ("bundle", model, "-o", tmp_path / "bundle"),
    ):
        result = run_cli(*args)
        assert result.code == 2 and "Traceback" not in result.stderr, result.stderr
        error = result.stderr.strip().splitlines()[-1]  # after the warnings on random data
        assert error.startswith("error: ") and "dynamic dims fed as 1: x 8x1; give the shapes" in error, error
        assert sorted(tmp_path.rglob("*")) == before, args  # no artifact, bundle or folder left behind
    fp16 = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "fp16")
    assert fp16.code == 0, fp16.stderr
    assert "range analysis skipped" in fp16.stderr and "dynamic dims fed as 1: x " in fp16.stderr


def test_an_fp16_build_refuses_input_shapes_its_random_data_cannot_take_as_int8_does(tmp_path: Path) -> None:
    """build --precision fp16 --input x:1x4x16x16 of x[N,3,H,W] exited 0 without a word: its range
    analysis was skipped (no ranges.json, no line saying so), while int8 and compare refuse the same
    --input in one line. Now the fp16 build refuses it in that line, exit 2, nothing written."""
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "hw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [weight],
    )
    model = tmp_path / "hw.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    before = sorted(tmp_path.rglob("*"))
    said = []
    for precision in ("fp16", "int8"):
        out = tmp_path / precision
        result = run_cli("build", model, "--precision", precision, "--input", "x:1x4x16x16", "-o", out)
        assert result.code == 2 and "Traceback" not in result.stderr, result.stderr
        said.append(result.stderr.strip().splitlines()[-1])  # after the warning on random data
        assert sorted(tmp_path.rglob("*")) == before, precision  # no artifact, plan or folder left behind
    assert "input 'x' expects shape x[N,3,H,W]:float32, got [1, 4, 16, 16]" in said[0], said
    assert said[0] == said[1]


def test_a_pipeline_compares_tensorrts_q_dq_model_not_onnx_runtimes_fused_copy(tmp_path: Path) -> None:
    """run and matrix compared an int8 build for a GPU target that fell back to ONNX Runtime on
    its saved .ort.onnx, whose fused integer ops compute as this CPU does (ocr-cls for
    jetson-orin-nx: cosine 0.997960 and top-1 0.875 there, 0.997856 and 1.0 emulated as TensorRT
    computes it, the figure `compare` gives for the same model); a CPU placement's saved copy is
    what the device runs, and stays the candidate."""
    from edgedeploy.stages.compare.outputs import compared_file

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])

    def qdq(zero_type: int, name: str) -> Path:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])]
        inits.append(helper.make_tensor("z", zero_type, [], [0]))
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]  # fmt: skip
        path = tmp_path / name
        onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits)), path)
        return path

    gpu, cpu = qdq(TensorProto.INT8, "m.int8.onnx"), qdq(TensorProto.UINT8, "c.int8.onnx")
    saved = tmp_path / "m.int8.ort.onnx"
    assert compared_file(gpu, saved) == gpu
    assert compared_file(cpu, saved) == saved


def test_a_candidate_fixed_at_one_batch_is_compared_in_batches_of_it(tmp_path: Path) -> None:
    """A candidate exported with a fixed batch of 1 beside a dynamic reference failed with only
    Polygraphy's "Received incompatible shape: (8, 4)"; it is now compared one row at a time, and an
    explicit --batch-size it cannot take is refused in one line that names the batch to give."""

    def relu(batch: int | str, path: Path) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    reference, fixed = relu("batch", tmp_path / "m.onnx"), relu(1, tmp_path / "m1.onnx")
    result = run_cli("compare", reference, fixed, "--json", tmp_path / "c.json")
    assert result.code == 0, result.stderr
    assert "takes a batch of 1 only: comparing in batches of 1" in result.stderr
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["iterations"] == record["data"]["samples_compared"] > 1  # one row a run
    refused = run_cli("compare", reference, fixed, "--batch-size", "4")
    assert_clean_input_error(refused, "takes a batch of 1 only", "give --batch-size 1")


def _matmul(batch: int | str, path: Path, quantized: bool = False) -> Path:
    """x[batch, 16] @ W -> y[batch, 10]; ``quantized``: x through a uint8 Q/DQ pair (an int8 model
    for a CPU target)."""
    weight = np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    inits = [numpy_helper.from_array(weight, "W")]
    nodes = [helper.make_node("MatMul", ["xq" if quantized else "x", "W"], ["y"])]
    if quantized:
        inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])]
        inits += [helper.make_tensor("z", TensorProto.UINT8, [], [128])]
        nodes[:0] = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                     helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xq"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_candidate_fixed_at_one_batch_drops_the_short_last_batch(tmp_path: Path) -> None:
    """64 samples against a candidate fixed at 5 beside a dynamic reference ended in a batch of 4
    the candidate refused ("Received incompatible shape: (4, 16)", exit 2), and bundle's batches of 8
    were all refused; the short last batch is now dropped as when both models are fixed: 60 samples
    compared, in 12 batches, and the bundle's reference inputs are a batch its artifact takes."""
    import onnxruntime as ort

    reference, fixed = _matmul("N", tmp_path / "m.onnx"), _matmul(5, tmp_path / "m5.onnx")
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    for spec in (data, "random"):
        result = run_cli("compare", reference, fixed, "--data", spec, "--json", tmp_path / "c.json")
        assert result.code == 0, result.stderr
        record = json.loads((tmp_path / "c.json").read_text())
        assert (record["iterations"], record["data"]["samples_compared"]) == (12, 60), spec
    quantized = _matmul(5, tmp_path / "m5.int8.onnx", quantized=True)
    layers = run_cli("compare", reference, quantized, "--data", data, "--per-layer", "--min-cosine", "0.9")
    assert layers.code == 0 and "12 batches" in layers.stdout, layers.stderr
    bundle = tmp_path / "bundle"
    made = run_cli("bundle", reference, quantized, "--data", data, "--min-cosine", "0.9", "-o", bundle,
                   "--json", tmp_path / "b.json")  # fmt: skip
    assert made.code == 0, made.stderr
    artifacts = json.loads((tmp_path / "b.json").read_text())["artifacts"]
    assert next(a for a in artifacts if a["precision"] == "int8")["compare"]["iterations"] == 6  # 32 at 5
    inputs = dict(np.load(bundle / "reference" / "inputs.npz"))
    assert inputs["x"].shape == (5, 16)
    session = ort.InferenceSession(bundle / "models" / quantized.name, providers=["CPUExecutionProvider"])
    assert session.run(None, inputs)[0].shape == (5, 10)  # what verify.sh runs on the device
    built = run_cli("build", _matmul(4, tmp_path / "m4.onnx"), "--precision", "fp16", "-o", tmp_path / "f")
    assert built.code == 0, built.stderr
    other = run_cli("bundle", reference, quantized, tmp_path / "f" / "m4.fp16.onnx", "-o", tmp_path / "b2")
    assert_clean_input_error(other, "fixed at different batches (m5.int8.onnx at 5, m4.fp16.onnx at 4)")
    assert not (tmp_path / "b2").exists()


def _counted_header_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths calibration.modelinfo.load_model_header reads from now on (each read parses a model)."""
    import calibration.modelinfo as modelinfo

    reads: list[Path] = []
    header = modelinfo.load_model_header

    def counted(path: str | Path) -> onnx.ModelProto:
        reads.append(Path(path))
        return header(path)

    monkeypatch.setattr(modelinfo, "load_model_header", counted)
    return reads


def test_compare_reads_each_models_inputs_and_outputs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compare parsed the reference (a whole model, weights included) for each of its checks: seven
    reads of its inputs and outputs per compare of an ONNX candidate, three of the candidate's. It
    reads each once and passes them down."""
    import calibration.modelinfo as modelinfo
    from calibration.sources import open_source
    from edgedeploy.stages.compare import compare

    reference, fixed = _matmul("N", tmp_path / "m.onnx"), _matmul(5, tmp_path / "m5.onnx")
    source = open_source("random", modelinfo.model_io(reference)[0], samples=12, batch_size=4)
    reads = _counted_header_reads(monkeypatch)
    result = compare(reference, fixed, source, Gates(), source.describe())
    assert (result.iterations, result.data["samples_compared"]) == (2, 10)  # re-stacked at 5
    assert (reads.count(reference), reads.count(fixed)) == (1, 1), reads


def test_the_compare_command_reads_each_models_inputs_and_outputs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command read the reference's inputs and outputs itself (twice), and the fixed-batch
    candidate's, before compare() read both again. It passes what it read down: one read each."""
    from edgedeploy.cli import main

    reference, fixed = _matmul("N", tmp_path / "m.onnx"), _matmul(5, tmp_path / "m5.onnx")
    reads = _counted_header_reads(monkeypatch)
    out = tmp_path / "c.json"
    with pytest.raises(SystemExit) as done:
        main(["compare", str(reference), str(fixed), "--samples", "12", "--json", str(out)])
    assert done.value.code == 0
    assert json.loads(out.read_text())["data"]["samples_compared"] == 10  # re-stacked at 5
    assert (reads.count(reference), reads.count(fixed)) == (1, 1), reads


def test_the_shape_recorded_is_the_outputs_over_every_batch_not_the_first_batchs() -> None:
    """compare's JSON `outputs.*.shape` was the first batch's, though its figures are over every
    batch: [8, 10] beside a short last batch of 4, [15, 1, 8210] for a text recognizer whose
    sequence ran 15, 20 and 25 long. A dim the batches differ in is now null, and `shapes` lists
    each shape the output came out in, in the order first seen."""
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal(shape).astype(np.float32) for shape in ((15, 1, 6), (20, 1, 6), (15, 1, 6))]
    m = output_metrics("y", ref, [r.copy() for r in ref], Gates())
    assert (m.shape, m.shapes) == ([None, 1, 6], [[15, 1, 6], [20, 1, 6]])
    short = [rng.standard_normal(shape).astype(np.float32) for shape in ((8, 10), (8, 10), (4, 10))]
    last = output_metrics("y", short, [s.copy() for s in short], Gates())
    assert (last.shape, last.shapes) == ([None, 10], [[8, 10], [4, 10]])
    same = output_metrics("y", short[:2], [s.copy() for s in short[:2]], Gates())
    assert (same.shape, same.shapes) == ([8, 10], [[8, 10]])
    other = output_metrics("y", short, [short[0], short[1], short[2][:3]], Gates())  # a 3rd batch of 3
    assert other.shape_mismatch is not None and (other.shape, other.shapes) == (
        [None, 10],
        [[8, 10], [4, 10]],
    )
    record = json.loads(dumps(m))
    assert (record["shape"], record["shapes"]) == ([None, 1, 6], [[15, 1, 6], [20, 1, 6]])


def test_one_batch_is_said_one_batch(tmp_path: Path) -> None:
    """compare of 4 samples in batches of 8 titled its table "(1 batches, ..." and --per-layer said
    "1 batches"; one batch is now "1 batch", more "N batches"."""
    model = _matmul("N", tmp_path / "m.onnx")
    one = run_cli("compare", model, model, "--samples", "4", "--per-layer")
    assert one.code == 0, one.stderr
    assert "1 batches" not in one.stdout and "(1 batch, data" in one.stdout and "1 batch, " in one.stdout
    two = run_cli("compare", model, model, "--samples", "16", "--per-layer")
    assert two.code == 0 and "(2 batches, data" in two.stdout and "tensors, 2 batches" in two.stdout


def test_the_json_records_the_sha256_of_both_files_compared(tmp_path: Path) -> None:
    """compare --json named the models by path only, so report could tell two models of one file
    name apart only by files it found where it ran; it now records each file's sha256."""
    import hashlib

    def model(path: Path, name: str) -> Path:
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
        return path

    ref, cand = model(tmp_path / "m.onnx", "ref"), model(tmp_path / "m.fp16.onnx", "candidate")
    result = run_cli("compare", ref, cand, "--json", tmp_path / "c.json")
    assert result.code == 0, result.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["reference_sha256"] == hashlib.sha256(ref.read_bytes()).hexdigest()
    assert data["candidate_sha256"] == hashlib.sha256(cand.read_bytes()).hexdigest()
    assert data["reference_sha256"] != data["candidate_sha256"]
    assert run_cli("compare", ref, cand, "--per-layer", "--json", tmp_path / "l.json").code == 0
    per_layer = json.loads((tmp_path / "l.json").read_text())["compare"]
    assert per_layer["candidate_sha256"] == data["candidate_sha256"]


def _scaled_model(weights: list[float]) -> onnx.ModelProto:
    """y = Relu(x * w): the reference and candidate of a per-layer comparison, by their weights."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    w = numpy_helper.from_array(np.array(weights, np.float32), "w")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["h"], name="mul"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_per_layer_counts_nan_inf_unlike_the_reference_and_writes_them_as_plain_compare_does() -> None:
    """--per-layer counted only a candidate NaN/Inf where fp32 is finite: a reference Inf beside a
    finite candidate value was no mismatch (plain compare fails it), and a tensor's NaN cosine was
    written as null in the JSON, which plain compare's JSON keeps for identical outputs."""
    from edgedeploy.results import to_jsonable
    from edgedeploy.stages.compare import compare_layers

    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5]], np.float32)
    reference, candidate = _scaled_model([np.inf, 1.0, 1.0, 1.0]), _scaled_model([1.0, 1.0, 1.0, 1.0])
    result = compare_layers(reference, candidate, [{"x": x}], Gates(), emulate=False)
    plain = output_metrics("y", [x * np.array([np.inf, 1, 1, 1], np.float32)], [x.copy()], Gates())
    layer = {e.tensor: e for e in result.layers}["y"]
    assert plain.nonfinite_mismatches == 2 and not plain.passed
    assert layer.nonfinite_mismatches == plain.nonfinite_mismatches and layer.exceeds
    assert layer.max_abs == plain.max_abs == np.inf and layer.nan_inf == plain.nan_count + plain.inf_count
    written = json.loads(json.dumps(to_jsonable(result)))
    row = next(r for r in written["layers"] if r["tensor"] == "y")
    assert (row["snr_db"], row["max_abs"], row["identical"]) == ("Infinity", "Infinity", False)
    again = _scaled_model([np.inf, 1.0, 1.0, 1.0])
    same = compare_layers(reference, again, [{"x": x}], Gates(), emulate=False)
    assert all(e.identical and not e.exceeds and e.nonfinite_mismatches == 0 for e in same.layers)


def test_per_layer_relative_error_of_an_all_zero_reference_is_the_output_tables_not_0() -> None:
    """A reference tensor of zeros beside a candidate that is not read rel_max 0 in --per-layer
    (`... if run.ref_absmax else 0.0`), where the output table's max rel read the error as huge.
    It now follows the table's rule (Polygraphy's: a zero reference raised by 2.22e-16)."""
    from edgedeploy.stages.compare import compare_layers

    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5]], np.float32)
    reference, candidate = _scaled_model([0.0] * 4), _scaled_model([1e-3] * 4)
    result = compare_layers(reference, candidate, [{"x": x}], Gates(), emulate=False)
    layer = {e.tensor: e for e in result.layers}["y"]
    table = output_metrics("y", [x * 0], [x * np.float32(1e-3)], Gates())
    assert layer.rel_max > 0 and layer.rel_max == pytest.approx(table.max_rel)
    same = compare_layers(reference, _scaled_model([0.0] * 4), [{"x": x}], Gates(), emulate=False)
    assert all(e.rel_max == 0 for e in same.layers)


def test_per_layer_check_allclose_holds_each_element_to_atol_plus_rtol_times_its_reference() -> None:
    """--per-layer --check-allclose held a tensor to atol + rtol * max|ref| (its largest value), where
    the output table holds each element to atol + rtol * |ref| (Polygraphy's rule): PP-OCR's direction
    classifier, fp16, --atol 1e-5, failed its softmax output in the table and read within tolerance in
    the per-layer list. Both views now apply the table's rule, element by element."""
    from edgedeploy.stages.compare import compare_layers

    x = np.array([[0.01, 1.0, 2.0, 1000.0], [0.02, 1.5, 2.5, 900.0]], np.float32)
    reference, candidate = _scaled_model([1.0] * 4), _scaled_model([1.5, 1.0, 1.0, 1.0])
    gates = Gates(atol=1e-3, rtol=1e-3, min_cosine=None, check_allclose=True)
    table = output_metrics("y", [x], [x * np.array([1.5, 1, 1, 1], np.float32)], gates)
    assert not table.allclose and not table.passed  # 0.01 off by 0.005 > 1e-3 + 1e-3 * 0.01
    result = compare_layers(reference, candidate, [{"x": x}], gates, emulate=False)
    layers = {e.tensor: e for e in result.layers}
    assert layers["y"].exceeds and layers["h"].exceeds
    assert layers["y"].why == [f"max abs error {table.max_abs:.3g} exceeds atol=0.001 + rtol=0.001*|ref|"]
    within = _scaled_model([1.0 + 1e-4, 1.0, 1.0, 1.0])  # 1e-6 off at 0.01: within the element's bound
    same = compare_layers(reference, within, [{"x": x}], gates, emulate=False)
    assert not any(e.exceeds for e in same.layers)


def test_snr_and_cosine_beside_a_nan_inf_mismatch_are_over_the_pairs_both_finite() -> None:
    """With a NaN/Inf unlike the reference's, the output table's SNR read -inf and the per-layer
    cosine NaN, though the README says the other figures are over the pairs both finite (the
    mismatch count and the failed gate say a NaN/Inf differs). Both are now over the finite pairs,
    in the table and per layer alike; per-layer lists the mismatched tensor first all the same."""
    from edgedeploy.stages.compare import compare_layers

    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 2.0, (2, 4)).astype(np.float32)
    weights = [1.0, np.nan, np.inf, 1.01]
    ref, cand = x * np.float32(1.0), x * np.array(weights, np.float32)
    m = output_metrics("y", [ref], [cand], Gates())
    both = np.isfinite(cand)
    r, c = ref[both].astype(np.float64), cand[both].astype(np.float64)
    snr = 10 * np.log10((r**2).sum() / ((r - c) ** 2).sum())
    cosine = r @ c / np.linalg.norm(r) / np.linalg.norm(c)
    assert m.nonfinite_mismatches == 4 and not m.passed and m.max_abs == np.inf
    assert m.snr_db == pytest.approx(snr) and m.cosine == pytest.approx(cosine)
    reference, candidate = _scaled_model([1.0] * 4), _scaled_model(weights)
    result = compare_layers(reference, candidate, [{"x": x}], Gates(), emulate=False)
    layer = {e.tensor: e for e in result.layers}["y"]
    assert layer.exceeds and layer.nonfinite_mismatches == 4 and layer.max_abs == np.inf
    assert layer.cosine == pytest.approx(cosine) and layer.snr_db == pytest.approx(snr)
    assert [e.tensor for e in result.largest(1)] == ["h"]  # mismatched first (graph order of those)
    exact = output_metrics("y", [ref], [np.where(both, ref, cand)], Gates())
    assert exact.snr_db == np.inf and exact.cosine == 1.0 and not exact.identical  # no finite error


def _mixed_model(ki: float = 3.0, kb: float = 1.0) -> onnx.ModelProto:
    """yf float, yi = int64(floor(x * ki)), yb = x * kb > 0.5: a float, an integer and a bool output
    (the tester's e_ref.onnx, smaller)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    outs = [
        helper.make_tensor_value_info("yf", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("yi", TensorProto.INT64, ["N", 4]),
        helper.make_tensor_value_info("yb", TensorProto.BOOL, ["N", 4]),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["yf"], name="mul"),
        helper.make_node("Mul", ["x", "ki"], ["t1"], name="mul_i"),
        helper.make_node("Floor", ["t1"], ["t1f"], name="floor"),
        helper.make_node("Cast", ["t1f"], ["yi"], name="cast", to=TensorProto.INT64),
        helper.make_node("Mul", ["x", "kb"], ["t2"], name="mul_b"),
        helper.make_node("Greater", ["t2", "half"], ["yb"], name="greater"),
    ]
    inits = [
        numpy_helper.from_array(np.ones(4, np.float32), "k"),
        numpy_helper.from_array(np.array([3.0, 3.0, 3.0, ki], np.float32), "ki"),
        numpy_helper.from_array(np.array([1.0, 1.0, 1.0, kb], np.float32), "kb"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    graph = helper.make_graph(nodes, "g", [x], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_per_layer_of_a_model_against_itself_has_no_tensor_only_in_the_candidate() -> None:
    """A model compared with itself read only_in_candidate 2, its int64 and bool outputs: the
    candidate's names held every graph output, the reference's float tensors only."""
    from edgedeploy.stages.compare import compare_layers

    x = np.random.default_rng(0).uniform(0.1, 2.0, (8, 4)).astype(np.float32)
    result = compare_layers(_mixed_model(), _mixed_model(), [{"x": x}], Gates(), emulate=False)
    assert (result.only_in_reference, result.only_in_candidate) == (0, 0)


def test_per_layer_compares_integer_and_bool_tensors_by_equal_share_as_the_output_table() -> None:
    """--per-layer left integer and bool tensors out without a word: the output gate failed yi and
    yb, and the per-layer list did not name them. They are compared by their share of equal
    elements, as the output table gates them, and a tensor no figure fits is listed as not compared."""
    from edgedeploy.stages.compare import compare_layers

    x = np.random.default_rng(0).uniform(0.1, 2.0, (8, 4)).astype(np.float32)
    reference, candidate = _mixed_model(), _mixed_model(ki=3.5, kb=0.3)
    result = compare_layers(reference, candidate, [{"x": x}], Gates(), emulate=False)
    layers = {e.tensor: e for e in result.layers}
    assert {"yi", "yb"} <= set(layers) and result.not_compared == []
    ref_out = {"yi": np.floor(x * 3).astype(np.int64), "yb": x > 0.5}
    cand_out = {"yi": np.floor(x * [3, 3, 3, 3.5]).astype(np.int64), "yb": x * [1, 1, 1, 0.3] > 0.5}
    for name in ("yi", "yb"):
        table = output_metrics(name, [ref_out[name]], [cand_out[name]], Gates())
        assert layers[name].equal_share == table.equal_share < 0.999 and layers[name].exceeds
        assert any("equal elements" in why for why in layers[name].why)
    assert layers["yf"].equal_share is None and not layers["yf"].exceeds


def _nonzero_model(shift: float) -> onnx.ModelProto:
    """nz = NonZero(x - shift): a tensor whose size depends on the data."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    nz = helper.make_tensor_value_info("nz", TensorProto.INT64, [1, None])
    nodes = [
        helper.make_node("Sub", ["x", "shift"], ["t"], name="sub"),
        helper.make_node("NonZero", ["t"], ["nz"], name="nonzero"),
    ]
    inits = [numpy_helper.from_array(np.array(shift, np.float32), "shift")]
    graph = helper.make_graph(nodes, "g", [x], [nz], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_per_layer_fails_a_tensor_of_another_shape_in_a_batch_as_the_output_table() -> None:
    """--per-layer skipped a batch whose two tensors differed in size (a data-dependent NonZero), and
    the row read identical and passing from the other batches, where the output table fails that
    output ("another shape than the reference's"). The row now fails with the table's reason."""
    from edgedeploy.stages.compare import compare_layers

    feeds = [{"x": np.array([5.0, 5.0, 5.0, 5.0], np.float32)}, {"x": np.array([0, 0, 0, 5], np.float32)}]
    reference, candidate = _nonzero_model(0.0), _nonzero_model(1.0)
    result = compare_layers(reference, candidate, feeds, Gates(), emulate=False)
    layer = {e.tensor: e for e in result.layers}["nz"]
    ref_out, cand_out = [np.array([[0, 1, 2, 3]]), np.array([[3]])], [np.array([[0, 1, 2, 3]])] * 2
    table = output_metrics("nz", ref_out, cand_out, Gates())
    assert not table.passed and table.shape_mismatch == "batch 1: shape [1, 4], reference [1, 1]"
    assert layer.exceeds and not layer.identical
    assert layer.why == [f"another shape than the reference's ({table.shape_mismatch})"]


def _chain_and_nonzero_model(k: list[float], shift: float) -> onnx.ModelProto:
    """a1 = x * k, a2 = a1 * k, a3 = a2 * k, t = x - shift (float tensors), then nz = NonZero(t) (its
    size depends on the data), in that graph order."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    outs = [
        helper.make_tensor_value_info("a3", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("nz", TensorProto.INT64, [2, None]),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a1"], name="mul1"),
        helper.make_node("Mul", ["a1", "k"], ["a2"], name="mul2"),
        helper.make_node("Mul", ["a2", "k"], ["a3"], name="mul3"),
        helper.make_node("Sub", ["x", "shift"], ["t"], name="sub"),
        helper.make_node("NonZero", ["t"], ["nz"], name="nonzero"),
    ]
    inits = [
        numpy_helper.from_array(np.array(k, np.float32), "k"),
        numpy_helper.from_array(np.array(shift, np.float32), "shift"),
    ]
    graph = helper.make_graph(nodes, "g", [x], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_per_layer_lists_a_tensor_of_another_shape_among_the_failures(tmp_path: Path) -> None:
    """A tensor that failed because its two sides differed in shape read cosine 1.0 (or its matched
    batches' figures), max abs 0, so "largest errors" ranked it last and never showed it: with more
    failures earlier in the graph than --layers-shown, no table named it, and its JSON row read as
    a perfect match. It now reads as the output table reads such an output (no figures: cosine
    NaN, max abs inf), ranks with the NaN/Inf mismatches among the largest, in graph order."""
    from edgedeploy.results import to_jsonable
    from edgedeploy.stages.compare import compare_layers

    x = np.array([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 5.0]], np.float32)
    feeds = [{"x": x[:1]}, {"x": x[1:]}]
    reference = _chain_and_nonzero_model([1.0, 1.0, 1.0, 1.0], 0.0)
    candidate = _chain_and_nonzero_model([1.0, 1.3, 1.0, 1.0], 1.0)
    result = compare_layers(reference, candidate, feeds, Gates(), emulate=False)
    assert [e.tensor for e in result.layers] == ["a1", "a2", "a3", "t", "nz"]  # graph order
    assert all(e.exceeds for e in result.layers)
    nz = result.layers[-1]
    table = output_metrics("nz", [np.zeros((2, 4)), np.zeros((2, 1))], [np.zeros((2, 4))] * 2, Gates())
    assert nz.shape_mismatch == table.shape_mismatch == "batch 1: shape [2, 4], reference [2, 1]"
    assert np.isnan(nz.cosine) and nz.max_abs == nz.rel_max == np.inf and nz.equal_share is None
    assert [e.tensor for e in result.largest(2)] == ["a3", "nz"]  # the worst two, in graph order
    assert [e.tensor for e in result.first_exceeding(2)] == ["a1", "a2"]
    row = json.loads(json.dumps(to_jsonable(result)))["layers"][-1]
    assert (row["tensor"], row["exceeds"], row["cosine"], row["max_abs"]) == ("nz", True, "NaN", "Infinity")
    assert row["shape_mismatch"] == table.shape_mismatch

    ref_path, cand_path, data = tmp_path / "ref.onnx", tmp_path / "cand.onnx", tmp_path / "x.npz"
    onnx.save(reference, ref_path)
    onnx.save(candidate, cand_path)
    np.savez(data, x=x)
    report = tmp_path / "c.json"
    cli = run_cli("compare", ref_path, cand_path, "--data", data, "--batch-size", "1", "--per-layer",
                  "--layers-shown", "2", "--json", report)  # fmt: skip
    assert cli.code == 1 and "Traceback" not in cli.stderr, cli.stderr
    largest = cli.stdout[cli.stdout.index("largest errors") :]
    cells = [line.split("│") for line in largest.splitlines() if line.count("│") > 3]
    assert [row[2].strip() for row in cells if row[2].strip()] == ["a3", "nz"]  # wrapped lines: no name
    assert "another" in largest and "shape" in largest
    written = json.loads(report.read_text())["per_layer"]["layers"]
    assert [r["tensor"] for r in written if r["exceeds"]] == ["a1", "a2", "a3", "t", "nz"]


def test_cosine_gate_fails_an_output_off_in_scale() -> None:
    """An output 100x the reference (or 0.5x) has cosine 1.0 and passed the default gate; the
    cosine gate now holds the norm ratio to the bound it holds the direction to,
    |norm(c)/norm(r) - 1| <= sqrt(1 - min_cosine**2), and the figure is in the result and its JSON."""
    from edgedeploy.results import to_jsonable

    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    for factor in (100.0, 0.5, 1.05):
        m = output_metrics("y", [ref], [ref * np.float32(factor)], Gates())
        assert m.cosine > 0.999999 and not m.passed, factor
        assert m.norm_ratio == pytest.approx(factor) and any("norm ratio" in f for f in m.failures)
        assert m.score < 0.999  # what the accuracy budgets read
    bound = np.sqrt(1 - 0.999**2)  # 0.0447
    near = output_metrics("y", [ref], [ref * np.float32(1 + 0.9 * bound)], Gates())
    assert near.passed and near.score >= 0.999
    assert output_metrics("y", [ref], [ref * np.float32(1 - 1.1 * bound)], Gates(min_cosine=0.999)).failures
    assert output_metrics("y", [ref], [ref * np.float32(100)], Gates(min_cosine=None)).passed
    same = output_metrics("y", [ref], [ref.copy()], Gates(min_cosine=1.0))
    assert same.norm_ratio == 1.0 and same.passed
    ids = np.arange(8, dtype=np.int64)
    assert output_metrics("ids", [ids], [ids * 100], Gates()).norm_ratio is None  # the equal share gates
    written = json.loads(json.dumps(to_jsonable(m)))
    assert written["norm_ratio"] == pytest.approx(1.05)
    from edgedeploy.stages.compare import CompareResult

    result = CompareResult("r", "c", {}, 1, Gates(), {"y": m}, False)
    assert result.summary()["outputs"]["y"]["norm_ratio"] == pytest.approx(1.05)  # bundles, report


def test_the_argmax_agreement_of_any_2d_output_is_labelled_as_what_it_is_not_top1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compare measures, for every 2-D float output, the share of rows whose arg-max agrees: a
    classifier's top-1 agreement, but a shape cannot tell class scores from an embedding (MiniLM's
    [B, 384] sentence vector), where "top-1" means nothing. compare's table and the report's
    (a headline figure beside the cosine) called it "top-1"; they now say what it is, "argmax agr."."""
    monkeypatch.setenv("COLUMNS", "250")  # rich's table at full width: one line per header
    embedding = _matmul("batch", tmp_path / "embed.onnx")  # x[batch, 16] @ W -> y[batch, 10]
    result = run_cli("compare", embedding, embedding, "--json", tmp_path / "c.json")
    assert result.code == 0, result.stderr
    assert "argmax agr." in result.stdout and "top-1" not in result.stdout, result.stdout
    report = run_cli("report", tmp_path / "c.json", "-o", tmp_path / "report")
    assert report.code == 0, report.stderr
    for page in ("report.md", "report.html"):
        text = (tmp_path / "report" / page).read_text()
        assert "argmax agr." in text and "top-1" not in text, page


def _logits_and_embedding(folder: Path) -> tuple[Path, Path]:
    """``ref.onnx`` and ``cand.onnx``: x[batch, 16] -> logits[batch, 10] and embedding[batch, 128];
    the candidate's embedding weights moved by 2 %: cosine 0.9998, its argmax (meaningless) changed
    on many rows, the logits identical."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 10)).astype(np.float32)
    w2 = rng.standard_normal((16, 128)).astype(np.float32)
    moved = (w2 + 0.02 * rng.standard_normal(w2.shape)).astype(np.float32)
    paths = []
    for name, emb in (("ref", w2), ("cand", moved)):
        graph = helper.make_graph(
            [
                helper.make_node("MatMul", ["x", "w1"], ["logits"]),
                helper.make_node("MatMul", ["x", "w2"], ["embedding"]),
            ],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
            [
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
                helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 128]),
            ],
            [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(emb, "w2")],
        )
        paths.append(folder / f"{name}.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), paths[-1])
    return paths[0], paths[1]


def test_min_top1_name_value_gates_the_named_outputs_only(tmp_path: Path) -> None:
    """--min-top1 gated every 2-D float output's argmax: an embedding's meaningless argmax failed
    a model whose logits agree everywhere. As Polygraphy's per-output --atol out0:1e-3, a bare value
    still gates every such output, NAME:VALUE the outputs named only; the JSON says which."""
    ref, cand = _logits_and_embedding(tmp_path)
    common = ["--data", "random:0", "--samples", "64", "--json"]
    every = run_cli("compare", ref, cand, "--min-top1", "0.99", *common, tmp_path / "every.json")
    assert every.code == 1 and "argmax agreement" in every.stderr + every.stdout, every.stderr
    named = run_cli("compare", ref, cand, "--min-top1", "logits:0.99", *common, tmp_path / "named.json")
    assert named.code == 0, named.stderr
    record = json.loads((tmp_path / "named.json").read_text())
    assert record["gates"]["min_top1"] == {"logits": 0.99}
    outputs = record["outputs"]
    assert outputs["logits"]["top1_gated"] == 0.99 and outputs["logits"]["top1_agreement"] == 1.0
    assert outputs["embedding"]["top1_gated"] is None and outputs["embedding"]["top1_agreement"] < 0.99
    assert json.loads((tmp_path / "every.json").read_text())["outputs"]["embedding"]["top1_gated"] == 0.99
    unknown = run_cli("compare", ref, cand, "--min-top1", "logit:0.99")
    assert_clean_input_error(unknown, "--min-top1", "no output named 'logit'", "logits, embedding")


def test_a_bare_min_top1_beside_pairs_gates_every_output_the_pairs_do_not_name(tmp_path: Path) -> None:
    """A bare --min-top1 value beside NAME:VALUE pairs was refused ("not both"), where Polygraphy
    reads ``--atol 1e-5 out0:1e-4`` as a default for every output and a value for out0
    (args_util.parse_arglist_to_dict; ``:VALUE`` is the default too). It is read so now, in the
    JSON as ``{"": default, NAME: value}``, and the device's gate reads that as the host's."""
    from edgedeploy.device.verify_outputs import top1_limit

    ref, cand = _logits_and_embedding(tmp_path)
    common = ["--data", "random:0", "--samples", "64", "--json"]
    low = run_cli("compare", ref, cand, "--min-top1", "0.99 embedding:0.01", *common, tmp_path / "low.json")
    assert low.code == 0, low.stderr
    record = json.loads((tmp_path / "low.json").read_text())
    assert record["gates"]["min_top1"] == {"": 0.99, "embedding": 0.01}
    assert record["outputs"]["logits"]["top1_gated"] == 0.99
    assert record["outputs"]["embedding"]["top1_gated"] == 0.01
    # the default gates the embedding, which the pair lowers for the logits only: it fails
    high = run_cli("compare", ref, cand, "--min-top1", "logits:0.5", "--min-top1", ":0.99", *common,
                   tmp_path / "high.json")  # fmt: skip
    assert high.code == 1, high.stderr
    outputs = json.loads((tmp_path / "high.json").read_text())["outputs"]
    assert outputs["logits"]["top1_gated"] == 0.5 and outputs["embedding"]["top1_gated"] == 0.99
    assert top1_limit({"": 0.99, "embedding": 0.01}, "logits") == 0.99
    assert top1_limit({"": 0.99, "embedding": 0.01}, "embedding") == 0.01
    twice = run_cli("compare", ref, cand, "--min-top1", "0.9", "--min-top1", "0.99")
    assert_clean_input_error(twice, "--min-top1", "given twice")
