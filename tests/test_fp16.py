from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgedeploy.errors import InputError
from edgedeploy.options import Fp16Options
from edgedeploy.stages.compare import Gates, compare
from edgedeploy.stages.precision.fp16 import make_fp16
from tests.conftest import Digits


def _feeds(digits: Digits) -> list[dict[str, np.ndarray]]:
    return [{"input": digits.x_test[i : i + 50]} for i in range(0, len(digits.x_test), 50)]


def test_fp16_digits_is_half_the_size_and_agrees_with_fp32(digits: Digits, tmp_path: Path) -> None:
    art = make_fp16(digits.onnx_path, tmp_path / "d.fp16.onnx")
    ratio = art.path.stat().st_size / digits.onnx_path.stat().st_size
    assert 0.45 < ratio < 0.56
    result = compare(digits.onnx_path, art.path, _feeds(digits), Gates(min_cosine=0.999, min_top1=0.99))
    assert result.passed
    assert result.outputs["logits"].cosine >= 0.999


def test_fp16_keeps_graph_io_in_float32_by_default(digits: Digits, tmp_path: Path) -> None:
    model = onnx.load(make_fp16(digits.onnx_path, tmp_path / "io.onnx").path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [i for i in model.graph.initializer if len(i.dims) > 1]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)


def test_no_keep_io_types_makes_inputs_float16(digits: Digits, tmp_path: Path) -> None:
    model = onnx.load(make_fp16(digits.onnx_path, tmp_path / "h.onnx", Fp16Options(keep_io_types=False)).path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_fp32_ops_and_nodes_are_kept_and_recorded_in_the_plan(digits: Digits, tmp_path: Path) -> None:
    model = onnx.load(digits.onnx_path)
    gemm = next(n.name for n in model.graph.node if n.op_type == "Gemm")
    art = make_fp16(
        digits.onnx_path, tmp_path / "p.fp16.onnx", Fp16Options(fp32_ops=["Conv"], fp32_nodes=[gemm])
    )
    plan = json.loads((tmp_path / "p.fp16.plan.json").read_text())
    by_node = {e["node"]: e for e in plan["nodes"]}
    assert by_node[gemm]["precision"] == "fp32" and by_node[gemm]["reason"] == "--fp32-nodes"
    convs = [e for e in plan["nodes"] if e["op"] == "Conv"]
    assert convs and all(e["precision"] == "fp32" for e in convs)
    converted = onnx.load(art.path)
    conv_weights = {n.input[1] for n in converted.graph.node if n.op_type == "Conv"}
    inits = {i.name: i for i in converted.graph.initializer}
    assert all(inits[w].data_type == onnx.TensorProto.FLOAT for w in conv_weights if w in inits)


def test_unknown_fp32_node_is_an_input_error(digits: Digits, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no node named"):
        make_fp16(digits.onnx_path, tmp_path / "x.onnx", Fp16Options(fp32_nodes=["does_not_exist"]))
    assert not (tmp_path / "x.onnx").exists()


def test_fp16_artifact_is_fully_checked_on_the_bytes_written_not_read_back(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_onnx serializes the artifact once; onnx's full checker checks those bytes (the file's
    content) instead of reading the file back and parsing it twice (45 MB for MiniLM's fp16)."""
    checked: list[tuple[object, bool]] = []
    check_model = onnx.checker.check_model

    def spy(model: object, full_check: bool = False, *args: object, **kwargs: object) -> None:
        checked.append((model, full_check))
        check_model(model, full_check, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx.checker, "check_model", spy)
    art = make_fp16(digits.onnx_path, tmp_path / "b.fp16.onnx")
    assert [type(m) for m, full in checked if full] == [bytes]
    assert next(m for m, full in checked if full) == art.path.read_bytes()


def test_fp16_whose_plan_cannot_be_written_leaves_no_model_without_its_plan(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at the plan (``model.fp16.plan.json: No space left on device``) left
    ``model.fp16.onnx`` alone, an artifact without its plan: both go, or neither is written."""
    import errno

    from edgedeploy.stages.precision import fp16

    def full(dest: Path, obj: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(fp16, "atomic_write_json", full)
    with pytest.raises(OSError, match="No space left"):
        make_fp16(digits.onnx_path, tmp_path / "d.fp16.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fp16_plan_gives_each_fixed_type_op_its_own_reason_for_staying_fp32() -> None:
    """Every op of FIXED_TYPE_OPS read "X has no fp16 kernel in ONNX Runtime" in the plan, which is
    wrong for Optional, EyeLike, the Random* ops (their output type is fixed by definition or
    attribute) and DynamicQuantizeLinear, BitCast (float32 inputs); only AffineGrid and
    MeanVarianceNormalization lack the kernel. Each group now reads its own reason."""
    from onnx import helper

    from edgedeploy.stages.precision.fp16 import blocked_ops, fp32_reasons

    opset17 = helper.make_model(
        helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 17)]
    )
    why = fp32_reasons(Fp16Options(), blocked_ops(opset17))

    def reason(op: str) -> str | None:
        return why(helper.make_node(op, ["x"], ["y"], name=op.lower()))

    fixed = "'s output type is fixed by its definition or attributes (the converter would retype it)"
    for op in ("Optional", "OptionalGetElement", "RandomNormalLike", "RandomUniform", "EyeLike", "Bernoulli"):
        assert reason(op) == op + fixed
    for op in ("DynamicQuantizeLinear", "BitCast"):
        assert reason(op) == f"{op}'s float inputs must stay float32 (the converter would retype them)"
    for op in ("AffineGrid", "MeanVarianceNormalization"):
        assert reason(op) == f"{op} has no fp16 kernel in ONNX Runtime"
    # TopK: the converter's own block list, for a CPU target (blocked_ops)
    assert reason("TopK") == (
        "ONNX Runtime's CPU provider has no float16 TopK kernel (it would run it in float32 between Casts)"
    )


def _block_list_model(opset: int) -> onnx.ModelProto:
    """x, y [2, 8] float: Max, Min, TopK (k 3), CumSum and a float Range, ops of the converter's
    default block list."""
    from onnx import TensorProto, helper, numpy_helper

    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Max", ["x", "y"], ["mx"], name="max"),
        helper.make_node("Min", ["x", "y"], ["mn"], name="min"),
        helper.make_node("Add", ["mx", "mn"], ["s"], name="add"),
        helper.make_node("TopK", ["s", "k"], ["v", "i"], name="topk"),
        helper.make_node("CumSum", ["s", "axis"], ["c"], name="cumsum"),
        helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
    ]
    weights = [
        numpy_helper.from_array(np.array([3], np.int64), "k"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
        *(
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in (("start", 0), ("limit", 5), ("delta", 1))
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, f32, [2, 8]) for n in ("x", "y")],
        [
            helper.make_tensor_value_info("v", f32, [2, 3]),
            helper.make_tensor_value_info("c", f32, [2, 8]),
            helper.make_tensor_value_info("r", f32, [5]),
        ],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _plan_of(tmp_path: Path, model: onnx.ModelProto, target: str) -> dict[str, dict[str, str]]:
    from dataclasses import replace

    import onnxruntime as ort

    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.precision.mixed import make_fp16_checked
    from edgedeploy.targets import load_target

    src = tmp_path / f"m{target}.onnx"
    onnx.save(model, src)
    request = replace(BuildRequest(precision="fp16", target=load_target(target)), fp16_analysis=False)
    art = make_fp16_checked(src, tmp_path / f"m{target}.fp16.onnx", request)
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((2, 8)).astype(np.float32) for n in ("x", "y")}
    got = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(None, feed)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)
    plan = json.loads(art.path.with_name(art.path.name.removesuffix(".onnx") + ".plan.json").read_text())
    return {e["node"]: e for e in plan["nodes"]}


def test_fp16_converts_max_and_min_the_target_runs_in_fp16_and_keeps_what_it_cannot_with_its_reason(
    tmp_path: Path,
) -> None:
    """Every op of ONNX Runtime's float16.DEFAULT_OP_BLOCK_LIST stayed fp32 ("Max has no fp16 kernel
    in ONNX Runtime"), for GPU targets too: a TF-converted CNN's 19 Max kept 19 of 68 nodes in fp32
    behind 40 Casts. ONNX Runtime's CPU provider runs Max and Min in float16 from opset 12 and
    TensorRT's parser takes TopK and CumSum in FP16; a float Range takes no float16 in ONNX's
    definition (opset 17). Each op is now fp32 only where the target's runtime cannot run it, with
    that reason."""
    gpu = _plan_of(tmp_path, _block_list_model(17), "jetson-orin-nano")
    assert {n: gpu[n]["precision"] for n in ("max", "min", "add", "topk", "cumsum")} == dict.fromkeys(
        ("max", "min", "add", "topk", "cumsum"), "fp16"
    ), gpu
    assert gpu["range"]["precision"] == "fp32"
    assert gpu["range"]["reason"] == "Range takes no float16 in ONNX's definition at opset 17", gpu["range"]

    cpu = _plan_of(tmp_path, _block_list_model(17), "x86-64-cpu")
    assert [cpu[n]["precision"] for n in ("max", "min", "add")] == ["fp16"] * 3, cpu
    for op in ("TopK", "CumSum"):
        entry = cpu[op.lower()]
        assert entry["precision"] == "fp32"
        assert entry["reason"] == (
            f"ONNX Runtime's CPU provider has no float16 {op} kernel (it would run it in float32 "
            "between Casts)"
        ), entry
    assert cpu["range"]["reason"] == gpu["range"]["reason"]

    old = _plan_of(tmp_path, _block_list_model(11), "x86-64-cpu")  # Max-8 and Min-8 kernels: float, double
    assert old["max"]["reason"] == (
        "ONNX Runtime's CPU provider has no float16 Max kernel below opset 12 (it would run it in "
        "float32 between Casts)"
    ), old["max"]
    cumsum = old["cumsum"]
    assert cumsum["reason"] == "CumSum takes no float16 in ONNX's definition at opset 11", cumsum


def _run_ort(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.mark.parametrize("if_in_fp32", [False, True], ids=["if-fp16", "if-fp32"])
def test_fp16_of_a_body_whose_weights_bear_main_graph_names(tmp_path: Path, if_in_fp32: bool) -> None:
    """openwakeword's hey_jarvis after onnxslim: an If's then-branch holds weights named as the main
    graph's (``two``, ``eps``). The If converted (--no-fp16-analysis) failed with ONNX Runtime's
    converter's bare "AssertionError:"; the If kept in fp32 (what the analysis chose) failed
    onnx.checker, "Inferred elem type differs from existing elem type: (1) vs (10)" (the main
    graph's made float16, the branch's of the same names float32). Both build, pass the full
    checker and give the fp32 model's outputs on both branches."""
    from tests.precision import models

    path = models.save(models.shadowing_if_model(), tmp_path / "m.onnx")
    options = Fp16Options(fp32_nodes=["branch"]) if if_in_fp32 else Fp16Options()
    art = make_fp16(path, tmp_path / "m.fp16.onnx", options)
    written = onnx.load(art.path)
    onnx.checker.check_model(written, full_check=True)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    x[:, 0] += 4  # sum(x) > 0: the then-branch; -x the else-branch
    for feed in (x, -x):
        np.testing.assert_allclose(_run_ort(art.path, feed), _run_ort(path, feed), rtol=2e-3, atol=2e-3)


def test_unshadowing_drops_a_body_weight_an_outer_name_hides_and_keeps_what_the_model_computes() -> None:
    """calibration.graphs.unshadow_subgraph_names: the then-branch's ``two`` and ``eps`` repeat the
    main graph's names, so the runtimes read the main graph's (ONNX Runtime 1.32 and onnx's reference
    evaluator, whatever the body's own values): they are dropped and the body reads the outer ones;
    the main graph keeps its names, and the else-branch still reads the main graph's ``p``."""
    from calibration.graphs import all_nodes, unshadow_subgraph_names
    from tests.precision import models

    model = models.shadowing_if_model()
    done = unshadow_subgraph_names(model)
    assert done.dropped == [("then", "two", True), ("then", "eps", True)] and done.renamed == []
    branches = {a.name: a.g for a in model.graph.node[-1].attribute}
    then_g, else_g = branches["then_branch"], branches["else_branch"]
    assert {w.name for w in then_g.initializer} == {"v1", "v2"}
    reads = {i for n in all_nodes(then_g) for i in n.input}
    assert {"two", "eps", "x"} <= reads
    assert {w.name for w in model.graph.initializer} >= {"two", "eps"}
    assert else_g.node[0].input[:] == ["p"]
    onnx.checker.check_model(model, full_check=True)
    again = unshadow_subgraph_names(model)
    assert again.dropped == [] and again.renamed == []


@pytest.mark.parametrize("outer", ["weight", "input", "node"])
def test_unshadowing_keeps_what_the_runtimes_compute_when_the_hidden_weight_differs(outer: str) -> None:
    """A body weight whose name an enclosing graph defines, with OTHER values: ONNX Runtime and onnx's
    reference evaluator read the enclosing value (checked here on the file as it is), so renaming
    the body's apart (what the first version did) changed the outputs; it is dropped instead."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from calibration.graphs import unshadow_subgraph_names
    from tests.precision import models

    model = models.shadowed_weight_model(outer)
    feed = {"x": np.ones((2, 4), np.float32)}
    if outer == "input":
        feed["w"] = np.array([1, 2, 3, 4], np.float32)

    def ort_run(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, feed)[0])

    before = ort_run(model)
    np.testing.assert_array_equal(before, np.ones((2, 4), np.float32) * [1, 2, 3, 4])  # the outer w
    np.testing.assert_array_equal(np.asarray(ReferenceEvaluator(model).run(None, feed)[0]), before)
    done = unshadow_subgraph_names(model)
    assert done.dropped == [("then", "w", False)] and done.renamed == []
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(ort_run(model), before)


def test_a_failure_inside_the_fp16_converter_names_what_it_failed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime's converter asserts that no two graphs hold a float weight of one name (its
    `assert n.name not in fp32_initializers`, which hey_jarvis after onnxslim hit): the build said
    "fp16 conversion of m.onnx failed: AssertionError:" and nothing else. Now the one line names the
    weight, the node reading it and what the converter checked. Here the renaming that keeps such
    models from it is switched off, to make the converter fail as it did."""
    import edgedeploy.stages.precision.fp16 as fp16
    from tests.precision import models

    monkeypatch.setattr(fp16, "unshadow_subgraph_names", lambda model: None)
    path = models.save(models.shadowing_if_model(), tmp_path / "m.onnx")
    with pytest.raises(InputError) as raised:
        make_fp16(path, tmp_path / "m.fp16.onnx")
    message = str(raised.value)
    assert "\n" not in message and not message.rstrip().endswith("AssertionError:"), message
    assert "weight 'two'" in message and "Pow 'then_ln_pow'" in message, message
    assert "fp32_initializers" in message and "another graph" in message, message
    assert not (tmp_path / "m.fp16.onnx").exists()


@pytest.mark.parametrize("scales_from", ["initializer", "constant"])
def test_fp16_converts_an_upsample_for_tensorrt_keeping_its_scales_float(
    tmp_path: Path, scales_from: str
) -> None:
    """Upsample (opset 9) stayed fp32 on GPU targets, "Upsample takes no float16 in ONNX's definition
    at opset 9 (its input 'scales' is float only)", although its data X and Y take float16 in that
    definition and TensorRT's parser takes Upsample in FP16 (docs/tensorrt-facts.md): only its
    scales must stay float, which the converter now keeps as it keeps Resize's. A CPU target keeps
    it fp32 still: ONNX Runtime's CPU provider has no float16 Upsample kernel."""
    from dataclasses import replace

    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.precision.mixed import make_fp16_checked
    from edgedeploy.targets import load_target

    scales = np.array([1, 1, 2, 2], np.float32)
    nodes = [helper.make_node("Mul", ["x", "w"], ["a"], name="scale")]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "w")]
    if scales_from == "constant":
        nodes.append(helper.make_node("Constant", [], ["s"], name="s", value=numpy_helper.from_array(scales)))
    else:
        inits.append(numpy_helper.from_array(scales, "s"))
    nodes += [
        helper.make_node("Upsample", ["a", "s"], ["u"], name="up", mode="nearest"),
        helper.make_node("Relu", ["u"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        inits,
    )
    src = tmp_path / "up.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), src)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    reference = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    plans = {}
    for target in ("jetson-orin-nano", "x86-64-cpu"):
        request = replace(BuildRequest(precision="fp16", target=load_target(target)), fp16_analysis=False)
        art = make_fp16_checked(src, tmp_path / target / "up.fp16.onnx", request)
        written = onnx.load(art.path)
        onnx.checker.check_model(written, full_check=True)
        got = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-3)
        plan = json.loads(art.path.with_name("up.fp16.plan.json").read_text())
        plans[target] = {e["node"]: e for e in plan["nodes"]}
        if target == "jetson-orin-nano":
            up = next(n for n in written.graph.node if n.op_type == "Upsample")
            types = {v.name: v.type.tensor_type.elem_type for v in written.graph.value_info}
            types |= {i.name: i.data_type for i in written.graph.initializer}
            assert types.get(up.input[0]) == TensorProto.FLOAT16, up
            assert types.get(up.input[1]) == TensorProto.FLOAT, up  # scales: float only
    assert plans["jetson-orin-nano"]["up"]["precision"] == "fp16", plans["jetson-orin-nano"]["up"]
    assert plans["x86-64-cpu"]["up"] == {
        "node": "up",
        "op": "Upsample",
        "precision": "fp32",
        "reason": "ONNX Runtime's CPU provider has no float16 Upsample kernel (it would run it in float32 "
        "between Casts)",
    }
