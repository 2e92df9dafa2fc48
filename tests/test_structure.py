"""The shape of the code, checked: imports point down the layers and never go round in a cycle.

In the spirit of Polygraphy's tests/mod/test_dependencies.py, but on the source: every
``import`` statement of edgedeploy and calibration, at module level and inside functions, is
read with ``ast`` (nothing is imported), and the graph is checked against the layering of
docs/design.md: cli -> pipeline -> stages -> backends -> basics -> calibration. Runs in well
under a second.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgedeploy", "calibration")

# Top to bottom; a module may import its own layer and the layers below it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("edgedeploy.cli", "edgedeploy.__main__")),
    ("pipeline", ("edgedeploy.pipeline",)),
    ("stages", ("edgedeploy.stages",)),
    ("backends", ("edgedeploy.backends", "edgedeploy.power", "edgedeploy.device")),
    (
        "basics",
        (
            "edgedeploy.options",
            "edgedeploy.config",
            "edgedeploy.targets",
            "edgedeploy.errors",
            "edgedeploy.fileio",
            "edgedeploy.ui",
            "edgedeploy.results",
            "edgedeploy.onnxio",
            "edgedeploy.stats",
            "edgedeploy.interrupts",
        ),
    ),
    ("calibration", ("calibration",)),
)
BASE_PACKAGE = "edgedeploy"  # the package's __init__ (version string) sits with the basics


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root/package``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or is inside (``pkg.mod.Class`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The known modules ``module`` imports anywhere in its file (module level and in functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
            names = submodules + ([source] if len(submodules) < len(node.names) else [])
        for name in names:
            target = _known(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def layer_of(module: str) -> int | None:
    if module == BASE_PACKAGE:
        return [name for name, _ in LAYERS].index("basics")
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a higher layer (or of a module no layer claims)."""
    problems = []
    for module, targets in sorted(graph.items()):
        rank = layer_of(module)
        if rank is None:
            problems.append(f"{module} belongs to no layer (add it to LAYERS)")
            continue
        for target in sorted(targets):
            target_rank = layer_of(target)
            if target_rank is None or target_rank < rank:
                where = LAYERS[target_rank][0] if target_rank is not None else "no layer"
                problems.append(f"{module} ({LAYERS[rank][0]}) -> {target} ({where})")
    return problems


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, PACKAGES)


def test_the_import_graph_has_no_cycles(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 50  # the walk found the code
    assert cycles(graph) == []


def test_imports_only_point_down_the_layers(graph: dict[str, set[str]]) -> None:
    assert upward_imports(graph) == []


def test_calibration_never_imports_edgedeploy(graph: dict[str, set[str]]) -> None:
    assert {
        (m, t)
        for m, ts in graph.items()
        if m.startswith("calibration")
        for t in ts
        if t.startswith("edgedeploy")
    } == set()


def test_only_the_cli_imports_the_cli(graph: dict[str, set[str]]) -> None:
    importers = {m for m, ts in graph.items() for t in ts if t.split(".")[:2] == ["edgedeploy", "cli"]}
    assert {m for m in importers if not m.startswith("edgedeploy.cli")} <= {"edgedeploy.__main__"}


def test_stages_never_import_the_pipeline(graph: dict[str, set[str]]) -> None:
    assert {
        (m, t)
        for m, ts in graph.items()
        if m.startswith("edgedeploy.stages")
        for t in ts
        if t.startswith("edgedeploy.pipeline")
    } == set()


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/a.py": "from toy.b import helper\n",
            "toy/b.py": "def helper():\n    from toy import a\n    return a\n",
            "toy/c.py": "from . import a\n",
        },
    )
    graph = import_graph(tmp_path, ["toy"])
    assert graph["toy.c"] == {"toy.a"}
    assert cycles(graph) == [["toy.a", "toy.b"]]


def test_the_checker_finds_an_upward_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "edgedeploy/__init__.py": "",
            "edgedeploy/errors.py": "",
            "edgedeploy/stages/__init__.py": "",
            "edgedeploy/stages/s.py": "from edgedeploy import errors\n",
            "edgedeploy/pipeline/__init__.py": "from edgedeploy.stages import s\n",
            "edgedeploy/targets.py": "def f():\n    from edgedeploy.pipeline import run\n",
            "edgedeploy/mystery.py": "",
            "calibration/__init__.py": "import edgedeploy.errors\n",
        },
    )
    problems = upward_imports(import_graph(tmp_path, PACKAGES))
    assert problems == [
        "calibration (calibration) -> edgedeploy.errors (basics)",
        "edgedeploy.mystery belongs to no layer (add it to LAYERS)",
        "edgedeploy.targets (basics) -> edgedeploy.pipeline (pipeline)",
    ]


def test_sizes_print_in_one_scheme() -> None:
    """Sizes print as ``ui.human_size`` writes them (1.23 MB, 456 kB) everywhere; ``build`` and
    ``bundle create`` printed raw byte counts (``687,252 bytes``) beside tables in kB and MB."""
    raw = re.compile(r":,\}\s*(bytes|B)\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if raw.search(line)
    ]
    assert offenders == []


# Where comments are checked for what they cite: the packages' Python (as before), and the device
# scripts' shell, the tests' and the benchmarks' files of code: Python, shell and the fakes (scripts
# without a suffix, run by their first line). Data files under them (tests/data) are not comments.
CITING_FOLDERS = (*PACKAGES, "tests", "benchmarks")


def code_files(root: Path, folders: Iterable[str]) -> list[Path]:
    """Every file of code under ``root/folder``: .py, .sh and scripts with a ``#!`` line."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix in (".py", ".sh"):
                found.append(path)
            elif not path.suffix:
                with path.open("rb") as handle:
                    if handle.read(2) == b"#!":
                        found.append(path)
    return found


# The tests read their data from the repository (tests/data, tests/calibration/data), never from the
# shared folder beside a developer's checkout, which a clone or CI does not have.
SHARED_FOLDER = re.compile(r"(?:\.\./|/work/)shared\b")
# What a test reads that is installed, not kept in the repository (git-ignored), and how it comes;
# the tests that read it skip where it is missing.
INSTALLED = {".stubs/tensorrt": "tensorrt-stubs from PyPI, by tools/trt_stubs/install.sh"}


def tracked_files(root: Path) -> set[str] | None:
    """The files git tracks under ``root`` (relative, with /), or None where ``root`` is not the top
    of a git checkout (an unpacked source archive)."""

    def git(*args: str) -> bytes:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True, timeout=60)
        return done.stdout

    try:
        if Path(git("rev-parse", "--show-toplevel").decode().strip()).resolve() != root.resolve():
            return None
        listed = git("ls-files", "-z")
    except (OSError, subprocess.SubprocessError):
        return None
    return set(filter(None, listed.decode("utf-8", "surrogateescape").split("\0")))


def _path_of(node: ast.AST, here: Path, names: dict[str, Path]) -> Path | None:
    """The path ``node`` builds from its file's location, if it builds one: ``Path(__file__)``,
    ``.resolve()``, ``.parent``, ``.parents[N]``, ``/ "name"``, and names assigned such a path."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        return here if node.id == "__file__" else names.get(node.id)
    if isinstance(node, ast.Call) and not node.keywords:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "Path" and len(node.args) == 1:
            return _path_of(node.args[0], here, names)
        if isinstance(func, ast.Attribute) and func.attr in ("resolve", "absolute") and not node.args:
            return _path_of(func.value, here, names)
        return None
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        base = _path_of(node.value, here, names)
        return None if base is None else base.parent
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
        base = _path_of(node.value.value, here, names) if node.value.attr == "parents" else None
        index = node.slice.value if isinstance(node.slice, ast.Constant) else None
        return base.parents[index] if base is not None and isinstance(index, int) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        base = _path_of(node.left, here, names)
        right = node.right.value if isinstance(node.right, ast.Constant) else None
        return base / right if base is not None and isinstance(right, str) else None
    return None


def paths_built(path: Path) -> list[tuple[int, Path]]:
    """(line, path) of every path ``path``'s code builds from its own location, the whole expression
    (``DATA / "x.json"``, not ``DATA`` in it); a name assigned anything else too counts as none."""
    text = path.read_text(encoding="utf-8")
    if "__file__" not in text:
        return []
    tree = ast.parse(text, filename=str(path))
    here = path.resolve()
    assigned = [
        (target.id, node.value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    ]
    names: dict[str, Path] = {}
    for _ in range(3):  # a name assigned from another name assigned further down
        found: dict[str, Path | None] = {}
        for name, value in assigned:
            built = _path_of(value, here, names)
            found[name] = built if found.get(name, built) == built else None
        names = {name: value for name, value in found.items() if value is not None}
    built_at: list[tuple[int, Path]] = []

    def visit(node: ast.AST) -> None:
        built = _path_of(node, here, names) if isinstance(node, ast.expr) else None
        if built is not None:
            built_at.append((getattr(node, "lineno", 0), built))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return built_at


def _is_python(path: Path) -> bool:
    if path.suffix:
        return path.suffix == ".py"
    with path.open("rb") as handle:
        return b"python" in handle.readline()


def data_problems(root: Path, folders: Iterable[str], tracked: set[str] | None) -> list[str]:
    """Each path the code under ``root/folder`` builds from its own file that is not a file or folder
    of the repository: outside it, missing, or (``tracked`` given) not tracked by git."""
    root = root.resolve()
    problems = []
    for path in code_files(root, folders):
        if not _is_python(path):
            continue
        for line, built in sorted(set(paths_built(path))):
            where = f"{path.relative_to(root)}:{line} reads"
            target = os.path.normpath(built)
            relative = Path(os.path.relpath(target, root)).as_posix()
            if relative == ".." or relative.startswith("../"):
                problems.append(f"{where} {relative}, outside the repository")
            elif any(relative == i or relative.startswith(i + "/") for i in INSTALLED):
                continue
            elif not os.path.exists(target):
                problems.append(f"{where} {relative}, which is not in the repository")
            elif tracked is not None and not (
                relative == "." or relative in tracked or any(f.startswith(relative + "/") for f in tracked)
            ):
                problems.append(f"{where} {relative}, which git does not track")
    return problems


def shared_folder_lines(root: Path, folders: Iterable[str]) -> list[str]:
    """``file:line`` of every line of code under ``root/folder`` that names the shared folder."""
    return [
        f"{path.relative_to(root)}:{number}"
        for path in code_files(root, folders)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if SHARED_FOLDER.search(line)
    ]


def test_comments_cite_no_tensorrt_header_outside_the_repository() -> None:
    """Comments cited TensorRT's C++ headers and trtexec's, onnx-tensorrt's and pycuda's C++ sources,
    files outside the repository; they cite docs/tensorrt-facts.md, where those facts are written
    with their source. NvInferVersion.h is a file the device scripts read on the board, not a
    citation. The tests, the fakes, the benchmarks and the device scripts' shell are held to it
    too: the fake trtexec and the device tests cited trtexec's sources (docs/tensorrt-facts.md,
    "trtexec")."""
    header = re.compile(r"\b(?!NvInferVersion\.h)[\w-]+\.(?:h|hpp|cpp)\b")
    files = code_files(ROOT, CITING_FOLDERS)
    assert {"edgedeploy/device/verify.sh", "tests/device/fakes/trtexec", "benchmarks/fp16.py"} <= {
        str(path.relative_to(ROOT)) for path in files
    }
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if header.search(line)
    ]
    assert citing == []


# Projects whose source files comments cited as if a reader could open them here (Polygraphy's
# importer module, the engine explorer's activations module): a path with one of these as a folder,
# compared whole and in any case, names a file outside the repository. A wheel's member
# (rapidocr_onnxruntime/models/...) is not theirs, and an import (dotted, polygraphy.backend.trt) no path.
OUTSIDE_PROJECTS = frozenset(
    {
        "polygraphy",
        "tensorrt",
        "trex",
        "trt-engine-explorer",
        "onnx-tensorrt",
        "onnxruntime",
        "onnx",
        "onnxslim",
        "torch",
        "pytorch",
        "pycuda",
        "modelopt",
    }
)
# words joined by "/", not the tail of a longer word, a dotted name or an escaped regex (a\.onnx/cpu)
PATH_TEXT = re.compile(r"(?<![\w.\\-])[\w.~+-]*(?:/[\w.~+-]+)+/?")
# where our own paths start: a path under one of them is ours, whatever its folders are called
OWN_TOPS = (*PACKAGES, "tests", "benchmarks", "docs", "targets", *INSTALLED)


def outside_paths(root: Path, folders: Iterable[str]) -> list[str]:
    """Every path of an outside project (:data:`OUTSIDE_PROJECTS`) that the files of code under
    ``folders`` name, as ``file:line path``; not our own paths (under :data:`OWN_TOPS`, or a file or
    folder of ``root``) nor absolute ones, which are places on a machine (the board's
    /usr/src/tensorrt/bin/trtexec), not files cited."""
    found = []
    for path in code_files(root, folders):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in PATH_TEXT.finditer(line):
                text = match.group()
                parts = [part for part in text.split("/") if part]
                if text.startswith(("/", "~")) or not OUTSIDE_PROJECTS.intersection(p.lower() for p in parts):
                    continue
                named = "/".join(parts)
                if any(named == top or named.startswith(f"{top}/") for top in OWN_TOPS):
                    continue
                if (root / named).exists():
                    continue
                found.append(f"{path.relative_to(root)}:{number} {text}")
    return found


def test_comments_cite_no_file_of_an_outside_project() -> None:
    """Comments cited the engine explorer's activations.py (trex, in NVIDIA's TensorRT repository),
    Polygraphy's importer.py, TensorRT's wheel's __init__.py and its Polygraphy folder, files outside
    the repository that the header pattern (.h, .cpp) does not see; they cite docs/tensorrt-facts.md
    and docs/design.md, where those facts are written in our words."""
    assert outside_paths(ROOT, CITING_FOLDERS) == []


def test_the_citation_checker_finds_outside_paths_and_not_imports_or_our_own(tmp_path: Path) -> None:
    def spelled(*parts: str) -> str:  # spelled apart: this file is checked too
        return "/".join(parts)

    importer = spelled("polygraphy", "mod", "importer.py")
    explorer = spelled("tools", "experimental", "trt-engine-explorer", "trex", "activations.py")
    gemm = spelled("onnxruntime", "core", "providers", "cpu", "math", "gemm.cc")
    wheel = spelled("NVIDIA", "TensorRT", "python", "packaging")
    kept = spelled("tools", "own", "onnx", "kept.py")
    _write(
        tmp_path,
        {
            "tests/test_a.py": (
                "from polygraphy.backend.trt import EngineFromBytes  # an import: no path\n"
                "import onnxruntime as ort\n"
                f"# as in {importer}\n"
                f"# listed by {explorer} at v10.13.0\n"
                f"x = 1  # {gemm}, and {wheel}/\n"
                "# ours: edgedeploy/backends/tensorrt.py, tests/data/trex/fp16.json, .stubs/tensorrt/x.pyi\n"
                "MEMBER = 'rapidocr_onnxruntime/models/det.onnx'  # a wheel's member\n"
                "MATCH = r'a\\.onnx/x86-64-cpu cannot be made'\n"
                f"# {kept} is a file of ours\n"
            ),
            kept: "",
            "edgedeploy/device/common.sh": "[ -x /usr/src/tensorrt/bin/trtexec ] && echo found\n",
        },
    )
    assert outside_paths(tmp_path, ("tests", "edgedeploy")) == [
        f"tests/test_a.py:3 {importer}",
        f"tests/test_a.py:4 {explorer}",
        f"tests/test_a.py:5 {gemm}",
        f"tests/test_a.py:5 {wheel}/",
    ]


def test_the_tests_read_their_data_from_the_repository_only() -> None:
    """The tests read the TensorRT API data, the calibration cache and the tegrastats lines from
    tests/data, copies kept in the repository: a path a test builds from its own file must be a
    file git tracks, and no code names the shared folder beside the checkout, which a clone or CI
    does not have."""
    assert data_problems(ROOT, ("tests",), tracked_files(ROOT)) == []
    assert shared_folder_lines(ROOT, CITING_FOLDERS) == []


def test_the_data_checker_finds_reads_outside_the_repository(tmp_path: Path) -> None:
    shared = "/".join(("..", "shared", "data", "cache.bin"))  # spelled apart: this file is checked too
    _write(
        tmp_path,
        {
            "tests/test_a.py": (
                "from pathlib import Path\n"
                "ROOT = Path(__file__).resolve().parents[1]\n"
                "DATA = Path(__file__).parent / 'data'\n"
                "def test():\n"
                "    (DATA / 'kept.json').read_text()\n"
                "    (DATA / 'missing.json').read_text()\n"
                "    (ROOT.parent / 'shared' / 'data' / 'cache.bin').read_bytes()\n"
                "    (DATA / 'untracked.txt').read_text()\n"
                "    (ROOT / '.stubs' / 'tensorrt' / 'x.pyi').read_text()\n"
                f"    open('{shared}')\n"
            ),
            "tests/data/kept.json": "{}",
            "tests/data/untracked.txt": "",
            "tests/fakes/tool": f"#!/usr/bin/env bash\ncat {shared}\n",
        },
    )
    tracked = {"tests/test_a.py", "tests/data/kept.json", "tests/fakes/tool"}
    assert data_problems(tmp_path, ("tests",), tracked) == [
        "tests/test_a.py:6 reads tests/data/missing.json, which is not in the repository",
        f"tests/test_a.py:7 reads {shared}, outside the repository",
        "tests/test_a.py:8 reads tests/data/untracked.txt, which git does not track",
    ]
    assert shared_folder_lines(tmp_path, ("tests",)) == ["tests/fakes/tool:2", "tests/test_a.py:10"]
