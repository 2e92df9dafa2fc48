"""Conformance over ONNX's own backend test corpus: every model ONNX Runtime runs gets a valid
artifact that runs, or one clear refusal; never a traceback, never a hang.

The corpus is what the installed onnx package carries: the node tests its test-case modules
generate (``onnx.backend.test.loader.load_model_tests(kind="node")``), its pytorch-converted,
pytorch-operator and simple models (with their test data), and its "light" real models (inputs
made by onnx's own test runner, reference outputs shipped beside them). Each case is written to
disk in onnx's test-data layout (``model.onnx`` + ``test_data_set_0/{input,output}_N.pb``).

A case is eligible when ONNX Runtime loads the fp32 model and runs its test inputs. Each eligible
case then goes through ``edgedeploy build`` itself (``edgedeploy.cli.main`` in-process, so the
CLI's error mapping is what is measured) once per mode:

- ``fp16``: ``--precision fp16 --target x86-64-cpu`` (the default command: range analysis on
  seeded random data);
- ``fp16-data``: the same with ``--calib-data`` set to the case's own inputs (numpy dtypes only);
- ``int8-gpu``: ``--precision int8 --target jetson-orin-nx`` (TensorRT's Q/DQ placement);
- ``int8-cpu``: ``--precision int8 --target x86-64-cpu`` (ONNX Runtime's placement);
  both calibrate on 32 seeded random samples (``--calib-samples 32``: the default 512 makes the
  light real models minutes each and says nothing more about conformance).

Outcomes: ``ok`` (fp16: outputs within fp16 tolerance of the reference outputs, or of ONNX
Runtime's fp32 outputs where those already miss the reference; int8: the Q/DQ model runs),
``refused`` (exit 2 with one line, nothing left in the output folder), ``refused-badly`` (a
refusal of several lines, over 300 characters, or that left an .onnx behind), ``wrong``
(fp16 outputs off while fp32's are fine), ``wrong-fp32-also`` (the fp32 model misses the
reference too), ``invalid`` (an artifact fails ``onnx.checker`` with ``full_check=True``; where
onnx's full check rejects the fp32 model itself, the structural check),
``fails-to-run`` (ONNX Runtime cannot load or run an artifact), ``crash`` (a traceback; grouped
by signature) and ``hang`` (over the per-model timeout).

All runs happen in one worker process (spawned; killed and restarted after a hang). The table
goes to stdout, every case's record to ``--json``. ``--sample N`` takes a fixed, deterministic
sample (by a hash of the case name), which CI runs (tests/test_onnx_corpus.py).

Hand-written: onnx's backend test runner checks a backend's outputs, not a converter's
artifacts, refusals and tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODES: dict[str, list[str]] = {
    "fp16": ["--precision", "fp16", "--target", "x86-64-cpu"],
    "fp16-data": ["--precision", "fp16", "--target", "x86-64-cpu"],
    "int8-gpu": ["--precision", "int8", "--target", "jetson-orin-nx", "--calib-samples", "32"],
    "int8-cpu": ["--precision", "int8", "--target", "x86-64-cpu", "--calib-samples", "32"],
}
OUTCOMES = (
    "ok",
    "refused",
    "refused-badly",
    "wrong",
    "wrong-fp32-also",
    "invalid",
    "fails-to-run",
    "crash",
    "hang",
)
FAILURES = ("refused-badly", "wrong", "invalid", "fails-to-run", "crash", "hang")
MODEL_KINDS = ("pytorch-converted", "pytorch-operator", "simple")
RTOL_FP16 = 1e-2  # fp16 keeps 11 significant bits; a few ops in a row lose about one more digit
ATOL_FP16_SHARE = 1e-2  # of the output's largest finite magnitude (sums cancel into small values)
RTOL_FP32 = 1e-3  # onnx's own backend-test tolerance
ATOL_FP32 = 1e-5
LONG_REFUSAL = 300
DEFAULT_TIMEOUT = 120.0


# ------------------------------------------------------------------ writing the corpus
def _write_value(path: Path, value: Any, vi: Any) -> None:
    from onnx import TensorProto, numpy_helper

    if vi.type.HasField("sequence_type"):
        proto: Any = numpy_helper.from_list(value, vi.name)
    elif vi.type.HasField("optional_type"):
        proto = numpy_helper.from_optional(value, vi.name)
    elif vi.type.HasField("map_type"):
        proto = numpy_helper.from_dict(value, vi.name)
    elif isinstance(value, TensorProto):
        proto = value
    else:
        proto = numpy_helper.from_array(value, vi.name)
    path.write_bytes(proto.SerializeToString())


def _write_case(dest: Path, model: Any, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(model.SerializeToString())
    data = dest / "test_data_set_0"
    data.mkdir(exist_ok=True)
    real_inputs = [vi for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    for j, value in enumerate(inputs):
        _write_value(data / f"input_{j}.pb", value, real_inputs[j])
    for j, value in enumerate(outputs):
        _write_value(data / f"output_{j}.pb", value, model.graph.output[j])


def _light_cases() -> Iterable[tuple[str, Any, list[Any], list[Any]]]:
    """onnx's light real models: inputs as onnx's runner makes them, outputs shipped beside them."""
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.loader import load_model_tests
    from onnx.backend.test.runner import Runner

    root = Path(onnx.__file__).parent
    for case in load_model_tests(kind="real"):
        if not case.url or "/light/" not in case.url:
            continue
        path = root.parent / case.url
        expected = [path.with_name(f"{path.stem}_output_{i}.pb") for i in range(8)]
        if not path.is_file() or not expected[0].is_file():
            continue
        model = onnx.load(os.fspath(path))
        inits = {i.name for i in model.graph.initializer}
        inputs = [
            Runner.generate_dummy_data(vi, seed=0, name=case.model_name, random=False)
            for vi in model.graph.input
            if vi.name not in inits
        ]
        outputs = []
        for i in range(len(model.graph.output)):
            tensor = onnx.TensorProto()
            tensor.ParseFromString(expected[i].read_bytes())
            outputs.append(numpy_helper.to_array(tensor))
        yield f"light/{case.name}", model, inputs, outputs


def write_corpus(dest: Path, n: int | None = None) -> list[Path]:
    """Write the cases (all, or the fixed sample of ``n``: see :func:`sample_names`) under
    ``dest/<kind>/<name>/``; returns the case folders, sorted. A complete corpus is written once."""
    import onnx
    from onnx.backend.test.loader import load_model_tests

    stamp = dest / f".complete-onnx-{onnx.__version__}"
    if stamp.is_file():
        return sample(sorted(p.parent for p in dest.glob("*/*/model.onnx")), n)
    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        node_cases = [c for c in load_model_tests(kind="node") if c.model is not None and c.data_sets]
        model_cases = [(kind, c) for kind in MODEL_KINDS for c in load_model_tests(kind=kind) if c.model_dir]
        names = [f"node/{c.name}" for c in node_cases] + [f"{k}/{c.name}" for k, c in model_cases]
        chosen = set(sample_names(names, n)) if n is not None else None
        for case in node_cases:
            if chosen is not None and f"node/{case.name}" not in chosen:
                continue
            inputs, outputs = case.data_sets[0]
            try:
                _write_case(dest / "node" / case.name, case.model, inputs, outputs)
            except Exception:  # a case onnx itself cannot serialize (rare): leave it out
                shutil.rmtree(dest / "node" / case.name, ignore_errors=True)
        for kind, case in model_cases:
            if chosen is None or f"{kind}/{case.name}" in chosen:
                shutil.copytree(case.model_dir, dest / kind / case.name, dirs_exist_ok=True)
        if chosen is None:
            for name, model, inputs, outputs in _light_cases():
                _write_case(dest / name, model, inputs, outputs)
            stamp.write_text("ok\n")
    return sorted(p.parent for p in dest.glob("*/*/model.onnx"))


def sample_names(names: Iterable[str], n: int | None) -> list[str]:
    """The fixed sample of ``n`` names: the lowest sha256 of ``kind/name``, so it is the same on
    every run and machine. The light real models (VGG-19, DenseNet...) are never sampled: one of
    them takes longer than the whole sampled CI run."""
    pool = sorted(names)
    if n is None:
        return pool
    pool = [name for name in pool if not name.startswith("light/")]
    return sorted(sorted(pool, key=lambda name: hashlib.sha256(name.encode()).hexdigest())[:n])


def sample(cases: Sequence[Path], n: int | None) -> list[Path]:
    """The fixed sample of ``n`` case folders (all of them when ``n`` is None)."""
    chosen = set(sample_names([f"{c.parent.name}/{c.name}" for c in cases], n))
    return [c for c in cases if f"{c.parent.name}/{c.name}" in chosen]


# ------------------------------------------------------------------ reading a case
def _read_value(path: Path, vi: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    data = path.read_bytes()
    kind = vi.type.WhichOneof("value") if vi is not None else "tensor_type"
    proto: Any
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    if kind == "map_type":
        proto = onnx.MapProto()
        proto.ParseFromString(data)
        return numpy_helper.to_dict(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


def read_case(case: Path) -> tuple[Any, dict[str, Any], list[Any]]:
    """The model, its input feed and its reference outputs."""
    import onnx

    model = onnx.load(os.fspath(case / "model.onnx"))
    inits = {i.name for i in model.graph.initializer}
    real_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    data = case / "test_data_set_0"
    feed: dict[str, Any] = {}
    for j, vi in enumerate(real_inputs):
        path = data / f"input_{j}.pb"
        if path.is_file():
            feed[vi.name] = _read_value(path, vi)
    outputs = [
        _read_value(data / f"output_{j}.pb", vi)
        for j, vi in enumerate(model.graph.output)
        if (data / f"output_{j}.pb").is_file()
    ]
    return model, feed, outputs


# ------------------------------------------------------------------ running and comparing
def _session(path_or_bytes: Any, level: str = "all") -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    source = os.fspath(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_model(path_or_bytes: Any, feed: dict[str, Any]) -> list[Any]:
    from calibration.ortvalues import ort_feed

    session = _session(path_or_bytes)
    names = {i.name for i in session.get_inputs()}
    # copies: ONNX Runtime writes BatchNormalization's training-mode running statistics into the
    # input arrays it was handed, which would change the case's inputs for the next mode
    fresh = {k: v.copy() if hasattr(v, "copy") else v for k, v in feed.items() if k in names}
    return list(session.run(None, ort_feed(fresh)))


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in _flatten(value[k])]
    return [value]


def close(got: Any, want: Any, rtol: float, atol_share: float, atol: float = 0.0) -> bool:
    """Element-wise closeness; NaN and Inf must sit where the reference has them."""
    import numpy as np

    from calibration.ortvalues import is_float_dtype

    gs, ws = _flatten(got), _flatten(want)
    if len(gs) != len(ws):
        return False
    for g, w in zip(gs, ws, strict=True):
        if g is None or w is None:
            if (g is None) != (w is None):
                return False
            continue
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return False
        if is_float_dtype(w.dtype) or is_float_dtype(g.dtype):
            g64, w64 = g.astype(np.float64), w.astype(np.float64)
            if not np.array_equal(np.isnan(g64), np.isnan(w64)):
                return False
            finite = np.isfinite(w64)
            if not np.array_equal(g64[~finite & ~np.isnan(w64)], w64[~finite & ~np.isnan(w64)]):
                return False
            gf, wf = g64[finite], w64[finite]
            if gf.size == 0:
                continue
            if not np.all(np.isfinite(gf)):
                return False
            scale = float(np.max(np.abs(wf)))
            if not np.all(np.abs(gf - wf) <= atol + atol_share * scale + rtol * np.abs(wf)):
                return False
        elif not np.array_equal(g, w):
            return False
    return True


@dataclass
class Record:
    case: str
    mode: str
    outcome: str
    seconds: float = 0.0
    detail: str = ""  # the refusal line, the crash signature, the failing check
    signature: str = ""  # crash / fails-to-run / invalid grouping key


@dataclass
class CaseInfo:
    case: str
    eligible: bool
    why: str = ""
    fp32_matches: bool = True
    numpy_inputs: bool = True
    records: list[Record] = field(default_factory=list)


def _signature(exc: BaseException) -> str:
    """Exception type, the innermost frame in our code, and the message with numbers and names blurred."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/edgedeploy/" in f.filename or "/calibration/" in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    place = f"{Path(where.filename).parent.name}/{Path(where.filename).name}:{where.name}" if where else "?"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\d+", "N", text)[:120]
    return f"{type(exc).__name__} in {place}: {text}"


def _error_lines(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next(
        (i for i, ln in enumerate(lines) if ln.startswith("error:") or ln.startswith("FAILED:")), None
    )
    return lines[start:] if start is not None else lines[-1:]


def run_mode(case: Path, mode: str, feed: dict[str, Any], reference: list[Any], fp32_ok: bool) -> Record:
    """One ``edgedeploy build`` of ``case`` in ``mode``, judged against the reference outputs."""
    import numpy as np

    from edgedeploy.cli import main

    start = time.perf_counter()
    name = f"{case.parent.name}/{case.name}"
    with tempfile.TemporaryDirectory(prefix="edgedeploy-corpus-") as scratch:
        out = Path(scratch) / "out"
        argv = ["build", os.fspath(case / "model.onnx"), "-o", os.fspath(out), *MODES[mode]]
        if mode == "fp16-data":
            npz = Path(scratch) / "inputs.npz"
            np.savez(npz, **feed)  # type: ignore[arg-type]
            argv += ["--calib-data", os.fspath(npz)]
        stderr = io.StringIO()
        code: int | str | None = 0
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            return Record(name, mode, "crash", time.perf_counter() - start, _signature(exc), _signature(exc))
        seconds = time.perf_counter() - start
        if code not in (0, None):
            lines = _error_lines(stderr.getvalue())
            text = " / ".join(lines)
            left = sorted(p.name for p in out.glob("*.onnx")) if out.is_dir() else []
            if code != 2 or len(lines) != 1 or len(text) > LONG_REFUSAL or left:
                why = f"exit {code}, {len(lines)} line(s), {len(text)} chars" + (
                    f", left {left}" if left else ""
                )
                return Record(name, mode, "refused-badly", seconds, f"{why}: {text[:400]}", why.split(",")[0])
            return Record(name, mode, "refused", seconds, text)
        precision = MODES[mode][1]
        artifacts = sorted(out.glob("*.onnx"))
        if not artifacts:
            return Record(name, mode, "invalid", seconds, "exit 0 but no .onnx artifact", "no artifact")
        for path in artifacts:
            problem = _check_artifact(path, case / "model.onnx")
            if problem:
                return Record(name, mode, "invalid", seconds, f"{path.name}: {problem}", problem)
        outputs: dict[str, list[Any]] = {}
        for path in artifacts:
            try:
                outputs[path.name] = run_model(path, feed)
            except Exception as exc:
                sig = _signature(exc)
                return Record(name, mode, "fails-to-run", seconds, f"{path.name}: {sig}", sig)
        main_artifact = next((p for p in artifacts if p.name.endswith(f".{precision}.onnx")), artifacts[0])
        got = outputs[main_artifact.name]
        if precision == "int8":
            return Record(name, mode, "ok", seconds, "Q/DQ model runs")
        if close(got, reference, RTOL_FP16, ATOL_FP16_SHARE):
            return Record(name, mode, "ok", seconds)
        if not fp32_ok:
            fp32 = run_model(case / "model.onnx", feed)
            if close(got, fp32, RTOL_FP16, ATOL_FP16_SHARE):
                return Record(name, mode, "ok", seconds, "matches fp32 (fp32 misses the reference)")
            return Record(name, mode, "wrong-fp32-also", seconds, "fp32 misses the reference too")
        return Record(name, mode, "wrong", seconds, _where_off(got, reference))


def _check_artifact(path: Path, source: Path) -> str:
    """'' when ``path`` passes onnx's full check (the structural one where onnx's full check
    rejects the source model itself), else the failure's signature."""
    import onnx

    full = _passes_full_check(path) or _passes_full_check(source)
    try:
        onnx.checker.check_model(os.fspath(path), full_check=full)
    except Exception as exc:
        return _signature(exc)
    return ""


def _passes_full_check(path: Path) -> bool:
    import onnx

    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
    except Exception:
        return False
    return True


def _where_off(got: list[Any], want: list[Any]) -> str:
    import numpy as np

    for i, (g, w) in enumerate(zip(_flatten(got), _flatten(want), strict=False)):
        try:
            g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
            diff = np.nanmax(np.abs(g - w)) if g.shape == w.shape and g.size else float("nan")
            return (
                f"output {i}: max |diff| {diff:.4g}, ref absmax {np.nanmax(np.abs(w)) if w.size else 0:.4g}"
            )
        except (TypeError, ValueError):
            continue
    return "outputs differ"


def judge_case(case: Path, modes: Sequence[str]) -> CaseInfo:
    """Eligibility (ONNX Runtime runs the fp32 model on the test inputs), then every mode."""
    import numpy as np

    from calibration.ortvalues import is_numpy_native

    name = f"{case.parent.name}/{case.name}"
    try:
        model, feed, reference = read_case(case)
        fp32 = run_model(case / "model.onnx", feed)
    except Exception as exc:
        return CaseInfo(name, False, _signature(exc))
    info = CaseInfo(name, True)
    info.fp32_matches = close(fp32, reference, RTOL_FP32, 0.0, ATOL_FP32) if reference else True
    info.numpy_inputs = bool(feed) and all(
        isinstance(v, np.ndarray) and is_numpy_native(v.dtype) for v in feed.values()
    )
    del model
    return info


# ------------------------------------------------------------------ the worker process
def _worker(conn: Any) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    feeds: dict[str, tuple[dict[str, Any], list[Any], bool]] = {}
    while True:
        job = conn.recv()
        if job is None:
            return
        kind, case_dir, mode = job
        case = Path(case_dir)
        if kind == "judge":
            info = judge_case(case, ())
            if info.eligible:
                _, feed, reference = read_case(case)
                feeds = {case_dir: (feed, reference, info.fp32_matches)}
            conn.send(asdict(info))
        else:
            feed, reference, fp32_ok = feeds[case_dir]
            try:
                record = run_mode(case, mode, feed, reference, fp32_ok)
            except BaseException as exc:  # the judging itself failed: report, do not die
                record = Record(
                    f"{case.parent.name}/{case.name}", mode, "crash", 0.0, "", f"judge: {_signature(exc)}"
                )
            conn.send(asdict(record))


class Worker:
    """One spawned worker process; a job over the timeout kills it (by its pid) and starts another."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.proc: Any = None
        self.conn: Any = None

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        self.conn = parent

    def ask(self, job: tuple[str, str, str], timeout: float) -> dict[str, Any] | None:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.conn.send(job)
        if self.conn.poll(timeout):
            try:
                return dict(self.conn.recv())
            except EOFError:
                self.stop()
                return {"died": True}
        self.stop()
        return None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(10)
        self.stop()


def run_corpus(
    cases: Sequence[Path],
    modes: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    progress: Any = None,
) -> list[CaseInfo]:
    worker = Worker()
    infos: list[CaseInfo] = []
    try:
        for k, case in enumerate(cases):
            name = f"{case.parent.name}/{case.name}"
            answer = worker.ask(("judge", os.fspath(case), ""), timeout)
            if answer is None or "died" in answer:
                infos.append(CaseInfo(name, False, "fp32 run hangs or kills the process"))
                continue
            records = [Record(**r) for r in answer.pop("records")]
            info = CaseInfo(**answer, records=records)
            infos.append(info)
            if info.eligible:
                for mode in modes:
                    if mode == "fp16-data" and not info.numpy_inputs:
                        continue
                    start = time.perf_counter()
                    result = worker.ask(("run", os.fspath(case), mode), timeout)
                    if result is None:
                        rec = Record(
                            name, mode, "hang", time.perf_counter() - start, f"over {timeout:.0f} s", "hang"
                        )
                    elif "died" in result:
                        rec = Record(
                            name, mode, "crash", time.perf_counter() - start, "worker died", "worker died"
                        )
                    else:
                        rec = Record(**result)
                    info.records.append(rec)
                    if result is None or "died" in result:  # the worker is new: it needs the case again
                        worker.ask(("judge", os.fspath(case), ""), timeout)
            if progress is not None:
                progress(k + 1, len(cases), info)
    finally:
        worker.close()
    return infos


def _info(data: dict[str, Any]) -> CaseInfo:
    records = [Record(**r) for r in data.pop("records")]
    return CaseInfo(**data, records=records)


# ------------------------------------------------------------------ the table
def summarize(infos: Sequence[CaseInfo], modes: Sequence[str]) -> dict[str, Any]:
    eligible = [i for i in infos if i.eligible]
    per_mode: dict[str, Any] = {}
    for mode in modes:
        records = [r for i in eligible for r in i.records if r.mode == mode]
        counts = Counter(r.outcome for r in records)
        per_mode[mode] = {
            "runs": len(records),
            **{o: counts.get(o, 0) for o in OUTCOMES},
            "signatures": Counter(r.signature for r in records if r.outcome in FAILURES).most_common(),
            "refusals": Counter(_reason(r.detail) for r in records if r.outcome == "refused").most_common(),
            "failures": [asdict(r) for r in records if r.outcome in FAILURES],
        }
    return {
        "cases": len(infos),
        "eligible": len(eligible),
        "ineligible": Counter(_reason(i.why) for i in infos if not i.eligible).most_common(10),
        "fp32_misses_reference": sum(1 for i in eligible if not i.fp32_matches),
        "modes": per_mode,
    }


def _reason(line: str) -> str:
    """A refusal line with names and numbers blurred, so that refusals group by reason."""
    text = re.sub(r"'[^']*'", "'…'", line.removeprefix("error: "))
    text = re.sub(r"\S*/\S+", "PATH", text)
    text = re.sub(r"\b\w*\d\w*\b", "N", text)
    return text[:140]


def print_table(summary: dict[str, Any], modes: Sequence[str], out: Any = sys.stdout) -> None:
    print(
        f"cases {summary['cases']}, eligible {summary['eligible']} (ONNX Runtime runs the fp32 model; "
        f"{summary['fp32_misses_reference']} of them miss onnx's reference outputs in fp32)",
        file=out,
    )
    header = f"{'mode':<10}" + "".join(f"{o:>16}" for o in ("runs", *OUTCOMES))
    print(header, file=out)
    for mode in modes:
        m = summary["modes"][mode]
        print(f"{mode:<10}" + "".join(f"{m[o]:>16}" for o in ("runs", *OUTCOMES)), file=out)
    for mode in modes:
        m = summary["modes"][mode]
        if m["signatures"]:
            print(f"\n{mode}: failures by signature", file=out)
            for sig, count in m["signatures"]:
                print(f"  {count:>4}  {sig}", file=out)
        if m["refusals"]:
            print(f"\n{mode}: refusals by reason", file=out)
            for why, count in m["refusals"]:
                print(f"  {count:>4}  {why}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "edgedeploy-onnx-corpus")
    parser.add_argument("--sample", type=int, default=None, help="run a fixed sample of N cases")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per model and mode")
    parser.add_argument(
        "--match",
        default=None,
        help="only cases whose kind/name contains one of these (comma-separated)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every record here")
    parser.add_argument("--shard", default=None, help="K/N: run every N-th case from the K-th (0-based)")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="print the table of these --json files together"
    )
    args = parser.parse_args(argv)
    if args.merge:
        infos = [_info(c) for path in args.merge for c in json.loads(path.read_text())["cases"]]
        modes = [m for m in MODES if any(r.mode == m for i in infos for r in i.records)]
        summary = summarize(infos, modes)
        print_table(summary, modes)
        if args.json:
            args.json.write_text(
                json.dumps({"summary": summary, "cases": [asdict(i) for i in infos]}, indent=1)
            )
        return 0
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}")
    start = time.perf_counter()
    cases = write_corpus(args.corpus)
    if args.match:
        wanted = args.match.split(",")
        cases = [c for c in cases if any(w in f"{c.parent.name}/{c.name}" for w in wanted)]
    cases = sample(cases, args.sample)
    if args.shard:
        k, n = (int(x) for x in args.shard.split("/"))
        cases = cases[k::n]

    def progress(done: int, total: int, info: CaseInfo) -> None:
        bad = [r for r in info.records if r.outcome in FAILURES]
        if bad or done % 100 == 0 or done == total:
            note = "; ".join(f"{r.mode} {r.outcome}: {(r.signature or r.detail)[:150]}" for r in bad)
            print(f"[{done}/{total}] {info.case} {note}", file=sys.stderr, flush=True)

    infos = run_corpus(cases, modes, args.timeout, progress)
    summary = summarize(infos, modes)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print_table(summary, modes)
    print(f"\n{summary['seconds']} s", file=sys.stdout)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": [asdict(i) for i in infos]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
