"""Image folders as a data source: decode with Pillow, then a declared preprocessing.

The preprocessing (resize, center crop, RGB/BGR/grayscale, scale, mean/std, NCHW/NHWC, dtype) is
part of the data's identity: it is in ``describe()``, so it enters calibration cache keys and
manifests, and a change of mean/std recalibrates. Declared in the config as a table, e.g.::

    [calibration.preprocess]
    resize = 256          # shorter side, or [height, width]
    center_crop = 224     # or [height, width]
    color = "rgb"         # rgb | bgr | gray
    scale = 0.00392156862745098
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    layout = "nchw"       # nchw | nhwc
    dtype = "float32"
    letterbox = false     # true: fit into resize = [h, w] keeping the aspect ratio, padded with 114

Without a declaration, the size, channels and layout come from the model's input shape and
pixels are scaled to [0, 1] (16-bit ones too), or go in as stored for an integer input that can hold
them (uint8, uint16; refused otherwise); the report records what was used. Into an integer dtype
values are rounded and clipped, not wrapped.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from calibration.atomic import sha256_file
from calibration.errors import DataError
from calibration.feeds import (
    DataSource,
    Feed,
    _check_shape,
    join_notes,
    left_out,
    rebatch,
    rest_not_read,
    sample_limit,
    static_batch,
)
from calibration.modelinfo import TensorSpec, type_name
from calibration.ortvalues import is_float_dtype

COLORS = ("rgb", "bgr", "gray")
LETTERBOX_PAD = 114  # letterbox = true: Ultralytics' grey
# one-channel modes of more than 8 bits (16-bit PNG depth maps, 32-bit TIFF): read at full range
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
SIXTEEN_BIT = 1.0 / 65535.0  # an undeclared preprocessing's scale for 16-bit images: [0, 1] as for 8 bits
LAYOUTS = ("nchw", "nhwc")
# the largest image side a preprocessing may make: one float32 RGB image of 16384x16384 is 3 GiB
# already (resize = 99999 had the process killed for its memory before the first batch was checked)
MAX_SIDE = 16384


def _pair(value: Any, field_name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise DataError(f"preprocess.{field_name}: expected an integer or [height, width], got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise DataError(f"preprocess.{field_name} must be positive, got {value}")
        return (_side(value, field_name), value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and v > 0 for v in value)
    ):
        return (_side(int(value[0]), field_name), _side(int(value[1]), field_name))
    raise DataError(f"preprocess.{field_name}: expected an integer or [height, width], got {value!r}")


def _side(value: int, field_name: str) -> int:
    if value > MAX_SIDE:
        raise DataError(f"preprocess.{field_name}: {value} is more than {MAX_SIDE} pixels a side")
    return value


def _floats(value: Any, field_name: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise DataError(f"preprocess.{field_name} is an empty list: give 1 value or one per channel")
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise DataError(
            f"preprocess.{field_name}: expected a number or a list of numbers, got {value!r}"
        ) from None


@dataclass(frozen=True)
class Preprocess:
    resize: tuple[int, int] | None = None  # (h, w); resize_shorter: only the shorter side is given
    resize_shorter: int | None = None
    center_crop: tuple[int, int] | None = None
    color: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "nchw"
    dtype: str = "float32"
    # letterbox: resize into ``resize`` keeping the aspect ratio, centred, the rest padded with this
    # pixel value (Ultralytics' YOLO input: 114); None stretches to ``resize``
    letterbox: int | None = None
    # the scale of the images of more than 8 bits (WIDE_MODES) when it is not ``scale``: an undeclared
    # preprocessing of a folder that mixes 8- and 16-bit images scales each by its own depth (one
    # scale from the first image fed 16-bit pixels of 40000 as 156.9); None: ``scale`` for all
    wide_scale: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        known = {"resize", "center_crop", "color", "scale", "mean", "std", "layout", "dtype", "letterbox"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(
                f"unknown preprocess option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        resize = data.get("resize")
        kwargs: dict[str, Any] = {}
        if isinstance(resize, int) and not isinstance(resize, bool):
            if resize < 1:
                raise DataError(f"preprocess.resize must be positive, got {resize}")
            kwargs["resize_shorter"] = _side(resize, "resize")
        else:
            kwargs["resize"] = _pair(resize, "resize")
        kwargs["center_crop"] = _pair(data.get("center_crop"), "center_crop")
        color = str(data.get("color", "rgb")).lower()
        if color not in COLORS:
            raise DataError(f"preprocess.color must be one of {', '.join(COLORS)}, got {color!r}")
        layout = str(data.get("layout", "nchw")).lower()
        if layout not in LAYOUTS:
            raise DataError(f"preprocess.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        dtype = str(data.get("dtype", "float32"))
        try:
            np.dtype(dtype)
        except TypeError:
            raise DataError(f"preprocess.dtype: unknown dtype {dtype!r}") from None
        std = _floats(data.get("std", 1.0), "std")
        if any(s == 0 for s in std):
            raise DataError("preprocess.std must not contain 0")
        mean = _floats(data.get("mean", 0.0), "mean")
        for field_name, values in (("mean", mean), ("std", std)):  # NaN or Inf makes every input NaN
            if not all(math.isfinite(v) for v in values):
                raise DataError(f"preprocess.{field_name} must be finite numbers, got {list(values)}")
        with np.errstate(over="ignore", divide="ignore"):  # to_array divides the pixels by std in float32
            tiny = [s for s in std if not np.isfinite(np.float32(1) / np.float32(s))]
        if tiny:  # numpy said "overflow encountered in divide" and every input was Inf
            raise DataError(f"preprocess.std {tiny[0]!r} is too close to 0: 1/std overflows float32")
        # pixels into an integer input are stored values, not [0, 1]
        given = data.get("scale", 1.0 / 255.0 if np.dtype(dtype).kind == "f" else 1.0)
        try:
            scale = float(given)
        except (TypeError, ValueError):  # a list, a table, a word
            raise DataError(f"preprocess.scale: expected a number, got {given!r}") from None
        if not math.isfinite(scale) or scale == 0:  # 0 made every input 0, and calibration ran on it
            raise DataError(f"preprocess.scale must be a finite number other than 0, got {given!r}")
        letterbox = data.get("letterbox", False)
        if letterbox is True:
            kwargs["letterbox"] = LETTERBOX_PAD
        elif isinstance(letterbox, int) and not isinstance(letterbox, bool) and 0 <= letterbox <= 255:
            kwargs["letterbox"] = letterbox
        elif letterbox is not False:
            raise DataError(f"preprocess.letterbox: expected true, false or a pad 0-255, not {letterbox!r}")
        if kwargs.get("letterbox") is not None and kwargs.get("resize") is None:
            raise DataError("preprocess.letterbox needs resize = [height, width], the box to fit images in")
        return cls(
            color=color,
            layout=layout,
            dtype=dtype,
            scale=scale,
            mean=mean,
            std=std,
            **kwargs,
        )

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def size(self) -> tuple[int, int] | None:
        """The (height, width) of every image it makes, None when that depends on the image (no
        resize, or the shorter side's only, without a center crop)."""
        return self.center_crop or self.resize

    def check_fits(self, spec: TensorSpec) -> None:
        """Refuse, before any image is read, a preprocessing whose arrays the model's input ``spec``
        cannot take: mean or std of another length than 1 or the input's channels (numpy's broadcast
        error came out of the first image), a channel count or an image size that its static dims
        refuse (every image was read before the batch's shape was: 54 s and 3 GB for resize =
        [4000, 4000] on a 16x16 input), a dtype it does not take (refused at the first batch, as if
        the data were wrong; an integer dtype for a float input, which clipped the pixels), a string input
        among them."""
        shape = spec.shape if spec.rank_known and len(spec.shape) == 4 else None
        axes = (1, 2, 3) if self.layout == "nchw" else (3, 1, 2)  # channels, height, width
        dims = [shape[a] if shape is not None else None for a in axes]
        want_c, want_h, want_w = (d if isinstance(d, int) else None for d in dims)
        made = self.channels
        per_channel = {len(self.mean), len(self.std)} - {1}
        where = f"input '{spec.name}' {spec.describe()}"
        made_dtype, want_dtype = np.dtype(self.dtype), spec.np_dtype
        # the casts check_feed (calibration/feeds.py) makes, but from integers into integers only those
        # that keep every value (the values were clipped to this dtype's range: a narrower one would refuse
        # them at the first batch), and into a float input floats only: an integer dtype clips the pixels
        # to its range (int8 at 127) and rounds them, which no float input asks for
        both_integers = made_dtype.kind in "iu" and want_dtype.kind in "iu"
        if made_dtype != want_dtype and (
            not np.can_cast(made_dtype, want_dtype, "safe" if both_integers else "same_kind")
            or (made_dtype.kind == "f" and want_dtype.kind in "iub")
            or (is_float_dtype(want_dtype) and made_dtype.kind != "f")
            or want_dtype.kind == "O"  # text, which NumPy holds as object: it casts anything to object
        ):
            fix = f'set dtype = "{want_dtype.name}"' if want_dtype.kind in "iuf" else "images cannot feed it"
            takes = type_name(want_dtype.name)
            raise DataError(f"preprocess.dtype is {self.dtype}, but {where} takes {takes}: {fix}")
        if want_c is not None and want_c != made and not (made == 1 and per_channel == {want_c}):
            raise DataError(
                f"the preprocessing makes {made}-channel ({self.color}) {self.layout.upper()} images, "
                f"but {where} takes {want_c} on that axis: set color, or layout"
            )
        channels = want_c or made
        for field_name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                one_per = f"or {channels}, one per channel" if channels > 1 else "as it has 1 channel"
                raise DataError(
                    f"preprocess.{field_name} has {len(values)} values: give 1 ({one_per} of {where})"
                )
        size = self.size()
        if size is not None and (want_h or size[0], want_w or size[1]) != size:
            how = "center_crop" if self.center_crop else "resize"
            raise DataError(
                f"the preprocessing makes {size[0]}x{size[1]} images ({how} = [{size[0]}, {size[1]}]), "
                f"but {where} takes {want_h or '?'}x{want_w or '?'}: set resize or center_crop to match"
            )

    def describe(self) -> dict[str, Any]:
        found = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key in ("letterbox", "wide_scale"):  # as before they existed when unused: the same cache keys
            if found[key] is None:
                del found[key]
        return found

    def apply(self, path: Path) -> np.ndarray:
        """One image -> an array of shape (1, C, H, W) or (1, H, W, C)."""
        try:
            from PIL import Image, ImageOps
        except ImportError:
            raise DataError("image folders need Pillow: pip install pillow") from None
        try:
            with _open(path) as opened:
                # upright as shown, by its EXIF Orientation: a phone stores a portrait photo
                # landscape with Orientation 6, and Ultralytics' cv2.imread turns it too
                upright = ImageOps.exif_transpose(opened)
                wide = upright.mode in WIDE_MODES
                if wide:  # converting to 8 bits would clip every value above 255
                    if self.color != "gray":
                        raise DataError(
                            f"{path}: a {upright.mode} image (one channel, more than 8 bits) for a "
                            f"{self.color.upper()} input: give the data as .npy/.npz, or declare "
                            # color = "gray" alone makes 1-channel images, which check_fits refuses
                            # for a 3-channel input; a mean of 3 values puts the gray on each channel
                            'color = "gray" with mean = [0, 0, 0] (the gray image on every channel; '
                            "any mean of 3 values)"
                        )
                    img = upright.convert("F")
                else:
                    img = upright.convert("L" if self.color == "gray" else "RGB")
                if self.resize_shorter:
                    # torchvision's Resize(N), which ImageNet models are trained with: the shorter
                    # side to N, the longer one N * long / short truncated (640x427 -> 383x256)
                    w, h = img.size
                    longer = int(self.resize_shorter * max(w, h) / min(w, h))
                    new = (self.resize_shorter, longer) if w <= h else (longer, self.resize_shorter)
                    if max(new) > MAX_SIDE:
                        raise DataError(
                            f"{path}: resize = {self.resize_shorter} makes this {w}x{h} image "
                            f"{new[0]}x{new[1]}, more than {MAX_SIDE} pixels a side"
                        )
                    img = img.resize(new, Image.Resampling.BILINEAR)
                elif self.resize and self.letterbox is not None:
                    img = _letterboxed(img, self.resize, self.letterbox)
                elif self.resize:
                    img = img.resize((self.resize[1], self.resize[0]), Image.Resampling.BILINEAR)
                if self.center_crop:
                    ch, cw = self.center_crop
                    w, h = img.size
                    if ch > h or cw > w:
                        raise DataError(f"{path}: image {w}x{h} is smaller than the center crop {cw}x{ch}")
                    # torchvision's CenterCrop: the offset is rounded, half to even (383 - 224 -> 80)
                    left, top = round((w - cw) / 2.0), round((h - ch) / 2.0)
                    img = img.crop((left, top, left + cw, top + ch))
                arr = np.asarray(img, dtype=np.float32)
        except DataError:
            raise
        except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ...
            raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.color == "bgr":
            arr = arr[:, :, ::-1]
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        scale = self.wide_scale if wide and self.wide_scale is not None else self.scale
        arr = ((arr * np.float32(scale) - mean) / std).astype(np.float32)
        if self.layout == "nchw":
            arr = arr.transpose(2, 0, 1)
        if np.dtype(self.dtype).kind in "iu":  # rounded and clipped: a cast alone truncates and wraps
            info = np.iinfo(self.dtype)  # (-1 -> 255)
            arr = np.clip(np.rint(arr), info.min, info.max)
        return np.ascontiguousarray(arr[None]).astype(self.dtype)


def _open(path: Path) -> Any:
    """Pillow's ``Image.open`` of ``path``, without the DecompressionBombWarning it printed raw on
    stderr for an image of more than 89 million pixels (a 12000x8000 photo is one, and is read), and
    with the error of one over twice that as one line that names the image."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow says the size in its message only
            pixels = f"{int(found.group(1)):,} pixels, " if found else ""
            limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise DataError(
                f"image {path} is too large: {pixels}more than the {limit:,} pixels Pillow reads "
                "(its guard against decompression bombs)"
            ) from None


def _letterboxed(img: Any, size: tuple[int, int], pad: int) -> Any:
    """``img`` resized to fit ``size`` (h, w) with its aspect ratio, centred on a canvas of ``pad``:
    the geometry of Ultralytics' LetterBox (auto=False, center=True), its rounding included. The
    resampling is Pillow's bilinear filter, as for every resize here; OpenCV's INTER_LINEAR, which
    Ultralytics uses, averages fewer pixels when it shrinks, so values differ slightly there."""
    from PIL import Image

    h, w = size
    ratio = min(h / img.height, w / img.width)
    # at least 1 pixel, as resize_shorter's: a 4000x1 image has a height of 0.008 in a 32x32 box
    new_w, new_h = max(1, round(img.width * ratio)), max(1, round(img.height * ratio))
    resized = img.resize((new_w, new_h), Image.Resampling.BILINEAR) if (new_w, new_h) != img.size else img
    top, left = round((h - new_h) / 2 - 0.1), round((w - new_w) / 2 - 0.1)
    fill: Any = (pad,) * len(img.getbands()) if len(img.getbands()) > 1 else pad
    canvas = Image.new(img.mode, (w, h), fill)
    canvas.paste(resized, (left, top))
    return canvas


def default_preprocess(
    spec: TensorSpec, files: Sequence[Path], declare: str = "--preprocess FILE"
) -> Preprocess:
    """Size, channels and layout from a 4-D image input's static shape; pixels scaled to [0, 1] by
    the bit depth of each of ``files`` (the images to be read), or as stored for an integer input
    that can hold them (refused otherwise).
    ``declare``: how the command declares a preprocessing, for the advice of a refusal."""
    shape = spec.shape
    if len(shape) != 4:
        raise DataError(
            f"input '{spec.name}' has shape {spec.describe()}: an image folder feeds 4-D inputs only"
        )
    if shape[1] in (1, 3):
        layout, c, h, w = "nchw", shape[1], shape[2], shape[3]
    elif shape[3] in (1, 3):
        layout, h, w, c = "nhwc", shape[1], shape[2], shape[3]
    elif isinstance(shape[1], int) and isinstance(shape[3], int):  # 4 channels (RGBA), say
        raise DataError(
            f"input '{spec.name}' {spec.describe()} takes {shape[1]} on axis 1 and {shape[3]} on axis 3, "
            "where an image folder gives 1 (gray) or 3 (RGB) channels: give the data as .npz/.npy"
        )
    else:
        raise DataError(
            f"input '{spec.name}' {spec.describe()}: cannot tell the channel axis; declare the "
            f"preprocessing's layout and size ({declare})"
        )
    size = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    color = "gray" if c == 1 else "rgb"
    if spec.np_dtype.kind in "iu":  # a model that takes the pixels themselves (many TFLite/TF exports)
        _check_stored(spec, files, declare)
        return Preprocess(resize=size, color=color, layout=layout, dtype=spec.np_dtype.name, scale=1.0)
    dtype = spec.dtype if spec.np_dtype.kind == "f" else "float32"
    scale, wide_scale = _depth_scales(files, declare)
    return Preprocess(
        resize=size, color=color, layout=layout, dtype=dtype, scale=scale, wide_scale=wide_scale
    )


def _depth_scales(files: Sequence[Path], declare: str) -> tuple[float, float | None]:
    """The ``scale`` and ``wide_scale`` that take each of ``files`` by its own bit depth (8 and 16
    bits to [0, 1], 32 bits as stored), for a preprocessing into a float input that declares no
    scale: 1/255 and None for a folder of 8-bit images; refused for 16- and 32-bit images together."""
    scales: dict[float, Path] = {}
    for path, mode in _modes(files).items():
        scales.setdefault(_default_scale(mode), path)
    eight = scales.pop(1.0 / 255.0, None)
    if len(scales) > 1:  # 16-bit and 32-bit images: no one scale for the wide ones
        (scale_a, a), (scale_b, b) = list(scales.items())[:2]
        raise DataError(
            f"{a} is a {_depth_words(scale_a)} image and {b} a {_depth_words(scale_b)} one: no one "
            f"scale takes both to [0, 1]; declare the preprocessing's scale ({declare})"
        )
    wide = next(iter(scales), None)
    if wide is None:
        return 1.0 / 255.0, None
    return (wide, None) if eight is None else (1.0 / 255.0, wide)


def _modes(files: Sequence[Path]) -> dict[Path, str]:
    """The Pillow mode of each of ``files``, from its header (no pixels are decoded); an unreadable
    one is left out, for :meth:`Preprocess.apply` to name when it comes to it."""
    found = {}
    for path in files:
        try:
            with _open(path) as opened:
                found[path] = opened.mode
        except Exception:
            continue
    return found


def _check_stored(spec: TensorSpec, files: Sequence[Path], declare: str) -> None:
    """Refuse, before any pixel is read, images whose values an integer input cannot take as
    stored (8-bit pixels for an int8 input, 16-bit ones for a uint8 input): they were clipped."""
    info = np.iinfo(spec.np_dtype)
    for path, mode in _modes(files).items():
        stored = _stored_range(mode)
        if stored is None or stored[0] < info.min or stored[1] > info.max:
            values = "float values" if stored is None else f"values {stored[0]}..{stored[1]}"
            raise DataError(
                f"{path} holds {values}, which input '{spec.name}' {spec.describe()} cannot take as "
                f"stored: declare the preprocessing's dtype, and the scale and mean that bring them "
                f"into its range ({declare})"
            )


def _stored_range(mode: str) -> tuple[int, int] | None:
    """The values an image of ``mode`` holds as read: 8 bits but for the WIDE_MODES, None for float."""
    if mode == "F":
        return None
    if mode.startswith("I;16"):
        return 0, 65535
    return (-(2**31), 2**31 - 1) if mode == "I" else (0, 255)


def _default_scale(mode: str) -> float:
    """An undeclared preprocessing's pixel scale for an image of ``mode``: 8-bit and 16-bit images
    to [0, 1], 32-bit integer or float ones as stored."""
    if mode.startswith("I;16"):
        return SIXTEEN_BIT
    return 1.0 if mode in WIDE_MODES else 1.0 / 255.0


def _depth_words(scale: float) -> str:
    return "16-bit" if scale == SIXTEEN_BIT else "32-bit" if scale == 1.0 else "8-bit"


def assumed_preprocess(spec: str, pre: Preprocess, declare: str = "--preprocess FILE") -> str:
    """What an image folder read without a declared preprocessing fed the model: a model trained
    on other pixel values (mean/std, BGR, [-1, 1]) is calibrated and compared on inputs it never
    sees, and nothing fails; so it is said. ``declare``: how the command that read the folder
    declares a preprocessing (build's --calib-preprocess, a config's [calibration] preprocess)."""
    size = f"resized to {pre.resize[0]}x{pre.resize[1]}" if pre.resize else "at their own size"
    scaled = {1.0: "as stored", SIXTEEN_BIT: "16-bit, scaled to [0, 1]"}.get(pre.scale, "scaled to [0, 1]")
    if pre.wide_scale is not None:
        wide = "16-bit ones scaled to [0, 1]" if pre.wide_scale == SIXTEEN_BIT else "32-bit ones as stored"
        scaled = f"8-bit ones scaled to [0, 1] and {wide}"
    return (
        f"image folder {spec}: no preprocessing declared, so the images went in {pre.color.upper()}, "
        f"{scaled} without mean/std, {pre.layout.upper()}, {size}; if the model was trained "
        f"on other values, declare them ({declare})"
    )


def _size_advice(pre: Preprocess, spec: TensorSpec) -> str:
    """What makes images of ``pre``, which keeps their own size, the size input ``spec`` fixes."""
    axes = (2, 3) if pre.layout == "nchw" else (1, 2)
    dims = [spec.shape[a] if len(spec.shape) == 4 else None for a in axes]
    box = f"[{dims[0]}, {dims[1]}]" if all(isinstance(d, int) for d in dims) else "[height, width]"
    if pre.resize_shorter:
        return f"resize = {pre.resize_shorter} sets the shorter side only; declare center_crop = {box} too"
    return f"the preprocessing declares no resize, so images keep their own size; declare resize = {box}"


def image_folder_source(
    spec: str,
    files: Sequence[Path],
    inputs: Sequence[TensorSpec],
    batch_size: int,
    samples: int | None,
    options: Preprocess | Mapping[str, Any] | None,
    root: Path | None = None,
    declare: str = "--preprocess FILE",
) -> DataSource:
    """A source over image files in name order, for a model with one image input; ``root``: the
    folder they are in, or under (each is named by its path from there); ``declare``: how the
    user declares a preprocessing, for the note when none was (:func:`assumed_preprocess`)."""
    if len(inputs) != 1:
        raise DataError(
            f"image folder {spec} feeds single-input models only; the model has "
            f"{', '.join(s.name for s in inputs)}"
        )
    if not files:
        raise DataError(f"image folder {spec} is empty")
    note = None
    limit = sample_limit(samples, inputs)
    offered = len(files) if samples is None else min(samples, len(files))  # an image is a sample
    static = static_batch(inputs)
    chosen = list(files[:limit] if limit else files)
    if static and len(chosen) >= static:  # whole batches: the rest is not read (rebatch), nor keyed
        chosen = chosen[: len(chosen) - len(chosen) % static]
    if options is None:
        pre = default_preprocess(inputs[0], chosen, declare)
        note = assumed_preprocess(spec, pre, declare)
    elif isinstance(options, Preprocess):
        pre = options
    else:
        pre = Preprocess.from_dict(options)
        if "scale" not in options and np.dtype(pre.dtype).kind == "f":
            # the default scale, 1/255, is 8-bit's: a depth model declared with its mean and std
            # only took its 16-bit PNGs at up to 257; each image by its own depth, as undeclared
            scale, wide_scale = _depth_scales(chosen, declare)
            pre = replace(pre, scale=scale, wide_scale=wide_scale)
    pre.check_fits(inputs[0])
    name = inputs[0].name

    def made(path: Path) -> np.ndarray:
        arr = pre.apply(path)
        if pre.size() is None:  # images of their own size, which an input fixing its size refuses:
            # refused by the batch they made ("samples of different shapes cannot share a batch ...
            # or a batch size of 1", which then refused the first image), not named with its cure
            try:
                _check_shape(arr, inputs[0], str(path), batch_axis=0)
            except DataError as exc:
                raise DataError(f"{exc}: {_size_advice(pre, inputs[0])}") from None
        return arr

    def make() -> Iterator[Feed]:
        return rebatch(({name: made(p)} for p in chosen), batch_size, inputs, samples)

    details = {
        "files": [
            {"name": p.relative_to(root).as_posix() if root else p.name, "sha256": sha256_file(p)}
            for p in chosen
        ],
        "batch_size": static or batch_size,
        "samples": len(chosen),  # as an array file's: the samples read
        **left_out(inputs, offered, len(chosen)),
        "preprocess": pre.describe(),
    }
    note = join_notes(rest_not_read(spec, inputs, offered, len(chosen)), note)
    return DataSource("images", spec, inputs, make, details, note=note)
