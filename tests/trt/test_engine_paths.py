"""The engine path end to end (fake GPU): build's status line, the sidecar's model path, the batches
run, compare and matrix take where an engine's profile does not admit the configured ones, and the
data engines are timed on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.backends.trt_sidecar import engine_model_inputs
from edgedeploy.config import load_config
from edgedeploy.errors import InputError
from edgedeploy.options import ShapeProfile
from edgedeploy.pipeline import run_pipeline
from edgedeploy.pipeline.executors import LocalExecutor
from edgedeploy.pipeline.matrix import run_matrix
from edgedeploy.pipeline.matrix_config import load_matrix_config
from edgedeploy.stages.profile import ProfileOptions, profile
from edgedeploy.targets import load_target
from edgedeploy.ui import Ui
from tests.conftest import run_in_process as cli
from tests.conftest import write_run_config
from tests.trt.test_profile_cli_path import STATE_PROFILE, _state_model


@pytest.mark.trt_versions("10.13.0")
def test_build_says_built_not_run_of_an_engine_no_gpu_runtime_ran(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cross-built (TensorRT here, no CUDA device answers): the sidecar said "built, not run: ...",
    and build's line "tensorrt output: ....engine (built)"."""
    monkeypatch.setattr(TensorRTBackend, "available", lambda self: (True, "TensorRT, no GPU here"))
    fake_gpu.gpu.present = False
    code, out, err = cli(
        "build", cnn_models.fp32, "--precision", "fp32", "--backend", "tensorrt", "--target", "rtx4090",
        "-o", tmp_path / "out", "--profile", "input:1x1x8x8,4x1x8x8,8x1x8x8",
    )  # fmt: skip
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("tensorrt output:"))
    assert "(built, not run: " in line and "no CUDA GPU answers" in line, line
    assert "(built)" not in line


def _state_engine(root: Path) -> Path:
    """silero-vad's layout (x[batch, 16], state[2, batch, 8]) built from ``models/state.onnx`` given
    relative to ``root``, the working directory, into ``root/out``: only the model's dim names say
    that state's batch is on axis 1."""
    _state_model(root / "models")
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=[STATE_PROFILE])
    return root / TensorRTBackend().build(Path("models/state.onnx"), opts, Path("out")).artifact


@pytest.mark.trt_versions("10.13.0")
def test_the_sidecar_records_the_model_relative_to_itself_so_another_cwd_finds_it(
    fake_gpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built with `build models/state.onnx -o out` from tmp, the sidecar recorded
    "models/state.onnx": profiled from another folder, the engine's model was not found, and state
    was fed its batch on axis 0 ("input 'state' has a static batch of 2"). It is recorded from the
    sidecar's folder now ("../models/state.onnx"), and read so."""
    monkeypatch.chdir(tmp_path)
    engine = _state_engine(tmp_path)
    record = json.loads(engine.with_name(engine.name + ".json").read_text())["inputs"]["model"]
    assert (engine.parent / record["path"]).resolve() == (tmp_path / "models" / "state.onnx").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(2,), measure_power=False)
    profile(engine, options)
    shapes = [args for name, args in fake_gpu.state.calls if name == "IExecutionContext.set_input_shape"]
    assert ("state", (2, 2, 8)) in shapes


@pytest.mark.trt_versions("10.13.0")
def test_an_old_sidecar_s_model_path_is_read_from_the_working_directory_as_before(
    fake_gpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar written before paths were relative to it (no "relative_to") holds the path as the
    build was given it: read from the working directory, as it was."""
    monkeypatch.chdir(tmp_path)
    engine = _state_engine(tmp_path)
    sidecar = engine.with_name(engine.name + ".json")
    old = json.loads(sidecar.read_text())
    old["inputs"]["model"] = {"path": "models/state.onnx", "sha256": old["inputs"]["model"]["sha256"]}
    sidecar.write_text(json.dumps(old))
    specs = engine_model_inputs(engine, {"x": 2, "state": 3})
    assert specs is not None and [s.shape for s in specs] == [("batch", 16), (2, "batch", 8)]


def _data(path: Path, samples: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, input=rng.standard_normal((samples, 1, 8, 8)).astype(np.float32))
    return path


def _run_config(tmp_path: Path, model: Path, data: str, extra: str = "", compare_data: str = "") -> Path:
    return write_run_config(
        tmp_path,
        model,
        "cnn",
        f"""[build]
target = "rtx4090"
backend = "tensorrt"
precisions = ["fp32"]
profiles = [{{input = {{min = [2, 1, 8, 8], opt = [4, 1, 8, 8], max = [8, 1, 8, 8]}}}}]

[calibration]
data = "{data}"

[compare]
data = "{compare_data or data}"
samples = 8
batch_size = 4
min_cosine = 0.99

[profile]
iterations = 2
warmup_ms = 0
{extra}

[bundle]
enabled = false
""",
    )


@pytest.mark.trt_versions("10.13.0")
def test_run_profiles_an_engine_whose_profile_starts_above_batch_1_at_its_opt_batch(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """[build] profiles from batch 2 and [profile] batch_sizes left at its default [1]: the profile
    stage failed ("batch 1 is below the engine's profile minimum 2"). The default batch now takes
    the engine's opt batch, as a bare `profile ENGINE` does, and says so."""
    config = _run_config(tmp_path, cnn_models.fp32, str(_data(tmp_path / "d.npz", 8)))
    ui = Ui(quiet=True)
    result = run_pipeline(load_config(config), ui)
    (fp32,) = result.precisions
    assert list(fp32.profile["batch_sizes"]) == ["4"]
    assert fp32.profile["settings"]["data"]["synthetic"] is False  # the [compare] data, not random
    said = [m for m in ui.messages if "outside" in m]
    assert any(
        "batch 1 is outside the engine's profile (batch 2..8): profiled its opt batch 4" in m for m in said
    )


@pytest.mark.trt_versions("10.13.0")
def test_a_batch_size_the_engine_does_not_take_is_refused_before_any_batch_is_timed(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """`profile ENGINE --batch-sizes 4,1` on a profile from batch 2 timed batch 4 for its duration,
    then refused batch 1: now refused first, naming the batch and the profile's minimum."""
    profiles = [ShapeProfile({"input": ((2, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})]
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    fake_gpu.state.calls.clear()
    options = ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(4, 1), measure_power=False)
    with pytest.raises(InputError, match="batch 1 is below the engine's profile minimum 2"):
        profile(engine, options)
    assert "IExecutionContext.execute_async_v3" not in fake_gpu.state.names()


@pytest.mark.trt_versions("10.13.0")
def test_compare_pads_a_short_last_batch_to_the_engines_profile_minimum_and_drops_the_padding(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path
) -> None:
    """10 samples in batches of 4 against an engine whose profile starts at 4: the last batch of 2
    failed ("outside the engine's profile"). It is padded to 4 with its last sample repeated, the
    padded rows are left out of the figures, and a warning says so."""
    profiles = [ShapeProfile({"input": ((4, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})]
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    data = _data(tmp_path / "d.npz", 10)
    json_path = tmp_path / "c.json"
    code, _out, err = cli(
        "compare", cnn_models.fp32, engine, "--data", data, "--batch-size", "4", "--json", json_path
    )
    assert code == 0, err
    calls = [args for name, args in fake_gpu.state.calls if name == "IExecutionContext.set_input_shape"]
    assert ("input", (2, 1, 8, 8)) not in calls
    assert "the last batch of 2 sample(s) was padded to 4" in err, err
    result = json.loads(json_path.read_text())
    assert result["data"]["samples_compared"] == 10 and result["iterations"] == 3
    assert result["data"]["padded"] == [{"batch": 3, "samples": 2, "padded_to": 4}]


@pytest.mark.trt_versions("10.13.0")
def test_compare_reads_the_references_inputs_and_outputs_once_where_it_pads_a_batch(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compare read the reference's inputs and outputs (a parse of the whole model) once per check,
    and its padding path five times more (the engine's batches, the inputs, the outputs' batch axes,
    then those again for each side's unpadding): 10 reads. compare reads them once and
    passes them down."""
    import calibration.modelinfo as modelinfo
    from calibration.sources import open_source
    from edgedeploy.stages.compare import Gates, compare

    profiles = [ShapeProfile({"input": ((4, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})]
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    source = open_source(
        str(_data(tmp_path / "d.npz", 10)), modelinfo.model_io(cnn_models.fp32)[0], samples=10, batch_size=4
    )
    reads: list[Path] = []
    header = modelinfo.load_model_header

    def counted(path: Any) -> Any:
        reads.append(Path(path))
        return header(path)

    monkeypatch.setattr(modelinfo, "load_model_header", counted)
    result = compare(cnn_models.fp32, engine, source, Gates(), source.describe())
    assert result.data["padded"] == [{"batch": 3, "samples": 2, "padded_to": 4}]
    assert reads.count(cnn_models.fp32) == 1, reads


def _uploads(fake_gpu: Any, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Every host array copied to the fake GPU, from now on."""
    copied: list[np.ndarray] = []
    upload = fake_gpu.cuda.memcpy_htod_async

    def recording(dest: Any, src: Any, stream: Any = None) -> None:
        copied.append(np.array(src, copy=True))
        upload(dest, src, stream)

    monkeypatch.setattr(fake_gpu.cuda, "memcpy_htod_async", recording)
    return copied


@pytest.mark.trt_versions("10.13.0")
def test_profile_times_an_engine_on_the_data_given_and_says_which(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`profile ENGINE --data d.npz` timed random inputs ("engines are timed on random inputs, not
    on the data"). Each batch size is now timed on the data's first samples, and settings.data says
    which data was timed, as for an ONNX model; without data, random and its seed."""
    profiles = [ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})]
    opts = BuildOptions(precision="fp32", target=load_target("rtx4090"), profiles=profiles)
    engine = TensorRTBackend().build(cnn_models.fp32, opts, tmp_path).artifact
    data = _data(tmp_path / "d.npz", 5)
    copied = _uploads(fake_gpu, monkeypatch)
    options = ProfileOptions(
        warmup_ms=0.0, iterations=2, batch_sizes=(2,), measure_power=False, data=str(data)
    )
    result = profile(engine, options)
    first = np.load(data)["input"][:2]
    assert copied and all(np.array_equal(a, first) for a in copied)
    assert result.settings["data"]["spec"] == str(data) and result.settings["data"]["synthetic"] is False
    assert not any("random" in w for w in result.warnings), result.warnings
    copied.clear()
    random = profile(
        engine, ProfileOptions(warmup_ms=0.0, iterations=2, batch_sizes=(2,), measure_power=False)
    )
    assert random.settings["data"]["kind"] == "random" and random.settings["data"]["synthetic"] is True
    assert copied and not any(np.array_equal(a, first) for a in copied)


@pytest.mark.trt_versions("10.13.0")
def test_matrix_times_an_engine_cell_on_the_compare_data_at_a_batch_its_profile_takes(
    fake_gpu: Any, cnn_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A matrix cell was profiled on random inputs beside real [compare] data, and at [profile]
    batch_sizes' default 1 that an engine whose profile starts at 2 refuses: the cell failed. It is
    now timed on the data's first samples at the profile's opt batch, and its profile says so."""
    shutil.copy(cnn_models.fp32, tmp_path / "cnn.onnx")
    data = _data(tmp_path / "val.npz", 8)
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "farm"\n[build]\nbackend = "tensorrt"\n'
        "profiles = [{input = {min = [2, 1, 8, 8], opt = [4, 1, 8, 8], max = [8, 1, 8, 8]}}]\n"
        '[compare]\ndata = "val.npz"\nsamples = 8\nbatch_size = 4\nmin_cosine = 0.99\n'
        "[profile]\niterations = 2\nwarmup_ms = 0\n[bundle]\nenabled = false\n"
        '[matrix]\ntargets = ["rtx4090"]\nprecisions = ["fp32"]\n[[matrix.models]]\n'
        'source = "cnn.onnx"\nname = "cnn"\n'
    )
    copied = _uploads(fake_gpu, monkeypatch)
    executor = LocalExecutor(jobs=1)
    try:
        result = run_matrix(load_matrix_config(config), executor, ui=Ui(quiet=True))
    finally:
        executor.close()
    (cell,) = result.cells
    assert cell.status == "ok", cell.reason
    assert list(cell.profile["batch_sizes"]) == ["4"]
    settings = cell.profile["settings"]
    assert settings["data"]["synthetic"] is False and settings["data"]["spec"].endswith("val.npz")
    assert any(np.array_equal(a, np.load(data)["input"][:4]) for a in copied)
    assert any("profiled its opt batch 4" in w for w in cell.warnings), cell.warnings
