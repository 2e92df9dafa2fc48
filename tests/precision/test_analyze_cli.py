"""``edgedeploy analyze`` on the command line: what it refuses, and its tables cut at --top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import assert_clean_input_error, conv_integer_model, run_cli


def _overflowing_chain(tmp_path: Path) -> tuple[Path, Path]:
    """x (100..200) * 1000 -> Relu -> * 2 -> Neg -> Abs: five tensors beyond fp16's 65504."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("k", 1000.0), ("two", 2.0))]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a"], name="scale"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Mul", ["b", "two"], ["c"], name="double"),
        helper.make_node("Neg", ["c"], ["d"], name="neg"),
        helper.make_node("Abs", ["d"], ["y"], name="abs"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        consts,
    )
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    data = tmp_path / "chain.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(100, 200, (8, 4)).astype(np.float32))
    return path, data


def test_analyze_refuses_zero_samples_as_calibrate_does(tmp_path: Path) -> None:
    path, data = _overflowing_chain(tmp_path)
    for command in ("analyze", "calibrate"):
        extra = ["-o", str(tmp_path / "out")] if command == "calibrate" else []
        result = run_cli(command, path, "--data", data, "--samples", "0", *extra)
        assert_clean_input_error(result, "number of samples must be >= 1, got 0")


def test_analyze_says_how_many_more_tensors_at_risk_its_top_leaves_out(tmp_path: Path) -> None:
    path, data = _overflowing_chain(tmp_path)
    result = run_cli("analyze", path, "--data", data, "--top", "3", "--json", tmp_path / "r.json")
    assert result.code == 0, result.stderr
    at_risk = json.loads((tmp_path / "r.json").read_text())["tensors_at_risk"]
    assert len(at_risk) == 5
    assert f"... 2 more tensors at risk in the JSON ({tmp_path / 'r.json'})" in result.stderr
    without = run_cli("analyze", path, "--data", data, "--top", "3")
    assert "... 2 more tensors at risk in the JSON (--json FILE)" in without.stderr
    every = run_cli("analyze", path, "--data", data, "--top", "5")
    assert "more tensors at risk" not in every.stderr


def _if_model(tmp_path: Path) -> tuple[Path, Path]:
    """4 top-level nodes and an If whose two branches hold 2 nodes each: the then branch adds 1e5
    (x > 0 takes it, so the If's output overflows fp16), the else branch multiplies by 1e-9."""
    big = numpy_helper.from_array(np.full(4, 1e5, np.float32), "bigc")
    tiny = numpy_helper.from_array(np.full(4, 1e-9, np.float32), "tinyc")
    out = helper.make_tensor_value_info
    then_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["cb"], value=big),
            helper.make_node("Add", ["x", "cb"], ["t_out"]),
        ],
        "then",
        [],
        [out("t_out", TensorProto.FLOAT, ["B", 4])],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["ct"], value=tiny),
            helper.make_node("Mul", ["x", "ct"], ["e_out"]),
        ],
        "else",
        [],
        [out("e_out", TensorProto.FLOAT, ["B", 4])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Mul", ["y", "w"], ["z"]),
    ]
    weights = [
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(np.full(4, 2e-6, np.float32), "w"),
    ]
    graph = helper.make_graph(
        nodes, "g", [out("x", TensorProto.FLOAT, ["B", 4])], [out("z", TensorProto.FLOAT, ["B", 4])], weights
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ifm.onnx"
    onnx.save(model, path)
    data = tmp_path / "xpos.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(0.5, 1.5, (8, 4)).astype(np.float32))
    return path, data


def test_analyze_counts_the_nodes_kept_in_fp32_as_the_build_does_branches_of_an_fp32_if_included(
    tmp_path: Path,
) -> None:
    """The If overflows, so the build keeps it in fp32 with both its branches: 6 of 8 nodes. analyze
    said 4 of 4 (top-level nodes only, the else branch's nodes left out)."""
    path, data = _if_model(tmp_path)
    analysed = run_cli("analyze", path, "--data", data, "--json", tmp_path / "r.json")
    assert analysed.code == 0, analysed.stderr
    built = run_cli("build", path, "--precision", "fp16", "--calib-data", data, "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    assert "fp16 model: 6 of 8 node(s) kept in fp32" in built.stderr + built.stdout
    assert "build --precision fp16 keeps 6 of 8 nodes in fp32 by rule" in analysed.stdout
    plan = json.loads((tmp_path / "out" / "ifm.fp16.plan.json").read_text())
    kept = [e["node"] for e in plan["nodes"] if e["precision"] == "fp32"]
    assert json.loads((tmp_path / "r.json").read_text())["fp32_by_rule"] == kept


def test_analyze_of_an_int8_model_says_the_fp16_build_refuses_it(tmp_path: Path) -> None:
    """A model quantized by another tool (ConvInteger, as ddddocr's common_old.onnx): analyze said
    "build --precision fp16 keeps 1 of 5 nodes in fp32 by rule" where build --precision fp16
    refuses it as already an int8 model. It now says that, in the build's words, on one line."""
    path = conv_integer_model(tmp_path / "dyn.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32))
    analysed = run_cli("analyze", path, "--data", data, "--json", tmp_path / "r.json")
    assert analysed.code == 0, analysed.stderr
    built = run_cli("build", path, "--precision", "fp16", "-o", tmp_path / "out")
    assert_clean_input_error(built, "dyn.onnx is already an int8 model")
    refusal = built.stderr.strip().removeprefix("error: ")
    assert "by rule" not in analysed.stdout, analysed.stdout
    said = [line for line in analysed.stdout.splitlines() if "build --precision fp16" in line]
    assert said == [f"build --precision fp16 refuses it: {refusal}"], analysed.stdout
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["fp32_by_rule"] == [] and written["fp16_build_refused"] == refusal


def test_analyze_lists_a_softmax_input_past_512_among_the_tensors_at_risk(tmp_path: Path) -> None:
    """Logits reaching 891 (x @ W, W ~ 100) into a Softmax: build's rule 6 flags them (fp16 steps by 0.5
    there, which moves exp(x - max)), but analyze gave 'lg' no risk, so the table and tensors_at_risk
    left it out while the summary line said "2 more are flagged" without naming it."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 10)) * 100).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["lg"], name="mm"),
        helper.make_node("Softmax", ["lg"], ["p"], name="soft", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W")],
    )
    path, data = tmp_path / "m3.onnx", tmp_path / "d3.npz"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    np.savez(data, x=rng.standard_normal((16, 8)).astype(np.float32))
    result = run_cli("analyze", path, "--data", data, "--json", tmp_path / "a.json")
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "a.json").read_text())
    lg = next(t for t in report["tensors_at_risk"] if t["tensor"] == "lg")
    assert lg["risks"] == [
        f"softmax shift: max {lg['absmax']:.4g} >= 512 into Softmax 'soft', where fp16 steps by 0.5: "
        "its exp(x - max) changes"
    ]
    assert report["summary"]["tensors_at_risk"] == 2
    assert "lg " in result.stdout and "softmax shift" in result.stdout


def test_analyze_names_fp16s_last_step_or_inf_for_a_softmax_input_near_65504(tmp_path: Path) -> None:
    """Logits reaching 65510 or 80000 into a Softmax: the risk said "where fp16 steps by inf", with
    numpy's "overflow encountered in spacing" warning on stderr (np.spacing of float16 65504). fp16's
    step there is 32 (65504 - 65472), and from 65520 on the value becomes Inf in fp16."""
    expected = {
        65510.0: "where fp16 steps by 32: ",
        80000.0: "which fp16 cannot hold (it becomes Inf): ",
    }
    for scale, words in expected.items():
        nodes = [
            helper.make_node("Mul", ["x", "k"], ["lg"], name="scale"),
            helper.make_node("Softmax", ["lg"], ["p"], name="soft", axis=-1),
        ]
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])],
            [numpy_helper.from_array(np.array(scale, np.float32), "k")],
        )
        path, data = tmp_path / f"m{scale:g}.onnx", tmp_path / f"d{scale:g}.npz"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
        np.savez(data, x=np.tile(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32), (8, 1)))
        result = run_cli("analyze", path, "--data", data, "--json", tmp_path / "a.json")
        assert result.code == 0, result.stderr
        assert "Warning" not in result.stderr and "by inf" not in result.stdout, result.stderr + result.stdout
        at_risk = json.loads((tmp_path / "a.json").read_text())["tensors_at_risk"]
        lg = next(t for t in at_risk if t["tensor"] == "lg")
        shift = [r for r in lg["risks"] if r.startswith("softmax shift")]
        assert shift == [
            f"softmax shift: max {scale:.4g} >= 512 into Softmax 'soft', {words}its exp(x - max) changes"
        ], lg["risks"]


def _blocked_ops_model(tmp_path: Path) -> tuple[Path, Path]:
    """x * w -> TopK (k = 3) -> Max with c, at opset 11: ONNX Runtime's CPU provider has no float16
    TopK, nor Max below opset 12, so a CPU target's fp16 build keeps both in fp32; TensorRT's parser
    takes both in FP16, so a GPU target's keeps neither (docs/design.md, "The converter's block
    list, per runtime")."""
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["a"], name="scale"),
        helper.make_node("TopK", ["a", "k"], ["v", "i"], name="topk", axis=-1),
        helper.make_node("Max", ["v", "c"], ["y"], name="floor"),
    ]
    weights = [
        numpy_helper.from_array(np.full(8, 0.5, np.float32), "w"),
        numpy_helper.from_array(np.array([3], np.int64), "k"),
        numpy_helper.from_array(np.array(0.1, np.float32), "c"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        weights,
    )
    path, data = tmp_path / "topk.onnx", tmp_path / "topk.npz"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    np.savez(data, x=np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32))
    return path, data


def _fp32_in_plan(plan_path: Path) -> list[str]:
    plan = json.loads(plan_path.read_text())
    return [str(e["node"]) for e in plan["nodes"] if e["precision"] == "fp32"]


def test_analyze_counts_the_fp32_nodes_of_the_build_for_the_target_given(tmp_path: Path) -> None:
    """analyze took no --target and counted the block list of a CPU target's runtime, so for a GPU
    target it said "keeps 2 of 3 nodes in fp32" (TopK and Max) where the build keeps none. Its
    --target now picks the build's runtime (--backend does not: a GPU target's artifact is TensorRT's
    on any backend): its count and list are the build's."""
    path, data = _blocked_ops_model(tmp_path)
    cases = {
        "x86-64-cpu": [],
        "jetson-orin-nano": [],
        "jetson-orin-nano+onnxruntime": ["--backend", "onnxruntime"],
    }
    kept: dict[str, list[str]] = {}
    for case, backend in cases.items():
        target = case.split("+")[0]
        out = tmp_path / case
        json_path = tmp_path / f"{case}.json"
        args = ["--target", target, *backend]
        analysed = run_cli("analyze", path, "--data", data, *args, "--json", json_path)
        assert analysed.code == 0, analysed.stderr
        built = run_cli("build", path, "--precision", "fp16", "--calib-data", data, *args, "-o", out)
        assert built.code == 0, built.stderr
        kept[case] = _fp32_in_plan(out / "topk.fp16.plan.json")
        assert json.loads(json_path.read_text())["fp32_by_rule"] == kept[case], (case, analysed.stdout)
        assert f"build --precision fp16 keeps {len(kept[case])} of 3 nodes in fp32" in analysed.stdout
    assert kept["x86-64-cpu"] == ["topk", "floor"] and kept["jetson-orin-nano"] == []
    # --backend onnxruntime checks a GPU target's artifact here; its bundle's device builds it with
    # TensorRT, whose block list it keeps (docs/design.md, "The converter's block list, per runtime")
    assert kept["jetson-orin-nano+onnxruntime"] == kept["jetson-orin-nano"]


def test_analyze_refuses_an_unknown_target_before_any_work(tmp_path: Path) -> None:
    path, data = _blocked_ops_model(tmp_path)
    result = run_cli("analyze", path, "--data", data, "--target", "jetson-orin-nanoo")
    assert_clean_input_error(result, "jetson-orin-nanoo")


def test_analyze_of_an_fp16_model_says_the_build_takes_it_as_it_is(tmp_path: Path) -> None:
    """An fp16 model (a bundle's artifact): analyze said "build --precision fp16 keeps N of M nodes
    in fp32 by rule" as if it would convert it, where the fp16 build takes it as it is and the
    int8 build refuses it. It now says so, in the build's words."""
    path, data = _blocked_ops_model(tmp_path)
    built = run_cli("build", path, "--precision", "fp16", "--calib-data", data, "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    fp16 = tmp_path / "out" / "topk.fp16.onnx"
    analysed = run_cli("analyze", fp16, "--data", data, "--json", tmp_path / "r.json")
    assert analysed.code == 0, analysed.stderr
    again = run_cli("build", fp16, "--precision", "fp16", "-o", tmp_path / "again")
    assert "topk.fp16.onnx is already an fp16 model: built as it is" in again.stderr
    int8 = run_cli("build", fp16, "--precision", "int8", "--calib-data", data, "-o", tmp_path / "int8")
    assert_clean_input_error(int8, "topk.fp16.onnx is already an fp16 model")
    refusal = int8.stderr.strip().removeprefix("error: ")
    assert "by rule" not in analysed.stdout, analysed.stdout
    said = [line for line in analysed.stdout.splitlines() if "build --precision" in line]
    assert said == [
        "build --precision fp16 takes it as it is (topk.fp16.onnx is already an fp16 model: nothing is "
        f"converted or kept in fp32); build --precision int8 refuses it: {refusal}"
    ], analysed.stdout
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["fp32_by_rule"] == [] and written["fp16_build_as_is"] is True
    assert written["int8_build_refused"] == refusal


def test_analyze_json_names_target_and_runtime_for_an_int8_or_fp16_model_too(tmp_path: Path) -> None:
    """The JSON of an fp32 model names the target and runtime its count is for; that of an int8
    model (the fp16 build refuses it) and of an fp16 one (taken as it is) left both out."""
    int8 = conv_integer_model(tmp_path / "dyn.onnx")
    int8_data = tmp_path / "x.npz"
    np.savez(int8_data, x=np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32))
    path, data = _blocked_ops_model(tmp_path)
    built = run_cli("build", path, "--precision", "fp16", "--calib-data", data, "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    cases = {
        "fp32": (path, data),
        "int8": (int8, int8_data),
        "fp16": (tmp_path / "out" / "topk.fp16.onnx", data),
    }
    for case, (model, case_data) in cases.items():
        json_path = tmp_path / f"{case}.json"
        args = ("--target", "jetson-orin-nano", "--json", json_path)
        analysed = run_cli("analyze", model, "--data", case_data, *args)
        assert analysed.code == 0, (case, analysed.stderr)
        written = json.loads(json_path.read_text())
        assert (written.get("target"), written.get("runtime")) == ("jetson-orin-nano", "tensorrt"), case


def test_analyze_help_says_its_backend_changes_nothing_and_an_unknown_one_is_still_refused(
    tmp_path: Path,
) -> None:
    """Since b24050c the runtime whose ops stay fp32 follows --target alone (a GPU target's artifact
    is TensorRT's on any backend), but analyze's --help still said its count followed --target and
    --backend, and runtime_for kept a backend parameter it only checked. The parameter is gone; the
    help says --backend is taken as build takes it and changes nothing of the count, and an unknown
    backend is still refused in one line."""
    import inspect

    from typer.testing import CliRunner

    import edgedeploy.cli as cli
    from edgedeploy.stages.precision.fp16 import runtime_for

    assert list(inspect.signature(runtime_for).parameters) == ["target"]
    shown = CliRunner().invoke(cli.app, ["analyze", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert shown.exit_code == 0, shown.output
    rows = [" ".join(ln.replace("│", " ").split()) for ln in shown.stdout.splitlines()]
    backend = next(r for r in rows if r.startswith("--backend"))
    assert "changes nothing" in backend and "--target" in backend, backend
    assert "same --target and --backend" not in " ".join(rows)
    path, data = _overflowing_chain(tmp_path)
    refused = run_cli("analyze", path, "--data", data, "--backend", "foo")
    assert_clean_input_error(refused, "unknown backend 'foo'")
