"""Realistic text for the benchmarks: words, DejaVu fonts, rendered text lines and PaddleOCR's
line preprocessing, shared by benchmarks/real_models.py and benchmarks/int8_calibration.py.

Written by hand: rendering a line with Pillow is a few calls; no package ships an OCR line generator
that runs offline without its own model downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FONTS = "/usr/share/fonts/truetype/dejavu"  # Debian's fonts-dejavu-core; Pillow's default font otherwise

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "edge",
    "deploy",
    "tensor",
    "calibration",
    "jetson",
    "orin",
    "model",
    "accuracy",
    "latency",
    "energy",
    "2024",
    "INT8",
    "entropy",
    "bundle",
    "engine",
    "power",
    "thermal",
    "invoice",
    "total",
    "amount",
    "paid",
    "date",
    "number",
    "order",
    "shipping",
    "address",
    "street",
    "city",
    "phone",
    "42",
    "17.50",
    "9:30",
    "receipt",
    "customer",
    "item",
    "price",
]


def font(size: int, rng: np.random.Generator) -> Any:
    from PIL import ImageFont

    names = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf"]
    path = Path(FONTS) / names[int(rng.integers(len(names)))]
    if not path.is_file():
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(path), size)


def phrase(rng: np.random.Generator, lo: int = 2, hi: int = 5) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))


def text_line(rng: np.random.Generator, height: int, flip: bool = False) -> Any:
    from PIL import Image, ImageDraw

    text = phrase(rng)
    face = font(int(rng.integers(height // 2, height - 8)), rng)
    bg = tuple(int(v) for v in rng.integers(170, 256, 3))
    img = Image.new("RGB", (int(face.getlength(text)) + 16, height), bg)
    fg = tuple(int(v) for v in rng.integers(0, 90, 3))
    ImageDraw.Draw(img).text((8, height // 2), text, fill=fg, font=face, anchor="lm")
    return img.rotate(180) if flip else img


def line_tensor(img: Any, height: int, width: int) -> np.ndarray:
    """PaddleOCR's recognizer/classifier preprocessing: resize to height, pad right, (x/255-0.5)/0.5."""
    from PIL import Image

    w = min(width, int(np.ceil(height * img.width / img.height)))
    arr = (np.asarray(img.resize((w, height), Image.Resampling.BILINEAR), np.float32) / 255 - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = arr.transpose(2, 0, 1)
    return out
