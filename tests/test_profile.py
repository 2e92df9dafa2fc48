from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.errors import InputError
from edgedeploy.stages.profile import ProfileOptions, profile
from tests.conftest import (
    Digits,
    assert_clean_input_error,
    bertlike_model,
    reflect_padded_data,
    run_cli,
)


def test_profile_reports_the_trtexec_statistics_per_batch_size(digits: Digits) -> None:
    result = profile(
        digits.onnx_path,
        ProfileOptions(
            warmup_iterations=3, iterations=25, batch_sizes=(1, 4), threads=1, measure_power=False
        ),
    )
    assert [b.batch_size for b in result.batches] == [1, 4]
    for b in result.batches:
        s = b.latency
        assert b.iterations == s.count == 25
        assert 0 < s.min_ms <= s.median_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
        assert b.throughput_ips == pytest.approx(b.batch_size * b.throughput_qps)
        assert b.model_peak_rss_mb is not None and b.model_peak_rss_mb > 0
    assert result.settings["threads"] == 1 and "warmup" in result.settings


def test_static_batch_model_refuses_other_batch_sizes(static_onnx: Path) -> None:
    with pytest.raises(InputError, match="static batch of 1"):
        profile(static_onnx, ProfileOptions(iterations=2, batch_sizes=(1, 2)))


def test_static_batch_refusal_advises_what_works_for_an_onnx_file(static_onnx: Path, tmp_path: Path) -> None:
    """akiki-vad's audio_with_context[1, 576] at --batch-sizes 1,4 was refused with "(export with
    --dynamic-batch)", but export keeps an ONNX file's fixed dim 0 fixed, so following the advice
    changed nothing. The refusal now says the model fixes its batch and names the one it takes."""
    with pytest.raises(InputError) as info:
        profile(static_onnx, ProfileOptions(iterations=2, batch_sizes=(1, 4)))
    text = str(info.value)
    assert "export with --dynamic-batch" not in text and "--batch-sizes 1" in text
    again = tmp_path / "again.onnx"
    result = run_cli("export", static_onnx, "--dynamic-batch", "-o", again)  # the old advice, followed
    assert result.code == 0 and "x[1,6]" in result.stdout  # still fixed: it could not help
    assert profile(static_onnx, ProfileOptions(iterations=2, batch_sizes=(1,))).batches  # the new one works


def test_cli_profile_writes_json(digits: Digits, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = run_cli(
        "profile",
        digits.onnx_path,
        "--warmup",
        "2",
        "--iterations",
        "20",
        "--batch-sizes",
        "1,2",
        "--json",
        out,
    )
    assert result.code == 0, result.stderr
    assert "median" in result.stdout and "p99" in result.stdout
    data = json.loads(out.read_text())
    assert [b["batch_size"] for b in data["batches"]] == [1, 2]
    assert data["batches"][0]["latency"]["count"] == 20


def test_cli_profile_takes_the_batch_from_dim_0_of_input_as_trtexec_shapes(
    digits: Digits, tmp_path: Path
) -> None:
    """--input's dim 0 is the batch unless --batch-sizes is given, which then replaces it; a
    batch size given twice or an empty one is refused."""
    name = digits_input(digits)
    out = tmp_path / "p.json"
    shape = f"{name}:4x1x8x8"
    result = run_cli("profile", digits.onnx_path, "--iterations", "3", "--input", shape, "--json", out)
    assert result.code == 0, result.stderr
    assert [b["batch_size"] for b in json.loads(out.read_text())["batches"]] == [4]
    both = tmp_path / "both.json"
    given = ("--input", shape, "--batch-sizes", "2,3", "--json", both)
    assert run_cli("profile", digits.onnx_path, "--iterations", "3", *given).code == 0
    assert [b["batch_size"] for b in json.loads(both.read_text())["batches"]] == [2, 3]
    for bad in ("1,1", "1,,2"):
        assert_clean_input_error(run_cli("profile", digits.onnx_path, "--batch-sizes", bad), "--batch-sizes")


def digits_input(digits: Digits) -> str:
    import onnx

    return onnx.load(str(digits.onnx_path), load_external_data=False).graph.input[0].name


def test_cli_profile_of_a_missing_artifact_exits_2(tmp_path: Path) -> None:
    assert_clean_input_error(run_cli("profile", tmp_path / "none.onnx"), "not found")


def test_engine_without_tensorrt_exits_2_with_how_to_get_it(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)
    result = run_cli("profile", engine)
    assert_clean_input_error(result, "TensorRT")


def test_a_few_outliers_do_not_call_a_run_unsteady_but_a_spread_bulk_does() -> None:
    from edgedeploy.stages.profile import unsteady_warning
    from edgedeploy.stats import LatencyStats

    quiet_with_hiccups = LatencyStats.from_samples([0.020] * 195 + [1.5] * 5)
    assert quiet_with_hiccups.cv_percent > 100 and unsteady_warning(quiet_with_hiccups) is None
    spread = LatencyStats.from_samples([0.020 + 0.0002 * i for i in range(200)])
    message = unsteady_warning(spread)
    assert message is not None and "above the median" in message


def test_a_guessed_dynamic_dim_the_model_refuses_says_which_and_how_to_give_it(
    reflect_padded_onnx: Path,
) -> None:
    model = reflect_padded_onnx
    # one line: ONNX Runtime's own log of the error (in colour, on stderr) is not shown as well
    assert_clean_input_error(run_cli("profile", model), "dynamic dims fed as 1: x 1x1", "--input NAME:SHAPE")
    given = run_cli("profile", model, "--input", "x:1x400", "--iterations", "5")
    assert given.code == 0, given.stderr
    assert "fed dynamic dims as 1" not in given.stderr


def test_figures_on_guessed_dims_say_which_dims_were_fed_as_1(digits: Digits, tmp_path: Path) -> None:
    """Random data for a model with a dynamic dim beyond the batch: the run works, and its
    figures (latency, thresholds, accuracy) are on 1 there, which every command says."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
    )
    model = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    for args in (
        ("profile", model, "--iterations", "3"),
        ("compare", model, model),
        ("analyze", model, "--data", "random"),
    ):
        result = run_cli(*args)
        assert result.code == 0 and "fed dynamic dims as 1 (x 1x1)" in result.stderr.replace("8x1", "1x1"), (
            args,
            result.stderr,
        )
    # said once, not once per batch size (they differ in dim 0 only)
    result = run_cli("profile", model, "--iterations", "3", "--batch-sizes", "1,4")
    assert result.code == 0 and result.stderr.count("fed dynamic dims as 1") == 1, result.stderr


def test_a_state_input_whose_first_dim_is_fixed_beside_a_dynamic_batch_keeps_its_shape(
    tmp_path: Path,
) -> None:
    """silero-vad's state is [2, batch, 128]: its first dim is not the batch, so it does not make
    the model's batch static (it was refused: 'a static batch of 2')."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Tanh", ["state"], ["state_out"])],
        "stateful",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "batch", 3]),
        ],
    )
    model = tmp_path / "stateful.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    result = run_cli(
        "profile", model, "--input", "state:2x1x3", "--iterations", "3", "--json", tmp_path / "p.json"
    )
    assert result.code == 0, result.stderr
    used = json.loads((tmp_path / "p.json").read_text())["settings"]["input_shapes"]["1"]
    assert used == {"x": [1, 4], "state": [2, 1, 3]}


def test_more_threads_than_cores_is_warned_and_recorded(digits: Digits) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    result = profile(digits.onnx_path, ProfileOptions(iterations=3, warmup_iterations=1, threads=cores + 2))
    assert any("more than the" in w for w in result.warnings)
    quiet = profile(digits.onnx_path, ProfileOptions(iterations=3, warmup_iterations=1, threads=1))
    assert not any("more than the" in w for w in quiet.warnings)


def test_options_another_option_overrides_are_named(digits: Digits) -> None:
    """An option that another one makes moot is said, not silently dropped."""
    timed = run_cli("profile", digits.onnx_path, "--iterations", "3", "--duration", "0.5", "--warmup", "1")
    assert timed.code == 0 and "--iterations 3 is used instead of --duration" in timed.stderr
    assert "--warmup 1" not in timed.stderr  # --warmup-ms left at its default: nothing dropped
    loose = run_cli("compare", digits.onnx_path, digits.onnx_path, "--atol", "0", "--layers-shown", "3")
    assert loose.code == 0 and "gate only with --check-allclose" in loose.stderr
    assert "--layers-shown lists the tensors of --per-layer" in loose.stderr
    # an option typed at its default value is as moot as any other value of it
    typed = run_cli("profile", digits.onnx_path, "--iterations", "3", "--duration", "3", "--warmup-ms", "200")
    assert typed.code == 0 and "--iterations 3 is used instead of --duration" in typed.stderr
    typed = run_cli("compare", digits.onnx_path, digits.onnx_path, "--rtol", "1e-3", "--layers-shown", "10")
    assert typed.code == 0 and "gate only with --check-allclose" in typed.stderr
    assert "--layers-shown lists the tensors of --per-layer" in typed.stderr
    seeded = run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", digits.test_npz, "--seed", "3")
    assert seeded.code == 0 and "--seed 3: used by random data only" in seeded.stderr
    same = run_cli("compare", digits.onnx_path, digits.onnx_path, "--data", "random:3", "--seed", "3")
    assert same.code == 0 and "--seed" not in same.stderr
    name = digits_input(digits)
    twice = run_cli("profile", digits.onnx_path, "--input", f"{name}:1x1x8x8", "--input", f"{name}:2x1x8x8")
    assert_clean_input_error(twice, "given a shape twice")


def test_batch_sizes_reach_every_axis_named_as_the_batch_and_scalars_stay_scalars() -> None:
    """silero-vad: ``--batch-sizes 1,4 --input input:1x512 --input state:2x1x128`` fed the state a
    batch of 1 beside an input of 4 (refused: "share the dim 'batch' but have 4 and 1"), and every
    source fed its scalar ``sr`` as [1] (np.ascontiguousarray makes a 0-d array 1-D)."""
    import numpy as np

    from calibration.feeds import check_feed
    from calibration.modelinfo import TensorSpec
    from edgedeploy.stages.profile import batch_shapes

    inputs = [
        TensorSpec("input", ("batch", "sequence"), "float32"),
        TensorSpec("state", (2, "batch", 128), "float32"),
        TensorSpec("sr", (), "int64"),
    ]
    given = {"input": (1, 512), "state": (2, 1, 128)}
    assert batch_shapes(inputs, given, 4) == {"input": (4, 512), "state": (2, 4, 128)}
    feed = {"input": np.zeros((4, 512), np.float32), "state": np.zeros((2, 4, 128), np.float32),
            "sr": np.asarray(16000, np.int64)}  # fmt: skip
    assert check_feed(feed, inputs, "test")["sr"].shape == ()


def test_the_json_records_the_sha256_of_the_file_timed(tmp_path: Path) -> None:
    """profile --json named the model by path only, so report could tell two models of one file
    name apart only by files it found where it ran; it now records the file's sha256."""
    import hashlib

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    result = run_cli("profile", model, "--iterations", "3", "--json", tmp_path / "p.json")
    assert result.code == 0, result.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


@pytest.mark.usefixtures("ten_watts")
def test_energy_per_inference_counts_the_timed_inferences_only_not_the_warm_up(digits: Digits) -> None:
    """A constant 10 W: the energy of one inference is 10 W times its latency, however long the
    warm-up. The warm-up's energy was divided among the timed inferences (magika: 686 mJ for 344
    after a 1 s warm-up), and the wall time included it too."""
    options = ProfileOptions(warmup_ms=600.0, duration_s=0.3, batch_sizes=(2,), threads=1)
    batch = profile(digits.onnx_path, options).batches[0]
    energy = batch.energy
    assert energy is not None and energy["measurable"] and energy["inferences"] == 2 * batch.iterations
    assert 0.3 <= batch.wall_s < 0.45  # the timed loop, not the 0.6 s warm-up before it
    assert energy["duration_s"] == pytest.approx(batch.wall_s, abs=0.02)
    per_batch_ms = 1000.0 * batch.wall_s / batch.iterations
    assert energy["energy_per_inference_mj"] == pytest.approx(10.0 * per_batch_ms / 2, rel=0.1)
    assert batch.latency.mean_ms <= per_batch_ms


def _tiny_onnx(path: Path) -> Path:
    """x[batch, 64] -> MatMul -> Relu -> MatMul -> y[batch, 10]: a model whose run takes microseconds,
    so the time between runs (Python's loop, the clock reads) is a good share of the wall time."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.usefixtures("ten_watts")
def test_throughput_is_the_timed_runs_over_the_wall_time_of_the_timed_loop(tmp_path: Path) -> None:
    """trtexec's throughput is the number of queries over the host wall time from the first timed
    query to the last (docs/design.md, "Latency percentiles as trtexec reads them"). ONNX Runtime's
    was 1 / mean latency, the sum of the runs' own times, which leaves out the time between runs:
    28,008 qps for 26,219 runs in 1.0 s on a tiny model. Energy per inference is the window's
    energy over its inferences, so it is the average power over the throughput."""
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    options = ProfileOptions(warmup_iterations=20, iterations=400, batch_sizes=(1, 4), threads=1)
    for b in profile(model, options).batches:
        assert b.throughput_qps == pytest.approx(b.iterations / b.wall_s, rel=1e-9)
        assert b.throughput_ips == pytest.approx(b.batch_size * b.iterations / b.wall_s, rel=1e-9)
        assert b.latency.mean_ms * b.iterations <= b.wall_s * 1000.0
        energy = b.energy
        assert energy is not None and energy["measurable"]
        assert energy["energy_per_inference_mj"] == pytest.approx(
            energy["avg_power_w"] / b.throughput_ips * 1000.0, rel=0.01
        )


def test_percentiles_are_trtexecs_runs_not_interpolated_between_them() -> None:
    """trtexec's percentile p is the sorted timings' [max(n - 1 - int((1 - p/100) * n), 0)], worked
    out in float32, its median the mean of the two middle runs for an even count (docs/design.md,
    "Latency percentiles as trtexec reads them"). numpy's interpolation read p90 of 1..100 ms as
    90.1 ms, and of 1..10 ms as 9.1 ms, where trtexec reads 90 and 9. The CDF's quantiles follow
    the same rule, so its 90/95/99 % points are the table's p90/p95/p99 and its 50 % the median."""
    from edgedeploy.stats import LatencyStats, latency_quantiles

    rng = np.random.default_rng(0)
    hundred = rng.permutation(np.arange(1.0, 101.0))
    s = LatencyStats.from_samples(hundred)
    # (1 - 0.99f) * 100 is 0.99999905 in float32: no run left out, p99 is the slowest of 100
    assert (s.median_ms, s.p90_ms, s.p95_ms, s.p99_ms) == (50.5, 90.0, 95.0, 100.0)
    s = LatencyStats.from_samples(rng.permutation(np.arange(1.0, 11.0)))
    assert (s.median_ms, s.p90_ms, s.p95_ms, s.p99_ms) == (5.5, 9.0, 10.0, 10.0)
    s = LatencyStats.from_samples([3.0, 1.0, 2.0])
    assert (s.min_ms, s.median_ms, s.p90_ms, s.max_ms) == (1.0, 2.0, 3.0, 3.0)
    assert LatencyStats.from_samples([4.0]).p90_ms == 4.0

    q = latency_quantiles(hundred)
    assert len(q) == 101 and q[0] == 1.0 and q[100] == 100.0
    assert (q[50], q[90], q[95], q[99]) == (50.5, 90.0, 95.0, 100.0)
    assert q == sorted(q)
    assert set(q) <= set(hundred) | {50.5}  # runs that were timed, the median aside


def test_peak_memory_is_what_the_model_adds_whatever_the_process_held_or_freed_before(tmp_path: Path) -> None:
    """peak_rss_mb was the whole process's peak (VmHWM): 97.6 MB from profile, 325-329 MB for the
    same model inside run, growing with the stages before it. The figure is now the peak resident
    memory the model's session adds over the process's before it was made (model_peak_rss_mb),
    the same whether the process holds 200 MB of other work or has just freed it."""
    model = _tiny_onnx(tmp_path / "tiny.onnx")  # 66 kB of weights
    options = ProfileOptions(
        warmup_iterations=5, iterations=50, batch_sizes=(1, 64), threads=1, measure_power=False
    )

    def figures() -> list[float]:
        result = profile(model, options)
        assert "not the process's total" in result.settings["model_peak_rss_mb"]
        return [b.model_peak_rss_mb for b in result.batches]  # type: ignore[misc]

    alone = figures()
    assert all(0 <= mb < 40 for mb in alone), alone
    held = [np.ones(1 << 20) for _ in range(25)]  # 200 MB in use by other work
    beside = figures()
    del held
    chunks = [np.ones(1 << 17) for _ in range(200)]  # 200 MB freed into the heap just before
    del chunks
    after = figures()
    for mb in (beside, after):
        assert mb == pytest.approx(alone, abs=4), (alone, beside, after)


def test_profile_times_on_the_data_given_with_data_and_says_which(tmp_path: Path) -> None:
    """profile had no data option: a model random inputs fail (token types of 0-9 reaching a 3-row
    table through an Add of 1, where no random range can know the table) could not be timed at all,
    where trtexec times it on --loadInputs. --data times each batch size on the first samples of
    the data, and the JSON says which data; random inputs that fail it say so and name --data."""
    model = bertlike_model(tmp_path / "m.onnx", through_add=True)
    data = tmp_path / "val.npz"
    rng = np.random.default_rng(0)
    ids = {"input_ids": rng.integers(0, 100, (8, 16)), "token_type_ids": rng.integers(0, 2, (8, 16))}
    np.savez(data, **ids, attention_mask=np.ones((8, 16), np.int64))
    out = tmp_path / "p.json"
    args = ("--warmup", "1", "--iterations", "3")
    result = run_cli("profile", model, "--data", data, "--batch-sizes", "1,4", *args, "--json", out)
    assert result.code == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["settings"]["data"]["spec"] == str(data) and not record["settings"]["data"]["synthetic"]
    assert record["settings"]["input_shapes"]["4"]["token_type_ids"] == [4, 16]
    shapes = ["--input", "input_ids:4x16", "--input", "token_type_ids:4x16", "--input", "attention_mask:4x16"]
    random = run_cli("profile", model, *shapes, *args)
    assert_clean_input_error(random, "random inputs", "--data", "[-3,2]")
    few = run_cli("profile", model, "--data", data, "--batch-sizes", "16", *args, "--json", out)
    assert few.code == 0 and "batch 16: the data holds 8 sample(s), repeated to fill the batch" in few.stderr
    assert json.loads(out.read_text())["settings"]["input_shapes"]["16"]["token_type_ids"] == [16, 16]


def test_profile_refuses_input_shapes_beside_data_and_warns_of_preprocessing_it_does_not_use(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """profile --data x.npz --input x:2x8 timed the file's shapes and dropped --input without a word,
    where compare, analyze, calibrate, bundle and build refuse it; --preprocess for data that is not
    an image folder was not warned about, where compare warns. Both now follow compare's rules:
    one line, exit 2, before any work; a warning naming the file. Random data keeps --input."""
    data = reflect_padded_data(tmp_path)
    args = ("--warmup", "1", "--iterations", "3")
    shaped = run_cli("profile", reflect_padded_onnx, "--data", data, "--input", "x:2x8", *args)
    assert_clean_input_error(shaped, "--input x:2x8: shapes for random data only", f"--data {data}")
    assert shaped.stdout == ""  # refused before any work
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps({"resize": [8, 8]}))
    warned = run_cli("profile", reflect_padded_onnx, "--data", data, "--preprocess", pre, *args)
    assert warned.code == 0, warned.stderr
    said = " ".join(warned.stderr.split())
    assert f"--preprocess {pre}: preprocessing applies to image folders" in said, said
    random = run_cli("profile", reflect_padded_onnx, "--input", "x:2x8", "--preprocess", pre, *args)
    assert random.code == 0, random.stderr
    assert f"--preprocess {pre}: preprocessing applies to image folders" in " ".join(random.stderr.split())
