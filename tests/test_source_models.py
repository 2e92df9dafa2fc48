"""What a source model is and whether it can be used at all, decided before or instead of the work:
an fp32 model with float16 Casts or float16 inputs and outputs is converted (not taken for an fp16
model); a model ONNX Runtime cannot load is named as the culprit, not what was made of it; a model
without outputs is refused by every command that loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import CliResult, assert_clean_input_error, files_under, run_cli


def _save(path: Path, nodes: list[onnx.NodeProto], inputs: list, outputs: list, weights: list) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def _weight(name: str, *shape: int, dtype: type = np.float32, seed: int = 0) -> onnx.TensorProto:
    values = np.random.default_rng(seed).standard_normal(shape) * 0.1
    return numpy_helper.from_array(values.astype(dtype), name)


def castmix(path: Path) -> Path:
    """An fp32 MLP that rounds one activation through float16 (Cast to fp16, Cast back)."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["t"], name="mm1"),
        helper.make_node("Relu", ["t"], ["u"], name="relu"),
        helper.make_node("Cast", ["u"], ["uh"], to=TensorProto.FLOAT16, name="to_half"),
        helper.make_node("Cast", ["uh"], ["uf"], to=TensorProto.FLOAT, name="to_float"),
        helper.make_node("MatMul", ["uf", "W2"], ["y"], name="mm2"),
    ]
    return _save(
        path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [_weight("W", 64, 64), _weight("W2", 64, 10, seed=1)],
    )  # fmt: skip


def f16io(path: Path) -> Path:
    """fp32 weights and compute between a float16 input and a float16 output."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT, name="c1"),
        helper.make_node("MatMul", ["xf", "W"], ["t"], name="a"),
        helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT16, name="c2"),
    ]
    return _save(
        path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 8])], [_weight("W", 8, 8)],
    )  # fmt: skip


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
    return np.asarray(session.run(None, {spec.name: x.astype(dtype)})[0], dtype=np.float32)


@pytest.mark.parametrize("make", [castmix, f16io], ids=["castmix", "f16io"])
def test_an_fp32_model_with_fp16_casts_or_io_is_converted_to_fp16(tmp_path: Path, make) -> None:
    """Was: 'castmix.onnx is already an fp16 model: built as it is' (its fp32 weights written
    unchanged as the fp16 artifact), and --precision int8 refused as 'already an fp16 model'."""
    model = make(tmp_path / "m.onnx")
    built = run_cli("build", model, "--precision", "fp16", "-o", tmp_path / "fp16")
    assert built.code == 0, built.stderr
    assert "already" not in built.stdout + built.stderr
    fp16 = tmp_path / "fp16" / "m.fp16.onnx"
    onnx.checker.check_model(str(fp16), full_check=True)
    weights = onnx.load(fp16).graph.initializer
    assert weights and all(w.data_type == TensorProto.FLOAT16 for w in weights)
    shape = [3, 64] if make is castmix else [2, 8]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    reference, got = _run(model, x), _run(fp16, x)
    np.testing.assert_allclose(got, reference, rtol=1e-2, atol=1e-2)
    # compare emulates the fp16 build from the fp32 model (a float16 output stays float16 there)
    compared = run_cli("compare", model, fp16, "--json", tmp_path / "c.json")
    assert compared.code == 0, compared.stderr
    assert "emulation" in compared.stdout
    int8 = run_cli("build", model, "--precision", "int8", "-o", tmp_path / "int8")
    assert int8.code == 0, int8.stderr
    assert (tmp_path / "int8" / "m.int8.onnx").is_file()
    # the fp16 artifact itself is an fp16 model: built as it is
    again = run_cli("build", fp16, "--precision", "fp16", "-o", tmp_path / "again")
    assert again.code == 0 and "already an fp16 model" in again.stdout + again.stderr, again.stderr


def test_is_fp16_model_decides_by_the_weights(tmp_path: Path) -> None:
    from edgedeploy.stages.build import precision_of_model
    from edgedeploy.stages.precision.emulate import is_fp16_model, onnx_precision

    x16 = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 8])
    x32 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y16 = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 8])
    y32 = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    mm = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    cases = {
        "castmix": (castmix(tmp_path / "castmix.onnx"), False),
        "f16io": (f16io(tmp_path / "f16io.onnx"), False),
        "fp16 weights": (
            _save(tmp_path / "h.onnx", [mm], [x16], [y16], [_weight("W", 8, 8, dtype=np.float16)]), True
        ),
        # an fp16 build with one layer kept in fp32: its other layer's weight is float16
        "fp32 island": (
            _save(
                tmp_path / "i.onnx",
                [
                    helper.make_node("MatMul", ["x", "W"], ["t"], name="mm1"),
                    helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT, name="to32"),
                    helper.make_node("MatMul", ["tf", "W2"], ["y"], name="mm2"),
                ],
                [x16], [y32], [_weight("W", 8, 8, dtype=np.float16), _weight("W2", 8, 8)],
            ),
            True,
        ),
        # weights that are graph inputs too (IR 4-8): the converter casts them to float16 for the layers
        "weights cast to fp16": (
            _save(
                tmp_path / "c16.onnx",
                [
                    helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16, name="in16"),
                    helper.make_node("Cast", ["W"], ["Wh"], to=TensorProto.FLOAT16, name="w16"),
                    helper.make_node("MatMul", ["xh", "Wh"], ["t"], name="mm"),
                    helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT, name="out32"),
                ],
                [x32, helper.make_tensor_value_info("W", TensorProto.FLOAT, [8, 8])],
                [y32],
                [_weight("W", 8, 8)],
            ),
            True,
        ),
        # float16 weights cast to float32 for the layers (ONNX Runtime's saved copy of an fp16 model)
        "fp16 weights cast to fp32": (
            _save(
                tmp_path / "c32.onnx",
                [
                    helper.make_node("Cast", ["W"], ["Wf"], to=TensorProto.FLOAT, name="w32"),
                    helper.make_node("MatMul", ["x", "Wf"], ["y"], name="mm"),
                ],
                [x32], [y32], [_weight("W", 8, 8, dtype=np.float16)],
            ),
            True,
        ),
        # an fp16 build whose only layer stays fp32 (its weight overflows fp16): its Relu runs in fp16
        "fp32 layer, fp16 Relu": (
            _save(
                tmp_path / "l32.onnx",
                [
                    helper.make_node("MatMul", ["x", "W"], ["t"], name="mm"),
                    helper.make_node("Cast", ["t"], ["th"], to=TensorProto.FLOAT16, name="to16"),
                    helper.make_node("Relu", ["th"], ["r"], name="relu"),
                    helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="to32"),
                ],
                [x32], [y32], [_weight("W", 8, 8)],
            ),
            True,
        ),
        # no weights: what the nodes compute (a Cast pair alone does not make it fp16)
        "no weights, fp32 Relu": (
            _save(
                tmp_path / "r.onnx",
                [
                    helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("Cast", ["r"], ["h"], to=TensorProto.FLOAT16, name="c1"),
                    helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT, name="c2"),
                ],
                [x32], [y32], [],
            ),
            False,
        ),
        "no weights, fp16 Relu": (
            _save(
                tmp_path / "r16.onnx",
                [
                    helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="c1"),
                    helper.make_node("Relu", ["h"], ["r"], name="relu"),
                    helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="c2"),
                ],
                [x32], [y32], [],
            ),
            True,
        ),
    }  # fmt: skip
    # fp16 storage to emulate, but its one heavy layer computes in fp32: labelled mixed, not fp16
    labels = {"fp32 layer, fp16 Relu": "mixed"}
    for name, (path, fp16) in cases.items():
        proto = onnx.load(path)
        assert is_fp16_model(proto) is fp16, name
        # build (and bundle) read a model's precision as profile and compare record it
        label = labels.get(name, "fp16" if fp16 else "fp32")
        assert precision_of_model(path) == onnx_precision(proto) == label, name


def test_emulating_an_fp16_build_keeps_float16_inputs_and_outputs_float16(tmp_path: Path) -> None:
    """The emulation ended a float16 graph output with a Cast to float: ONNX Runtime refused it
    ('Type (tensor(float16)) of output arg (y) of node (y__back32) does not match')."""
    from edgedeploy.stages.precision.emulate import emulate_fp16

    model = onnx.load(f16io(tmp_path / "f16io.onnx"))
    for round_io in (False, True):
        emulated = emulate_fp16(model, fp32_nodes=(), round_io=round_io)
        session = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.ones((2, 8), np.float16)
        assert session.run(None, {"x": x})[0].dtype == np.float16


def _dupnodes(path: Path) -> Path:
    weight = _weight("W", 8, 8)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["t"], name="dup"),
        helper.make_node("Relu", ["t"], ["u"], name="dup"),
        helper.make_node("MatMul", ["u", "W"], ["y"], name="dup"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    return _save(path, nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [weight])


def _opset40(path: Path) -> Path:
    model = onnx.load(_dupnodes(path))
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    model.opset_import[0].version = 40
    onnx.save(model, path)
    return path


def _one_error(result: CliResult, *needles: str) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.code == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("make", [_dupnodes, _opset40], ids=["dupnodes", "opset40"])
def test_a_source_model_onnx_runtime_cannot_load_is_named_itself(tmp_path: Path, make) -> None:
    """Was: 'ONNX Runtime cannot load the fp16 model of dupnodes.onnx (... two nodes with same
    node name (dup).); it was not kept; keep that node in fp32 (--fp32-nodes or --fp32-ops) or
    build fp32', and --precision fp32 then failed the same way."""
    model = make(tmp_path / "m.onnx")
    reason = "two nodes with same node name" if make is _dupnodes else "Opset 40"
    # nodes named alike: fp16 and int8 work on a copy whose later duplicates are renamed NAME#2
    # (calibration.graphs.unique_node_names), so only fp32, the model as given, is refused
    refused = ("fp32",) if make is _dupnodes else ("fp16", "fp32", "int8")
    for precision in ("fp16", "fp32", "int8"):
        out = tmp_path / precision
        built = run_cli("build", model, "--precision", precision, "-o", out)
        if precision not in refused:
            assert built.code == 0, built.stderr
            artifact = out / f"m.{precision}.onnx"
            names = [node.name for node in onnx.load(artifact).graph.node]
            assert len(set(names)) == len(names), names
            ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
            continue
        line = _one_error(built, "ONNX Runtime cannot load m.onnx itself", reason)
        assert "--fp32-nodes" not in line and " g:" not in line, line
        assert "range analysis skipped" not in built.stderr
        assert not out.exists() or not files_under(out), files_under(out)
    calibrated = run_cli("calibrate", model, "--data", "random", "-o", tmp_path / "cal" / "m.int8.onnx")
    if make is _dupnodes:
        assert calibrated.code == 0, calibrated.stderr
    else:
        _one_error(calibrated, "ONNX Runtime cannot load m.onnx itself", reason)


def _nooutputs(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    return _save(path, [helper.make_node("Relu", ["x"], ["y"], name="relu")], [x], [], [])


def test_a_model_without_outputs_is_refused_by_every_command(tmp_path: Path) -> None:
    """Was: build exited 0 and wrote its artifacts, 'loaded, not run: random inputs fail the model it
    was made from too (At least one output should be requested.)'."""
    model = _nooutputs(tmp_path / "m.onnx")
    other = castmix(tmp_path / "other.onnx")
    out = tmp_path / "out"
    commands = [
        ("build", model, "--precision", "fp16", "-o", out / "b16"),
        ("build", model, "--precision", "fp32", "-o", out / "b32"),
        ("build", model, "--precision", "int8", "-o", out / "b8"),
        ("calibrate", model, "--data", "random", "-o", out / "c" / "m.int8.onnx"),
        ("compare", model, model),
        ("compare", other, model),
        ("profile", model),
        ("analyze", model, "--data", "random"),
        ("export", model, "-o", out / "e"),
        ("bundle", "create", model, "-o", out / "bundle"),
        ("bundle", "create", other, model, "-o", out / "bundle2"),
    ]
    for args in commands:
        assert_clean_input_error(run_cli(*args), "the model has no outputs", str(model))
    assert not out.exists() or not files_under(out), files_under(out)


def _mixed(path: Path) -> Path:
    """A user's fp32 MLP with one of its three layers made fp16 by hand (Cast down, a float16 weight,
    Cast back): most of its heavy layers compute in fp32."""
    x32 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y32 = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"], name="mm1"),
        helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
        helper.make_node("Cast", ["ar"], ["ah"], to=TensorProto.FLOAT16, name="to16"),
        helper.make_node("MatMul", ["ah", "W2"], ["bh"], name="mm2"),
        helper.make_node("Cast", ["bh"], ["b"], to=TensorProto.FLOAT, name="to32"),
        helper.make_node("MatMul", ["b", "W3"], ["y"], name="mm3"),
    ]
    weights = [_weight("W1", 8, 8), _weight("W2", 8, 8, dtype=np.float16, seed=1)]
    weights.append(_weight("W3", 8, 8, seed=2))
    return _save(path, nodes, [x32], [y32], weights)


def test_an_fp32_model_with_some_fp16_layers_is_labelled_mixed_not_fp16(tmp_path: Path) -> None:
    """One float16 weight made a user's fp32 model an "fp16" artifact: profile and compare recorded
    fp16 (the report's fp16 row), build said it was "already an fp16 model" (and built it as such, or
    refused --precision fp32 naming fp16), bundle filed it as the bundle's fp16. A model whose heavy
    layers (Conv, Gemm, MatMul...) mostly compute in fp32 is now "mixed": recorded and reported so,
    built as it is for fp16 only with that said, and refused by bundle unless its name gives its
    precision (our fp16 builds, whose fp32 islands may hold most layers)."""
    import json

    from edgedeploy.stages.build import precision_of_model
    from edgedeploy.stages.precision.emulate import onnx_precision

    mixed = _mixed(tmp_path / "hand.onnx")
    assert precision_of_model(mixed) == onnx_precision(onnx.load(mixed)) == "mixed"
    result = run_cli("profile", mixed, "--iterations", "3", "--warmup-ms", "0", "--json", tmp_path / "p.json")
    assert result.code == 0, result.stderr
    assert json.loads((tmp_path / "p.json").read_text())["precision"] == "mixed"
    fp32 = run_cli("build", mixed, "--precision", "fp32", "-o", tmp_path / "b32")
    assert_clean_input_error(fp32, "hand.onnx", "mixed")
    assert "already an fp16" not in fp32.stderr
    fp16 = run_cli("build", mixed, "--precision", "fp16", "-o", tmp_path / "b16")
    assert fp16.code == 0, fp16.stderr
    assert "mixed" in fp16.stderr and "already an fp16" not in fp16.stderr
    x32 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y32 = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    mm = helper.make_node("MatMul", ["x", "W1"], ["y"], name="mm")
    reference = _save(tmp_path / "ref.onnx", [mm], [x32], [y32], [_weight("W1", 8, 8)])
    bundled = run_cli("bundle", reference, mixed, "-o", tmp_path / "bundle")
    assert_clean_input_error(bundled, "hand.onnx", "mixed")
