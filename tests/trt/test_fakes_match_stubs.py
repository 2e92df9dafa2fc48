"""Every attribute the fakes expose exists in the real APIs' stubs, so the fakes cannot drift.

The fake tensorrt of 10.13 is checked against tensorrt-stubs 10.13.0.35.1 (every release against
TensorRT's bindings in tests/trt/test_fake_releases.py) (installed by
tools/trt_stubs/install.sh into .stubs/tensorrt; skipped with the reason when absent, CI installs
it), the fake pycuda against tools/trt_stubs/stubs/pycuda. Names are read from the fakes' source
with ast: methods, ``self.x =`` attributes and module-level names; a leading underscore marks the
fakes' own bookkeeping, which code under test never touches.
"""

from __future__ import annotations

import ast
import enum
import inspect
from pathlib import Path

import pytest

from tests.fakes import fake_pycuda, fake_tensorrt

ROOT = Path(__file__).resolve().parents[2]
TRT_STUBS = ROOT / ".stubs" / "tensorrt"
PYCUDA_STUBS = ROOT / "tools" / "trt_stubs" / "stubs" / "pycuda"
KEPT_DUNDERS = {"__init__", "__len__", "__getitem__", "__int__", "__index__"}


def stub_classes(*files: Path) -> tuple[dict[str, set[str]], set[str]]:
    """Class -> member names (with bases resolved) and module-level names of some .pyi files."""
    classes: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    module: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                members = set()
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        members.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        members.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        members.update(t.id for t in item.targets if isinstance(t, ast.Name))
                classes[node.name] = members
                bases[node.name] = [
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                ]
                module.add(node.name)
            elif isinstance(node, ast.FunctionDef):
                module.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                module.add(node.target.id)
            elif isinstance(node, ast.Assign):
                module.update(t.id for t in node.targets if isinstance(t, ast.Name))

    def resolved(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out = set(classes.get(name, set()))
        for base in bases.get(name, []):
            if base in classes and base not in seen:
                out |= resolved(base, seen | {name})
        return out

    return {name: resolved(name) for name in classes}, module


def fake_class_members(source_module: object) -> dict[str, set[str]]:
    """Members each fake class defines: methods, properties and ``self.x`` assignments."""
    tree = ast.parse(inspect.getsource(source_module))  # type: ignore[arg-type]
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        members = found.setdefault(node.name, set())
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                members.add(item.name)
                for sub in ast.walk(item):
                    if isinstance(sub, (ast.Assign, ast.AnnAssign)):
                        targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                        for t in targets:
                            if (
                                isinstance(t, ast.Attribute)
                                and isinstance(t.value, ast.Name)
                                and t.value.id == "self"
                            ):
                                members.add(t.attr)
            elif isinstance(item, ast.Assign):
                members.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {cls: {m for m in ms if not m.startswith("_") or m in KEPT_DUNDERS} for cls, ms in found.items()}


def check(module: object, classes: dict[str, set[str]], module_names: set[str], source: object) -> list[str]:
    problems = []
    members = fake_class_members(source)
    for name in dir(module):
        if name.startswith("_"):
            continue
        if name not in module_names:
            problems.append(f"{name}: not in the stubs")
            continue
        value = getattr(module, name)
        if isinstance(value, type) and issubclass(value, enum.Enum):
            missing = set(value.__members__) - classes.get(name, set())
            problems += [f"{name}.{m}: not in the stubs" for m in sorted(missing)]
        elif isinstance(value, type):
            if name not in classes:
                problems.append(f"{name}: fake class has no stub class")
                continue
            missing = members.get(name, set()) - classes[name] - {"__init__"}
            problems += [f"{name}.{m}: not in the stubs" for m in sorted(missing)]
    return problems


@pytest.mark.parametrize("version", ["10.13.0"])  # the stubs' release; per release: test_fake_releases.py
def test_fake_tensorrt_exposes_only_names_the_tensorrt_stubs_have(version: str) -> None:
    if not (TRT_STUBS / "tensorrt_bindings" / "tensorrt.pyi").is_file():
        pytest.skip(f"tensorrt stubs not installed at {TRT_STUBS}: run tools/trt_stubs/install.sh (CI does)")
    classes, names = stub_classes(TRT_STUBS / "tensorrt_bindings" / "tensorrt.pyi")
    _, exported = stub_classes(TRT_STUBS / "tensorrt" / "__init__.pyi")
    state = fake_tensorrt.FakeTrtState(gpu=fake_pycuda.FakeGpu(), version=version)
    fake = fake_tensorrt.make_tensorrt(state)
    assert check(fake, classes, names | exported, fake_tensorrt) == []


def test_fake_pycuda_exposes_only_names_the_pycuda_stubs_have() -> None:
    classes, names = stub_classes(PYCUDA_STUBS / "driver.pyi")
    _, driver = fake_pycuda.make_pycuda(fake_pycuda.FakeGpu())
    assert check(driver, classes, names, fake_pycuda) == []


def test_the_check_catches_a_fake_that_drifts() -> None:
    classes, names = stub_classes(PYCUDA_STUBS / "driver.pyi")
    _, driver = fake_pycuda.make_pycuda(fake_pycuda.FakeGpu())
    driver.memcpy_htod_async_v2 = lambda *a: None  # type: ignore[attr-defined]
    assert check(driver, classes, names, fake_pycuda) == ["memcpy_htod_async_v2: not in the stubs"]


def test_the_check_catches_a_removed_tensorrt_api_in_the_fake() -> None:
    if not (TRT_STUBS / "tensorrt_bindings" / "tensorrt.pyi").is_file():
        pytest.skip(f"tensorrt stubs not installed at {TRT_STUBS}: run tools/trt_stubs/install.sh (CI does)")
    classes, _ = stub_classes(TRT_STUBS / "tensorrt_bindings" / "tensorrt.pyi")
    members = fake_class_members(fake_tensorrt)
    members["Builder"].add("build_engine")  # removed in TensorRT 10
    assert "build_engine" not in classes["Builder"]
    assert {"execute_async_v3", "set_tensor_address", "set_input_shape"} <= members["IExecutionContext"]
    assert members["IExecutionContext"] <= classes["IExecutionContext"] | {"__init__"}
