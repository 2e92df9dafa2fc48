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


PAGE_W, PAGE_H = 608, 800  # PP-Layout's (PicoDet's) input size


def page(rng: np.random.Generator) -> Any:
    """A document page as a layout detector sees one: a header, then titles, paragraphs, tables,
    figures with captions and equations in one or two columns, and a page number (RGB image)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (PAGE_W, PAGE_H), tuple(int(v) for v in rng.integers(232, 256, 3)))
    draw = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    margin = int(rng.integers(28, 64))
    small = font(int(rng.integers(10, 13)), rng)
    draw.text((margin, 14), phrase(rng, 3, 7), fill=ink, font=small)  # running header
    draw.line((margin, 34, PAGE_W - margin, 34), fill=ink, width=1)
    columns = 2 if rng.uniform() < 0.35 else 1
    gap = 20
    width = (PAGE_W - 2 * margin - (columns - 1) * gap) // columns
    for col in range(columns):
        x0, y = margin + col * (width + gap), 48 + (int(rng.integers(0, 40)) if col == 0 else 0)
        while y < PAGE_H - 90:
            kind = rng.choice(
                ["paragraph", "title", "table", "figure", "equation"], p=[0.5, 0.15, 0.13, 0.13, 0.09]
            )
            y = _block(draw, str(kind), rng, x0, y, width, ink) + int(rng.integers(10, 24))
    number = str(int(rng.integers(1, 300)))
    draw.text((PAGE_W // 2 - 6 * len(number) // 2, PAGE_H - 32), number, fill=ink, font=small)
    return img


def _block(draw: Any, kind: str, rng: np.random.Generator, x0: int, y: int, width: int, ink: Any) -> int:
    """Draws one layout block at (x0, y) within ``width``; returns the y below it."""
    bottom = PAGE_H - 70
    if kind == "title":
        big = font(int(rng.integers(20, 30)), rng)
        draw.text((x0, y), phrase(rng, 2, 5).title(), fill=ink, font=big)
        return y + int(big.size * 1.3)
    if kind == "paragraph":
        body = font(int(rng.integers(11, 15)), rng)
        step = int(body.size * rng.uniform(1.3, 1.6))
        for i in range(int(rng.integers(3, 10))):
            if y + step > bottom:
                break
            indent = 16 if i == 0 else 0
            words, line = list(rng.choice(WORDS, 40)), ""
            while words and draw.textlength(line + " " + words[0], font=body) < width - indent:
                line = (line + " " + str(words.pop(0))).strip()
            draw.text((x0 + indent, y), line, fill=ink, font=body)
            y += step
        return y
    if kind == "table":
        rows, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
        cell_h = int(rng.integers(16, 24))
        if y + rows * cell_h + 20 > bottom:
            return bottom
        cap = font(11, rng)
        draw.text((x0, y), f"Table {int(rng.integers(1, 9))}: " + phrase(rng, 2, 5), fill=ink, font=cap)
        y += 18
        cell_w = width // cols
        for r in range(rows + 1):
            draw.line((x0, y + r * cell_h, x0 + cols * cell_w, y + r * cell_h), fill=ink, width=1)
        for c in range(cols + 1):
            draw.line((x0 + c * cell_w, y, x0 + c * cell_w, y + rows * cell_h), fill=ink, width=1)
        for r in range(rows):
            for c in range(cols):
                draw.text(
                    (x0 + c * cell_w + 4, y + r * cell_h + 3), str(rng.choice(WORDS)), fill=ink, font=cap
                )
        return y + rows * cell_h
    if kind == "figure":
        h = int(rng.integers(80, 200))
        if y + h + 20 > bottom:
            return bottom
        w = int(width * rng.uniform(0.6, 1.0))
        left = x0 + (width - w) // 2
        draw.rectangle((left, y, left + w, y + h), outline=ink, width=1)
        xs = np.linspace(left + 6, left + w - 6, 24)
        ys = y + h / 2 + np.cumsum(rng.normal(0, h / 12, 24)).clip(-h / 2 + 8, h / 2 - 8)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        if rng.uniform() < 0.5:
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
        else:
            for xv, yv in zip(xs[::3], ys[::3], strict=True):
                draw.rectangle((xv - 4, yv, xv + 4, y + h - 2), fill=colour)
        cap = font(11, rng)
        draw.text(
            (x0, y + h + 4), f"Figure {int(rng.integers(1, 9))}: " + phrase(rng, 3, 7), fill=ink, font=cap
        )
        return y + h + 20
    math = font(int(rng.integers(13, 17)), rng)
    a, b, c = (str(rng.choice(list("xyzabkn"))) for _ in range(3))
    formula = f"{a}({b}) = Σ {c}_i · {b}^i + {int(rng.integers(2, 99))} / ({a} - {c})"
    draw.text((x0 + width // 4, y), formula, fill=ink, font=math)
    return y + int(math.size * 1.6)
