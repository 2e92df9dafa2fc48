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


def test_unreadable_image_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    spec = TensorSpec("x", ("n", 3, 8, 8), "float32")
    with pytest.raises(DataError, match="cannot read image"):
        list(open_source(str(folder), [spec]))
