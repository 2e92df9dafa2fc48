"""Legitimate ONNX files that older exporters and the model zoo write, through build, compare and
bundle: weights also listed as graph inputs (IR <= 7), external data, outputs that are inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import Digits, assert_clean_input_error, reflect_padded_data, run_cli, shapeless_model


def mlp(
    path: Path, *, ir: int = 8, opset: int = 17, weights_as_inputs: bool = False, passthrough: bool = False
) -> Path:
    """x[N,16] -> MatMul, Add, Relu, MatMul -> y[N,10]; ``passthrough``: x is an output too."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
        for name, shape in (("W1", (16, 32)), ("B1", (32,)), ("W2", (32, 10)))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "B1"], ["h2"], name="add1"),
        helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
        helper.make_node("MatMul", ["h3", "W2"], ["y"], name="mm2"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims)) for w in weights]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])]
    if passthrough:
        outputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_weights_listed_as_graph_inputs_compare_and_bundle_in_fp16(tmp_path: Path) -> None:
    """IR 6 with the weights also graph inputs (older torch.onnx, the model zoo): the fp16 build's
    compare and bundle failed with Polygraphy's 'Input tensor: W1 | Could not use the provided input'."""
    model = mlp(tmp_path / "m.onnx", ir=6, opset=11, weights_as_inputs=True)
    assert run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "out").code == 0
    fp16 = tmp_path / "out" / "m.fp16.onnx"
    compared = run_cli("compare", model, fp16, "--json", tmp_path / "c.json")
    assert compared.code == 0, compared.stderr
    bundled = run_cli("bundle", "create", model, fp16, "-o", tmp_path / "bundle")
    assert bundled.code == 0, bundled.stderr


def _with_external_data(path: Path, location: str, scale: float = 1.0) -> Path:
    model = onnx.load(mlp(path))
    for w in model.graph.initializer:
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * scale, w.name))
    (path.parent / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def test_fp32_builds_of_external_data_models_keep_their_own_weights(tmp_path: Path) -> None:
    """Two models whose data files are both weights.bin, built into one folder: the data was copied
    under its name, so the second build replaced the first model's weights (its outputs silently
    off by up to 4.8); a location in a subfolder (data/w.bin) was refused."""
    import onnxruntime as ort

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _with_external_data(tmp_path / "a" / "a.onnx", "weights.bin")
    b = _with_external_data(tmp_path / "b" / "b.onnx", "weights.bin", scale=2.0)
    (tmp_path / "c").mkdir()
    c = _with_external_data(tmp_path / "c" / "c.onnx", "data/w.bin")
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    for model in (a, b, c):
        built = run_cli("build", model, "--precision", "fp32", "-o", tmp_path / "out")
        assert built.code == 0, built.stderr
    for model in (a, b, c):
        expected = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
        artifact = tmp_path / "out" / f"{model.stem}.fp32.onnx"
        np.testing.assert_array_equal(ort.InferenceSession(str(artifact)).run(None, {"x": x})[0], expected)


def test_int8_for_a_cpu_target_of_a_model_that_outputs_its_input(tmp_path: Path) -> None:
    """ONNX Runtime's placement quantizes graph inputs, and renamed a quantized graph output's
    producer: an input that is also an output has none (KeyError traceback in write_qdq)."""
    import onnxruntime as ort

    model = mlp(tmp_path / "m.onnx", passthrough=True)
    built = run_cli("build", model, "--precision", "int8", "--target", "x86-64-cpu", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    int8 = onnx.load(tmp_path / "out" / "m.int8.onnx")
    assert [o.name for o in int8.graph.output] == ["y", "x"]
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    _, same = ort.InferenceSession(str(tmp_path / "out" / "m.int8.onnx")).run(None, {"x": x})
    np.testing.assert_array_equal(same, x)  # the input passed through, not its quantized copy


def test_fp16_of_outputs_no_node_produces(tmp_path: Path) -> None:
    """An output that is the graph input, a weight, or one listed twice: the converter's output
    Casts assumed a producing node and the fp16 model failed the checker (refused, with a hint
    that could not help)."""
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    for name, extra in (
        ("input", helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])),
        ("weight", helper.make_tensor_value_info("B1", TensorProto.FLOAT, [32])),
        ("twice", helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])),
    ):
        model = onnx.load(mlp(tmp_path / f"{name}.onnx"))
        model.graph.output.append(extra)
        onnx.save(model, tmp_path / f"{name}.onnx")
        built = run_cli("build", tmp_path / f"{name}.onnx", "--precision", "fp16", "-o", tmp_path / "out")
        assert built.code == 0, built.stderr
        fp16 = tmp_path / "out" / f"{name}.fp16.onnx"
        assert [o.name for o in onnx.load(fp16).graph.output] == [o.name for o in model.graph.output]
        want = ort.InferenceSession(str(tmp_path / f"{name}.onnx")).run(None, {"x": x})
        got = ort.InferenceSession(str(fp16)).run(None, {"x": x})
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(b.astype(np.float32), a, rtol=1e-2, atol=1e-2)


def test_a_model_already_in_fp16_compares_with_its_fp16_build(tmp_path: Path) -> None:
    """The reference stores fp16 itself: the candidate's emulation was built from it and ONNX
    Runtime refused it (MatMul bound to float and float16), with a scratch path in the line."""
    rng = np.random.default_rng(4)
    weights = [
        numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float16), name)
        for name, shape in (("W1", (16, 32)), ("W2", (32, 10)))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Relu", ["h"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 10])], weights,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f16.onnx")
    assert run_cli("build", tmp_path / "f16.onnx", "--precision", "fp16", "-o", tmp_path / "out").code == 0
    fp16 = tmp_path / "out" / "f16.fp16.onnx"
    compared = run_cli("compare", tmp_path / "f16.onnx", fp16, "--json", tmp_path / "c.json")
    assert compared.code == 0, compared.stderr


def test_an_input_without_a_shape_takes_the_shape_given(tmp_path: Path) -> None:
    """An input without even a rank used to be taken as 0-d: random data of shape () (a MatMul
    error from ONNX Runtime), and ``--input x:2x4`` refused as "has 0 dims, not 2"."""
    import json

    model = shapeless_model(tmp_path / "m.onnx")
    prof = run_cli("profile", model, "--input", "x:2x4", "--iterations", "3", "--json", tmp_path / "p.json")
    assert prof.code == 0, prof.stderr
    assert json.loads((tmp_path / "p.json").read_text())
    rank3 = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=rank3)  # any rank is the model's own: 3 dims here
    same = run_cli("compare", model, model, "--data", tmp_path / "d.npz", "--batch-size", "5")
    assert same.code == 0, same.stderr
    assert "cosine" in same.stdout.lower()


def _graph_model(
    path: Path, nodes: list, inputs: list, outputs: list, weights: dict[str, np.ndarray]
) -> Path:
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.5).astype(np.float32)


def test_a_dim_the_model_fixes_at_zero_is_fed_empty(tmp_path: Path) -> None:
    """x[N,4] concatenated with z[N,0]: the 0 was read as a dynamic dim and fed as 1 (ONNX Runtime:
    "Got: 1 Expected: 0"), --input z:8x0 was refused ("dims must be positive") and a data file
    with z of shape (16, 0) "holds 0 samples"."""
    model = _graph_model(
        tmp_path / "m.onnx",
        [
            helper.make_node("Concat", ["x", "z"], ["c"], axis=1),
            helper.make_node("MatMul", ["c", "W"], ["y"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 0]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        {"W": _w(4, 3)},
    )
    built = run_cli("build", model, "--precision", "int8", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    int8 = tmp_path / "out" / "m.int8.onnx"
    assert run_cli("compare", model, int8).code == 0
    assert run_cli("compare", model, int8, "--input", "x:8x4", "--input", "z:8x0").code == 0
    x = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, z=np.zeros((16, 0), np.float32))
    from_file = run_cli("compare", model, int8, "--data", tmp_path / "d.npz")
    assert from_file.code == 0, from_file.stderr
    assert run_cli("profile", model, "--iterations", "3").code == 0
    empty = run_cli("compare", model, int8, "--input", "x:0x4")
    assert empty.code == 2 and "the first (the batch) >= 1" in empty.stderr


def test_random_data_for_a_uint8_image_spans_its_range_so_int8_calibrates_on_it(tmp_path: Path) -> None:
    """Random uint8 pixels were drawn from 0-9: the int8 model calibrated on them clipped real
    images to 4 % of their range (cosine -0.08 on uniform 0-255 pixels) while the default compare,
    on the same narrow data, passed it."""
    model = _graph_model(
        tmp_path / "img.onnx",
        [
            helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["f", "k"], ["n"]),
            helper.make_node("Conv", ["n", "Wc"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["fl"]),
            helper.make_node("Gemm", ["fl", "Wg"], ["y"], transB=1),
        ],
        [helper.make_tensor_value_info("img", TensorProto.UINT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        {"Wc": _w(4, 3, 3, 3), "Wg": _w(5, 4, seed=1), "k": np.array(255.0, np.float32)},
    )
    built = run_cli("build", model, "--precision", "int8", "--target", "x86-64-cpu", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    images = np.random.default_rng(5).integers(0, 256, (16, 3, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "val.npz", img=images)
    real = run_cli("compare", model, tmp_path / "out" / "img.int8.onnx", "--data", tmp_path / "val.npz")
    assert real.code == 0, real.stdout + real.stderr


def test_sources_fill_named_dims_from_the_given_shapes_and_integers_by_width() -> None:
    from calibration.modelinfo import TensorSpec
    from calibration.sources import open_source

    inputs = [
        TensorSpec("a", ("N", "T", 8), "float32"),
        TensorSpec("b", ("N", "T", 8), "float32"),
        TensorSpec("ids", ("N", 6), "int64"),
        TensorSpec("pcm", ("N", 400), "int16"),
    ]
    feed = next(iter(open_source("random", inputs, samples=2, shapes={"a": (2, 5, 8)})))
    assert feed["a"].shape == feed["b"].shape == (2, 5, 8)  # b's T was 1: "share the dim 'T'" error
    assert feed["ids"].min() >= 0 and feed["ids"].max() <= 9
    assert feed["pcm"].min() < -10000 and feed["pcm"].max() > 10000


def test_random_data_gives_the_batch_to_every_input_that_names_its_dim() -> None:
    """silero-vad: input[batch, sequence] beside state[2, batch, 128]. Random data fed the batch
    (8) on the input's dim 0 and 1 on the state's 'batch', and failed its own check ("inputs
    'input' and 'state' share the dim 'batch' but have 8 and 1"); the last, shorter batch too."""
    from calibration.modelinfo import TensorSpec
    from calibration.sources import open_source

    inputs = [
        TensorSpec("input", ("batch", "sequence"), "float32"),
        TensorSpec("state", (2, "batch", 128), "float32"),
        TensorSpec("sr", (), "int64"),
    ]
    source = open_source("random", inputs, batch_size=8, samples=12, shapes={"input": (8, 512)})
    shapes = [(f["input"].shape, f["state"].shape) for f in source]
    assert shapes == [((8, 512), (2, 8, 128)), ((4, 512), (2, 4, 128))]
    assert source.guessed() is None  # nothing fed as 1: both dims are known
    # a batch given through the state's shape is the batch of the other inputs too
    by_state = open_source("random", inputs, batch_size=8, samples=3, shapes={"state": (2, 3, 128)})
    assert [f["input"].shape for f in by_state] == [(3, 1)]
    assert by_state.guessed() is not None and "input 3x1" in by_state.guessed()


def test_an_initializer_output_keeps_the_fp16_emulation_in_compare(tmp_path: Path) -> None:
    """The fp16 build renames a weight that is a graph output (K -> K__value behind an Identity):
    compare then ran the candidate as plain ONNX and said it "was not converted from this
    reference", losing the fp16 overflow check."""
    model = _graph_model(
        tmp_path / "k.onnx",
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("K", TensorProto.FLOAT, [3]),
        ],
        {"W": _w(8, 4), "K": _w(3, seed=2)},
    )
    assert run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "out").code == 0
    compared = run_cli("compare", model, tmp_path / "out" / "k.fp16.onnx")
    assert compared.code == 0, compared.stderr
    assert "run as: fp16 (CPU emulation" in " ".join(compared.stdout.split())
    assert "not converted from this reference" not in compared.stderr


def test_float64_models_profile_at_their_batch_and_say_fp16_changes_nothing(tmp_path: Path) -> None:
    """A float64 MatMul+Add with a fixed batch of 2: profile refused its defaults ("static batch
    of 2; cannot profile batch size(s) 1 (export with --dynamic-batch)"), and the fp16 build's plan
    listed both nodes as fp16 while the artifact stayed float64."""
    import json

    dbl = TensorProto.DOUBLE
    model = _graph_model(
        tmp_path / "d.onnx",
        [
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "B"], ["y"], name="add"),
        ],
        [helper.make_tensor_value_info("x", dbl, [2, 8])],
        [helper.make_tensor_value_info("y", dbl, [2, 4])],
        {"W": _w(8, 4).astype(np.float64), "B": _w(4).astype(np.float64)},
    )
    prof = run_cli("profile", model, "--iterations", "3", "--json", tmp_path / "p.json")
    assert prof.code == 0, prof.stderr
    assert [b["batch_size"] for b in json.loads((tmp_path / "p.json").read_text())["batches"]] == [2]
    built = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "out")
    assert built.code == 0 and "computes in float64 (2 node(s))" in built.stderr, built.stderr
    plan = json.loads((tmp_path / "out" / "d.fp16.plan.json").read_text())
    assert [n["precision"] for n in plan["nodes"]] == ["float64", "float64"]
    int8 = run_cli("build", model, "--precision", "int8", "-o", tmp_path / "out8")
    # since c0ca3c8 the refusal names the node and why it stays float
    assert int8.code == 2 and "nothing to quantize: MatMul 'mm' is left in float" in int8.stderr, int8.stderr
    assert "is not float32" in int8.stderr


def test_int8_says_which_layers_inside_control_flow_stay_float(tmp_path: Path) -> None:
    """Convs inside If branches stay float in the Q/DQ model (correct outputs on both branches);
    the build said nothing of it."""
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Conv", ["x", "Wc"], ["t"], pads=[1, 1, 1, 1])],
        "then",
        [],
        [helper.make_tensor_value_info("t", f, [1, 4, 8, 8])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Conv", ["x", "Wc2"], ["e"], pads=[1, 1, 1, 1])],
        "else",
        [],
        [helper.make_tensor_value_info("e", f, [1, 4, 8, 8])],
    )
    model = _graph_model(
        tmp_path / "if.onnx",
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
            helper.make_node("Greater", ["mean", "zero"], ["cond"]),
            helper.make_node("If", ["cond"], ["br"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Flatten", ["br"], ["fl"]),
            helper.make_node("MatMul", ["fl", "Wm"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", f, [1, 5])],
        {
            "Wc": _w(4, 3, 3, 3),
            "Wc2": _w(4, 3, 3, 3, seed=1),
            "zero": np.array(0.0, np.float32),
            "Wm": _w(256, 5),
        },
    )
    built = run_cli("build", model, "--precision", "int8", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    assert (
        "int8: 2 Conv/ConvTranspose/Gemm/MatMul node(s) inside If/Loop/Scan bodies stay float" in built.stderr
    )


def test_the_analysis_count_says_it_leaves_out_the_nodes_the_user_named(tmp_path: Path) -> None:
    """With --fp32-nodes mm1 the line read "0 node(s) kept in fp32" while the plan kept mm1."""
    model = mlp(tmp_path / "m.onnx")
    built = run_cli("build", model, "--precision", "fp16", "--fp32-nodes", "mm1", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    assert "0 node(s) kept in fp32 by it, besides those --fp32-nodes/--fp32-ops name" in built.stderr
    # and the whole count, as the JSON and the plan give it (the line above left out the named one)
    import json

    plan = json.loads((tmp_path / "out" / "m.fp16.plan.json").read_text())
    whole = f"fp16 model: 1 of {plan['nodes_total']} node(s) kept in fp32 (why, per node: m.fp16.plan.json)"
    assert plan["nodes_fp32"] == 1 and whole in built.stderr, built.stderr
    assert "besides" not in run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "o2").stderr


def test_an_int8_build_of_an_opset_11_model_says_its_q_dq_model_is_at_opset_13(tmp_path: Path) -> None:
    """Per-channel Q/DQ needs opset 13, so calibration converts the model first. The Q/DQ model
    then came out at another opset than the fp32 and fp16 artifacts of the same input, unsaid."""
    model = mlp(tmp_path / "m.onnx", opset=11)
    built = run_cli("build", model, "--precision", "int8", "--calib-samples", "16", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    assert "the Q/DQ model is at opset 13, not the input model's 11" in built.stderr
    qdq = onnx.load(tmp_path / "out" / "m.int8.onnx")
    assert {o.domain: o.version for o in qdq.opset_import}[""] == 13
    report = (tmp_path / "out" / "m.calib.json").read_text()
    assert "not the input model's 11" in report
    current = mlp(tmp_path / "new.onnx")  # opset 17: nothing converted, nothing said
    built = run_cli("build", current, "--precision", "int8", "--calib-samples", "16", "-o", tmp_path / "out2")
    assert built.code == 0, built.stderr
    assert "not the input model" not in built.stderr


def _loads_at_ort_defaults(model: Path, batch: int = 2) -> subprocess.CompletedProcess[str]:
    """A plain ``onnxruntime.InferenceSession(model)`` (ONNX Runtime's default options, as any
    user's application makes it) loading and running ``model`` on ones, in a process of its own:
    a segfault fails the test instead of ending pytest."""
    code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1])\n"
        "feed = {i.name: np.ones([d if isinstance(d, int) else int(sys.argv[2]) for d in i.shape],"
        " np.float16 if 'float16' in i.type else np.float32) for i in s.get_inputs()}\n"
        "s.run(None, feed)\n"
    )
    command = [sys.executable, "-c", code, str(model), str(batch)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_an_fp16_transpose_into_a_linear_layer_builds_compares_and_verifies_on_the_device(
    tmp_path: Path,
) -> None:
    """A linear layer after a 3-D transpose (a GRU's or CRNN's head, a [T, B, C] encoder): ONNX
    Runtime's NchwcTransformer died of SIGSEGV loading the fp16 model at ORT_ENABLE_ALL, so `build
    --precision fp16` ended in "Segmentation fault" with no message (exit 139), and so did the
    bundle's verify.sh on the device. edgedeploy then switched the optimizer off in its own
    sessions, but the artifact still killed any application that loaded it with ONNX Runtime's
    defaults; the fp16 build now keeps that Transpose in fp32, which loads."""
    from calibration.graphs import ort_crashing_optimizers

    model = _graph_model(
        tmp_path / "head.onnx",
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
            helper.make_node("MatMul", ["t", "W"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 20, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [20, "batch", 3])],
        {"W": _w(16, 3)},
    )
    assert ort_crashing_optimizers(onnx.load(model)) == []  # float32: nothing to switch off
    built = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    fp16 = tmp_path / "out" / "head.fp16.onnx"
    for artifact in (fp16, tmp_path / "out" / "head.fp16.ort.onnx"):
        assert ort_crashing_optimizers(onnx.load(artifact)) == []
        loaded = _loads_at_ort_defaults(artifact)
        assert loaded.returncode == 0, (artifact.name, loaded.returncode, loaded.stderr[-500:])
    plan = json.loads((tmp_path / "out" / "head.fp16.plan.json").read_text())
    kept = [n for n in plan["nodes"] if n["precision"] == "fp32"]
    assert [n["op"] for n in kept] == ["Transpose"] and "NchwcTransformer" in kept[0]["reason"]
    compared = run_cli("compare", model, fp16, "--min-cosine", "0.999")
    assert compared.code == 0, compared.stderr
    bundled = run_cli("bundle", model, fp16, "-o", tmp_path / "bundle")
    assert bundled.code == 0, bundled.stderr
    assert "disabled_optimizers" not in (tmp_path / "bundle" / "README.md").read_text()
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    script = tmp_path / "bundle" / "scripts" / "verify.sh"
    verified = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_fp16_lstm_and_gru_heads_load_at_onnx_runtime_defaults(tmp_path: Path) -> None:
    """A batch-first LSTM (and a bidirectional GRU) with a linear head, as torch exports them:
    Transpose [B, T, C] -> [T, B, C], the RNN, Transpose back, MatMul. The fp16 build wrote an
    artifact that killed ONNX Runtime (SIGSEGV in NchwcTransformer) at its default options, and
    build said "(built)"; it now loads and runs, with the fp16 model's outputs."""
    import onnxruntime as ort

    hidden, feats = 16, 8
    x = np.random.default_rng(1).standard_normal((4, 10, feats)).astype(np.float32)
    for rnn, gates, dirs in (("LSTM", 4, 1), ("GRU", 3, 2)):
        path = tmp_path / f"{rnn.lower()}.onnx"
        direction = "forward" if dirs == 1 else "bidirectional"
        _graph_model(
            path,
            [
                helper.make_node("Transpose", ["x"], ["tbc"], perm=[1, 0, 2]),
                helper.make_node(
                    rnn, ["tbc", "Wr", "Rr", "Br"], ["y4"], hidden_size=hidden, direction=direction
                ),
                helper.make_node("Transpose", ["y4"], ["tbdh"], perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", ["tbdh", "shape"], ["tbh"]),
                helper.make_node("Transpose", ["tbh"], ["bth"], perm=[1, 0, 2]),
                helper.make_node("MatMul", ["bth", "W"], ["y"]),
            ],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10, feats])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10, 3])],
            {
                "Wr": _w(dirs, gates * hidden, feats, seed=1),
                "Rr": _w(dirs, gates * hidden, hidden, seed=2),
                "Br": _w(dirs, 2 * gates * hidden, seed=3),
                "shape": np.array([10, -1, dirs * hidden], np.int64),
                "W": _w(dirs * hidden, 3, seed=4),
            },
        )
        built = run_cli("build", path, "--precision", "fp16", "-o", tmp_path / rnn)
        assert built.code == 0, built.stderr
        stem = path.name.removesuffix(".onnx")
        for name in (f"{stem}.fp16.onnx", f"{stem}.fp16.ort.onnx"):
            loaded = _loads_at_ort_defaults(tmp_path / rnn / name)
            assert loaded.returncode == 0, (rnn, name, loaded.returncode, loaded.stderr[-500:])
        fp32 = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
        fp16 = ort.InferenceSession(str(tmp_path / rnn / f"{stem}.fp16.onnx")).run(None, {"x": x})[0]
        np.testing.assert_allclose(fp16, fp32, atol=0.02)


def test_a_model_float16_before_the_build_says_how_onnx_runtime_loads_it(tmp_path: Path) -> None:
    """A model float16 before the build (the conversion leaves it as it is) with a Transpose of
    axis 1 into a MatMul still kills ONNX Runtime at its default options. build said "(built)"
    without a word and the sidecar said "ORT_ENABLE_ALL (run)", though its check had run with
    NchwcTransformer off; build now warns once with the session option that loads it, and the
    sidecar records that option. compare, profile and the bundle load it as edgedeploy does."""
    from calibration.graphs import NCHWC_TRANSFORMER, ort_crashing_optimizers

    model = _graph_model(
        tmp_path / "half.onnx",
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
            helper.make_node("MatMul", ["t", "W"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 20, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [20, "batch", 3])],
        {"W": _w(16, 3).astype(np.float16)},
    )
    assert ort_crashing_optimizers(onnx.load(model)) == [NCHWC_TRANSFORMER]
    built = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "out")
    assert built.code == 0, built.stderr
    warned = [line for line in built.stderr.splitlines() if "SIGSEGV" in line]
    assert len(warned) == 1, built.stderr
    assert "half.fp16.onnx and half.fp16.ort.onnx" in warned[0]
    assert "disabled_optimizers=['NchwcTransformer']" in warned[0]
    assert "ORT_ENABLE_EXTENDED" in warned[0]
    sidecar = json.loads((tmp_path / "out" / "half.fp16.ort.json").read_text())
    assert sidecar["disabled_optimizers"] == [NCHWC_TRANSFORMER]
    assert "ORT_ENABLE_ALL without NchwcTransformer (run)" in sidecar["graph_optimization_level"]
    again = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "out")  # up to date: said again
    assert again.code == 0 and "(up to date, skipped)" in again.stdout + again.stderr
    assert "disabled_optimizers=['NchwcTransformer']" in again.stderr
    artifact = tmp_path / "out" / "half.fp16.ort.onnx"
    compared = run_cli("compare", model, artifact)
    assert compared.code == 0, compared.stderr
    profiled = run_cli("profile", artifact, "--iterations", "3", "--input", "x:2x20x16")
    assert profiled.code == 0, profiled.stderr
    reference = onnx.load(model)  # the same model in float32, as the bundle's reference
    for value in (reference.graph.input[0], reference.graph.output[0]):
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    reference.graph.initializer[0].CopyFrom(numpy_helper.from_array(_w(16, 3), "W"))
    onnx.save(reference, tmp_path / "fp32.onnx")
    fp16 = tmp_path / "out" / "half.fp16.onnx"
    bundled = run_cli("bundle", tmp_path / "fp32.onnx", fp16, "-o", tmp_path / "bundle")
    assert bundled.code == 0, bundled.stderr
    assert "disabled_optimizers" in (tmp_path / "bundle" / "README.md").read_text()


def test_a_built_artifact_random_inputs_cannot_run_is_not_called_built_without_a_word(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """silero-vad's fp16 build without --input said "(built)" of an .ort.onnx that was only loaded:
    random inputs at 1 fail the source model too. The line says so, and with --input the built
    artifact is run on those shapes."""
    out = tmp_path / "out"
    built = run_cli("build", reflect_padded_onnx, "--precision", "fp16", "--no-fp16-analysis", "-o", out)
    assert built.code == 0, built.stderr
    assert "(loaded, not run: random inputs fail the model it was made from too" in built.stdout
    assert "(built" not in built.stdout  # not run: not called built (its exit 0: the data is at fault)
    assert "give its input shapes with --input NAME:SHAPE, or real inputs with --calib-data)" in built.stdout
    shaped = run_cli(
        "build", reflect_padded_onnx, "--precision", "fp16", "--input", "x:2x16", "-o", tmp_path / "o2"
    )
    assert shaped.code == 0 and shaped.stdout.strip().endswith("(built)"), shaped.stdout
    import json

    sidecar = json.loads((tmp_path / "o2" / "reflect.fp16.ort.json").read_text())
    assert sidecar["checked"] == "loaded and run once"


def test_a_build_whose_random_inputs_fail_at_the_given_shapes_names_the_data_option(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """With --input given, the line said "built; loaded, not run: random inputs fail the model ...;
    give its input shapes with --input NAME:SHAPE": the artifact was not run, and the shapes had been
    given (a BERT model's token types of 0-9 for a 2-row table). It now says it was loaded, not run,
    and names the data option; exit 0 as before (the artifact is made; the random data is at fault)."""
    out = tmp_path / "out"
    built = run_cli(
        "build", reflect_padded_onnx, "--precision", "fp16", "--no-fp16-analysis", "--input", "x:2x2",
        "-o", out,
    )  # fmt: skip
    assert built.code == 0, built.stderr
    line = " ".join(built.stdout.split()).split(" output: ", 1)[1]  # the backend's line, unwrapped
    assert "(loaded, not run: random inputs fail the model it was made from too" in line, line
    assert "(built" not in line and "--input" not in line, line
    assert line.endswith("; give real inputs with --calib-data)"), line


def test_an_fp32_build_takes_input_shapes_for_its_run_once_check_and_advises_only_what_it_takes(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """An fp32 build random inputs of 1 could not run said "loaded, not run ...; give its input shapes
    with --input NAME:SHAPE, or real inputs with --calib-data", and then refused both ("--input: not
    used by an fp32 build"). --input now gives the shapes its artifact is run on, as for fp16 and
    int8 (every artifact is run once before it is called built); the advice names --input only,
    which is what an fp32 build takes, and none where the shapes given fail the model too."""
    bare = run_cli("build", reflect_padded_onnx, "--precision", "fp32", "-o", tmp_path / "o1")
    assert bare.code == 0, bare.stderr
    line = " ".join(bare.stdout.split()).split(" output: ", 1)[1]  # the backend's line, unwrapped
    assert "(loaded, not run: random inputs fail the model" in line, line
    assert line.endswith("; give its input shapes with --input NAME:SHAPE)"), line
    shaped = run_cli(
        "build", reflect_padded_onnx, "--precision", "fp32", "--input", "x:2x16", "-o", tmp_path / "o2"
    )
    assert shaped.code == 0 and shaped.stdout.strip().endswith("(built)"), (shaped.stdout, shaped.stderr)
    sidecar = json.loads((tmp_path / "o2" / "reflect.fp32.ort.json").read_text())
    assert sidecar["checked"] == "loaded and run once"
    short = run_cli(
        "build", reflect_padded_onnx, "--precision", "fp32", "--input", "x:2x2", "-o", tmp_path / "o3"
    )
    assert short.code == 0, short.stderr
    line = " ".join(short.stdout.split()).split(" output: ", 1)[1]
    assert "(loaded, not run: random inputs fail the model" in line and line.endswith(")"), line
    assert "--input" not in line and "--calib-data" not in line, line
    # shapes the model refuses are refused, as fp16's and int8's random data refuses them: not dropped
    misspelt = run_cli(
        "build", reflect_padded_onnx, "--precision", "fp32", "--input", "y:2x16", "-o", tmp_path / "o4"
    )
    assert_clean_input_error(misspelt, "--input y:2x16: the model has no input 'y'")
    assert not (tmp_path / "o4").exists()


def test_a_built_artifact_is_run_on_the_calibration_data_it_was_built_with(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """silero-vad built with --calib-data was "loaded, not run: random inputs fail the model" and told
    to give --input, although the build had just run the model on that data: its first batch is
    what the built artifact runs on now."""
    data = reflect_padded_data(tmp_path)
    built = run_cli(
        "build", reflect_padded_onnx, "--precision", "fp16", "--calib-data", data, "-o", tmp_path / "o"
    )
    assert built.code == 0 and built.stdout.strip().endswith("(built)"), built.stdout
    sidecar = json.loads((tmp_path / "o" / "reflect.fp16.ort.json").read_text())
    assert sidecar["checked"] == "loaded and run once"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_build_imports_a_loader_script_once(digits: Digits, tmp_path: Path, precision: str) -> None:
    """The build's check of the built artifact opened --calib-data again for its first batch, after
    the fp16 analysis or the calibration had read it: a load_data() script was imported (run) a
    second time. The precision step hands its first batch on; the artifact runs on it."""
    arrays = tmp_path / "arrays.npy"
    np.save(arrays, digits.x_train[:32])
    counter = tmp_path / "runs.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n"
        f"with open({str(counter)!r}, 'a') as fh:\n    fh.write('import\\n')\n\n"
        "def load_data():\n"
        f"    a = np.load({str(arrays)!r})\n"
        "    for i in range(0, len(a), 8):\n        yield {'input': a[i : i + 8]}\n"
    )
    out = tmp_path / "o"
    built = run_cli("build", digits.onnx_path, "--precision", precision, "--calib-data", loader, "-o", out)
    assert built.code == 0 and built.stdout.strip().endswith("(built)"), built.stdout + built.stderr
    assert counter.read_text().splitlines() == ["import"]
    sidecar = json.loads(next(out.glob(f"*.{precision}.ort.json")).read_text())
    assert sidecar["checked"] == "loaded and run once"


def test_a_model_whose_shape_constants_are_external_data_builds(tmp_path: Path) -> None:
    """A ReduceMean whose axes (an initializer) were saved as external data, as onnx saves every
    tensor with size_threshold=0: onnx's full check by path cannot read them for shape inference
    ("Cannot parse data from external tensors"), so export and build refused a valid model."""
    model = onnx.load(mlp(tmp_path / "m.onnx", opset=18))  # ReduceMean takes its axes as an input
    model.graph.node[-1].output[0] = "z"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    model.graph.node.append(helper.make_node("ReduceMean", ["z", "axes"], ["y"], name="mean"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]))
    (tmp_path / "ext").mkdir()
    ext = tmp_path / "ext" / "m.onnx"
    onnx.save(model, ext, save_as_external_data=True, location="weights.bin", size_threshold=0)
    exported = run_cli("export", ext, "-o", tmp_path / "c.onnx")
    assert exported.code == 0, exported.stderr
    for precision in ("fp32", "fp16", "int8"):
        built = run_cli("build", ext, "--precision", precision, "-o", tmp_path / "out")
        assert built.code == 0, built.stderr
    artifacts = sorted((tmp_path / "out").glob("*.onnx"))
    assert {a.name for a in artifacts} >= {f"m.{p}.onnx" for p in ("fp32", "fp16", "int8")}
    assert {a.name for a in artifacts} >= {f"m.{p}.ort.onnx" for p in ("fp32", "fp16", "int8")}
    for artifact in [tmp_path / "c.onnx", *artifacts]:
        onnx.checker.check_model(str(artifact), full_check=True)


def test_nodes_named_alike_in_one_graph_build_fp16_and_int8_with_unique_names(tmp_path: Path) -> None:
    """Two MatMuls named 'layer' and two unnamed nodes (onnx's checker takes it; ONNX Runtime refuses
    two nodes of one name in one graph): build --precision int8 refused it ("ONNX Runtime cannot load
    m.onnx itself (... two nodes with same node name (layer))"). Both builds now work on a copy
    whose later 'layer' is 'layer#2' (the unnamed nodes stay unnamed in int8, OpType_N in fp16), and
    the artifacts load in ONNX Runtime and pass the full checker; compare of the source itself is
    refused, with ONNX Runtime's reason, as ONNX Runtime and Polygraphy refuse it."""
    path = mlp(tmp_path / "m.onnx")
    model = onnx.load(path)
    for node, name in zip(model.graph.node, ["layer", "", "", "layer"], strict=True):
        node.name = name
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    for precision in ("fp16", "int8"):
        out = tmp_path / precision
        built = run_cli("build", path, "--precision", precision, "--calib-data", data, "-o", out)
        assert built.code == 0, built.stderr
        artifact = onnx.load(out / f"m.{precision}.onnx")
        onnx.checker.check_model(artifact, full_check=True)
        names = [n.name for n in artifact.graph.node if n.op_type == "MatMul"]
        assert names == ["layer", "layer#2"], names
    plan = json.loads((tmp_path / "fp16" / "m.fp16.plan.json").read_text())
    assert [e["node"] for e in plan["nodes"]] == ["layer", "Add_2", "Relu_3", "layer#2"], plan
    compared = run_cli("compare", path, tmp_path / "fp16" / "m.fp16.onnx", "--data", data)
    assert compared.code == 2 and "two nodes with same node name (layer)" in compared.stderr, compared.stderr


def _three_matmuls_two_named_layer(path: Path) -> Path:
    """x[N,16] -> MatMul 'layer', Relu 'act', MatMul 'mid', Relu 'act', MatMul 'layer' -> y[N,10]:
    names repeated in one graph, which our copy calls layer, act, mid, act#2, layer#2."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
        for name, shape in (("W1", (16, 16)), ("W2", (16, 16)), ("W3", (16, 10)))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"], name="layer"),
        helper.make_node("Relu", ["a"], ["b"], name="act"),
        helper.make_node("MatMul", ["b", "W2"], ["c"], name="mid"),
        helper.make_node("Relu", ["c"], ["d"], name="act"),
        helper.make_node("MatMul", ["d", "W3"], ["y"], name="layer"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], weights,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_node_name_the_model_repeats_selects_every_node_that_bears_it(tmp_path: Path) -> None:
    """Our copy renames the later of two nodes named 'layer' 'layer#2'; --exclude-nodes layer (int8)
    and --fp32-nodes layer (fp16) then matched the first one only, though the user wrote the name the
    model gives both. A name (or pattern) now selects every node that bore it in the model, and the
    calibration report and the precision plan say which nodes it matched; 'act#2' still selects
    that node alone."""
    path = _three_matmuls_two_named_layer(tmp_path / "m.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    calibrated = run_cli("calibrate", path, "--data", data, "--exclude-nodes", "layer",
                         "--target", "x86-64-cpu", "-o", tmp_path / "i8")  # fmt: skip
    assert calibrated.code == 0, calibrated.stderr
    report = json.loads((tmp_path / "i8" / "m.calib.json").read_text())
    assert report["excluded_nodes"] == ["layer", "layer#2"], report["excluded_nodes"]
    assert report["exclude_nodes_matched"] == {"layer": ["layer", "layer#2"]}
    artifact = onnx.load(tmp_path / "i8" / "m.int8.onnx")
    producers = {o: n.op_type for n in artifact.graph.node for o in n.output}
    dequantized = {n.name: producers.get(n.input[0]) == "DequantizeLinear"
                   for n in artifact.graph.node if n.op_type == "MatMul"}  # fmt: skip
    assert dequantized == {"layer": False, "mid": True, "layer#2": False}, dequantized
    built = run_cli("build", path, "--precision", "fp16", "--fp32-nodes", "layer,act#2",
                    "-o", tmp_path / "f16", "--calib-data", data, "--target", "x86-64-cpu")  # fmt: skip
    assert built.code == 0, built.stderr
    plan = json.loads((tmp_path / "f16" / "m.fp16.plan.json").read_text())
    kept = {e["node"]: e.get("reason") for e in plan["nodes"] if e["precision"] == "fp32"}
    assert kept == {"layer": "--fp32-nodes", "layer#2": "--fp32-nodes layer", "act#2": "--fp32-nodes"}, kept
    assert plan["fp32_nodes_matched"] == {"layer": ["layer", "layer#2"], "act#2": ["act#2"]}


def test_fp32_nodes_and_fp32_ops_given_twice_keep_what_each_names(tmp_path: Path) -> None:
    """build --fp32-nodes layer --fp32-nodes mid kept 'mid' only: the option took one value and the
    last one given replaced the others without a word (calibrate's --exclude-nodes repeats). Both
    options now repeat, each value a comma-separated list as before."""
    path = _three_matmuls_two_named_layer(tmp_path / "m.onnx")
    built = run_cli("build", path, "--precision", "fp16", "--fp32-nodes", "layer", "--fp32-nodes", "mid",
                    "--fp32-ops", "Relu", "--fp32-ops", "Add,Mul", "-o", tmp_path / "f16")  # fmt: skip
    assert built.code == 0, built.stderr
    plan = json.loads((tmp_path / "f16" / "m.fp16.plan.json").read_text())
    kept = {e["node"]: e.get("reason") for e in plan["nodes"] if e["precision"] == "fp32"}
    assert kept == {"layer": "--fp32-nodes", "act": "--fp32-ops Relu", "mid": "--fp32-nodes",
                    "act#2": "--fp32-ops Relu", "layer#2": "--fp32-nodes layer"}, kept  # fmt: skip
