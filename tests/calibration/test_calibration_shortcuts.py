"""The shortcuts that make calibration faster give the same numbers as the long way round:
histograms of copies, stacked per-tensor measurements, the one statistics pass of ``auto``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.observers import HistogramObserver, collect, same_values_sources
from calibration.qdq import QuantizeOptions, activation_scale, constant_values, plan_quantization
from calibration.select import QParams, _NodeRunner, _relative, consumer_errors, fake_quant, fake_quant_all
from calibration.sources import open_source
from tests.calibration.test_auto_algorithm import power_model


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[str],
    inits: tuple[onnx.TensorProto, ...] | list[onnx.TensorProto] = (),
    shape: list[int | str] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "m",
        inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs],
        list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_histogram_counts_match_numpy_with_zeros_and_nonfinite_values_apart() -> None:
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((4, 8, 16, 16)).astype(np.float32), 0)  # half exact zeros
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    observer = HistogramObserver(bins=256)
    observer.observe("t", x)
    hist = observer.histograms["t"]
    finite = np.abs(x[np.isfinite(x)])
    assert observer.nonfinite["t"] == 3
    assert hist.zeros == int((finite == 0).sum())
    expected, _ = np.histogram(finite[finite > 0], bins=256, range=(0, hist.top))
    assert np.abs(hist.counts - expected).sum() <= 2  # only values on a bin edge may differ
    assert hist.total == finite.size and hist.absmax == pytest.approx(float(finite.max()))


def test_tensors_that_only_copy_another_share_its_histogram_without_being_fetched() -> None:
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [4, -1])
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
            helper.make_node("Reshape", ["t", "shape"], ["s"]),
            helper.make_node("Sigmoid", ["s"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 6])],
        ["y"],
        [shape],
    )
    names = ["x", "r", "t", "s", "y"]
    sources = same_values_sources(model, names)
    assert sources == {"t": "r", "s": "r"}  # chains followed to the tensor computed
    feeds = [{"x": np.random.default_rng(k).standard_normal((8, 6)).astype(np.float32)} for k in range(3)]
    every = HistogramObserver(bins=256)
    collect(model, feeds, names, [every])
    shared = HistogramObserver(bins=256, names=["x", "r", "y"])
    collect(model, feeds, ["x", "r", "y"], [shared])
    shared.share(sources)
    for name in names:
        np.testing.assert_array_equal(shared.histograms[name].counts, every.histograms[name].counts)
        assert shared.histograms[name].zeros == every.histograms[name].zeros
    assert shared.histograms["t"] is not shared.histograms["r"]


class _Seen:
    """Records which tensors each batch showed, and from which thread."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.batches: list[set[str]] = [set()]
        self.threads: set[str] = set()  # thread names: a pool's threads are numbered from 0

    def observe(self, name: str, array: np.ndarray) -> None:
        import threading

        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.batches[-1].add(name)

    def next_batch(self) -> None:
        self.batches.append(set())


def _chain(width: int = 64) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    nodes = [helper.make_node("Relu", ["x"], ["t0"])]
    nodes += [helper.make_node("Sigmoid" if k % 2 else "Tanh", [f"t{k}"], [f"t{k + 1}"]) for k in range(6)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, width, 32])], ["t6"])
    rng = np.random.default_rng(7)
    feeds = [{"x": rng.standard_normal((4, width, 32)).astype(np.float32) * (k + 1)} for k in range(5)]
    return model, feeds


def test_occasional_tensors_are_fetched_only_on_the_feeds_that_want_them() -> None:
    model, feeds = _chain()
    seen = _Seen()
    wanted = [0, 2, 3]  # the feeds that need every tensor
    index = {"now": -1}

    def source():  # type: ignore[no-untyped-def]
        for k, feed in enumerate(feeds):
            index["now"] = k
            yield feed

    shown: list[int] = []

    def showing(k: int) -> None:  # prefetching: the source is one feed ahead of the observers
        assert index["now"] == (min(k + 1, len(feeds) - 1) if prefetch else k)
        if shown:
            seen.next_batch()
        shown.append(k)

    names = [f"t{k}" for k in range(7)]
    for prefetch in (0, 1 << 30):  # the next run started early or not: the same tensors per feed
        seen.batches = [set()]
        shown.clear()
        count = collect(
            model,
            source(),
            names,
            [seen],
            occasional=["t1", "t2", "t3"],
            wants_occasional=lambda: index["now"] in wanted,
            showing=showing,
            prefetch_bytes=prefetch,
        )
        assert count == 20 and shown == list(range(len(feeds)))
        for k, batch in enumerate(seen.batches):
            assert batch == (set(names) if k in wanted else set(names) - {"t1", "t2", "t3"}), k


def test_statistics_on_worker_threads_are_those_of_one_thread() -> None:
    model, feeds = _chain(width=512)  # 64k values per tensor: dealt out to the threads
    names = [f"t{k}" for k in range(7)]
    alone, side_by_side = HistogramObserver(bins=256), HistogramObserver(bins=256)
    seen = _Seen()
    collect(model, feeds, names, [alone])
    collect(model, feeds, names, [side_by_side, seen], workers=2)
    # the statistics ran on the pool's threads, not the caller's. Which of the two got work is
    # the scheduler's choice: on a loaded host one thread can take every group before the other
    # wakes (seen once), so this does not ask for both. (Threads are named by the pool, not by
    # ident: CI once saw 3 idents in 5 runs when each run had a pool of its own.)
    assert seen.threads and seen.threads <= {"edgedeploy-calib_0", "edgedeploy-calib_1"}
    for name in names:
        np.testing.assert_array_equal(side_by_side.histograms[name].counts, alone.histograms[name].counts)
        assert side_by_side.histograms[name].absmax == alone.histograms[name].absmax


def _per_candidate(
    runner: _NodeRunner, feed: dict[str, np.ndarray], inp: str, tried: list[float]
) -> np.ndarray:
    ref = runner.run(feed)
    return np.array(
        [_relative(runner.run({**feed, inp: fake_quant(feed[inp], t, False)}), ref) for t in tried]
    )


@pytest.mark.parametrize(
    ("case", "stackable"),
    [("conv", True), ("matmul_batched_b", True), ("gemm_transposed_a", False), ("matmul_2d_b", False)],
)
def test_stacked_consumer_run_gives_the_per_candidate_errors(case: str, stackable: bool) -> None:
    rng = np.random.default_rng(5)
    f32 = TensorProto.FLOAT
    if case == "conv":
        w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        model = _model([node], [helper.make_tensor_value_info("x", f32, None)], ["y"], [w])
        feed, inp = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}, "x"
    elif case == "matmul_batched_b":  # attention-like: both inputs activations, B quantized
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        model = _model([node], [helper.make_tensor_value_info(n, f32, None) for n in "ab"], ["y"])
        feed = {
            "a": rng.standard_normal((2, 5, 6)).astype(np.float32),
            "b": rng.standard_normal((2, 6, 7)).astype(np.float32),
        }
        inp = "b"
    elif case == "gemm_transposed_a":  # axis 0 of A is K: stacking it would be wrong
        w = numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")
        node = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)
        model = _model([node], [helper.make_tensor_value_info("x", f32, None)], ["y"], [w])
        feed, inp = {"x": rng.standard_normal((6, 5)).astype(np.float32)}, "x"
    else:  # a 2-D B has no batch axis
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        model = _model([node], [helper.make_tensor_value_info(n, f32, None) for n in "ab"], ["y"])
        feed = {
            "a": rng.standard_normal((6, 6)).astype(np.float32),
            "b": rng.standard_normal((6, 6)).astype(np.float32),
        }
        inp = "b"
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    runner = _NodeRunner(model, 0, plan, constant_values(model))
    amax = float(np.abs(feed[inp]).max())
    tried = [amax, 0.5 * amax, 0.2 * amax]
    calls: list[int] = []
    real = runner.run_float32

    def counted(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        calls.append(1)
        return real(feed)

    runner.run_float32 = counted  # type: ignore[method-assign]
    got = consumer_errors(runner, feed, inp, feed[inp], _symmetric(tried, unsigned=False))
    assert got is not None
    assert (len(calls) == 1) == stackable  # one run for all candidates only where axis 0 is a batch
    np.testing.assert_allclose(got, _per_candidate(runner, feed, inp, tried), rtol=1e-5)
    assert got[0] < got[1] < got[2]  # clipping more of a Gaussian costs more here


def test_candidates_run_one_at_a_time_on_worker_threads_give_the_errors_of_one_thread() -> None:
    """A consumer too large to stack runs its candidates on the worker threads: the same errors, to
    the bit, as in a loop."""
    import threading

    from calibration.select import STACKED_VALUES

    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], ["y"], [w])
    x = rng.standard_normal((1, 16, 96, 96)).astype(np.float32)
    assert 4 * x.size > STACKED_VALUES  # run one candidate at a time
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    runner = _NodeRunner(model, 0, plan, constant_values(model))
    amax = float(np.abs(x).max())
    params = _symmetric([amax, 0.5 * amax, 0.2 * amax], unsigned=False)
    threads: set[int] = set()
    real = runner.run_float32

    def seen(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        threads.add(threading.get_ident())
        return real(feed)

    runner.run_float32 = seen  # type: ignore[method-assign]
    alone = consumer_errors(runner, {"x": x}, "x", x, params)
    assert len(threads) == 1
    side_by_side = consumer_errors(runner, {"x": x}, "x", x, params, workers=2)
    assert alone is not None and side_by_side is not None and len(threads) >= 2  # on the pool
    np.testing.assert_array_equal(side_by_side, alone)
    thresholds = [p[0] * 127 for p in params]
    np.testing.assert_allclose(alone, _per_candidate(runner, {"x": x}, "x", thresholds), rtol=1e-6)


def test_large_consumer_runs_are_bounded_by_the_shared_slots_and_keep_no_arena() -> None:
    """The slots shared by the tensors measured side by side bound the large runs alive at a time,
    and a large consumer's session frees its buffers after each run (no memory arena)."""
    import threading

    from calibration.select import _Runners

    rng = np.random.default_rng(8)
    w = numpy_helper.from_array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], ["y"], [w])
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    large = _Runners(model, plan, constant_values(model)).get(0, large=True)
    small = _Runners(model, plan, constant_values(model)).get(0)
    assert large is not None and small is not None
    assert not large.session.get_session_options().enable_cpu_mem_arena
    assert small.session.get_session_options().enable_cpu_mem_arena
    x = rng.standard_normal((1, 16, 96, 96)).astype(np.float32)
    amax = float(np.abs(x).max())
    params = _symmetric([amax, 0.5 * amax, 0.2 * amax], unsigned=False)
    alive, most, lock = [0], [0], threading.Lock()
    real = large.run_float32

    def counted(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        try:
            return real(feed)
        finally:
            with lock:
                alive[0] -= 1

    large.run_float32 = counted  # type: ignore[method-assign]
    bounded = consumer_errors(large, {"x": x}, "x", x, params, workers=2, slots=threading.Semaphore(1))
    assert bounded is not None and most[0] == 1
    np.testing.assert_array_equal(bounded, consumer_errors(large, {"x": x}, "x", x, params))


def test_auto_on_cpu_placement_reports_the_same_choice_as_its_recorded_scores(tmp_path: Path) -> None:
    """The one statistics pass holds out every 4th batch: the reported samples are the others,
    and the scores recorded for both ORT plans come from the same held-out reference."""
    rng = np.random.default_rng(0)
    path = power_model(tmp_path / "m.onnx", side_conv=True)  # the Add feeds a Conv: the two ORT plans differ
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((64, 1, 64)).astype(np.float32))
    source = open_source(str(tmp_path / "calib.npz"), model_io(path)[0], batch_size=4)
    options = CalibrationOptions(algorithm="auto", placement="onnxruntime", weight_bits=7)
    result = calibrate(path, source, options, tmp_path / "out")
    report = json.loads(result.report.read_text())
    selection = report["selection"]
    assert report["samples"] == 64 - 16 and selection["held_out_samples"] == 16
    assert selection["placement_alternatives"]  # both plans were scored
    scores = selection["held_out_cosine"]
    assert scores[selection["winner"]] == max(scores.values()) > 0.99


def test_held_out_feeds_do_not_fetch_the_tensors_only_the_tensorrt_cache_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calibration.observers as observers

    runs: list[tuple[set[str], int]] = []  # per run: the tensors asked for, the feed's samples
    real = observers._collect_session

    def spy(model: onnx.ModelProto, names: list[str], *args: object) -> object:
        session = real(model, names, *args)  # type: ignore[arg-type]

        class Counted:
            def run_with_ort_values(self, wanted: list[str], feed: dict[str, object]) -> object:
                runs.append((set(wanted), next(iter(feed.values())).shape()[0]))  # type: ignore[attr-defined]
                return session.run_with_ort_values(wanted, feed)  # type: ignore[attr-defined]

        return Counted()

    monkeypatch.setattr(observers, "_collect_session", spy)
    rng = np.random.default_rng(0)
    path = power_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((64, 1, 64)).astype(np.float32))
    source = open_source(str(tmp_path / "calib.npz"), model_io(path)[0], batch_size=4)
    options = CalibrationOptions(algorithm="auto", trt_version="8.6.1")
    result = calibrate(path, source, options, tmp_path / "out")
    everything = set.union(*(names for names, _ in runs))
    light = [(names, n) for names, n in runs if names != everything]
    cache_only = everything - set.union(*(names for names, _ in light))
    assert cache_only and not cache_only & {t.name for t in result.tensors}  # not in the Q/DQ model
    assert sum(n for _, n in light) == 16 and sum(n for _, n in runs) == 64  # held out: 4 feeds of 4
    assert result.samples == 48
    report = json.loads(result.report.read_text())
    assert set(report["cache_thresholds"]) >= cache_only


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("unsigned", [False, True])
def test_fake_quant_of_several_thresholds_equals_one_at_a_time(dtype: type, unsigned: bool) -> None:
    x: np.ndarray = np.random.default_rng(2).normal(0, 3, (2, 3, 5)).astype(dtype)
    if unsigned:
        x = np.abs(x)
    tried = [9.0, 2.5, 0.7]
    want = np.stack([fake_quant(x, t, unsigned) for t in tried])
    np.testing.assert_array_equal(fake_quant_all(x, _symmetric(tried, unsigned)), want)
    out = np.zeros((3, *x.shape), np.float32)
    fake_quant_all(x, _symmetric(tried, unsigned), out=out)
    np.testing.assert_array_equal(out, want)


def test_fake_quant_with_a_zero_point_equals_the_q_dq_formula() -> None:
    """Asymmetric uint8 (ONNX Runtime's placement): clip(round(x / s) + z, 0, 255) - z, times s."""
    x: np.ndarray = np.random.default_rng(3).normal(0.5, 2, (4, 7)).astype(np.float32)
    params: list[QParams] = [(0.02, 14, 0, 255), (0.005, 56, 0, 255), (0.03, 128, 0, 255)]
    want = np.stack(
        [((np.clip(np.round(x / s) + z, lo, hi) - z) * s).astype(np.float32) for s, z, lo, hi in params]
    )
    np.testing.assert_allclose(fake_quant_all(x, params), want, rtol=0, atol=1e-7)


def _symmetric(tried: list[float], unsigned: bool) -> list[QParams]:
    qmax = 255 if unsigned else 127
    return [(activation_scale(t, qmax), 0, 0 if unsigned else -128, qmax) for t in tried]


@pytest.mark.parametrize("placement, bits", [("tensorrt", 8), ("onnxruntime", 7)])
def test_the_per_tensor_step_runs_a_consumer_on_the_q_dq_models_own_weights(
    placement: str, bits: int
) -> None:
    """The consumer's weight in auto's one-node session is what the written Q/DQ model's
    DequantizeLinear gives ONNX Runtime, bit for bit, and the int8 weights are made once."""
    import onnxruntime as ort

    from calibration.qdq import WeightCache, write_qdq

    rng = np.random.default_rng(9)
    w = (
        rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
        * np.linspace(0.01, 3, 8, dtype=np.float32)[:, None, None, None]
    )
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    model = _model([node], [x_info], ["y"], [numpy_helper.from_array(w, "w")])
    plan = plan_quantization(model, QuantizeOptions(placement, bits))
    cache: WeightCache = {}
    runner = _NodeRunner(model, 0, plan, constant_values(model), cache)
    assert len(cache) == 1
    session_weight = numpy_helper.to_array(
        onnx.load_from_string(runner.session._model_bytes).graph.initializer[0]  # type: ignore[attr-defined]
    )
    qdq = write_qdq(model, plan, dict.fromkeys(plan.calibrated_tensors(), 3.0), None, cache)
    assert len(cache) == 1  # the Q/DQ model took the same int8 weights
    inits = {i.name for i in qdq.graph.initializer}
    dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    qdq.graph.output.append(helper.make_empty_tensor_value_info(dq.output[0]))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    deployed = sess.run([dq.output[0]], {"x": np.zeros((1, 3, 6, 6), np.float32)})[0]
    assert session_weight.dtype == np.float32 and np.array_equal(session_weight, deployed)


@pytest.mark.parametrize("kind", ["silu", "hardswish", ""])
def test_a_tensor_judged_by_its_own_error_gets_the_same_errors_from_its_levels(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor no quantized consumer runs on is judged by its own error after the activation that
    reads it: that activation is taken once per quantization level of each candidate, not once per
    value, and the errors are the long way's bit for bit (symmetric and asymmetric candidates,
    values clipped at both ends); NaN/Inf values go the long way."""
    import calibration.select as select_module
    from calibration.qdq import saturating_activation

    rng = np.random.default_rng(13)
    x = (rng.standard_normal((2, 16, 40, 40)) * 4.0).astype(np.float32)
    x[0, 0, 0, :4] = [-60.0, 60.0, 0.0, -0.0]
    params: list[QParams] = [
        *_symmetric([3.0, 9.5, 60.0], unsigned=False),
        (float(np.float32(12.0 / 255)), 170, 0, 255),  # asymmetric uint8, as ONNX Runtime's placement
        (float(np.float32(70.0 / 255)), 30, 0, 255),
    ]

    def activation(v: np.ndarray) -> np.ndarray:
        return saturating_activation(kind, v) if kind else v.astype(np.float64)

    def long_way(values: np.ndarray) -> list[float]:
        xd = activation(values)
        energy = max(float((xd**2).sum()), 1e-30)
        return [_relative(activation(q), xd, energy) for q in fake_quant_all(values, params)]

    seen: list[int] = []

    def counted(which: str, v: np.ndarray) -> np.ndarray:
        seen.append(v.size)
        return saturating_activation(which, v)

    monkeypatch.setattr(select_module, "saturating_activation", counted)
    got = select_module.own_errors(x, params, kind)
    assert got == long_way(x)  # exact: the same float64 values, summed the same way
    if kind:
        assert sum(seen) <= x.size + 256 * len(params)
    bad = x.copy()
    bad[1, 2, 3, 4] = np.nan
    assert np.array_equal(select_module.own_errors(bad, params, kind), long_way(bad), equal_nan=True)
