#!/usr/bin/env python3
"""Compare a device run's outputs with the bundle's stored fp32 reference, using its gates.

Runs on the device with python3 and NumPy only. The candidate outputs come from trtexec's
``--exportOutput`` JSON (a list of {name, dimensions "AxB", values}) or, for ONNX Runtime
bundles, from running the model here. Metrics and gates mirror edgedeploy.stages.compare: cosine,
top-1 agreement, NaN/Inf, and atol/rtol only when the gates ask for it (check_allclose).
Exit 0 pass, 1 accuracy fail, 2 missing or mismatched outputs.

It runs on the board's own python3: 3.6 on JetPack 4.6 (Nano, TX2), 3.8 on JetPack 5. So no
syntax or library call newer than 3.6 (no walrus, no zip(strict=), no PEP 585/604 annotations
evaluated at run time; tests/device/test_device_python.py checks).
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    import numpy as np
except ImportError:  # exit 2 ("cannot check here"), never 1 ("accuracy failed") with a traceback
    if __name__ == "__main__":
        print("error: python3 module numpy is needed here (apt install python3-numpy)", file=sys.stderr)
        sys.exit(2)
    raise

try:  # bundle_helper's (temp + rename), as tegrastats_power.py takes it: beside this file in scripts/
    from bundle_helper import atomic_write
except ImportError:  # in the package on a workstation
    from edgedeploy.device.bundle_helper import atomic_write

VALUES = re.compile(r'("values"\s*:\s*)\[([^\]]*)\]')


class OutputsProblem(Exception):
    """The device run's outputs cannot be read (exit 2)."""


def load_trtexec_outputs(path: Path) -> Dict[str, np.ndarray]:
    """trtexec's ``--exportOutput`` file: a JSON list of {name, dimensions "AxB", values}.

    It is not always JSON: exportJSONOutput() (trtexec's sampleReporting.cpp) prints each value
    with C++ ``os << float``, so NaN and infinity appear as the bare words nan, -nan, inf and -inf.
    The value lists are therefore read number by number (Python's float() takes those words) and
    only the rest is parsed as JSON.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise OutputsProblem(f"cannot read trtexec's output file {path}: {exc}") from None
    columns: List[np.ndarray] = []

    def take(match: "re.Match[str]") -> str:  # a string: re.Match is Python 3.7 and later
        items = [item.strip() for item in match.group(2).split(",") if item.strip()]
        try:
            columns.append(np.array([float(item) for item in items], dtype=np.float64))
        except ValueError as exc:
            raise OutputsProblem(f"{path} holds a value that is no number ({exc})") from None
        return f"{match.group(1)}{len(columns) - 1}"

    try:
        data = json.loads(VALUES.sub(take, text))
    except ValueError as exc:
        raise OutputsProblem(f"{path} is not in trtexec's --exportOutput format ({exc})") from None
    if not isinstance(data, list):
        raise OutputsProblem(f"trtexec's output file {path} is not a list of outputs")
    outputs = {}
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), int) or "name" not in entry:
            raise OutputsProblem(f"trtexec's output file {path} has an entry without name and values")
        dims = [int(d) for d in str(entry.get("dimensions", "")).split("x") if d.strip().isdigit()]
        values = columns[entry["values"]]
        outputs[str(entry["name"])] = (
            values.reshape(dims) if dims and int(np.prod(dims)) == values.size else values
        )
    return outputs


def finite_or_none(value: Any) -> Any:
    """NaN and infinity as null, so the results file stays JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def run_onnxruntime(model: Path, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    # NchwcTransformer kills the process on some float16 graphs (a Transpose feeding a MatMul with
    # constant weights; docs/design.md, "ONNX Runtime crashes on some fp16 graphs"); it only lays
    # out float32 convolutions for speed, which a check of the outputs does not need
    try:
        session = ort.InferenceSession(
            str(model), providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"]
        )
        names = [o.name for o in session.get_outputs()]
        declared = {i.name: i.type for i in session.get_inputs()}
        feeds = {n: as_declared(a, declared[n]) if n in declared else a for n, a in inputs.items()}
        return dict(zip(names, session.run(names, feeds)))  # one array per name asked for
    except Exception as exc:  # ONNX Runtime's errors (InvalidArgument, Fail) are bare Exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputsProblem(f"ONNX Runtime cannot run {model} on the reference inputs: {first}") from None


# ONNX Runtime's floating input types (NodeArg.type) -> NumPy dtypes
ORT_FLOATS = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def as_declared(arr: np.ndarray, ort_type: str) -> np.ndarray:
    """A floating reference input in the floating dtype the model declares: the reference inputs are
    the fp32 model's, and an fp16 model built without kept io types takes float16 (its float16
    outputs are compared in float64, as every output is)."""
    dtype = ORT_FLOATS.get(ort_type)
    if dtype is None or arr.dtype.kind != "f" or arr.dtype == np.dtype(dtype):
        return arr
    return arr.astype(dtype)


def metrics(ref: np.ndarray, cand: np.ndarray, gates: Dict[str, Any]) -> Dict[str, Any]:
    """As the host's compare (edgedeploy/stages/compare/outputs.py): bool and integer outputs are
    gated on their share of equal elements, an output of another shape fails."""
    if np.size(ref) != np.size(cand):  # a data-dependent size (NonZero, NMS) that came out otherwise
        why = f"{np.size(cand)} values, reference {np.size(ref)}"
        return {
            "max_abs": float("inf"),
            "mean_abs": float("inf"),
            "cosine": float("nan"),
            "top1_agreement": None,
            "equal_share": None,
            "allclose": False,
            "nan_inf": 0,
            "failures": [f"another shape than the reference's ({why})"],
        }
    discrete = np.asarray(ref).dtype.kind in "biu"
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    c = np.asarray(cand, dtype=np.float64).reshape(-1)
    nan_inf = int((~np.isfinite(c)).sum())
    finite = np.isfinite(r) & np.isfinite(c)
    rf, cf = r[finite], c[finite]
    abs_err = np.abs(rf - cf) if rf.size else np.array([np.inf])
    denom = float(np.linalg.norm(rf) * np.linalg.norm(cf))
    cosine = float(np.dot(rf, cf) / denom) if denom > 0 else (1.0 if not rf.any() and not cf.any() else 0.0)
    if nan_inf:
        cosine = float("nan")
    top1 = None
    equal = (float(np.mean(r == c)) if r.size else 1.0) if discrete else None
    ref2 = np.asarray(ref)
    if not discrete and ref2.ndim == 2 and ref2.shape[1] >= 2:
        top1 = float(np.mean(ref2.argmax(axis=1) == np.asarray(cand).reshape(ref2.shape).argmax(axis=1)))
    atol, rtol = float(gates.get("atol", 1e-3)), float(gates.get("rtol", 1e-3))
    allclose = bool(nan_inf == 0 and np.all(abs_err <= atol + rtol * np.abs(rf)))
    failures = []
    if nan_inf:
        failures.append(f"{nan_inf} NaN/Inf values")
    if gates.get("min_cosine") is not None and equal is not None and not equal >= float(gates["min_cosine"]):
        failures.append(f"equal elements {equal:.4f} < {gates['min_cosine']} (a bool/integer output)")
    elif gates.get("min_cosine") is not None and equal is None and not cosine >= float(gates["min_cosine"]):
        failures.append(f"cosine {cosine:.6f} < {gates['min_cosine']}")
    if gates.get("min_top1") is not None and top1 is not None and top1 < float(gates["min_top1"]):
        failures.append(f"top-1 agreement {top1:.4f} < {gates['min_top1']}")
    if gates.get("check_allclose") and not allclose:
        failures.append(f"max abs error {float(abs_err.max()):.3g} exceeds atol={atol} + rtol={rtol}*|ref|")
    return {
        "max_abs": float(abs_err.max()),
        "mean_abs": float(abs_err.mean()),
        "cosine": cosine,
        "top1_agreement": top1,
        "equal_share": equal,
        "allclose": allclose,
        "nan_inf": nan_inf,
        "failures": failures,
    }


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return _main(argv)
    except ImportError as exc:
        print(f"error: python3 module {exc.name or exc} is needed here", file=sys.stderr)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        print(f"error: cannot compare with the reference ({type(exc).__name__}: {exc})", file=sys.stderr)
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    return 2


def _main(argv: Optional[List[str]]) -> int:
    parser = argparse.ArgumentParser(description="Compare device outputs with the bundle's fp32 reference.")
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent.parent)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trtexec-json", type=Path, help="trtexec --exportOutput file")
    source.add_argument("--onnxruntime", type=Path, help="run this ONNX model here on the reference inputs")
    parser.add_argument("--json", type=Path, help="write the metrics here")
    args = parser.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text(encoding="utf-8"))
    ref = manifest.get("reference") or {}
    gates = manifest.get("gates") or {}
    with np.load(args.bundle / ref["outputs"]) as data:
        expected = {n: data[n] for n in data.files}
    if args.trtexec_json:
        try:
            got = load_trtexec_outputs(args.trtexec_json)
        except OutputsProblem as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        with np.load(args.bundle / ref["inputs"]) as data:
            feeds = {n: data[n] for n in data.files}
        try:
            got = run_onnxruntime(args.onnxruntime, feeds)
        except OutputsProblem as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    results: Dict[str, Any] = {}
    for name, ref_arr in expected.items():
        if name not in got:
            print(
                f"error: output '{name}' missing from the device run (it has: {', '.join(got)})",
                file=sys.stderr,
            )
            return 2
        results[name] = metrics(ref_arr, got[name], gates)
    passed = not any(m["failures"] for m in results.values())
    for name, m in results.items():
        top1 = "-" if m["top1_agreement"] is None else f"{m['top1_agreement']:.4f}"
        verdict = "pass" if not m["failures"] else "FAIL: " + "; ".join(m["failures"])
        print(f"  {name}: max_abs {m['max_abs']:.3g}  cosine {m['cosine']:.6f}  top1 {top1}  {verdict}")
    if args.json:
        report = finite_or_none({"passed": passed, "gates": gates, "outputs": results})
        try:
            atomic_write(args.json, json.dumps(report, indent=2) + "\n")
        except OSError as exc:  # a full disk names no file: say which one was not written
            print(f"error: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    print("accuracy: pass" if passed else "accuracy: FAIL (gates in manifest.json)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
