"""The fp16 path's fast paths give the slow paths' answers: range counts on magnitude bits, the
converter's weight rounding, shape inference without the weights; and the analysis reads all the
data it is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers import float16

from calibration.graphs import infer_shapes_light
from edgedeploy.stages.precision.analysis import Fp16Stats, analyze
from edgedeploy.stages.precision.fp16 import round_to_float16

EDGES = [
    0.0,
    -0.0,
    2.0**-25,
    -(2.0**-25),
    2.0**-26,
    5.96e-08,
    3e-8,
    2.0**-14,
    6e-5,
    65504.0,
    65519.0,
    65520.0,
]
EDGES += [-65520.0, 7e4, 1e30, -1e30, 1.0, -3.5]


def _batches(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(3):
        values = rng.standard_normal(257) * 10.0 ** rng.uniform(-9, 6)
        values[rng.random(257) < 0.3] = 0.0
        found.append(np.concatenate([values, EDGES]).astype(np.float32))
    return found


def test_range_counts_on_magnitude_bits_equal_the_float_path() -> None:
    for seed in range(40):
        fast, slow = Fp16Stats(), Fp16Stats()
        for batch in _batches(seed):
            fast.add(batch)
            slow._add_slow(batch)
        assert fast.figures() == slow.figures()
    with_nan = Fp16Stats()
    with_nan.add(np.array([np.nan, np.inf, 1e5, 1e-9, 0.0], np.float32))
    assert with_nan.nonfinite == 2 and with_nan.overflow == 1 and with_nan.flushed == 1


def test_weight_rounding_is_bit_identical_to_the_converters() -> None:
    for seed in range(20):
        for batch in _batches(seed):
            batch = np.concatenate([batch, [np.inf, -np.inf, np.nan]]).astype(np.float32)
            for values in (batch, batch.astype(np.float64)):
                ours, theirs = round_to_float16(values), float16.convert_np_to_float16(values)
                assert ours.dtype == theirs.dtype == np.float16
                assert np.array_equal(ours.view(np.uint16), theirs.view(np.uint16))
    custom = (np.array(EDGES, np.float32), 1e-4, 1000.0)
    assert np.array_equal(
        round_to_float16(*custom).view(np.uint16), float16.convert_np_to_float16(*custom).view(np.uint16)
    )


def test_large_weights_cast_in_onnx_runtime_round_as_the_converter_does() -> None:
    """From ORT_CAST_ELEMENTS values on, float32 <-> float16 casts run in ONNX Runtime's Cast
    kernel: the converter's rounding, the emulation's and the casts themselves keep numpy's bits
    (edges, -0.0, values that flush or overflow, Inf, and NaN, which is left to numpy)."""
    from edgedeploy.stages.precision.emulate import round_weight
    from edgedeploy.stages.precision.fp16 import ORT_CAST_ELEMENTS, to_float16, to_float32

    rng = np.random.default_rng(11)
    size = 2 * ORT_CAST_ELEMENTS
    bits = rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32).view(np.float32)
    finite = np.where(np.isfinite(bits), bits, np.float32(1.0))
    for scale in (1e-9, 1e-6, 0.05, 3e4, 1e6):
        values = (rng.standard_normal(size) * scale).astype(np.float32)
        values[::97] = -0.0
        values[: len(EDGES)] = EDGES
        for case in (values, finite, np.concatenate([values, [np.inf, -np.inf]]).astype(np.float32)):
            with_nan = case.copy()
            with_nan[5] = np.nan
            for arr in (case, with_nan, bits):
                want = float16.convert_np_to_float16(arr)
                assert np.array_equal(round_to_float16(arr).view(np.uint16), want.view(np.uint16))
                with np.errstate(over="ignore", invalid="ignore"):
                    plain = arr.astype(np.float16)
                assert np.array_equal(to_float16(arr).view(np.uint16), plain.view(np.uint16))
                wide = plain.astype(np.float32)
                assert np.array_equal(to_float32(plain).view(np.uint32), wide.view(np.uint32))
                clipped = want.copy()
                clipped[np.isinf(clipped)] = np.copysign(np.float16(65504), clipped[np.isinf(clipped)])
                expected = clipped.astype(np.float32)
                assert np.array_equal(round_weight(arr).view(np.uint32), expected.view(np.uint32))


def test_converter_rounding_the_analysed_arrays_writes_what_it_writes_from_the_messages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """make_fp16 given the weights' arrays (as the range analysis read them) writes the artifact
    it writes without them; a weight stored as float_data, or one the arrays do not match,
    takes the converter's own path."""
    from edgedeploy.stages.precision.fp16 import make_fp16

    rng = np.random.default_rng(12)
    model = _tiny_weight_model(False)
    big = numpy_helper.from_array(rng.standard_normal((4, 4096)).astype(np.float32), "big")
    model.graph.initializer.append(big)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4096], np.ones(4096).tolist())  # float_data
    model.graph.initializer.append(bias)
    model.graph.node.append(helper.make_node("MatMul", ["y", "big"], ["z0"], name="wide"))
    model.graph.node.append(helper.make_node("Add", ["z0", "bias"], ["z"], name="shift"))
    model.graph.output[0].name = "z"
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    plain = make_fp16(path, tmp_path / "plain.onnx")
    loaded = onnx.load(path)
    arrays = {i.name: numpy_helper.to_array(i) for i in loaded.graph.initializer}
    arrays["w2"] = arrays["w2"][:, :2]  # not the weight's shape: not taken
    shared = make_fp16(path, tmp_path / "shared.onnx", loaded=loaded, arrays=arrays)
    assert shared.path.read_bytes() == plain.path.read_bytes()
    assert shared.files[1].read_text() == plain.files[1].read_text()
    # and with some of them rounded already (as the island release's emulation leaves them)
    loaded = onnx.load(path)
    arrays = {i.name: numpy_helper.to_array(i) for i in loaded.graph.initializer}
    halves = {"big": round_to_float16(arrays["big"]), "w": round_to_float16(arrays["w"])[:1]}  # w: bad shape
    rounded = make_fp16(path, tmp_path / "rounded.onnx", loaded=loaded, arrays=arrays, halves=halves)
    assert rounded.path.read_bytes() == plain.path.read_bytes()


def _scale_model(weight_elements: int = 4096) -> onnx.ModelProto:
    """x [n, 64] -> MatMul by a 64 x (weight_elements / 64) weight -> Reshape by an int64 shape."""
    cols = weight_elements // 64
    w = numpy_helper.from_array(np.ones((64, cols), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, cols // 2, 2], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_inference_without_weights_infers_what_full_inference_does() -> None:
    model = _scale_model()
    full = onnx.shape_inference.infer_shapes(model)
    light = infer_shapes_light(model)
    types = [{v.name: v.type for v in [*m.graph.value_info, *m.graph.output]} for m in (full, light)]
    assert types[0] == types[1] and "h" in types[0]
    assert [d.dim_value for d in types[1]["y"].tensor_type.shape.dim][1:] == [
        32,
        2,
    ]  # the int64 shape was read
    assert [i.name for i in light.graph.initializer] == ["shape"]  # the weight's bytes were not
    whole = infer_shapes_light(model, weights=True)
    assert whole.graph.initializer == model.graph.initializer and whole.graph.input == model.graph.input


def _identity_scale() -> onnx.ModelProto:
    k = numpy_helper.from_array(np.array(1.0, np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"], name="scale")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [k],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_island_analysis_reads_every_sample_even_after_its_ranges_stop_moving(tmp_path: Path) -> None:
    # 24 samples of magnitude ~1 (ranges that look settled), then 8 that overflow fp16: the
    # analysis the build runs reads them all and keeps the node that overflows in fp32
    from edgedeploy.stages.precision.islands import plan_islands

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(24)]
    feeds += [{"x": np.full((1, 8), 7e4, np.float32)} for _ in range(8)]
    path = tmp_path / "scale.onnx"
    onnx.save(_identity_scale(), path)
    keep, report = plan_islands(path, feeds)
    assert report.samples == 32 and not any("settled" in n for n in report.notes)
    assert report.tensor("y") is not None and report.tensor("y").stats.overflow == 64  # type: ignore[union-attr]
    assert "scale" in keep


def _outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [np.asarray(o) for o in session.run(None, {k: v for k, v in feed.items() if k in names})]


def test_switchable_emulation_gives_each_plans_own_emulation() -> None:
    from edgedeploy.stages.precision.emulate import emulate_fp16, switch_input
    from tests.precision import models

    cases = [
        (
            models.big_weight_model(),
            {"x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)},
        ),
        (
            models.decomposed_layernorm_model(),
            {"x": np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)},
        ),
        (  # a node reading one tensor twice: Mul(h, h)
            models.squared_l2norm_model(width=64),
            {"x": np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)},
        ),
    ]
    for model, feed in cases:
        names = [n.name for n in model.graph.node]
        fixed, soft = set(names[:1]), names[1:]
        switched = emulate_fp16(model, fixed, (), switchable=soft)
        rng = np.random.default_rng(2)
        for _ in range(4):
            fp32 = {n for n in soft if rng.random() < 0.5}
            flags = {switch_input(n): np.array(n not in fp32) for n in soft}
            got = _outputs(switched, {**feed, **flags})
            want = _outputs(emulate_fp16(model, fixed | fp32, ()), feed)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


def test_emulated_weight_rounding_is_the_converters_with_infinite_weights_clipped() -> None:
    from edgedeploy.stages.precision.emulate import round_weight

    values = np.array([*EDGES, np.inf, -np.inf, 1e-45], np.float32)
    tiny = (values != 0) & (np.abs(values) < 2.0**-24)
    expected = np.clip(np.where(tiny, np.sign(values) * 2.0**-24, values), -65504, 65504)
    expected = expected.astype(np.float16).astype(np.float32)
    assert np.array_equal(round_weight(values).view(np.uint32), expected.view(np.uint32))


def test_recorded_analysis_outputs_are_the_fp32_reference_of_the_first_batches() -> None:
    from edgedeploy.stages.precision.analysis import OutputRecorder
    from tests.precision import models

    model = models.decomposed_layernorm_model()
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(5)]
    recorder = OutputRecorder([o.name for o in model.graph.output], limit=8)  # the first 2 batches
    analyze(model, recorder.wrap(feeds), observers=[recorder])
    kept, reference = recorder.batches()
    assert reference is not None and len(kept) == len(reference) == 2
    for feed, outputs in zip(kept, reference, strict=True):
        for got, want in zip(outputs, _outputs(model, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_batches_split_along_the_sample_axis_only_for_a_free_first_dimension() -> None:
    from edgedeploy.stages.precision.analysis import free_first_dim, split_batches
    from tests.precision import models

    feed = {"x": np.arange(80, dtype=np.float32).reshape(10, 8)}
    parts = list(split_batches([feed], 4))
    assert [p["x"].shape[0] for p in parts] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), feed["x"])
    assert free_first_dim(models.decomposed_layernorm_model())  # x: [n, 8]
    fixed = models.decomposed_layernorm_model()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10
    assert not free_first_dim(fixed)  # a fixed batch cannot be split


def test_weights_rounded_by_a_cast_in_the_graph_give_the_numpy_rounding() -> None:
    from edgedeploy.stages.precision.emulate import emulate_fp16
    from tests.precision import models

    model = models.decomposed_layernorm_model()
    plain = [
        i.name
        for i in model.graph.initializer
        if not np.any((np.abs(a := numpy_helper.to_array(i)) < 2.0**-24) & (a != 0) | (np.abs(a) > 65504))
    ]
    assert plain
    feed = {"x": np.random.default_rng(4).standard_normal((6, 8)).astype(np.float32) * 30}
    want = _outputs(emulate_fp16(model, (), ()), feed)
    got = _outputs(emulate_fp16(model, (), (), cast_weights=plain), feed)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_analysis_pass_with_weights_in_memory_observes_what_the_serialized_model_gives() -> None:
    """collect's session with the weights the analysis read given to ONNX Runtime in memory sees
    every tensor bit for bit as a session of the serialized model does."""
    from calibration.observers import IN_MEMORY_BYTES, collect, float_tensor_names

    class Keep:
        def __init__(self) -> None:
            self.seen: dict[str, list[np.ndarray]] = {}

        def observe(self, name: str, array: np.ndarray) -> None:
            self.seen.setdefault(name, []).append(np.array(array, copy=True))

    rng = np.random.default_rng(10)
    model = _tiny_weight_model(False)
    model.graph.initializer.append(
        numpy_helper.from_array(rng.standard_normal((4, 2048)).astype(np.float32), "big")
    )
    model.graph.node.append(helper.make_node("MatMul", ["y", "big"], ["z"], name="wide"))
    model.graph.output[0].name = "z"
    assert 4 * 4 * 2048 > IN_MEMORY_BYTES >= 4 * 16 * 4  # one weight in memory, the others inline
    feeds = [{"x": rng.standard_normal((3, 8)).astype(np.float32)} for _ in range(2)]
    names = float_tensor_names(model)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    in_memory, serialized = Keep(), Keep()
    assert collect(model, feeds, names, [in_memory], arrays=arrays) == 6
    collect(model, feeds, names, [serialized])
    assert set(in_memory.seen) == set(serialized.seen) == set(names)
    for name, batches in serialized.seen.items():
        for got, want in zip(in_memory.seen[name], batches, strict=True):
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def testcopy_without_initializers_is_the_model_minus_its_weights() -> None:
    from calibration.graphs import copy_without_initializers
    from tests.precision import models

    model = models.decomposed_layernorm_model()
    model.doc_string, model.graph.doc_string = "model", "graph"
    onnx.helper.set_model_props(model, {"k": "v"})
    want = onnx.ModelProto()
    want.CopyFrom(model)
    del want.graph.initializer[:]
    assert copy_without_initializers(model) == want
    assert len(model.graph.initializer) == 5  # the model itself is untouched


def _tiny_weight_model(initializer_inputs: bool) -> onnx.ModelProto:
    """x [n, 8] -> MatMul by w (a few values below 2**-24) -> Add eps (1e-12, flushed in fp16) ->
    MatMul: the flushed constant's consumer is kept by rule and then released by measurement.
    Two nodes are unnamed (make_fp16 names them); ``initializer_inputs`` lists the weights as
    graph inputs too, which the analysis drops and the conversion keeps."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    w[0, :3] = [1e-9, -3e-8, 1e-40]
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    eps = numpy_helper.from_array(np.full((16,), 1e-12, np.float32), "eps")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Add", ["h", "eps"], ["he"]),
        helper.make_node("Relu", ["he"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="head"),
    ]
    inits = [numpy_helper.from_array(w, "w"), w2, eps]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])]
    if initializer_inputs:
        inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_build_reading_the_model_once_writes_what_separate_reads_write(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The model read once (shared by the analysis and the converter, the analysis session made
    from the file's bytes) gives the artifact, plan and range figures that reading it apart gives."""
    import json

    import edgedeploy.stages.precision.mixed as mixed
    from edgedeploy.options import BuildRequest, CalibrationRequest
    from edgedeploy.targets import load_target

    rng = np.random.default_rng(8)
    data = tmp_path / "calib.npz"
    np.savez(data, x=rng.standard_normal((24, 8)).astype(np.float32))
    request = BuildRequest(
        "fp16", load_target("x86-64-cpu"), calibration=CalibrationRequest(data=str(data), batch_size=8)
    )
    read_once = mixed._read_once
    for initializer_inputs in (False, True):
        path = tmp_path / f"m{initializer_inputs}.onnx"
        onnx.save(_tiny_weight_model(initializer_inputs), path)
        built = {}
        for way in ("once", "apart"):
            monkeypatch.setattr(mixed, "_read_once", read_once if way == "once" else lambda _: (None, None))
            art = mixed.make_fp16_checked(path, tmp_path / f"{way}{initializer_inputs}.onnx", request)
            ranges = json.loads(art.path.with_name(art.path.stem + ".ranges.json").read_text())
            del ranges["summary"]["seconds"]
            built[way] = (art.path.read_bytes(), art.files[1].read_text(), ranges)
            assert art.info["released_fp32_nodes"] >= 1  # the measured release ran
        assert built["once"] == built["apart"]
    original = onnx.load(path)  # the model with initializer inputs: the conversion kept them
    converted = onnx.load(tmp_path / "onceTrue.onnx")
    assert {i.name for i in original.graph.input} <= {i.name for i in converted.graph.input}


def test_the_artifact_check_runs_one_sample_only_when_every_input_has_a_free_batch() -> None:
    from calibration.modelinfo import TensorSpec
    from edgedeploy.stages.precision.mixed import _one_sample

    feed = {"a": np.zeros((8, 3), np.float32), "b": np.ones((8,), np.int64)}
    free = [TensorSpec("a", ("n", 3), "float32"), TensorSpec("b", (None,), "int64")]
    assert {k: v.shape for k, v in _one_sample(feed, free).items()} == {"a": (1, 3), "b": (1,)}
    fixed = [TensorSpec("a", (8, 3), "float32"), TensorSpec("b", ("n",), "int64")]
    assert _one_sample(feed, fixed) is feed
    ragged = {"a": feed["a"], "b": np.ones((4,), np.int64)}
    assert _one_sample(ragged, free) is ragged


def test_rounded_weights_written_in_place_are_what_from_array_makes() -> None:
    from edgedeploy.stages.precision.emulate import _float_initializer

    graph = onnx.GraphProto()
    for name, values in (("w", np.arange(15, dtype=np.float32).reshape(3, 5)), ("s", np.float32(1.5))):
        _float_initializer(graph, name, np.asarray(values))
        assert graph.initializer[-1] == numpy_helper.from_array(np.asarray(values), name)


def test_release_session_with_weights_in_memory_computes_what_the_serialized_model_does() -> None:
    """The island release's session (large float weights given to ONNX Runtime as in-memory
    external initializers) gives every plan's outputs bit for bit as a session made from the
    serialized emulated model; small weights, int64 constants and Constant nodes stay inline."""
    from calibration.observers import IN_MEMORY_BYTES
    from edgedeploy.stages.precision.emulate import emulate_fp16, switch_input
    from edgedeploy.stages.precision.islands import _session

    rng = np.random.default_rng(9)
    model = _tiny_weight_model(False)
    big = numpy_helper.from_array(rng.standard_normal((4, 2048)).astype(np.float32), "big")
    assert 4 * 4 * 2048 > IN_MEMORY_BYTES >= 4 * 16 * 4  # one weight in memory, the others inline
    model.graph.initializer.append(big)
    model.graph.node.append(helper.make_node("MatMul", ["y", "big"], ["z"], name="wide"))
    model.graph.output[0].name = "z"
    soft = ["proj", "head", "wide"]
    emulated = emulate_fp16(model, set(), (), switchable=soft, cast_weights=["big"])
    session = _session(emulated)
    assert any(i.name == "big" for i in emulated.graph.initializer)  # the model itself is unchanged
    # the analysed weights' arrays: the emulated graph holds stubs only, its session the arrays
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    stubbed = emulate_fp16(model, set(), (), switchable=soft, cast_weights=["big"], arrays=arrays)
    assert not any(i.raw_data for i in stubbed.graph.initializer if i.data_type == TensorProto.FLOAT)
    assert "w__fp16" in arrays  # a rounded twin, made for the session
    from_arrays = _session(stubbed, arrays)
    feed = {"x": rng.standard_normal((5, 8)).astype(np.float32)}
    for fp16 in ([], ["proj"], soft):
        flags = {switch_input(n): np.array(n in fp16) for n in soft}
        want = _outputs(emulated, {**feed, **flags})
        for s in (session, from_arrays):
            got = s.run(None, {**feed, **flags})
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


def test_typing_the_model_in_place_gives_what_shape_inference_with_weights_returns() -> None:
    """The converter's input typed in place (no weight copied) is the message that
    ``infer_shapes_light(weights=True)`` returns, byte for byte, with initializer inputs, a doc
    string and metadata, and IR 3 (whose version inference of the light copy raises)."""
    from edgedeploy.stages.precision.fp16 import _typed_in_place

    cases = [_scale_model(), _tiny_weight_model(False), _tiny_weight_model(True)]
    documented = _tiny_weight_model(True)
    documented.doc_string, documented.graph.doc_string = "model doc", "graph doc"
    onnx.helper.set_model_props(documented, {"author": "tests"})
    documented.ir_version = 3
    cases.append(documented)
    for model in cases:
        want = infer_shapes_light(_copy(model), weights=True).SerializeToString()
        mine = _copy(model)
        assert _typed_in_place(mine) is mine
        assert mine.SerializeToString() == want


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def test_analysis_fetches_a_reshaped_or_transposed_copy_once_and_gives_it_its_sources_figures(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """A Reshape/Transpose/Squeeze... output holds its input's values: the analysis fetches only
    the input from ONNX Runtime and counts it once, and the copy is reported with the same
    figures; a copy that is a graph output is still fetched (the recorder needs its values)."""
    import edgedeploy.stages.precision.analysis as analysis

    k = numpy_helper.from_array(np.array(3000.0, np.float32), "k")
    shape = numpy_helper.from_array(np.array([-1, 4, 2], np.int64), "shape")
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["h"], name="scale"),
        helper.make_node("Transpose", ["h"], ["t"], name="swap", perm=[1, 0]),
        helper.make_node("Reshape", ["t", "shape"], ["r"], name="fold"),
        helper.make_node("Relu", ["r"], ["y"], name="act"),
        helper.make_node("Reshape", ["y", "shape"], ["out"], name="last"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [k, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fetched: list[list[str]] = []
    collect = analysis.collect

    def spy(m: onnx.ModelProto, source: object, names: list[str], *a: object, **kw: object) -> int:
        fetched.append(list(names))
        return collect(m, source, names, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "collect", spy)
    rng = np.random.default_rng(5)
    feeds = [
        {"x": (rng.standard_normal((4, 8)) * 10.0 ** rng.uniform(-9, 2)).astype(np.float32)} for _ in range(6)
    ]
    report = analyze(model, feeds)
    assert fetched == [["x", "h", "y", "out"]]
    assert [t.name for t in report.tensors] == ["x", "h", "t", "r", "y", "out"]
    for copy, source in (("t", "h"), ("r", "h"), ("out", "y")):
        assert report.tensor(copy).stats.figures() == report.tensor(source).stats.figures()  # type: ignore[union-attr]
    assert report.tensor("r").stats is not report.tensor("h").stats  # type: ignore[union-attr]


def test_fp16_analysis_runs_onnx_runtime_one_feed_ahead_of_its_statistics(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The range analysis' pass runs the next feed while this one's tensors are counted (collect's
    prefetch, bounded by PREFETCH_BYTES a run); the figures and the recorded outputs are those of a
    pass in step."""
    import edgedeploy.stages.precision.analysis as analysis
    from calibration.observers import PREFETCH_BYTES
    from edgedeploy.stages.precision.analysis import OutputRecorder
    from tests.precision import models

    asked: list[object] = []
    collect = analysis.collect

    def spy(*a: object, **kw: object) -> int:
        asked.append(kw.get("prefetch_bytes"))
        return collect(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "collect", spy)
    model = models.decomposed_layernorm_model()
    rng = np.random.default_rng(6)
    feeds = [
        {"x": (rng.standard_normal((4, 8)) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)} for _ in range(7)
    ]
    found = {}
    for ahead in (PREFETCH_BYTES, 0):
        monkeypatch.setattr(analysis, "PREFETCH_BYTES", ahead)
        recorder = OutputRecorder([o.name for o in model.graph.output], limit=8)
        report = analyze(model, recorder.wrap(feeds), observers=[recorder])
        kept, reference = recorder.batches()
        found[ahead] = ([(t.name, t.stats.figures()) for t in report.tensors], len(kept), reference)
    assert asked == [PREFETCH_BYTES, 0] and PREFETCH_BYTES > 0
    ahead_figures, in_step = found[PREFETCH_BYTES], found[0]
    assert ahead_figures[:2] == in_step[:2] and ahead_figures[1] == 2
    for got, want in zip(ahead_figures[2] or [], in_step[2] or [], strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_the_artifact_check_session_lets_its_idle_threads_sleep(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The artifact check loads the artifact at ONNX Runtime's default optimization level and runs it
    once; its thread pool waits without spinning (calibration.observers.no_spinning), as every other
    session of the build: a spinning pool thread cost captcha-rec's check 0.06 s of its 0.15 s CPU."""
    import onnxruntime as ort

    from edgedeploy.stages.precision.fp16 import make_fp16
    from tests.precision import models

    made: list[ort.SessionOptions] = []
    session = ort.InferenceSession

    def spy(model: object, options: ort.SessionOptions | None = None, *args: object, **kw: object) -> object:
        if options is not None:
            made.append(options)
        return session(model, options, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ort, "InferenceSession", spy)
    source = models.save(models.decomposed_layernorm_model(), tmp_path / "m.onnx")
    make_fp16(source, tmp_path / "m.fp16.onnx")
    levels = [o.graph_optimization_level for o in made]
    assert levels == [ort.GraphOptimizationLevel.ORT_ENABLE_ALL]  # the check's one session
    assert made[0].get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_the_artifact_check_asks_the_converted_model_not_the_file_read_back(
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """Which ONNX Runtime optimizers to switch off for the check's session (ort_crashing_optimizers)
    is read from the converted model make_fp16 holds, not from the written file parsed again
    (27 MB for captcha-rec's fp16 artifact, 0.03 s of CPU); the session still loads the file."""
    from edgedeploy.stages.precision.fp16 import make_fp16
    from tests.precision import models

    parsed: list[str] = []
    load = onnx.load

    def spy(f: object, *a: object, **kw: object) -> onnx.ModelProto:
        parsed.append(Path(str(f)).name)
        return load(f, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx, "load", spy)
    source = models.save(models.decomposed_layernorm_model(), tmp_path / "m.onnx")
    art = make_fp16(source, tmp_path / "m.fp16.onnx")
    assert parsed and [p for p in parsed if p != "m.onnx"] == []  # the source, never the artifact
    assert art.path.is_file()
