from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CliResult, assert_clean_input_error, run_cli, validate_manifest


@pytest.mark.slow
def test_demo_prints_the_table_and_fp16_is_half_size_with_cosine_0_999(
    demo_cli: tuple[Path, CliResult],
) -> None:
    tmp_path, result = demo_cli  # a relative --out, as the README's `make demo` uses it
    assert result.code == 0, result.stderr
    assert "precision" in result.stdout and "fp16" in result.stdout and "demo finished" in result.stdout
    data = json.loads((tmp_path / "demo.json").read_text())
    rows = {r["precision"]: r for r in data["rows"]}
    assert {"fp32", "fp16", "int8"} <= set(rows)
    assert rows["int8"]["top1_agreement"] >= 0.995
    assert abs(rows["int8"]["task_accuracy"] - rows["fp32"]["task_accuracy"]) <= 0.01
    assert rows["int8"]["size_bytes"] / rows["fp32"]["size_bytes"] < 0.35
    assert 0.45 < rows["fp16"]["size_bytes"] / rows["fp32"]["size_bytes"] < 0.56
    assert rows["fp16"]["cosine"] >= 0.999
    assert rows["fp32"]["task_accuracy"] > 0.95
    assert abs(rows["fp16"]["task_accuracy"] - rows["fp32"]["task_accuracy"]) < 0.01
    assert all(r["passed"] for r in data["rows"])
    assert run_cli("bundle", "verify", data["bundle"]["archive"]).code == 0
    bundle = Path(data["bundle"]["directory"])
    validate_manifest(json.loads((bundle / "manifest.json").read_text()))
    assert {"setup.sh", "build_engine.sh", "verify.sh", "benchmark.sh"} <= {
        p.name for p in (bundle / "scripts").iterdir()
    }


@pytest.mark.parametrize("duration", ["-1", "0", "nan"])
def test_a_bad_duration_is_refused_before_the_demo_trains_or_writes(tmp_path: Path, duration: str) -> None:
    """profile refuses these at once; the demo trained its model and wrote four files first."""
    result = run_cli("demo", "--out", "demo", "--duration", duration, cwd=tmp_path)
    assert_clean_input_error(result, "--duration must be a number of seconds > 0")
    assert list(tmp_path.iterdir()) == []
