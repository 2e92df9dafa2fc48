"""Workstation bundle tools: verify folder and archive, inspect, schema, and refusing unsafe archives."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from edgedeploy.errors import InputError
from edgedeploy.stages.bundle.tools import (
    inspect_bundle,
    manifest_schema,
    safe_extract,
    schema_problems,
    verify_bundle,
)


def test_fresh_bundle_and_its_archive_verify(bundle: Path) -> None:
    check = verify_bundle(bundle)
    assert check.ok, check.problems
    assert check.files_checked == len(json.loads((bundle / "manifest.json").read_text())["files"])
    archive = verify_bundle(bundle.with_name("bundle.tar.gz"))
    assert archive.ok, archive.problems


def test_manifest_validates_against_the_schema(bundle: Path) -> None:
    import jsonschema

    manifest = json.loads((bundle / "manifest.json").read_text())
    jsonschema.Draft202012Validator.check_schema(manifest_schema())
    assert schema_problems(manifest) == []
    manifest["artifacts"][0]["model"] = "../escape.onnx"
    assert any("artifacts" in p for p in schema_problems(manifest))


def test_energy_of_zero_without_a_measurement_is_rejected_by_the_schema(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][1]["profile"] = {
        "batch_sizes": {},
        "energy": {"source": None, "measurable": False, "reason": "n/a", "avg_power_w": 0.0},
    }
    problems = schema_problems(manifest)
    assert any("['energy']" in p and "0.0" in p for p in problems), problems


def test_damaged_missing_and_unlisted_files_are_each_reported(bundle: Path) -> None:
    (bundle / "reference" / "outputs.npz").write_bytes(b"damaged")
    (bundle / "models" / "dense.onnx").unlink()
    (bundle / "models" / "stray.txt").write_text("?")
    (bundle / "device").mkdir()
    (bundle / "device" / "timing.cache").write_bytes(b"written on the board")
    check = verify_bundle(bundle)
    assert not check.ok
    text = "\n".join(check.problems)
    assert "reference/outputs.npz: size" in text
    assert "models/dense.onnx: missing" in text
    assert "models/stray.txt: not listed in the manifest" in text
    assert check.device_outputs == ["device/timing.cache"]  # the device's own outputs are allowed


def test_inspect_summarises_target_artifacts_and_scripts(bundle: Path) -> None:
    info = inspect_bundle(bundle.with_name("bundle.tar.gz"))
    assert info["valid"] and info["target"] == "jetson-orin-nano" and info["primary_precision"] == "fp16"
    assert [a["precision"] for a in info["artifacts"]] == ["fp32", "fp16"]
    assert {"setup.sh", "build_engine.sh", "verify.sh", "benchmark.sh"} <= set(info["scripts"])


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"x"


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("/etc/evil"), "absolute path"),
        (_file("b/../../evil"), "'..' component"),
        (_link("b/link", "/etc/passwd"), "leaves the bundle"),
        (_link("b/link", "../../outside"), "leaves the bundle"),
        (_link("b/hard", "../outside", tarfile.LNKTYPE), "leaves the bundle"),
    ],
)
def test_safe_extract_refuses_escaping_members_and_writes_nothing(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", [_file("b/ok.txt"), member])
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert verify_bundle(archive).ok is False


def test_safe_extract_keeps_links_inside_the_bundle(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "ok.tar.gz", [_file("b/models/m.onnx"), _link("b/latest.onnx", "models/m.onnx")]
    )
    root = safe_extract(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "b"
    assert (root / "latest.onnx").read_bytes() == b"x"


def test_a_manifest_whose_primary_names_no_artifact_or_whose_gates_are_out_of_range_fails(
    bundle: Path, tmp_path: Path
) -> None:
    """verify said ok, and verify.sh on the board then refused: no bf16 artifact in this bundle."""
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["primary_precision"] = "bf16"
    manifest["gates"]["min_cosine"] = 2.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = "\n".join(verify_bundle(copy).problems)
    assert "primary_precision 'bf16' names no artifact (its artifacts: fp32, fp16)" in problems
    assert "min_cosine" in problems and "2.0" in problems
