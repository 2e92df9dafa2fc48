"""The device's verify_outputs.metrics decides as the host's compare (output_metrics, gate_failures):
the same arrays, the same gates, the same figures and failures. It is a copy (it ships alone in the
bundle and runs on the board's python3 with NumPy), and it kept what compare had fixed: it dropped
a reference NaN/Inf the candidate did not reproduce and failed on every candidate NaN/Inf, gave an
empty output max abs inf, an unclamped cosine, cast integers to float64, and wrote non-finite
figures as null."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgedeploy.device import verify_outputs
from edgedeploy.stages.compare.gates import Gates
from edgedeploy.stages.compare.outputs import OutputMetrics, output_metrics


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def both(ref: np.ndarray, cand: np.ndarray, gates: Gates) -> tuple[OutputMetrics, dict[str, Any]]:
    """The host's metrics of one batch and the device's, which must agree figure for figure."""
    host = output_metrics("y", [ref], [cand], gates)
    device = verify_outputs.metrics(ref, cand, gates.manifest())
    ours = {
        "max_abs": host.max_abs,
        "mean_abs": host.mean_abs,
        "cosine": host.cosine,
        "norm_ratio": host.norm_ratio,
        "top1_agreement": host.top1_agreement,
        "equal_share": host.equal_share,
        "allclose": host.allclose,
        "nan_inf": host.nan_count + host.inf_count,
        "failures": host.failures,
    }
    differ = {k: (v, device.get(k)) for k, v in ours.items() if not same(v, device.get(k))}
    assert not differ, f"host vs device: {differ}"
    return host, device


def test_device_nonfinite_values_decide_as_on_the_host() -> None:
    """A reference Inf beside a finite candidate value passed on the device (the pair was dropped);
    the reference against itself failed there for carrying its NaN/Inf."""
    strict = Gates(atol=0.0, rtol=0.0, min_cosine=1.0, check_allclose=True)
    ref = np.array([[np.inf, 0.1, 0.1, 0.1]], np.float32)
    host, device = both(ref, np.array([[1.0, 0.1, 0.1, 0.1]], np.float32), strict)
    assert device["max_abs"] == math.inf and not device["allclose"] and device["failures"]
    ref = np.array([np.inf, -np.inf, np.nan, 1.0, 2.0, 3.0], np.float32)
    host, device = both(ref, ref.copy(), strict)
    assert device["failures"] == [] and device["max_abs"] == 0.0 and device["cosine"] == 1.0
    cand = np.array([-np.inf, -np.inf, 5.0, np.nan, 2.0, 3.0], np.float32)  # +inf/-inf, NaN/5, 1/NaN
    host, device = both(ref, cand, Gates(min_cosine=None))
    assert host.nonfinite_mismatches == 3 and device["max_abs"] == math.inf and device["failures"]
    logits = np.array([[0.5, 0.2, 0.3], [0.1, 0.7, 0.2]], np.float32)  # trtexec's nan, -nan, inf
    both(logits, np.array([[np.nan, -np.nan, np.inf], [0.1, 0.7, 0.2]]), Gates(min_top1=0.5))


def test_device_empty_outputs_of_equal_shapes_pass_as_on_the_host() -> None:
    idx = np.zeros((2, 0), np.int64)
    _, device = both(idx, idx.copy(), Gates(check_allclose=True))
    assert (device["max_abs"], device["cosine"], device["equal_share"], device["failures"]) == (0, 1, 1, [])
    empty = np.zeros((0, 4), np.float32)
    _, device = both(empty, empty.copy(), Gates(min_cosine=1.0, min_top1=0.9))
    assert device["top1_agreement"] is None and device["failures"] == []
    nan = np.full((2, 3), np.nan, np.float32)
    assert both(nan, nan.copy(), Gates(min_cosine=1.0))[1]["failures"] == []


def test_device_cosine_of_identical_outputs_is_exactly_1_and_every_cosine_within_1() -> None:
    a = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    _, device = both(a, a.copy(), Gates(min_cosine=1.0))
    assert device["cosine"] == 1.0 and device["failures"] == []
    b = a.copy()
    b[0, 0] = np.nextafter(b[0, 0], np.float32(10))
    assert -1.0 <= both(a, b, Gates(min_cosine=None))[1]["cosine"] <= 1.0
    assert both(a, -a, Gates(min_cosine=None))[1]["cosine"] >= -1.0
    many = np.full(1000, 0.1, np.float32)  # dot / (norm * norm) rounds to 1.0000000000000002
    assert both(many, many.copy(), Gates(min_cosine=1.0))[1]["cosine"] == 1.0


def test_device_integer_outputs_are_compared_in_their_own_dtype_as_on_the_host() -> None:
    ids = np.arange(8, dtype=np.int64).reshape(2, 4) + 2**60
    _, device = both(ids, ids + 1, Gates())
    assert device["equal_share"] == 0.0 and device["max_abs"] == 1.0 and device["failures"]
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    _, device = both(np.array([lo, 0]), np.array([hi, 0]), Gates(min_cosine=None))
    assert device["max_abs"] == float(2**64 - 1) and device["equal_share"] == 0.5
    top = np.array([np.iinfo(np.uint64).max, 0], np.uint64)
    assert both(top, np.array([-1, 0], np.int64), Gates(min_cosine=None))[1]["max_abs"] == float(2**64)
    mask = np.array([True, False, True, True])
    assert both(mask, ~mask, Gates())[1]["equal_share"] == 0.0
    both(ids, (ids + 1).astype(np.float64), Gates())  # trtexec gives every output as numbers


def _bundle(tmp_path: Path, ref: dict[str, np.ndarray], got: dict[str, list[float]]) -> list[str]:
    """A bundle holding only what verify_outputs reads, and trtexec's export of ``got``."""
    (tmp_path / "reference").mkdir()
    np.savez(tmp_path / "reference" / "outputs.npz", **ref)
    manifest = {"reference": {"outputs": "reference/outputs.npz"}, "gates": Gates().manifest()}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    exported = [{"name": n, "dimensions": str(len(v)), "values": v} for n, v in got.items()]
    (tmp_path / "out.json").write_text(json.dumps(exported).replace("Infinity", "inf"))
    return ["--bundle", str(tmp_path), "--trtexec-json", str(tmp_path / "out.json")]


def test_device_json_tells_identical_outputs_from_non_finite_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output of another shape (cosine NaN, max abs inf) was written with null figures, which
    compare's JSON gives identical outputs only; each output now says whether it is identical, and
    its NaN/Inf figures are "NaN", "Infinity", "-Infinity" as in compare's JSON."""
    ref = {"same": np.zeros(4, np.float32), "short": np.ones(4, np.float32), "inf": np.ones(2, np.float32)}
    args = _bundle(tmp_path, ref, {"same": [0.0] * 4, "short": [1.0] * 3, "inf": [1.0, math.inf]})
    report = tmp_path / "verify.json"
    assert verify_outputs.main([*args, "--json", str(report)]) == 1
    text = report.read_text()
    data = json.loads(text, parse_constant=lambda word: pytest.fail(f"bare {word} in the JSON"))
    outputs = data["outputs"]
    assert outputs["same"]["identical"] is True and outputs["same"]["max_abs"] == 0.0
    assert (outputs["short"]["cosine"], outputs["short"]["max_abs"]) == ("NaN", "Infinity")
    assert outputs["short"]["identical"] is False
    assert outputs["inf"]["max_abs"] == "Infinity" and outputs["inf"]["nonfinite_mismatches"] == 1
    assert outputs["inf"]["identical"] is False
    host = output_metrics("inf", [ref["inf"]], [np.array([1.0, math.inf])], Gates())
    assert (host.identical, host.nonfinite_mismatches) == (False, 1)
    capsys.readouterr()


def test_host_splits_finite_pairs_with_the_devices_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """The finite/non-finite split (float64 casts, finite mask, reproduced NaN/Inf, mismatch count,
    integer or float error) was written twice, the host's a line-for-line copy of the device's:
    a fix to one side had to be made again on the other. The host now calls the device's."""
    from edgedeploy.stages.compare import outputs

    calls = []
    split = verify_outputs.finite_pairs

    def spy(ref: np.ndarray, cand: np.ndarray) -> Any:
        calls.append((ref.dtype, cand.dtype))
        return split(ref, cand)

    monkeypatch.setattr(outputs, "finite_pairs", spy)
    monkeypatch.setattr(verify_outputs, "finite_pairs", spy)
    ref = np.array([[np.inf, 0.1, 0.2, 0.3]], np.float32)
    both(ref, np.array([[1.0, 0.1, 0.2, 0.4]], np.float32), Gates())
    assert calls == [(np.float32, np.float32)] * 2


def test_device_fails_an_output_off_in_scale_as_the_host() -> None:
    """verify.sh passed an output 100x (or 0.5x) the reference at cosine 1.0, as the host did; both
    now fail it on its norm ratio, with the same figure and message."""
    ref = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    for factor in (100.0, 0.5):
        host, device = both(ref, ref * np.float32(factor), Gates())
        assert device["cosine"] > 0.999999 and device["failures"] and not host.passed
        assert device["norm_ratio"] == pytest.approx(factor)
    _, device = both(ref, ref * np.float32(1.01), Gates())
    assert device["failures"] == []
    assert both(ref, np.zeros_like(ref), Gates(min_cosine=None))[1]["norm_ratio"] == 0.0
    assert both(np.zeros_like(ref), ref, Gates(min_cosine=-0.5))[1]["norm_ratio"] == math.inf


def test_device_min_top1_name_value_gates_the_named_outputs_only(tmp_path: Path) -> None:
    """verify.sh gated every 2-D float output's argmax on the manifest's min_top1, an embedding's too;
    a manifest's {output: value} (compare's --min-top1 NAME:VALUE) gates the outputs named only,
    as the host does, and verify-PRECISION.json says which outputs were gated."""
    rng = np.random.default_rng(0)
    logits, embedding = rng.standard_normal((8, 10)), rng.standard_normal((8, 128))
    moved = embedding.copy()
    moved[:, 0] = embedding.max(axis=1) + 1.0  # every row's argmax moves; the cosine stays high
    ref = {"logits": logits.astype(np.float32), "embedding": embedding.astype(np.float32)}
    got = {"logits": logits, "embedding": moved}
    (tmp_path / "reference").mkdir()
    np.savez(tmp_path / "reference" / "outputs.npz", **ref)
    exported = [{"name": n, "dimensions": "x".join(map(str, v.shape)), "values": v.ravel().tolist()}
                for n, v in got.items()]  # fmt: skip
    (tmp_path / "out.json").write_text(json.dumps(exported))
    args = ["--bundle", str(tmp_path), "--trtexec-json", str(tmp_path / "out.json"), "--json"]
    for min_top1, code in ((0.99, 1), ({"logits": 0.99}, 0)):
        gates = Gates(min_cosine=0.9, min_top1=min_top1)
        manifest = {"reference": {"outputs": "reference/outputs.npz"}, "gates": gates.manifest()}
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        assert verify_outputs.main([*args, str(tmp_path / "v.json")]) == code, min_top1
        outputs = json.loads((tmp_path / "v.json").read_text())["outputs"]
        host = output_metrics("embedding", [ref["embedding"]], [moved], gates)
        assert outputs["embedding"]["failures"] == host.failures
        assert outputs["embedding"]["top1_gated"] == host.top1_gated
        assert outputs["logits"]["top1_gated"] == 0.99
