"""Data sources: exact sample counts, static batches, extra arrays, and data that cannot be batched."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from calibration.errors import DataError
from calibration.modelinfo import TensorSpec, model_io
from calibration.sources import open_source
from tests.conftest import bertlike_model

DYNAMIC = [TensorSpec("x", ("batch", 3, 4, 4), "float32")]
STATIC = [TensorSpec("x", (2, 3, 4, 4), "float32")]


def _count(source: object) -> int:
    return sum(feed["x"].shape[0] for feed in source)  # type: ignore[attr-defined]


def test_random_data_gives_exactly_the_samples_asked_for() -> None:
    assert _count(open_source("random", DYNAMIC, samples=10, batch_size=8)) == 10
    assert _count(open_source("random", STATIC, samples=64, batch_size=8)) == 64
    assert {f["x"].shape[0] for f in open_source("random", STATIC, samples=8, batch_size=8)} == {2}


def test_random_data_takes_its_batch_from_dim_0_of_a_given_shape() -> None:
    """As trtexec's --shapes: x:4x3x4x4 feeds batches of 4 whatever --batch-size says, and exactly
    the samples asked for (the last batch short); the description records the batch used."""
    source = open_source("random", DYNAMIC, samples=10, batch_size=8, shapes={"x": (4, 3, 4, 4)})
    assert [f["x"].shape for f in source] == [(4, 3, 4, 4), (4, 3, 4, 4), (2, 3, 4, 4)]
    assert source.describe()["batch_size"] == 4
    two = [TensorSpec("a", ("batch", 2), "float32"), TensorSpec("b", ("batch", 2), "float32")]
    with pytest.raises(DataError, match="dim 0 is the batch and differs between inputs"):
        open_source("random", two, shapes={"a": (4, 2), "b": (2, 2)})


def _conv_hw(path: Path) -> Path:
    """x[N,3,H,W] -> 1x1 Conv -> y[N,2,H,W]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "hw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_batch_size_given_replaces_dim_0_of_a_given_shape_as_profiles_batch_sizes() -> None:
    """compare --input x:2x3x24x24 --batch-size 4 ran batches of 2 without a word. A batch size the
    user gave (``batch_from_shapes=False``) replaces dim 0 of --input where the batch is dynamic, as
    profile's --batch-sizes does; then two inputs' dim 0 need not agree either."""
    source = open_source(
        "random", DYNAMIC, samples=10, batch_size=8, shapes={"x": (4, 3, 4, 4)}, batch_from_shapes=False
    )
    assert [f["x"].shape for f in source] == [(8, 3, 4, 4), (2, 3, 4, 4)]
    assert source.describe()["batch_size"] == 8 and source.describe()["shapes"] == {"x": [8, 3, 4, 4]}
    two = [TensorSpec("a", ("batch", 2), "float32"), TensorSpec("b", ("batch", 2), "float32")]
    given = {"a": (4, 2), "b": (2, 2)}
    fed = open_source("random", two, samples=3, batch_size=3, shapes=given, batch_from_shapes=False)
    assert [(f["a"].shape, f["b"].shape) for f in fed] == [((3, 2), (3, 2))]


def test_compare_analyze_and_calibrate_on_random_data_take_the_batch_size_given_over_input(
    tmp_path: Path,
) -> None:
    """README: as trtexec's --shapes, dim 0 of --input is the batch unless a batch option is given,
    which replaces it; random data for compare, analyze and calibrate the same way."""
    import json

    from tests.conftest import run_cli

    model = _conv_hw(tmp_path / "hw.onnx")
    shapes = ("--input", "x:2x3x8x8", "--batch-size", "4", "--samples", "8")
    runs = {
        "compare": ("compare", model, model, *shapes),
        "analyze": ("analyze", model, "--data", "random", *shapes),
        "calibrate": ("calibrate", model, "--data", "random", "-o", tmp_path / "c", *shapes),
    }
    for name, args in runs.items():
        result = run_cli(*args, "--json", tmp_path / f"{name}.json")
        assert result.code == 0, result.stderr
        record = json.loads((tmp_path / f"{name}.json").read_text())
        data = record["report"]["data"] if name == "calibrate" else record["data"]
        assert data["batch_size"] == 4 and data["shapes"] == {"x": [4, 3, 8, 8]}, (name, data)


@pytest.mark.parametrize("data", ["file", "folder", "loader"])
def test_input_shapes_beside_data_files_are_refused_by_every_command_before_any_work(
    tmp_path: Path, data: str
) -> None:
    """--input x:2x3x40x40 beside data of x[*,3,16,16] was dropped without a word by compare,
    analyze, calibrate, bundle and build --calib-data (they ran on the files' 16x16), while an fp32
    build refuses an unused --input. One rule for all: --input gives the shapes of random data, and
    beside data that is not random it is refused in one line, exit 2, nothing written."""
    from tests.conftest import run_in_process

    model = _conv_hw(tmp_path / "hw.onnx")
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    if data == "loader":
        spec = tmp_path / "load.py"
        spec.write_text(
            "import numpy as np\n\ndef load_data():\n    yield {'x': np.ones((2, 3, 16, 16), 'f4')}\n"
        )
    elif data == "folder":
        spec = tmp_path / "d"
        spec.mkdir()
        np.savez(spec / "a.npz", x=x)
    else:
        spec = tmp_path / "d.npz"
        np.savez(spec, x=x)
    out = tmp_path / "out"
    shape = ("--input", "x:2x3x40x40")
    runs = [
        ("compare", str(model), str(model), "--data", str(spec), *shape, "--json", str(out / "c.json")),
        ("analyze", str(model), "--data", str(spec), *shape, "--json", str(out / "a.json")),
        ("calibrate", str(model), "--data", str(spec), *shape, "-o", str(out)),
        ("bundle", str(model), "--data", str(spec), *shape, "-o", str(out)),
        ("build", str(model), "--precision", "int8", "--calib-data", str(spec), *shape, "-o", str(out)),
        ("build", str(model), "--precision", "fp16", "--calib-data", str(spec), *shape, "-o", str(out)),
    ]
    for args in runs:
        code, _, stderr = run_in_process(*args)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (args, stderr)
        option = "--calib-data" if args[0] == "build" else "--data"
        assert lines[0] == (
            f"error: --input x:2x3x40x40: shapes for random data only; {option} {spec} is fed in the shapes "
            "it holds: drop --input"
        ), lines[0]
        assert not out.exists(), args
    random = run_in_process("compare", str(model), str(model), "--data", "random:1", *shape, "--samples", "2")
    assert random[0] == 0, random[2]


def test_an_empty_spec_is_refused_not_read_as_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path('') is '.': an unset $CALIB read whatever .npz the current folder held."""
    np.savez(tmp_path / "here.npz", x=np.zeros((2, 3, 4, 4), np.float32))
    monkeypatch.chdir(tmp_path)
    for spec in ("", " "):
        with pytest.raises(DataError, match="the data spec is empty"):
            open_source(spec, DYNAMIC)


def test_npz_samples_count_on_a_static_batch_model(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 3, 4, 4), np.float32))
    assert _count(open_source(str(tmp_path / "d.npz"), STATIC, samples=64, batch_size=8)) == 64
    assert _count(open_source(str(tmp_path / "d.npz"), DYNAMIC, samples=10, batch_size=8)) == 10


def test_a_fixed_batch_larger_than_the_samples_asked_for_is_read_whole(tmp_path: Path) -> None:
    """ONNX's test_mish (X[10000], 10000 rows of data) was refused as "the model takes a fixed batch
    of 10000 but the data has only 512 sample(s)": 512 was the sample limit (--calib-samples' default),
    not the data. One whole batch is read, as random data gives one; data that is short is refused."""
    fixed = [TensorSpec("x", (1000,), "float32")]
    np.savez(tmp_path / "d.npz", x=np.arange(1000, dtype=np.float32))
    feeds = list(open_source(str(tmp_path / "d.npz"), fixed, samples=512, batch_size=8))
    assert [f["x"].shape for f in feeds] == [(1000,)]
    np.testing.assert_array_equal(feeds[0]["x"], np.arange(1000, dtype=np.float32))
    assert _count(open_source("random", fixed, samples=512)) == 1000  # as random data does
    np.savez(tmp_path / "short.npz", x=np.zeros(600, np.float32))
    with pytest.raises(DataError, match=r"fixed batch of 1000 but the data has only 600 sample\(s\)"):
        list(open_source(str(tmp_path / "short.npz"), fixed, samples=512))


def test_a_fixed_batch_read_whole_is_described_with_the_samples_it_used(tmp_path: Path) -> None:
    """X[1000] with 512 samples asked for reads one whole batch of 1000, but the description (the
    data of the fp16 ranges report, of the int8 calibration report, of the cache keys) said
    "samples": 512; 1500 asked read one batch as well (the short rest cannot feed the model), and
    random data made 1000 for 512. Each now says the samples its feeds hold."""
    fixed = [TensorSpec("x", (1000,), "float32")]
    np.savez(tmp_path / "d.npz", x=np.arange(3000, dtype=np.float32))
    for asked, used in ((512, 1000), (1500, 1000), (2000, 2000)):
        source = open_source(str(tmp_path / "d.npz"), fixed, samples=asked)
        assert sum(f["x"].shape[0] for f in source) == used == source.describe()["samples"], asked
    for asked, used in ((512, 1000), (1500, 2000)):
        source = open_source("random", fixed, samples=asked)
        assert sum(f["x"].shape[0] for f in source) == used == source.describe()["samples"], asked
    source = open_source(str(tmp_path / "d.npz"), [TensorSpec("x", ("n",), "float32")], samples=10)
    assert source.describe()["samples"] == 10  # a dynamic batch: what was asked, as before


def test_the_description_records_the_samples_the_files_hold_when_fewer_than_asked_for(tmp_path: Path) -> None:
    """calibrate --samples 50 of a file of 20 recorded "data": {"samples": 50} beside "samples": 20:
    the cap asked for, though the description says what is read. A fixed batch reads whole batches
    only, and a folder's files add up; no cap reads them all."""
    np.savez(tmp_path / "x20.npz", x=np.zeros((20, 3, 4, 4), np.float32))
    for inputs, asked, read in ((DYNAMIC, 50, 20), (DYNAMIC, 8, 8), (DYNAMIC, None, 20), (STATIC, 50, 20)):
        source = open_source(tmp_path / "x20.npz", inputs, samples=asked, batch_size=8)
        assert source.describe()["samples"] == read == _count(source), (inputs, asked)
    eight = [TensorSpec("x", (8, 3, 4, 4), "float32")]
    source = open_source(tmp_path / "x20.npz", eight, samples=50)
    assert source.describe()["samples"] == 16 == _count(source)  # the short rest is not read
    folder = tmp_path / "files"
    folder.mkdir()
    for i, rows in enumerate((3, 4)):
        np.save(folder / f"{i}.npy", np.zeros((rows, 3, 4, 4), np.float32))
    source = open_source(folder, DYNAMIC, samples=512, batch_size=2)
    assert source.describe()["samples"] == 7 == _count(source)


def test_a_path_object_is_the_same_spec_as_its_text(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4))
    folder = tmp_path / "batches"
    folder.mkdir()
    np.savez(folder / "b0.npz", x=np.ones((2, 3, 4, 4), np.float32))
    for path in (tmp_path / "d.npz", folder):
        by_path = [f["x"] for f in open_source(path, DYNAMIC, batch_size=2)]
        by_text = [f["x"] for f in open_source(str(path), DYNAMIC, batch_size=2)]
        assert len(by_path) == len(by_text) == 1
        np.testing.assert_array_equal(by_path[0], by_text[0])


def test_upper_case_npz_and_npy_files_are_read_as_png_files_are(tmp_path: Path) -> None:
    """X20.NPZ was refused as "unsupported data file", a folder of A.NPY as holding "no .npz, .npy or
    image files", where a .PNG is read."""
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    with open(tmp_path / "X20.NPZ", "wb") as fh:  # a file name: numpy adds ".npz" to this one
        np.savez(fh, x=x)
    (feed,) = list(open_source(tmp_path / "X20.NPZ", DYNAMIC, batch_size=2))
    np.testing.assert_array_equal(feed["x"], x)
    folder = tmp_path / "upper"
    folder.mkdir()
    with open(folder / "A.NPY", "wb") as fh, open(folder / "B.Npz", "wb") as other:
        np.save(fh, x)
        np.savez(other, x=x)
    assert _count(open_source(folder, DYNAMIC, batch_size=2)) == 4


def test_extra_arrays_in_an_npz_such_as_labels_are_ignored(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 4, 4), np.float32), labels=np.arange(4))
    assert _count(open_source(str(tmp_path / "d.npz"), DYNAMIC, batch_size=4)) == 4


def test_samples_of_different_sizes_in_one_batch_are_a_clear_error(tmp_path: Path) -> None:
    spec = [TensorSpec("x", ("batch", 3, "h", "w"), "float32")]
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 3, 4, 4), np.float32))
    np.save(folder / "b.npy", np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(DataError, match="different shapes"):
        list(open_source(str(folder), spec, batch_size=2))
    assert _count(open_source(str(folder), spec, batch_size=1)) == 2


def test_samples_of_different_shapes_are_named_in_plain_shapes(tmp_path: Path) -> None:
    """The refusal listed NumPy's reprs: "([np.int64(3), np.int64(7), np.int64(13)], ...)"."""
    spec = [TensorSpec("x", ("batch", 3, "h", "w"), "float32")]
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 3, 7, 13), np.float32))
    np.save(folder / "b.npy", np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"cannot share a batch \(\[3,7,13\], \[3,8,8\]\): give") as got:
        list(open_source(folder, spec, batch_size=2))
    assert "np." not in str(got.value)


def test_a_shape_refused_is_named_as_the_file_holds_it_not_as_the_batch_made_of_it(tmp_path: Path) -> None:
    """Per-sample .npy files of (3, 8, 8) for x[N,3,8,8] were refused as "got [8, 8, 8] (rank 3)", an
    npz's ids of (20, 6, 1) for ids[N,T] as "got [8, 6, 1]": the shapes of the batch cut from them."""
    folder = tmp_path / "npyd"
    folder.mkdir()
    for i in range(10):
        np.save(folder / f"s{i:02d}.npy", np.zeros((3, 8, 8), np.float32))
    image = [TensorSpec("x", ("N", 3, 8, 8), "float32")]
    said = r"s00\.npy: input 'x' expects shape x\[N,3,8,8\]:float32, got \[3, 8, 8\] \(rank 3\)"
    with pytest.raises(DataError, match=said):
        list(open_source(folder, image, batch_size=8))
    np.savez(tmp_path / "rank.npz", ids=np.zeros((20, 6, 1), np.int64))
    said = r"rank\.npz: input 'ids' expects shape ids\[N,T\]:int64, got \[20, 6, 1\]"
    with pytest.raises(DataError, match=said):
        list(open_source(tmp_path / "rank.npz", [TensorSpec("ids", ("N", "T"), "int64")], batch_size=8))
    np.savez(tmp_path / "wide.npz", x=np.zeros((20, 4, 8, 8), np.float32))
    said = r"wide\.npz: input 'x' expects shape x\[N,3,8,8\]:float32, got \[20, 4, 8, 8\]$"
    with pytest.raises(DataError, match=said):
        list(open_source(tmp_path / "wide.npz", image, batch_size=8))
    np.savez(tmp_path / "ok.npz", x=np.zeros((20, 3, 8, 8), np.float32))  # any number of samples
    assert _count(open_source(tmp_path / "ok.npz", [TensorSpec("x", (4, 3, 8, 8), "float32")])) == 20


def test_given_shapes_must_name_the_models_inputs_at_their_rank() -> None:
    from calibration.errors import DataError
    from calibration.modelinfo import TensorSpec
    from calibration.sources import open_source

    inputs = [TensorSpec("x", ("batch", "samples"), "float32")]
    with pytest.raises(DataError, match=r"no input 'images' \(its inputs: x\)"):
        open_source("random", inputs, shapes={"images": (1, 16)})
    with pytest.raises(DataError, match="has 2 dims, not 1"):
        open_source("random", inputs, shapes={"x": (16,)})
    feed = next(iter(open_source("random", inputs, shapes={"x": (1, 16)})))
    assert feed["x"].shape == (1, 16)


def test_inputs_that_share_a_named_dim_must_agree_on_its_length() -> None:
    from calibration.errors import DataError
    from calibration.feeds import check_feed
    from calibration.modelinfo import TensorSpec

    inputs = [
        TensorSpec("input", ("batch", 512), "float32"),
        TensorSpec("state", ("batch", 2, 128), "float32"),
    ]
    good = {"input": np.zeros((8, 512), np.float32), "state": np.zeros((8, 2, 128), np.float32)}
    assert check_feed(good, inputs, "d")["input"].shape == (8, 512)
    bad = {"input": np.zeros((16, 512), np.float32), "state": np.zeros((8, 2, 128), np.float32)}
    with pytest.raises(DataError, match="'input' and 'state' share the dim 'batch' but have 16 and 8"):
        check_feed(bad, inputs, "d")


def test_integer_data_for_a_float_input_is_fed_as_is_and_warned(tmp_path: Path) -> None:
    """uint8 images for a float32 input were cast and fed without a word: a model that expects
    values in [0, 1] calibrated on 0..255."""
    pixels = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4).astype(np.uint8)
    np.savez(tmp_path / "u8.npz", x=pixels)
    np.savez(tmp_path / "f.npz", x=pixels.astype(np.float32) / 255)
    source = open_source(tmp_path / "u8.npz", DYNAMIC, batch_size=2)
    (note,) = source.notes()
    assert "input 'x' is float32 and the data gives uint8 (values 0..95)" in note
    assert "not scaled" in note and "normalize" in note
    (feed,) = list(source)
    assert feed["x"].dtype == np.float32 and np.array_equal(feed["x"], pixels)  # fed as is
    assert open_source(tmp_path / "f.npz", DYNAMIC, batch_size=2).notes() == []
    (tmp_path / "both").mkdir()
    np.savez(tmp_path / "both" / "a.npz", x=pixels)
    (tmp_path / "both" / "b.png").write_bytes(b"")
    (both,) = open_source(tmp_path / "both", DYNAMIC, batch_size=2).notes()
    assert "the images were not" in both and "gives uint8" in both


def test_integers_a_narrower_input_type_cannot_hold_are_refused_not_wrapped(tmp_path: Path) -> None:
    """int64 4294967297 given for an int32 input ran as 1, uint16 300 for a uint8 input as 44 (compare
    passed, the bundle's reference held the wrapped values): a narrower integer type is taken only when
    every value fits, and then cast exactly. Polygraphy refuses any other dtype than the input's."""
    from calibration.feeds import check_feed

    ids = [TensorSpec("ids", ("batch", 3), "int32")]
    np.savez(tmp_path / "big.npz", ids=np.full((4, 3), 2**32 + 1, np.int64))
    with pytest.raises(DataError, match=r"input 'ids' expects dtype int32, got int64 holding 4294967297, wh"):
        list(open_source(tmp_path / "big.npz", ids, batch_size=4))
    fits = check_feed({"ids": np.array([[0, -(2**31), 2**31 - 1]], np.int64)}, ids, "d")["ids"]
    assert fits.dtype == np.int32 and fits.tolist() == [[0, -(2**31), 2**31 - 1]]
    pixels = [TensorSpec("x", ("n", 4), "uint8")]
    given = np.array([[0, 255, 300, 65535]], np.uint16)
    with pytest.raises(DataError, match=r"'x' expects dtype uint8, got uint16 holding 300, which uint8 can"):
        check_feed({"x": given}, pixels, "d")
    with pytest.raises(DataError, match=r"got int8 holding -1, which uint8 cannot hold"):
        check_feed({"x": np.array([[1, 2, -1, 3]], np.int8)}, pixels, "d")
    two = [TensorSpec("x", ("n", 2), "uint8")]
    assert check_feed({"x": given[:, :2]}, two, "d")["x"].tolist() == [[0, 255]]  # fits: cast exactly


def test_a_float_that_overflows_a_narrower_float_input_is_refused_as_an_overflow() -> None:
    """float64 70000 for a float16 input was refused as "contains NaN or Inf", a file holding none."""
    from calibration.feeds import check_feed

    half = [TensorSpec("x", ("n", 3), "float16")]
    with pytest.raises(DataError, match=r"'x' expects dtype float16, got float64 holding 70000\.0, which ov"):
        check_feed({"x": np.array([[1.0, 70000.0, -1e6]])}, half, "d")
    with pytest.raises(DataError, match="contains NaN or Inf"):  # a file that holds one says so still
        check_feed({"x": np.array([[1.0, np.inf, 2.0]])}, half, "d")
    assert check_feed({"x": np.array([[1.0, 65504.0, -2.5]])}, half, "d")["x"].dtype == np.float16


# a batch-first GRU as torch exports it: the state h0[layers, B, hidden] holds the batch on axis 1
GRU_BATCH_FIRST = [TensorSpec("x", ("B", 10, 8), "float32"), TensorSpec("h0", (1, "B", 16), "float32")]


def test_a_state_batched_on_axis_1_is_counted_cut_and_stacked_there(tmp_path: Path) -> None:
    """--samples 4 on x[B,10,8], h0[1,B,16] fed the whole file at once (dim 0 lengths differ: 32
    and 1), uncounted; per-sample files h0[1,1,16] were stacked on dim 0 into h0[8,1,16]."""
    x = np.arange(32 * 10 * 8, dtype=np.float32).reshape(32, 10, 8)
    h0 = np.arange(32 * 16, dtype=np.float32).reshape(1, 32, 16)
    np.savez(tmp_path / "d.npz", x=x, h0=h0)
    feeds = list(open_source(tmp_path / "d.npz", GRU_BATCH_FIRST, samples=4, batch_size=8))
    assert [(f["x"].shape, f["h0"].shape) for f in feeds] == [((4, 10, 8), (1, 4, 16))]
    np.testing.assert_array_equal(feeds[0]["h0"], h0[:, :4])
    folder = tmp_path / "per_sample"
    folder.mkdir()
    for i in range(8):
        np.savez(folder / f"s{i}.npz", x=x[i : i + 1], h0=h0[:, i : i + 1])
    (feed,) = list(open_source(folder, GRU_BATCH_FIRST, batch_size=8))
    assert feed["x"].shape == (8, 10, 8) and feed["h0"].shape == (1, 8, 16)
    np.testing.assert_array_equal(feed["h0"], h0[:, :8])


def test_a_time_first_model_counts_its_samples_on_the_named_axis(tmp_path: Path) -> None:
    """x[12,N,8], h0[1,N,16] (no dim 0 named, and 12 and 1 no shared batch): N is the batch,
    and the file's 32 samples are 32, not 12 time steps."""
    from calibration.feeds import feed_rows, static_batch

    inputs = [TensorSpec("x", (12, "N", 8), "float32"), TensorSpec("h0", (1, "N", 16), "float32")]
    assert static_batch(inputs) is None
    np.savez(tmp_path / "d.npz", x=np.zeros((12, 32, 8), np.float32), h0=np.zeros((1, 32, 16), np.float32))
    feeds = list(open_source(tmp_path / "d.npz", inputs, samples=20, batch_size=8))
    assert [feed_rows(f, inputs) for f in feeds] == [8, 8, 4]
    assert [f["x"].shape for f in feeds] == [(12, 8, 8), (12, 8, 8), (12, 4, 8)]
    # inputs that agree on a fixed dim 0 are a fixed batch, whatever names they share beyond it
    fixed = [TensorSpec("ids", (1, "seq"), "int64"), TensorSpec("mask", (1, "seq"), "int64")]
    assert static_batch(fixed) == 1


def test_an_input_whose_batch_axis_cannot_be_told_is_refused_before_reading(tmp_path: Path) -> None:
    inputs = [TensorSpec("x", (None, 10, 8), "float32"), TensorSpec("h0", (1, None, 16), "float32")]
    np.savez(tmp_path / "d.npz", x=np.zeros((32, 10, 8), np.float32), h0=np.zeros((1, 32, 16), np.float32))
    with pytest.raises(DataError, match=r"input 'h0' \(h0\[1,\?,16\]:float32\): which of its axes holds"):
        open_source(tmp_path / "d.npz", inputs, samples=4)


def test_a_fixed_batch_beside_dynamic_dims_is_counted_on_dim_0(tmp_path: Path) -> None:
    """captcha-rec's input1[1, 1, 64, image_width] (no input with a dynamic batch) was refused as an
    input whose batch axis cannot be told; it is a fixed batch of 1, as an all-fixed shape is, and so
    are ids[1, seq] beside mask[1, seq]."""
    from calibration.feeds import batch_axes

    captcha = [TensorSpec("input1", (1, 1, 64, "image_width"), "float32")]
    assert batch_axes(captcha) == {"input1": 0}
    np.savez(tmp_path / "d.npz", input1=np.zeros((6, 1, 64, 96), np.float32))
    feeds = list(open_source(tmp_path / "d.npz", captcha, samples=4, batch_size=8))
    assert [f["input1"].shape for f in feeds] == [(1, 1, 64, 96)] * 4
    pair = [TensorSpec("ids", (1, "seq"), "int64"), TensorSpec("mask", (1, "seq"), "int64")]
    assert batch_axes(pair) == {"ids": 0, "mask": 0}


def test_a_loader_scripts_samples_limit_counts_samples_not_batches(tmp_path: Path) -> None:
    """--samples 10 with a loader of 5 batches of 8 read 40 samples (the limit counted feeds): now
    10, the last batch cut as an .npz file's is, the loader not run past it, and the description
    says what was read. A fixed batch is read whole (2 of x[2,...] for --samples 5: 4 samples)."""
    counter = tmp_path / "made.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        "    for i in range(5):\n"
        f"        open({str(counter)!r}, 'a').write('batch\\n')\n"
        "        yield {'x': np.full((8, 3, 4, 4), i, np.float32)}\n"
    )
    source = open_source(str(loader), DYNAMIC, samples=10)
    assert [f["x"].shape[0] for f in source] == [8, 2]
    assert len(counter.read_text().splitlines()) == 2
    assert source.describe()["samples"] == 10
    assert _count(open_source(str(loader), DYNAMIC)) == 40  # no limit: all of it
    pairs = tmp_path / "pairs.py"
    pairs.write_text(
        "import numpy as np\n\ndef load_data():\n"
        "    for i in range(5):\n        yield {'x': np.full((2, 3, 4, 4), i, np.float32)}\n"
    )
    fixed = open_source(str(pairs), STATIC, samples=5)
    assert _count(fixed) == 4 and fixed.describe()["samples"] == 4


def test_a_loader_script_read_to_its_end_is_replayed_from_the_folder_it_keeps_its_feeds_in(
    tmp_path: Path,
) -> None:
    """A run's stages share one source (edgedeploy.options.OpenedSources): the loader runs once, on
    the first read to the end; a read stopped early keeps nothing."""
    counter = tmp_path / "runs.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    open({str(counter)!r}, 'a').write('load\\n')\n"
        "    for i in range(3):\n        yield {'x': np.full((2, 4), i, np.float32)}\n"
    )
    source = open_source(str(loader), [TensorSpec("x", ("N", 4), "float32")])
    source.keep_in = tmp_path / "kept"
    source.keep_in.mkdir()
    assert np.array_equal(source.first_feed()["x"], np.zeros((2, 4), np.float32))
    digest = source.describe()["feeds_sha256"]
    replayed = list(source)
    assert [int(f["x"][0, 0]) for f in replayed] == [0, 1, 2] and replayed[0]["x"].dtype == np.float32
    assert source.describe()["feeds_sha256"] == digest
    assert counter.read_text().splitlines() == ["load"]  # first_feed read it all: kept for the rest
    partial = open_source(str(loader), [TensorSpec("x", ("N", 4), "float32")])
    partial.keep_in = source.keep_in
    next(iter(partial))
    assert len(list(source.keep_in.iterdir())) == 1  # the partial read's feeds were not kept
    list(partial)
    assert len(counter.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        ("bfloat16", "(np.arange(8.0).reshape(2, 4) - i).astype(ml_dtypes.bfloat16)"),
        ("float8_e4m3fn", "(np.arange(8.0).reshape(2, 4) - i).astype(ml_dtypes.float8_e4m3fn)"),
        ("object", "np.array([['a', 'bé', '', str(i)]] * 2, dtype=object)"),
        ("object", "np.array([[b'a', b'\\xc3\\xa9', b'', bytes([65 + i])]] * 2, dtype=object)"),
        ("object", "np.array([['a\\0', 'b\\0c', '\\0', str(i) + '\\0\\0']] * 2, dtype=object)"),
        ("object", "np.array([[b'a\\0', b'\\0\\xc3\\xa9', b'\\0', bytes([65 + i, 0])]] * 2, dtype=object)"),
    ],
    ids=["bfloat16", "float8", "strings", "bytes", "strings ending in NUL", "bytes ending in NUL"],
)
def test_feeds_numpy_saves_only_as_raw_bytes_or_pickles_are_kept_and_replayed_too(
    tmp_path: Path, dtype: str, values: str
) -> None:
    """A loader script yielding bfloat16 or float8 (ml_dtypes) or string feeds was run again for
    every read of a run or build (the kept-feeds folder refused what numpy saves only as raw bytes
    or pickles); they are kept as the others are and replayed with their dtype and values. Text
    ending in NUL characters, which numpy's fixed-width strings drop, was still read again: it is
    kept with its lengths beside it, and replayed with its NULs. (Bytes are read as the UTF-8 text
    they hold before they are kept: test_bytes_for_a_string_input_are_fed_as_their_utf8_text.)"""
    import ml_dtypes

    counter = tmp_path / "runs.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import ml_dtypes\nimport numpy as np\n\ndef load_data():\n"
        f"    open({str(counter)!r}, 'a').write('load\\n')\n"
        f"    for i in range(3):\n        yield {{'x': {values}}}\n"
    )
    spec = TensorSpec("x", ("N", 4), dtype)
    assert spec.np_dtype == (np.dtype(object) if dtype == "object" else np.dtype(getattr(ml_dtypes, dtype)))
    source = open_source(str(loader), [spec])
    source.keep_in = tmp_path / "kept"
    source.keep_in.mkdir()
    read = list(source)
    digest = source.describe()["feeds_sha256"]
    replayed = list(source)
    assert counter.read_text().splitlines() == ["load"]
    assert len(replayed) == len(read) == 3
    for got, want in zip(replayed, read, strict=True):
        assert got["x"].dtype == want["x"].dtype == spec.np_dtype
        assert got["x"].tolist() == want["x"].tolist()
        assert [type(v) for v in got["x"].flat] == [type(v) for v in want["x"].flat]
    kept = source.kept_files()
    assert kept is not None and kept[1] == digest
    other = open_source(str(loader), [spec])  # another process's open of it (a matrix task)
    other.replay(*kept)
    assert [f["x"].tolist() for f in other] == [f["x"].tolist() for f in read]
    assert counter.read_text().splitlines() == ["load"]


def test_a_replay_of_the_first_kept_feed_alone_gives_that_feed_and_refuses_a_whole_read(
    tmp_path: Path,
) -> None:
    """A matrix cell's task reads the first feed of a loader's kept feeds only, and is sent that
    one (calibration.feeds.DataSource.kept_files(first_only=True)), with the digest of them all; a
    read of the whole source there would end after one feed, so it is refused, not cut short."""
    counter = tmp_path / "runs.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    open({str(counter)!r}, 'a').write('load\\n')\n"
        "    for i in range(3):\n        yield {'x': np.full((2, 4), i, np.float32)}\n"
    )
    inputs = [TensorSpec("x", ("N", 4), "float32")]
    source = open_source(str(loader), inputs)
    source.keep_in = tmp_path / "kept"
    source.keep_in.mkdir()
    digest = source.describe()["feeds_sha256"]
    for as_paths in (True, False):
        kept = source.kept_files(as_paths, first_only=True)
        assert kept is not None and len(kept[0]) == 1 and kept[1] == digest
        other = open_source(str(loader), inputs)  # another process's open of it
        other.replay(*kept, first_only=True)
        assert np.array_equal(other.first_feed()["x"], np.zeros((2, 4), np.float32))
        assert other.describe()["feeds_sha256"] == digest
        with pytest.raises(RuntimeError, match="only the first feed"):
            list(other)
    assert counter.read_text().splitlines() == ["load"]
    whole = source.kept_files()  # the bytes of them all still, after the first's alone
    assert whole is not None and len(whole[0]) == 3


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("np.arange(8).reshape(2, 4)", "got int64"),
        ("np.ones((2, 4))", "got float64"),
        ("np.ones((2, 4), bool)", "got bool"),
        ("np.array([['a', 1, 'b', None]] * 2, dtype=object)", "got an object array holding int"),
    ],
    ids=["int64", "float64", "bool", "objects"],
)
def test_data_that_is_not_text_for_a_string_input_is_refused(tmp_path: Path, given: str, said: str) -> None:
    """Numbers (token ids, a wrong file) given for a string input were taken: check_feed cast them
    to objects, and ONNX Runtime read each as its str() ("17", "1.0", "None"), which the model's
    vocabulary maps to nothing, so build, calibrate and compare ran on meaningless text without a
    word. Such data is refused in one line naming the input."""
    loader = tmp_path / "loader.py"
    loader.write_text(f"import numpy as np\n\ndef load_data():\n    yield {{'s': {given}}}\n")
    source = open_source(str(loader), [TensorSpec("s", ("N", 4), "object")])
    with pytest.raises(DataError, match=rf"input 's' takes text \(tensor\(string\)\): {said}") as err:
        list(source)
    assert "\n" not in str(err.value)


def test_bytes_for_a_string_input_are_fed_as_their_utf8_text(tmp_path: Path) -> None:
    """Bytes given for a string input reached ONNX Runtime as bytes, which its Python API reads as
    their repr (b"a" ran as the word "b'a'"; a fixed-width bytes array ran as text read past its
    items), so a tokenizer saw none of its words; they are now fed as the UTF-8 text they hold, and
    bytes that are not UTF-8, which ONNX Runtime's Python API cannot feed, are refused in one line."""
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        "    yield {'s': np.array([[b'a', 'b', '\\u00e9'.encode(), b'x\\0']], dtype=object)}\n"
        "    yield {'s': np.array([[b'hello', b'a', b'', b'xy']])}\n"
    )
    spec = TensorSpec("s", ("N", 4), "object")
    feeds = list(open_source(str(loader), [spec]))
    assert [f["s"].tolist() for f in feeds] == [[["a", "b", "\u00e9", "x\0"]], [["hello", "a", "", "xy"]]]
    assert all(f["s"].dtype == object for f in feeds)
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n    yield {'s': np.array([[b'a', b'\\xff']])}\n"
    )
    with pytest.raises(DataError, match=r"input 's' takes text: b'\\xff' is not UTF-8") as err:
        list(open_source(str(loader), [TensorSpec("s", ("N", 2), "object")]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_text_saved_as_an_object_array_is_refused_saying_how_to_save_it(tmp_path: Path, suffix: str) -> None:
    """np.save of text as a string input's feed holds it (an object array) writes a pickle, which the
    data files are read without (a pickle can run code); the refusal was numpy's "Object arrays
    cannot be loaded when allow_pickle=False", which names an option edgedeploy does not have. It
    now says what to do instead."""
    text = np.array([["a", "b"]], dtype=object)
    path = tmp_path / f"text{suffix}"
    if suffix == ".npz":
        np.savez(path, s=text)
    else:
        np.save(path, text)
    with pytest.raises(DataError) as err:
        list(open_source(str(path), [TensorSpec("s", ("N", 2), "object")]))
    said = str(err.value)
    assert "allow_pickle" not in said and "\n" not in said, said
    assert said.startswith(f"cannot read {path}: it holds an object array, which NumPy saves as a pickle")
    assert "arr.astype(str)" in said and "load_data()" in said, said


def test_random_integers_that_index_a_gather_table_stay_within_it(tmp_path: Path) -> None:
    """Random ids were drawn from 0-9 whatever they index: a BERT-like model's token_type_ids, which
    index a 2-row table (through Cast, Unsqueeze and Squeeze), failed ONNX Runtime ("idx=8 must be
    within the inclusive range [-2,1]"). An integer input used as Gather indices now takes values
    below the table's length on that axis; one used otherwise keeps 0-9."""
    import onnxruntime as ort

    model = bertlike_model(tmp_path / "bert.onnx")
    inputs = model_io(model)[0]
    source = open_source("random", inputs, samples=64, batch_size=64, shapes={"input_ids": (64, 16)})
    feed = next(iter(source))
    assert feed["token_type_ids"].min() == 0 and feed["token_type_ids"].max() == 1
    assert feed["input_ids"].max() >= 10 and feed["input_ids"].max() < 100  # the vocabulary's 100 rows
    assert feed["attention_mask"].min() == 0 and feed["attention_mask"].max() == 9  # the documented 0-9
    ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feed)
    assert source.describe()["integer_ranges"] == {"input_ids": [0, 100], "token_type_ids": [0, 2]}


def test_a_folder_file_of_a_dtype_the_input_refuses_is_named_not_the_folder(tmp_path: Path) -> None:
    """A folder of .npz files, one of which holds complex64 (or text, or integers the input's type
    cannot hold) for a float32 input: refused as "calib (batch 0): input 'x' expects dtype float32,
    got complex64", naming the folder and a batch that two files made, not the file to fix. The file
    is checked as it is read, and named."""
    x = [TensorSpec("x", ("n", 4), "float32")]
    ids = [TensorSpec("x", ("n", 4), "int32")]
    bad = {
        "complex64": (x, np.zeros((2, 4), np.complex64), r"input 'x' expects dtype float32, got complex64"),
        "text": (x, np.full((2, 4), "a"), r"input 'x' expects dtype float32, got str"),
        "wrapped": (ids, np.full((2, 4), 2**32 + 1, np.int64), r"expects dtype int32, got int64 holding"),
    }
    for case, (inputs, values, said) in bad.items():
        folder = tmp_path / case
        folder.mkdir()
        good = np.zeros((2, 4), inputs[0].np_dtype)
        np.savez(folder / "a.npz", x=good)
        np.savez(folder / "b.npz", x=values)
        np.savez(folder / "c.npz", x=good)
        with pytest.raises(DataError) as caught:
            list(open_source(folder, inputs, batch_size=8))
        message = str(caught.value)
        assert message.startswith(f"{folder / 'b.npz'}: "), message
        assert re.search(said, message), message


def test_a_loader_script_with_an_upper_case_suffix_is_a_loader(tmp_path: Path) -> None:
    """``loader.PY`` was "unsupported data file loader.PY: use .npz, .npy, a folder of them, or a .py
    loader" (its suffix compared as written), and importing it found no loader for the suffix. A
    suffix is compared whatever its case, as .NPZ and .PNG are."""
    body = "import numpy as np\n\ndef load_data():\n    yield {'x': np.full((2, 4), 3.0, 'f4')}\n"
    feeds = {}
    for name in ("loader.py", "LOADER.PY", "loader.Py"):
        (tmp_path / name).write_text(body)
        feeds[name] = list(open_source(str(tmp_path / name), DYNAMIC_2D))
    assert [len(f) for f in feeds.values()] == [1, 1, 1]
    assert all(np.array_equal(f[0]["x"], np.full((2, 4), 3.0, np.float32)) for f in feeds.values())


DYNAMIC_2D = [TensorSpec("x", ("n", 4), "float32")]


def test_a_folder_file_that_lacks_an_input_or_names_another_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A folder of .npz files for a model of two inputs, one file saved without ``ids``: the rows of
    two files were stacked into one batch before any name was checked, and ``calibrate``, ``build``
    and ``compare`` died of a KeyError traceback (exit 1). Each file's names are checked as it is
    read, and the file is named, as its shapes and dtypes are."""
    inputs = [TensorSpec("x", ("n", 4), "float32"), TensorSpec("ids", ("n",), "int64")]
    for case, arrays, said in (
        ("missing", {"x": np.zeros((2, 4), np.float32)}, "missing input(s) ids"),
        ("unknown", {"images": np.zeros((2, 4), np.float32)}, "unknown input(s) images"),
    ):
        folder = tmp_path / case
        folder.mkdir()
        whole = {"x": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int64)}
        np.savez(folder / "a.npz", **whole)
        np.savez(folder / "b.npz", **arrays)
        np.savez(folder / "c.npz", **whole)
        with pytest.raises(DataError) as caught:
            list(open_source(folder, inputs, batch_size=8))
        assert str(caught.value).startswith(f"{folder / 'b.npz'}: {said}"), str(caught.value)


def test_a_folder_whose_arrays_are_in_subfolders_says_they_are_not_read_there(tmp_path: Path) -> None:
    """A folder of .npz files in subfolders (calib/day/0.npz, calib/night/1.npz) was refused as
    "holds no .npz, .npy or image files ..., nor do its subfolders": its subfolders hold them.
    Subfolders are read for images only (class folders); the refusal names those holding arrays."""
    folder = tmp_path / "calib"
    for sub, i in (("day", 0), ("night", 1)):
        (folder / sub).mkdir(parents=True)
        np.savez(folder / sub / f"{i}.npz", x=np.zeros((2, 3, 4, 4), np.float32))
    said = (
        f"data folder {folder} holds no .npz, .npy or image files; its subfolders day/, night/ hold "
        ".npz/.npy files, which are read at the top level only: give one subfolder as the data, or "
        "move the files up"
    )
    with pytest.raises(DataError) as caught:
        open_source(folder, DYNAMIC, batch_size=2)
    assert str(caught.value) == said
    assert _count(open_source(folder / "day", DYNAMIC, batch_size=2)) == 2


def test_a_folder_file_of_0_samples_is_named_not_the_folder(tmp_path: Path) -> None:
    """A folder of .npz files, one of them saved empty (0 rows): refused as "data source 'calib'
    (batch 0) holds 0 samples", naming the folder and a batch, not the file, which rebatch passed on
    ahead of the rows of the file before it. The file is named as it is read."""
    folder = tmp_path / "calib"
    folder.mkdir()
    np.savez(folder / "a.npz", x=np.zeros((2, 3, 4, 4), np.float32))
    np.savez(folder / "b.npz", x=np.zeros((0, 3, 4, 4), np.float32))
    np.savez(folder / "c.npz", x=np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(DataError) as caught:
        list(open_source(folder, DYNAMIC, batch_size=8))
    assert str(caught.value) == f"{folder / 'b.npz'} holds 0 samples"


def _pngs(folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        pixels = (np.random.default_rng(i).random((4, 4, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_a_fixed_batch_that_leaves_samples_out_says_how_many_and_records_them(tmp_path: Path) -> None:
    """A model fixed at a batch of 4 given 10 samples calibrated on 8 and dropped 2 without a word,
    from an .npz file as from an image folder: one warning says so, and the description records
    the 2 beside the 8 used (not in the cache key: the data used is the 8)."""
    fixed = [TensorSpec("x", (4, 3, 4, 4), "float32")]
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3, 4, 4), np.float32))
    images = _pngs(tmp_path / "imgs", 10)
    for spec, asked in ((tmp_path / "d.npz", None), (images, None), (tmp_path / "d.npz", 10), (images, 10)):
        source = open_source(spec, fixed, samples=asked, image_options={"resize": [4, 4]})
        assert _count(source) == 8 == source.describe()["samples"], spec
        assert source.describe()["samples_dropped"] == 2, spec
        assert "samples_dropped" not in source.identity()
        said = [n for n in source.notes() if "fixed batch of 4" in n]
        assert len(said) == 1 and "8 of the 10" in said[0] and "2 left out" in said[0], source.notes()
    for spec in (tmp_path / "d.npz", images):  # whole batches: nothing said, nothing recorded
        whole = open_source(spec, fixed, samples=8, image_options={"resize": [4, 4]})
        assert "samples_dropped" not in whole.describe()
        assert not [n for n in whole.notes() if "fixed batch" in n]


def test_an_image_folder_is_described_with_its_samples_and_batch_as_array_files_are(tmp_path: Path) -> None:
    """The description of an image folder (the data of the calibrate JSON) had no "samples", and
    "batch_size" the one asked for where a fixed batch feeds the model; an .npz file's has both."""
    images = _pngs(tmp_path / "imgs", 6)
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 3, 4, 4), np.float32))
    for inputs, asked, used, batch in ((DYNAMIC, None, 6, 8), (DYNAMIC, 5, 5, 8), (STATIC, None, 6, 2)):
        described = [
            open_source(
                spec, inputs, samples=asked, batch_size=8, image_options={"resize": [4, 4]}
            ).describe()
            for spec in (images, tmp_path / "d.npz")
        ]
        assert [d["samples"] for d in described] == [used, used], (inputs, asked)
        assert [d["batch_size"] for d in described] == [batch, batch], (inputs, asked)


def test_a_loader_scripts_cache_key_is_the_samples_it_gave_not_the_cap(tmp_path: Path) -> None:
    """--samples 100 of a loader that yields 20 read the same 20 as no --samples, but its key said
    "limit": 100, "samples": 100 and so calibrated them again; the feeds' sha256 is the data's key."""
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        "    for i in range(5):\n        yield {'x': np.full((4, 3, 4, 4), i, np.float32)}\n"
    )
    keys = [open_source(str(loader), DYNAMIC, samples=asked).identity() for asked in (None, 20, 100)]
    assert keys[0] == keys[1] == keys[2]
    assert keys[0] != open_source(str(loader), DYNAMIC, samples=12).identity()
