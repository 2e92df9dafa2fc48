"""Build options against the API each TensorRT release really has: refused in one line naming the
first release that has them, and built everywhere they exist (never an AttributeError)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgedeploy.backends import trt_versions
from edgedeploy.backends.base import BuildOptions
from edgedeploy.backends.tensorrt import TensorRTBackend
from edgedeploy.backends.trt_versions import TrtVersion
from edgedeploy.errors import InputError
from edgedeploy.options import ShapeProfile
from edgedeploy.targets import load_target

BATCH = ShapeProfile({"input": ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))})
STATIC = ShapeProfile({"input": ((2, 1, 8, 8),) * 3})


def options(precision: str = "fp32", target: str = "rtx4090", **kw: Any) -> BuildOptions:
    kw.setdefault("profiles", [BATCH])
    return BuildOptions(precision=precision, target=load_target(target), **kw)


NEEDS = "needs TensorRT"
CASES = [
    ("8.6.1", {"memory_pools_mb": {"tactic_shared_memory": 1}},
     f"--memory-pool tactic_shared_memory {NEEDS} 10.0"),
    ("8.5.3", {"memory_pools_mb": {"tactic_dram": 1}}, f"--memory-pool tactic_dram {NEEDS} 8.6 or newer"),
    ("10.3.0", {"hardware_compatibility": "same_compute_capability"},
     f"--hardware-compat same_compute_capability {NEEDS} 10.9"),
    ("8.5.3", {"hardware_compatibility": "ampere_plus"}, f"--hardware-compat ampere_plus {NEEDS} 8.6"),
    ("8.5.3", {"optimization_level": 2}, f"--opt-level {NEEDS} 8.6 or newer"),
    ("8.5.3", {"version_compatible": True}, f"--version-compatible {NEEDS} 8.6 or newer"),
    ("10.13.0", {"dla_core": 0, "profiles": [STATIC]}, f"--dla-core {NEEDS} 10.7 or older, or 11.4.1"),
    ("11.1.0", {"dla_core": 0, "profiles": [STATIC]}, f"--dla-core {NEEDS} 10.7 or older, or 11.4.1"),
]  # fmt: skip


@pytest.mark.trt_versions("10.3.0")
@pytest.mark.parametrize(
    ("release", "kw", "message"), CASES, ids=[f"{c[0]}-{next(iter(c[1]))}" for c in CASES]
)
def test_an_option_the_release_lacks_is_refused_naming_the_first_release_that_has_it(
    fake_gpu, cnn_models, tmp_path: Path, release: str, kw: dict[str, Any], message: str
) -> None:
    fake_gpu.install(release)
    target = "jetson-agx-orin" if "dla_core" in kw else "rtx4090"
    precision, model = ("int8", cnn_models.int8) if "dla_core" in kw else ("fp32", cnn_models.fp32)
    with pytest.raises(InputError) as err:
        TensorRTBackend().build(model, options(precision, target, **kw), tmp_path)
    text = str(err.value)
    assert text.startswith(message) and f"this is TensorRT {release}" in text and "\n" not in text
    assert fake_gpu.state.builds == 0 and not list(tmp_path.iterdir())


def supported_options(version: TrtVersion) -> dict[str, Any]:
    """Every desktop build option this release has, by the bindings data."""
    kw: dict[str, Any] = {"memory_pools_mb": {}, "tf32": False, "profiling_verbosity": "detailed"}
    for pool, item in trt_versions.MEMORY_POOL_ITEMS.items():
        if trt_versions.has(item, version) and not pool.startswith("dla"):
            kw["memory_pools_mb"][pool] = 64
    if trt_versions.has("IBuilderConfig.builder_optimization_level", version):
        kw["optimization_level"] = 4
    for level in ("same_compute_capability", "ampere_plus"):
        if trt_versions.has(trt_versions.HARDWARE_COMPAT_ITEMS[level][-1], version):
            kw["hardware_compatibility"] = level
            break
    if trt_versions.has("BuilderFlag.VERSION_COMPATIBLE", version):
        kw["version_compatible"] = True
    return kw


def test_every_option_builds_on_every_release_that_has_it(fake_gpu, cnn_models, tmp_path: Path) -> None:
    version = TrtVersion.parse(fake_gpu.state.version)
    kw = supported_options(version)
    result = TensorRTBackend().build(cnn_models.fp32, options(**kw), tmp_path)
    config = fake_gpu.config()
    assert set(config._pools) == {"WORKSPACE", *(p.upper() for p in kw["memory_pools_mb"])}
    assert "TF32" not in config._flags
    if "optimization_level" in kw:
        assert config._props["builder_optimization_level"] == 4
    if "version_compatible" in kw:
        assert "VERSION_COMPATIBLE" in config._flags
    layers = (tmp_path / "cnn.fp32.layers.json").read_text()
    assert '"Layers"' in layers and result.info["layer_summary"]["layers"] == 4


@pytest.mark.trt_versions(max="10.8")
def test_dla_builds_on_the_releases_with_dla_and_the_engine_loads_on_its_core(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    engine = (
        TensorRTBackend()
        .build(cnn_models.int8, options("int8", "jetson-agx-orin", dla_core=1, profiles=[STATIC]), tmp_path)
        .artifact
    )
    with TensorRTBackend().runner(engine):
        pass
    loads = [args for name, args in fake_gpu.state.calls if name == "Runtime.deserialize_cuda_engine"]
    assert loads and all(dla_core == 1 for _, _, dla_core in loads)  # set before every deserialization


def test_summary_table_names_the_releases_from_the_data() -> None:
    rows = dict(trt_versions.summary_table())
    assert rows["--memory-pool tactic_shared_memory=MiB"] == "10.0+"
    assert rows["--memory-pool tactic_dram=MiB"] == "8.6+"
    assert rows["--hardware-compat same_compute_capability"] == "10.9+"
    assert rows["--opt-level"] == "8.6+"
    assert rows["fp16/int8 builder flags (8.x path)"] == "8.5 to before 11.0"
    assert not trt_versions.dla_available(TrtVersion(11, 3, 0))
    assert trt_versions.dla_available(TrtVersion(10, 7, 0)) and trt_versions.dla_available(
        TrtVersion(11, 4, 1)
    )
    assert not trt_versions.dla_available(TrtVersion(10, 8, 0))


def test_readme_lists_what_each_option_needs_as_the_data_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for option, releases in trt_versions.summary_table():
        assert f"| `{option}` | {releases} |" in readme, option


@pytest.mark.trt_versions("8.6.1")
def test_the_build_stage_refuses_before_making_the_precision_artifact(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.build import build

    request = BuildRequest(
        precision="fp16",
        target=load_target("rtx4090"),
        backend="tensorrt",
        options={"memory_pools_mb": {"tactic_shared_memory": 8}, "profiles": [BATCH]},
    )
    with pytest.raises(InputError, match=r"tactic_shared_memory needs TensorRT 10\.0 or newer"):
        build(cnn_models.fp32, request, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.trt_versions("10.13.0")
def test_a_dynamic_input_without_a_profile_is_refused_before_the_precision_artifact(
    fake_gpu, cnn_models, tmp_path: Path
) -> None:
    """A dynamic input with no --profile on the TensorRT backend was refused only after the fp16
    artifact, its plan and range analysis had been written to -o: it needs the model's input
    shapes only, and is refused before any work as the options a build cannot use are."""
    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.build import build

    request = BuildRequest(precision="fp16", target=load_target("rtx4090"), backend="tensorrt")
    with pytest.raises(InputError, match=r"input 'input' has dynamic dims .* --profile input:1x1x8x8,"):
        build(cnn_models.fp32, request, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


REFUSED_BEFORE_WORK = [
    ("jetson-agx-orin", "fp16", {"dla_core": 0, "profiles": [BATCH]}, "DLA needs static shapes"),
    ("jetson-agx-orin", "fp32", {"dla_core": 0, "profiles": [STATIC]}, "DLA runs FP16 and INT8 only"),
    ("jetson-orin-nano", "fp16", {"hardware_compatibility": "ampere_plus"}, "for desktop GPUs only"),
    ("t4", "fp16", {"hardware_compatibility": "ampere_plus"}, "ampere_plus needs compute capability >= 8.0"),
]


@pytest.mark.trt_versions("10.3.0")
@pytest.mark.parametrize(
    ("target", "precision", "kw", "message"), REFUSED_BEFORE_WORK, ids=[c[3] for c in REFUSED_BEFORE_WORK]
)
def test_a_tensorrt_option_the_target_or_the_shapes_cannot_take_is_refused_before_the_precision_artifact(
    fake_gpu, cnn_models, tmp_path: Path, target: str, precision: str, kw: dict[str, Any], message: str
) -> None:
    """`build --precision fp16 --target jetson-agx-orin --backend tensorrt --dla-core 0` with a dynamic
    --profile converted the model, wrote hw.fp16.onnx, its plan and ranges, and only then said "DLA
    needs static shapes"; --hardware-compat on a Jetson the same. Every check of the TensorRT plan
    that needs no artifact now runs before any work (README: options are checked before any work)."""
    from edgedeploy.options import BuildRequest
    from edgedeploy.stages.build import build

    kw.setdefault("profiles", [BATCH])
    request = BuildRequest(precision=precision, target=load_target(target), backend="tensorrt", options=kw)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("the user's")
    with pytest.raises(InputError, match=message) as err:
        build(cnn_models.fp32, request, out)
    assert "\n" not in str(err.value)
    assert [p.name for p in out.iterdir()] == ["kept.txt"] and fake_gpu.state.builds == 0
