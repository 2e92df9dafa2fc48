"""The fake tensorrt of each release has exactly the API TensorRT's bindings give that release.

Ground truth: tests/data/trt-python-api.json, extracted from the pybind11 sources of NVIDIA's
TensorRT repository at each release tag. A name the fake exposes that the release lacks fails here,
so the fakes cannot offer a newer API to code running on an older release.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect

import pytest

from tests.fakes import fake_pycuda, fake_tensorrt, trt_api

RELEASES = trt_api.releases()


def fake(version: str):  # type: ignore[no-untyped-def]
    return fake_tensorrt.make_tensorrt(fake_tensorrt.FakeTrtState(gpu=fake_pycuda.FakeGpu(), version=version))


def surface_problems(module: object, release: str) -> list[str]:
    """Every public name of the fake module, enum or class that the release's bindings lack."""
    api = trt_api.load()["versions"][release]
    problems = []
    allowed = trt_api.module_names(release)
    for name in dir(module):
        if name.startswith("_"):
            continue
        if name not in allowed:
            problems.append(f"tensorrt.{name}")
            continue
        value = getattr(module, name)
        if isinstance(value, type) and issubclass(value, enum.Enum):  # an enum, or an alias of one
            real = api["enums"].get(value.__name__, {})
            got = {m: int(v) for m, v in value.__members__.items()}
            problems += [f"{name}.{m}={v}" for m, v in got.items() if real.get(m) != v]
        elif isinstance(value, type):
            surface = trt_api.class_surface(release, name)
            for member in dir(value):
                if member.startswith("_"):
                    continue
                try:
                    inspect.getattr_static(value, member)
                except AttributeError:
                    continue
                if hasattr(value, member) and member not in surface:
                    problems.append(f"{name}.{member}")
    return problems


@pytest.mark.parametrize("release", RELEASES)
def test_fake_exposes_nothing_the_release_lacks_and_every_enum_value_is_real(release: str) -> None:
    module = fake(release)
    assert surface_problems(module, release) == []
    api = trt_api.load()["versions"][release]
    for name, members in api["enums"].items():
        if "." in name:
            continue
        assert {m: int(v) for m, v in getattr(module, name).__members__.items()} == members, name


def test_the_check_fails_when_a_fake_attribute_is_added_that_the_release_lacks() -> None:
    module = fake("8.5.3")
    module.Runtime._surface = module.Runtime._surface | {"engine_host_code_allowed"}  # as if unguarded
    assert surface_problems(module, "8.5.3") == ["Runtime.engine_host_code_allowed"]
    module = fake("10.13.0")
    module.load_engine_v4 = lambda: None  # type: ignore[attr-defined]
    assert surface_problems(module, "10.13.0") == ["tensorrt.load_engine_v4"]


def test_every_name_a_fake_class_defines_exists_in_some_release() -> None:
    """The fakes invent nothing: each public member is bound by TensorRT in at least one release."""
    module = fake("10.13.0")
    invented = []
    for name, cls in module._fake_classes.items():
        known = set().union(*(trt_api.class_surface(r, name) for r in RELEASES))
        for klass in cls.__mro__:
            if klass.__module__ != fake_tensorrt.__name__ or klass.__name__ in ("_Api", "object"):
                continue
            invented += [f"{name}.{m}" for m in vars(klass) if not m.startswith("_") and m not in known]
    assert invented == []


@pytest.mark.parametrize(
    ("release", "reads", "present"),
    [
        ("8.5.3", "Runtime.engine_host_code_allowed", False),
        ("8.6.1", "Runtime.engine_host_code_allowed", True),
        ("8.5.3", "IBuilderConfig.builder_optimization_level", False),
        ("10.13.0", "IBuilderConfig.int8_calibrator", True),
        ("11.1.0", "IBuilderConfig.int8_calibrator", False),
        ("11.1.0", "ILayer.precision", False),
        ("8.6.1", "ParserError.node_name", False),
        ("8.6.1", "INetworkDefinition.get_flag", False),
    ],
)
def test_a_call_that_only_exists_on_other_releases_raises_attribute_error(
    release: str, reads: str, present: bool
) -> None:
    cls_name, member = reads.split(".")
    cls = getattr(fake(release), cls_name)
    assert hasattr(cls, member) is present


def test_setting_an_unbound_property_raises_like_pybind11() -> None:
    trt = fake("8.5.3")
    runtime = trt.Runtime(trt.Logger())
    with pytest.raises(AttributeError, match="engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    trt = fake("10.3.0")
    runtime = trt.Runtime(trt.Logger())
    runtime.engine_host_code_allowed = True
    with pytest.raises(AttributeError):
        runtime.num_DLA_cores = 3  # read-only in the bindings


def test_strongly_typed_and_explicit_batch_values_per_release() -> None:
    assert int(fake("10.3.0").NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(fake("11.1.0").NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert not hasattr(fake("11.1.0").NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(fake("8.6.1").NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def test_generated_release_table_matches_the_bindings_data() -> None:
    spec = importlib.util.spec_from_file_location(
        "derive_presence", trt_api.API_PATH.parents[2] / "tools" / "trt_stubs" / "derive_presence.py"
    )
    assert spec and spec.loader
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    from edgedeploy.backends import trt_api_presence, trt_versions

    expected = derive.render(list(trt_versions.API_ITEMS))
    assert inspect.getsource(trt_api_presence) == expected, "run python tools/trt_stubs/derive_presence.py"
