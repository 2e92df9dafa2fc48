"""Shared fixtures: small real models (a digits CNN trained for a few seconds, a two-input model)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import calibration  # noqa: F401  (ONNX Runtime's telemetry off before a test imports onnxruntime)

if TYPE_CHECKING:
    from onnx.backend.test.case.test_case import TestCase

# A test run started in the background of a non-interactive shell (`cmd &`, nohup) inherits Ctrl-C
# ignored, and Python then keeps SIG_IGN instead of its own handler. The interrupt tests check that
# the commands put back the handler they found; they run here as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class Digits:
    onnx_path: Path
    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    test_npz: Path
    torch_accuracy: float


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """The demo's CNN trained on scikit-learn's digits, exported with a dynamic batch axis."""
    import torch

    from edgedeploy.pipeline.demo import load_digits_data, train_digits_cnn
    from edgedeploy.stages.export import ExportOptions, export_module

    root = tmp_path_factory.mktemp("digits")
    data = load_digits_data()
    model, acc = train_digits_cnn(data, epochs=8)
    path = root / "digits.onnx"
    export_module(
        model, {"input": torch.from_numpy(data.x_test[:1])}, path, ExportOptions(output_names=["logits"])
    )
    test_npz = root / "digits_test.npz"
    np.savez(test_npz, input=data.x_test)
    return Digits(path, data.x_test, data.y_test, data.x_train, test_npz, acc)


TWO_IO_SOURCE = """
import torch


class TwoInTwoOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.meta = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, image, meta):
        feats = torch.cat([self.image(image), torch.tanh(self.meta(meta))], dim=1)
        return self.head(feats), feats.mean(dim=1, keepdim=True)


def build():
    return TwoInTwoOut()


def example_inputs():
    return {"image": torch.randn(2, 3, 16, 16), "meta": torch.randn(2, 4)}
"""


@pytest.fixture(scope="session")
def two_io_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("twoio") / "twoio_model.py"
    path.write_text(TWO_IO_SOURCE)
    return path


@pytest.fixture(scope="session")
def two_io_onnx(two_io_module: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgedeploy.stages.export import ExportOptions, export

    out = tmp_path_factory.mktemp("twoio_onnx") / "twoio.onnx"
    export(f"{two_io_module}:build:example_inputs", out, ExportOptions(output_names=["scores", "mean"]))
    return out


@pytest.fixture(scope="session")
def static_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static-batch (1, 6) -> (1, 3) Gemm + Relu model built with onnx.helper."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor(
        "w", TensorProto.FLOAT, [3, 6], rng.standard_normal((3, 6)).astype(np.float32).ravel()
    )
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], np.zeros(3, np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="gemm"),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ],
        "static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("static") / "static.onnx"
    onnx.save(model, path)
    return path


def write_run_config(folder: Path, source: str | Path, name: str, sections: str) -> Path:
    """``folder/edgedeploy.toml``, an ``edgedeploy run`` config: workdir "work", [model] ``source``
    named ``name``, then ``sections`` (the TOML from [build] on); its path."""
    path = folder / "edgedeploy.toml"
    path.write_text(f'''
workdir = "work"

[model]
source = "{source}"
name = "{name}"

{sections}''')
    return path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str | Path, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> CliResult:
    """Run ``python -m edgedeploy`` as a user would, in a fresh process (``env``: its whole environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgedeploy", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_in_process(*args: str | Path) -> tuple[int, str, str]:
    """``edgedeploy ARGS`` in this process, so that what a test patched in (fakes, counters) stays
    in force: (exit code, stdout, stderr), the code as Python's exit gives it for the SystemExit
    main() raises (none: 0)."""
    from edgedeploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return (0 if code is None else code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def demo_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliResult]:
    """One ``edgedeploy demo`` run as the README's ``make demo`` does it (a relative --out), shared
    by the tests that check its table, bundle and report: (the folder it ran in, its result)."""
    cwd = tmp_path_factory.mktemp("demo-cli")
    return cwd, run_cli("demo", "--out", "demo", "--duration", "0.3", "--json", "demo.json", cwd=cwd)


def assert_clean_input_error(result: CliResult, *needles: str) -> None:
    """Exit 2, no traceback, and one line that names the problem."""
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def validate_manifest(manifest: dict[str, object]) -> None:
    """Every bundle's manifest must satisfy the JSON Schema shipped in the package."""
    import jsonschema

    import edgedeploy

    schema = json.loads((Path(edgedeploy.__file__).parent / "manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema)


class TenWatts:
    """A power source that reads a constant 10 W (a fake for tegrastats, NVML and RAPL), so that the
    energy of a window is 10 W times its length: ``ten_watts`` puts it behind every PowerMonitor."""

    name = "fake-10W"

    def start(self) -> float:
        return time.monotonic()

    def stop(self) -> float:
        return time.monotonic()

    def measure(self, t0: float, t1: float) -> tuple[float, dict[str, float], str, int]:
        return 10.0, {"total": 10.0}, "all", int((t1 - t0) * 10)


@pytest.fixture
def ten_watts(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedeploy.power.monitor import PowerMonitor

    monkeypatch.setattr(PowerMonitor, "_open", lambda self, kind: TenWatts())


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")} if path.exists() else set()


@pytest.fixture
def reflect_padded_onnx(tmp_path: Path) -> Path:
    """A model whose second dim is dynamic and must be at least 3 long (reflect padding by 2, as
    an STFT front end pads its audio): fed as 1 (random data without --input), ONNX Runtime
    refuses it."""
    from onnx import TensorProto, helper

    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 2, 0, 2])
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
        "reflect",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])],
        [pads],
    )
    path = tmp_path / "reflect.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def reflect_padded_data(folder: Path) -> Path:
    """``folder/val.npz``: 4 samples of 16 for :func:`reflect_padded_onnx`, 2 rows a batch at
    ``batch_size = 2`` (its dynamic dim then comes out as 16, never 1)."""
    import numpy as np

    path = folder / "val.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32))
    return path


def checkpoint_module(folder: Path) -> Callable[[int], None]:
    """``folder/net.py``, whose ``build`` loads ``weights.pt`` (a checkpoint no cache key can see),
    and a function that writes that checkpoint from a seed (a retraining)."""
    import torch

    (folder / "net.py").write_text(
        "import torch\n\n\ndef build():\n"
        "    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))\n"
        "    m.load_state_dict(torch.load('weights.pt'))\n"
        "    return m\n"
    )

    def weights(seed: int) -> None:
        torch.manual_seed(seed)
        layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        torch.save(layers.state_dict(), folder / "weights.pt")

    return weights


def dynamic_matmul_model(folder: Path) -> None:
    """m.onnx (x [n, 8] @ W, opset 17) and val.npz (16 samples) in ``folder``
    (tests/test_pipeline.py, tests/test_matrix.py)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "m.onnx")
    np.savez(folder / "val.npz", x=rng.standard_normal((16, 8)).astype(np.float32))


def shapeless_model(path: Path) -> Path:
    """x @ W with x declared without a shape (not even a rank), as some converters write it:
    ONNX Runtime runs it; onnx's checker refuses it (tests/test_hostile.py, tests/test_unusual_models.py)."""
    w = onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def bertlike_model(path: Path, through_add: bool = False) -> Path:
    """A BERT-like embedding: int64 input_ids[batch, seq] index a 100-row table, token_type_ids a
    2-row one through Cast(int32) and Unsqueeze/Squeeze, attention_mask (int64) multiplies the sum
    as floats; out[batch, 8]. Random token types of 0-9 fail it ("idx=8 must be within the
    inclusive range [-2,1]"). ``through_add``: the token types (0-1) reach a 3-row table as
    token_type_ids + 1, which no random range follows (nor the export's optimizer folds): random
    inputs fail it still."""
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((100, 8)).astype(np.float32), "wemb"),
        onnx.numpy_helper.from_array(rng.standard_normal((2 + through_add, 8)).astype(np.float32), "temb"),
        onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "ax"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        onnx.numpy_helper.from_array(np.array(1, np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["wemb", "input_ids"], ["a"]),
        helper.make_node("Add", ["token_type_ids", "one"], ["t64"])
        if through_add
        else helper.make_node("Identity", ["token_type_ids"], ["t64"]),
        helper.make_node("Cast", ["t64"], ["t32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["t32", "ax"], ["t3"]),
        helper.make_node("Squeeze", ["t3", "ax"], ["t2"]),
        helper.make_node("Gather", ["temb", "t2"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
        helper.make_node("Mul", ["c", "m3"], ["d"]),
        helper.make_node("MatMul", ["d", "W"], ["e"]),
        helper.make_node("ReduceSum", ["e", "ax1"], ["out"], keepdims=0),
    ]
    ids = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "token_type_ids", "attention_mask")
    ]
    out = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])]
    model = helper.make_model(
        helper.make_graph(nodes, "bertlike", ids, out, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


def conv_integer_model(path: Path) -> Path:
    """A dynamically quantized model, as ONNX Runtime's quantize_dynamic writes one (ddddocr's
    common_old.onnx): DynamicQuantizeLinear(x) -> ConvInteger with uint8 weights -> Cast -> Mul by
    the scales, a float input and output, no Q/DQ pair. ONNX Runtime runs it on the CPU."""
    from onnx import numpy_helper

    w = np.random.default_rng(0).integers(100, 156, (4, 3, 3, 3)).astype(np.uint8)
    weights = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(128, np.uint8), "w_zero"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
    ]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="quant_x"),
        helper.make_node("ConvInteger", ["xq", "w", "xz", "w_zero"], ["acc"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["acc"], ["accf"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "w_scale"], ["scale"], name="scales"),
        helper.make_node("Mul", ["accf", "scale"], ["y"], name="rescale"),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_quantized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def onnx_node_test(module: str, cls: str, export: str, monkeypatch: pytest.MonkeyPatch) -> TestCase:
    """One of onnx's node tests (onnx.backend.test.case.node: its model and data), made by its own
    export function alone (onnx's loader makes all 1600 of them, 30 s; importing the op's module
    makes its own, into the lists replaced here)."""
    import onnx.backend.test.case.node as node_cases

    tests = importlib.import_module(f"onnx.backend.test.case.node.{module}")
    made: list[Any] = []
    monkeypatch.setattr(node_cases, "_NodeTestCases", made)
    monkeypatch.setattr(node_cases, "_existing_names", {})
    monkeypatch.setattr(node_cases, "_TargetOpType", None)
    getattr(getattr(tests, cls), export)()
    return made[0]
