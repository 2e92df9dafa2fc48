"""The package uses none of the TensorRT APIs removed in 10.0 (docs/tensorrt-facts.md, "Building an engine").

mypy against the stubs catches these in typed code; this grep also covers strings, comments
that became code, and modules mypy treats as Any. Words are matched as attribute accesses
(``.build_engine(``), so prose that names them does not count.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgedeploy"
REMOVED = (
    "build_engine",
    "max_batch_size",
    "max_workspace_size",
    "execute_async",
    "execute_async_v2",
    "num_bindings",
    "get_binding_index",
    "get_binding_shape",
    "binding_is_input",
    "set_binding_shape",
    "get_binding_dtype",
    "get_binding_name",
)
PATTERN = re.compile(r"\.(" + "|".join(REMOVED) + r")\b(?!_)")


def find_removed_apis(root: Path) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PATTERN.search(line):
                hits.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    return hits


def test_package_uses_no_tensorrt_api_removed_in_10() -> None:
    assert find_removed_apis(PACKAGE) == []


def test_the_grep_finds_removed_apis_and_spares_their_successors(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "old.py").write_text(
        "engine = builder.build_engine(network, config)\n"
        "ctx.execute_async_v2(bindings, stream)\n"
        "config.max_workspace_size = 1 << 30\n"
    )
    (pkg / "new.py").write_text(
        "plan = builder.build_serialized_network(network, config)\n"
        "ctx.execute_async_v3(stream)\n"
        "# build_engine was removed in TensorRT 10\n"
    )
    assert len(find_removed_apis(pkg)) == 3
