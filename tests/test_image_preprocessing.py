"""An image folder's preprocessing: declared once, used wherever the folder is read (calibrate,
build, compare, analyze, bundle, and run's compare data), and said when it was assumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibration.errors import DataError
from calibration.modelinfo import TensorSpec
from calibration.sources import open_source
from tests.conftest import Digits, assert_clean_input_error, files_under, run_cli

Image = pytest.importorskip("PIL.Image")

PREP = '[preprocess]\ncolor = "gray"\nmean = [0.25]\nstd = [0.5]\n'


def _images(root: Path, digits: Digits, count: int = 16) -> Path:
    """The digits as 8x8 grayscale PNGs (their pixels 0-1 as 0-255)."""
    folder = root / "imgs"
    folder.mkdir()
    for i, x in enumerate(digits.x_test[:count]):
        pixels = np.clip(np.asarray(x[0]) / max(float(np.max(digits.x_test)), 1e-6) * 255, 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_an_image_folder_without_a_declaration_says_what_it_assumed(tmp_path: Path, digits: Digits) -> None:
    folder = _images(tmp_path, digits, 2)
    spec = TensorSpec("x", ("n", 3, 16, 24), "float32")
    assumed = open_source(str(folder), [spec]).guessed()
    assert assumed is not None
    assert "no preprocessing declared" in assumed and "resized to 16x24" in assumed and "RGB" in assumed
    dynamic = open_source(str(folder), [TensorSpec("x", ("n", 1, "h", "w"), "float32")]).guessed()
    assert dynamic is not None and "GRAY" in dynamic and "at their own size" in dynamic
    declared = open_source(str(folder), [spec], image_options={"resize": [16, 24]})
    assert declared.guessed() is None


def test_an_image_folder_reads_a_whole_fixed_batch_beyond_the_samples_asked_for(
    tmp_path: Path, digits: Digits
) -> None:
    """A model fixed at a batch of 4 and 2 samples asked for: one batch of the first 4 images, not a
    refusal that the folder of 6 has only 2."""
    folder = _images(tmp_path, digits, 6)
    spec = TensorSpec("x", (4, 1, 8, 8), "float32")
    feeds = list(open_source(str(folder), [spec], samples=2, image_options={"color": "gray"}))
    assert [f["x"].shape for f in feeds] == [(4, 1, 8, 8)]


def test_an_image_folder_on_a_fixed_batch_describes_the_images_it_used(
    tmp_path: Path, digits: Digits
) -> None:
    """A model fixed at a batch of 4 and 6 samples asked for: one batch of 4 is read (2 images cannot
    feed it), and the description lists those 4 files, not the 6 that were chosen."""
    folder = _images(tmp_path, digits, 8)
    spec = TensorSpec("x", (4, 1, 8, 8), "float32")
    source = open_source(str(folder), [spec], samples=6, image_options={"color": "gray"})
    assert [f["x"].shape for f in source] == [(4, 1, 8, 8)]
    assert [f["name"] for f in source.describe()["files"]] == ["000.png", "001.png", "002.png", "003.png"]


def test_compare_reads_images_with_the_declared_preprocessing(tmp_path: Path, digits: Digits) -> None:
    folder = _images(tmp_path, digits)
    prep = tmp_path / "prep.toml"
    prep.write_text(PREP)
    ref = digits.onnx_path
    declared = run_cli(
        "compare", ref, ref, "--data", folder, "--preprocess", prep, "--json", tmp_path / "c.json"
    )
    assert declared.code == 0, declared.stderr
    assert "no preprocessing declared" not in declared.stderr
    data = json.loads((tmp_path / "c.json").read_text())["data"]
    assert data["kind"] == "images" and data["preprocess"]["mean"] == [0.25]
    assert data["preprocess"]["std"] == [0.5]
    assumed = run_cli("compare", ref, ref, "--data", folder)
    assert assumed.code == 0 and "no preprocessing declared" in assumed.stderr
    arrays = run_cli("compare", ref, ref, "--data", digits.test_npz, "--preprocess", prep)
    assert arrays.code == 0 and "preprocessing applies to image folders" in arrays.stderr


def test_bad_preprocessing_files_exit_2_naming_the_file(tmp_path: Path, digits: Digits) -> None:
    folder = _images(tmp_path, digits, 2)
    bad = tmp_path / "bad.toml"
    bad.write_text("[preprocess]\nmeen = [0.5]\n")
    ref = digits.onnx_path
    result = run_cli("compare", ref, ref, "--data", folder, "--preprocess", bad)
    assert_clean_input_error(result, "bad preprocessing file", "bad.toml", "meen")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    for wrong in (binary, folder):  # not text, not a file
        result = run_cli("compare", ref, ref, "--data", folder, "--preprocess", wrong)
        assert_clean_input_error(result, "cannot read preprocessing file", wrong.name)
    out = tmp_path / "o"
    result = run_cli(
        "build", ref, "--precision", "int8", "--calib-data", folder, "--calib-preprocess", bad, "-o", out
    )
    assert_clean_input_error(result, "bad preprocessing file", "meen")
    assert files_under(out) == set()
    prep = tmp_path / "prep.toml"
    prep.write_text(PREP)
    result = run_cli("build", ref, "--precision", "int8", "--calib-preprocess", prep, "-o", out)
    assert_clean_input_error(result, "--calib-preprocess without --calib-data")
    assert files_under(out) == set()


def test_preprocessing_file_whose_calibration_is_not_a_table_exits_2(tmp_path: Path, digits: Digits) -> None:
    """{"calibration": [1]} and calibration = "x" are one line and exit 2, not an AttributeError."""
    folder = _images(tmp_path, digits, 2)
    ref = digits.onnx_path
    listed = tmp_path / "listed.json"
    listed.write_text('{"calibration": [1]}')
    result = run_cli("compare", ref, ref, "--data", folder, "--preprocess", listed)
    assert_clean_input_error(result, "listed.json", "calibration")
    text = tmp_path / "text.toml"
    text.write_text('calibration = "x"\n')
    out = tmp_path / "o"
    result = run_cli(
        "build", ref, "--precision", "fp16", "--calib-data", folder, "--calib-preprocess", text, "-o", out
    )
    assert_clean_input_error(result, "text.toml", "calibration")
    assert files_under(out) == set()


def test_build_calibrates_images_with_calib_preprocess(tmp_path: Path, digits: Digits) -> None:
    folder = _images(tmp_path, digits)
    prep = tmp_path / "prep.toml"
    prep.write_text(PREP)
    out = tmp_path / "o"
    result = run_cli(
        "build", digits.onnx_path, "--precision", "int8", "--calib-data", folder,
        "--calib-preprocess", prep, "-o", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "no preprocessing declared" not in result.stderr
    report = json.loads(next(out.glob("*.calib.json")).read_text())
    assert report["data"]["preprocess"]["mean"] == [0.25] and report["data"]["preprocess"]["color"] == "gray"


def test_an_int8_build_reads_each_calibration_image_once(
    tmp_path: Path, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build opened the image folder again after the calibration had read it, to run the built
    artifact on its first batch: every image's header read and hashed again, the first batch's
    decoded twice. The calibration hands its first batch on."""
    from collections import Counter

    from edgedeploy.options import BuildRequest, CalibrationRequest
    from edgedeploy.stages.build import build
    from edgedeploy.targets import load_target

    folder = _images(tmp_path, digits)
    opened: Counter[str] = Counter()
    real_open = Image.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened[Path(path).name] += 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    calibration = CalibrationRequest(data=str(folder), algorithm="max", samples=16, batch_size=8)
    request = BuildRequest(precision="int8", target=load_target("x86-64-cpu"), calibration=calibration)
    outcome = build(digits.onnx_path, request, tmp_path / "o")
    assert outcome.build.info["checked"] == "loaded and run once"
    # the folder's default preprocessing reads each header once, the calibration each image once
    assert opened == Counter({p.name: 2 for p in folder.iterdir()})


def test_run_reads_compare_images_with_the_calibration_preprocessing(tmp_path: Path, digits: Digits) -> None:
    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.run import compare_source

    folder = _images(tmp_path, digits, 4)
    config = from_dict(
        {
            "model": {"source": str(digits.onnx_path)},
            "calibration": {"data": "imgs", "preprocess": {"color": "gray", "mean": [0.25], "std": [0.5]}},
            "compare": {"data": "imgs", "samples": 4},
        },
        tmp_path,
    )
    spec = TensorSpec("input", ("n", 1, 8, 8), "float32")
    source = compare_source(config, [spec], {})
    assert source.describe()["preprocess"]["mean"] == [0.25] and source.guessed() is None
    feed = np.concatenate([f["input"] for f in source])
    pixels = np.stack([np.asarray(Image.open(p), np.float32) for p in sorted(folder.iterdir())])
    np.testing.assert_allclose(feed[:, 0], (pixels / 255 - 0.25) / 0.5, atol=1e-6)


def test_the_bundle_records_the_preprocessing_of_its_reference_images(tmp_path: Path, digits: Digits) -> None:
    """The device's application must turn a frame into the model's input as the reference inputs
    were made: run's bundle says how in manifest io.preprocess (and bundle inspect shows it)."""
    from tests.conftest import validate_manifest

    _images(tmp_path, digits)
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        f'workdir = "work"\n[model]\nsource = "{digits.onnx_path}"\n[build]\nprecisions = ["fp32"]\n'
        '[calibration]\npreprocess = { color = "gray", mean = [0.25], std = [0.5] }\n'
        '[compare]\ndata = "imgs"\nsamples = 8\n[profile]\nenabled = false\n'
        '[bundle]\noutput = "bundle"\n'
    )
    result = run_cli("run", config)
    assert result.code == 0, result.stderr
    assert "no preprocessing declared" not in result.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["io"]["preprocess"]["mean"] == [0.25] and manifest["io"]["preprocess"]["color"] == "gray"
    readme = (tmp_path / "bundle" / "README.md").read_text()
    assert "decode as GRAY; multiply by 0.00392157, subtract mean [0.25], divide by std [0.5]" in readme
    shown = run_cli("bundle", "inspect", tmp_path / "bundle")
    assert shown.code == 0 and json.loads(shown.stdout)["preprocess"]["std"] == [0.5]


def test_a_folder_of_arrays_and_images_says_which_it_read(tmp_path: Path, digits: Digits) -> None:
    folder = _images(tmp_path, digits, 2)
    np.savez(folder / "batch.npz", input=digits.x_test[:4])
    spec = TensorSpec("input", ("n", 1, 8, 8), "float32")
    source = open_source(str(folder), [spec])
    assert source.kind != "images" and sum(len(f["input"]) for f in source) == 4
    said = f"data folder {folder} holds 1 .npz/.npy and 2 image file(s): the arrays were read, the images"
    assert source.guessed() == f"{said} were not"


def test_16_bit_images_are_read_at_full_range_not_clipped_to_8_bits(tmp_path: Path) -> None:
    """A depth camera's 16-bit PNGs went through an 8-bit conversion: every value above 255 became
    255. A one-channel image of more than 8 bits is now read as it is stored, and an undeclared
    preprocessing scales 16 bits to [0, 1]."""
    folder = tmp_path / "depth"
    folder.mkdir()
    depth = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(depth).save(folder / "d.png")
    assert Image.open(folder / "d.png").mode.startswith("I;16")
    gray = TensorSpec("x", ("n", 1, 8, 8), "float32")
    source = open_source(str(folder), [gray])
    feed = next(iter(source))["x"]
    np.testing.assert_allclose(feed[0, 0], depth / 65535.0, rtol=1e-6)
    assert source.guessed() is not None and "16-bit, scaled to [0, 1]" in source.guessed()
    declared = next(iter(open_source(str(folder), [gray], image_options={"color": "gray", "scale": 0.001})))
    np.testing.assert_allclose(declared["x"][0, 0], depth * 0.001, rtol=1e-6)
    rgb = TensorSpec("x", ("n", 3, 8, 8), "float32")
    with pytest.raises(DataError, match=r"I;16.* image .*more than 8 bits.* for a RGB input"):
        list(open_source(str(folder), [rgb]))


def test_the_advice_for_16_bit_images_into_an_rgb_input_works_when_followed(tmp_path: Path) -> None:
    """16-bit gray PNGs for a 3-channel input were refused with 'give the data as .npy/.npz, or
    color = "gray"', and color = "gray" was then refused as making 1-channel images for an input of 3.
    The advice names what takes them: a gray preprocessing with a mean of 3 values, the gray image on
    every channel."""
    folder = tmp_path / "depth"
    folder.mkdir()
    depth = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(depth).save(folder / "d.png")
    rgb = TensorSpec("x", ("n", 3, 8, 8), "float32")
    with pytest.raises(DataError) as caught:
        list(open_source(folder, [rgb]))
    assert str(caught.value).endswith(
        'give the data as .npy/.npz, or declare color = "gray" with mean = [0, 0, 0] (the gray image on '
        "every channel; any mean of 3 values)"
    ), str(caught.value)
    fed = next(iter(open_source(folder, [rgb], image_options={"color": "gray", "mean": [0, 0, 0]})))["x"]
    for channel in range(3):
        np.testing.assert_allclose(fed[0, channel], depth / 65535.0, rtol=1e-6)


def test_a_folder_of_8_and_16_bit_images_scales_each_by_its_own_depth(tmp_path: Path) -> None:
    """The scale came from the first image alone: a 16-bit pixel of 40000 after an 8-bit image went
    in as 156.9, and an 8-bit one after a 16-bit image was divided by 65535."""
    depth = np.full((8, 8), 40000, np.uint16)
    pixels = np.full((8, 8), 200, np.uint8)
    gray = TensorSpec("x", ("n", 1, 8, 8), "float32")
    for first, second in (("a", "b"), ("b", "a")):
        folder = tmp_path / f"{first}{second}"
        folder.mkdir()
        Image.fromarray(depth).save(folder / f"{first}_16.png")
        Image.fromarray(pixels).save(folder / f"{second}_8.png")
        source = open_source(str(folder), [gray])
        fed = {f["name"]: x["x"][0, 0] for f, x in zip(source.describe()["files"], source, strict=True)}
        np.testing.assert_allclose(fed[f"{first}_16.png"], depth / 65535.0, rtol=1e-6)
        np.testing.assert_allclose(fed[f"{second}_8.png"], pixels / 255.0, rtol=1e-6)
        assert "8-bit ones scaled to [0, 1] and 16-bit ones scaled to [0, 1]" in (source.guessed() or "")
        assert source.describe()["preprocess"]["wide_scale"] == pytest.approx(1 / 65535)
    from edgedeploy.stages.bundle.make import _preprocess_text

    said = _preprocess_text(source.describe()["preprocess"])  # the device README
    assert "multiply by 0.00392157 (an image of more than 8 bits per pixel by 1.5259e-05)" in said
    # a folder of one depth is described as before (the same cache keys)
    assert "wide_scale" not in open_source(str(tmp_path / "ab"), [gray], samples=1).describe()["preprocess"]
    Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(tmp_path / "ab" / "c_32.tif")
    with pytest.raises(DataError, match=r"a_16.png is a 16-bit image and .*c_32.tif a 32-bit one"):
        open_source(str(tmp_path / "ab"), [gray])


def test_a_declared_preprocessing_without_a_scale_takes_16_bit_images_by_their_depth(tmp_path: Path) -> None:
    """A depth model declared with its mean and std only (``color = "gray"``, ``mean``, ``std``): its
    16-bit PNGs were divided by 8-bit's 255, the default scale, and went in at up to 257 (1025 after
    mean and std) without a word, where the undeclared preprocessing divides them by 65535. A
    preprocessing that declares no ``scale`` scales each image by its own depth, as the undeclared
    one does; a declared ``scale`` applies to all, and a folder of 8-bit images is read as before."""
    depth = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    pixels = np.full((8, 8), 200, np.uint8)
    gray = TensorSpec("x", ("n", 1, 8, 8), "float32")
    declared = {"color": "gray", "mean": [0.5], "std": [0.25]}
    folder = tmp_path / "depth"
    folder.mkdir()
    Image.fromarray(depth).save(folder / "d.png")
    fed = next(iter(open_source(folder, [gray], image_options=declared)))["x"]
    np.testing.assert_allclose(fed[0, 0], (depth / 65535.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    Image.fromarray(pixels).save(folder / "e.png")  # 8- and 16-bit: each by its own depth
    source = open_source(folder, [gray], image_options=declared)
    fed = {f["name"]: x["x"][0, 0] for f, x in zip(source.describe()["files"], source, strict=True)}
    np.testing.assert_allclose(fed["d.png"], (depth / 65535.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fed["e.png"], (pixels / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    scaled = next(iter(open_source(folder, [gray], image_options={**declared, "scale": 0.001})))["x"]
    np.testing.assert_allclose(scaled[0, 0], (depth * 0.001 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    eight = tmp_path / "eight"
    eight.mkdir()
    Image.fromarray(pixels).save(eight / "e.png")
    source = open_source(eight, [gray], image_options=declared)  # described as before: the same keys
    assert (
        source.describe()["preprocess"]["scale"] == pytest.approx(1 / 255)
        and "wide_scale" not in (source.describe()["preprocess"])
    )


def test_images_a_declared_preprocessing_leaves_at_another_size_than_the_input_fixes_are_named(
    tmp_path: Path,
) -> None:
    """A preprocessing declaring mean and std but no resize, for an input of fixed 8x8, on images of
    10x12 and 9x9: "samples of different shapes cannot share a batch ([3,9,9], [3,10,12]): give
    same-sized data (images: a preprocessing resize), or a batch size of 1", and at a batch size of 1,
    as advised, "input 'x' expects shape x[n,3,8,8]:float32, got [1, 3, 10, 12]". Each image is
    checked against the input's fixed dims as it is made, named, and the resize it needs said."""
    folder = tmp_path / "sizes"
    folder.mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "b.png")
    spec = TensorSpec("x", ("n", 3, 8, 8), "float32")
    said = (
        f"{folder / 'a.png'}: input 'x' expects shape x[n,3,8,8]:float32, got [1, 3, 10, 12]: the "
        "preprocessing declares no resize, so images keep their own size; declare resize = [8, 8]"
    )
    for batch_size in (2, 1):
        with pytest.raises(DataError) as caught:
            list(
                open_source(
                    folder, [spec], batch_size=batch_size, image_options={"mean": [0.5], "std": [0.5]}
                )
            )
        assert str(caught.value) == said
    fed = list(open_source(folder, [spec], batch_size=2, image_options={"resize": [8, 8], "mean": [0.5]}))
    assert fed[0]["x"].shape == (2, 3, 8, 8)


def test_class_subfolders_are_read_in_turn_so_a_sample_cap_takes_every_class(
    tmp_path: Path, digits: Digits
) -> None:
    """torchvision's ImageFolder layout (calib/<class>/<image>) was refused as holding no images;
    read in name order, --calib-samples would have taken the first classes only."""
    root = tmp_path / "calib"
    for label in ("cat", "dog", "owl"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((8, 8), 40 * i + {"cat": 1, "dog": 2, "owl": 3}[label], np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / ".cache").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / ".cache" / "x.png")  # hidden: not data
    spec = TensorSpec("x", ("n", 1, 8, 8), "float32")
    source = open_source(str(root), [spec], samples=3, batch_size=3)
    assert [f["name"] for f in source.describe()["files"]] == ["cat/0.png", "dog/0.png", "owl/0.png"]
    every = open_source(str(root), [spec], batch_size=1)
    assert len(every.describe()["files"]) == 9 and sum(1 for _ in every) == 9
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="nor do its subfolders"):
        open_source(str(empty), [spec])


def test_hidden_files_are_skipped_at_the_top_level_as_in_subfolders(tmp_path: Path) -> None:
    """macOS leaves ._a.png (AppleDouble) beside a.png on other file systems: skipped in class
    subfolders, it was read at the top level and refused as an unreadable image."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    np.save(folder / "._b.npy", np.zeros(3))  # a hidden array file does not make it a folder of arrays
    spec = TensorSpec("x", ("n", 1, 8, 8), "float32")
    source = open_source(str(folder), [spec])
    assert source.kind == "images" and [f["name"] for f in source.describe()["files"]] == ["a.png"]
    assert sum(1 for _ in source) == 1


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    """A phone stores a portrait photo landscape with EXIF Orientation 6 (turn 90 degrees clockwise
    to show): it was fed sideways, where cv2.imread (Ultralytics) turns it upright."""
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)  # 6 wide, 4 high
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(folder / "p.png", exif=exif)
    upright = np.rot90(pixels, k=-1)  # 4 wide, 6 high
    spec = TensorSpec("x", ("n", 3, "h", "w"), "float32")
    for options in (None, {"scale": 1.0}, {"resize": [6, 4], "scale": 1.0}, {"resize": 4, "scale": 1.0}):
        x = next(iter(open_source(str(folder), [spec], image_options=options)))["x"][0].transpose(1, 2, 0)
        np.testing.assert_allclose(x, upright / (255.0 if options is None else 1.0), rtol=1e-6)
    # letterboxed into a box of its upright shape: nothing to pad
    boxed = {"resize": [6, 4], "letterbox": True, "scale": 1.0}
    box = TensorSpec("x", ("n", 3, 6, 4), "float32")
    x = next(iter(open_source(str(folder), [box], image_options=boxed)))["x"][0]
    np.testing.assert_array_equal(x.transpose(1, 2, 0), upright)


def test_letterbox_fits_the_image_keeping_its_aspect_ratio_and_pads_it_as_ultralytics(tmp_path: Path) -> None:
    """A YOLO model is fed letterboxed frames; a stretched calibration image is not one of them.
    40x60 into 32x32: scaled by 32/60 to 21x32, rows 5-25 hold it, the rest is 114."""
    folder = tmp_path / "wide"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    spec = TensorSpec("x", ("n", 3, 32, 32), "float32")
    pre = {"resize": [32, 32], "letterbox": True, "scale": 1.0}
    x = next(iter(open_source(str(folder), [spec], image_options=pre)))["x"][0]
    assert np.all(x[:, :5] == 114) and np.all(x[:, 26:] == 114)
    want = np.asarray(Image.fromarray(pixels).resize((32, 21), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(x[:, 5:26].transpose(1, 2, 0), want)
    zero = next(iter(open_source(str(folder), [spec], image_options={**pre, "letterbox": 0})))["x"][0]
    assert np.all(zero[:, :5] == 0)
    from calibration.images import Preprocess

    with pytest.raises(DataError, match=r"letterbox needs resize = \[height, width\]"):
        Preprocess.from_dict({"letterbox": True, "resize": 256})
    with pytest.raises(DataError, match="letterbox: expected true, false or a pad 0-255"):
        Preprocess.from_dict({"letterbox": 300, "resize": [32, 32]})
    assert "letterbox" not in Preprocess.from_dict({"resize": [32, 32]}).describe()  # keys as before


def test_a_uint8_image_input_takes_the_pixels_as_stored(tmp_path: Path) -> None:
    """A model whose input is the uint8 pixels (many TF/TFLite exports) was refused an image folder
    ("expects dtype uint8, got float32"): the assumed preprocessing scaled to [0, 1] in float32."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    spec = TensorSpec("x", ("n", 8, 8, 3), "uint8")
    source = open_source(str(folder), [spec])
    x = next(iter(source))["x"]
    assert x.dtype == np.uint8 and np.array_equal(x[0], pixels)
    assert source.guessed() is not None and "as stored" in source.guessed()
    declared = {"layout": "nhwc", "dtype": "uint8", "mean": [128.0]}  # no scale: the stored values
    shifted = next(iter(open_source(str(folder), [spec], image_options=declared)))["x"][0]
    np.testing.assert_array_equal(shifted, np.clip(pixels.astype(np.int16) - 128, 0, 255))  # not wrapped


def test_a_dtype_the_input_cannot_take_is_refused_before_any_image_is_read(tmp_path: Path) -> None:
    """A declared dtype the input does not take was refused at the first batch ("expects dtype
    uint8, got float32", blaming the data); undeclared, a uint16 or int8 input was fed float32."""
    unread = tmp_path / "unread"
    unread.mkdir()
    (unread / "a.png").write_bytes(b"not a png")
    u8 = TensorSpec("x", ("n", 8, 8, 3), "uint8")
    i8 = TensorSpec("x", ("n", 3, 8, 8), "int8")
    float_for_u8 = r"preprocess\.dtype is float32, but input 'x' x\[n,8,8,3\]:uint8 takes uint8: set dtype"
    for spec, options, said in (
        (u8, {"layout": "nhwc"}, float_for_u8),
        (i8, {"dtype": "uint8", "scale": 1.0}, "dtype is uint8, but .* takes int8"),  # 255 would wrap to -1
        (TensorSpec("x", ("n", 3, 8, 8), "bool"), {}, "takes bool: images cannot feed it"),
        (TensorSpec("x", ("n", 3, 8, 8), "float32"), {"dtype": "str"}, "dtype is str, but .* takes float32"),
    ):
        with pytest.raises(DataError, match=said):
            open_source(str(unread), [spec], image_options=options)
    # a float into a narrower float, an integer into a wider one: cast without loss, as before
    open_source(str(unread), [TensorSpec("x", ("n", 3, 8, 8), "float16")], image_options={})
    open_source(str(unread), [TensorSpec("x", ("n", 3, 8, 8), "int16")], image_options={"dtype": "uint8"})
    # undeclared: the pixels as stored in the input's own dtype when they fit it, else refused
    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    depth = np.full((8, 8), 40000, np.uint16)
    Image.fromarray(pixels).save(folder / "a.png")
    Image.fromarray(depth).save(folder / "b.png")
    u16 = TensorSpec("x", ("n", 1, 8, 8), "uint16")
    source = open_source(str(folder), [u16], batch_size=2)
    x = next(iter(source))["x"]
    assert x.dtype == np.uint16 and np.array_equal(x[0, 0], pixels) and np.array_equal(x[1, 0], depth)
    assert "as stored" in (source.guessed() or "")
    gray_i8 = TensorSpec("x", ("n", 1, 8, 8), "int8")
    said = r"a\.png holds values 0\.\.255, which input 'x' .*int8 cannot take as stored: declare the"
    with pytest.raises(DataError, match=rf"{said} preprocessing's dtype.*\(--preprocess FILE\)"):
        open_source(str(folder), [gray_i8])
    with pytest.raises(DataError, match=r"b\.png holds values 0\.\.65535, which input 'x' .*uint8 cannot"):
        open_source(str(folder), [TensorSpec("x", ("n", 1, 8, 8), "uint8")])  # clipped to 255 before


def test_an_integer_dtype_declared_for_a_float_input_is_refused_before_any_image_is_read(
    tmp_path: Path,
) -> None:
    """dtype = "int8" for a float32 input was taken: the pixels were clipped at 127 (55 % of a photo's
    values were exactly 127) and fed as floats. A float input takes a float dtype; the declared integer
    dtypes an integer input takes, and floats for a float16 input, still pass."""
    unread = tmp_path / "unread"
    unread.mkdir()
    (unread / "a.png").write_bytes(b"not a png")
    f32 = TensorSpec("x", ("n", 3, 8, 8), "float32")
    for dtype in ("int8", "uint8", "int32"):
        said = rf"preprocess\.dtype is {dtype}, but input 'x' x\[n,3,8,8\]:float32 takes float32: set dtype"
        with pytest.raises(DataError, match=said):
            open_source(str(unread), [f32], image_options={"resize": [8, 8], "dtype": dtype})
    for spec, dtype in ((f32, "float64"), (TensorSpec("x", ("n", 3, 8, 8), "float16"), "float32")):
        open_source(str(unread), [spec], image_options={"dtype": dtype})
    for wanted in ("int8", "int16"):
        open_source(str(unread), [TensorSpec("x", ("n", 3, 8, 8), wanted)], image_options={"dtype": "int8"})


def test_a_4d_string_input_is_refused_as_string_before_any_image_is_read(tmp_path: Path) -> None:
    """An image folder for a 4-D string input passed the check before reading (NumPy casts anything
    to object), and was refused only at the first batch, after its images were read; the check's
    refusal, reached, said "takes object", NumPy's name, where every other listing says string."""
    unread = tmp_path / "unread"
    unread.mkdir()
    (unread / "a.png").write_bytes(b"not a png")
    text = TensorSpec("s", ("n", 3, 8, 8), "object")
    said = r"input 's' s\[n,3,8,8\]:string takes string: images cannot feed it"
    for options in (None, {}, {"dtype": "uint8", "scale": 1.0}):
        with pytest.raises(DataError, match=said) as got:
            open_source(str(unread), [text], image_options=options)
        assert "object" not in str(got.value)


def test_mean_of_another_length_exits_2_in_one_line_in_analyze_and_calibrate(
    tmp_path: Path, digits: Digits
) -> None:
    """numpy's broadcast ValueError was a traceback in calibrate and, in analyze, the wrong message
    "ONNX Runtime cannot run ... on the data"."""
    folder = _images(tmp_path, digits, 2)
    prep = tmp_path / "prep.toml"
    prep.write_text('[preprocess]\ncolor = "gray"\nmean = [0.25, 0.25]\n')
    ref = digits.onnx_path
    result = run_cli("analyze", ref, "--data", folder, "--preprocess", prep)
    assert_clean_input_error(result, "preprocess.mean has 2 values", "input 'input'")
    out = tmp_path / "o"
    result = run_cli("calibrate", ref, "--data", folder, "--preprocess", prep, "-o", out)
    assert_clean_input_error(result, "preprocess.mean has 2 values")
    assert files_under(out) == set()


def _said(stderr: str, what: str) -> list[str]:
    return [line for line in stderr.splitlines() if what in line]


def test_the_undeclared_preprocessing_is_declared_with_the_commands_own_option(
    tmp_path: Path, digits: Digits
) -> None:
    """build's advice named --preprocess FILE, which build does not have (its option is
    --calib-preprocess), and run's named command-line options a config cannot give."""
    _images(tmp_path, digits, 8)
    ref = digits.onnx_path
    built = run_cli(
        "build", ref, "--precision", "int8", "--calib-data", tmp_path / "imgs", "--calib-samples", "8",
        "-o", tmp_path / "o",
    )  # fmt: skip
    assert built.code == 0, built.stderr
    said = _said(built.stderr, "no preprocessing declared")
    assert said and all(line.endswith("declare them (--calib-preprocess FILE)") for line in said), said
    compared = run_cli("compare", ref, ref, "--data", tmp_path / "imgs")
    said = _said(compared.stderr, "no preprocessing declared")
    assert said and all(line.endswith("declare them (--preprocess FILE)") for line in said), said
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        f'workdir = "work"\n[model]\nsource = "{ref}"\n[build]\nprecisions = ["int8"]\n'
        '[calibration]\ndata = "imgs"\nsamples = 8\n[compare]\ndata = "imgs"\nsamples = 8\n'
        "[profile]\nenabled = false\n"
    )
    ran = run_cli("run", config)
    assert ran.code == 0, ran.stderr
    said = _said(ran.stderr, "no preprocessing declared")
    assert len(said) >= 2, ran.stderr  # the calibration data's and the compare data's
    assert all(line.endswith("declare them ([calibration] preprocess)") for line in said), said


def test_a_huge_image_is_read_without_pillows_warning_and_a_bomb_is_refused_in_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's DecompressionBombWarning (over 89 million pixels) came out raw on stderr, and its
    error (over twice that) as "cannot read image ... DecompressionBombError". Here the limit is
    100 pixels, not 89 million."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(np.zeros((10, 15), np.uint8)).save(folder / "a.png")  # 150 pixels: warned by Pillow
    spec = TensorSpec("x", ("n", 1, 10, 15), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning fails the read
        feeds = list(open_source(str(folder), [spec]))
    assert len(feeds) == 1
    Image.fromarray(np.zeros((10, 21), np.uint8)).save(folder / "a.png")  # 210 pixels: refused
    with pytest.raises(DataError, match=r"image .*a\.png is too large: 210 pixels, more than the 200 pixels"):
        list(open_source(str(folder), [TensorSpec("x", ("n", 1, 10, 21), "float32")]))


def test_letterbox_of_an_image_one_pixel_high_keeps_one_row(tmp_path: Path) -> None:
    """400x1 into 32x32 is 32x0.08: its height rounded to 0, and Pillow's "height and width must be
    > 0" was said as an unreadable image."""
    folder = tmp_path / "thin"
    folder.mkdir()
    Image.fromarray(np.full((1, 400, 3), 200, np.uint8)).save(folder / "line.png")
    spec = TensorSpec("x", ("n", 3, 32, 32), "float32")
    x = next(iter(open_source(str(folder), [spec], image_options={"resize": [32, 32], "letterbox": True})))
    assert np.count_nonzero(np.isclose(x["x"][0, 0], 200 / 255).all(axis=1)) == 1  # one row of the image


def test_an_input_with_no_image_channel_axis_is_told_what_declaration_helps(tmp_path: Path) -> None:
    """The advice named [calibration.preprocess], a config's table, in compare, whose option is
    --preprocess; and it was given for 4 channels, which no preprocessing makes."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    dynamic = TensorSpec("x", ("n", "c", "h", "w"), "float32")
    with pytest.raises(DataError, match=r"cannot tell the channel axis; .* \(--calib-preprocess FILE\)$"):
        open_source(str(folder), [dynamic], declare_preprocess="--calib-preprocess FILE")
    rgba = TensorSpec("x", (1, 4, 32, 48), "float32")
    with pytest.raises(DataError, match=r"takes 4 on axis 1 and 48 on axis 3, .* as \.npz/\.npy$"):
        open_source(str(folder), [rgba])


def test_images_beside_class_subfolders_say_the_subfolders_were_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    (folder / "cat").mkdir(parents=True)
    (folder / ".cache").mkdir()
    for where in (folder / "top.png", folder / "cat" / "1.png", folder / ".cache" / "2.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(where)
    spec = TensorSpec("x", ("n", 1, 8, 8), "float32")
    source = open_source(str(folder), [spec], image_options={"color": "gray"})
    assert [f["name"] for f in source.describe()["files"]] == ["top.png"]
    said = f"data folder {folder} holds 1 image file(s) beside subfolders of images (cat/): the top-level"
    assert source.guessed() == f"{said} images were read, the subfolders were not"
    (folder / "cat" / "1.png").unlink()  # an empty class folder, or a hidden one: nothing to say
    assert open_source(str(folder), [spec], image_options={"color": "gray"}).guessed() is None


def test_a_folder_of_no_image_this_reads_names_the_suffixes_it_reads(tmp_path: Path) -> None:
    folder = tmp_path / "gifs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.gif")
    said = r"holds no \.npz, \.npy or image files \(\.png, \.jpg, .*\.tiff\), nor do its subfolders"
    with pytest.raises(DataError, match=said):
        open_source(str(folder), [TensorSpec("x", ("n", 1, 8, 8), "float32")])
