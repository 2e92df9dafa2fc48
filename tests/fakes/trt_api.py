"""The real Python API of each TensorRT release, from tests/data/trt-python-api.json.

That JSON was extracted from the pybind11 binding sources of NVIDIA's TensorRT repository at each
release tag (8.5.3, 8.6.1, 10.0.1, 10.3.0, 10.7.0, 10.9.0, 10.13.0, 11.0.0, 11.1.0; the script is
tools/trt_stubs/trt_python_api_extract.py, the facts the code relies on are in
docs/tensorrt-facts.md). The fake ``tensorrt`` module is generated from it: enums with their real
members and values, and per class the exact set of methods and properties a release binds.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

API_PATH = Path(__file__).resolve().parents[1] / "data" / "trt-python-api.json"

# Names the fake module has beyond the pybind11 bindings: the TensorRT wheel's own __init__.py adds
# __version__, nptype and volume in pure Python (the JSON leaves Python-level additions out, see its
# "source"; docs/tensorrt-facts.md, "The API of each release").
PYTHON_LEVEL_NAMES = frozenset({"__version__", "nptype", "volume"})


@functools.cache
def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(API_PATH.read_text())
    return data


def releases() -> list[str]:
    """Every release the JSON covers, oldest first (e.g. '8.5.3', ..., '11.1.0')."""
    return sorted(load()["versions"], key=lambda v: tuple(int(p) for p in v.split(".")))


def release_for(version: str) -> str:
    """The JSON release with the same major.minor as ``version`` (8.5.2 -> 8.5.3); ValueError if none."""
    major_minor = tuple(version.split(".")[:2])
    for release in releases():
        if tuple(release.split(".")[:2]) == major_minor:
            return release
    raise ValueError(f"no TensorRT {version} API in {API_PATH.name}; it has {', '.join(releases())}")


def api(version: str) -> dict[str, Any]:
    result: dict[str, Any] = load()["versions"][release_for(version)]
    return result


@functools.cache
def class_surface(release: str, name: str) -> frozenset[str]:
    """Methods, properties and statics of class ``name`` in ``release``, with its bases'."""
    version = load()["versions"][release]
    spec = version["classes"].get(name)
    if spec is None:
        return frozenset()
    names = set(spec["methods"]) | set(spec["properties"]) | set(spec["static"])
    for base in version["class_meta"].get(name, {}).get("bases", []):
        names |= class_surface(release, base)
    # nested enums bound in the class scope (ILogger.Severity) and their exported values
    for enum_name, members in version["enums"].items():
        outer, _, inner = enum_name.rpartition(".")
        if outer and (outer == name or outer in version["class_meta"].get(name, {}).get("bases", [])):
            names.add(inner)
            if version["enum_meta"].get(enum_name, {}).get("export_values"):
                names |= set(members)
    return frozenset(names)


@functools.cache
def readonly(release: str, name: str) -> frozenset[str]:
    meta = load()["versions"][release]["class_meta"].get(name, {})
    names = set(meta.get("readonly_properties", []))
    for base in meta.get("bases", []):
        names |= readonly(release, base)
    return frozenset(names)


def module_names(release: str) -> frozenset[str]:
    """Every public name of the ``tensorrt`` module in ``release``."""
    version = load()["versions"][release]
    top_enums = {n for n in version["enums"] if "." not in n}
    return frozenset(
        set(version["classes"]) | top_enums | set(version["functions"]) | set(version["constants"])
        | PYTHON_LEVEL_NAMES
    )  # fmt: skip
