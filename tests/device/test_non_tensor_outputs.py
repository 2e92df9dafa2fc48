"""A CPU bundle of a scikit-learn classifier as skl2onnx exports it: a label tensor and the class
probabilities as a ZipMap, a seq(map(int64,tensor(float))) that is no tensor. Its manifest.json io
and README listed that output as a 0-d float32 tensor ({"shape": [], "dtype": "float32"},
``| output | z | [] | float32 |``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from conftest import Device
from onnx import TensorProto, helper

from tests.conftest import assert_clean_input_error, run_cli, validate_manifest

PROBABILITIES = "seq(map(int64,tensor(float)))"


def skl2onnx_classifier(path: Path) -> Path:
    """float_input[N,4] -> LinearClassifier (3 classes, softmax) -> output_label[N] (int64) and
    probabilities -> ZipMap -> output_probability, as skl2onnx writes a LogisticRegression."""
    rng = np.random.default_rng(0)
    classify = helper.make_node(
        "LinearClassifier", ["float_input"], ["label", "probability_tensor"], domain="ai.onnx.ml",
        coefficients=rng.standard_normal(12).round(3).tolist(), intercepts=[0.1, -0.2, 0.05],
        classlabels_ints=[0, 1, 2], multi_class=1, post_transform="SOFTMAX",
    )  # fmt: skip
    nodes = [
        classify,
        helper.make_node("Identity", ["label"], ["output_label"]),
        helper.make_node(
            "ZipMap", ["probability_tensor"], ["output_probability"], domain="ai.onnx.ml",
            classlabels_int64s=[0, 1, 2],
        ),
    ]  # fmt: skip
    probabilities = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    graph = helper.make_graph(
        nodes, "LogisticRegression",
        [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output_label", TensorProto.INT64, ["N"]),
         helper.make_value_info("output_probability", probabilities)],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_a_zipmap_output_is_listed_with_its_onnx_type_and_the_scripts_run_its_bundle(
    tmp_path: Path, device: Device
) -> None:
    """The manifest gives the ZipMap output its ONNX type as kind and null shape and dtype (the
    schema takes that for an output), the README its type; the bundle verifies on the host, and
    setup.sh, verify.sh (the label checked against the reference) and benchmark.sh run it."""
    model = skl2onnx_classifier(tmp_path / "clf.onnx")
    bundled = run_cli("bundle", model, "--target", "x86-64-cpu", "-o", tmp_path / "b")
    assert bundled.code == 0, bundled.stderr
    bundle = tmp_path / "b"
    manifest = json.loads((bundle / "manifest.json").read_text())
    validate_manifest(manifest)
    label, probabilities = manifest["io"]["outputs"]
    nothing = {"shape": None, "dtype": None, "rank_known": None}
    assert probabilities == {"name": "output_probability", **nothing, "kind": PROBABILITIES}
    tensor = {"shape": ["N"], "dtype": "int64", "rank_known": True, "kind": None}
    assert label == {"name": "output_label", **tensor}
    readme = (bundle / "README.md").read_text()
    assert f"| output | `output_probability` | - | {PROBABILITIES} |" in readme, readme
    assert "| output | `output_label` | [N] | int64 |" in readme and "| [] |" not in readme, readme
    checked = run_cli("bundle", "verify", bundle)
    assert checked.code == 0, checked.stdout + checked.stderr

    for name, args in (("setup.sh", ()), ("verify.sh", ()), ("benchmark.sh", ("--duration", "1"))):
        res = device.run(bundle / "scripts" / name, *args)
        assert "Traceback" not in res.stdout + res.stderr, (name, res.stderr)
        assert res.returncode == 0, (name, res.stdout, res.stderr)
    said = json.loads((bundle / "device" / "results" / "verify-fp32.json").read_text())
    assert said["passed"] is True and list(said["outputs"]) == ["output_label"], said
    assert said["outputs"]["output_label"]["equal_share"] == 1.0
    result = bundle / "device" / "results" / "benchmark-fp32-b1.json"
    assert device.calls("edgedeploy")[-1].endswith(f"--json {result}"), device.calls("edgedeploy")
    # without edgedeploy, benchmark.sh says the command to run (bundle_helper reads the io for it)
    res = device.run(bundle / "scripts" / "benchmark.sh", PATH=device.path_without_edgedeploy())
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().endswith("clf.onnx"), res.stderr


def sequence_model(path: Path) -> Path:
    """x[N,4] -> Relu -> SequenceConstruct -> s, a seq(tensor(float)): the model's only output is no
    tensor."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("SequenceConstruct", ["r"], ["s"])]
    floats = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_value_info("s", floats)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_a_model_with_no_tensor_output_is_refused_by_bundle_and_run_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A model whose only output is a seq(tensor(float)) was bundled for a CPU target: its
    reference/outputs.npz was empty and the device's verify.sh printed "accuracy: pass" having
    compared nothing. compare refuses it (no tensor output to compare); bundle and run now refuse it
    too, in one line, exit 2, with no bundle, archive or workdir written."""
    model = sequence_model(tmp_path / "seq.onnx")
    compared = run_cli("compare", model, model)
    assert_clean_input_error(compared, "no tensor output to compare", "'s' (seq(tensor(float)))")
    bundled = run_cli("bundle", model, "--target", "x86-64-cpu", "-o", tmp_path / "b")
    assert_clean_input_error(bundled, "seq.onnx", "no tensor output to compare", "'s' (seq(tensor(float)))")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.tar.gz").exists()
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        f'workdir = "out"\n[model]\nsource = "{model}"\n[build]\nbackend = "onnxruntime"\n'
        'precisions = ["fp32"]\n[profile]\nenabled = false\n'
    )
    ran = run_cli("run", config)
    assert_clean_input_error(ran)
    assert ran.stderr.strip() == (
        "error: config model.source: seq.onnx has no tensor output to compare (its outputs: "
        "'s' (seq(tensor(float)))): run compares every precision with fp32 on numeric tensor outputs only, "
        "as compare does"
    )
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").iterdir())


def test_matrix_refuses_a_model_with_no_tensor_output_in_its_own_words_before_anything_is_written(
    tmp_path: Path, static_onnx: Path
) -> None:
    """matrix checks each model as run does: a model whose only output is a seq(tensor(float)) is
    refused in one line, exit 2, with no workdir, cell record or bundle written. The line named
    run's key (config model.source) and said "run compares ..."; it names the matrix's entry of that
    model (here its second) and says what matrix compares. A source that does not exist, likewise."""
    model = sequence_model(tmp_path / "seq.onnx")
    config = tmp_path / "matrix.toml"
    head = (
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\n[profile]\nenabled = false\n'
        '[bundle]\noutput = "bundles"\n[matrix]\ntargets = ["x86-64-cpu"]\n'
        f'precisions = ["fp32", "fp16"]\n[[matrix.models]]\nsource = "{static_onnx}"\n'
    )
    config.write_text(f'{head}[[matrix.models]]\nsource = "{model}"\n')
    ran = run_cli("matrix", config)
    assert_clean_input_error(ran)
    assert ran.stderr.strip() == (
        "error: config matrix.models[1].source: seq.onnx has no tensor output to compare (its outputs: "
        "'s' (seq(tensor(float)))): matrix compares every precision with fp32 on numeric tensor outputs "
        "only, as compare does"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.toml", "seq.onnx"]
    missing = tmp_path / "missing.onnx"
    config.write_text(f'{head}[[matrix.models]]\nsource = "{missing}"\n')
    ran = run_cli("matrix", config)
    assert_clean_input_error(ran)
    assert ran.stderr.strip() == f"error: config matrix.models[1].source: {missing} not found"


# forward returns a list whose length the scripted loop decides: the TorchScript exporter writes it
# as one seq(tensor(float)) output (export's check, which compares it as a tensor, is turned off)
SEQUENCE_MODULE = """
from typing import List

import torch


class Chunks(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out: List[torch.Tensor] = []
        for i in range(x.shape[1]):
            out.append(x[:, i] * 2.0)
        return out


def build():
    return torch.jit.script(Chunks().eval())
"""


def test_a_pytorch_model_exported_with_no_tensor_output_is_refused_once_by_matrix_as_by_run(
    tmp_path: Path,
) -> None:
    """run refuses a PyTorch model whose export has no tensor output right after the export; matrix
    did not check it there, and every cell failed instead (fp32 in compare's words, fp16 in the
    fp16 checker's), exit 1. It is refused once, by the same check, in one line naming its matrix
    entry, exit 2, and no cell is built."""
    (tmp_path / "chunks.py").write_text(SEQUENCE_MODULE)
    model = '"chunks.py:build"\ninputs = ["x:2x1"]\n'
    shared = '[export]\nverify = false\n[profile]\nenabled = false\n[bundle]\noutput = "bundles"\n'
    config = tmp_path / "run.toml"
    config.write_text(
        f'workdir = "out"\n[model]\nsource = {model}{shared}'
        '[build]\nbackend = "onnxruntime"\ntarget = "x86-64-cpu"\nprecisions = ["fp32", "fp16"]\n'
    )
    ran = run_cli("run", config)
    assert ran.code == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.strip().splitlines()[-1] == (
        "error: config model.source: chunks.fp32.onnx has no tensor output to compare (its outputs: "
        "'output' (seq(tensor(float)))): run compares every precision with fp32 on numeric tensor outputs "
        "only, as compare does"
    )
    config = tmp_path / "matrix.toml"
    config.write_text(
        f'workdir = "mout"\n{shared}[build]\nbackend = "onnxruntime"\n[matrix]\ntargets = ["x86-64-cpu"]\n'
        f'precisions = ["fp32", "fp16"]\n[[matrix.models]]\nsource = {model}'
    )
    ran = run_cli("matrix", config)
    assert ran.code == 2 and "Traceback" not in ran.stderr, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert lines[-1] == (
        "error: config matrix.models[0].source: chunks.fp32.onnx has no tensor output to compare (its "
        "outputs: 'output' (seq(tensor(float)))): matrix compares every precision with fp32 on numeric "
        "tensor outputs only, as compare does"
    )
    assert all(line.startswith("warning: chunks: export: ") for line in lines[:-1]), lines  # no cell ran
    assert not ran.stdout and not (tmp_path / "bundles").exists()
    assert not (tmp_path / "mout" / "matrix.html").exists()


def test_verify_of_a_bundle_whose_reference_holds_no_output_says_nothing_was_compared(
    tmp_path: Path, device: Device
) -> None:
    """A bundle made before bundle refused such a model (its reference/outputs.npz empty, the
    manifest vouching for it): verify.sh said "accuracy: pass" after comparing nothing, a check that
    cannot fail; it now says nothing was compared and exits 2, as Polygraphy stops on "no common
    outputs found"."""
    model = skl2onnx_classifier(tmp_path / "clf.onnx")
    assert run_cli("bundle", model, "--target", "x86-64-cpu", "-o", tmp_path / "b").code == 0
    bundle = tmp_path / "b"
    outputs = bundle / "reference" / "outputs.npz"
    np.savez(outputs)  # as the bundle of a model with no tensor output held it
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["reference/outputs.npz"] = {
        "sha256": hashlib.sha256(outputs.read_bytes()).hexdigest(),
        "size": outputs.stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    res = device.run(bundle / "scripts" / "verify.sh")
    said = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in said and "pass" not in said, said
    assert "no output to compare" in res.stderr, res.stderr
    assert not (bundle / "device" / "results" / "verify-fp32.json").exists()
