"""Repair the syntax errors that tensorrt-stubs 10.13.0.35.1 ships with, so mypy can read them.

The stubs are generated from the pybind11 bindings, and the generator copies two things Python
cannot parse: parameters named after keywords (``in: list[...]``) and parameters without a
default after ones with a default (``add_scale_nd(..., power: Weights = None, channel_axis: int)``).
This script rewrites only the ``def`` lines ``ast`` rejects, re-parses until every file parses, and
fails loudly if a line it cannot repair remains, so a new stubs release cannot slip through.

usage: python fix_stubs.py STUBS_DIR
"""

from __future__ import annotations

import ast
import keyword
import re
import sys
from pathlib import Path

_PARAM_SPLIT = re.compile(r",\s*(?![^\[\]()]*[\])])")


def _fix_params(params: str) -> str:
    """Rename keyword-named parameters and give a default to any that follows a defaulted one."""
    fixed: list[str] = []
    seen_default = False
    for raw in _PARAM_SPLIT.split(params):
        part = raw.strip()
        if not part:
            continue
        name = re.split(r"[:=\s]", part.lstrip("*"), maxsplit=1)[0]
        if keyword.iskeyword(name):
            part = part.replace(name, f"{name}_", 1)
        if part.startswith("*"):
            seen_default = part.startswith("**") or seen_default
            fixed.append(part)
            continue
        if "=" in part:
            seen_default = True
        elif seen_default and part != "/":
            part = f"{part} = ..."
        fixed.append(part)
    return ", ".join(fixed)


def fix_line(line: str) -> str:
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*(->.*)?:\s*.*)$", line)
    if not match:
        return line
    return match.group(1) + _fix_params(match.group(2)) + match.group(3)


def fix_file(path: Path) -> int:
    lines = path.read_text().splitlines()
    repaired = 0
    for _ in range(1000):
        try:
            ast.parse("\n".join(lines), filename=str(path))
        except SyntaxError as err:
            index = (err.lineno or 1) - 1
            new = fix_line(lines[index])
            if new == lines[index]:
                raise SystemExit(
                    f"{path}:{err.lineno}: cannot repair: {err.msg}: {lines[index].strip()}"
                ) from err
            lines[index] = new
            repaired += 1
            continue
        break
    if repaired:
        path.write_text("\n".join(lines) + "\n")
    return repaired


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    root = Path(argv[1])
    files = sorted(root.rglob("*.pyi"))
    if not files:
        print(f"no .pyi files under {root}", file=sys.stderr)
        return 1
    total = 0
    for path in files:
        count = fix_file(path)
        total += count
        if count:
            print(f"fixed {count} line(s) in {path.relative_to(root)}")
    print(f"{len(files)} stub files parse ({total} line(s) repaired)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
