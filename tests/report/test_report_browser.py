"""The demo's report in a real browser: headless Chromium opens it with no console error and no
network request, and its screenshot shows the page (not a blank one). The same demo run checks
that the bundle carries the report and that ``edgedeploy report`` makes it from the bundle archive.

The demo run is shared with tests/test_demo.py (~15 s on an idle 2-core machine); the tests here
add about 10 s: one Chromium load (~3 s), one report from the bundle archive, one refused bundle.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CliResult, run_cli, validate_manifest
from tests.report.cdp import find_chromium, visit

CHROMIUM = find_chromium()
pytestmark = pytest.mark.slow  # the shared demo run


@pytest.fixture(scope="module")
def demo(demo_cli: tuple[Path, CliResult]) -> tuple[Path, str]:
    """The demo's workdir and stdout (the run is shared with tests/test_demo.py)."""
    cwd, result = demo_cli
    assert result.code == 0, result.stderr
    return cwd / "demo", result.stdout


def test_demo_ends_by_printing_the_path_of_its_report(demo: tuple[Path, str]) -> None:
    workdir, stdout = demo
    last = stdout.strip().splitlines()[-1]
    assert (
        last.endswith("report.html")
        and Path(last.split()[-1]).resolve() == (workdir / "report.html").resolve()
    )
    page = (workdir / "report.html").read_text()
    for section in ("tradeoff", "latency", "fp16", "int8"):
        assert f"id='{section}'" in page
    assert page.count("<svg") >= 4  # scatter, CDF, FP16 ranges, INT8 clipping


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does)"
)
def test_report_opens_in_chromium_without_errors_or_network_and_is_not_blank(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    from PIL import Image

    assert CHROMIUM is not None
    workdir, _ = demo
    seen = visit(workdir / "report.html", CHROMIUM, width=1000)
    assert seen.console_errors == []
    assert seen.network_requests == []
    assert seen.requests == [(workdir / "report.html").resolve().as_uri()]
    image = Image.open(io.BytesIO(seen.screenshot)).convert("RGB")
    (tmp_path / "report.png").write_bytes(seen.screenshot)
    width, height = image.size
    assert width == 1000 and height > 2000  # the whole page, several charts tall
    pixels = np.asarray(image.resize((100, height // 10))).reshape(-1, 3)
    not_white = float((pixels.min(axis=1) < 235).mean())
    colours = len(np.unique(pixels // 32, axis=0))  # colour cells of 32 levels a channel
    assert not_white > 0.03 and colours > 8, (not_white, colours)  # text, lines and coloured markers


def test_bundle_carries_the_report_and_report_remakes_it_from_the_archive(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    workdir, _ = demo
    manifest = json.loads((workdir / "bundle" / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["report"] == {"html": "report.html", "markdown": "report.md"}
    assert {"report.html", "report.md"} <= set(manifest["files"])
    assert "models/digits_cnn.calib.json" in manifest["files"]  # the charts' data travels too
    result = run_cli(
        "report", workdir / "bundle.tar.gz", "-o", tmp_path / "out", "--json", tmp_path / "r.json"
    )
    assert result.code == 0, result.stderr
    info = json.loads((tmp_path / "r.json").read_text())
    assert {"tradeoff", "latency", "fp16", "int8"} <= set(info["sections"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.md"]
    summary = (tmp_path / "out" / "report.md").read_text()
    for artifact in manifest["artifacts"]:
        cosine = artifact["compare"]["outputs"]["logits"]["cosine"]
        assert f"| {artifact['precision']} |" in summary and f"{cosine:.6f}" in summary


def test_report_refuses_a_damaged_bundle_in_one_line_and_writes_nothing(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    import shutil

    workdir, _ = demo
    bundle = tmp_path / "bundle"
    shutil.copytree(workdir / "bundle", bundle)
    with open(bundle / "models" / "digits_cnn.calib.json", "a") as fh:
        fh.write(" ")
    result = run_cli("report", bundle, "-o", tmp_path / "out")
    assert result.code == 2 and "damaged" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
