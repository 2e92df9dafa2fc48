"""``edgedeploy demo``: a small real model through the whole pipeline, in about a minute on a CPU.

A CNN is trained for a few seconds on scikit-learn's digits (8x8 handwritten digits that ship
inside scikit-learn), so its activations are realistic rather than random. Its held-out digits
are the comparison data, and its training digits the calibration data. The pipeline then runs
every precision the target supports and the demo adds task accuracy on the held-out digits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.backends.onnxruntime import create_session
from edgedeploy.config import (
    BuildSection,
    BundleSection,
    CalibrationSection,
    CompareSection,
    ModelSection,
    PipelineConfig,
    ProfileSection,
)
from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_path, atomic_write_json, sha256_json
from edgedeploy.interrupts import deferred
from edgedeploy.pipeline.run import PipelineResult, run_pipeline
from edgedeploy.stages.export import ExportOptions, export_module
from edgedeploy.targets import load_target
from edgedeploy.ui import QUIET, Ui

SEED = 0
EPOCHS = 12
TASK_METRIC = "digits accuracy"  # what each precision's task_metric is: accuracy on the held-out digits


@dataclass
class DigitsData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_data(seed: int = SEED, test_size: int = 450) -> DigitsData:
    """scikit-learn's 1797 digits as (N, 1, 8, 8) float32 in [0, 1], split reproducibly."""
    try:
        with deferred():  # a signal inside an extension's initialization can crash the process
            from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("the demo needs scikit-learn: pip install 'edgedeploy[demo]'") from None
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:test_size], order[test_size:]
    return DigitsData(x[train], y[train], x[test], y[test])


def digits_cnn() -> Any:
    """The demo network: two convolutions, a pooling, two linear layers (about 40k parameters)."""
    with deferred():
        import torch
        from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))  # type: ignore[no-any-return]

    return DigitsCNN()


def train_digits_cnn(data: DigitsData, epochs: int = EPOCHS, seed: int = SEED) -> tuple[Any, float]:
    """Train for a few seconds; returns the model (eval mode) and its held-out accuracy."""
    try:
        with deferred():
            import torch
    except ImportError:
        raise InputError("the demo needs torch: pip install torch==2.13.0 (see README)") from None
    torch.manual_seed(seed)
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(data.x_test)).argmax(1).numpy() == data.y_test).mean())
    return model, acc


@dataclass
class DemoRow:
    precision: str
    backend: str
    size_bytes: int
    p50_ms: float | None
    p99_ms: float | None
    throughput_ips: float | None
    cosine: float | None
    top1_agreement: float | None
    task_accuracy: float
    passed: bool
    note: str = ""
    energy_mj: float | None = None


@dataclass
class DemoResult:
    workdir: Path
    rows: list[DemoRow]
    fp32_torch_accuracy: float
    seconds: float
    bundle: dict[str, Any] | None
    pipeline: PipelineResult
    notes: list[str] = field(default_factory=list)
    report: Path | None = None  # report.html in the workdir


def _task_accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:

    session = create_session(model)
    name = session.get_inputs()[0].name
    logits: Any = session.run(None, {name: x})[0]
    return float((np.asarray(logits).argmax(1) == y).mean())


def run_demo(
    out_dir: Path,
    ui: Ui = QUIET,
    *,
    target: str = "x86-64-cpu",
    duration_s: float = 2.0,
    precisions: list[str] | None = None,
) -> DemoResult:
    """Train (or reuse) the digits CNN and run the pipeline on it for every precision."""
    start = time.perf_counter()

    supported = load_target(target).precisions  # an unknown target fails here, before any training
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits_data()
    test_npz = out_dir / "digits_test.npz"
    calib_npz = out_dir / "digits_calib.npz"
    for path, arr in ((test_npz, data.x_test), (calib_npz, data.x_train[:512])):
        if not path.is_file():
            with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, input=arr)
    trained = out_dir / "digits_cnn.onnx"
    record = out_dir / "digits_cnn.train.json"
    with deferred():
        import torch

    key = sha256_json({"seed": SEED, "epochs": EPOCHS, "torch": torch.__version__, "model": "DigitsCNN-v1"})
    torch_acc: float
    try:
        import json

        info = json.loads(record.read_text())
        if info.get("key") != key or not trained.is_file():
            raise ValueError
        torch_acc = float(info["accuracy"])
        ui.info("train: up to date (digits CNN already trained with these settings)")
    except (OSError, ValueError, KeyError):
        with ui.progress("training the digits CNN") as advance:
            model, torch_acc = train_digits_cnn(data)
            advance(0.7)
            export_module(
                model,
                {"input": torch.from_numpy(data.x_test[:1])},
                trained,
                ExportOptions(output_names=["logits"]),
                notify=ui.info,
            )
            advance(1.0)
        atomic_write_json(record, {"key": key, "accuracy": torch_acc})
        ui.info(f"train: digits CNN, {EPOCHS} epochs, held-out accuracy {torch_acc:.4f}")
    if precisions is None:
        precisions = ["fp32", "fp16", "int8"]
        precisions = [p for p in precisions if p in supported]  # e.g. no int8 on a Jetson Nano
    config = PipelineConfig(
        model=ModelSection(source=str(trained), name="digits_cnn"),
        build=BuildSection(target=target, precisions=precisions, backend="auto"),
        calibration=CalibrationSection(data=str(calib_npz), samples=512, batch_size=32),
        compare=CompareSection(
            data=str(test_npz), samples=len(data.x_test), batch_size=50, min_cosine=0.99, min_top1=0.95
        ),
        profile=ProfileSection(batch_sizes=[1], warmup_ms=200, duration_s=duration_s),
        bundle=BundleSection(output=str(out_dir / "bundle")),
        workdir=str(out_dir),
        base_dir=out_dir,
    )
    # the task accuracy of each precision goes into run.json and the bundle, so the bundle's report
    # and `edgedeploy report` of either show it as the demo's own report does
    result = run_pipeline(
        config,
        ui,
        report=False,  # written below, with the demo's title
        task_metric=lambda o: (TASK_METRIC, _task_accuracy(o.artifact, data.x_test, data.y_test)),
    )
    rows = []
    for outcome in result.precisions:
        batch1 = ((outcome.profile or {}).get("batch_sizes") or {}).get("1", {})
        outputs = (outcome.compare or {}).get("outputs", {})
        logits: dict[str, Any] = outputs.get("logits") or next(iter(outputs.values()), {})
        energy = batch1.get("energy") or {}
        note = ""
        if outcome.precision == "fp16" and outcome.backend == "onnxruntime":
            note = (
                "no fp16 math on x86: ORT converts (speed shows on GPU tensor cores; size halves everywhere)"
            )
        if outcome.precision == "int8" and outcome.backend == "onnxruntime":
            note = "integer kernels; faster with VNNI / ARM dot-product"
        rows.append(
            DemoRow(
                precision=outcome.precision,
                backend=outcome.backend,
                size_bytes=outcome.model.stat().st_size,
                p50_ms=batch1.get("median_ms"),
                p99_ms=batch1.get("p99_ms"),
                throughput_ips=batch1.get("throughput_ips"),
                cosine=logits.get("cosine"),
                top1_agreement=logits.get("top1_agreement"),
                task_accuracy=float(outcome.info["task_metric"]["value"]),
                passed=bool((outcome.compare or {}).get("passed")),
                note=note,
                energy_mj=energy.get("energy_per_inference_mj") if energy.get("measurable") else None,
            )
        )
    return DemoResult(
        workdir=out_dir,
        rows=rows,
        fp32_torch_accuracy=torch_acc,
        seconds=time.perf_counter() - start,
        bundle=result.bundle,
        pipeline=result,
        report=_demo_report(out_dir, ui),
    )


def _demo_report(workdir: Path, ui: Ui) -> Path | None:
    """The run's report (with the task metric run.json records), under the demo's title."""
    from edgedeploy.stages.report import load_workdir, plotting_missing, write_report

    missing = plotting_missing()
    if missing:
        ui.warn(f"report not written: {missing}")
        return None
    run = load_workdir(workdir)
    return write_report(run, workdir, title="digits CNN demo on " + (run.target or "?")).html
