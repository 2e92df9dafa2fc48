"""Per-layer comparison and the accuracy budget (fp16 and INT8), through Python and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedeploy.errors import GateFailed, InputError
from edgedeploy.options import BuildRequest, CalibrationRequest, Fp16Options
from edgedeploy.stages.build import make_precision
from edgedeploy.stages.compare import Gates
from edgedeploy.stages.compare.layers import compare_layers
from edgedeploy.stages.precision.budget import AccuracyBudget, Criterion
from edgedeploy.targets import load_target
from tests.conftest import assert_clean_input_error, run_cli
from tests.precision import models
from tests.precision.conftest import AudioModel, OutlierCnn


def _naive_fp16(path: Path, dest: Path) -> Path:
    from onnxruntime.transformers import float16

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        onnx.save(float16.convert_float_to_float16(onnx.load(path), keep_io_types=True), dest)
    return dest


def _accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": x})[0].argmax(1) == y).mean())


def test_budget_parses_the_four_metrics_and_refuses_bad_specs() -> None:
    budget = AccuracyBudget.parse("cosine>=0.999, top1>=0.99,max_abs<=0.01,snr>=30")
    assert budget.criteria == (
        Criterion("cosine", ">=", 0.999),
        Criterion("top1", ">=", 0.99),
        Criterion("max_abs", "<=", 0.01),
        Criterion("snr", ">=", 30.0),
    )
    assert budget.met({"cosine": 0.9995, "top1": 1.0, "max_abs": 0.001, "snr": 40.0})
    assert not budget.met({"cosine": 0.9995, "top1": 1.0, "max_abs": 0.02, "snr": 40.0})
    for bad, why in (
        ("cosine>0.9", "cannot read"),
        ("psnr>=3", "unknown metric"),
        ("max_abs>=1", "bounded with"),
        ("", "empty"),
    ):
        with pytest.raises(InputError, match=why):
            AccuracyBudget.parse(bad)


def test_a_bound_outside_its_metrics_range_is_refused_with_the_end_it_lies_at() -> None:
    """max_abs<=0 and max_abs<=-1 were said to be "met by any model": a <= metric's best value is
    its bottom, where a >= metric's is its top."""
    for spec, words in (
        ("cosine>=1.5", "can never be met; a cosine bound lies in (-1, 1]"),
        ("cosine>=-1", "is met by any model; a cosine bound lies in (-1, 1]"),
        ("top1>=2", "can never be met; a top1 bound lies in (0, 1]"),
        ("top1>=0", "is met by any model; a top1 bound lies in (0, 1]"),
        ("max_abs<=-1", "can never be met; a max_abs bound lies in (0, inf)"),
        ("max_abs<=0", "asks for outputs identical to fp32's, which no fp16 or int8 model gives; "
         "a max_abs bound lies in (0, inf)"),
    ):  # fmt: skip
        with pytest.raises(InputError) as refused:
            AccuracyBudget.parse(spec)
        assert str(refused.value) == f"--accuracy-budget: {spec} {words}"
    for spec in ("cosine>=1", "top1>=1", "max_abs<=1e-30", "snr>=-20"):
        assert str(AccuracyBudget.parse(spec)) == spec


def test_per_layer_compare_points_at_the_first_overflowing_tensor_in_graph_order(
    audio_model: AudioModel, tmp_path: Path
) -> None:
    naive = _naive_fp16(audio_model.onnx_path, tmp_path / "naive.fp16.onnx")
    feeds = [models.audio_batch(8, s) for s in range(2)]
    result = compare_layers(audio_model.onnx_path, naive, feeds, Gates(min_cosine=0.999))
    assert result.mode.startswith("fp16")
    first = result.first_exceeding(3)
    assert first[0].op == "MatMul" and first[0].nan_inf > 0  # the frame projection, before any Add
    assert [e.order for e in first] == sorted(e.order for e in first)
    assert all(e.nan_inf for e in result.largest(3))


def test_per_layer_compare_of_int8_finds_the_crushed_conv(outlier_cnn: OutlierCnn, tmp_path: Path) -> None:
    request = BuildRequest(
        precision="int8",
        target=load_target("x86-64-cpu"),
        calibration=CalibrationRequest(data=str(outlier_cnn.calib), batch_size=32),
    )
    art = make_precision(outlier_cnn.onnx_path, request, tmp_path)
    result = compare_layers(
        outlier_cnn.onnx_path, art.path, [{"input": outlier_cnn.x_test[:64]}], Gates(min_cosine=0.99)
    )
    assert result.mode == "onnx"
    first = result.first_exceeding(1)[0]
    assert first.op == "Conv"
    worst = max(result.layers, key=lambda e: 1 - e.cosine)
    assert worst.cosine < 0.9


def test_int8_budget_keeps_the_sensitive_conv_and_accuracy_recovers(
    outlier_cnn: OutlierCnn, tmp_path: Path
) -> None:
    calib = CalibrationRequest(data=str(outlier_cnn.calib), batch_size=32)
    target = load_target("x86-64-cpu")
    plain = make_precision(
        outlier_cnn.onnx_path, BuildRequest("int8", target, calibration=calib), tmp_path / "a"
    )
    fp32_acc = _accuracy(outlier_cnn.onnx_path, outlier_cnn.x_test, outlier_cnn.y_test)
    before = _accuracy(plain.path, outlier_cnn.x_test, outlier_cnn.y_test)
    budgeted = make_precision(
        outlier_cnn.onnx_path,
        BuildRequest("int8", target, calibration=calib, accuracy_budget="top1>=0.98"),
        tmp_path / "b",
    )
    after = _accuracy(budgeted.path, outlier_cnn.x_test, outlier_cnn.y_test)
    info = budgeted.info["accuracy_budget"]
    assert before < fp32_acc - 0.3  # the outlier channel crushes the int8 model
    assert info["met"] and len(info["kept"]) == 1
    assert after >= fp32_acc - 0.02
    report = json.loads((tmp_path / "b" / "cnn.int8.budget.json").read_text())
    assert report["steps"][0]["kept"] == [] and not report["steps"][0]["met"]
    assert report["sensitivity"][0]["layer"] == info["kept"][0]


def test_fp16_budget_met_as_built_keeps_nothing_more(audio_model: AudioModel, tmp_path: Path) -> None:
    request = BuildRequest(
        "fp16",
        load_target("x86-64-cpu"),
        accuracy_budget="cosine>=0.999",
        calibration=CalibrationRequest(data=str(audio_model.data), batch_size=8),
    )
    art = make_precision(audio_model.onnx_path, request, tmp_path)
    assert art.info["accuracy_budget"]["met"] and art.info["accuracy_budget"]["kept"] == []


def test_int8_budget_ranks_a_layer_that_alone_quantizes_nothing(tmp_path: Path) -> None:
    """ONNX Runtime's placement quantizes a residual Add; ranked alone (both Convs in float) it
    quantizes nothing, which is the fp32 model, not an error. ddddocr's recognizer with
    `--accuracy-budget cosine>=0.999` on x86-64-cpu failed here with 'nothing to quantize' (exit 2);
    it now meets it with 3 of 29 layers kept."""
    path = models.save(models.residual_add_model(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((32, 16, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    request = BuildRequest(
        "int8",
        load_target("x86-64-cpu"),
        accuracy_budget="snr>=33",
        calibration=CalibrationRequest(data=str(tmp_path / "x.npz"), batch_size=8),
    )
    art = make_precision(path, request, tmp_path / "out")
    budget = art.info["accuracy_budget"]
    assert budget["met"] and budget["kept"] and "add" not in budget["kept"], budget
    steps = json.loads((tmp_path / "out" / "m.int8.budget.json").read_text())
    ranked = {item["layer"]: item for item in steps["sensitivity"]}
    assert set(ranked) == {"conv1", "add", "conv2"} and ranked["add"]["snr"] is None  # alone: the fp32 model


def test_fp16_budget_met_only_with_every_node_in_fp32_fails_the_gate(tmp_path: Path) -> None:
    """As for int8: a budget only the all-fp32 model meets gives no fp16 model. Before, the build
    succeeded with an "fp16" model of nothing but fp32 nodes (PP-OCRv4's recognizer with
    cosine>=0.99999: 860 of 860 nodes kept)."""
    path, data = models.save_beyond_fp32_fallback(tmp_path)  # fp32 graph inputs: all-fp32 is exact
    unnamed = onnx.load(path)  # unnamed nodes, as that recognizer's Constants: the search names them
    for node in unnamed.graph.node:
        node.name = ""
    onnx.save(unnamed, path)
    request = BuildRequest(
        "fp16",
        load_target("x86-64-cpu"),
        accuracy_budget="snr>=200",
        calibration=CalibrationRequest(data=str(data), batch_size=8),
    )
    with pytest.raises(GateFailed, match="met only with every node left in fp32, so no fp16 model meets it"):
        make_precision(path, request, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "m.fp16.budget.json").read_text())
    assert report["met"] and report["steps"][-1]["measured"]["max_abs"] == 0.0


def test_fp16_budget_beyond_fp32_fallback_fails_the_gate_and_writes_its_steps(tmp_path: Path) -> None:
    path, data = models.save_beyond_fp32_fallback(tmp_path)
    request = BuildRequest(
        "fp16",
        load_target("x86-64-cpu"),
        accuracy_budget="snr>=200",
        fp16=Fp16Options(keep_io_types=False),
        calibration=CalibrationRequest(data=str(data), batch_size=8),
    )
    with pytest.raises(GateFailed, match="not met even with all"):
        make_precision(path, request, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "m.fp16.budget.json").read_text())
    assert not report["met"] and len(report["steps"]) >= 2


def test_cli_analyze_lists_risks_and_writes_json(audio_model: AudioModel, tmp_path: Path) -> None:
    result = run_cli(
        "analyze",
        audio_model.onnx_path,
        "--data",
        audio_model.data,
        "--top",
        "3",
        "--json",
        tmp_path / "r.json",
    )
    assert result.code == 0, result.stderr
    assert "tensors at risk" in result.stdout and "MatMul" in result.stdout
    assert "in fp32 by rule" in result.stdout  # values beyond 65504: no measurement releases those
    report = json.loads((tmp_path / "r.json").read_text())
    assert result.stdout.count("overflow:") == 3  # --top 3 rows; the JSON has them all
    assert len(report["tensors_at_risk"]) >= 3 and report["fp32_islands"]
    assert report["fp32_by_rule"] and set(report["fp32_by_rule"]) <= set(report["fp32_islands"])


def test_cli_compare_per_layer_and_bad_budget(audio_model: AudioModel, tmp_path: Path) -> None:
    naive = _naive_fp16(audio_model.onnx_path, tmp_path / "naive.fp16.onnx")
    result = run_cli(
        "compare",
        audio_model.onnx_path,
        naive,
        "--data",
        audio_model.data,
        "--per-layer",
        "--json",
        tmp_path / "c.json",
    )
    # compare runs the fp16 emulation (ONNX Runtime's CPU kernels would compute the naive model in fp32
    # and hide it): the gate fails, and the per-layer view shows where a GPU would overflow.
    assert result.code == 1, result.stderr
    assert "NaN" in result.stderr and "Traceback" not in result.stderr
    assert "first tensors over tolerance" in result.stdout
    layers = json.loads((tmp_path / "c.json").read_text())["per_layer"]["layers"]
    assert any(layer["nonfinite_mismatches"] and layer["max_abs"] == "Infinity" for layer in layers)
    bad = run_cli("build", audio_model.onnx_path, "-o", tmp_path / "o", "--accuracy-budget", "cosine=1")
    assert_clean_input_error(bad, "--accuracy-budget")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_top1_budget_on_a_model_without_class_scores_is_refused_before_any_work(
    tmp_path: Path, precision: str
) -> None:
    """Found only after the first measurement, it left the calibration (seg.int8.onnx,
    seg.calib.json) or the fp16 conversion (seg.fp16.onnx and its plan) in -o."""
    path, data = models.save_dense_map(tmp_path)
    budget = ["--accuracy-budget", "cosine>=0.99,top1>=0.99", "--calib-data", data]
    result = run_cli("build", path, "--precision", precision, *budget, "-o", tmp_path / "o")
    assert_clean_input_error(result, "top1 needs an output shaped (batch, classes)", "y[N,4,16,16]")
    assert not (tmp_path / "o").exists()


def _two_gemms(path: Path, names: tuple[str, str, str]) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W1"], ["h"], name=names[0], transB=1),
         helper.make_node("Relu", ["h"], ["r"], name=names[1]),
         helper.make_node("Gemm", ["r", "W2"], ["y"], name=names[2], transB=1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "W1"),
         numpy_helper.from_array(rng.standard_normal((10, 32)).astype(np.float32), "W2")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("names", [("", "", ""), ("fc[0]", "act(0)", "fc[1]")], ids=["unnamed", "regex-like"])
def test_int8_budget_really_leaves_the_kept_layer_unquantized(
    tmp_path: Path, names: tuple[str, str, str]
) -> None:
    model = _two_gemms(tmp_path / "mlp.onnx", names)
    request = BuildRequest(
        precision="int8", target=load_target("jetson-orin-nx"), accuracy_budget="cosine>=0.99993",
        calibration=CalibrationRequest(data="random:0", samples=64, batch_size=16),
    )  # fmt: skip
    artifact = make_precision(model, request, tmp_path / "out")
    budget = json.loads(next(p for p in artifact.files if p.name.endswith(".budget.json")).read_text())
    assert budget["met"] and len(budget["kept"]) == 1
    gemm_inputs = [n.input[0] for n in onnx.load(artifact.path).graph.node if n.op_type == "Gemm"]
    producers = {o: n.op_type for n in onnx.load(artifact.path).graph.node for o in n.output}
    dequantized = [producers.get(name) == "DequantizeLinear" for name in gemm_inputs]
    assert sorted(dequantized) == [False, True]  # exactly one Gemm is left in float


def test_int8_budget_keeps_one_variant_on_disk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgedeploy.stages.precision import mixed

    model = _two_gemms(tmp_path / "mlp.onnx", ("", "", ""))
    real, seen = mixed.make_int8, []

    def make_int8(model: Path, out: Path, **kwargs):  # type: ignore[no-untyped-def]
        if out.parent.name.startswith(".") and ".budget." in out.parent.name:  # a variant, in scratch
            seen.append(sorted(p.name for p in out.parent.iterdir()))
        return real(model, out, **kwargs)

    monkeypatch.setattr(mixed, "make_int8", make_int8)
    request = BuildRequest(
        precision="int8", target=load_target("jetson-orin-nx"), accuracy_budget="cosine>=0.99993",
        calibration=CalibrationRequest(data="random:0", samples=64, batch_size=16),
    )  # fmt: skip
    make_precision(model, request, tmp_path / "out")
    assert len(seen) >= 3  # as built, two ranking variants, the steps
    # the last variant gone; the report copied, with auto's GPTQ-rounded weights when it kept them
    rounded = (tmp_path / "out" / "mlp.calib.rounding.npz").is_file()
    copied = ["v.calib.json", "v.calib.rounding.npz"] if rounded else ["v.calib.json"]
    assert all(names == copied for names in seen)
    left = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and ".budget." in p.name]
    assert left == []


def test_int8_budget_met_only_by_full_fp32_fails_the_gate(tmp_path: Path) -> None:
    model = _two_gemms(tmp_path / "mlp.onnx", ("", "", ""))
    request = BuildRequest(
        precision="int8", target=load_target("jetson-orin-nx"), accuracy_budget="cosine>=0.9999999",
        calibration=CalibrationRequest(data="random:0", samples=64, batch_size=16),
    )  # fmt: skip
    with pytest.raises(GateFailed, match="every layer left in fp32"):
        make_precision(model, request, tmp_path / "out")


def test_nan_or_inf_in_any_output_fails_every_budget_criterion() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from edgedeploy.stages.precision.budget import OutputEvaluator

    def model(k: float) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Mul", ["x", "k"], ["b"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 10])],
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 10]),
             helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 10])],
            [numpy_helper.from_array(np.array([k], np.float32), "k")],
        )  # fmt: skip
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    feeds = [{"x": np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)}]
    measured = OutputEvaluator(model(2.0), feeds).measure(model(np.inf))
    for spec in ("cosine>=0.9", "snr>=10", "max_abs<=1e9"):
        assert not AccuracyBudget.parse(spec).met(measured), spec


def test_the_feeds_run_side_by_side_give_each_feed_its_own_outputs_as_one_thread_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnx import TensorProto, helper, numpy_helper

    import calibration.threads as threads_module
    from edgedeploy.stages.precision.budget import OutputEvaluator

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32) * (k + 1)} for k in range(7)]
    used: list[int] = []
    real = threads_module.map_ordered

    def spying(fn, items, count):  # type: ignore[no-untyped-def]
        used.append(count)
        return real(fn, items, count)

    monkeypatch.setattr(threads_module, "map_ordered", spying)
    one = OutputEvaluator(model, feeds, threads=1).run(model)
    three = OutputEvaluator(model, feeds, threads=3).run(model)
    assert used == [1, 1, 3, 3]  # each evaluator's reference run, then the run above
    assert len(three) == len(feeds)
    for a, b in zip(one, three, strict=True):  # in order, bit for bit
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(three[0][0], three[1][0])  # each feed's own outputs


def test_int8_budget_rerun_reuses_the_search_and_a_changed_budget_searches_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgedeploy.stages.precision import mixed

    model = _two_gemms(tmp_path / "mlp.onnx", ("", "", ""))
    calib = CalibrationRequest(data="random:0", samples=64, batch_size=16)
    target = load_target("jetson-orin-nx")

    def request(budget: str) -> BuildRequest:
        return BuildRequest("int8", target, calibration=calib, accuracy_budget=budget)

    first = make_precision(model, request("cosine>=0.99993"), tmp_path / "out")
    searched = first.path.read_bytes()
    searches = []
    real = mixed.int8_budget
    monkeypatch.setattr(mixed, "int8_budget", lambda *a, **k: searches.append(1) or real(*a, **k))
    again = make_precision(model, request("cosine>=0.99993"), tmp_path / "out")
    assert searches == [] and again.path.read_bytes() == searched  # the kept layer, rewritten, not searched
    assert again.info["accuracy_budget"]["kept"] == first.info["accuracy_budget"]["kept"]
    make_precision(model, request("cosine>=0.9999"), tmp_path / "out")
    assert searches == [1]  # another budget: another search
    forced = BuildRequest(
        "int8", target, calibration=calib, accuracy_budget="cosine>=0.9999", options={"force": True}
    )
    make_precision(model, forced, tmp_path / "out")
    assert searches == [1, 1]  # --force (a run's stage run again) reuses no search, as no calibration


def test_int8_budget_record_edited_since_written_or_without_its_digest_is_searched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search record edited since it was written (its kept layers emptied) was reused as it
    stood: demo's digits_cnn at snr>=45 was built with every layer quantized and reported the
    search's snr 45.42, which that artifact does not reach (38.69). Its content is now checked
    against the digest stored in it; an edited record, or one written before the digest, is
    searched again, and the record written then is reused."""
    from edgedeploy.stages.precision import mixed

    model = _two_gemms(tmp_path / "mlp.onnx", ("", "", ""))
    request = BuildRequest(
        "int8",
        load_target("jetson-orin-nx"),
        calibration=CalibrationRequest(data="random:0", samples=64, batch_size=16),
        accuracy_budget="cosine>=0.99993",
    )
    first = make_precision(model, request, tmp_path / "out")
    kept = first.info["accuracy_budget"]["kept"]
    assert kept
    sidecar = tmp_path / "out" / "mlp.int8.budget.json"
    record = json.loads(sidecar.read_text())
    budget = {**record["info"]["accuracy_budget"], "kept": []}
    edited = {**record, "kept": [], "info": {**record["info"], "accuracy_budget": budget}}
    older = {k: v for k, v in record.items() if k != "record_sha256"}
    searches = []
    real = mixed.int8_budget
    monkeypatch.setattr(mixed, "int8_budget", lambda *a, **k: searches.append(1) or real(*a, **k))
    for damaged in (edited, older):
        sidecar.write_text(json.dumps(damaged))
        again = make_precision(model, request, tmp_path / "out")
        assert again.info["accuracy_budget"]["kept"] == kept
        assert again.path.read_bytes() == first.path.read_bytes()
    assert searches == [1, 1]
    make_precision(model, request, tmp_path / "out")
    assert searches == [1, 1]  # the record the search wrote again is reused


def test_cli_build_that_misses_its_budget_exits_1_and_writes_its_json(tmp_path: Path) -> None:
    """A build whose budget no model met printed its figures and exited 1 without the --json
    that compare and bundle write on a failed gate."""
    path, data = models.save_beyond_fp32_fallback(tmp_path)
    args = ["build", path, "--precision", "fp16", "--no-keep-io-types", "--accuracy-budget", "snr>=200"]
    result = run_cli(*args, "--calib-data", data, "-o", tmp_path / "out", "--json", tmp_path / "b.json")
    assert result.code == 1, result.stderr
    record = json.loads((tmp_path / "b.json").read_text())
    assert not record["passed"] and "not met even with all" in record["error"]
    assert record["accuracy_budget"]["budget"] == "snr>=200" and not record["accuracy_budget"]["met"]


def _one_class_scores(folder: Path) -> tuple[Path, Path]:
    """A model whose output y is declared (batch, k), so a top1 budget passes the check before any
    work, and comes out (batch, 1) on the data: a top1 bound cannot be measured on it. Its data."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(1, 1, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Reshape", ["c", "flat"], ["y"])],
        "one_class",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "k"])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([0, -1], np.int64), "flat")],
    )
    path, data = folder / "one.onnx", folder / "one.npz"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    np.savez(data, x=np.random.default_rng(1).normal(size=(16, 1, 16)).astype(np.float32))
    return path, data


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_budget_its_search_cannot_measure_is_refused_naming_the_budget_as_given(
    tmp_path: Path, precision: str
) -> None:
    """A top1 bound on an output declared (batch, k) that comes out (batch, 1): the search's refusal
    was "--accuracy-budget top1 needs an output shaped (batch, classes)", the flag's name in a run
    config too and not the budget; it now names the budget as the user gave it, with its value."""
    from tests.conftest import run_in_process

    model, data = _one_class_scores(tmp_path)
    code, stdout, stderr = run_in_process(
        "build", model, "--precision", precision, "--target", "x86-64-cpu", "--accuracy-budget",
        "cosine>=0.9,top1>=0.9", "--calib-data", data, "-o", tmp_path / "o",
    )  # fmt: skip
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, (stdout, stderr)
    assert "--accuracy-budget cosine>=0.9,top1>=0.9 cannot be measured" in errors[0], errors
    assert "none of its outputs came out so" in errors[0], errors

    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        f'workdir = "w"\n[model]\nsource = "{model}"\nname = "one"\n'
        f'[build]\ntarget = "x86-64-cpu"\nprecisions = ["{precision}"]\naccuracy_budget = "top1>=y:0.9"\n'
        f'[calibration]\ndata = "{data}"\n[compare]\ndata = "{data}"\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
    )
    code, stdout, stderr = run_in_process("run", config)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, (stdout, stderr)
    assert "[build] accuracy_budget top1>=y:0.9 cannot be measured" in errors[0], errors
    assert "its output 'y' did not come out so" in errors[0] and "--accuracy-budget" not in errors[0], errors


def test_an_int8_budget_on_an_imported_cache_is_refused_naming_the_budget(tmp_path: Path) -> None:
    """An int8 build into a folder where calibrate --from-cache imported a TensorRT cache has no
    calibration report to search: refused in one line that did not name the budget that caused it."""
    from tests.conftest import run_in_process

    model, data = _one_class_scores(tmp_path)
    first = tmp_path / "first"
    orin = ["--target", "jetson-orin-nano"]
    code, _, stderr = run_in_process(
        "build", model, "--precision", "int8", *orin, "--calib-data", data, "-o", first
    )
    assert code == 0, stderr
    out = tmp_path / "o"
    code, _, stderr = run_in_process(
        "calibrate", model, "--from-cache", first / "one.calib.cache", *orin, "-o", out
    )
    assert code == 0, stderr
    code, stdout, stderr = run_in_process(
        "build", model, "--precision", "int8", *orin, "--accuracy-budget", "cosine>=0.9", "-o", out
    )
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, (stdout, stderr)
    assert "--accuracy-budget cosine>=0.9 cannot be searched on" in errors[0], errors
    assert "give --calib-data to calibrate instead, or build without the budget" in errors[0], errors


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_budget_its_search_refuses_leaves_nothing_in_the_output_folder(
    tmp_path: Path, precision: str
) -> None:
    """The search's refusal (a top1 bound on an output that does not come out (batch, classes)) came
    after the model, its plan or its calibration were written: exit 2 left the complete, unchecked
    one.int8.onnx (one.calib.json) or one.fp16.onnx (one.fp16.plan.json) in -o. Bad input leaves no
    output: a folder the build made is gone, one that was there holds what it held."""
    from tests.conftest import run_in_process

    model, data = _one_class_scores(tmp_path)
    made, kept = tmp_path / "made" / "o", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's\n")
    for out in (made, kept):
        before = sorted(p.name for p in kept.iterdir())
        code, stdout, stderr = run_in_process(
            "build", model, "--precision", precision, "--target", "x86-64-cpu", "--accuracy-budget",
            "top1>=0.9", "--calib-data", data, "-o", out,
        )  # fmt: skip
        assert code == 2 and "cannot be measured" in stderr and "Traceback" not in stderr, (stdout, stderr)
        if out == made:
            assert not (tmp_path / "made").exists(), sorted(p.name for p in made.rglob("*"))
        else:
            assert sorted(p.name for p in kept.iterdir()) == before == ["notes.txt"]
