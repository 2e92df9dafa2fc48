"""FP16 conversion benchmark: edgedeploy vs onnxconverter-common (naive) vs NVIDIA Model Optimizer AutoCast.

On the same models and the same data in one run, for each converter: cosine against FP32 (min over
outputs) and NaN/Inf, measured through the CPU emulation of fp16 storage (ONNX Runtime's CPU
provider computes most fp16 ops in fp32 and would hide overflow; the ORT-CPU cosine is printed
too), the share of nodes and of Conv/MatMul/Gemm running in fp16, and conversion wall time
(edgedeploy's includes its range analysis on the data; AutoCast's includes its reference run).

AutoCast (``modelopt.onnx.autocast.convert_to_mixed_precision``, keep_io_types=True, its default
data_max=512 and init_max=65504) runs in a virtual environment of its own, shared with
benchmarks/int8_calibration.py (``nvidia-modelopt[onnx]`` pulls onnxruntime-gpu, which breaks the
main environment's onnxruntime); ``--no-install`` skips creating it. When a peer cannot be
installed or run, the benchmark says why and continues.

Run from the repository root: ``python benchmarks/fp16.py [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.modelopt_venv import modelopt_python  # noqa: E402
from benchmarks.real_models import cosine  # noqa: E402  (compare's, min over outputs)

HEAVY_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose"}

AUTOCAST_SCRIPT = r"""
import json, sys, time, logging
import onnx
logging.disable(logging.WARNING)
from modelopt.onnx.autocast import convert_to_mixed_precision
src, data, out = sys.argv[1:4]
start = time.perf_counter()
model = convert_to_mixed_precision(onnx_path=src, low_precision_type="fp16", keep_io_types=True,
                                   calibration_data=data)
seconds = time.perf_counter() - start
onnx.save(model, out)
print(json.dumps({"seconds": seconds}))
"""


@dataclass
class Row:
    model: str
    converter: str
    seconds: float | None
    cosine: float | None  # emulated fp16 storage, min over outputs
    nan_inf: int | None
    ort_cpu_cosine: float | None
    fp16_nodes: float | None  # share of the reference's nodes running in fp16
    fp16_heavy: float | None  # share of Conv/MatMul/Gemm in fp16
    fp32_nodes: int | None
    note: str = ""


# --------------------------------------------------------------------------- models and data


def detector() -> Any:
    """A small YOLO-style detector: strided Conv-BN-SiLU backbone, residual blocks, SPPF, FPN, head."""
    import torch
    from torch import nn

    def cbs(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Res(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b = cbs(c, c, 1), cbs(c, c, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.b(self.a(x))  # type: ignore[no-any-return]

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.stem = cbs(3, 16, 3, 2)
            self.s1 = nn.Sequential(cbs(16, 32, 3, 2), Res(32))
            self.s2 = nn.Sequential(cbs(32, 64, 3, 2), Res(64), Res(64))
            self.s3 = nn.Sequential(cbs(64, 128, 3, 2), Res(128), Res(128))
            self.s4 = nn.Sequential(cbs(128, 256, 3, 2), Res(256))
            self.pool = nn.MaxPool2d(5, 1, 2)
            self.sppf = cbs(256 * 4, 256, 1)
            self.lat = cbs(256, 128, 1)
            self.fuse = cbs(256, 128, 3)
            self.head_small = nn.Conv2d(128, 3 * 85, 1)
            self.head_large = nn.Conv2d(256, 3 * 85, 1)
            with torch.no_grad():  # a trained stem on raw 0-255 pixels: early activations in the thousands
                self.stem[1].weight.mul_(16.0)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            c3 = self.s3(self.s2(self.s1(self.stem(x))))
            c4 = self.s4(c3)
            p1 = self.pool(c4)
            p2 = self.pool(p1)
            c4 = self.sppf(torch.cat([c4, p1, p2, self.pool(p2)], 1))
            up = nn.functional.interpolate(self.lat(c4), scale_factor=2.0, mode="nearest")
            p3 = self.fuse(torch.cat([c3, up], 1))
            b = x.shape[0]
            return (
                torch.sigmoid(self.head_small(p3)).reshape(b, 255, -1),
                torch.sigmoid(self.head_large(c4)).reshape(b, 255, -1),
            )

    return Detector().eval()


def export(model: Any, example: dict[str, np.ndarray], dest: Path, outputs: list[str]) -> Path:
    import torch

    from edgedeploy.stages.export import ExportOptions, export_module

    export_module(
        model, {k: torch.from_numpy(v) for k, v in example.items()}, dest, ExportOptions(output_names=outputs)
    )
    return dest


def build_cases(
    work: Path, quick: bool
) -> list[tuple[str, Path, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]]:
    """(name, fp32 ONNX, calibration batches, evaluation batches) per model."""
    from tests.precision import models as m

    cases = []
    calib = [m.audio_batch(8, 100 + i) for i in range(4)]
    evaluate = [m.audio_batch(8, 200 + i) for i in range(4)]
    cases.append(
        ("transformer-1blk", m.export_audio_transformer(work / "t1.onnx", blocks=1), calib, evaluate)
    )
    if not quick:
        cases.append(
            ("transformer-4blk", m.export_audio_transformer(work / "t4.onnx", blocks=4), calib, evaluate)
        )
        rng = np.random.default_rng(0)
        # raw 0-255 pixels (the model normalises nothing, as caffe-style and many exported detectors)
        images = [{"images": rng.uniform(0, 255, (4, 3, 256, 256)).astype(np.float32)} for _ in range(6)]
        path = export(detector(), {"images": images[0]["images"][:1]}, work / "det.onnx", ["small", "large"])
        cases.append(("detector-256", path, images[:3], images[3:]))
    return cases


# --------------------------------------------------------------------------- measuring


def measure(
    name: str,
    converter: str,
    reference: Path,
    converted: onnx.ModelProto | None,
    seconds: float | None,
    evaluate: list[dict[str, np.ndarray]],
    note: str = "",
) -> Row:
    import onnxruntime as ort

    from edgedeploy.stages.precision.emulate import emulate_fp16, fp32_nodes_of_converted
    from edgedeploy.stages.precision.fp16 import ensure_node_names

    if converted is None:
        return Row(name, converter, seconds, None, None, None, None, None, None, note)
    ref = onnx.load(reference)
    ensure_node_names(ref)
    fp32 = fp32_nodes_of_converted(ref, converted)
    emu = emulate_fp16(ref, fp32, blocked_ops=())
    compute = [n for n in ref.graph.node if n.op_type not in ("Constant",)]
    heavy = [n for n in compute if n.op_type in HEAVY_OPS]
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def run(model: onnx.ModelProto) -> list[list[np.ndarray]]:
        s = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in s.get_inputs()}
        return [s.run(None, {k: v for k, v in f.items() if k in names}) for f in evaluate]

    want, got_emu = run(ref), run(emu)
    try:
        real: float | None = cosine(want, run(converted))
    except Exception as exc:  # the converter produced a graph ONNX Runtime refuses
        real = None
        note = (note + "; " if note else "") + f"ORT refuses the model: {str(exc).splitlines()[0][-90:]}"
    nan_inf = sum(int(np.sum(~np.isfinite(np.asarray(o, np.float64)))) for batch in got_emu for o in batch)
    return Row(
        name,
        converter,
        seconds,
        cosine(want, got_emu),
        nan_inf,
        real,
        sum(1 for n in compute if n.name not in fp32) / max(1, len(compute)),
        sum(1 for n in heavy if n.name not in fp32) / max(1, len(heavy)) if heavy else None,
        sum(1 for n in compute if n.name in fp32),
        note,
    )


def run_edgedeploy(path: Path, data_dir: Path, work: Path) -> tuple[onnx.ModelProto, float]:
    from edgedeploy.options import BuildRequest, CalibrationRequest
    from edgedeploy.stages.precision.mixed import make_fp16_checked
    from edgedeploy.targets import load_target

    request = BuildRequest(
        "fp16",
        load_target("x86-64-cpu"),  # imports done above: time the work only
        calibration=CalibrationRequest(data=str(data_dir), batch_size=8),
    )
    start = time.perf_counter()
    art = make_fp16_checked(path, work / f"{path.stem}.edgedeploy.fp16.onnx", request)
    return onnx.load(art.path), time.perf_counter() - start


def run_naive(path: Path) -> tuple[onnx.ModelProto | None, float | None, str]:
    try:
        from onnxconverter_common import float16
    except ImportError:
        return None, None, "onnxconverter-common is not installed (pip install onnxconverter-common)"
    start = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = float16.convert_float_to_float16(onnx.load(path), keep_io_types=True)
    return model, time.perf_counter() - start, ""


def run_autocast(
    python: str | None, why: str, path: Path, data_dir: Path, work: Path
) -> tuple[onnx.ModelProto | None, float | None, str]:
    if python is None:
        return None, None, why
    out = work / f"{path.stem}.autocast.fp16.onnx"
    wall = time.perf_counter()
    proc = subprocess.run(
        [python, "-c", AUTOCAST_SCRIPT, str(path), str(data_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, None, f"AutoCast failed: {tail[0][:200]}"
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    return onnx.load(out), seconds, f"process {wall:.1f} s with imports"


def save_batches(batches: list[dict[str, np.ndarray]], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, batch in enumerate(batches):
        np.savez(folder / f"batch{i:03d}.npz", **batch)
    return folder


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the one-block transformer only")
    parser.add_argument("--no-install", action="store_true", help="do not create the Model Optimizer venv")
    parser.add_argument("--no-modelopt", action="store_true", help="skip AutoCast")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    python, why = (
        (None, "skipped (--no-modelopt)")
        if args.no_modelopt
        else modelopt_python(not args.no_install, "modelopt.onnx.autocast")
    )
    if python is None:
        print(f"AutoCast: {why}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgedeploy-fp16-bench-") as tmp:
        work = Path(tmp)
        for name, path, calib, evaluate in build_cases(work, args.quick):
            data_dir = save_batches(calib, work / f"{name}-calib")
            model, seconds = run_edgedeploy(path, data_dir, work)
            rows.append(measure(name, "edgedeploy", path, model, seconds, evaluate))
            naive, seconds_n, note = run_naive(path)
            rows.append(measure(name, "onnxconverter-common naive", path, naive, seconds_n, evaluate, note))
            auto, seconds_a, note = run_autocast(python, why, path, data_dir, work)
            rows.append(measure(name, "modelopt AutoCast", path, auto, seconds_a, evaluate, note))
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(rows: list[Row]) -> None:
    header = (
        "model",
        "converter",
        "1 - cosine (fp16 emul.)",
        "NaN/Inf",
        "cosine (ORT CPU)",
        "fp16 nodes",
        "fp16 Conv/MatMul/Gemm",
        "fp32 nodes",
        "time s",
        "note",
    )
    table = [header] + [
        (
            r.model,
            r.converter,
            _f(None if r.cosine is None else 1 - r.cosine, ".2e"),
            _f(r.nan_inf, "d"),
            _f(r.ort_cpu_cosine, ".6f"),
            _f(r.fp16_nodes, ".1%"),
            _f(r.fp16_heavy, ".1%"),
            _f(r.fp32_nodes, "d"),
            _f(r.seconds, ".2f"),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
