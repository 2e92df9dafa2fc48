"""FP16 range analysis and automatic fp32 islands, on models whose naive fp16 conversion really fails."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration.modelinfo import model_io
from calibration.sources import open_source
from edgedeploy.errors import InputError
from edgedeploy.options import BuildRequest, CalibrationRequest, Fp16Options
from edgedeploy.stages.precision import PrecisionArtifact
from edgedeploy.stages.precision.analysis import analyze, load_for_analysis
from edgedeploy.stages.precision.emulate import emulate_fp16, fp32_nodes_of_converted
from edgedeploy.stages.precision.fp16 import ensure_node_names, make_fp16
from edgedeploy.stages.precision.islands import choose_fp32_nodes, plan_islands, release_measured
from edgedeploy.stages.precision.mixed import make_fp16_checked
from edgedeploy.targets import load_target
from tests.precision import models
from tests.precision.conftest import AudioModel


def _run(model: onnx.ModelProto | Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return np.asarray(
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _naive_fp16(path: Path) -> onnx.ModelProto:
    """ONNX Runtime's converter with no block list, as users run it."""
    from onnxruntime.transformers import float16

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(onnx.load(path), keep_io_types=True)


def _emulated(reference: Path, converted: onnx.ModelProto | Path) -> onnx.ModelProto:
    ref = onnx.load(reference)
    ensure_node_names(ref)
    cand = converted if isinstance(converted, onnx.ModelProto) else onnx.load(converted)
    return emulate_fp16(ref, fp32_nodes_of_converted(ref, cand), blocked_ops=())


def _audio_feed(seed: int = 99) -> dict[str, np.ndarray]:
    return models.audio_batch(16, seed)


def _request(data: str = "", budget: str | None = None) -> BuildRequest:
    return BuildRequest(
        precision="fp16",
        target=load_target("x86-64-cpu"),
        calibration=CalibrationRequest(data=data, batch_size=8),
        accuracy_budget=budget,
    )


def test_transformer_naive_fp16_overflows_and_edgedeploy_keeps_cosine(
    audio_model: AudioModel, tmp_path: Path
) -> None:
    feed = _audio_feed()
    ref = _run(audio_model.onnx_path, feed)
    naive = _run(_emulated(audio_model.onnx_path, _naive_fp16(audio_model.onnx_path)), feed)
    assert not np.all(np.isfinite(naive))  # Inf after the frame projection, NaN after the LayerNorm

    art = make_fp16_checked(
        audio_model.onnx_path, tmp_path / "audio.fp16.onnx", _request(str(audio_model.data))
    )
    emulated = _run(_emulated(audio_model.onnx_path, art.path), feed)
    assert _cosine(ref, emulated) >= 0.999
    assert _cosine(ref, _run(art.path, feed)) >= 0.999  # the real artifact on ONNX Runtime too
    plan = json.loads((tmp_path / "audio.fp16.plan.json").read_text())
    kept = {e["node"]: e for e in plan["nodes"] if e["precision"] == "fp32"}
    ops = [e["op"] for e in kept.values()]
    assert ops.count("LayerNormalization") == 3 and "Softmax" not in ops
    assert plan["nodes_fp32"] <= 10 < plan["nodes_total"] // 3  # most of the graph stays fp16
    assert all("65504" in e["reason"] for e in kept.values())
    ranges = json.loads((tmp_path / "audio.fp16.ranges.json").read_text())
    assert ranges["tensors_at_risk"][0]["overflow"] > 0


def test_a_failed_conversion_leaves_no_ranges_beside_no_model(
    audio_model: AudioModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The range analysis' report is written with the fp16 model it explains: a conversion that
    fails after the analysis leaves neither (and a later build that succeeds writes both)."""
    import edgedeploy.stages.precision.mixed as mixed

    def refused(*args: object, **kwargs: object) -> None:
        raise InputError("the fp16 model does not pass onnx.checker")

    dest, request = tmp_path / "audio.fp16.onnx", _request(str(audio_model.data))
    with monkeypatch.context() as patched:
        patched.setattr(mixed, "make_fp16", refused)
        with pytest.raises(InputError, match=r"onnx\.checker"):
            make_fp16_checked(audio_model.onnx_path, dest, request)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    art = make_fp16_checked(audio_model.onnx_path, dest, request)
    assert art.path.is_file() and (tmp_path / "audio.fp16.ranges.json").is_file()
    assert tmp_path / "audio.fp16.ranges.json" in art.files


@pytest.mark.parametrize("data", ["", "random:3"])
def test_a_skipped_analysis_converts_once_to_the_model_a_build_without_analysis_makes(
    reflect_padded_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: str
) -> None:
    """Random data the model refuses (reflect padding of a dim fed as 1) skips the range analysis:
    the build then converts once, as a build with the analysis off does, to the same model and
    plan, with no ranges report and no first batch of that data kept for the artifact check."""
    import edgedeploy.stages.precision.mixed as mixed
    from edgedeploy.ui import Ui

    conversions: list[Path] = []

    def counted(model: Path, dest: Path, *args: Any, **kwargs: Any) -> PrecisionArtifact:
        conversions.append(Path(dest))
        return make_fp16(model, dest, *args, **kwargs)

    monkeypatch.setattr(mixed, "make_fp16", counted)
    ui = Ui(quiet=True)
    skipped = make_fp16_checked(reflect_padded_onnx, tmp_path / "skip" / "r.fp16.onnx", _request(data), ui)
    assert any(m.startswith("warning: fp16 range analysis skipped: ") for m in ui.messages), ui.messages
    assert conversions == [skipped.path]
    assert sorted(p.name for p in skipped.path.parent.iterdir()) == ["r.fp16.onnx", "r.fp16.plan.json"]
    assert skipped.first_batch is None
    off = replace(_request(data), fp16_analysis=False)
    plain = make_fp16_checked(reflect_padded_onnx, tmp_path / "off" / "r.fp16.onnx", off, Ui(quiet=True))
    assert len(conversions) == 2
    assert skipped.path.read_bytes() == plain.path.read_bytes()
    assert skipped.files[1].read_bytes() == plain.files[1].read_bytes()  # the precision plan
    assert skipped.info == plain.info


@pytest.mark.parametrize("analysis", ["--fp16-analysis", "--no-fp16-analysis"])
@pytest.mark.parametrize("data", [[], ["--calib-data", "random:3"]])
def test_a_budget_on_random_data_the_model_cannot_run_is_refused_before_any_file(
    reflect_padded_onnx: Path, tmp_path: Path, data: list[str], analysis: str
) -> None:
    """--accuracy-budget on random data the model refuses (reflect padding of a dim fed as 1): the
    budget cannot be measured, so the build says so in one line naming --calib-data and exits 2
    with nothing written, instead of skipping the analysis and with it the budget, unsaid (or,
    without the analysis, failing in the budget's run after the fp16 model and plan were written)."""
    from tests.conftest import run_in_process

    out = tmp_path / "out"
    code, stdout, stderr = run_in_process(
        "build", reflect_padded_onnx, "--precision", "fp16", "--target", "x86-64-cpu",
        "--accuracy-budget", "cosine>=0.99", analysis, *data, "-o", out,
    )  # fmt: skip
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, (stdout, stderr)
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "--accuracy-budget cosine>=0.99" in errors[0] and "--calib-data" in errors[0], errors
    assert "Pad" in errors[0], errors  # what the model refused
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_a_budget_where_no_random_input_can_be_made_is_refused_before_any_file(tmp_path: Path) -> None:
    """A sequence input, which random data cannot be made for: the analysis is skipped with a
    warning, as before; with --accuracy-budget the build is refused (it built without the budget)."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.conftest import run_in_process

    graph = helper.make_graph(
        [helper.make_node("SequenceAt", ["x", "i"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
        "seq",
        [helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(1, np.int64), "i")],
    )
    model = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    out = tmp_path / "out"
    code, stdout, stderr = run_in_process(
        "build", model, "--precision", "fp16", "--target", "x86-64-cpu", "--accuracy-budget", "cosine>=0.99",
        "-o", out,
    )  # fmt: skip
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, (stdout, stderr)
    assert "--accuracy-budget cosine>=0.99" in errors[0] and "not a tensor" in errors[0], errors
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_a_run_config_budget_on_random_data_the_model_cannot_run_is_refused_naming_its_keys(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """``edgedeploy run`` with ``[build] accuracy_budget`` and no [calibration] data the model runs
    on: refused at the fp16 build in one line naming the config's keys, no fp16 model in the
    workdir (the fp16 build skipped the analysis and the budget, and the run failed later at compare
    with ONNX Runtime's error)."""
    from tests.conftest import run_in_process

    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        f'workdir = "out"\n[model]\nsource = "{reflect_padded_onnx}"\nname = "padded"\n'
        '[build]\nbackend = "onnxruntime"\nprecisions = ["fp16"]\naccuracy_budget = "cosine>=0.99"\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
    )
    code, stdout, stderr = run_in_process("run", config)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, (stdout, stderr)
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "[build] accuracy_budget cosine>=0.99" in errors[0] and "[calibration] data" in errors[0], errors
    assert not list((tmp_path / "out").glob("padded.fp16*")), sorted(
        p.name for p in (tmp_path / "out").iterdir()
    )


def test_a_budget_on_data_the_model_runs_on_is_applied(reflect_padded_onnx: Path, tmp_path: Path) -> None:
    """The same build with data the model runs on (16 samples a row) searches the budget and
    writes its steps: the refusal above is of the data, not of the model or the budget."""
    from tests.conftest import reflect_padded_data, run_in_process

    data = reflect_padded_data(tmp_path)
    out = tmp_path / "out"
    for analysis in ("--fp16-analysis", "--no-fp16-analysis"):
        code, stdout, stderr = run_in_process(
            "build", reflect_padded_onnx, "--precision", "fp16", "--target", "x86-64-cpu",
            "--accuracy-budget", "cosine>=0.99", analysis, "--calib-data", data, "--calib-batch-size", "2",
            "--force", "-o", out,
        )  # fmt: skip
        assert code == 0, (stdout, stderr)
        steps = json.loads((out / "reflect.fp16.budget.json").read_text())
        assert steps["met"] is True, steps


def test_a_budget_without_the_analysis_loads_and_runs_the_fp32_model_once(
    reflect_padded_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-fp16-analysis with --accuracy-budget: the budget's fp32 reference run is made before the
    conversion (so data the model refuses is refused before any file); the search then measures
    against that run's model and outputs, and does not load and prepare the model again."""
    import edgedeploy.stages.precision.budget as budget
    from edgedeploy.ui import Ui
    from tests.conftest import reflect_padded_data

    loads: list[Path] = []

    def counted(model_path: Path, *args: Any, **kwargs: Any) -> onnx.ModelProto:
        loads.append(Path(model_path))
        return load_for_analysis(model_path, *args, **kwargs)

    monkeypatch.setattr(budget, "load_for_analysis", counted)
    calib = CalibrationRequest(data=str(reflect_padded_data(tmp_path)), batch_size=2)
    request = replace(_request(""), calibration=calib, fp16_analysis=False, accuracy_budget="cosine>=0.99")
    built = make_fp16_checked(reflect_padded_onnx, tmp_path / "out" / "r.fp16.onnx", request, Ui(quiet=True))
    assert loads == [reflect_padded_onnx]
    assert json.loads(built.path.with_name("r.fp16.budget.json").read_text())["met"] is True


def test_analysis_reports_overflow_worst_first_with_the_producing_op(audio_model: AudioModel) -> None:
    inputs, _ = model_io(audio_model.onnx_path)
    report = analyze(audio_model.onnx_path, open_source(str(audio_model.data), inputs, batch_size=8))
    worst = report.tensors_at_risk()
    assert report.samples == 32
    assert worst[0].stats.overflow > 0 and worst[0].stats.absmax > 65504
    assert {t.op for t in worst if t.stats.overflow} == {"MatMul", "Add"}
    severities = [t.stats.overflow_share for t in worst]
    assert severities == sorted(severities, reverse=True)
    softmax = next(t for t in report.tensors if t.op == "Softmax")
    assert not softmax.risks and softmax.stats.absmax <= 1.0


def test_overflowing_weight_and_flushed_constant_are_reported_and_their_consumers_kept() -> None:
    model = models.big_weight_model()
    report = analyze(model, [{"x": np.ones((4, 4), np.float32)}])
    at_risk = {w.name: w for w in report.weights_at_risk()}
    assert at_risk["big"].stats.overflow == 1
    assert at_risk["tiny"].stats.flushed_share == 1.0 and at_risk["tiny"].where == "Constant tiny_const"
    keep = choose_fp32_nodes(model, report)
    assert {"scale_big", "unscale", "nudge", "tiny_const"} <= set(keep)
    assert "mm" not in keep


def test_a_weight_holding_minus_inf_is_reported_as_such_not_by_its_finite_values() -> None:
    """A -inf mask constant (magika's Maximum reads one) keeps its consumer in fp32, and the reason
    names the Inf instead of the largest finite |w| (0 here)."""
    from onnx import TensorProto, helper, numpy_helper

    floor = numpy_helper.from_array(np.array(-np.inf, np.float32), "floor")
    node = helper.make_node("Max", ["x", "floor"], ["y"], name="clamp")
    graph = helper.make_graph(
        [node],
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [floor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    report = analyze(model, [{"x": np.ones((4, 4), np.float32)}])
    reason = choose_fp32_nodes(model, report)["clamp"]
    assert "floor" in reason and "Inf/NaN" in reason and "up to 0" not in reason


def test_decomposed_layernorm_keeps_its_reductions_and_fixes_the_nan(tmp_path: Path) -> None:
    path = models.save(models.decomposed_layernorm_model(), tmp_path / "ln.onnx")
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    keep, _ = plan_islands(path, [{"x": x}])
    assert {"ln_mean", "ln_sub", "ln_pow", "ln_var"} <= set(keep)  # the statistics of the normalisation
    assert "head" not in keep and "proj" not in keep
    ref = _run(path, {"x": x})
    naive = _run(_emulated(path, _naive_fp16(path)), {"x": x})
    assert not np.any(naive)  # the variance overflows to Inf, so every normalised value becomes 0
    art = make_fp16(path, tmp_path / "ln.fp16.onnx", Fp16Options(auto_fp32_nodes=keep))
    assert _cosine(ref, _run(_emulated(path, art.path), {"x": x})) >= 0.999


def test_l2_normalisation_sums_of_squares_stay_fp32(tmp_path: Path) -> None:
    path = models.save(models.l2norm_model(), tmp_path / "l2.onnx")
    keep, report = plan_islands(
        path, [{"x": np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)}]
    )
    assert "l2" in keep and "sums squares" in keep["l2"]
    assert report.tensor("norm") is not None and report.tensor("norm").stats.absmax < 65504  # type: ignore[union-attr]


@pytest.mark.parametrize("value, sums", [(100.0, "8e+04"), (300.0, "7.2e+05")])
def test_lp_normalization_is_kept_on_the_sum_of_its_squares_as_reduce_l2_is(
    tmp_path: Path, value: float, sums: str
) -> None:
    """Eight values of 100 per row: each square (1e4) fits fp16, their sum (8e4) does not. The norm's
    sum was bounded by the largest single square, so LpNormalization stayed fp16 (numpy's fp16 sum
    is inf) while ReduceL2 on the same x was kept, and the reason at 300 said 9e+04 for 7.2e+05."""
    path = models.save(models.lp_normalization_model(), tmp_path / "lp.onnx")
    keep, _ = plan_islands(path, [{"x": np.full((2, 8), value, np.float32)}])
    assert "l2" in keep and "lpn" in keep, keep
    assert f"sums squares up to {sums} " in keep["lpn"], keep["lpn"]
    small, _ = plan_islands(path, [{"x": np.full((2, 8), 40.0, np.float32)}])  # 8 * 1600: fits
    assert "lpn" not in small and "l2" not in small, small


def test_lp_normalization_of_a_transposed_input_is_kept_on_its_sums(tmp_path: Path) -> None:
    """The analysis does not fetch a Transpose's output (a copy of its input's values, counted as
    its input), but an LpNormalization's sums run along its own input's axis: that input is fetched
    all the same, and the norm is kept as it is on a plain input."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0]),
        helper.make_node("LpNormalization", ["xt"], ["unit"], name="lpn", axis=-1, p=2),
    ]
    model = models._model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, "n"])],
        [helper.make_tensor_value_info("unit", TensorProto.FLOAT, ["n", 8])],
        [],
        opset=13,
    )
    path = models.save(model, tmp_path / "lpt.onnx")
    keep, _ = plan_islands(path, [{"x": np.full((8, 2), 100.0, np.float32)}])
    assert "lpn" in keep and "sums squares up to 8e+04 " in keep["lpn"], keep


def test_lp_normalization_p1_is_kept_on_the_sum_of_its_magnitudes(tmp_path: Path) -> None:
    path = models.save(models.lp_normalization_model(p=1), tmp_path / "lp1.onnx")
    x = np.full((2, 8), 3000.0, np.float32)  # sum of |x| 24000 > 16384, each |x| far below
    keep, _ = plan_islands(path, [{"x": x}])
    assert "lpn" in keep and "2.4e+04" in keep["lpn"], keep


@pytest.mark.parametrize("op, p, sums", [("GlobalLpPool", 2, "squares up to 8e+04"),
                                         ("LpPool", 2, "squares up to 8e+04"),
                                         ("GlobalLpPool", 3, "|x|**3 up to 2.16e+05")])  # fmt: skip
def test_lp_pools_are_kept_on_the_sum_their_window_accumulates(
    tmp_path: Path, op: str, p: int, sums: str
) -> None:
    """Eight values per window whose |x|**p each fit fp16 and whose sum does not (100**2 = 1e4, summed
    8e4): float16 accumulates that sum to Inf where float32 gives 282.8, but LpPool and GlobalLpPool
    were not among the squaring reductions (LpNormalization and ReduceL2 were) and stayed fp16. They
    are kept on the sum, which is their output to the power p, and the artifact gives fp32's values
    (ONNX Runtime's CPU kernel computes them in float32 either way: numpy shows the overflow)."""
    from edgedeploy.ui import Ui

    value = 100.0 if p == 2 else 30.0
    x = np.full((2, 2, 2, 4), value, np.float32)
    half = x.astype(np.float16)
    with np.errstate(over="ignore"):  # fp16 overflows
        assert np.isinf(np.sum(np.abs(half) ** p, axis=(2, 3), dtype=np.float16)).all()
    path = models.save(models.lp_pool_model(op, p), tmp_path / "pool.onnx")
    keep, _ = plan_islands(path, [{"x": x}])
    assert "pool" in keep and f"{op} sums {sums} " in keep["pool"], keep
    small, _ = plan_islands(path, [{"x": np.full((2, 2, 2, 4), 40.0 if p == 2 else 10.0, np.float32)}])
    assert "pool" not in small, small  # 8 * 1600 and 8 * 1000 fit
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    art = make_fp16_checked(path, tmp_path / "pool.fp16.onnx", _request(str(data)), Ui(quiet=True))
    nodes = {e["node"]: e for e in json.loads((tmp_path / "pool.fp16.plan.json").read_text())["nodes"]}
    assert nodes["pool"]["precision"] == "fp32", nodes
    np.testing.assert_allclose(_run(art.path, {"x": x}), _run(path, {"x": x}), rtol=1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_of_large_logits_is_kept_in_fp32_where_fp16_changes_it(tmp_path: Path, op: str) -> None:
    """ONNX's test_softmax_large_number: fp16 stores 10000..10003 as 10000, 10000, 10000, 10000
    (its step there is 8), so the second row's softmax came out uniform (cosine 0.872 on the build's
    own data) while nothing was kept in fp32: 10003 is far below 65504."""
    path = models.save(models.softmax_model(op), tmp_path / "sm.onnx")
    x = np.array([[0, 1, 2, 3], [10000, 10001, 10002, 10003]], np.float32)
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    art = make_fp16_checked(path, tmp_path / "sm.fp16.onnx", _request(str(data)))
    nodes = {e["node"]: e for e in json.loads((tmp_path / "sm.fp16.plan.json").read_text())["nodes"]}
    assert nodes["softmax"]["precision"] == "fp32" and "1e+04" in nodes["softmax"]["reason"], nodes
    assert _cosine(_run(path, {"x": x}), _run(_emulated(path, art.path), {"x": x})) >= 0.9999


def test_softmax_rule_names_fp16s_last_step_or_inf_for_logits_near_65504() -> None:
    """x -> MatMul (qk) -> Mul (scale) -> Softmax, logits reaching 65510 or 80000: rule 6's reason for
    the MatMul computing them said "where fp16 steps by inf", with numpy's overflow warning (np.spacing
    of float16 65504). fp16's step there is 32 (65504 - 65472), and from 65520 on the value becomes Inf
    in fp16. (Rule 2 gives the scale and the Softmax its own reason first: they carry the overflow.)"""
    from onnx import TensorProto, helper

    expected = {65510.0: "where fp16 steps by 32: ", 80000.0: "which fp16 cannot hold (it becomes Inf): "}
    for top, words in expected.items():
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["qk"], name="qk"),
            helper.make_node("Mul", ["qk", "s"], ["z"], name="scale"),
            helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
        ]
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
            [
                onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"),
                onnx.numpy_helper.from_array(np.array(top / 4, np.float32), "s"),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            keep, _ = plan_islands(model, [{"x": np.array([[0, 1, 2, 4]], np.float32)}])
        assert keep["qk"] == (
            f"computes the logits of Softmax 'softmax' ('z' reaches {top:.4g}, {words}"
            "Softmax's exp(x - max) changes with it)"
        ), keep


def test_softmax_of_large_values_goes_back_to_fp16_when_fp16_does_not_change_it(tmp_path: Path) -> None:
    """A masked logit of -10000 is large but its exp is 0 in either precision: the candidate is
    measured and released, not kept by its magnitude alone."""
    path = models.save(models.softmax_model(), tmp_path / "sm.onnx")
    x = np.array([[0, 1, 2, -10000], [0.5, 0.25, -10000, -10000]], np.float32)
    assert "softmax" in plan_islands(path, [{"x": x}])[0]  # proposed by its magnitude
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    make_fp16_checked(path, tmp_path / "sm.fp16.onnx", _request(str(data)))
    nodes = {e["node"]: e for e in json.loads((tmp_path / "sm.fp16.plan.json").read_text())["nodes"]}
    assert nodes["softmax"]["precision"] == "fp16", nodes


def test_softmax_logits_reaching_it_through_a_scale_and_a_mask_keep_their_chain_in_fp32(
    tmp_path: Path,
) -> None:
    """MatMul -> Mul(1/16) -> Add(mask) -> Softmax, logits near 950 a few tenths apart: rule 6
    proposed the Softmax and the Add only, but the MatMul's and the Mul's fp16 outputs (steps of
    8 and 0.5) had already rounded the logits; keeping those two proposed did nothing, the release
    sent everything back to fp16 and the artifact failed compare on its own data (cosine 0.9933,
    as numpy's float16 storage gives it; all four nodes fp32: 1.0). The chain is followed back to
    the MatMul that computes the logits."""
    from edgedeploy.stages.compare import Gates, compare

    path = models.save(models.scaled_softmax_model(), tmp_path / "att.onnx")
    x = (1900 + np.random.default_rng(1).standard_normal((64, 16))).astype(np.float32)
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    art = make_fp16_checked(path, tmp_path / "att.fp16.onnx", _request(str(data)))
    nodes = {e["node"]: e for e in json.loads((tmp_path / "att.fp16.plan.json").read_text())["nodes"]}
    assert all(nodes[n]["precision"] == "fp32" for n in ("qk", "scale", "mask", "softmax")), nodes
    assert "'softmax'" in nodes["qk"]["reason"], nodes["qk"]
    feeds = [{"x": x[i : i + 8]} for i in range(0, 64, 8)]
    result = compare(path, art.path, feeds, Gates(min_cosine=0.999))
    assert result.passed and result.outputs["y"].cosine >= 0.9999, result.outputs["y"]
    assert _cosine(_run(path, {"x": x}), _run(art.path, {"x": x})) >= 0.9999
    # the rounding in numpy: float16 storage of every output, or of the MatMul's and the Mul's only
    w, _, mask = (onnx.numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer)

    def half(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float16).astype(np.float32)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    want = softmax((x @ w) / 16 + mask)
    scaled = half(half(half(x) @ half(w)) / 16)
    assert _cosine(want, softmax(half(scaled + mask))) < 0.995  # all in fp16
    assert _cosine(want, softmax(scaled + mask)) < 0.995  # the Add and the Softmax in fp32


def test_a_node_reading_one_tensor_twice_is_tried_back_in_fp16(tmp_path: Path) -> None:
    """Mul(h, h) and h's producer flagged as normalisation statistics are switchable in the release's
    emulation: the square reads h through one Where, not one per input (two nodes of one name, which
    ONNX Runtime refused)."""
    path = models.save(models.squared_l2norm_model(), tmp_path / "sq.onnx")
    feeds = [{"x": np.random.default_rng(1).standard_normal((16, 512)).astype(np.float32)}]
    keep, report = plan_islands(path, feeds)
    assert {"scale", "square", "sum_sq"} <= set(keep)  # the chain back from the sum: h's producer too
    kept, notes = release_measured(load_for_analysis(path), keep, report, feeds)
    assert "sum_sq" in kept and "square" not in kept  # each square fits fp16, their sum does not
    assert any(n.startswith("square: back to fp16") for n in notes)


def test_if_subgraph_stays_fp32_and_runs_with_casts_for_its_captures(tmp_path: Path) -> None:
    path = models.save(models.if_model(), tmp_path / "if.onnx")
    x = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    keep, report = plan_islands(path, [{"x": x}])
    assert "branch" in keep and report.notes
    art = make_fp16(path, tmp_path / "if.fp16.onnx", Fp16Options(auto_fp32_nodes=keep))
    np.testing.assert_allclose(_run(art.path, {"x": x}), _run(path, {"x": x}), rtol=1e-2, atol=1e-2)
    plan = json.loads((tmp_path / "if.fp16.plan.json").read_text())
    inner = {e["node"]: e for e in plan["nodes"]}["then_sq"]
    assert inner["precision"] == "fp32" and "inside fp32 If" in inner["reason"]


def test_the_analysis_line_counts_the_nodes_a_kept_if_keeps_in_its_branches(tmp_path: Path) -> None:
    """The If kept in fp32 keeps its 4 branch nodes too (the other kept node: the weight at risk):
    the build's line says so, as the plan does."""
    from edgedeploy.ui import Ui

    path = models.save(models.if_model(), tmp_path / "if.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32))
    ui = Ui(quiet=True)
    make_fp16_checked(path, tmp_path / "if.fp16.onnx", _request(str(data)), ui)
    line = next(m for m in ui.messages if m.startswith("fp16 range analysis"))
    plan = json.loads((tmp_path / "if.fp16.plan.json").read_text())
    inside = [e for e in plan["nodes"] if "inside fp32 If" in e.get("reason", "")]
    assert len(inside) == 4 and "2 node(s) kept in fp32 and the 4 inside their subgraphs" in line, line


_BODY_CASES = {
    "loop": (
        models.loop_model,
        Fp16Options(fp32_ops=["Add"]),
        "body_add",
        {"x": np.ones((2, 4), np.float32)},
    ),
    "scan": (
        models.scan_model,
        Fp16Options(fp32_ops=["Add"]),
        "body_add",
        {"init": np.zeros(4, np.float32), "x": np.arange(12, dtype=np.float32).reshape(3, 4)},
    ),
    "branch": (
        models.if_model,
        Fp16Options(fp32_nodes=["then_mul"]),
        "then_mul",
        {"x": np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)},
    ),
}


@pytest.mark.parametrize("owner", list(_BODY_CASES))
def test_an_fp32_node_inside_a_loop_scan_or_if_body_keeps_the_whole_node_in_fp32(
    owner: str, tmp_path: Path
) -> None:
    """--fp32-ops / --fp32-nodes reaching into a body: the converter put the body node's Casts in
    the main graph, and the build was refused ("fails onnx.checker ... topologically sorted", with
    the hint to do what the user did). The control-flow node stays fp32 with its bodies, and the
    build and the plan say why."""
    from edgedeploy.ui import Ui

    build, options, inner, feed = _BODY_CASES[owner]
    path = models.save(build(), tmp_path / f"{owner}.onnx")
    request = replace(_request(), fp16=options, fp16_analysis=False)
    ui = Ui(quiet=True)
    art = make_fp16_checked(path, tmp_path / f"{owner}.fp16.onnx", request, ui)
    for got, want in zip(_all_outputs(art.path, feed), _all_outputs(path, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)
    plan = {e["node"]: e for e in json.loads((tmp_path / f"{owner}.fp16.plan.json").read_text())["nodes"]}
    assert plan[owner]["precision"] == plan[inner]["precision"] == "fp32", plan
    assert f"'{inner}'" in plan[owner]["reason"], plan[owner]
    said = [m for m in ui.messages if f"'{owner}' kept in fp32" in m]
    assert said and f"'{inner}'" in said[0], ui.messages


def test_a_body_op_blocked_on_integers_only_leaves_its_loop_in_fp16(tmp_path: Path) -> None:
    """The converter blocks Max by default; an int64 Max in a Loop body gets no Casts and does not
    keep the Loop in fp32."""
    path = models.save(models.loop_model(), tmp_path / "loop.onnx")
    make_fp16(path, tmp_path / "loop.fp16.onnx")
    plan = {e["node"]: e for e in json.loads((tmp_path / "loop.fp16.plan.json").read_text())["nodes"]}
    assert plan["loop"]["precision"] == plan["body_add"]["precision"] == "fp16", plan


def _all_outputs(model: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feed)]


def test_integer_and_bool_nodes_are_marked_integer_in_the_plan_not_fp16(tmp_path: Path) -> None:
    """An Add of uint8 and an Equal of int32 (bool out) hold no float tensor: the plan listed them as
    'fp16' and the build said "0 of 2 node(s) kept in fp32" as if they ran in fp16. They are
    'integer' now (as float64 nodes are 'float64'), counted apart, and the TensorRT path, which pins
    the plan's fp32 nodes, still reads the plan."""
    from onnx import TensorProto, helper

    from edgedeploy.backends.trt_plan import read_fp32_layers
    from edgedeploy.ui import Ui

    u8, i32, f32, b = TensorProto.UINT8, TensorProto.INT32, TensorProto.FLOAT, TensorProto.BOOL
    types = [u8, u8, i32, i32, f32]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["s"], name="add_u8"),
            helper.make_node("Equal", ["i", "j"], ["eq"], name="equal_i32"),
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info(n, t, [3]) for n, t in zip("abijx", types, strict=True)],
        [helper.make_tensor_value_info(n, t, [3]) for n, t in (("s", u8), ("eq", b), ("r", f32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = models.save(model, tmp_path / "i.onnx")
    ui = Ui(quiet=True)
    art = make_fp16_checked(path, tmp_path / "i.fp16.onnx", replace(_request(), fp16_analysis=False), ui)
    plan = json.loads((tmp_path / "i.fp16.plan.json").read_text())
    assert {e["node"]: e["precision"] for e in plan["nodes"]} == {
        "add_u8": "integer", "equal_i32": "integer", "relu": "fp16"
    }, plan  # fmt: skip
    assert plan["nodes_integer"] == art.info["nodes_integer"] == 2 and plan["nodes_fp32"] == 0
    line = next(m for m in ui.messages if m.startswith("fp16 model:"))
    assert "0 of 3 node(s) kept in fp32, 2 integer-only" in line, line
    assert read_fp32_layers(tmp_path / "i.fp16.plan.json") == []


def _body_types_model() -> onnx.ModelProto:
    """A Loop whose body holds a bool Identity, an int64 Add and a float64 Mul beside its float Add,
    and an If on int64 only (both branches integer)."""
    from onnx import TensorProto, helper

    f32, f64, i64, b = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("Add", ["y_in", "x"], ["y_out"], name="body_add"),
            helper.make_node("Add", ["c_in", "step"], ["c_out"], name="body_count"),
            helper.make_node("Mul", ["d", "d"], ["dd"], name="body_f64"),
        ],
        "loop_body",
        [helper.make_tensor_value_info("step", i64, []), helper.make_tensor_value_info("cond_in", b, []),
         helper.make_tensor_value_info("y_in", f32, None), helper.make_tensor_value_info("c_in", i64, [])],
        [helper.make_tensor_value_info("cond_out", b, []), helper.make_tensor_value_info("y_out", f32, None),
         helper.make_tensor_value_info("c_out", i64, []), helper.make_tensor_value_info("dd", f64, [2])],
    )  # fmt: skip
    then_g = helper.make_graph(
        [helper.make_node("Add", ["k", "k"], ["then_out"], name="then_add")],
        "then", [], [helper.make_tensor_value_info("then_out", i64, [2])],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["k"], ["else_out"], name="else_neg")],
        "else", [], [helper.make_tensor_value_info("else_out", i64, [2])],
    )  # fmt: skip
    nodes = [
        helper.make_node("Loop", ["trips", "go", "y0", "c0"], ["y", "c", "ds"], name="loop", body=body),
        helper.make_node("If", ["flag"], ["z"], name="pick", then_branch=then_g, else_branch=else_g),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array(3, np.int64), "trips"),
        onnx.numpy_helper.from_array(np.array(True), "go"),
        onnx.numpy_helper.from_array(np.zeros(4, np.float32), "y0"),
        onnx.numpy_helper.from_array(np.array(0, np.int64), "c0"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f32, [4]), helper.make_tensor_value_info("d", f64, [2]),
         helper.make_tensor_value_info("k", i64, [2]), helper.make_tensor_value_info("flag", b, [])],
        [helper.make_tensor_value_info("y", f32, [4]), helper.make_tensor_value_info("c", i64, []),
         helper.make_tensor_value_info("ds", f64, [3, 2]), helper.make_tensor_value_info("z", i64, [2])],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_integer_and_float64_nodes_inside_loop_and_if_bodies_are_marked_as_such(tmp_path: Path) -> None:
    """The plan marked integer-only and float64 nodes of the main graph only: a Loop body's bool
    Identity, int64 Add and float64 Mul, and an int64 If with its branches, were listed as 'fp16'
    though the converter leaves them as they are (the artifact computes them exactly as fp32 does).
    They are 'integer' / 'float64' now, and counted; the Loop itself and its float Add are fp16."""
    from edgedeploy.ui import Ui

    path = models.save(_body_types_model(), tmp_path / "body.onnx")
    ui = Ui(quiet=True)
    art = make_fp16_checked(path, tmp_path / "body.fp16.onnx", replace(_request(), fp16_analysis=False), ui)
    plan = json.loads((tmp_path / "body.fp16.plan.json").read_text())
    got = {e["node"]: e["precision"] for e in plan["nodes"]}
    assert got == {
        "loop": "fp16", "body_cond": "integer", "body_add": "fp16", "body_count": "integer",
        "body_f64": "float64", "pick": "integer", "then_add": "integer", "else_neg": "integer",
    }, plan  # fmt: skip
    assert plan["nodes_integer"] == art.info["nodes_integer"] == 5 and plan["nodes_float64"] == 1
    # ground truth: the artifact computes those nodes exactly as the fp32 model does, the float Add in fp16
    feed = {"x": np.array([0.1, 1, 2, 3], np.float32), "d": np.array([1e-10, 3.0], np.float64),
            "k": np.array([2**40 + 1, -7], np.int64), "flag": np.array(True)}  # fmt: skip
    want, half = _all_outputs(path, feed), _all_outputs(art.path, feed)
    for k in (1, 2, 3):
        assert half[k].dtype == want[k].dtype and np.array_equal(half[k], want[k]), (k, half[k], want[k])
    assert not np.array_equal(half[0], want[0])  # 0.3 in fp16 is not 0.3 in fp32
    np.testing.assert_allclose(half[0], want[0], rtol=1e-3)


def test_an_overflow_only_late_in_the_calibration_data_is_kept_in_fp32(tmp_path: Path) -> None:
    """The build's analysis reads every calibration sample, as ``analyze`` does: samples 40-47 of
    64 overflow fp16 at ``up`` and ``relu`` (an analysis that stopped after the first 8 kept
    nothing in fp32, and the artifact gave Inf on the user's own data)."""
    from edgedeploy.ui import Ui

    path = models.save(models.late_overflow_model(), tmp_path / "late.onnx")
    x = np.random.default_rng(1).uniform(-1, 1, (64, 16)).astype(np.float32)
    x[40:48] *= 2000
    data = tmp_path / "late_data.npz"
    np.savez(data, x=x)
    ui = Ui(quiet=True)
    art = make_fp16_checked(path, tmp_path / "late.fp16.onnx", _request(str(data)), ui)
    line = next(m for m in ui.messages if m.startswith("fp16 range analysis"))
    assert line.startswith("fp16 range analysis on 64 samples:"), line
    nodes = json.loads((tmp_path / "late.fp16.plan.json").read_text())["nodes"]
    plan = {e["node"]: e["precision"] for e in nodes}
    assert plan["up"] == plan["relu"] == "fp32", plan
    got = _run(_emulated(path, art.path), {"x": x})
    assert np.all(np.isfinite(got)) and _cosine(_run(path, {"x": x}), got) >= 0.999


def test_the_ranges_report_records_the_samples_a_whole_fixed_batch_used(tmp_path: Path) -> None:
    """ONNX's test_mish shape, X[10000] with --calib-samples' default 512: the analysis read the
    whole batch of 10000 (its line and summary say so) while the ranges report's data said
    "samples": 512."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "X"], ["Y"], name="sq")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [10000])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [10000])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = models.save(model, tmp_path / "m.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, X=np.linspace(-3, 3, 10000).astype(np.float32))
    make_fp16_checked(path, tmp_path / "m.fp16.onnx", _request(str(data)))
    ranges = json.loads((tmp_path / "m.fp16.ranges.json").read_text())
    assert ranges["summary"]["samples"] == ranges["data"]["samples"] == 10000, ranges["data"]


def test_external_data_model_is_analysed_and_converted(tmp_path: Path) -> None:
    path = models.save(models.decomposed_layernorm_model(), tmp_path / "ext.onnx", external=True)
    assert (tmp_path / "ext.onnx.data").is_file()
    x = np.random.default_rng(3).standard_normal((8, 8)).astype(np.float32)
    keep, _ = plan_islands(path, [{"x": x}])
    art = make_fp16(path, tmp_path / "ext.fp16.onnx", Fp16Options(auto_fp32_nodes=keep))
    assert _cosine(_run(path, {"x": x}), _run(art.path, {"x": x})) >= 0.999


def test_consecutive_fp32_nodes_do_not_round_trip_through_fp16(tmp_path: Path) -> None:
    path = models.save(models.decomposed_layernorm_model(), tmp_path / "rt.onnx")
    art = make_fp16(
        path, tmp_path / "rt.fp16.onnx", Fp16Options(fp32_nodes=["proj", "ln_mean", "ln_sub", "ln_pow"])
    )
    graph = onnx.load(art.path).graph
    pow_node = next(n for n in graph.node if n.name == "ln_pow")
    producer = {o: n for n in graph.node for o in n.output}
    assert producer[pow_node.input[0]].name == "ln_sub"  # no Cast pair between two fp32 nodes


@pytest.mark.parametrize("fp32_ops", [(), ("Mul", "Add", "Cast")])
def test_the_models_own_cast_pair_through_fp16_is_kept_and_converts(
    fp32_ops: tuple[str, ...], tmp_path: Path
) -> None:
    """Mul -> Cast(to FLOAT16) -> Cast(to FLOAT) -> Add, every node kept in fp32 (by the analysis of
    data reaching 1e5, or by --fp32-ops): the cleanup of the converter's Cast pairs took the model's
    own pair for one, chained it with the converter's and left a dangling name ("fails onnx.checker
    (... input 'a32_cast_to_fp16' ...)"). The model's pair stays, and the artifact rounds as the
    model does (1e5 -> Inf)."""
    path = models.save(models.fp16_rounding_model(), tmp_path / "rt.onnx")
    x = np.array([[1e5, -1e5, 70000, 1.0001], [3.14159265, 1e-9, 2.0, 65519.0]], np.float32)
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    request = replace(_request(str(data)), fp16=Fp16Options(fp32_ops=fp32_ops))
    art = make_fp16_checked(path, tmp_path / "rt.fp16.onnx", request)
    nodes = {n.name: n for n in onnx.load(art.path).graph.node}
    assert {"to16", "to32"} <= set(nodes), list(nodes)
    want = _run(path, {"x": x})
    assert np.isinf(want[0, :3]).all()
    np.testing.assert_array_equal(_run(art.path, {"x": x}), want)


def test_chained_round_trips_of_the_converter_are_followed_to_their_source() -> None:
    """Two converter Cast pairs in a row (a pair reading another pair's output): the consumer reads
    the fp32 source, not the first pair's output, which is gone."""
    from onnx import TensorProto, helper

    from edgedeploy.stages.precision.fp16 import _remove_fp16_round_trips

    casts = [("c1", "a", "a16", TensorProto.FLOAT16), ("c2", "a16", "a32", TensorProto.FLOAT),
             ("c3", "a32", "b16", TensorProto.FLOAT16), ("c4", "b16", "b32", TensorProto.FLOAT)]  # fmt: skip
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            *[helper.make_node("Cast", [i], [o], to=to, name=n) for n, i, o, to in casts],
            helper.make_node("Neg", ["b32"], ["y"], name="neg"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _remove_fp16_round_trips(model, {"relu", "neg"})
    assert [(n.name, list(n.input)) for n in model.graph.node] == [("relu", ["x"]), ("neg", ["a"])]
    onnx.checker.check_model(model, full_check=True)


def test_emulation_rounds_fp16_tensors_like_storage_and_leaves_fp32_nodes_alone(tmp_path: Path) -> None:
    path = models.save(models.decomposed_layernorm_model(scale=3.0), tmp_path / "e.onnx")
    model = load_for_analysis(path)
    x = np.full((2, 8), 1.0001, np.float32)
    all16 = _run(emulate_fp16(model, []), {"x": x})
    exact = _run(emulate_fp16(model, [n.name for n in model.graph.node]), {"x": x})
    np.testing.assert_array_equal(exact, _run(path, {"x": x}))
    assert not np.array_equal(all16, exact)
    np.testing.assert_allclose(all16, exact, rtol=2e-2, atol=2e-2)


def test_analysis_of_a_model_with_bad_data_is_an_input_error(audio_model: AudioModel) -> None:
    with pytest.raises(InputError, match="audio"):
        analyze(audio_model.onnx_path, [{"tokens": np.zeros((1, 16), np.int64)}])


def test_compare_runs_fp16_candidates_as_their_emulation_so_overflow_fails_the_gate(
    audio_model: AudioModel, tmp_path: Path
) -> None:
    from edgedeploy.stages.compare import Gates, compare

    naive = tmp_path / "audio.naive.fp16.onnx"
    onnx.save(_naive_fp16(audio_model.onnx_path), naive)
    feeds = [_audio_feed()]
    result = compare(audio_model.onnx_path, naive, feeds, Gates(min_cosine=0.999))
    assert result.mode.startswith("fp16") and not result.passed
    out = next(iter(result.outputs.values()))
    assert out.nan_count + out.inf_count > 0
    plain = compare(audio_model.onnx_path, naive, feeds, Gates(min_cosine=0.999), emulate_fp16=False)
    assert plain.mode == "onnx"  # ONNX Runtime's CPU kernels compute in fp32 and hide the overflow
    art = make_fp16_checked(
        audio_model.onnx_path, tmp_path / "audio.fp16.onnx", _request(str(audio_model.data))
    )
    assert compare(audio_model.onnx_path, art.path, feeds, Gates(min_cosine=0.999)).passed


def test_an_fp32_if_reading_another_fp32_ifs_output_converts_and_runs(tmp_path: Path) -> None:
    """Two chained fp32 Ifs (Silero VAD's decoder): the second one's body reads the first one's
    output through a Cast that the round-trip cleanup used to drop while the body still read it."""
    from onnx import TensorProto, helper

    model = models.if_model()
    second_then = helper.make_graph(
        [helper.make_node("Mul", ["z", "zero"], ["u"], name="then2_mul")], "then2", [],
        [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)],
    )  # fmt: skip
    second_else = helper.make_graph(
        [helper.make_node("Abs", ["z"], ["v"], name="else2_abs")], "else2", [],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
    )  # fmt: skip
    relu = next(n for n in model.graph.node if n.name == "relu")
    relu.input[0] = "z2"
    second = helper.make_node("If", ["cond"], ["z2"], name="branch2", then_branch=second_then,
                              else_branch=second_else)  # fmt: skip
    model.graph.node.insert(list(model.graph.node).index(relu), second)
    path = models.save(model, tmp_path / "if2.onnx")
    x = np.random.default_rng(4).standard_normal((8, 4)).astype(np.float32)
    keep, _ = plan_islands(path, [{"x": x}])
    assert {"branch", "branch2"} <= set(keep)
    art = make_fp16(path, tmp_path / "if2.fp16.onnx", Fp16Options(auto_fp32_nodes=keep))
    np.testing.assert_allclose(_run(art.path, {"x": x}), _run(path, {"x": x}), rtol=1e-2, atol=1e-2)


def test_compare_emulates_an_fp16_build_of_a_model_with_unnamed_nodes_as_built(tmp_path: Path) -> None:
    """The converter names unnamed nodes; compare's emulation must find the ones it kept in fp32
    by those names, or it rounds their weights to fp16 (here 1e6: Inf) and fails a good model."""
    from onnx import TensorProto, helper, numpy_helper

    from edgedeploy.stages.compare import Gates, compare

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    w[0, 0] = 1e6  # beyond 65504: the MatMul stays fp32
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),  # no names anywhere
            helper.make_node("Mul", ["h", "s"], ["m"]),
            helper.make_node("Relu", ["m"], ["y"]),
        ],
        "unnamed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(1e-6, np.float32), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = models.save(model, tmp_path / "u.onnx")
    x = rng.standard_normal((16, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    art = make_fp16_checked(path, tmp_path / "u.fp16.onnx", _request(str(tmp_path / "x.npz")))
    plan = json.loads((tmp_path / "u.fp16.plan.json").read_text())
    assert "MatMul" in [e["op"] for e in plan["nodes"] if e["precision"] == "fp32"]
    result = compare(path, art.path, [{"x": x}], Gates(min_cosine=0.999))
    assert result.mode.startswith("fp16") and result.passed, result


def test_island_release_cosine_reads_exactly_1_for_identical_outputs_and_stays_within_1() -> None:
    """The release's cosine (islands._min_cosine) read 0.9999999999999999 or 1.0000000000000002 for a
    bit-identical copy, where compare reads 1.0 (and 1 - cosine, its error, went negative)."""
    from edgedeploy.stages.precision.islands import _min_cosine

    many = np.full(1000, 0.1, np.float32)  # dot / (norm * norm) rounds to 1.0000000000000002
    rows = np.random.default_rng(0).standard_normal(1000).astype(np.float32)  # rounds to 0.9999999999999999
    assert _min_cosine([[many, rows]], [[many.copy(), rows.copy()]]) == 1.0
    assert _min_cosine([[many]], [[many * np.float32(3)]]) <= 1.0
    assert _min_cosine([[rows]], [[-rows]]) >= -1.0


def _if_model_with_names_of_main_graph_nodes() -> onnx.ModelProto:
    """if_model whose branch nodes are named like main-graph nodes ('mm', 'relu'): node names are
    unique per graph only (ONNX's IR), and ONNX Runtime, Polygraphy and onnx's checker take it."""
    from calibration.graphs import subgraphs

    model = models.if_model()
    names = {"then_mul": "mm", "then_sq": "relu", "then_div": "then_div", "else_neg": "mm"}
    for node in model.graph.node:
        for sub in subgraphs(node):
            for inner in sub.node:
                inner.name = names[inner.name]
    onnx.checker.check_model(model, full_check=True)
    return model


def test_body_nodes_named_like_main_graph_nodes_leave_those_in_fp16(tmp_path: Path) -> None:
    """An fp32 If whose branches hold nodes named 'mm' and 'relu', as the main graph's MatMul and
    Relu are: those two were kept in fp32 too, listed "inside fp32 If 'branch'" (the plan matched
    nodes by name), and the plan named four nodes 'mm'/'relu'. A body node whose name an earlier
    node holds is called NAME#2, NAME#3 in our copy, the artifact and the plan; main-graph nodes
    keep theirs, and the artifact passes the full checker."""
    from edgedeploy.ui import Ui

    path = models.save(_if_model_with_names_of_main_graph_nodes(), tmp_path / "if.onnx")
    data = tmp_path / "x.npz"
    x = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    np.savez(data, x=x)
    art = make_fp16_checked(path, tmp_path / "if.fp16.onnx", _request(str(data)), Ui(quiet=True))
    plan = json.loads((tmp_path / "if.fp16.plan.json").read_text())
    got = [(e["node"], e["op"], e["precision"]) for e in plan["nodes"]]
    assert got[:2] == [("mm", "MatMul", "fp16"), ("sum", "ReduceSum", "fp16")], got
    assert ("relu", "Relu", "fp16") in got, got
    inner = [(e["node"], e["op"]) for e in plan["nodes"] if "inside fp32 If 'branch'" in e.get("reason", "")]
    assert inner == [("mm#2", "Neg"), ("mm#3", "Mul"), ("relu#2", "Mul"), ("then_div", "Div")], got
    written = onnx.load(art.path)
    onnx.checker.check_model(written, full_check=True)
    from calibration.graphs import all_nodes

    names = [n.name for n in all_nodes(written.graph)]
    assert len(names) == len(set(names)) and {"mm#2", "mm#3", "relu#2"} <= set(names), names
    main_mm = next(n for n in written.graph.node if n.name == "mm")
    weight = next(w for w in written.graph.initializer if w.name == main_mm.input[1])
    assert weight.data_type == onnx.TensorProto.FLOAT16  # the main MatMul runs in fp16
    np.testing.assert_allclose(_run(art.path, {"x": x}), _run(path, {"x": x}), rtol=1e-2, atol=1e-2)


def test_a_blocked_op_on_integers_only_is_marked_integer_in_the_plan_not_fp32(tmp_path: Path) -> None:
    """An int64 Max (an op the converter blocks by default) in the main graph and in a Loop body was
    listed 'fp32' ("Max has no fp16 kernel in ONNX Runtime") and counted among the nodes kept in
    fp32, though it holds no float tensor and the artifact computes it as the fp32 model does: it
    is 'integer' now, as the other integer-only nodes are, TensorRT pins no fp32 layer for it, and
    analyze counts it as the build does."""
    from onnx import TensorProto, helper

    from edgedeploy.backends.trt_plan import read_fp32_layers
    from edgedeploy.ui import Ui
    from tests.conftest import run_cli

    i64, f32 = TensorProto.INT64, TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Max", ["a", "b"], ["m"], name="int_max"),
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info(n, t, [3]) for n, t in (("a", i64), ("b", i64), ("x", f32))],
        [helper.make_tensor_value_info(n, t, [3]) for n, t in (("m", i64), ("r", f32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = models.save(model, tmp_path / "m.onnx")
    ui = Ui(quiet=True)
    art = make_fp16_checked(path, tmp_path / "m.fp16.onnx", replace(_request(), fp16_analysis=False), ui)
    plan = json.loads((tmp_path / "m.fp16.plan.json").read_text())
    assert {e["node"]: e["precision"] for e in plan["nodes"]} == {"int_max": "integer", "relu": "fp16"}, plan
    assert plan["nodes_fp32"] == art.info["nodes_fp32"] == 0 and plan["nodes_integer"] == 1, plan
    line = next(m for m in ui.messages if m.startswith("fp16 model:"))
    assert "0 of 2 node(s) kept in fp32, 1 integer-only" in line, line
    assert read_fp32_layers(tmp_path / "m.fp16.plan.json") == []
    feed = {"a": np.array([2**40 + 1, -7, 3], np.int64), "b": np.array([5, -9, 3], np.int64),
            "x": np.array([-1, 0.5, 2], np.float32)}  # fmt: skip
    assert np.array_equal(_all_outputs(art.path, feed)[0], _all_outputs(path, feed)[0])

    analysed = run_cli("analyze", path, "--data", "random")
    assert analysed.code == 0 and "keeps 0 of 2 nodes in fp32 by rule" in analysed.stdout, analysed.stdout

    loop = models.save(models.loop_model(), tmp_path / "loop.onnx")
    make_fp16(loop, tmp_path / "loop.fp16.onnx")
    body = {e["node"]: e for e in json.loads((tmp_path / "loop.fp16.plan.json").read_text())["nodes"]}
    assert body["body_max"]["precision"] == "integer" and body["loop"]["precision"] == "fp16", body


def test_softmax_rule_quotes_the_logits_magnitude_not_the_masked_input(tmp_path: Path) -> None:
    """MatMul -> Mul(1/16) -> Add(mask of -10000) -> Softmax, logits near 950: rule 6's reason
    quoted the Softmax's input, "'masked' reaches 9050, where fp16 steps by 8", the masked columns
    (whose exp is 0 in any precision), not the logits whose fp16 step of 0.5 moves exp(x - max). It
    quotes the logits now, found back through the mask, and names the input's figure beside it."""
    import re

    path = models.save(models.scaled_softmax_model(), tmp_path / "att.onnx")
    x = (1900 + np.random.default_rng(1).standard_normal((64, 16))).astype(np.float32)
    keep, report = plan_islands(path, [{"x": x[i : i + 8]} for i in range(0, 64, 8)])
    assert {"qk", "scale", "mask", "softmax"} <= set(keep), keep
    masked = report.tensor("masked")
    assert masked is not None and masked.stats.absmax > 9000  # what was quoted
    for name in ("qk", "scale", "mask", "softmax"):
        found = re.search(r"the logits 'scaled' reach (\S+), where fp16 steps by 0\.5: ", keep[name])
        assert found and 900 < float(found.group(1)) < 1000, keep[name]
        assert "Softmax's input 'masked' reaches 9" in keep[name], keep[name]


def _unit_softmax_model() -> onnx.ModelProto:
    """x (N, 16) -> x * Reciprocal(ReduceL2(x)) -> Mul by 900 -> Softmax: logits of unit vectors
    times a large scale (a cosine-similarity head), whose Softmax input reaches rule 6's limit."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceL2", ["x"], ["n"], name="norm", axes=[-1], keepdims=1),
        helper.make_node("Reciprocal", ["n"], ["r"], name="inv"),
        helper.make_node("Mul", ["x", "r"], ["u"], name="unit"),
        helper.make_node("Mul", ["u", "s"], ["z"], name="scale"),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [onnx.numpy_helper.from_array(np.array(900.0, np.float32), "s")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_reduce_l2_kept_as_statistics_of_a_softmax_chain_is_measured(tmp_path: Path) -> None:
    """Rule 6 keeps the Mul reading x * (1 / ReduceL2(x)), and rule 4 the ReduceL2 behind it as
    "normalisation statistics": it stayed fp32 unmeasured, as every kept squaring reduction was
    taken for one whose sum of squares overflows inside the kernel (rule 3). Its sum here is some
    hundreds: the release measures it like the rest and returns it to fp16. One whose sum passes
    the limit (x times 100) still stays fp32 outright."""
    from edgedeploy.stages.precision.islands import hard_fp32_nodes
    from edgedeploy.ui import Ui

    path = models.save(_unit_softmax_model(), tmp_path / "unit.onnx")
    x = 3 * np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    feeds = [{"x": x[i : i + 8]} for i in range(0, 64, 8)]
    keep, report = plan_islands(path, feeds)
    assert keep["norm"] == "normalisation statistics feeding 'unit'" and "scale" in keep, keep
    assert "norm" not in hard_fp32_nodes(load_for_analysis(path), keep, report)
    kept, notes = release_measured(load_for_analysis(path), keep, report, feeds)
    assert "norm" not in kept and any(n.startswith("norm: back to fp16, measured") for n in notes), notes
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    make_fp16_checked(path, tmp_path / "unit.fp16.onnx", _request(str(data)), Ui(quiet=True))
    plan = {e["node"]: e for e in json.loads((tmp_path / "unit.fp16.plan.json").read_text())["nodes"]}
    assert plan["norm"]["precision"] == "fp16", plan

    loud = [{"x": 100 * f["x"]} for f in feeds]  # sums of squares near 2e5: beyond fp16 inside ReduceL2
    keep, report = plan_islands(path, loud)
    assert "norm" in hard_fp32_nodes(load_for_analysis(path), keep, report), keep
