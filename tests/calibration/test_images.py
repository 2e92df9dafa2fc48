"""Image folders: Pillow decoding plus a declared preprocessing that enters the data's identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.errors import DataError
from calibration.images import Preprocess
from calibration.modelinfo import TensorSpec
from calibration.sources import open_source

Image = pytest.importorskip("PIL.Image")


def _folder(tmp_path: Path, count: int = 5) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        pixels[0, 0] = (255, 0, 0)  # a red corner pixel, to tell RGB from BGR
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def test_image_folder_applies_resize_crop_color_scale_mean_std_and_layout(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    spec = TensorSpec("images", ("n", 32, 32, 3), "float32")
    pre = {
        "resize": [40, 60],
        "center_crop": 32,
        "color": "bgr",
        "scale": 1 / 255,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "layout": "nhwc",
    }
    source = open_source(str(folder), [spec], batch_size=2, samples=4, image_options=pre)
    feeds = list(source)
    assert [f["images"].shape for f in feeds] == [(2, 32, 32, 3), (2, 32, 32, 3)]
    first = np.asarray(Image.open(folder / "img0.png").convert("RGB"), np.float32)[4:36, 14:46, ::-1]
    np.testing.assert_allclose(feeds[0]["images"][0], (first / 255 - 0.5) / 0.5, atol=1e-5)
    described = source.describe()
    assert described["preprocess"]["color"] == "bgr" and described["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert len(described["files"]) == 4 and all(len(f["sha256"]) == 64 for f in described["files"])


def test_without_a_declaration_the_model_input_decides_size_and_layout(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 2)
    spec = TensorSpec("x", ("n", 1, 16, 16), "float32")
    feed = next(iter(open_source(str(folder), [spec])))
    assert feed["x"].shape == (1, 1, 16, 16) and feed["x"].min() >= 0.0 and feed["x"].max() <= 1.0


def test_bad_preprocessing_is_refused_with_the_option_named() -> None:
    with pytest.raises(DataError, match=r"preprocess\.color"):
        Preprocess.from_dict({"color": "cmyk"})
    with pytest.raises(DataError, match="unknown preprocess option"):
        Preprocess.from_dict({"mean_rgb": [0, 0, 0]})
    with pytest.raises(DataError, match=r"preprocess\.std must not contain 0"):
        Preprocess.from_dict({"std": [1, 0, 1]})
    # each of these made every input 0 or NaN, and calibration ran on it (exit 0)
    for options, said in (
        ({"scale": 0}, r"preprocess\.scale must be a finite number other than 0, got 0"),
        ({"scale": float("nan")}, r"preprocess\.scale must be a finite number other than 0, got nan"),
        ({"scale": float("inf")}, r"preprocess\.scale must be a finite number"),
        ({"scale": [1, 2]}, r"preprocess\.scale: expected a number"),
        ({"scale": "x"}, r"preprocess\.scale: expected a number, got 'x'"),
        ({"std": [1, float("inf"), 1]}, r"preprocess\.std must be finite numbers, got \[1\.0, inf, 1\.0\]"),
        ({"mean": float("nan")}, r"preprocess\.mean must be finite numbers"),
        ({"std": [1e-40, 1, 1]}, r"preprocess\.std 1e-40 is too close to 0: 1/std overflows float32"),
        ({"std": [1, -1e-50]}, r"preprocess\.std -1e-50 is too close to 0"),  # 0 in float32
    ):
        with pytest.raises(DataError, match=said):
            Preprocess.from_dict(options)
    assert Preprocess.from_dict({"scale": -1.0}).scale == -1.0  # a sign flip is a preprocessing


def test_unreadable_image_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    spec = TensorSpec("x", ("n", 3, 8, 8), "float32")
    with pytest.raises(DataError, match="cannot read image"):
        list(open_source(str(folder), [spec]))


def _unreadable(tmp_path: Path) -> Path:
    """A folder of files named like images that are not: a check made before any image is read
    refuses before Pillow's "cannot read image"."""
    folder = tmp_path / "unread"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.png").write_bytes(b"not a png")
    return folder


def test_mean_or_std_of_another_length_than_the_channels_is_refused_before_any_image_is_read(
    tmp_path: Path,
) -> None:
    """mean = [0.5, 0.5] gave numpy's 'operands could not be broadcast together' on the first image."""
    folder = str(_unreadable(tmp_path))
    rgb = TensorSpec("x", ("N", 3, 16, 16), "float32")
    for field in ("mean", "std"):
        for values in ([0.5, 0.5], [0.5] * 4):
            with pytest.raises(
                DataError, match=rf"preprocess\.{field} has {len(values)} values: give 1 \(or 3"
            ):
                open_source(folder, [rgb], image_options={"resize": 16, field: values})
        with pytest.raises(DataError, match=rf"preprocess\.{field} is an empty list"):
            Preprocess.from_dict({field: []})
    gray = TensorSpec("x", ("N", 1, 16, 16), "float32")
    with pytest.raises(DataError, match=r"has 3 values: give 1 \(as it has 1 channel"):
        open_source(folder, [gray], image_options={"color": "gray", "mean": [0.4, 0.5, 0.6]})
    # one value, or one per channel of the input: a gray image spread over 3 channels too
    open_source(folder, [rgb], image_options={"resize": [16, 16], "mean": [0.4, 0.5, 0.6], "std": 0.5})
    open_source(folder, [rgb], image_options={"resize": [16, 16], "color": "gray", "mean": [0.4, 0.5, 0.6]})


def test_a_preprocessing_the_static_input_cannot_take_is_refused_before_any_image_is_read(
    tmp_path: Path,
) -> None:
    """resize = [4000, 4000] on a 16x16 input read every image (54 s, 3 GB) before the batch's shape
    was refused; a channel count or layout that does not fit, likewise."""
    folder = str(_unreadable(tmp_path))
    spec = TensorSpec("x", ("N", 3, 16, 16), "float32")
    cases = {
        "makes 4000x4000 images": {"resize": [4000, 4000]},
        "makes 12x12 images": {"resize": 20, "center_crop": 12},
        "makes 1-channel": {"resize": [16, 16], "color": "gray"},
        "3-channel \\(rgb\\) NHWC images": {"resize": [16, 16], "layout": "nhwc"},
    }
    for message, options in cases.items():
        with pytest.raises(DataError, match=message):
            open_source(folder, [spec], image_options=options)
    # what fits, or what depends on each image (the shorter side only), is left to the batch check
    open_source(folder, [spec], image_options={"resize": 20, "center_crop": 16})
    open_source(folder, [spec], image_options={"resize": 16})
    open_source(folder, [TensorSpec("x", ("N", 3, "h", "w"), "float32")], image_options={"resize": [40, 40]})


def test_a_resize_beyond_16384_pixels_a_side_is_refused(tmp_path: Path) -> None:
    """resize = 99999 had the process killed for its memory."""
    for options in ({"resize": 99999}, {"resize": [16, 20000]}, {"center_crop": 16385}):
        with pytest.raises(DataError, match="more than 16384 pixels a side"):
            Preprocess.from_dict(options)
    Preprocess.from_dict({"resize": 16384})
    # the shorter side within it, the longer one of a 40x60 image not
    spec = TensorSpec("x", ("N", 3, "h", "w"), "float32")
    source = open_source(str(_folder(tmp_path, 1)), [spec], image_options={"resize": 12000})
    with pytest.raises(DataError, match="makes this 60x40 image 18000x12000, more than 16384"):
        next(iter(source))


def test_resize_of_the_shorter_side_and_center_crop_are_torchvisions(tmp_path: Path) -> None:
    """resize = N with center_crop copies torchvision's Resize(N) + CenterCrop (README's ImageNet
    example), which truncates the longer side (640x427 -> 383x256, not 384) and rounds the crop
    offset ((383 - 224) / 2 -> 80, not 79)."""
    folder = tmp_path / "photo"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (427, 640, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "p.png")
    spec = TensorSpec("x", ("n", 3, 224, 224), "float32")
    pre = {"resize": 256, "center_crop": 224, "scale": 1.0}
    x = next(iter(open_source(str(folder), [spec], image_options=pre)))["x"][0].transpose(1, 2, 0)
    resized = Image.fromarray(pixels).resize((383, 256), Image.Resampling.BILINEAR)
    want = np.asarray(resized.crop((80, 16, 304, 240)), np.float32)
    np.testing.assert_array_equal(x, want)
    # portrait: the longer side is the height
    portrait = Image.fromarray(pixels.transpose(1, 0, 2).copy())  # 427 wide, 640 high
    portrait.save(folder / "p.png")
    x = next(iter(open_source(str(folder), [spec], image_options=pre)))["x"][0].transpose(1, 2, 0)
    resized = portrait.resize((256, 383), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(x, np.asarray(resized.crop((16, 80, 240, 304)), np.float32))
    # without a resize: an offset of 7.5 rounds to 8
    Image.fromarray(pixels[:20, :35]).save(folder / "p.png")
    spec = TensorSpec("x", ("n", 3, 20, 20), "float32")
    x = next(iter(open_source(str(folder), [spec], image_options={"center_crop": 20, "scale": 1.0})))["x"]
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), pixels[:20, 8:28])
