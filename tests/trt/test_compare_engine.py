"""compare of an engine (fake GPU) at the default batch size its profile does not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.options import ShapeProfile
from edgedeploy.targets import load_target
from tests.conftest import run_in_process as cli


@pytest.mark.trt_versions("10.13.0")
def test_compare_at_the_default_batch_size_takes_the_largest_batch_the_engine_takes(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """compare's default --batch-size 8 against an engine whose profile ends at batch 4 said
    "outside the engine's profile ...; rebuild with a wider --profile". Not asked for, the batch is
    now the largest the engine takes, said in one line; asked for, it is refused naming the batch."""
    profiles = [ShapeProfile({"input": ((1, 1, 8, 8), (2, 1, 8, 8), (4, 1, 8, 8))})]
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    json_path = tmp_path / "c.json"
    code, _out, err = cli("compare", cnn_models.fp32, engine, "--samples", "10", "--json", json_path)
    assert code == 0, err
    assert "cnn.fp32.engine takes batches of 1..4 (its shape profile): comparing in batches of 4" in err
    calls = [args for name, args in fake_gpu.state.calls if name == "IExecutionContext.set_input_shape"]
    assert ("input", (4, 1, 8, 8)) in calls and ("input", (2, 1, 8, 8)) in calls  # 4, 4, then 2
    code, _out, err = cli("compare", cnn_models.fp32, engine, "--batch-size", "8")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "takes batches of 1..4 (its shape profile): give --batch-size 4" in lines[0]


@pytest.mark.trt_versions("10.13.0")
def test_a_sidecar_of_another_engine_is_ignored_with_a_warning(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sidecar whose engine_sha256 is not the engine's (a device build killed between the two
    moves, an engine copied over another) was believed: here one of an engine built for compute
    capability 7.2 refused an engine this GPU runs. It is now ignored, with a warning, as the
    device's up-to-date check ignores it (edgedeploy/device/build_engine.sh rebuilds)."""
    import json

    profiles = [ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (4, 1, 8, 8))})]
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    sidecar = engine.with_name(engine.name + ".json")
    data = json.loads(sidecar.read_text())
    data["compute_capability"] = "7.2"
    sidecar.write_text(json.dumps(data))  # its own engine's sidecar, built elsewhere: still refused
    code, _out, err = cli("compare", cnn_models.fp32, engine, "--samples", "4", "--batch-size", "4")
    assert code == 2 and "was built for compute capability 7.2" in err, err
    data["engine_sha256"] = "0" * 64  # another engine's
    sidecar.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        code, _out, err = cli("compare", cnn_models.fp32, engine, "--samples", "4", "--batch-size", "4")
    assert code == 0, err
    said = [
        r.getMessage() for r in caplog.records if f"{sidecar.name} is not {engine.name}'s" in r.getMessage()
    ]
    assert len(said) == 1 and "ignored" in said[0], caplog.text  # once a run
    # on the terminal as every other warning of the CLI (ui.Ui.warn), not the bare logging record
    warned = [ln for ln in err.splitlines() if f"{sidecar.name} is not {engine.name}'s" in ln]
    assert warned == [
        f"warning: {sidecar.name} is not {engine.name}'s (its engine_sha256 is another engine's: a build "
        "killed before it finished, or an engine copied over): ignored, so nothing checks the engine was "
        "built for this TensorRT and GPU; rebuild the engine"
    ], err
