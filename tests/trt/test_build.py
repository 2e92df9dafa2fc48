"""TensorRTBackend.build against the fake TensorRT of each shipped release: precision paths, options,
files, skip, errors. Tests about one path are narrowed with ``trt_versions``; the rest run on all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.backends.trt_versions import TrtVersion
from edgedeploy.errors import InputError
from edgedeploy.fileio import file_lock
from edgedeploy.options import ShapeProfile
from edgedeploy.targets import load_target
from tests.fakes.fake_tensorrt import PARSER_INPUT_TYPE_ERROR, PARSER_OUTPUT_TYPE_ERROR, PLAN_MAGIC

trt_versions = pytest.mark.trt_versions

BATCH_PROFILE = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})


def options(precision: str = "fp32", target: str = "rtx4090", **kw: object) -> BuildOptions:
    kw.setdefault("profiles", [BATCH_PROFILE])
    return BuildOptions(precision=precision, target=load_target(target), **kw)  # type: ignore[arg-type]


def test_build_writes_byte_pure_engine_sidecar_and_layer_info(fake_gpu, cnn_models, tmp_path: Path) -> None:
    result = TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    engine = tmp_path / "cnn.fp32.engine"
    assert result.artifact == engine and not result.skipped
    assert engine.read_bytes().startswith(PLAN_MAGIC)  # exactly the builder's bytes, no header
    sidecar = json.loads((tmp_path / "cnn.fp32.engine.json").read_text())
    assert sidecar["tensorrt"] == fake_gpu.state.version
    assert sidecar["gpu_name"] == "NVIDIA Fake GPU" and sidecar["compute_capability"] == "8.9"
    assert sidecar["cuda_driver"] == "12.4"
    assert sidecar["inputs"]["model"]["sha256"]
    assert sidecar["plan"]["memory_pools"] == {"WORKSPACE": 4096 << 20}
    layers = json.loads((tmp_path / "cnn.fp32.layers.json").read_text())
    assert [layer["Name"] for layer in layers["Layers"]] == ["conv1", "relu1", "flatten", "fc"]
    assert sidecar["layer_summary"]["per_precision"] == {"FP32": 4}
    assert set(result.files) == {engine, tmp_path / "cnn.fp32.engine.json", tmp_path / "cnn.fp32.layers.json"}


@trt_versions(min="10.0")
def test_tensorrt_10_builds_strongly_typed_without_precision_flags(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    TensorRTBackend().build(cnn_models.fp16, options("fp16"), tmp_path)
    trt = fake_gpu.trt
    assert fake_gpu.network()._flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert not {"FP16", "INT8"} & fake_gpu.config()._flags


@trt_versions("11.0.0", "11.1.0")
def test_tensorrt_11_computes_strongly_typed_bit_from_enum_and_never_touches_fp16_int8_flags(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    trt = fake_gpu.trt
    assert "FP16" not in trt.BuilderFlag.__members__
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0  # 1 on 10.x
    TensorRTBackend().build(cnn_models.int8, options("int8"), tmp_path)
    assert fake_gpu.network()._flags == 1 << 0  # not the 10.x bit 1 << 1
    flag_calls = [args[0] for name, args in fake_gpu.state.calls if name == "IBuilderConfig.set_flag"]
    assert "FP16" not in flag_calls and "INT8" not in flag_calls


@trt_versions(max="10.0")
def test_tensorrt_8_uses_flags_calibration_cache_and_fp32_layer_constraints(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    code = TrtVersion.parse(fake_gpu.state.version).cache_code
    cache = tmp_path / "cnn.calib.cache"
    cache.write_text(f"TRT-{code}-EntropyCalibration2\ninput: 3c010a14\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"fp32_nodes": ["fc", "missing_node"]}))
    result = TensorRTBackend().build(
        cnn_models.fp32,
        options("int8", "jetson-agx-orin", calibration_cache=cache, precision_plan=plan),
        tmp_path / "out",
    )
    config, network = fake_gpu.config(), fake_gpu.network()
    assert {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} <= config._flags
    assert network._flags == 1 << int(fake_gpu.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert config.int8_calibrator is not None
    assert fake_gpu.state.calibration_cache_read.startswith(f"TRT-{code}-EntropyCalibration2".encode())
    fc = next(layer for layer in network._layers if layer.name == "fc")
    assert fc._precision == fake_gpu.trt.float32 and fc._output_types == {0: fake_gpu.trt.float32}
    assert result.info["fp32_layers_pinned"] == ["fc"]
    assert any("missing_node" in note for note in result.info["notes"])
    assert cache.read_text().startswith(f"TRT-{code}-")  # our cache is never rewritten


@trt_versions("8.5.3")
def test_tensorrt_8_refuses_a_calibration_cache_for_another_version(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    fake_gpu.install("8.5.2")
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\n")
    with pytest.raises(InputError, match=r"code 8601, this is TensorRT 8\.5\.2 \(code 8502\)"):
        TensorRTBackend().build(
            cnn_models.fp32, options("int8", "jetson-agx-orin", calibration_cache=cache), tmp_path
        )
    assert fake_gpu.state.builds == 0


REAL_CACHE = Path(__file__).parents[1] / "data" / "trt-8600-entropy2-yolov5.cache"


@trt_versions(max="10.0")
def test_tensorrt_8_refuses_a_real_cache_of_another_release_and_serves_it_once_rewritten(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """TensorRT 8.x skips a cache whose header names another release and calibrates instead (NVIDIA
    maintainers, docs/tensorrt-facts.md), which here has no data: the build must not hand it over.
    A real TensorRT 8.6.0 cache (TRT-8600) on 8.5.3 and 8.6.1 is refused in one line naming both
    codes, before any build; the same lines under this release's header are served as they are."""
    code = TrtVersion.parse(fake_gpu.state.version).cache_code
    text = REAL_CACHE.read_text()
    cache = tmp_path / "yolo.calib.cache"
    cache.write_text(text)
    with pytest.raises(InputError, match=rf"code 8600, this is TensorRT [\d.]+ \(code {code}\)") as err:
        TensorRTBackend().build(
            cnn_models.fp32, options("int8", "jetson-agx-orin", calibration_cache=cache), tmp_path / "a"
        )
    assert "\n" not in str(err.value) and "yolo.calib.cache" in str(err.value)
    assert fake_gpu.state.builds == 0 and fake_gpu.state.calibration_cache_read is None
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("*.engine"))
    cache.write_text(text.replace("TRT-8600-", f"TRT-{code}-", 1))
    TensorRTBackend().build(
        cnn_models.fp32, options("int8", "jetson-agx-orin", calibration_cache=cache), tmp_path / "b"
    )
    assert fake_gpu.state.calibration_cache_read == cache.read_bytes()


@trt_versions(max="10.0")
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("input: 3e87\n", "not 8 hex digits"),
        ("input: 3c010a14\ninput: 3f800000\n", "listed again"),
        ("input: 00000000\n", "positive normal float32"),
    ],
)
def test_tensorrt_8_refuses_a_calibration_cache_cut_short_or_edited_before_building(
    fake_gpu, cnn_models, tmp_path: Path, body: str, problem: str
) -> None:
    """A cache cut short or edited (a scale of 4 hex digits, a tensor twice, a zero scale) reached
    TensorRT from `build`, which checked its header only, while `calibrate --from-cache` refuses
    the same file naming the line (calibration/trt_cache.loads): TensorRT would calibrate with
    scales nobody computed. Refused the same way here, before any build."""
    code = TrtVersion.parse(fake_gpu.state.version).cache_code
    cache = tmp_path / "c.cache"
    cache.write_text(f"TRT-{code}-EntropyCalibration2\n{body}")
    with pytest.raises(InputError, match=rf"c\.cache line \d+: .*{problem}"):
        TensorRTBackend().build(
            cnn_models.fp32, options("int8", "jetson-agx-orin", calibration_cache=cache), tmp_path / "out"
        )
    assert fake_gpu.state.builds == 0


@trt_versions(min="10.0")
def test_tensorrt_10_refuses_fp32_graph_for_int8_and_fp16(fake_gpu, cnn_models, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Q/DQ nodes"):
        TensorRTBackend().build(cnn_models.fp32, options("int8"), tmp_path)
    with pytest.raises(InputError, match="no float16 tensors"):
        TensorRTBackend().build(cnn_models.fp32, options("fp16"), tmp_path)


@trt_versions(min="10.0")
def test_options_reach_the_builder_config(fake_gpu, cnn_models, tmp_path: Path) -> None:
    two = ShapeProfile({"input": ((1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8))})
    TensorRTBackend().build(
        cnn_models.fp32,
        options(
            profiles=[BATCH_PROFILE, two],
            workspace_mb=512,
            memory_pools_mb={"tactic_shared_memory": 1},
            optimization_level=5,
            hardware_compatibility="ampere_plus",
            version_compatible=True,
            profiling_verbosity="layer_names_only",
        ),
        tmp_path,
    )
    config, trt = fake_gpu.config(), fake_gpu.trt
    assert config._pools == {"WORKSPACE": 512 << 20, "TACTIC_SHARED_MEMORY": 1 << 20}
    assert [p._shapes["input"] for p in config._profiles] == [
        ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8)),
        ((1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8)),
    ]
    assert config.builder_optimization_level == 5
    assert config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert "VERSION_COMPATIBLE" in config._flags
    assert config.profiling_verbosity == trt.ProfilingVerbosity.LAYER_NAMES_ONLY


def test_jetson_workspace_defaults_per_target_and_is_capped(fake_gpu, cnn_models, tmp_path: Path) -> None:
    backend = TensorRTBackend()
    backend.build(cnn_models.fp32, options(target="jetson-orin-nano"), tmp_path / "a")
    assert fake_gpu.config()._pools["WORKSPACE"] == 1024 << 20
    result = backend.build(
        cnn_models.fp32, options(target="jetson-orin-nano", workspace_mb=8192), tmp_path / "b"
    )
    assert fake_gpu.config()._pools["WORKSPACE"] == 3072 << 20
    assert any("capped at 3072 MB" in note for note in result.info["notes"])


@trt_versions(max="10.8")
def test_dla_core_with_gpu_fallback_and_placement_summary(fake_gpu, cnn_models, tmp_path: Path) -> None:
    static = ShapeProfile({"input": ((2, 1, 8, 8),) * 3})
    result = TensorRTBackend().build(
        cnn_models.int8, options("int8", "jetson-agx-orin", dla_core=1, profiles=[static]), tmp_path
    )
    config = fake_gpu.config()
    assert config.DLA_core == 1 and config.default_device_type == fake_gpu.trt.DeviceType.DLA
    assert "GPU_FALLBACK" in config._flags
    assert (
        not {"PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"} & config._flags
    )  # strongly typed
    summary = result.info["layer_summary"]
    assert summary["dla_layers"] == 2 and summary["gpu_layers"] == 5 and summary["dla_gpu_transitions"] >= 2
    assert any("fell back to the GPU" in w for w in result.info["warnings"])


@trt_versions("8.6.1", "10.3.0")
@pytest.mark.parametrize(
    ("target", "kw", "message"),
    [
        ("jetson-orin-nano", {"dla_core": 0}, "has no DLA cores"),
        ("jetson-agx-orin", {"dla_core": 0}, "DLA needs static shapes"),
        ("jetson-nano", {}, "does not support int8"),
        ("jetson-orin-nx", {"hardware_compatibility": "ampere_plus"}, "desktop GPUs only"),
        ("rtx4090", {"optimization_level": 7}, "--opt-level must be 0..5"),
        ("x86-64-cpu", {}, "is not a GPU"),
    ],
)
def test_requests_a_target_cannot_serve_are_refused_before_building(
    fake_gpu, cnn_models, tmp_path: Path, target: str, kw: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        TensorRTBackend().build(cnn_models.int8, options("int8", target, **kw), tmp_path)
    assert fake_gpu.state.builds == 0


def test_dynamic_input_without_profile_is_refused_with_the_flag_to_use(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"input 'input' has dynamic dims") as err:
        TensorRTBackend().build(cnn_models.fp32, options(profiles=[]), tmp_path)
    hint = str(err.value).split("--profile ")[1].split(" ")[0]
    assert hint == "input:1x1x8x8,4x1x8x8,8x1x8x8"
    assert ShapeProfile.parse([hint]).shapes["input"] == ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))


@trt_versions("10.13.0")
def test_a_dynamic_input_without_a_profile_shows_its_dims_as_listings_do(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """Was: "input 'input' has dynamic dims ['batch', 1, 8, 8]", a Python list with quoted names;
    now as TensorSpec.describe() and the other refusals show a shape (calibration.modelinfo.shape_text)."""
    with pytest.raises(InputError) as err:
        TensorRTBackend().build(cnn_models.fp32, options(profiles=[]), tmp_path)
    said = str(err.value)
    assert "input 'input' has dynamic dims [batch, 1, 8, 8]: give its shape range" in said, said


def test_profile_must_be_ordered_and_match_model_rank(fake_gpu, cnn_models, tmp_path: Path) -> None:
    bad = ShapeProfile({"input": ((4, 1, 8, 8), (2, 1, 8, 8), (8, 1, 8, 8))})
    with pytest.raises(InputError, match="axis 0 needs 1 <= min <= opt <= max, got 4/2/8"):
        TensorRTBackend().build(cnn_models.fp32, options(profiles=[bad]), tmp_path)
    fixed = ShapeProfile({"input": ((1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 9, 9))})
    with pytest.raises(InputError, match="axis 2 is fixed at 8"):
        TensorRTBackend().build(cnn_models.fp32, options(profiles=[fixed]), tmp_path)


def test_same_key_skips_and_changed_model_or_option_rebuilds(fake_gpu, cnn_models, tmp_path: Path) -> None:
    backend = TensorRTBackend()
    first = backend.build(cnn_models.fp32, options(), tmp_path)
    again = backend.build(cnn_models.fp32, options(), tmp_path)
    assert again.skipped and again.info["build_key"] == first.info["build_key"]
    assert fake_gpu.state.builds == 1
    changed = backend.build(cnn_models.fp32, options(workspace_mb=256), tmp_path)
    assert not changed.skipped and fake_gpu.state.builds == 2
    (tmp_path / "cnn.fp32.engine").write_bytes(b"truncated")
    assert not backend.build(cnn_models.fp32, options(workspace_mb=256), tmp_path).skipped
    forced = backend.build(cnn_models.fp32, options(workspace_mb=256, force=True), tmp_path)
    assert not forced.skipped and fake_gpu.state.builds == 4


def test_another_tensorrt_version_changes_the_key(fake_gpu, cnn_models, tmp_path: Path) -> None:
    backend = TensorRTBackend()
    backend.build(cnn_models.fp32, options(), tmp_path)
    fake_gpu.install("10.9.0" if fake_gpu.state.version != "10.9.0" else "10.7.0")
    assert not backend.build(cnn_models.fp32, options(), tmp_path).skipped


def test_timing_cache_is_loaded_and_saved_across_builds(fake_gpu, cnn_models, tmp_path: Path) -> None:
    cache = tmp_path / "shared.timing"
    backend = TensorRTBackend()
    backend.build(cnn_models.fp32, options(timing_cache=cache), tmp_path / "a")
    assert cache.read_bytes() == b"tactic;"
    backend.build(cnn_models.fp16, options("fp16", timing_cache=cache), tmp_path / "b")
    loaded = [args[0] for name, args in fake_gpu.state.calls if name == "IBuilderConfig.create_timing_cache"]
    assert loaded[-1] == b"tactic;"
    assert cache.read_bytes() == b"tactic;tactic;"


@trt_versions("10.13.0")
def test_timing_cache_leaves_no_lock_file_beside_it(fake_gpu, cnn_models, tmp_path: Path) -> None:
    """Polygraphy's CreateConfig(load_timing_cache=) read the cache under util.LockFile, which never
    removes its ``.lock``: every build left ``shared.timing.lock`` (0 bytes) beside the cache, and
    beside the model or engine when --timing-cache named them. Only the named cache is left; a
    non-empty file of that name (not a lock of ours) is left as it was."""
    folder = tmp_path / "caches"
    folder.mkdir()
    cache = folder / "shared.timing"
    backend = TensorRTBackend()
    backend.build(cnn_models.fp32, options(timing_cache=cache), tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == ["shared.timing"]
    backend.build(cnn_models.fp16, options("fp16", timing_cache=cache), tmp_path / "b")
    assert sorted(p.name for p in folder.iterdir()) == ["shared.timing"]
    notes = folder / "shared.timing.lock"
    notes.write_text("the user's own file")
    backend.build(cnn_models.fp32, options(timing_cache=cache, force=True), tmp_path / "a")
    assert notes.read_text() == "the user's own file"


def test_timing_cache_keeps_the_entries_a_concurrent_build_saved(
    fake_gpu, cnn_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds sharing one cache: each saved its own cache over the file, so the one that
    finished last dropped the other's entries. A cache saved by another build since this one
    read it is combined into this one's (ITimingCache.combine, in every release we ship)."""
    cache = tmp_path / "shared.timing"
    cache.write_bytes(b"first;")
    builder = fake_gpu.trt.Builder
    build_network = builder.build_serialized_network

    def another_build_saves_meanwhile(self, network, config):  # type: ignore[no-untyped-def]
        cache.write_bytes(b"first;other;")
        return build_network(self, network, config)

    monkeypatch.setattr(builder, "build_serialized_network", another_build_saves_meanwhile)
    TensorRTBackend().build(cnn_models.fp32, options(timing_cache=cache), tmp_path / "a")
    saved = cache.read_bytes()
    assert b"other;" in saved and b"tactic;" in saved and saved.startswith(b"first;")


@trt_versions("10.13.0")
def test_a_timing_cache_of_another_gpu_keeps_its_entries_beside_the_build_s(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """A cache another GPU wrote (same TensorRT) was replaced by this build's: Polygraphy's
    EngineBytesFromNetwork combines it in (``combine(prev, ignore_mismatch=True)``) and trtexec
    writes it back combined (docs/tensorrt-facts.md, "The timing cache"), both keeping its
    entries. Its entries are now kept beside this build's; the build itself does not use them
    (set with ignore_mismatch=False, as Polygraphy's CreateConfig sets it)."""
    cache = tmp_path / "shared.timing"
    cache.write_bytes(b"gpu=other;old;")
    TensorRTBackend().build(cnn_models.fp32, options(timing_cache=cache), tmp_path / "a")
    assert cache.read_bytes() == b"tactic;gpu=other;old;"  # the build's, then the other GPU's
    calls = fake_gpu.state.calls
    assert ("IBuilderConfig.set_timing_cache", (b"gpu=other;old;", False)) in calls


@trt_versions("10.13.0")
def test_a_timing_cache_of_another_tensorrt_release_is_replaced_with_a_warning(
    fake_gpu, cnn_models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache another TensorRT release wrote (which ``combine`` skips, returning false) was replaced
    without a word when no other build had saved meanwhile; Polygraphy warns ("Could not combine
    old timing cache into current timing cache") and replaces it. So do we now, always."""
    cache = tmp_path / "shared.timing"
    cache.write_bytes(b"trt=9.9;old;")
    with caplog.at_level("WARNING"):
        TensorRTBackend().build(cnn_models.fp32, options(timing_cache=cache), tmp_path / "a")
    assert cache.read_bytes() == b"tactic;"
    said = [r.getMessage() for r in caplog.records if "timing cache" in r.getMessage()]
    assert len(said) == 1 and str(cache) in said[0] and "another TensorRT release" in said[0], said


# A peer of ours on the cache's lock file: Polygraphy's util.LockFile and TensorRT's FileLock
# (trtexec's; docs/tensorrt-facts.md, "The timing cache") open FILE.lock "wb+" and take
# lockf(F_LOCK) on it whole, and never remove it; trtexec reads the cache, combines and writes it
# in place.
PEER = """
import fcntl, os, sys, time
cache, seconds = sys.argv[1], float(sys.argv[2])
with open(cache + ".lock", "wb+") as lock:
    fcntl.lockf(lock.fileno(), fcntl.LOCK_EX)
    here = os.path.samestat(os.fstat(lock.fileno()), os.stat(cache + ".lock"))
    print("held" if here else "held a removed file", flush=True)
    with open(cache, "rb") as fh:
        read = fh.read()
    time.sleep(seconds)
    with open(cache, "wb") as fh:
        fh.write(read + b"peer;")
    fcntl.lockf(lock.fileno(), fcntl.LOCK_UN)
"""


def _peer(cache: Path, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PEER, str(cache), str(seconds)], stdout=subprocess.PIPE, text=True
    )


@trt_versions("10.13.0")
def test_timing_cache_save_waits_for_a_peer_holding_its_lock_with_lockf(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """Polygraphy and trtexec lock ``FILE.lock`` with lockf, an fcntl lock, which on Linux does not
    exclude our flock: a build saved the cache while trtexec held its lock and wrote it, and
    trtexec's write dropped the build's entries. The build's read and save now wait for the peer."""
    cache = tmp_path / "shared.timing"
    cache.write_bytes(b"first;")
    peer = _peer(cache, 1.5)
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == "held"
        TensorRTBackend().build(cnn_models.fp32, options(timing_cache=cache), tmp_path / "a")
    finally:
        assert peer.wait(timeout=60) == 0
    saved = cache.read_bytes()
    assert saved.startswith(b"first;") and b"peer;" in saved and b"tactic;" in saved, saved


def _waits_on(pid: int) -> bool:
    """Whether /proc/locks shows process ``pid`` waiting for a lock."""
    return any(
        "->" in line and str(pid) in line.split() for line in Path("/proc/locks").read_text().splitlines()
    )


def test_the_cache_lock_file_stays_for_a_peer_waiting_on_it(tmp_path: Path) -> None:
    """Our lock file goes with its last holder, but a peer that waits on it with lockf (Polygraphy,
    trtexec) never looks again: removed under it, the peer held a file no longer at the path while
    the next build locked a new one. A lock file a peer waits on is left for the peer."""
    cache = tmp_path / "shared.timing"
    cache.write_bytes(b"first;")
    with file_lock(tmp_path / "shared.timing.lock", peers=True):
        peer = _peer(cache, 0)
        deadline = time.monotonic() + 60
        while not _waits_on(peer.pid):
            assert time.monotonic() < deadline and peer.poll() is None, "the peer did not wait"
            time.sleep(0.05)
    assert peer.stdout is not None and peer.stdout.readline().strip() == "held"
    assert peer.wait(timeout=60) == 0
    assert os.path.exists(tmp_path / "shared.timing.lock")


def test_out_of_memory_build_names_workspace_free_memory_and_flags(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    fake_gpu.state.build_errors = [
        "[optimizer] Could not find any implementation for node /conv1/Conv due to insufficient workspace."
    ]
    with pytest.raises(InputError) as err:
        TensorRTBackend().build(cnn_models.fp32, options(target="jetson-orin-nano"), tmp_path)
    text = str(err.value)
    assert "ran out of memory" in text and "workspace 1024 MB" in text and "MB free" in text
    assert "--workspace" in text and "--opt-level" in text
    assert not list(tmp_path.glob("*.engine*"))  # nothing half-written


def test_parser_error_names_the_failing_node_and_op(fake_gpu, cnn_models, tmp_path: Path) -> None:
    fake_gpu.state.unsupported_ops = {"Flatten"}
    with pytest.raises(
        InputError, match=r"node 'flatten' \(op Flatten\): No importer registered for op: Flatten"
    ):
        TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)


def test_int8_engine_with_few_int8_layers_warns() -> None:
    from edgedeploy.backends.trt_inspect import summarise

    info = json.dumps(
        {
            "Layers": [
                {
                    "Name": "a",
                    "LayerType": "CaskConvolution",
                    "Outputs": [{"Format/Datatype": "Row major linear FP16"}],
                },
                {
                    "Name": "b",
                    "LayerType": "CaskConvolution",
                    "Outputs": [{"Format/Datatype": "Int8 NC32HW32"}],
                },
                {
                    "Name": "c",
                    "LayerType": "CaskGemm",
                    "Outputs": [{"Format/Datatype": "Row major linear FP16"}],
                },
            ]
        }
    )
    summary = summarise(info, "int8")
    assert summary.int8_compute_layers == 1 and summary.compute_layers == 3
    assert any("only 1 of 3 compute layers run in INT8" in w for w in summary.warnings)
    assert not summarise(info, "fp16").warnings


def test_backend_unavailable_without_tensorrt_says_how_to_get_it(
    monkeypatch, cnn_models, tmp_path: Path
) -> None:
    import sys

    from edgedeploy.errors import BackendUnavailable

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as on a machine without it
    ok, why = TensorRTBackend().available()
    assert not ok
    assert "pip install tensorrt" in why and "--system-site-packages" in why and "python3-libnvinfer" in why
    with pytest.raises(BackendUnavailable) as err:
        TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_a_parser_error_of_the_model_names_no_node(fake_gpu, tmp_path: Path) -> None:
    """onnx-tensorrt reports an input it has no type for with node -1 (its Status default): that is
    no node, not the last one (nodes[-1] named 'fc' here)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("Relu", ["xf"], ["y"], name="fc"),
        ],
        "u16",
        [helper.make_tensor_value_info("input", TensorProto.UINT16, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "u16.onnx"
    onnx.save(model, path)
    with pytest.raises(InputError) as err:
        TensorRTBackend().build(path, options(), tmp_path / "out")
    assert str(err.value) == f"TensorRT cannot parse u16.onnx: {PARSER_INPUT_TYPE_ERROR}"


@pytest.mark.parametrize("kind", ["string-input", "string-and-map-outputs"])
def test_a_model_with_text_or_a_zipmap_output_is_refused_before_any_work(
    fake_gpu, tmp_path: Path, kind: str
) -> None:
    """TensorRT has no string tensors and takes and gives tensors only (docs/tensorrt-facts.md, "No
    string tensors"). A string input was refused by the parser after the fp16 conversion, in words
    naming no input ("TensorRT cannot parse t.fp16.onnx: Assertion failed: convertDtype(...)"); a
    string output was built by the fake alone, and a ZipMap output crashed it. Now build (backend
    tensorrt, and auto for a GPU target) refuses either in one line naming the value, before the
    precision stage writes anything, and so does the backend's own build (the device's)."""
    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.build import build
    from tests.test_non_tensor_values import _labelled, _text_classifier

    if kind == "string-input":
        model, wanted = _text_classifier(tmp_path / "t.onnx"), "input 's' is text (tensor(string))"
        profile = ShapeProfile({"s": ((1, 4), (4, 4), (8, 4))})
    else:
        model, wanted = _labelled(tmp_path / "clf.onnx"), "output 'names' is text (tensor(string))"
        profile = ShapeProfile({"x": ((1, 8), (4, 8), (8, 8))})
    gpu = load_target("rtx4090")
    for precision in ("fp32", "fp16"):
        for backend in ("tensorrt", "auto"):
            out = tmp_path / f"{precision}-{backend}"
            request = BuildRequest(precision, gpu, backend, options={"profiles": [profile]})
            with pytest.raises(InputError) as err:
                build(model, request, out)
            said = str(err.value)
            assert "\n" not in said and wanted in said and "TensorRT has no string tensors" in said, said
            assert "--backend onnxruntime" in said
            assert not out.exists() or not any(out.iterdir())
    assert "OnnxParser.parse_from_file" not in fake_gpu.state.names() and fake_gpu.state.builds == 0
    if kind != "string-input":  # the ZipMap output alone (the names output removed)
        import onnx

        proto = onnx.load(model)
        del proto.graph.output[0]
        onnx.save(proto, tmp_path / "zipmap.onnx")
        model, wanted = tmp_path / "zipmap.onnx", "output 'z' is seq(map(int64,tensor(float))), not a tensor"
    with pytest.raises(InputError, match=re.escape(wanted)):
        TensorRTBackend().build(model, options(profiles=[profile]), tmp_path / "direct")
    assert fake_gpu.state.builds == 0 and not (tmp_path / "direct").exists()
    # the fake parser refuses such a value as the real one does, with no node (it was a fake-only success)
    from edgedeploy.backends.trt_build import parse_onnx

    with pytest.raises(InputError) as err:
        parse_onnx(fake_gpu.trt.Logger(), model, 0)
    said = PARSER_INPUT_TYPE_ERROR if kind == "string-input" else PARSER_OUTPUT_TYPE_ERROR
    assert str(err.value) == f"TensorRT cannot parse {model.name}: {said}"


# -- the run every engine gets before it is called built ------------------------------------------


def _runs(fake_gpu) -> list[tuple[str, tuple]]:
    wanted = (
        "ICudaEngine.create_execution_context",
        "IExecutionContext.set_input_shape",
        "IExecutionContext.execute_async_v3",
    )
    return [(n, a) for n, a in fake_gpu.state.calls if n in wanted]


def test_build_runs_the_engine_once_at_its_profile_s_opt_shape_and_records_it(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """An engine was called built without ever being run (no execution context, no set_input_shape,
    no execute_async_v3 in the fake's calls; no `checked` in the sidecar), where the ONNX Runtime
    artifact says "loaded and run once"."""
    result = TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    calls = _runs(fake_gpu)
    names = [n for n, _ in calls]
    assert names == [
        "ICudaEngine.create_execution_context",
        "IExecutionContext.set_input_shape",
        "IExecutionContext.execute_async_v3",
    ]
    assert calls[1][1] == ("input", (4, 1, 8, 8))  # without data or --input: the opt shape
    sidecar = json.loads((tmp_path / "cnn.fp32.engine.json").read_text())
    assert sidecar["checked"] == "loaded and run once" == result.info["checked"]
    assert sidecar["checked_on"] == "random inputs"
    assert sidecar["checked_shapes"] == {"input": [4, 1, 8, 8]}
    assert not fake_gpu.gpu.dead_context_cleanups
    assert fake_gpu.gpu.context_depth == 0  # the check's CUDA context released


def test_build_runs_the_engine_on_the_calibration_batch_else_the_input_shapes(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    import numpy as np

    batch = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    TensorRTBackend().build(cnn_models.fp16, options("fp16", feed={"input": batch}), tmp_path / "data")
    assert ("IExecutionContext.set_input_shape", ("input", (2, 1, 8, 8))) in _runs(fake_gpu)
    sidecar = json.loads((tmp_path / "data" / "cnn.fp16.engine.json").read_text())
    assert sidecar["checked"] == "loaded and run once" and sidecar["checked_on"] == "the calibration data"

    fake_gpu.state.calls.clear()
    TensorRTBackend().build(cnn_models.fp32, options(shapes={"input": (3, 1, 8, 8)}), tmp_path / "shapes")
    assert ("IExecutionContext.set_input_shape", ("input", (3, 1, 8, 8))) in _runs(fake_gpu)
    sidecar = json.loads((tmp_path / "shapes" / "cnn.fp32.engine.json").read_text())
    assert sidecar["checked_on"] == "random inputs" and sidecar["checked_shapes"] == {"input": [3, 1, 8, 8]}


def test_a_calibration_batch_outside_the_profile_runs_the_opt_shape_and_says_why(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    import numpy as np

    batch = np.zeros((16, 1, 8, 8), np.float32)  # the profile's max is 8
    result = TensorRTBackend().build(cnn_models.fp32, options(feed={"input": batch}), tmp_path)
    assert ("IExecutionContext.set_input_shape", ("input", (4, 1, 8, 8))) in _runs(fake_gpu)
    assert result.info["checked"] == "loaded and run once"
    assert result.info["checked_on"].startswith(
        "random inputs (the calibration data: input 'input' shape [16, 1, 8, 8] is outside the "
        "engine's profile"
    )


def _spoil_outputs(fake_gpu, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The fake engine's outputs NaN (``how`` = "nan"), or its output shape twice the batch ("shape")."""
    import numpy as np

    context = fake_gpu.trt._fake_classes["IExecutionContext"]
    if how == "nan":
        run = context.execute_async_v3

        def execute(self, stream_handle: int) -> bool:
            ok = run(self, stream_handle)
            memory = fake_gpu.gpu.memory[self._addresses["logits"]]
            memory[: memory.size // 4 * 4] = np.full(memory.size // 4, np.nan, np.float32).view(np.uint8)
            return ok

        monkeypatch.setattr(context, "execute_async_v3", execute)
    else:
        shape_of = context.get_tensor_shape

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            shape = shape_of(self, name)
            return (shape[0] * 2, *shape[1:]) if name == "logits" else shape

        monkeypatch.setattr(context, "get_tensor_shape", get_tensor_shape)


@pytest.mark.parametrize("how", ["nan", "shape"])
def test_an_engine_whose_outputs_are_not_finite_or_misshaped_is_refused_and_not_written(
    fake_gpu, cnn_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    _spoil_outputs(fake_gpu, monkeypatch, how)
    with pytest.raises(InputError) as err:
        TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    said = str(err.value)
    assert "\n" not in said and "cnn.fp32.engine" in said and "not kept" in said
    if how == "nan":
        assert "output 'logits' holds 40 NaN or inf values where the ONNX model's are finite" in said
    else:
        assert "output 'logits' has shape [8, 10] where the ONNX model gives [4, 10]" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no engine, sidecar, layers or scratch


def test_an_engine_built_where_no_gpu_runtime_answers_is_said_built_not_run(
    fake_gpu, cnn_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Cross-building (TensorRT builds, no CUDA device answers here): never claimed run."""
    monkeypatch.setattr(TensorRTBackend, "available", lambda self: (True, "TensorRT, no GPU here"))
    fake_gpu.gpu.present = False
    with caplog.at_level("WARNING"):
        result = TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    assert not _runs(fake_gpu)
    checked = json.loads((tmp_path / "cnn.fp32.engine.json").read_text())["checked"]
    assert checked == result.info["checked"]
    assert checked.startswith("built, not run: ") and "no CUDA GPU answers" in checked
    said = [r.getMessage() for r in caplog.records if "not run" in r.getMessage()]
    advice = "run it on the GPU it is for (compare, or the bundle's verify.sh)"
    assert said == [f"cnn.fp32.engine: {checked}; {advice}"]


def test_an_engine_with_no_check_on_record_is_built_and_run_again_not_skipped(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """A sidecar written before engines were run once says nothing of a run: never "up to date"."""
    backend = TensorRTBackend()
    backend.build(cnn_models.fp32, options(), tmp_path)
    sidecar = tmp_path / "cnn.fp32.engine.json"
    old = json.loads(sidecar.read_text())
    for key in ("checked", "checked_on", "checked_shapes"):
        old.pop(key)
    sidecar.write_text(json.dumps(old))
    fake_gpu.state.calls.clear()
    again = backend.build(cnn_models.fp32, options(), tmp_path)
    assert not again.skipped and fake_gpu.state.builds == 2
    assert [n for n, _ in _runs(fake_gpu)][-1] == "IExecutionContext.execute_async_v3"
    assert json.loads(sidecar.read_text())["checked"] == "loaded and run once"
    fake_gpu.state.calls.clear()
    skipped = backend.build(cnn_models.fp32, options(), tmp_path)
    assert skipped.skipped and skipped.info["checked"] == "loaded and run once" and not _runs(fake_gpu)


def test_an_engine_the_runtime_cannot_run_is_built_not_run_not_refused(
    fake_gpu, cnn_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output whose shape depends on the data (NMS's boxes), which edgedeploy's runtime does not
    run: the engine is no less built for TensorRT and trtexec, and is said not run."""
    context = fake_gpu.trt._fake_classes["IExecutionContext"]
    shape_of = context.get_tensor_shape
    monkeypatch.setattr(
        context, "get_tensor_shape", lambda self, name: (-1, 10) if name == "logits" else shape_of(self, name)
    )
    result = TensorRTBackend().build(cnn_models.fp32, options(), tmp_path)
    assert "IExecutionContext.execute_async_v3" not in fake_gpu.state.names()
    checked = json.loads((tmp_path / "cnn.fp32.engine.json").read_text())["checked"]
    assert checked == result.info["checked"]
    said = "built, not run: edgedeploy's runtime cannot run it (output 'logits' has a data-dependent"
    assert checked.startswith(said)


@trt_versions("10.13.0")
def test_a_backend_build_refused_after_the_precision_model_leaves_none_of_the_builds_files(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """A backend build that fails with exit 2 (here TensorRT's parser refusing an op) came after the
    precision step had written cnn.static.fp16.onnx and its plan into -o, and they stayed: half a result of
    a build that failed on bad input, which `bundle` or a later command could take as built. Bad input
    now leaves none of the files the build wrote, as the precision step's own refusals leave none
    (stages/build._nothing_left); an earlier build's files of other names stay."""
    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.build import build

    out = tmp_path / "out"
    out.mkdir()
    (out / "cnn.static.fp32.engine").write_bytes(b"an earlier build's")
    fake_gpu.state.unsupported_ops = {"Flatten"}
    request = BuildRequest("fp16", load_target("rtx4090"), backend="tensorrt")
    with pytest.raises(InputError, match="Flatten"):
        build(cnn_models.static, request, out)
    assert sorted(p.name for p in out.iterdir()) == ["cnn.static.fp32.engine"]
