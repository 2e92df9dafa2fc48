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

    from edgedeploy.stages.precision.fp16 import FIXED_TYPE_OPS, fp32_reasons

    why = fp32_reasons(Fp16Options(), sorted(FIXED_TYPE_OPS | {"TopK"}))

    def reason(op: str) -> str | None:
        return why(helper.make_node(op, ["x"], ["y"], name=op.lower()))

    fixed = "'s output type is fixed by its definition or attributes (the converter would retype it)"
    for op in ("Optional", "OptionalGetElement", "RandomNormalLike", "RandomUniform", "EyeLike", "Bernoulli"):
        assert reason(op) == op + fixed
    for op in ("DynamicQuantizeLinear", "BitCast"):
        assert reason(op) == f"{op}'s float inputs must stay float32 (the converter would retype them)"
    for op in ("AffineGrid", "MeanVarianceNormalization", "TopK"):  # TopK: the converter's own block list
        assert reason(op) == f"{op} has no fp16 kernel in ONNX Runtime"


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


def test_unshadowing_renames_a_body_name_where_the_body_defines_and_reads_it_and_nowhere_else() -> None:
    """calibration.graphs.unshadow_subgraph_names: the then-branch's ``two`` and ``eps`` become
    ``two__2`` and ``eps__2`` in its weights and the nodes reading them; the main graph keeps its
    names, and the else-branch, which reads the main graph's ``p``, still does."""
    from calibration.graphs import all_nodes, unshadow_subgraph_names
    from tests.precision import models

    model = models.shadowing_if_model()
    assert unshadow_subgraph_names(model) == [("two", "two__2"), ("eps", "eps__2")]
    branches = {a.name: a.g for a in model.graph.node[-1].attribute}
    then_g, else_g = branches["then_branch"], branches["else_branch"]
    assert {w.name for w in then_g.initializer} == {"v1", "v2", "two__2", "eps__2"}
    reads = {i for n in all_nodes(then_g) for i in n.input}
    assert {"two__2", "eps__2", "x"} <= reads and not {"two", "eps"} & reads
    assert {w.name for w in model.graph.initializer} >= {"two", "eps"}
    assert else_g.node[0].input[:] == ["p"]
    onnx.checker.check_model(model, full_check=True)
    assert unshadow_subgraph_names(model) == []


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

    monkeypatch.setattr(fp16, "unshadow_subgraph_names", lambda model: [])
    path = models.save(models.shadowing_if_model(), tmp_path / "m.onnx")
    with pytest.raises(InputError) as raised:
        make_fp16(path, tmp_path / "m.fp16.onnx")
    message = str(raised.value)
    assert "\n" not in message and not message.rstrip().endswith("AssertionError:"), message
    assert "weight 'two'" in message and "Pow 'then_ln_pow'" in message, message
    assert "fp32_initializers" in message and "another graph" in message, message
    assert not (tmp_path / "m.fp16.onnx").exists()
