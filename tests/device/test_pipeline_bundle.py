"""The device scripts on a bundle made by the real pipeline (the demo's digits CNN, fp32/fp16/int8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgedeploy.config import (
    BuildSection,
    BundleSection,
    CalibrationSection,
    CompareSection,
    ModelSection,
    PipelineConfig,
    ProfileSection,
)
from edgedeploy.pipeline import run_pipeline
from edgedeploy.stages.bundle.tools import verify_bundle
from tests.conftest import Digits, validate_manifest
from tests.device.conftest import Device


@pytest.fixture(scope="module")
def pipeline_bundle(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("pipeline-bundle")
    config = PipelineConfig(
        model=ModelSection(source=str(digits.onnx_path), name="digits"),
        build=BuildSection(target="jetson-orin-nano", precisions=["fp32", "fp16", "int8"]),
        calibration=CalibrationSection(data=str(digits.test_npz), samples=128, batch_size=32),
        compare=CompareSection(data=str(digits.test_npz), samples=100, batch_size=25, min_top1=0.98),
        profile=ProfileSection(iterations=5, warmup=1),
        bundle=BundleSection(output="bundle"),
        workdir=str(work),
        base_dir=work,
    )
    result = run_pipeline(config)
    assert result.bundle is not None and result.gates_passed
    return Path(result.bundle["directory"])


@pytest.fixture
def bundle(pipeline_bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(pipeline_bundle, dest)
    return dest


def test_pipeline_bundle_verifies_and_carries_every_precision(bundle: Path) -> None:
    check = verify_bundle(bundle)
    assert check.ok, check.problems
    manifest = json.loads((bundle / "manifest.json").read_text())
    validate_manifest(manifest)
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "fp16", "int8"]
    assert manifest["primary_precision"] == "int8"
    int8 = manifest["artifacts"][2]
    assert int8["calibration_cache"] and (bundle / int8["calibration_cache"]).is_file()
    assert (bundle / "scripts" / "verify.sh").is_file()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_pipeline_bundle_builds_and_verifies_on_a_fake_orin_nano(
    bundle: Path, device: Device, precision: str
) -> None:
    scripts = bundle / "scripts"
    setup = device.run(scripts / "setup.sh")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    built = device.run(scripts / "build_engine.sh", "--precision", precision)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (bundle / "device" / "engines" / f"digits.{precision}.engine").is_file()
    verified = device.run(scripts / "verify.sh", "--precision", precision)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "accuracy: pass" in verified.stdout
