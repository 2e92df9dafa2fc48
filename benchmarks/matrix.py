"""Matrix wall time: ``edgedeploy run`` once per (model, target) vs ``matrix`` local vs ``matrix`` on Ray.

The same cells each way: two small ONNX models (the test suite's MLPs) x two Jetson/GPU targets x
fp32/fp16/int8 on the ONNX Runtime backend (12 cells, one bundle per (model, target)), each in a
fresh work folder (cold), then the matrix again (warm: every cell from the cache). Ray runs on a
cluster started here (ray.cluster_utils.Cluster: a head and one worker node per target, one CPU
each), so on one machine it shows the overhead of the cluster, not the gain of real boards; the
cluster's start-up time is printed apart.

The baseline is what a user does without the matrix: ``run_pipeline`` for each (model, target),
one after the other (export and calibration repeated per target).

``--jobs 1`` runs the tasks in the benchmark's own process (no worker start-up); it is measured
after the sequential runs, so its imports are warm, as they would be for a user's second command.

Run from the repository root: ``python benchmarks/matrix.py [--jobs 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("jetson-orin-nano", "rtx4090")
# Ray's driver takes loopback, not the machine's network address (read when ray is imported: set first)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _cpu() -> str:
    from edgedeploy.stages.precision.int8 import cpu_has_vnni

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs, VNNI: {cpu_has_vnni()[1]}"


def _write_project(root: Path) -> Path:
    from tests.test_matrix import CONFIG, _mlp

    _mlp(root / "a.onnx", 0, 16, 32, 10)
    _mlp(root / "b.onnx", 1, 8, 24, 5)
    text = CONFIG.format(workdir="WORK").split("[[matrix.cells]]")[0]  # no failing cell here
    text = text.replace('"rtx4090", "jetson-agx-orin"]', '"rtx4090"]')
    path = root / "matrix.toml"
    path.write_text(text)
    return path


def _configure(path: Path, workdir: str) -> Any:
    from edgedeploy.pipeline.matrix_config import load_matrix_config

    copy = path.with_name(f"{workdir}.toml")
    copy.write_text(path.read_text().replace("WORK", workdir))
    return load_matrix_config(copy)


def _sequential(path: Path) -> float:
    """``edgedeploy run`` for each (model, target), one after the other."""
    from edgedeploy.config import from_dict, tomllib
    from edgedeploy.pipeline import run_pipeline

    data = tomllib.loads(path.read_text().replace("WORK", "seq"))
    matrix = data.pop("matrix")
    start = time.perf_counter()
    for model in matrix["models"]:
        for target in matrix["targets"]:
            cell = {**data, "model": model, "workdir": f"seq/{model['source']}/{target}"}
            cell["build"] = {**data["build"], "target": target, "precisions": matrix["precisions"]}
            cell["bundle"] = {"output": f"seq-bundles/{model['source']}/{target}"}
            run_pipeline(from_dict(cell, path.parent))
    return time.perf_counter() - start


def _matrix(config: Any, executor: Any) -> tuple[float, int]:
    from edgedeploy.pipeline.matrix import run_matrix

    try:
        result = run_matrix(config, executor)
    finally:
        executor.close()
    bad = [c for c in result.cells if c.status != "ok"]
    if bad:
        raise SystemExit(
            f"benchmark matrix: {bad[0].model}/{bad[0].target}/{bad[0].precision}: {bad[0].reason}"
        )
    return result.wall_seconds, result.tasks_submitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="local executor: worker processes")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()

    from edgedeploy.pipeline.executors import LocalExecutor, RayExecutor, loopback_cluster

    figures: dict[str, Any] = {"cpu": _cpu(), "cells": 12}
    with tempfile.TemporaryDirectory(prefix="edgedeploy-bench-matrix-") as scratch:
        root = Path(scratch)
        path = _write_project(root)
        figures["sequential_run_s"] = round(_sequential(path), 2)
        figures["local_cold_s"], figures["local_tasks"] = _matrix(
            _configure(path, "local"), LocalExecutor(args.jobs)
        )
        figures["local_warm_s"], _ = _matrix(_configure(path, "local"), LocalExecutor(args.jobs))
        figures["inline_cold_s"], _ = _matrix(_configure(path, "inline"), LocalExecutor(1))

        start = time.perf_counter()
        with loopback_cluster(TARGETS) as (address, _):
            figures["ray_cluster_start_s"] = round(time.perf_counter() - start, 2)
            cold = _matrix(_configure(path, "ray"), RayExecutor(address=address))
            figures["ray_cold_s"], figures["ray_tasks"] = cold
            figures["ray_warm_s"], _ = _matrix(_configure(path, "ray"), RayExecutor(address=address))

    print(f"CPU: {figures['cpu']}")
    print(f"matrix of {figures['cells']} cells (2 models x {len(TARGETS)} targets x 3 precisions, ORT)")
    print(f"  edgedeploy run per (model, target), sequential : {figures['sequential_run_s']:7.2f} s")
    print(f"  matrix --executor local --jobs 1 (in-process)   : {figures['inline_cold_s']:7.2f} s")
    print(
        f"  matrix --executor local --jobs {args.jobs}, cold         : {figures['local_cold_s']:7.2f} s"
        f"  ({figures['local_tasks']} tasks)   warm: {figures['local_warm_s']:.2f} s"
    )
    print(
        f"  matrix --executor ray (3 nodes here), cold      : {figures['ray_cold_s']:7.2f} s"
        f"  ({figures['ray_tasks']} tasks)   warm: {figures['ray_warm_s']:.2f} s"
        f"   + cluster start {figures['ray_cluster_start_s']:.2f} s"
    )
    print(f"  ratio ray / local (cold): {figures['ray_cold_s'] / figures['local_cold_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
