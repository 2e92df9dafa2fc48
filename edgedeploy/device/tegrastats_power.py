#!/usr/bin/env python3
"""Power log and benchmark summary for benchmark.sh: record tegrastats, time-stamp trtexec, summarise.

Standard library only, so it runs on a bare JetPack: it uses edgedeploy's full tegrastats parser
when the package is installed and a small rail-only parser otherwise (tests check both agree).
Energy per inference = average power over trtexec's measured window / throughput.

  record     run tegrastats, write "unix_time line" per sample until SIGTERM (exit 0); when
             tegrastats ends by itself first, exit with its status
  stamp      copy stdin to stdout with "unix_time " in front of each line
  summarize  trtexec log + tegrastats log -> benchmark JSON (latency, throughput, power, energy)

It runs on the board's own python3: 3.6 on JetPack 4.6 (Nano, TX2), 3.8 on JetPack 5. So no
syntax or library call newer than 3.6 (no walrus, no itertools.pairwise, no PEP 585/604
annotations evaluated at run time; tests/device/test_device_python.py checks).
"""

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
# never power rails, though a line cut short makes them look like JetPack 4's unitless ones
# ("RAM 4722/30536"): edgedeploy.power.tegrastats.NOT_RAILS, which this file cannot import on a board
NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM", "EMC_FREQ", "GR3D_FREQ"})
_RAIL = re.compile(
    r"(?:^|\s)([A-Z][A-Z0-9_]*) (\d+(?:\.\d+)?)(mW|W)?/(\d+(?:\.\d+)?)(?:mW|W)?"
    r"(?:/\d+(?:\.\d+)?(?:mW|W)?)?(?=\s|$)"
)


def rails_watts(line: str) -> Dict[str, float]:
    """Current watts per rail of one tegrastats line (empty when the line has none, or is cut
    short before any whole rail: such a line is skipped)."""
    try:
        from edgedeploy.power.tegrastats import parse_line
    except ImportError:
        return {
            m.group(1): float(m.group(2)) * (1.0 if m.group(3) == "W" else 0.001)
            for m in _RAIL.finditer(line)
            if m.group(1) not in NOT_RAILS
        }
    try:
        return {n: r.current_mw / 1000.0 for n, r in parse_line(line).rails.items()}
    except ValueError:
        return {}


def atomic_write(path: Path, text: str) -> None:
    """bundle_helper's: beside this file in the bundle's scripts/, in the package on a workstation."""
    try:
        from bundle_helper import atomic_write as write
    except ImportError:
        from edgedeploy.device.bundle_helper import atomic_write as write
    write(path, text)


def total_rail(names: List[str]) -> Tuple[List[str], str]:
    for name in BOARD_INPUT_RAILS:
        if name in names:
            return [name], f"{name}: whole-module input power"
    return names, (
        f"sum of {', '.join(names)}: this module has no whole-board input rail, "
        "so carrier board, fan and any unlisted rail are not included"
    )


def window_average(points: List[Tuple[float, float]], t0: float, t1: float) -> Optional[float]:
    """Time-weighted mean over [t0, t1], linear between samples, flat beyond the outermost ones."""
    pts = sorted(points)
    inside = [p for p in pts if t0 <= p[0] <= t1]
    if not pts or (not inside and not (pts[0][0] < t0 and pts[-1][0] > t1)):
        return None

    def value_at(t: float) -> float:
        before = [p for p in pts if p[0] <= t]
        after = [p for p in pts if p[0] >= t]
        if not before:
            return after[0][1]
        if not after or after[0][0] == before[-1][0]:
            return before[-1][1]
        (ta, va), (tb, vb) = before[-1], after[0]
        return va + (vb - va) * (t - ta) / (tb - ta)

    edge = [(t0, value_at(t0)), *inside, (t1, value_at(t1))]
    area = sum((tb - ta) * (va + vb) / 2.0 for (ta, va), (tb, vb) in zip(edge, edge[1:]))
    return area / (t1 - t0)


def read_stamped(path: Path) -> List[Tuple[float, str]]:
    lines = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stamp, _, rest = raw.partition(" ")
        try:
            lines.append((float(stamp), rest))
        except ValueError:
            continue
    return lines


# ------------------------------------------------------------------ trtexec log

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = ([\d.eE+-]+) ms")


def _stats(line: str) -> Dict[str, float]:
    out = {}
    for m in _STAT.finditer(line):
        # percentile(90%) -> p90, percentile(99.9%) -> p99.9 (zeros after a decimal point only: "90" made p9)
        pct = m.group(2)
        key = f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else m.group(1)
        out[f"{key}_ms"] = float(m.group(3))
    return out


def parse_trtexec(lines: List[Tuple[float, str]], warmup_ms: float) -> Dict[str, Any]:
    """Latency, GPU compute, throughput and the measured window from a stamped trtexec log."""
    summary: Dict[str, Any] = {}
    start = end = None
    for ts, text in lines:
        if start is None and "Starting inference" in text:
            start = ts
        if end is None and "Performance summary" in text:
            end = ts
        throughput = re.search(r"Throughput: ([\d.eE+-]+) qps", text)
        variance = re.search(r"coefficient of variance = ([\d.]+)%", text)
        build = re.search(r"TensorRT v(\d+)\]", text)
        if "] Latency:" in text or text.lstrip().startswith("Latency:"):
            summary.setdefault("latency", _stats(text))
        elif "GPU Compute Time:" in text and "Total" not in text:
            summary.setdefault("gpu_compute", _stats(text))
        elif throughput:
            summary.setdefault("throughput_qps", float(throughput.group(1)))
        elif variance:
            summary["gpu_compute_cv_percent"] = float(variance.group(1))
        elif build:
            summary.setdefault("tensorrt_build_number", int(build.group(1)))
    if start is not None and end is None and lines:
        end = lines[-1][0]
    if start is not None and end is not None:
        measured = start + warmup_ms / 1000.0
        summary["window"] = (measured if measured < end else start, end)
    return summary


def summarize(args: argparse.Namespace) -> int:
    trt = parse_trtexec(read_stamped(args.trtexec_log), args.warmup_ms)
    if "latency" not in trt or "throughput_qps" not in trt:
        print("error: no performance summary in the trtexec log (see it for the error)", file=sys.stderr)
        return 1
    settings = json.loads(args.settings) if args.settings else {}
    batch = int(settings.get("batch", 1))
    qps = trt["throughput_qps"]
    power: Dict[str, Any] = {"source": None, "measurable": False}
    samples = (
        read_stamped(args.tegrastats_log) if args.tegrastats_log and args.tegrastats_log.exists() else []
    )
    stopped = f"not measurable here: {args.tegrastats_stopped}" if args.tegrastats_stopped else None
    if not samples:
        power["reason"] = args.no_power_reason or stopped or "not measurable here: tegrastats gave no samples"
    elif "window" not in trt:
        power.update(source="tegrastats", reason="not measurable here: trtexec log has no inference window")
    elif stopped and max(ts for ts, _ in samples) < trt["window"][1]:
        # its last samples would stand for the rest of the window (window_average holds the outermost flat)
        power.update(source="tegrastats", reason=stopped)
    else:
        t0, t1 = trt["window"]
        per_rail: Dict[str, List[Tuple[float, float]]] = {}
        for ts, line in samples:
            for name, watts in rails_watts(line).items():
                per_rail.setdefault(name, []).append((ts, watts))
        avg = {}
        for name, pts in per_rail.items():
            value = window_average(pts, t0, t1)
            if value is not None:
                avg[name] = value
        power["source"] = "tegrastats"
        power["samples"] = sum(1 for ts, _ in samples if t0 <= ts <= t1)
        power["window_s"] = t1 - t0
        if not avg:
            power["reason"] = "not measurable here: no tegrastats power sample in the measured window"
        else:
            order = sorted(avg, key=lambda n: (n not in BOARD_INPUT_RAILS, n))
            parts, covered = total_rail(order)
            watts = sum(avg[n] for n in parts)
            power.update(
                measurable=True,
                avg_power_w=watts,
                rails={n: avg[n] for n in order},
                rails_covered=covered,
                energy_per_batch_mj=watts / qps * 1000.0,
                energy_per_inference_mj=watts / (qps * batch) * 1000.0,
            )
    result = {
        "tool": "trtexec",
        "engine": settings.get("engine"),
        "precision": settings.get("precision"),
        "batch": batch,
        "settings": settings,
        "latency_ms": trt["latency"],
        "gpu_compute_ms": trt.get("gpu_compute"),
        "gpu_compute_cv_percent": trt.get("gpu_compute_cv_percent"),
        "throughput_qps": qps,
        "throughput_ips": qps * batch,
        "energy_per_inference_mj": power.get("energy_per_inference_mj"),
        "power": power,
    }
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    lat = trt["latency"]
    print(
        f"latency median {lat.get('median_ms')} ms, p99 {lat.get('p99_ms')} ms; "
        f"throughput {qps * batch:.1f} inf/s"
    )
    if power["measurable"]:
        print(
            f"power {power['avg_power_w']:.2f} W ({power['rails_covered']}); "
            f"energy {power['energy_per_inference_mj']:.3f} mJ per inference"
        )
    else:
        print(f"power: {power['reason']}")
    return 0


# ------------------------------------------------------------------ record / stamp


def record(args: argparse.Namespace) -> int:
    cmd = shutil.which(args.tegrastats) or args.tegrastats
    argv = [cmd, "--interval", str(args.interval)]
    if shutil.which("stdbuf"):
        argv = ["stdbuf", "-oL", *argv]
    try:  # universal_newlines: text= is Python 3.7 and later
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, universal_newlines=True
        )
    except OSError as exc:
        print(f"error: cannot run {cmd}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    stopped = []

    def stop(signum: int, frame: object) -> None:
        stopped.append(signum)
        proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert proc.stdout is not None
    with open(args.out, "a") as out:
        for line in proc.stdout:
            out.write(f"{time.time():.6f} {line.rstrip()}\n")
            out.flush()
    status = proc.wait()
    # stopped by benchmark.sh: done; ended by itself: its exit status, for benchmark.sh to report
    return 0 if stopped else (status if status >= 0 else 128 - status)


def stamp(args: argparse.Namespace) -> int:
    for line in sys.stdin:
        sys.stdout.write(f"{time.time():.6f} {line.rstrip()}\n")
        sys.stdout.flush()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    sub.required = True  # add_subparsers(required=...) is Python 3.7 and later
    p = sub.add_parser("record")
    p.add_argument("--interval", type=int, default=100)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tegrastats", default="tegrastats")
    sub.add_parser("stamp")
    p = sub.add_parser("summarize")
    p.add_argument("--trtexec-log", type=Path, required=True)
    p.add_argument("--tegrastats-log", type=Path)
    p.add_argument("--no-power-reason")
    p.add_argument("--tegrastats-stopped", help="why tegrastats ended before the run (power not measurable)")
    p.add_argument("--warmup-ms", type=float, default=0.0)
    p.add_argument("--settings", help="JSON object of the run's settings")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return {"record": record, "stamp": stamp, "summarize": summarize}[args.cmd](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: one line and exit 130, as edgedeploy (temporary files are gone)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
