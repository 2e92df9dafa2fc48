#!/usr/bin/env python3
"""Compare a device run's outputs with the bundle's stored fp32 reference, using its gates.

Runs on the device with python3 and NumPy only. The candidate outputs come from trtexec's
``--exportOutput`` JSON (a list of {name, dimensions "AxB", values}) or, for ONNX Runtime
bundles, from running the model here. Metrics and gates are edgedeploy.stages.compare's, figure for
figure (tests/device/test_verify_outputs_metrics.py feeds both the same arrays): cosine and norm
ratio (the cosine gate fails a float output off in scale too, see scale_cosine), argmax agreement,
equal share of bool/integer outputs, NaN/Inf unlike the reference's, and atol/rtol only when the
gates ask for it (check_allclose).
Exit 0 pass, 1 accuracy fail, 2 missing or mismatched outputs.

It runs on the board's own python3: 3.6 on JetPack 4.6 (Nano, TX2), 3.8 on JetPack 5. So no
syntax or library call newer than 3.6 (no walrus, no zip(strict=), no PEP 585/604 annotations
evaluated at run time; tests/device/test_device_python.py checks).
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

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

    It is not always JSON: trtexec prints each value with C++ ``os << float``, so NaN and infinity
    appear as the bare words nan, -nan, inf and -inf (docs/tensorrt-facts.md, "trtexec").
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


def nonfinite_as_text(value: Any) -> Any:
    """NaN and infinities as the strings "NaN", "Infinity" and "-Infinity", as compare's JSON writes
    them (edgedeploy/results.py): the results file stays standard JSON, float() reads them back,
    and an infinite error is not the null of a figure there is none of."""
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN" if np.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: nonfinite_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nonfinite_as_text(v) for v in value]
    return value


def run_onnxruntime(model: Path, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    # ONNX Runtime's Linux wheels from 1.32 send usage telemetry and, on import, write a device id
    # and an event database under ~/.cache/Microsoft and a .ses file into TMPDIR: off, as edgedeploy
    # turns it off (calibration/__init__.py; docs/design.md, "Offline"), unless the user set them
    for name in ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED"):
        os.environ.setdefault(name, "1")
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
    outputs are compared in float64, as every output is). Text (fixed-width strings in the npz)
    as an object array."""
    if ort_type == "tensor(string)" and arr.dtype.kind in "SU":
        # text as str objects, as the host fed it: from a fixed-width array ONNX Runtime takes an
        # item only up to its first NUL character
        return arr.astype(object)
    dtype = ORT_FLOATS.get(ort_type)
    if dtype is None or arr.dtype.kind != "f" or arr.dtype == np.dtype(dtype):
        return arr
    return arr.astype(dtype)


def top1_limit(min_top1: Any, name: str) -> Optional[float]:
    """The argmax (top-1) agreement output ``name`` must reach under a ``min_top1`` gate: a number
    gates every output that has one (2-D float), a {output: value} mapping the outputs it names
    only, and every other one at its "" key's value where it has one (as Polygraphy's per-output
    ``--atol 1e-5 out0:1e-3``); None: not gated. The host's gate reads it here too
    (edgedeploy/stages/compare/gates.py)."""
    if isinstance(min_top1, dict):
        value = min_top1.get(name, min_top1.get(""))
        return None if value is None else float(value)
    return None if min_top1 is None else float(min_top1)


def metrics(ref: np.ndarray, cand: np.ndarray, gates: Dict[str, Any]) -> Dict[str, Any]:
    """As the host's compare (edgedeploy/stages/compare/outputs.py, output_metrics and gate_failures),
    figure for figure: bool and integer outputs are gated on their share of equal elements, an output
    of another shape fails, and a NaN/Inf the candidate does not reproduce is an infinite error."""
    if np.size(ref) != np.size(cand):  # a data-dependent size (NonZero, NMS) that came out otherwise
        why = f"{np.size(cand)} values, reference {np.size(ref)}"
        return {
            "max_abs": float("inf"),
            "mean_abs": float("inf"),
            "cosine": float("nan"),
            "norm_ratio": None,
            "top1_agreement": None,
            "top1_gated": None,
            "equal_share": None,
            "allclose": False,
            "nan_inf": 0,
            "nonfinite_mismatches": 0,
            "identical": False,
            "failures": [f"another shape than the reference's ({why})"],
        }
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # Inf/NaN are counted, not warned
        return _metrics(np.asarray(ref), np.asarray(cand), gates)


class Pairs(NamedTuple):
    """The figures both sides' metrics are made of (:func:`finite_pairs`)."""

    ref: np.ndarray  # float64, the pairs where both sides are finite
    cand: np.ndarray
    abs_err: np.ndarray  # |ref - cand| over those pairs (integers in their own dtype); [0.0] if none
    nan: int  # NaN in the candidate
    inf: int  # Inf in the candidate
    reference_nan_inf: int
    mismatches: int  # pairs with a NaN/Inf side unlike the other: each an infinite error
    discrete: bool  # a bool/integer reference, gated on its equal share
    cosine: float  # over the finite pairs
    norm_ratio: Optional[float]  # norm(candidate) / norm(reference) over them; None for bool/integer
    equal_share: Optional[float]  # bool/integer outputs: the share of elements equal
    identical: bool  # every element equal, a reproduced NaN/Inf included


def finite_pairs(ref: np.ndarray, cand: np.ndarray) -> Pairs:
    """The finite/non-finite split of two flat arrays of one size, for this file's :func:`metrics`
    and the host's compare (edgedeploy/stages/compare/outputs.py) alike: in float64, a NaN or Inf
    the candidate reproduces (the same infinity, NaN for NaN) is equal, and any other pair with a
    NaN/Inf side differs by an infinite error, as numpy's allclose(1, inf) is False; the figures
    are over the finite pairs, integers compared in their own dtype (in float64 ids + 2**60 and
    ids + 2**60 + 1 are equal). Call it with NumPy's warnings off (Inf/NaN are counted)."""
    discrete = ref.dtype.kind in "biu"
    r_all, c_all = ref.astype(np.float64), cand.astype(np.float64)
    nan, inf = int(np.isnan(c_all).sum()), int(np.isinf(c_all).sum())
    ref_ok, cand_ok = np.isfinite(r_all), np.isfinite(c_all)
    finite = ref_ok & cand_ok
    reproduced = ~ref_ok & ((r_all == c_all) | (np.isnan(r_all) & np.isnan(c_all)))
    mismatches = int(np.count_nonzero(~finite & ~reproduced))
    r, c = r_all[finite], c_all[finite]
    abs_err = integer_abs_error(ref, cand) if discrete and cand.dtype.kind in "biu" else np.abs(r - c)
    if abs_err.size == 0:  # no finite pair (an empty output, NonZero with no hits): no error among them
        abs_err = np.zeros(1)
    return Pairs(
        ref=r,
        cand=c,
        abs_err=abs_err,
        nan=nan,
        inf=inf,
        reference_nan_inf=int(r_all.size - np.count_nonzero(ref_ok)),
        mismatches=mismatches,
        discrete=discrete,
        cosine=cosine_of(r, c, not np.any(abs_err)),
        norm_ratio=None if discrete else norm_ratio_of(r, c, not np.any(abs_err)),
        equal_share=(float(np.mean(abs_err == 0)) if r_all.size else 1.0) if discrete else None,
        identical=not mismatches and not np.any(abs_err),
    )


def _metrics(ref: np.ndarray, cand: np.ndarray, gates: Dict[str, Any]) -> Dict[str, Any]:
    pairs = finite_pairs(ref.reshape(-1), cand.reshape(-1))
    r, abs_err, mismatches, cosine = pairs.ref, pairs.abs_err, pairs.mismatches, pairs.cosine
    discrete, equal, nan, inf = pairs.discrete, pairs.equal_share, pairs.nan, pairs.inf
    atol, rtol = float(gates.get("atol", 1e-3)), float(gates.get("rtol", 1e-3))
    allclose = bool(not mismatches and np.all(abs_err <= atol + rtol * np.abs(r)))
    max_abs = float("inf") if mismatches else float(abs_err.max())
    top1 = None
    if not discrete and ref.ndim == 2 and ref.shape[1] >= 2 and ref.shape[0]:  # no rows: no top-1
        top1 = float(np.mean(ref.argmax(axis=1) == cand.reshape(ref.shape).argmax(axis=1)))
    failures = []
    if mismatches:  # NaN/Inf where the reference holds another value, or the reverse
        failures.append(
            f"{mismatches} NaN/Inf value(s) unlike the reference's (the candidate holds {nan} NaN and "
            f"{inf} Inf, the reference {pairs.reference_nan_inf} NaN/Inf)"
        )
    if gates.get("min_cosine") is not None and equal is not None and not equal >= float(gates["min_cosine"]):
        failures.append(f"equal elements {equal:.4f} < {gates['min_cosine']} (a bool/integer output)")
    elif gates.get("min_cosine") is not None and equal is None and not cosine >= float(gates["min_cosine"]):
        failures.append(f"cosine {cosine:.6f} < {gates['min_cosine']}")
    scale = None if equal is not None else scale_failure(pairs.norm_ratio, gates.get("min_cosine"))
    if scale is not None:
        failures.append(scale)
    if gates.get("min_top1") is not None and top1 is not None and not top1 >= float(gates["min_top1"]):
        failures.append(f"argmax agreement {top1:.4f} < {gates['min_top1']}")
    if gates.get("check_allclose") and not allclose:
        failures.append(f"max abs error {max_abs:.3g} exceeds atol={atol} + rtol={rtol}*|ref|")
    return {
        "max_abs": max_abs,
        "mean_abs": float(abs_err.mean()),
        "cosine": cosine,
        "norm_ratio": pairs.norm_ratio,
        "top1_agreement": top1,
        "top1_gated": None if top1 is None or gates.get("min_top1") is None else float(gates["min_top1"]),
        "equal_share": equal,
        "allclose": allclose,
        "nan_inf": nan + inf,
        "nonfinite_mismatches": mismatches,
        "identical": pairs.identical,
        "failures": failures,
    }


def integer_abs_error(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """|ref - cand| of two integer (or bool) arrays, exact in their own dtype, then as float64 (a
    difference of 1 between values beyond 2**53 stays 1): unsigned, as int64 moved up by 2**63 into
    uint64 (order kept, no overflow), or, for int64 beside uint64, in Python ints."""
    common = np.result_type(ref, cand)
    if common.kind == "f":  # int64 and uint64: no integer dtype holds both
        return np.abs(ref.astype(object) - cand.astype(object)).astype(np.float64)
    if common.kind == "i":
        shift = np.uint64(1 << 63)
        a, b = ref.astype(np.int64).view(np.uint64) ^ shift, cand.astype(np.int64).view(np.uint64) ^ shift
    else:
        a, b = ref.astype(np.uint64), cand.astype(np.uint64)
    return np.where(a >= b, a - b, b - a).astype(np.float64)


def norm_ratio_of(r: np.ndarray, c: np.ndarray, equal: bool) -> float:
    """norm(c) / norm(r): the scale a cosine cannot see (100 * r has cosine 1). Exactly 1 where
    they are ``equal`` (both all zeros included), infinite where only ``r`` is all zeros."""
    if equal:
        return 1.0
    ref_norm, cand_norm = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    return cand_norm / ref_norm if ref_norm > 0 else (float("inf") if cand_norm > 0 else 1.0)


def scale_cosine(norm_ratio: float) -> float:
    """The cosine gate's reading of a scale: an output off by a factor ``norm_ratio`` is held to the
    bound its direction is held to, |norm_ratio - 1| <= sqrt(1 - min_cosine**2) (the sine of the
    largest angle the gate lets through; 1 for min_cosine <= 0). As a cosine: sqrt(1 - d**2) for
    d = |norm_ratio - 1| up to 1, -1 beyond (fails every gate); so the gate passes when
    min(cosine, scale_cosine) >= min_cosine. docs/design.md "The cosine gate checks scale"."""
    d = abs(norm_ratio - 1.0)
    return float(np.sqrt(1.0 - d * d)) if d <= 1.0 else -1.0


def scale_failure(norm_ratio: Optional[float], min_cosine: Optional[float]) -> Optional[str]:
    """The cosine gate's failure for a float output off in scale (:func:`scale_cosine`), or None;
    one message for the host and the device."""
    if norm_ratio is None or min_cosine is None or scale_cosine(norm_ratio) >= float(min_cosine):
        return None
    bound = float(np.sqrt(1.0 - float(min_cosine) ** 2)) if float(min_cosine) > 0 else 1.0
    return (
        f"norm ratio {norm_ratio:.6f} (candidate / reference): off 1 by more than {bound:.6f}, "
        f"the cosine gate's bound sqrt(1 - {min_cosine}**2)"
    )


def cosine_of(r: np.ndarray, c: np.ndarray, equal: bool) -> float:
    """The cosine of two equal-length float64 vectors: exactly 1 where they are ``equal`` (dot / norms
    rounds to 0.9999999999999999 or 1.0000000000000002), else within [-1, 1]; 0 where one is all
    zeros and the other is not."""
    if equal:
        return 1.0
    denom = float(np.linalg.norm(r) * np.linalg.norm(c))
    return min(1.0, max(-1.0, float(np.dot(r, c)) / denom)) if denom > 0 else 0.0


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
    if not expected:  # a bundle of a model with no tensor output: a check of nothing cannot fail
        print(
            f"error: {ref['outputs']} holds no output to compare (the model gives no numeric tensor): "
            "nothing was verified",
            file=sys.stderr,
        )
        return 2
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
        # a per-output min_top1 ({output: value}) is this output's value or none
        own = dict(gates, min_top1=top1_limit(gates.get("min_top1"), name))
        results[name] = metrics(ref_arr, got[name], own)
    passed = not any(m["failures"] for m in results.values())
    for name, m in results.items():
        top1 = "-" if m["top1_agreement"] is None else f"{m['top1_agreement']:.4f}"
        verdict = "pass" if not m["failures"] else "FAIL: " + "; ".join(m["failures"])
        ratio = "-" if m["norm_ratio"] is None else f"{m['norm_ratio']:.6f}"
        print(
            f"  {name}: max_abs {m['max_abs']:.3g}  cosine {m['cosine']:.6f}  norm ratio {ratio}  "
            f"top1 {top1}  {verdict}"
        )
    if args.json:
        report = nonfinite_as_text({"passed": passed, "gates": gates, "outputs": results})
        try:
            atomic_write(args.json, json.dumps(report, indent=2) + "\n")
        except OSError as exc:  # a full disk names no file: say which one was not written
            print(f"error: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    print("accuracy: pass" if passed else "accuracy: FAIL (gates in manifest.json)")
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: one line and exit 130, as edgedeploy (temporary files are gone)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
