"""The bundle's python helpers run on the board's own python3: 3.6 on JetPack 4.6 (Jetson Nano,
TX2), 3.8 on JetPack 5.1 (Xavier NX, AGX Xavier). tegrastats_power.py used itertools.pairwise
(3.10) and verify_outputs.py zip(strict=True) (3.10): benchmark.sh and verify.sh died on them there.

Every python file copied into a bundle, and the python the .sh scripts run inline, is parsed as
Python 3.6 and searched for the library calls and run-time annotations newer than 3.6. Where a
3.6 or 3.8 interpreter is found (python3.6 / python3.8 on PATH, pyenv's versions, or
EDGEDEPLOY_TEST_PYTHON36 / EDGEDEPLOY_TEST_PYTHON38), the helpers' main paths run on it too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Device, make_dense_bundle

from edgedeploy.device import device_files

DEVICE = Path(__file__).resolve().parents[2] / "edgedeploy" / "device"
FAKES = Path(__file__).parent / "fakes"

# Modules, and module attributes, newer than Python 3.6
NEW_MODULES = {
    "dataclasses",
    "contextvars",
    "importlib.resources",
    "importlib.metadata",
    "graphlib",
    "zoneinfo",
    "tomllib",
}
NEW_ATTRIBUTES = {
    ("itertools", "pairwise"),
    ("re", "Match"),
    ("re", "Pattern"),
    ("math", "prod"),
    ("math", "isqrt"),
    ("math", "dist"),
    ("functools", "cache"),
    ("functools", "cached_property"),
    ("contextlib", "nullcontext"),
    ("time", "time_ns"),
    ("shlex", "join"),
    ("typing", "Literal"),
    ("typing", "Protocol"),
    ("typing", "TypedDict"),
    ("typing", "Final"),
    ("asyncio", "run"),
    ("os", "waitstatus_to_exitcode"),
}
NEW_METHODS = {
    "removesuffix",
    "removeprefix",
    "isascii",
    "fromisoformat",
    "is_relative_to",
    "with_stem",
    "bit_count",
    "hardlink_to",
}
NEW_BUILTINS = {"breakpoint", "aiter", "anext"}
PEP585 = {"list", "dict", "tuple", "set", "frozenset", "type"}
# an f-string's `=` specifier ({x=}, {x=!r}, {x=:.2f}); == != <= >= are comparisons
FSTRING_EQUALS = re.compile(r"[^=!<>]=\s*(![rsa])?(:[^{}]*)?\}")


def py36_problems(source: str) -> list[str]:
    """What in ``source`` needs a Python newer than 3.6 (empty when nothing does)."""
    found = []
    try:
        tree = ast.parse(source, feature_version=(3, 6))
    except SyntaxError as exc:  # the first such syntax; the rest is checked on the host's grammar
        found.append(f"line {exc.lineno}: {exc.msg}")
        tree = ast.parse(source)

    def say(node: ast.AST, what: str) -> None:
        found.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    def runtime_annotation(node: ast.expr | None) -> None:
        """An annotation Python evaluates (no `from __future__ import annotations` on 3.6)."""
        if node is None or isinstance(node, ast.Constant):  # a string annotation is not evaluated
            return
        for sub in ast.walk(node):
            if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id in PEP585:
                say(sub, f"{sub.value.id}[...] in an annotation (3.9; use typing or a string)")
            elif isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr):
                say(sub, "X | Y in an annotation (3.10; use typing.Optional/Union or a string)")

    # a function's local variable annotations are never evaluated (PEP 526); module and class ones are
    local = {
        id(sub)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for sub in ast.walk(fn)
        if isinstance(sub, ast.AnnAssign)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "__future__" and any(a.name == "annotations" for a in node.names):
                say(node, "from __future__ import annotations (3.7)")
            for alias in node.names:
                if module in NEW_MODULES or (module, alias.name) in NEW_ATTRIBUTES:
                    say(node, f"from {module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in NEW_MODULES:
                    say(node, f"import {alias.name}")
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in NEW_ATTRIBUTES:
                say(node, f"{node.value.id}.{node.attr}")
            elif node.attr in NEW_METHODS:
                say(node, f".{node.attr}()")
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS | {"pairwise"}:
            say(node, node.id)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = (
                func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            )
            for kw in node.keywords:
                if name == "zip" and kw.arg == "strict":
                    say(node, "zip(strict=) (3.10)")
                elif kw.arg == "capture_output" or (owner == "subprocess" and kw.arg == "text"):
                    say(node, f"subprocess {kw.arg}= (3.7; use stdout=PIPE, universal_newlines=True)")
                elif name == "add_subparsers" and kw.arg == "required":
                    say(node, "add_subparsers(required=) (3.7; set .required after)")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                runtime_annotation(arg.annotation if arg is not None else None)
            runtime_annotation(node.returns)
        elif isinstance(node, ast.AnnAssign) and id(node) not in local:
            runtime_annotation(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            segment = ast.get_source_segment(source, node) or ""
            if FSTRING_EQUALS.search(segment):
                say(node, "f-string = specifier (3.8)")
    return found


def inline_python(script: Path) -> list[str]:
    """The python a .sh script runs from a here-document (<<'PY' ... PY)."""
    return re.findall(r"<<'PY'\n(.*?)\nPY\n", script.read_text(), flags=re.S)


def device_python() -> list[Path]:
    """Every python file under edgedeploy/device except the package's __init__ (host side: it lists
    the files, and is not copied into a bundle)."""
    return sorted(p for p in DEVICE.glob("*.py") if p.name != "__init__.py")


def test_every_device_python_file_is_copied_into_bundles() -> None:
    shipped = {p.name for p in device_files()}
    assert {p.name for p in device_python()} <= shipped


def test_the_checker_finds_what_python_3_6_lacks() -> None:
    bad = {
        "if (n := 3):\n    pass\n": "3.8",
        "from __future__ import annotations\n": "annotations",
        "import itertools\nitertools.pairwise([1, 2])\n": "itertools.pairwise",
        "'a.onnx'.removesuffix('.onnx')\n": "removesuffix",
        "dict(zip([1], [2], strict=True))\n": "zip(strict=)",
        "import subprocess\nsubprocess.run(['ls'], capture_output=True)\n": "capture_output",
        "import subprocess\nsubprocess.Popen(['ls'], text=True)\n": "text=",
        "from dataclasses import dataclass\n": "dataclasses",
        "def f(x: list[int]) -> None:\n    pass\n": "list[...]",
        "def f(x: int | None) -> None:\n    pass\n": "X | Y",
        "class C:\n    x: dict[str, int] = {}\n": "dict[...]",
        "import re\ndef f(m: re.Match[str]) -> None:\n    pass\n": "re.Match",
        "x = 1\nprint(f'{x=}')\n": "3.8",
        "import argparse\nargparse.ArgumentParser().add_subparsers(dest='c', required=True)\n": "required=",
        "def f(a, /):\n    pass\n": "line 1",
    }
    for source, phrase in bad.items():
        problems = py36_problems(source)
        assert any(phrase in p for p in problems), (source, problems)
    good = (
        "from typing import List, Optional\nimport re\n"
        "def f(x: List[int], m: 're.Match[str]') -> Optional[int]:\n"
        "    y: 'list[int]' = []\n    z: dict[str, int] | None = None  # a local's: not evaluated\n"
        "    return None\n"
        "x = 1\nprint(f'{x == 1} {x:=^9} {x!r:>4}')\n"
    )
    assert py36_problems(good) == []


@pytest.mark.parametrize("path", device_python(), ids=lambda p: p.name)
def test_device_python_file_runs_on_python_3_6(path: Path) -> None:
    assert py36_problems(path.read_text()) == []


@pytest.mark.parametrize("script", sorted(DEVICE.glob("*.sh")), ids=lambda p: p.name)
def test_device_scripts_run_no_python_of_their_own(script: Path) -> None:
    """benchmark.sh ran two pieces of Python from here-documents, where a Ctrl-C printed Python's
    traceback: every Python step of a script is a bundle_helper.py subcommand or a device Python file
    (checked for 3.6 above, and for Ctrl-C in test_bundle_defects.py), none inline."""
    text = script.read_text()
    assert inline_python(script) == []
    assert not re.search(r'(\$PYTHON"?|python3?)\s+(-\s|-c\b|-\s*<<)', text), script.name


# ------------------------------------------------------------------ on the interpreters themselves


def _version(python: str) -> str:
    try:
        res = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError:
        return ""
    return res.stdout.strip()


def find_python(version: str) -> str | None:
    """The first interpreter of ``version`` that answers as one (pyenv's shims on PATH may not)."""
    candidates = [os.environ.get(f"EDGEDEPLOY_TEST_PYTHON{version.replace('.', '')}", "")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        candidates += [str(p) for p in sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)]
    candidates.append(shutil.which(f"python{version}") or "")
    return next((c for c in candidates if c and _version(c) == version), None)


@pytest.fixture(params=["3.6", "3.8"])
def old_python(request: pytest.FixtureRequest) -> str:
    found = find_python(request.param)
    if found is None:
        pytest.skip(
            f"no Python {request.param} here (python{request.param} on PATH, pyenv, or "
            f"EDGEDEPLOY_TEST_PYTHON{request.param.replace('.', '')})"
        )
    return found


def _run(python: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize("path", device_python(), ids=lambda p: p.name)
def test_device_python_file_compiles_on_the_old_python(old_python: str, path: Path) -> None:
    res = _run(
        old_python, "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')", str(path)
    )
    assert res.returncode == 0, res.stderr


TRTEXEC_LOG = """\
[I] === Performance summary ===
[I] Throughput: 2000.5 qps
[I] Latency: min = 0.40 ms, max = 0.90 ms, mean = 0.50 ms, median = 0.48 ms, percentile(90%) = 0.55 ms, \
percentile(99%) = 0.80 ms
[I] GPU Compute Time: min = 0.30 ms, max = 0.70 ms, mean = 0.40 ms, median = 0.38 ms, percentile(99%) = 0.6 ms
"""
TEGRA = "RAM 2461/7620MB CPU [19%@729] VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 831mW/831mW VDD_SOC 1624mW/1624mW"


def test_tegrastats_power_runs_on_the_old_python(old_python: str, tmp_path: Path) -> None:
    helper = str(DEVICE / "tegrastats_power.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its own parser: no edgedeploy
    # stamp: trtexec's log, time-stamped, window from "Starting inference" to the summary
    lines = "[I] Starting inference\n" + TRTEXEC_LOG
    res = _run(old_python, helper, "stamp", input=lines, env=env)
    assert res.returncode == 0, res.stderr
    stamped = res.stdout.splitlines()
    assert len(stamped) == len(lines.splitlines()) and stamped[0].split(" ", 1)[1] == "[I] Starting inference"
    # record: tegrastats (the fake) until SIGTERM, then exit 0
    power = tmp_path / "tegrastats.log"
    rec = subprocess.Popen(
        [old_python, helper, "record", "--interval", "50", "--out", str(power)],
        env={**env, "PATH": f"{FAKES}{os.pathsep}{env['PATH']}"},
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(100):
        if power.exists() and len(power.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    rec.send_signal(signal.SIGTERM)
    assert rec.wait(timeout=30) == 0, rec.stderr.read() if rec.stderr else ""
    # summarize: the samples around a window set inside them
    start = float(power.read_text().splitlines()[0].split()[0])
    end = float(power.read_text().splitlines()[-1].split()[0])
    log = tmp_path / "trtexec.log"
    log.write_text(
        f"{start:.6f} [I] Starting inference\n"
        + "".join(f"{end:.6f} {ln}\n" for ln in TRTEXEC_LOG.splitlines())
    )
    out = tmp_path / "result.json"
    settings = json.dumps({"batch": 2, "engine": "e.engine", "precision": "fp16"})
    args = [
        "--trtexec-log",
        str(log),
        "--tegrastats-log",
        str(power),
        "--settings",
        settings,
        "--out",
        str(out),
    ]
    res = _run(old_python, helper, "summarize", *args, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["latency_ms"]["p99_ms"] == 0.80 and result["throughput_ips"] == 4001.0
    assert result["power"]["measurable"] is True and result["power"]["rails"]["VDD_IN"] == pytest.approx(5.0)
    # tegrastats ending by itself: record exits with its status
    quitter = tmp_path / "bin" / "tegrastats"
    quitter.parent.mkdir()
    quitter.write_text("#!/bin/sh\necho 'Error: failed to open /sys/kernel/debug/bpmp' >&2\nexit 3\n")
    quitter.chmod(0o755)
    res = _run(old_python, helper, "record", "--out", str(tmp_path / "t2.log"), "--tegrastats", str(quitter))
    assert res.returncode == 3, res.stderr


def test_verify_outputs_runs_on_the_old_python(old_python: str, bundle: Path, tmp_path: Path) -> None:
    helper = str(bundle / "scripts" / "verify_outputs.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if _run(old_python, "-c", "import numpy", env=env).returncode != 0:
        res = _run(old_python, helper, "--bundle", str(bundle), "--trtexec-json", "x.json", env=env)
        assert res.returncode == 2 and "numpy is needed" in res.stderr, res.stderr
        pytest.skip(f"{old_python} has no numpy: verify_outputs.py ran only up to its numpy check")
    with np.load(bundle / "reference" / "outputs.npz") as data:
        outputs = [
            {
                "name": n,
                "dimensions": "x".join(map(str, data[n].shape)),
                "values": data[n].reshape(-1).tolist(),
            }
            for n in data.files
        ]
    exported = tmp_path / "outputs.json"
    exported.write_text(json.dumps(outputs))
    report = tmp_path / "verify.json"
    res = _run(
        old_python,
        helper,
        "--bundle",
        str(bundle),
        "--trtexec-json",
        str(exported),
        "--json",
        str(report),
        env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accuracy: pass" in res.stdout and json.loads(report.read_text())["passed"] is True
    exported.write_text(json.dumps([{**o, "values": [v + 1.0 for v in o["values"]]} for o in outputs]))
    res = _run(old_python, helper, "--bundle", str(bundle), "--trtexec-json", str(exported), env=env)
    assert res.returncode == 1 and "accuracy: FAIL" in res.stdout, res.stdout + res.stderr


@pytest.fixture(scope="module")
def profile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose shape profile is recorded: building its engine needs no NumPy (the reference
    batch is read from the reference inputs only when no profile is recorded)."""
    profile = {"input": {"min": [1, 1, 8, 8], "opt": [4, 1, 8, 8], "max": [8, 1, 8, 8]}}
    work = tmp_path_factory.mktemp("profile-bundle")
    return make_dense_bundle(work, batch=4, build={"profiles": [profile]})


def test_bundle_helper_runs_on_the_old_python(
    old_python: str, profile_bundle: Path, device: Device, tmp_path: Path
) -> None:
    """The scripts' main paths with $PYTHON the old interpreter: setup.sh (check-device), build_engine.sh
    (engine-path, engine, build-args, write-sidecar), again up to date, benchmark.sh (run-shapes,
    run-flags), and the helper's other subcommands; verify.sh and ref-inputs where it has NumPy."""
    bundle = tmp_path / "bundle"
    shutil.copytree(profile_bundle, bundle)
    env = {k: v for k, v in device.env.items() if k != "PYTHONPATH"}
    env["PYTHON"] = old_python
    device.env = env
    scripts = bundle / "scripts"
    res = device.run(scripts / "setup.sh", "--strict")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok       board: NVIDIA Jetson Orin Nano Developer Kit" in res.stdout
    assert "ok       TensorRT: 10.3.0" in res.stdout
    res = device.run(scripts / "build_engine.sh")
    assert res.returncode == 0, res.stdout + res.stderr
    sidecar = json.loads((bundle / "device/engines/dense.fp16.engine.json").read_text())
    assert sidecar["tensorrt"] == "10.3.0" and sidecar["plan"]["profiles"][0]["input"][2] == [8, 1, 8, 8]
    res = device.run(scripts / "build_engine.sh")
    assert res.returncode == 0 and "up to date" in res.stdout, res.stdout + res.stderr
    out = tmp_path / "bench.json"
    res = device.run(scripts / "benchmark.sh", "--duration", "0.2", "--warmup", "0", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(out.read_text())["latency_ms"]["p99_ms"] == 0.80

    def helper(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(scripts / "bundle_helper.py"), "--bundle", str(bundle), *args]
        return _run(old_python, *argv, env=env)

    res = helper("check-files")
    assert res.returncode == 0 and "match their sha256" in res.stdout, res.stderr
    assert helper("get", "target.name").stdout.strip() == "jetson-orin-nano"
    assert helper("shapes", "--batch", "2").stdout.strip() == "input:2x1x8x8"
    res = helper("run-shapes", "--batch", "9")
    assert res.returncode == 2 and "outside the engine's shape profile" in res.stderr, res.stderr
    report = tmp_path / "doctor.json"
    checks = [{"name": name, "ok": True, "detail": ""} for name in ("tensorrt", "pycuda", "gpu")]
    report.write_text(json.dumps(checks))
    assert helper("edgedeploy-usable", str(report)).stdout.strip() == "yes"
    res = helper("get")  # no key: argparse's usage error, not a traceback
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    if _run(old_python, "-c", "import numpy", env=env).returncode != 0:
        res = helper("ref-inputs", "--out", str(tmp_path / "ref"))
        assert res.returncode == 2 and "numpy is needed" in res.stderr, res.stderr
        pytest.skip(f"{old_python} has no numpy: verify.sh and ref-inputs ran up to their numpy check")
    res = device.run(scripts / "verify.sh")
    assert res.returncode == 0 and "accuracy: pass" in res.stdout, res.stdout + res.stderr


@pytest.fixture(scope="module")
def non_ascii_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle in a folder named 'dir é ü' whose model files are 'op13 é.onnx' and 'op13 é.fp16.onnx'."""
    return make_dense_bundle(tmp_path_factory.mktemp("non-ascii") / "dir é ü", stem="op13 é")


def _no_locale(device: Device, python: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of ``env -i``, ssh without locale forwarding, cron or docker: no LANG, no LC_*."""
    keep = ("PATH", "EDGEDEPLOY_ROOT", "FAKE_LOG")
    return {**{k: device.env[k] for k in keep}, "HOME": str(home), "PYTHON": python, **extra}


@pytest.mark.parametrize("locale", ["unset", "LC_ALL=C", "LANG=POSIX"])
def test_a_bundle_with_non_ascii_names_verifies_on_the_old_python_without_a_utf8_locale(
    old_python: str, non_ascii_bundle: Path, device: Device, tmp_path: Path, locale: str
) -> None:
    """verify.sh on Python 3.6 (JetPack 4.6) in the C locale: "manifest.json does not follow the
    bundle schema (UnicodeEncodeError: 'ascii' codec ...)", exit 2, for a valid bundle whose files
    are named 'op13 é.onnx': 3.6 keeps ASCII file names there (3.7 switches to UTF-8 itself)."""
    bundle = tmp_path / "b é ü"
    shutil.copytree(non_ascii_bundle, bundle)
    extra = dict([locale.split("=")]) if "=" in locale else {}
    env = _no_locale(device, old_python, tmp_path, **extra)

    def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["bash", str(bundle / "scripts" / script), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    res = run("verify.sh", "--files-only")
    assert res.returncode == 0 and "match their sha256" in res.stdout, res.stdout + res.stderr
    if _run(old_python, "-c", "import numpy", env=env).returncode != 0:
        pytest.skip(f"{old_python} has no numpy: verify.sh ran its file check only")
    res = run("build_engine.sh")
    assert res.returncode == 0 and "op13 é.fp16.engine" in res.stdout, res.stdout + res.stderr
    res = run("verify.sh")
    assert res.returncode == 0 and "accuracy: pass" in res.stdout, res.stdout + res.stderr


def test_the_helper_says_in_one_line_that_non_ascii_names_need_a_utf8_locale(
    non_ascii_bundle: Path, device: Device, tmp_path: Path
) -> None:
    """Run without the scripts (which switch to C.UTF-8 where it exists), Python 3.6 in the C locale
    cannot name the files: it says so, not that the manifest breaks the bundle schema."""
    python = find_python("3.6")
    if python is None:
        pytest.skip("no Python 3.6 here (python3.6 on PATH, pyenv, or EDGEDEPLOY_TEST_PYTHON36)")
    helper = [str(non_ascii_bundle / "scripts" / "bundle_helper.py"), "--bundle", str(non_ascii_bundle)]
    res = _run(python, *helper, "check-files", env=_no_locale(device, python, tmp_path))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "UTF-8 locale" in lines[0] and "LC_ALL=C.UTF-8" in lines[0], lines[0]
    assert "bundle schema" not in lines[0]
    res = _run(python, *helper, "check-files", env=_no_locale(device, python, tmp_path, LC_ALL="C.UTF-8"))
    assert res.returncode == 0 and "match their sha256" in res.stdout, res.stdout + res.stderr
