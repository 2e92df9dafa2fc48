#!/usr/bin/env python3
"""Write edgedeploy/backends/trt_api_presence.py from tests/data/trt-python-api.json.

For every TensorRT API item edgedeploy's options rely on (``trt_versions.API_ITEMS``: an enum member
``Enum.MEMBER`` or a class attribute ``Class.attr``), lists the releases of the JSON whose bindings
have it. tests/trt/test_versions.py regenerates this and fails when the module drifts from the JSON.

usage: python tools/trt_stubs/derive_presence.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API_JSON = ROOT / "tests" / "data" / "trt-python-api.json"
MODULE = ROOT / "edgedeploy" / "backends" / "trt_api_presence.py"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def has(release: dict, item: str) -> bool:
    owner, _, member = item.rpartition(".")
    if owner in release["enums"]:
        return member in release["enums"][owner]
    spec = release["classes"].get(owner)
    if spec is None:
        return False
    if member in spec["methods"] or member in spec["properties"] or member in spec["static"]:
        return True
    return any(
        has(release, f"{base}.{member}") for base in release["class_meta"].get(owner, {}).get("bases", [])
    )


def derive(items: list[str], api: dict | None = None) -> tuple[list[str], dict[str, list[str]]]:
    api = api or json.loads(API_JSON.read_text())
    releases = sorted(api["versions"], key=_key)
    return releases, {item: [r for r in releases if has(api["versions"][r], item)] for item in items}


def _quoted(values: list[str]) -> str:
    return ", ".join(f'"{v}"' for v in values) + ","


def render(items: list[str]) -> str:
    releases, present = derive(items)
    lines = [
        '"""Which TensorRT releases bind each API item edgedeploy relies on. GENERATED: do not edit.',
        "",
        "Made by tools/trt_stubs/derive_presence.py from tests/data/trt-python-api.json (TensorRT's",
        "pybind11 bindings at each release tag); docs/tensorrt-facts.md explains the data.",
        '"""',
        "",
        f"RELEASES: tuple[str, ...] = (\n    {_quoted(releases)}\n)",
        "",
        "PRESENT: dict[str, tuple[str, ...]] = {",
    ]
    for item in items:
        lines.append(f'    "{item}": (\n        {_quoted(present[item])}\n    ),')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from edgedeploy.backends.trt_versions import API_ITEMS

    text = render(list(API_ITEMS))
    if "--check" in sys.argv:
        if MODULE.read_text() != text:
            print(f"{MODULE} is out of date: run python tools/trt_stubs/derive_presence.py", file=sys.stderr)
            return 1
        return 0
    MODULE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
