"""INT8 calibration against its peers, on the same models and the same calibration data in one run.

Compared: our calibration (calibration/), ONNX Runtime's ``quantize_static`` (QDQ, symmetric,
per-channel; Entropy and MinMax) and NVIDIA Model Optimizer's ONNX PTQ
(``modelopt.onnx.quantization.quantize``, int8, entropy). Model Optimizer pulls in onnxruntime-gpu,
which breaks onnxruntime when both are installed, so it runs in a virtual environment of its
own (created on first use under ~/.cache; ``--no-modelopt`` skips it).

Every method runs in a fresh subprocess, which reports the wall time of the calibration call and
its peak resident memory (ru_maxrss) over the baseline after imports. The results are then run
in ONNX Runtime on the CPU with all graph optimizations (as the artifacts run) and compared with
FP32: top-1 agreement and task accuracy on held-out data.

Models: the demo's digits CNN (trained here in seconds) and a real pretrained model shipped
inside a pip wheel: PaddleOCR's text-direction classifier from rapidocr-onnxruntime, evaluated on
text lines rendered with Pillow (half of them upside down).

    python benchmarks/int8_calibration.py [--samples 200] [--big-samples 1000] [--no-modelopt]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.modelopt_venv import CACHE, MODELOPT_INT8, modelopt_python, peak_kb  # noqa: E402
from benchmarks.render import line_tensor, text_line  # noqa: E402

OCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
BATCH = 40  # divides 200 and 1000: ONNX Runtime's entropy calibrator fails on a short last batch
OCR_MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"

# --------------------------------------------------------------------------- workers (subprocesses)


def worker(method: str, model: str, calib: str, out: str) -> None:
    """Run one method; print a JSON line with seconds, peak and baseline RSS. Every method reads the
    calibration data and the model inside its clock, as Model Optimizer's script (MODELOPT_INT8) does."""
    if method.startswith("ours"):
        import onnxruntime  # noqa: F401  (imported before the baseline, as in the other workers)

        from calibration.calibrate import CalibrationOptions, calibrate
        from calibration.modelinfo import model_io
        from calibration.sources import open_source

        _, algorithm, placement = method.split("-")
        baseline = peak_kb()
        start = time.perf_counter()
        inputs, _ = model_io(model)
        source = open_source(calib, inputs, batch_size=BATCH)
        options = CalibrationOptions(
            algorithm=algorithm,
            placement="onnxruntime" if placement == "cpu" else "tensorrt",
            weight_bits=7 if placement == "cpu" else 8,
        )
        result = calibrate(
            model, source, options, Path(out).parent, qdq_name=Path(out).name, stem=Path(out).stem
        )
        seconds = time.perf_counter() - start
    elif method.startswith("ort"):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                name, array = next(iter(dict(np.load(calib)).items()))  # inside the clock
                self.batches = iter([{name: array[i : i + BATCH]} for i in range(0, len(array), BATCH)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        calib_method = CalibrationMethod.Entropy if method == "ort-entropy" else CalibrationMethod.MinMax
        baseline = peak_kb()
        start = time.perf_counter()
        quantize_static(
            model,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib_method,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        seconds = time.perf_counter() - start
        result = None
    else:
        raise SystemExit(f"unknown method {method}")
    del result
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb(), "baseline_kb": baseline}))


# --------------------------------------------------------------------------- data and models


def digits_model(work: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """The demo's digits CNN, trained here; returns model, training images, test images, labels."""
    import torch

    from edgedeploy.pipeline.demo import load_digits_data, train_digits_cnn
    from edgedeploy.stages.export import ExportOptions, export_module

    data = load_digits_data()
    model, _ = train_digits_cnn(data)
    path = work / "digits.onnx"
    export_module(
        model, {"input": torch.from_numpy(data.x_test[:1])}, path, ExportOptions(output_names=["logits"])
    )
    return path, data.x_train, data.x_test, data.y_test


def ocr_model(work: Path) -> Path | None:
    """PaddleOCR's direction classifier from the rapidocr-onnxruntime wheel (downloaded once)."""
    wheels = sorted(glob.glob(str(CACHE / "wheels" / "rapidocr_onnxruntime-*.whl")))
    if not wheels:
        (CACHE / "wheels").mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            OCR_WHEEL,
            "-d",
            str(CACHE / "wheels"),
        ]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        wheels = sorted(glob.glob(str(CACHE / "wheels" / "rapidocr_onnxruntime-*.whl")))
    path = work / "ocr_cls.onnx"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        path.write_bytes(wheel.read(OCR_MEMBER))
    return path


def text_lines(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rendered text lines, every other one upside down, preprocessed as PaddleOCR's classifier expects."""
    rng = np.random.default_rng(seed)
    xs = [line_tensor(text_line(rng, 48, flip=i % 2 == 1), 48, 192) for i in range(count)]
    return np.stack(xs), np.arange(count) % 2


# --------------------------------------------------------------------------- measurement


def run_method(method: str, model: Path, calib: Path, out: Path, mo_python: str | None) -> dict[str, Any]:
    if method == "modelopt-entropy":
        if mo_python is None:
            return {"error": "Model Optimizer unavailable"}
        cmd = [mo_python, "-c", MODELOPT_INT8, str(model), str(calib), str(out)]
    else:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            method,
            str(model),
            str(calib),
            str(out),
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(out.parent))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines or not out.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    return dict(json.loads(lines[-1]))


def session(model: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def predict(model: Path, x: np.ndarray) -> np.ndarray:
    sess = session(model)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 64]})[0] for i in range(0, len(x), 64)]).argmax(
        axis=1
    )


def latencies_ms(
    models: dict[str, Path], x: np.ndarray, rounds: int = 21, round_s: float = 0.1
) -> dict[str, float]:
    """Median time of one run of ``x`` per model (default session options, as the artifacts run).

    Rounds alternate between the models so that both see the same machine state; each round
    times a fixed number of runs, and the median over rounds is reported.
    """
    sessions = {label: session(path) for label, path in models.items()}
    feeds = {label: {sess.get_inputs()[0].name: x} for label, sess in sessions.items()}
    counts = {}
    for label, sess in sessions.items():
        for _ in range(20):
            sess.run(None, feeds[label])
        t = time.perf_counter()
        for _ in range(20):
            sess.run(None, feeds[label])
        counts[label] = max(5, int(round_s / ((time.perf_counter() - t) / 20)))
    samples: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(rounds):
        for label, sess in sessions.items():
            t = time.perf_counter()
            for _ in range(counts[label]):
                sess.run(None, feeds[label])
            samples[label].append((time.perf_counter() - t) / counts[label])
    return {label: float(np.median(v) * 1e3) for label, v in samples.items()}


METHODS = (
    "ours-entropy-trt",
    "ours-entropy-cpu",
    "ours-max-trt",
    "ours-percentile-trt",
    "ours-mse-trt",
    "ort-entropy",
    "ort-minmax",
    "modelopt-entropy",
)


def bench_model(
    label: str,
    model: Path,
    calib_x: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    work: Path,
    mo_python: str | None,
) -> list[dict[str, Any]]:
    calib = work / f"{label}_calib.npz"
    import onnx

    input_name = onnx.load(model).graph.input[0].name
    np.savez(calib, **{input_name: calib_x})  # type: ignore[arg-type]
    fp32 = predict(model, test_x)
    rows = [
        {
            "model": label,
            "method": "fp32",
            "accuracy": float((fp32 == test_y).mean()),
            "agreement": 1.0,
            "size_kb": model.stat().st_size / 1024,
        }
    ]
    for method in METHODS:
        out = work / f"{label}.{method}.onnx"
        row: dict[str, Any] = {
            "model": label,
            "method": method,
            **run_method(method, model, calib, out, mo_python),
        }
        if "error" not in row:
            pred = predict(out, test_x)
            row.update(
                accuracy=float((pred == test_y).mean()),
                agreement=float((pred == fp32).mean()),
                size_kb=out.stat().st_size / 1024,
            )
        rows.append(row)
        print(
            f"  {label:7s} {method:20s} "
            + (
                row.get("error")
                or f"{row['seconds']:.2f}s  +{(row['peak_kb'] - row['baseline_kb']) / 1024:.1f} MB  "
                f"acc {row['accuracy']:.4f}  agree {row['agreement']:.4f}"
            ),
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker", nargs=4, metavar=("METHOD", "MODEL", "CALIB", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--big-samples", type=int, default=1000)
    parser.add_argument("--no-modelopt", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="do not create the Model Optimizer venv")
    parser.add_argument("--no-ocr", action="store_true", help="skip the pretrained OCR classifier")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgedeploy-calib-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    mo_python, why = (
        (None, "skipped (--no-modelopt)")
        if args.no_modelopt
        else modelopt_python(not args.no_install, "modelopt.onnx.quantization")
    )
    print(f"workdir {work}; Model Optimizer: {why}", flush=True)
    import onnxruntime as ort

    figures: dict[str, Any] = {"onnxruntime": ort.__version__, "rows": []}
    digits, x_train, x_test, y_test = digits_model(work)
    print(f"digits CNN: calibration on {args.samples} training digits, evaluation on {len(x_test)} held-out")
    figures["rows"] += bench_model("digits", digits, x_train[: args.samples], x_test, y_test, work, mo_python)

    if not args.no_ocr:
        ocr = ocr_model(work)
        if ocr is None:
            print(f"OCR classifier: cannot download {OCR_WHEEL}; skipped")
        else:
            print(
                f"PaddleOCR direction classifier ({OCR_WHEEL}): {args.samples} rendered lines to calibrate, "
                "400 to test"
            )
            cx, _ = text_lines(args.samples, seed=1)
            tx, ty = text_lines(400, seed=2)
            figures["rows"] += bench_model("ocr_cls", ocr, cx, tx, ty, work, mo_python)

    # peak memory against the number of samples (ours vs ONNX Runtime's entropy calibrator)
    memory = {}
    for n in (args.samples, args.big_samples):
        calib = work / f"digits_mem_{n}.npz"
        np.savez(calib, input=np.resize(x_train, (n, *x_train.shape[1:])))
        for method in ("ours-entropy-trt", "ort-entropy"):
            res = run_method(method, digits, calib, work / f"mem_{n}.{method}.onnx", None)
            memory[f"{method}@{n}"] = None if "error" in res else (res["peak_kb"] - res["baseline_kb"]) / 1024
    figures["memory_mb"] = memory

    # speed and size of the CPU-target artifact against FP32
    cpu_int8 = work / "digits.ours-entropy-cpu.onnx"
    speed = {}
    for batch in (1, 32):
        x = x_test[:batch]
        candidates = {"fp32": digits, "int8": cpu_int8, "ort-minmax": work / "digits.ort-minmax.onnx"}
        speed[f"bs{batch}"] = latencies_ms({k: v for k, v in candidates.items() if v.exists()}, x)
    figures["latency_ms"] = speed
    figures["size_ratio"] = cpu_int8.stat().st_size / digits.stat().st_size
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    table = Table(title="INT8 calibration: same model, same calibration data")
    for col in (
        "model",
        "method",
        "wall s",
        "peak MB (over baseline)",
        "size KB",
        "accuracy",
        "agree w/ FP32",
    ):
        table.add_column(col, justify="left" if col in ("model", "method") else "right")
    for r in figures["rows"]:
        if "error" in r:
            table.add_row(r["model"], r["method"], "-", "-", "-", "-", r["error"][:60])
            continue
        mem = (
            f"{r['peak_kb'] / 1024:.0f} (+{(r['peak_kb'] - r['baseline_kb']) / 1024:.1f})"
            if "peak_kb" in r
            else "-"
        )
        table.add_row(
            r["model"],
            r["method"],
            f"{r['seconds']:.2f}" if "seconds" in r else "-",
            mem,
            f"{r['size_kb']:.0f}",
            f"{r['accuracy']:.4f}",
            f"{r['agreement']:.4f}",
        )
    console.print(table)
    mem = figures["memory_mb"]
    console.print(
        "peak memory over baseline, MB: "
        + ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} failed" for k, v in mem.items())
    )
    for batch, values in figures["latency_ms"].items():
        console.print(
            f"latency {batch} (ms, median): " + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        )
    console.print(f"CPU INT8 artifact size / FP32 size: {figures['size_ratio']:.3f}")
    # the targets
    rows = {(r["model"], r["method"]): r for r in figures["rows"] if "error" not in r}
    fp32, ours = rows.get(("digits", "fp32")), rows.get(("digits", "ours-entropy-cpu"))
    checks = []
    if fp32 and ours:
        checks.append(
            ("digits INT8 top-1 within 1 point of FP32", ours["accuracy"] >= fp32["accuracy"] - 0.01)
        )
        checks.append(("digits INT8 agreement with FP32 >= 99.5%", ours["agreement"] >= 0.995))
    for model in ("digits", "ocr_cls"):
        peers = [
            r["agreement"]
            for (m, meth), r in rows.items()
            if m == model and meth.split("-")[0] in ("ort", "modelopt")
        ]
        mine = [
            r["agreement"]
            for (m, meth), r in rows.items()
            if m == model and meth in ("ours-entropy-trt", "ours-entropy-cpu")
        ]
        if peers and mine:
            checks.append(
                (
                    f"{model}: our entropy agreement >= best peer ({max(mine):.4f} vs {max(peers):.4f})",
                    max(mine) >= max(peers),
                )
            )
    for model in ("digits", "ocr_cls"):
        mo, us = rows.get((model, "modelopt-entropy")), rows.get((model, "ours-entropy-trt"))
        if mo and us:
            checks.append(
                (
                    f"{model}: wall time <= half of Model Optimizer's entropy ({us['seconds']:.2f}s vs "
                    f"{mo['seconds']:.2f}s)",
                    us["seconds"] <= mo["seconds"] / 2,
                )
            )
    a, b = mem.get(f"ours-entropy-trt@{args.samples}"), mem.get(f"ours-entropy-trt@{args.big_samples}")
    if a is not None and b is not None:
        checks.append((f"our peak memory flat in samples ({a:.1f} -> {b:.1f} MB)", b - a < 5.0))
    lat = figures["latency_ms"]
    for batch, values in lat.items():
        if "int8" in values:
            checks.append(
                (
                    f"CPU INT8 at least as fast as FP32 at {batch} ({values['fp32'] / values['int8']:.2f}x)",
                    values["int8"] <= values["fp32"] * 1.02,
                )
            )
    for name, ok in checks:
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'MISS'}[/] {name}")


if __name__ == "__main__":
    sys.exit(main())
