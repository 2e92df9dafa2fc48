from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedeploy.stages.export import ExportOptions, InputShape, export
from tests.conftest import Digits, assert_clean_input_error, files_under, run_cli


def test_exported_digits_model_has_a_dynamic_batch_and_matches_torch(digits: Digits) -> None:
    model = onnx.load(digits.onnx_path)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param  # symbolic batch
    session = ort.InferenceSession(str(digits.onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        (logits,) = session.run(None, {"input": digits.x_test[:batch]})
        assert logits.shape == (batch, 10)
    (logits,) = session.run(None, {"input": digits.x_test})
    accuracy = float((logits.argmax(1) == digits.y_test).mean())
    assert abs(accuracy - digits.torch_accuracy) < 1e-6
    assert accuracy > 0.9


def test_two_input_two_output_model_exports_with_names(two_io_onnx: Path) -> None:
    model = onnx.load(two_io_onnx)
    assert [i.name for i in model.graph.input] == ["image", "meta"]
    assert [o.name for o in model.graph.output] == ["scores", "mean"]
    session = ort.InferenceSession(str(two_io_onnx), providers=["CPUExecutionProvider"])
    scores, mean = session.run(
        None, {"image": np.zeros((3, 3, 16, 16), np.float32), "meta": np.zeros((3, 4), np.float32)}
    )
    assert scores.shape == (3, 5) and mean.shape == (3, 1)


def test_static_export_keeps_the_example_batch(two_io_module: Path, tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    result = export(f"{two_io_module}:build:example_inputs", out, ExportOptions(dynamic_batch=False))
    assert result.inputs[0].shape[0] == 2


def test_input_option_gives_example_inputs(two_io_module: Path, tmp_path: Path) -> None:
    out = tmp_path / "via_input.onnx"
    result = run_cli(
        "export",
        f"{two_io_module}:build",
        "--input",
        "image:1x3x16x16",
        "--input",
        "meta:1x4",
        "-o",
        out,
        "--output-names",
        "scores,mean",
        "--json",
        tmp_path / "export.json",
    )
    assert result.code == 0, result.stderr
    assert [s.name for s in export(str(out), tmp_path / "again.onnx").inputs] == ["image", "meta"]
    assert (tmp_path / "export.json").is_file()


def test_existing_onnx_is_checked_and_simplified(digits: Digits, tmp_path: Path) -> None:
    result = export(str(digits.onnx_path), tmp_path / "copy.onnx")
    assert result.exporter == "onnx"
    onnx.checker.check_model(str(tmp_path / "copy.onnx"), full_check=True)


def test_input_shape_parser_refuses_bad_text() -> None:
    assert InputShape.parse("x:1x3x8x8:float16") == InputShape("x", (1, 3, 8, 8), "float16")
    for bad in ("x", "x:1xax3", "x:0x3", "x:1x3:nonsense"):
        try:
            InputShape.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_missing_model_file_exits_2_without_output(tmp_path: Path) -> None:
    result = run_cli("export", tmp_path / "nope.onnx", "-o", tmp_path / "out" / "m.onnx")
    assert_clean_input_error(result, "not found")
    assert not (tmp_path / "out" / "m.onnx").exists()


def test_truncated_onnx_exits_2_and_leaves_no_partial_file(digits: Digits, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(digits.onnx_path.read_bytes()[:500])
    out_dir = tmp_path / "out"
    result = run_cli("export", broken, "-o", out_dir / "m.onnx")
    assert_clean_input_error(result, "broken.onnx")
    assert files_under(out_dir) == set()


def test_garbage_onnx_exits_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("this is not a model")
    assert_clean_input_error(run_cli("export", garbage, "-o", tmp_path / "m.onnx"), "garbage.onnx")


def test_model_spec_that_does_not_resolve_exits_2(two_io_module: Path, tmp_path: Path) -> None:
    for spec in (f"{two_io_module}:no_such_callable", "no_such_module_xyz:build", "just-a-name"):
        result = run_cli("export", spec, "-o", tmp_path / "m.onnx", "--input", "x:1x3")
        assert_clean_input_error(result, "model spec")
    assert not (tmp_path / "m.onnx").exists()


def test_an_onnx_file_below_opset_13_is_converted_and_computes_the_same(tmp_path: Path) -> None:
    """Pretrained models often come at opset 11 or 12 (ddddocr's, PP-OCR's); per-channel Q/DQ
    needs 13. Squeeze's axes moved from an attribute to an input at 13."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Squeeze", ["r"], ["y"], axes=[1])],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    src = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), src)
    result = run_cli("export", src, "-o", tmp_path / "new.onnx")
    assert result.code == 0, result.stderr
    assert "converted the model from opset 11 to 13" in result.stderr
    new = onnx.load(tmp_path / "new.onnx")
    assert {o.domain: o.version for o in new.opset_import}[""] >= 13
    x = np.random.default_rng(0).standard_normal((3, 1, 4)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "new.onnx")).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.maximum(x, 0)[:, 0, :])


def test_pytorch_only_options_on_an_onnx_file_are_said_to_be_ignored(digits: Digits, tmp_path: Path) -> None:
    result = run_cli("export", digits.onnx_path, "--static", "-o", tmp_path / "m.onnx")
    assert result.code == 0, result.stderr
    assert "--static: for PyTorch export only" in result.stderr
    plain = run_cli("export", digits.onnx_path, "-o", tmp_path / "n.onnx")
    assert plain.code == 0 and "PyTorch export only" not in plain.stderr


def test_dynamic_batch_given_for_an_onnx_file_is_said_to_leave_its_batch(tmp_path: Path) -> None:
    """`export X.onnx --dynamic-batch` of a file whose batch is fixed exited 0 without a word and
    left the batch fixed (--dynamic-batch is the default, which the check of PyTorch-only options
    took for not given); typed, it is now said to be for PyTorch only, as --static is."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 576])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 576])],
    )
    src = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    result = run_cli("export", src, "--dynamic-batch", "-o", tmp_path / "m.onnx")
    assert result.code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "--dynamic-batch" in line]
    assert len(said) == 1 and "for PyTorch export only" in said[0] and "batch" in said[0], result.stderr
    assert "x[1,576]" in result.stdout.replace(" ", "")  # as the file has it, and as the line says


AB_MODULE = """
import torch


class AB(torch.nn.Module):
    def forward(self, a, b):
        return a - 10 * b


def build():
    return AB()


def swapped():
    return {"b": torch.zeros(2, 1), "a": torch.zeros(2, 4)}


def mixed():
    return {"x": torch.zeros(2, 4), "a": torch.zeros(2, 4)}


def only_b():
    return {"b": torch.zeros(2, 4)}
"""


def test_named_example_inputs_go_to_the_arguments_of_those_names(tmp_path: Path) -> None:
    """A dict (or --input names that are all forward's arguments) binds by name, not by its order:
    {"b": .., "a": ..} for forward(a, b) exported a and b swapped."""
    (tmp_path / "ab.py").write_text(AB_MODULE)
    result = export(f"{tmp_path / 'ab.py'}:build:swapped", tmp_path / "ab.onnx", ExportOptions())
    assert [(i.name, i.shape[1]) for i in result.inputs] == [("a", 4), ("b", 1)]
    session = ort.InferenceSession(str(tmp_path / "ab.onnx"), providers=["CPUExecutionProvider"])
    a, b = np.ones((3, 4), np.float32), np.zeros((3, 1), np.float32)
    np.testing.assert_array_equal(session.run(None, {"a": a, "b": b})[0], a)  # a - 10 b
    flags = run_cli(
        "export",
        f"{tmp_path / 'ab.py'}:build",
        "--input",
        "b:1x1",
        "--input",
        "a:1x4",
        "-o",
        tmp_path / "flags.onnx",
    )
    assert flags.code == 0, flags.stderr
    assert [i.name for i in onnx.load(tmp_path / "flags.onnx").graph.input] == ["a", "b"]
    for spec, phrase in (("mixed", "'a' as forward's arguments, but not in"), ("only_b", "leave out 'a'")):
        refused = run_cli("export", f"{tmp_path / 'ab.py'}:build:{spec}", "-o", tmp_path / f"{spec}.onnx")
        assert_clean_input_error(refused, phrase)
        assert not (tmp_path / f"{spec}.onnx").exists()


KEYWORD_MODULE = """
import torch


class Keyword(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 4)

    def forward(self, x, *, scale):
        return self.a(x) * scale


def build():
    return Keyword().eval()


def example():
    return {"scale": torch.rand(2, 4), "x": torch.randn(2, 8)}
"""


def test_keyword_only_arguments_of_forward_are_passed_by_name(tmp_path: Path) -> None:
    """forward(self, x, *, scale) with {"x": .., "scale": ..} (or --input x:.. --input scale:..) was
    refused: the inputs were passed by position ("takes 2 positional arguments but 3 were given")."""
    import torch

    (tmp_path / "kw.py").write_text(KEYWORD_MODULE)
    module = f"{tmp_path / 'kw.py'}:build"
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    scale = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    import importlib.util

    loaded = importlib.util.spec_from_file_location("kw_module", tmp_path / "kw.py")
    assert loaded is not None and loaded.loader is not None
    kw = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(kw)
    with torch.no_grad():
        want = kw.build()(torch.from_numpy(x), scale=torch.from_numpy(scale)).numpy()
    flags = ExportOptions(inputs=[InputShape("x", (2, 8)), InputShape("scale", (2, 4))])
    for out, spec, options in (
        (tmp_path / "kw.onnx", f"{module}:example", ExportOptions()),
        (tmp_path / "flags.onnx", module, flags),
    ):
        result = export(spec, out, options)
        assert [i.name for i in result.inputs] == ["x", "scale"]
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"x": x, "scale": scale})[0], want, rtol=1e-5, atol=1e-6)


def test_a_scripted_model_with_keyword_only_arguments_exports_and_computes_as_torch(tmp_path: Path) -> None:
    """torch.jit.script of forward(self, x, *, scale) did not export at all: the dynamo exporter
    cannot take a ScriptModule and the TorchScript one, tracing a module that held it, failed with
    "Tried to trace <...Keyword object> but it is not part of the active trace"."""
    import torch

    (tmp_path / "kw.py").write_text(
        KEYWORD_MODULE + "\n\ndef scripted():\n    return torch.jit.script(Keyword().eval())\n"
    )
    out = tmp_path / "scripted.onnx"
    result = export(f"{tmp_path / 'kw.py'}:scripted:example", out)
    assert result.exporter == "torchscript" and [i.name for i in result.inputs] == ["x", "scale"]
    assert all(isinstance(i.shape[0], str) for i in result.inputs), result.inputs
    onnx.checker.check_model(onnx.load(out), full_check=True)
    import importlib.util

    loaded = importlib.util.spec_from_file_location("kw_scripted", tmp_path / "kw.py")
    assert loaded is not None and loaded.loader is not None
    kw = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(kw)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    scale = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    with torch.no_grad():
        want = kw.scripted()(torch.from_numpy(x), scale=torch.from_numpy(scale)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x, "scale": scale})[0], want, rtol=1e-5, atol=1e-6)


def test_a_scripted_model_goes_to_the_torchscript_exporter_without_a_dynamo_notice(tmp_path: Path) -> None:
    """A scripted model (torch.jit.script) always printed "notice: the dynamo exporter failed (...);
    falling back to the TorchScript exporter": the dynamo exporter cannot take a ScriptModule. It now
    goes to the TorchScript exporter at once, without the notice, and still computes as torch."""
    (tmp_path / "plain.py").write_text(
        "import torch\n\n\ndef scripted():\n    torch.manual_seed(0)\n"
        "    return torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval())\n"
    )
    out = tmp_path / "scripted.onnx"
    notices: list[str] = []
    options = ExportOptions(inputs=[InputShape("x", (3, 8))])
    result = export(f"{tmp_path / 'plain.py'}:scripted", out, options, notify=notices.append)
    assert result.exporter == "torchscript" and not any("dynamo" in n for n in notices), notices
    assert [i.name for i in result.inputs] == ["x"] and isinstance(result.inputs[0].shape[0], str)
    assert not result.warnings, result.warnings


KWARGS_MODULE = """
import torch


class Options(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 4)

    def forward(self, x, **kwargs):
        y = self.a(x)
        if "bias" in kwargs:
            y = y + kwargs["bias"]
        return y * kwargs.get("scale", 1.0)


def build():
    return Options().eval()


def example():
    return {"x": torch.randn(2, 8), "bias": torch.randn(2, 4), "scale": torch.rand(2, 4)}
"""


def test_a_forward_taking_kwargs_gets_the_other_named_inputs_by_name(tmp_path: Path) -> None:
    """forward(self, x, **kwargs) with {"x": .., "bias": .., "scale": ..} was refused: every input
    was passed by position ("forward() takes 2 positional arguments but 4 were given"). The names
    of forward's arguments go to them, the others to **kwargs by name, in the order given."""
    import importlib.util

    import torch

    (tmp_path / "kwargs_model.py").write_text(KWARGS_MODULE)
    out = tmp_path / "kwargs.onnx"
    result = export(f"{tmp_path / 'kwargs_model.py'}:build:example", out)
    assert [i.name for i in result.inputs] == ["x", "bias", "scale"], result.inputs
    onnx.checker.check_model(onnx.load(out), full_check=True)
    loaded = importlib.util.spec_from_file_location("kwargs_model", tmp_path / "kwargs_model.py")
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    rng = np.random.default_rng(0)
    shapes = {"x": (3, 8), "bias": (3, 4), "scale": (3, 4)}
    feed = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in shapes.items()}
    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
    with torch.no_grad():
        want = module.build()(tensors["x"], bias=tensors["bias"], scale=tensors["scale"]).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feed)[0], want, rtol=1e-5, atol=1e-6)


KEYWORD_AND_PLAIN_MODULE = """
import torch


class Keyword(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 4)
        self.gain = torch.nn.Parameter(torch.linspace(1, 2, 4))
        self.register_buffer("shift", torch.ones(4))
        self.k = torch.arange(4.0)  # a tensor attribute: the dynamo exporter keeps it as an initializer

    def forward(self, x, *, scale):
        return (self.a(x) * scale * self.gain + self.shift) * self.k


class Plain(Keyword):
    def forward(self, x, scale):
        return (self.a(x) * scale * self.gain + self.shift) * self.k


def keyword():
    return Keyword().eval()


def plain():
    return Plain().eval()


def example():
    return {"x": torch.randn(2, 8), "scale": torch.rand(2, 4)}
"""


def test_keyword_only_arguments_leave_the_weight_names_as_they_are(tmp_path: Path) -> None:
    """forward(self, x, *, scale) was exported through a module holding the model as its child
    ``model``: the weights came out as model.a.weight, model.gain (and the TorchScript exporter's
    nodes as /model/a/Gemm) where the same model without ``*`` gave a.weight, gain."""
    (tmp_path / "kp.py").write_text(KEYWORD_AND_PLAIN_MODULE)
    for opset, exporter in ((18, "dynamo"), (13, "torchscript")):  # dynamo does not write 13: the fallback
        graphs = []
        for kind in ("keyword", "plain"):
            out = tmp_path / f"{kind}{opset}.onnx"
            result = export(f"{tmp_path / 'kp.py'}:{kind}:example", out, ExportOptions(opset=opset))
            assert result.exporter == exporter and [i.name for i in result.inputs] == ["x", "scale"]
            graphs.append(onnx.load(out).graph)
        keyword, plain = ([init.name for init in graph.initializer] for graph in graphs)
        assert keyword == plain and "a.weight" in plain, (keyword, plain)
        assert [node.name for node in graphs[0].node] == [node.name for node in graphs[1].node]


HELD_MODULE = """
import torch


class Held(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 4)
        self.gain = torch.nn.Parameter(torch.linspace(1, 2, 4))
        self.register_buffer("shift", torch.ones(4))

    def forward(self, x, *, scale):
        return self.a(x) * scale * self.gain + self.shift

    def infer(self, x, *, scale):
        return self.a(x) * scale * self.gain - self.shift


class Alone(Held):
    def __init_subclass__(cls, **kwargs):
        raise TypeError("no subclasses")


def on_instance():
    model = Held().eval()
    model.forward = model.infer
    return model


def alone():
    return Alone().eval()


def example():
    return {"x": torch.randn(2, 8), "scale": torch.rand(2, 4)}
"""


def test_keyword_only_arguments_of_a_held_model_leave_the_weight_names_as_they_are(tmp_path: Path) -> None:
    """A model that a subclass cannot show (a forward set on the instance, a class that refuses
    subclasses) is exported through a module that holds it: its weights came out as model.a.weight,
    model.gain, model.shift. They are the state_dict's names now, with either exporter."""
    import importlib.util

    (tmp_path / "held.py").write_text(HELD_MODULE)
    loaded = importlib.util.spec_from_file_location("held_module", tmp_path / "held.py")
    assert loaded is not None and loaded.loader is not None
    held = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(held)
    for kind in ("on_instance", "alone"):
        names = sorted(getattr(held, kind)().state_dict())
        assert names == ["a.bias", "a.weight", "gain", "shift"]
        for opset, exporter in ((18, "dynamo"), (13, "torchscript")):
            out = tmp_path / f"{kind}{opset}.onnx"
            result = export(f"{tmp_path / 'held.py'}:{kind}:example", out, ExportOptions(opset=opset))
            assert result.exporter == exporter and [i.name for i in result.inputs] == ["x", "scale"]
            graph = onnx.load(out).graph
            assert sorted(init.name for init in graph.initializer) == names, (kind, exporter)
            assert not any(node.name.startswith("/model/") for node in graph.node), (kind, exporter)


def test_an_input_or_output_name_given_twice_is_refused(tmp_path: Path) -> None:
    """The exporter renamed the second one (q.1) and went on."""
    (tmp_path / "ab.py").write_text(AB_MODULE)
    module = f"{tmp_path / 'ab.py'}:build"
    for args, phrase in (
        (["--input", "a:2x4", "--input", "b:2x4", "--input-names", "q,q"], "input name 'q' given twice"),
        (["--input", "x:2x4", "--input", "x:2x4"], "input name 'x' given twice"),
        (["--input", "a:2x4", "--input", "b:2x4", "--output-names", "y"], None),
    ):
        result = run_cli("export", module, *args, "-o", tmp_path / "q.onnx")
        if phrase is None:
            assert result.code == 0, result.stderr
        else:
            assert_clean_input_error(result, phrase)
            assert not (tmp_path / "q.onnx").exists()


def test_a_dynamic_batch_export_that_comes_out_fixed_is_warned(tmp_path: Path) -> None:
    (tmp_path / "fixed.py").write_text(
        "import torch\n\n\nclass Fixed(torch.nn.Module):\n    def forward(self, x):\n"
        "        return x.reshape(int(x.shape[0]), -1) * 2\n\n\ndef build():\n    return Fixed()\n"
    )
    module = f"{tmp_path / 'fixed.py'}:build"
    result = run_cli("export", module, "--input", "x:2x4", "-o", tmp_path / "f.onnx")
    assert result.code == 0 and "the batch of x (2) came out fixed" in result.stderr, result.stderr
    static = run_cli("export", module, "--input", "x:2x4", "--static", "-o", tmp_path / "s.onnx")
    assert static.code == 0 and "came out fixed" not in static.stderr


def test_the_python_api_export_module_returns_the_fixed_batch_warning_too(tmp_path: Path) -> None:
    """The CLI's export warns when the batch comes out fixed at the example's size (it reads the
    result's warnings); export_module, the API for an in-memory module, did not make that check, so
    its caller got a fixed batch silently. Its result's warnings now say it, as export's do."""
    import torch

    from edgedeploy.stages.export import export_module

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(int(x.shape[0]), -1) * 2

    result = export_module(
        Fixed(), (torch.randn(2, 4),), tmp_path / "f.onnx", ExportOptions(input_names=["x"])
    )
    assert any(w.startswith("--dynamic-batch: the batch of x (2) came out fixed") for w in result.warnings), (
        result
    )
    static = export_module(
        Fixed(),
        (torch.randn(2, 4),),
        tmp_path / "s.onnx",
        ExportOptions(dynamic_batch=False, input_names=["x"]),
    )
    assert not any("came out fixed" in w for w in static.warnings), static.warnings


ENCODER_MODULE = """
import torch


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, 1)

    def forward(self, x):
        return self.enc(x).mean(1)


class One(torch.nn.Module):
    def forward(self, x):
        return x.reshape(4) * 2


def encoder():
    torch.manual_seed(0)
    return Encoder().eval()


def one():
    return One()
"""


def test_an_example_batch_of_1_exports_a_dynamic_batch(tmp_path: Path) -> None:
    """torch.export fixes a dim whose example is 1 where the traced code can tell 1 from more
    (TransformerEncoder): exported from [model] inputs = ["x:1x6x16"], such a model took batch 1
    only. The export now traces a batch of 2 made of the example, and the example's own batch
    where forward takes no other (a reshape to 4 elements: exported fixed, and warned)."""
    import onnxruntime as ort
    import torch

    (tmp_path / "enc.py").write_text(ENCODER_MODULE)
    out = tmp_path / "e.onnx"
    result = run_cli("export", f"{tmp_path / 'enc.py'}:encoder", "--input", "x:1x6x16", "-o", out)
    assert result.code == 0 and "came out fixed" not in result.stderr, result.stderr
    dim = onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.HasField("dim_value"), dim
    x = np.random.default_rng(0).standard_normal((3, 6, 16)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    import importlib.util

    spec = importlib.util.spec_from_file_location("enc_module", tmp_path / "enc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.no_grad():
        want = module.encoder()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    one = run_cli("export", f"{tmp_path / 'enc.py'}:one", "--input", "x:1x4", "-o", tmp_path / "o.onnx")
    assert one.code == 0 and "the batch of x (1) came out fixed" in one.stderr, one.stderr
    assert "dynamo exporter failed" not in one.stderr


LSTM_MODULE = """
import torch


class TimeMajor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = torch.nn.LSTM(8, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x):  # [T, B, C]
        return self.out(self.lstm(x)[0])


def build():
    return TimeMajor().eval()
"""


def test_a_dim_0_the_exported_graph_fixes_inside_is_exported_fixed_and_warned(tmp_path: Path) -> None:
    """An LSTM fed time first ([T, B, C], example 20x1x8): the dynamo exporter declared x[batch, 1, 8]
    but reshaped its output to the example's 20 steps inside, so the model ran at 20 only, and the
    first thing to feed it another dim 0 failed: int8 calibration (batches of 8) with "The input
    tensor cannot be reshaped to the requested shape ... {20,1,3}". The export now tries one more
    row; the model that fails it is exported with that dim fixed, and the warning says so."""
    (tmp_path / "lstm.py").write_text(LSTM_MODULE)
    out = tmp_path / "l.onnx"
    result = run_cli("export", f"{tmp_path / 'lstm.py'}:build", "--input", "x:20x1x8", "-o", out)
    assert result.code == 0 and "the batch of x (20) came out fixed" in result.stderr, result.stderr
    assert "recurrent layer fed time first" in result.stderr
    dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [20, 1, 8]
    built = run_cli("build", out, "--precision", "int8", "-o", tmp_path / "int8")
    assert built.code == 0, built.stderr
    # from an example of 1 step, traced as 2 (see the batch-of-2 test): checked at 3, not at the 2
    # it was traced at, which came out as a model that ran at 2 steps only, not even at its example's 1
    one = tmp_path / "one.onnx"
    result = run_cli("export", f"{tmp_path / 'lstm.py'}:build", "--input", "x:1x1x8", "-o", one)
    assert result.code == 0 and "the batch of x (1) came out fixed" in result.stderr, result.stderr
    assert [d.dim_value for d in onnx.load(one).graph.input[0].type.tensor_type.shape.dim] == [1, 1, 8]


GRU_STATE_MODULE = """
import torch


class WithState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = torch.nn.GRU(8, 16, batch_first=True)

    def forward(self, x, h0):  # x [B, T, C], h0 [layers, B, H]: h0's dim 0 is no batch
        return self.gru(x, h0)


def build():
    return WithState().eval()


def example():
    return {"x": torch.randn(2, 10, 8), "h0": torch.randn(1, 2, 16)}
"""


def _gru_matches_torch(module: Path, onnx_path: Path, layers: int) -> None:
    """The exported GRU-with-state model computes what the module's torch model does at batch 3
    (another batch than the example's), in ONNX Runtime."""
    import importlib.util

    import torch

    loaded = importlib.util.spec_from_file_location(f"gru_{module.stem}", module)
    assert loaded is not None and loaded.loader is not None
    gru = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(gru)
    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((3, 10, 8), np.float32), rng.standard_normal((layers, 3, 16), np.float32)
    with torch.no_grad():
        want = [t.numpy() for t in gru.build()(torch.from_numpy(x), torch.from_numpy(h0))]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, "h0": h0})
    for have, expected in zip(got, want, strict=True):
        np.testing.assert_allclose(have, expected, rtol=1e-4, atol=1e-5)


def test_a_gru_state_carries_the_batch_on_axis_1_and_it_is_exported_dynamic(tmp_path: Path) -> None:
    """A GRU's state h0[layers, B, H] beside x[B, T, C] holds the batch on axis 1: the export
    declared dim 0 the batch of x only and kept h0[1, 2, 16] (and so x[2, 10, 8]) fixed, with a
    warning, and the model took batch 2 only. h0's axis 1 is now the batch, named as x's dim 0."""
    (tmp_path / "gru.py").write_text(GRU_STATE_MODULE)
    out = tmp_path / "g.onnx"
    result = export(f"{tmp_path / 'gru.py'}:build:example", out)
    shapes = {i.name: list(i.shape) for i in result.inputs}
    batch = shapes["x"][0]
    assert isinstance(batch, str) and shapes == {"x": [batch, 10, 8], "h0": [1, batch, 16]}, shapes
    assert not any("came out fixed" in w for w in result.warnings), result.warnings
    onnx.checker.check_model(onnx.load(out), full_check=True)
    _gru_matches_torch(tmp_path / "gru.py", out, layers=1)


def test_a_state_whose_layers_equal_the_batch_keeps_its_batch_on_axis_1(tmp_path: Path) -> None:
    """A 2-layer GRU's state h0[2, 2, 16] exported at batch 2: its dim 0 (the layers) was taken for
    the batch, the run at another batch failed, and the model was exported fixed at batch 2 with a
    warning (so did a 1-layer state h0[1, 1, 16] at batch 1). Where an input holds the batch's size
    on several axes, forward is run with one more row on each guess and the one it takes is the
    batch: h0[2, batch, 16], h0[1, batch, 16]."""
    module = GRU_STATE_MODULE.replace("GRU(8, 16,", "GRU(8, 16, num_layers=2,")
    (tmp_path / "gru2.py").write_text(module.replace("torch.randn(1, 2, 16)", "torch.randn(2, 2, 16)"))
    out = tmp_path / "g2.onnx"
    result = export(f"{tmp_path / 'gru2.py'}:build:example", out)
    shapes = {i.name: list(i.shape) for i in result.inputs}
    batch = shapes["x"][0]
    assert isinstance(batch, str) and shapes == {"x": [batch, 10, 8], "h0": [2, batch, 16]}, shapes
    assert not any("came out fixed" in w for w in result.warnings), result.warnings
    _gru_matches_torch(tmp_path / "gru2.py", out, layers=2)
    # the same at batch 1 with one layer: h0[1, 1, 16] came out fixed at batch 1
    one = GRU_STATE_MODULE.replace("(2, 10, 8)", "(1, 10, 8)").replace("(1, 2, 16)", "(1, 1, 16)")
    (tmp_path / "gru1.py").write_text(one)
    result = export(f"{tmp_path / 'gru1.py'}:build:example", tmp_path / "g1.onnx")
    shapes = {i.name: list(i.shape) for i in result.inputs}
    batch = shapes["x"][0]
    assert isinstance(batch, str) and shapes == {"x": [batch, 10, 8], "h0": [1, batch, 16]}, shapes


LSTM_STATE_MODULE = """
import torch


class WithState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)

    def forward(self, x, state):  # state = (h0, c0), each [layers, B, H]
        out, (h, c) = self.lstm(x, state)
        return out, h, c


def build():
    return WithState().eval()


def example():
    return (torch.randn(3, 10, 8), (torch.randn(1, 3, 16), torch.randn(1, 3, 16)))
"""


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_an_lstm_state_given_as_a_nested_tuple_is_named_batched_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: str
) -> None:
    """forward(x, (h0, c0)): the states came out fixed at the example's batch 3 and named
    onnx::LSTM_2, and both the check against torch and the one at another batch were skipped
    (an input not a plain tensor), so a model running at batch 3 only was kept without a word.
    The nested inputs are now flattened: state_0/state_1[1, batch, 16], checked against torch."""
    import importlib.util

    import torch

    if exporter == "torchscript":  # the dynamo exporter's fallback, as when onnxscript is missing
        monkeypatch.setitem(sys.modules, "onnxscript", None)
    (tmp_path / "lstm.py").write_text(LSTM_STATE_MODULE)
    out = tmp_path / "l.onnx"
    notices: list[str] = []
    result = export(f"{tmp_path / 'lstm.py'}:build:example", out, notify=notices.append)
    assert result.exporter == exporter, notices
    assert not any("not compared" in n for n in notices), notices
    shapes = {i.name: list(i.shape) for i in result.inputs}
    batch = shapes["x"][0]
    assert isinstance(batch, str), shapes
    assert shapes == {"x": [batch, 10, 8], "state_0": [1, batch, 16], "state_1": [1, batch, 16]}, shapes
    assert not any("came out fixed" in w for w in result.warnings), result.warnings
    loaded = importlib.util.spec_from_file_location("lstm_state", tmp_path / "lstm.py")
    assert loaded is not None and loaded.loader is not None
    lstm = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(lstm)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 10, 8), np.float32)
    h0, c0 = (rng.standard_normal((1, 5, 16), np.float32) for _ in range(2))
    with torch.no_grad():
        want = lstm.build()(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, "state_0": h0, "state_1": c0})
    for have, expected in zip(got, want, strict=True):
        np.testing.assert_allclose(have, expected.numpy(), rtol=1e-4, atol=1e-5)


DICT_MODULE = """
import torch


class Batch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 4)

    def forward(self, batch: dict):
        return self.a(batch["x"]) * batch["scale"]


def build():
    return Batch().eval()


def example():
    return ({"x": torch.randn(3, 8), "scale": torch.rand(3, 4)},)
"""


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_dict_as_forward_s_only_argument_exports_with_its_tensors_named_after_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: str
) -> None:
    """forward(self, batch: dict) given ({"x": .., "scale": ..},) failed with both exporters
    ("export failed with both exporters: TypeError: Batch.forward() missing 1 required positional
    argument: 'batch'"): torch.onnx takes a dict at the end of args as forward's keyword arguments.
    It is now exported with torch's workaround (a trailing {} in the args), one graph input per
    tensor named as torch.onnx names them (batch_x, batch_scale), batched and checked against torch."""
    if exporter == "torchscript":  # the dynamo exporter's fallback, as when onnxscript is missing
        monkeypatch.setitem(sys.modules, "onnxscript", None)
    (tmp_path / "batch.py").write_text(DICT_MODULE)
    _dict_batch_matches_torch(tmp_path / "batch.py", tmp_path / "b.onnx", exporter)


def _dict_batch_matches_torch(module: Path, out: Path, exporter: str) -> None:
    """DICT_MODULE (as written to ``module``) exports with ``exporter`` to ``out`` with one batched
    input per tensor of the dict (batch_x, batch_scale), whose outputs in ONNX Runtime at another
    batch are torch's."""
    import torch

    notices: list[str] = []
    result = export(f"{module}:build:example", out, notify=notices.append)
    assert result.exporter == exporter and not any("not compared" in n for n in notices), notices
    shapes = {i.name: list(i.shape) for i in result.inputs}
    batch = shapes["batch_x"][0]
    assert isinstance(batch, str) and shapes == {"batch_x": [batch, 8], "batch_scale": [batch, 4]}, shapes
    rng = np.random.default_rng(0)
    x, scale = rng.standard_normal((5, 8), np.float32), rng.random((5, 4), np.float32)
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4).eval()
    with torch.no_grad():
        want = (linear(torch.from_numpy(x)) * torch.from_numpy(scale)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"batch_x": x, "batch_scale": scale})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("example", "exporter"), [("bare", "dynamo"), ("bare", "torchscript"), ("by_argument", "dynamo")]
)
def test_a_bare_dict_for_a_forward_whose_only_argument_is_a_dict_is_that_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example: str, exporter: str
) -> None:
    """forward(self, batch: dict) given the dict bare, {"x": .., "scale": ..}, was refused ("takes 2
    positional arguments but 3 were given": its keys were taken for graph inputs, passed by
    position), where ({..},) and {"batch": {..}} exported. A bare dict none of whose keys names an
    argument of a forward whose only argument is a dict is now that argument, exported as
    ({..},) is; one whose keys are forward's argument names still gives those arguments."""
    if exporter == "torchscript":  # the dynamo exporter's fallback, as when onnxscript is missing
        monkeypatch.setitem(sys.modules, "onnxscript", None)
    given = '{"x": torch.randn(3, 8), "scale": torch.rand(3, 4)}'
    wrapped = {"bare": given, "by_argument": f'{{"batch": {given}}}'}[example]
    source = DICT_MODULE.replace(f"return ({given},)", f"return {wrapped}")
    assert source != DICT_MODULE
    (tmp_path / "batch.py").write_text(source)
    _dict_batch_matches_torch(tmp_path / "batch.py", tmp_path / "b.onnx", exporter)


def test_input_names_may_name_forward_s_arguments_and_a_nested_one_s_tensors_after_it(tmp_path: Path) -> None:
    """--input-names took one name per graph input only: forward(x, state) given (x, (h0, c0)) with
    --input-names x,state was refused ("--input-names gives 2 names for 3 inputs"). One name per
    argument of forward now names a nested one's tensors after it (x, state_0, state_1, as torch.onnx
    names them); one per graph input is kept as given, as torch.onnx's input_names are; another count
    is refused in one line that says both."""
    (tmp_path / "lstm.py").write_text(LSTM_STATE_MODULE)
    spec = f"{tmp_path / 'lstm.py'}:build:example"
    for given, want in ((["x", "state"], ["x", "state_0", "state_1"]), (["x", "h", "c"], ["x", "h", "c"])):
        result = export(spec, tmp_path / "l.onnx", ExportOptions(input_names=given))
        assert [i.name for i in result.inputs] == want
        assert all(isinstance(i.shape[0 if i.name == "x" else 1], str) for i in result.inputs), result.inputs
    refused = run_cli("export", spec, "--input-names", "a", "-o", tmp_path / "one.onnx")
    assert_clean_input_error(refused, "--input-names gives 1 name", "3 graph inputs", "2 arguments")
    assert not (tmp_path / "one.onnx").exists()


UNBATCHED_MODULE = """
import torch


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 4)

    def forward(self, x, scale):  # scale [8]: one for every row
        return self.a(x * scale)


def build():
    return Scaled().eval()


def example():
    return {"x": torch.randn(3, 8), "scale": torch.rand(8)}
"""


def test_an_input_whose_dim_0_is_not_the_batch_keeps_it_fixed(tmp_path: Path) -> None:
    """x[3, 8] with scale[8]: scale's dim 0 was declared the batch too, and the export was refused
    ("ONNX Runtime cannot run the exported model (Got invalid dimensions for input: x ...)"). An
    input whose dim 0 is not the first input's keeps it fixed; x's batch stays dynamic."""
    (tmp_path / "scaled.py").write_text(UNBATCHED_MODULE)
    out = tmp_path / "s.onnx"
    result = export(f"{tmp_path / 'scaled.py'}:build:example", out)
    shapes = {i.name: list(i.shape) for i in result.inputs}
    assert isinstance(shapes["x"][0], str) and shapes["x"][1:] == [8] and shapes["scale"] == [8], shapes
    assert not any("came out fixed" in w for w in result.warnings), result.warnings
    feed = {"x": np.ones((5, 8), np.float32), "scale": np.ones(8, np.float32)}
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)
    assert y.shape == (5, 4)


OUTPUTS_MODULE = """
import torch


class Nested(torch.nn.Module):
    def forward(self, x):
        return x + 1, (x * 2, x * 3)


class WithNone(torch.nn.Module):
    def forward(self, x):
        return x + 1, None


class Named(torch.nn.Module):
    def forward(self, x):
        return {"score": x.sum(1, keepdim=True), "feat": x * 2}


def nested():
    return Nested()


def with_none():
    return WithNone()


def named():
    return Named()
"""


def test_outputs_are_counted_and_named_as_the_exporter_flattens_them(tmp_path: Path) -> None:
    """Nested tuples count every tensor, None none, and a dict's keys name its outputs."""
    (tmp_path / "outs.py").write_text(OUTPUTS_MODULE)
    module = tmp_path / "outs.py"
    for spec, names, expected in (
        ("nested", "a,b,c", ["a", "b", "c"]),
        ("with_none", None, ["output"]),
        ("named", None, ["score", "feat"]),
    ):
        args = ["--output-names", names] if names else []
        out = tmp_path / f"{spec}.onnx"
        result = run_cli("export", f"{module}:{spec}", "--input", "x:2x4", *args, "-o", out)
        assert result.code == 0, result.stderr
        assert [o.name for o in onnx.load(out).graph.output] == expected
    names = ["--output-names", "a,b"]
    two = run_cli("export", f"{module}:with_none", "--input", "x:2x4", *names, "-o", tmp_path / "w.onnx")
    assert_clean_input_error(two, "--output-names gives 2 names for 1 outputs")


def test_a_model_file_imports_the_modules_beside_it(tmp_path: Path) -> None:
    """``path/file.py:callable`` whose file imports a module beside it ("No module named 'helper'"):
    the file's folder is searched, as ``python path/file.py`` searches it, also when the factory
    and forward import late; installed packages still come first (see module_search_path)."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "beside_helper.py").write_text(
        "import torch\n\n\nclass H(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.a = torch.nn.Linear(8, 4)\n\n    def forward(self, x):\n        import beside_late\n\n"
        "        return self.a(x) * beside_late.SCALE\n"
    )
    (folder / "beside_late.py").write_text("SCALE = 2.0\n")
    (folder / "top.py").write_text("import beside_helper\n\n\ndef make():\n    return beside_helper.H()\n")
    result = run_cli("export", "m/top.py:make", "--input", "x:2x8", "-o", "a.onnx", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "a.onnx").is_file()


GRID_AND_DOUBLE_MODULE = """
import torch


class Sample(torch.nn.Module):
    def forward(self, x, grid):
        return torch.nn.functional.grid_sample(x, grid, align_corners=False)


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.c(x)


def sample():
    return Sample()


def sample_in():
    return {"x": torch.randn(2, 3, 8, 8), "grid": torch.rand(2, 4, 5, 2) * 2 - 1}


def conv64():
    return Conv().double()


def conv64_in():
    return torch.randn(2, 3, 8, 8, dtype=torch.float64)
"""


def test_a_failed_export_prints_one_error_line_and_no_exporter_dump(tmp_path: Path) -> None:
    """grid_sample at opset 13 fails with both exporters, and the TorchScript one's C++ side printed
    a 14-line "Torch IR graph at exception: graph(..." to stdout, past the redirect of sys.stdout."""
    (tmp_path / "g.py").write_text(GRID_AND_DOUBLE_MODULE)
    out = tmp_path / "g13.onnx"
    result = run_cli("export", f"{tmp_path / 'g.py'}:sample:sample_in", "--opset", "13", "-o", out)
    assert result.code == 2 and result.stdout == "", result.stdout
    assert "Torch IR graph" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("notice: ")]
    assert len(errors) == 1 and "grid_sampler" in errors[0], result.stderr
    assert not out.exists()


QUIET_WINDOW_MODULE = """
import os
import time

import torch


class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if os.path.samestat(os.fstat(2), os.stat(os.devnull)):  # an exporter runs: descriptor 2 is quiet
            with open(WINDOWS, "a") as log:
                log.write(f"start {time.monotonic()}\\n")
            os.write(2, b"C++ side noise\\n")  # as torch's C++ side writes, past sys.stderr
            time.sleep(1.5)
            with open(WINDOWS, "a") as log:
                log.write(f"end {time.monotonic()}\\n")
        return self.conv(x)


def build():
    return Slow().eval()


def example():
    return torch.randn(1, 3, 8, 8)
"""


def _export_in_a_terminal(tmp_path: Path, name: str, interrupt: bool = False) -> tuple[int, str, list[str]]:
    """``edgedeploy export`` of QUIET_WINDOW_MODULE with its stderr a terminal (a pty), as a user
    runs it: its exit code, what the terminal got, and what it got while an exporter ran (from 0.5 s
    after a quiet window opened, so that a bar drawn just before and read late is not counted), both
    without escape codes. ``interrupt``: Ctrl-C (SIGINT) as the first quiet window opens."""
    import os
    import pty
    import re
    import select
    import signal
    import subprocess
    import sys
    import time

    windows = tmp_path / f"{name}.windows"
    (tmp_path / f"{name}.py").write_text(QUIET_WINDOW_MODULE.replace("WINDOWS", repr(str(windows))))
    spec, dest = f"{tmp_path / name}.py:build:example", tmp_path / f"{name}.onnx"
    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgedeploy", "export", spec, "-o", str(dest)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a user's terminal
    )  # fmt: skip
    os.close(terminal)
    got: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if interrupt and windows.exists() and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                interrupt = False
            if select.select([main], [], [], 0.05)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed the terminal (Linux says EIO)
                    break
                if not chunk:
                    break
                got.append((time.monotonic(), chunk))
        code = proc.wait(timeout=60)
    finally:
        os.close(main)
    times = [float(line.split()[1]) for line in windows.read_text().splitlines()] if windows.exists() else []
    opened = list(zip(times[::2], times[1::2], strict=False))

    def plain(chunk: bytes) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", chunk.decode(errors="replace"))

    inside = [plain(chunk) for at, chunk in got if any(start + 0.5 < at < end for start, end in opened)]
    return code, plain(b"".join(chunk for _, chunk in got)), inside


def test_the_progress_bar_moves_while_an_exporter_runs(tmp_path: Path) -> None:
    """Descriptors 1 and 2 point at os.devnull while an exporter runs (torch's C++ side writes to
    them), and the bar, drawn to descriptor 2, was not seen to move through the longest step; it is
    drawn to a copy of the terminal's descriptor now, while torch's output stays quiet, and Ctrl-C
    there still stops the export."""
    code, text, inside = _export_in_a_terminal(tmp_path, "slow")
    assert code == 0 and (tmp_path / "slow.windows").exists(), text
    assert "C++ side noise" not in text
    assert any("export" in drawn and "%" in drawn for drawn in inside), text  # the bar, drawn meanwhile
    code, text, _ = _export_in_a_terminal(tmp_path, "stopped", interrupt=True)
    assert code == 130 and "interrupted" in text and "Traceback" not in text, text
    assert "C++ side noise" not in text and not (tmp_path / "stopped.onnx").exists()


def test_a_progress_bar_uses_rich_public_api_only_and_leaves_the_console_following_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar set rich's private ``Console._file`` back when it ended: a rich that keeps the file
    under another private name broke every bar (AttributeError). It is drawn on a console of its own
    now; what is said meanwhile goes there too, and the Ui's console, which follows sys.stderr (as
    the CLI's does), still follows it after the bar."""
    import io
    import sys

    from rich.console import Console

    from edgedeploy.ui import Ui

    class RenamedFile(Console):
        """A rich release whose Console keeps its file as ``_stream``."""

        def __init__(self, **options: object) -> None:
            super().__init__(**options)  # type: ignore[arg-type]
            self._stream = self.__dict__.pop("_file")

        @property
        def file(self) -> io.TextIOBase:  # type: ignore[override]
            return self._stream or sys.stderr

        @file.setter
        def file(self, new_file: io.TextIOBase) -> None:
            self._stream = new_file

    with open(tmp_path / "terminal", "w", encoding="utf-8") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        console = RenamedFile(stderr=True, force_terminal=True, highlight=False, emoji=False)
        ui = Ui(console)
        with ui.progress("a step") as advance:
            ui.info("said while the bar is shown")
            advance(0.5)
        later = io.StringIO()
        monkeypatch.setattr(sys, "stderr", later)
        ui.info("said after it")
    drawn = (tmp_path / "terminal").read_text()
    assert "a step" in drawn and "said while the bar is shown" in drawn, drawn
    assert "said after it" not in drawn and later.getvalue() == "said after it\n"


def test_a_float64_model_ort_has_no_kernel_for_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A float64 Conv was refused as "ONNX Runtime cannot load raw.onnx itself (... Conv(11) ...)",
    naming our scratch file; the error now names the model and says to export it in float32."""
    (tmp_path / "g.py").write_text(GRID_AND_DOUBLE_MODULE)
    out = tmp_path / "c64.onnx"
    spec = f"{tmp_path / 'g.py'}:conv64:conv64_in"
    result = run_cli("export", spec, "-o", out)
    assert_clean_input_error(result, spec, "float64", "Conv", ".float()")
    assert "raw.onnx" not in result.stderr and not out.exists()


def test_a_module_named_like_an_installed_package_is_said_to_be_shadowed(tmp_path: Path) -> None:
    """calibration:build found edgedeploy's own calibration package and said it had no build."""
    import subprocess
    import sys

    (tmp_path / "calibration.py").write_text(
        "import torch\n\n\ndef build():\n    return torch.nn.Linear(4, 2)\n"
    )
    # the command, and python -m, which puts the current folder first on sys.path: there the
    # user's calibration.py replaced edgedeploy's package and the command failed with a traceback
    command = [str(Path(sys.executable).with_name("edgedeploy"))]
    for launcher in (command, [sys.executable, "-m", "edgedeploy"]):

        def cli(spec: str, launcher: list[str] = launcher) -> subprocess.CompletedProcess[str]:
            argv = [*launcher, "export", spec, "--input", "x:2x4", "-o", "m.onnx"]
            return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)

        result = cli("calibration:build")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "'calibration' is an installed package" in result.stderr
        assert "(calibration.py:build)" in result.stderr
        given = cli("calibration.py:build")
        assert given.returncode == 0, given.stderr


POOL_MODULE = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def build():
    torch.manual_seed(0)
    return Net().eval()
"""


def test_an_opset_out_of_range_is_refused_and_an_old_one_is_exported_at_that_opset(tmp_path: Path) -> None:
    """--opset 99 printed onnxscript's traceback (its converter's "invalid version (must be between
    1 and 28)") and exported opset 18 with exit 0; --opset 13 did the same for a model with a
    ReduceMean (the converter cannot move its axes back to an attribute)."""
    (tmp_path / "pool.py").write_text(POOL_MODULE)
    module = f"{tmp_path / 'pool.py'}:build"
    newest = onnx.defs.onnx_opset_version()
    for opset in (99, newest + 1, 12):
        out = tmp_path / f"o{opset}.onnx"
        result = run_cli("export", module, "--input", "x:1x3x8x8", "--opset", opset, "-o", out)
        assert_clean_input_error(result, f"--opset {opset} is", f"use 13 to {newest}")
        assert not out.exists()
    out = tmp_path / "o13.onnx"
    result = run_cli("export", module, "--input", "x:1x3x8x8", "--opset", "13", "-o", out)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr, result.stderr
    assert "opset 13" in result.stdout
    assert {o.domain: o.version for o in onnx.load(out).opset_import}[""] == 13
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert ort.InferenceSession(str(out)).run(None, {"x": x})[0].shape == (2, 10)


def test_an_input_and_output_name_alike_or_doubled_is_refused_before_any_work(tmp_path: Path) -> None:
    """--input-names a --output-names a exported, and then failed with the checker's SSA message
    naming our scratch copy (.x.onnx.PID.export.XXXX/raw.onnx). The model's build() raising shows
    that the names are refused before the model is even built."""
    (tmp_path / "ab.py").write_text(AB_MODULE + "\n\ndef broken():\n    raise RuntimeError('built')\n")
    two = ["--input", "a:2x4", "--input", "b:2x4"]
    for args, phrase in (
        ([*two, "--input-names", "p,q", "--output-names", "q"], "'q' named both an input and an output"),
        ([*two, "--output-names", "b"], "'b' named both an input and an output"),
        ([*two, "--output-names", "y,y"], "output name 'y' given twice"),
        ([*two, "--input-names", "p,q,r"], "--input-names gives 3 names for 2 --input"),
    ):
        result = run_cli("export", f"{tmp_path / 'ab.py'}:broken", *args, "-o", tmp_path / "n.onnx")
        assert_clean_input_error(result, phrase)
        assert "raw.onnx" not in result.stderr
    # a name of forward's that meets the default output name: refused before the export
    clash = ["--input", "output:2x4", "--input", "b:2x4"]
    result = run_cli("export", f"{tmp_path / 'ab.py'}:build", *clash, "-o", tmp_path / "n.onnx")
    assert_clean_input_error(result, "'output' named both an input and an output")
    assert not (tmp_path / "n.onnx").exists()


def test_errors_name_the_output_asked_for_not_the_export_s_scratch_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export the checker refused (an output named like a weight, before rename_values) said
    "ONNX model .o.onnx.PID.export.XXXX/raw.onnx fails onnx.checker"; a full disk there named the
    scratch file too. The export is made to write two values of one name here."""
    import edgedeploy.stages.export as export_stage
    from edgedeploy.errors import EdgeDeployError

    def doubled(model: onnx.ModelProto, names: dict[str, str]) -> None:
        real_rename(model, names)
        model.graph.node[0].output[0] = model.graph.output[0].name  # not single assignment

    real_rename = export_stage.rename_values
    monkeypatch.setattr(export_stage, "rename_values", doubled)
    (tmp_path / "pool.py").write_text(POOL_MODULE)
    out = tmp_path / "out" / "o.onnx"
    options = ExportOptions(inputs=[InputShape.parse("x:1x3x8x8")], output_names=["logits"])
    with pytest.raises(EdgeDeployError) as refused:
        export(f"{tmp_path / 'pool.py'}:build", out, options)
    assert f"the model exported for {out} fails onnx.checker" in str(refused.value)
    assert "raw.onnx" not in str(refused.value) and ".o.onnx." not in str(refused.value)
    assert files_under(tmp_path / "out") == set()
    from edgedeploy.fileio import scratch_beside
    from edgedeploy.stages.export import naming_output

    dest = tmp_path / "d.onnx"
    with scratch_beside(dest, "export") as scratch, pytest.raises(OSError) as raised, naming_output(dest):
        (scratch / "no" / "raw.onnx").write_bytes(b"")
    assert raised.value.filename == str(dest)
