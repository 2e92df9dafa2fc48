"""Defects of the bundle's device scripts found on a simulated board (tester report of bundles, D1-D8):
a scalar (0-d) input, a sidecar step that fails after the build, NumPy 1.13's ``tofile``, ONNX
Runtime's telemetry, the exit code of a missing tool, advice for a batch below the profile, the
trtexec log of ``--out`` elsewhere, ``-o`` inside a bundle and Ctrl-C in the device Python."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import Device, make_dense_bundle, write_bundle
from onnx import TensorProto, helper

from calibration.modelinfo import TensorSpec
from edgedeploy.stages.bundle import BundleArtifact, make_bundle
from edgedeploy.targets import load_target


def script(bundle: Path, name: str) -> Path:
    return bundle / "scripts" / name


def scalar_model() -> onnx.ModelProto:
    """input [batch, 8] float, sr [] int64 (silero-vad's sample rate) -> y = input * sr."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["input", "srf"], ["y"]),
        ],
        "scaled",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def scalar_bundle(work: Path, target: str = "jetson-orin-nano") -> Path:
    """A ``target`` bundle of :func:`scalar_model` (fp32 on ONNX Runtime, and fp16 on TensorRT for a
    GPU target)."""
    work.mkdir(parents=True, exist_ok=True)
    fp32, fp16 = work / "scaled.onnx", work / "scaled.fp16.onnx"
    onnx.save(scalar_model(), fp32)
    onnx.save(scalar_model(), fp16)
    x = {
        "input": np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32),
        "sr": np.array(3, dtype=np.int64),
    }
    gpu = target != "x86-64-cpu"
    return write_bundle(
        work / "out" / f"scaled-{target}",
        "scaled",
        fp32,
        BundleArtifact("fp16", "tensorrt", fp16, compare={"passed": True}) if gpu else None,
        [TensorSpec("input", ("batch", 8), "float32"), TensorSpec("sr", (), "int64")],
        [TensorSpec("y", ("batch", 8), "float32")],
        x,
        target,
    )


def test_a_scalar_input_builds_an_engine_with_its_sidecar_and_verifies(
    tmp_path: Path, device: Device
) -> None:
    """D1: the trtexec shape flags gave the static scalar input 'sr' a range ('sr:' with no dims), and
    write-sidecar's int('') of it failed after the build ("manifest.json does not follow the bundle
    schema"), leaving an engine without sidecar that verify.sh never found."""
    bundle = scalar_bundle(tmp_path / "src")
    res = device.run(script(bundle, "build_engine.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    (build,) = [c for c in device.calls("trtexec") if "--onnx=" in c]
    shape_flags = [
        f for f in build.split() if f.split("=")[0] in ("--minShapes", "--optShapes", "--maxShapes")
    ]
    assert shape_flags == ["--minShapes=input:1x8", "--optShapes=input:4x8", "--maxShapes=input:4x8"]
    engine = bundle / "device" / "engines" / "scaled.fp16.engine"
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert sidecar["plan"]["profiles"] == [{"input": [[1, 8], [4, 8], [4, 8]]}]
    res = device.run(script(bundle, "verify.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pass" in res.stdout
    # the scalar's reference shape is [] ('sr:', trtexec's scalar), not the [1] np.ascontiguousarray made
    (run,) = [c for c in device.calls("trtexec") if "--loadEngine=" in c]
    assert "--shapes=input:4x8,sr: " in run


def test_the_readme_profile_table_lists_no_row_for_a_static_input(tmp_path: Path) -> None:
    """D1 addendum: the device README's profile table gave the scalar 'sr' a [] / [] / [] row, though
    manifest.json's build.profiles (and the engine) have no range for it."""
    bundle = scalar_bundle(tmp_path / "src")
    readme = (bundle / "README.md").read_text()
    assert not [line for line in readme.splitlines() if line.endswith("| [] | [] | [] |")]
    assert any(line.startswith("| `input` | [1, 8] |") for line in readme.splitlines())


def failing_python(folder: Path, subcommand: str) -> str:
    """A python3 that runs the helper as usual except ``subcommand``, which fails (exit 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = {subcommand} ] && {{ echo "error: injected" >&2; exit 2; }}; done\n'
        f'exec "{os.environ.get("EDGEDEPLOY_TEST_DEVICE_PYTHON") or __import__("sys").executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def test_a_failed_sidecar_step_never_replaces_the_good_engine(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    """D1: build_engine.sh moved the new engine into place before writing its sidecar, so a failed
    sidecar step left the new engine beside the old sidecar (or none), against its --help: "a failed
    build never replaces a good one"."""
    res = device.run(script(bundle, "build_engine.sh"))
    assert res.returncode == 0, res.stderr
    engines = bundle / "device" / "engines"
    before = {p.name: p.read_bytes() for p in engines.iterdir()}
    assert len(before) == 2
    python = failing_python(tmp_path / "bin", "write-sidecar")
    res = device.run(script(bundle, "build_engine.sh"), "--max-batch", "32", PYTHON=python)
    assert res.returncode == 2, res.stdout + res.stderr
    assert {p.name: p.read_bytes() for p in engines.iterdir()} == before  # no temporary file left either
    assert "previous engine, if any, is unchanged" in res.stderr
    res = device.run(script(bundle, "verify.sh"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_helper_error_not_about_the_manifest_does_not_blame_it(bundle: Path) -> None:
    """D1/D3: every KeyError/TypeError/ValueError/AttributeError/IndexError of the helper was reported
    as "manifest.json does not follow the bundle schema", for a manifest that does."""
    import edgedeploy.device.bundle_helper as bh

    line = bh.unexpected(bundle, "write-sidecar", ValueError("invalid literal for int() with base 10: ''"))
    assert "manifest.json does not follow" not in line
    assert "write-sidecar" in line and "invalid literal" in line
    (bundle / "manifest.json").write_text(json.dumps({"files": {}}))
    assert "does not follow the bundle schema" in bh.unexpected(bundle, "get", KeyError("x"))


NUMPY_FILE_CALLS = ("tofile", "fromfile")  # take a pathlib.Path only from NumPy 1.17


def test_the_device_python_gives_numpy_file_calls_a_str_not_a_path() -> None:
    """D3: ref-inputs wrote ``arr.tofile(path)`` with a pathlib.Path, which NumPy takes from 1.17
    only; JetPack 4.6's python3-numpy (Ubuntu 18.04) is 1.13.3, where it raises AttributeError
    ('PosixPath' object has no attribute 'flush'): every GPU verify.sh on a Nano or TX2 failed.
    (Run tests/device with EDGEDEPLOY_TEST_DEVICE_PYTHON set to a 3.6 with NumPy 1.13 to see it.)"""
    import ast

    from edgedeploy.device import device_files

    found = []
    for path in (f for f in device_files() if f.suffix == ".py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in NUMPY_FILE_CALLS or not node.args:
                continue
            first = node.args[0]
            as_text = isinstance(first, ast.Constant) and isinstance(first.value, str)
            as_str = (
                isinstance(first, ast.Call) and isinstance(first.func, ast.Name) and first.func.id == "str"
            )
            if not (as_text or as_str):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_a_cpu_bundles_verify_leaves_no_onnxruntime_telemetry_files(tmp_path: Path, device: Device) -> None:
    """D5: verify.sh of a CPU bundle ran ONNX Runtime (1.32's Linux wheels) with its usage telemetry
    on, which writes a device id and an event database under ~/.cache/Microsoft and a .ses file into
    TMPDIR; edgedeploy turns it off (docs/design.md, "Offline"), the bundle's verify_outputs.py did
    not. ONNX Runtime is quiet under CI by itself, so the CI variables are removed, as a board has none."""
    bundle = scalar_bundle(tmp_path / "src", "x86-64-cpu")
    home, tmpdir = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpdir.mkdir()
    quiet = (
        "CI",
        "GITHUB_ACTIONS",
        "TF_BUILD",
        "JENKINS_URL",
        "ORT_DISABLE_TELEMETRY",
        "ORT_TELEMETRY_DISABLED",
    )
    for name in quiet:
        device.env.pop(name, None)
    device.env = {k: v for k, v in device.env.items() if not k.startswith("XDG_")}
    res = device.run(script(bundle, "verify.sh"), HOME=str(home), TMPDIR=str(tmpdir))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accuracy: pass" in res.stdout
    assert [p.relative_to(tmp_path) for p in (home, tmpdir) for p in p.rglob("*")] == []


def test_build_with_tool_edgedeploy_missing_exits_2_with_one_line(bundle: Path, device: Device) -> None:
    """D2: ``build_engine.sh --tool edgedeploy`` without edgedeploy on PATH said "edgedeploy build
    failed (see LOG)" and exited 1 ("build failed"); the log held "edgedeploy: command not found"."""
    res = device.run(
        script(bundle, "build_engine.sh"), "--tool", "edgedeploy", PATH=device.path_without_edgedeploy()
    )
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(errors) == 1, res.stdout + res.stderr
    assert errors[0].startswith("error: edgedeploy not found on PATH"), errors[0]
    assert not (bundle / "device" / "engines").exists() or not any((bundle / "device" / "engines").iterdir())


def test_build_with_tool_edgedeploy_without_tensorrt_exits_2_and_says_why(
    bundle: Path, device: Device
) -> None:
    """D2: ``edgedeploy build --backend tensorrt`` exits 2 without TensorRT, with the reason; the
    script made that exit 1 ("build failed") and left the reason in its log only."""
    res = device.run(
        script(bundle, "build_engine.sh"), "--tool", "edgedeploy", FAKE_EDGEDEPLOY_BUILD_EXIT="2"
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "TensorRT is not usable here" in res.stderr
    res = device.run(
        script(bundle, "build_engine.sh"), "--tool", "edgedeploy", FAKE_EDGEDEPLOY_BUILD_EXIT="1"
    )
    assert res.returncode == 1, res.stdout + res.stderr


FROM_2 = {"input": {"min": [2, 1, 8, 8], "opt": [4, 1, 8, 8], "max": [8, 1, 8, 8]}}  # batch 2..8


def test_a_batch_below_the_profile_is_not_advised_a_max_batch_rebuild() -> None:
    """D6: ``benchmark.sh --batch 1`` on a profile of batch 2..8 advised ``build_engine.sh --max-batch
    1 --force``, which cannot lower the profile's min: the advice looped. A batch above every
    profile keeps the advice that works (--max-batch N widens the profile reaching furthest)."""
    import edgedeploy.device.bundle_helper as bh

    manifest = {
        "io": {"inputs": [{"name": "input", "shape": ["batch", 1, 8, 8]}]},
        "build": {"profiles": [FROM_2]},
    }
    profiles = bh.input_profiles(manifest, None)
    with pytest.raises(bh.BundleProblem) as below:
        bh.batch_run(manifest, profiles, 1, "10.3.0")
    assert "--max-batch" not in str(below.value)
    assert "starts at batch 2" in str(below.value) and "--profile" in str(below.value)
    with pytest.raises(bh.BundleProblem, match=r"--max-batch 9 --force"):
        bh.batch_run(manifest, profiles, 9, "10.3.0")


def test_max_batch_below_the_recorded_profile_is_refused_not_ignored(tmp_path: Path, device: Device) -> None:
    """D6: ``build_engine.sh --max-batch 1 --force`` on a bundle whose profile is batch 2..8 built the
    2..8 engine again and exited 0, --max-batch 1 dropped without a word."""
    bundle = make_dense_bundle(tmp_path / "src", batch=4, build={"profiles": [FROM_2]})
    for asked in ("1", "4"):
        res = device.run(script(bundle, "build_engine.sh"), "--max-batch", asked, "--force")
        errors = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and len(errors) == 1, res.stdout + res.stderr
        assert f"--max-batch {asked}" in errors[0] and "batch 2..8" in errors[0], errors[0]
    assert not [c for c in device.calls("trtexec") if "--onnx=" in c]
    res = device.run(script(bundle, "build_engine.sh"), "--max-batch", "8", "--force")  # the max: as recorded
    assert res.returncode == 0, res.stdout + res.stderr


def test_benchmark_out_elsewhere_writes_the_trtexec_log_beside_it(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    """D7: benchmark.sh --out FILE wrote the trtexec log to device/results/<FILE's name>.trtexec.log in
    the bundle whatever FILE's folder, replacing the log of the default run of the same name (the
    results JSON beside it then read batch 1 beside a batch-8 log)."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    args = ("--duration", "0.1", "--warmup", "0")
    res = device.run(script(bundle, "benchmark.sh"), *args, "--batch", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    results = bundle / "device" / "results"
    kept = {p.name: p.read_bytes() for p in results.iterdir()}
    assert "--shapes=input:1x1x8x8" in (results / "benchmark-fp16-b1.trtexec.log").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "benchmark-fp16-b1.json"
    res = device.run(script(bundle, "benchmark.sh"), *args, "--batch", "8", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert {p.name: p.read_bytes() for p in results.iterdir()} == kept
    assert sorted(p.name for p in elsewhere.iterdir()) == [
        "benchmark-fp16-b1.json",
        "benchmark-fp16-b1.trtexec.log",
    ]
    assert "--shapes=input:8x1x8x8" in (elsewhere / "benchmark-fp16-b1.trtexec.log").read_text()
    # a file of that name that is not the log of an earlier results JSON there is not replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.trtexec.log").write_text("my notes\n")
    res = device.run(script(bundle, "benchmark.sh"), *args, "--out", str(other / "run.json"))
    assert res.returncode == 2 and "run.trtexec.log" in res.stderr, res.stdout + res.stderr
    assert sorted(p.name for p in other.iterdir()) == ["run.trtexec.log"]


def test_a_bundle_inside_another_bundle_is_refused_before_anything_is_written(
    bundle: Path, tmp_path: Path
) -> None:
    """D8: ``bundle create -o host/models/sub`` wrote a bundle (and sub.tar.gz) into the bundle
    ``host``, whose files its manifest lists: ``bundle verify host`` and its verify.sh then failed on
    16 unlisted files. ``--json`` and benchmark.sh's ``--out`` refuse the same slip."""
    from edgedeploy.errors import InputError
    from edgedeploy.stages.bundle import check_bundle_output

    before = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*"))
    for inside in (bundle / "models" / "sub", bundle / "sub", bundle / "device" / "sub" / "deeper"):
        with pytest.raises(InputError, match=f"lies in the bundle {bundle}"):
            check_bundle_output(inside)
    with pytest.raises(InputError, match="lies in the bundle"):
        scalar_bundle_at = bundle / "models" / "sub"
        src = tmp_path / "src"
        src.mkdir()
        onnx.save(scalar_model(), src / "m.onnx")
        make_bundle(
            scalar_bundle_at,
            model_name="m",
            model_source=str(src / "m.onnx"),
            model_sha256="0" * 64,
            target=load_target("x86-64-cpu"),
            inputs=[TensorSpec("input", ("batch", 8), "float32"), TensorSpec("sr", (), "int64")],
            outputs=[TensorSpec("y", ("batch", 8), "float32")],
            artifacts=[BundleArtifact("fp32", "onnxruntime", src / "m.onnx")],
            gates={},
        )
    assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")) == before
    check_bundle_output(tmp_path / "beside")  # outside any bundle: fine


def _writer_when_read(fifo: Path, timeout: float = 30.0) -> int:
    """Open ``fifo`` for writing once a reader has it open (the process has reached that read)."""
    import time

    end = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("which", ["bundle_helper", "verify_outputs", "tegrastats_power"])
def test_ctrl_c_in_the_device_python_is_one_line_and_exit_130(
    which: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """D4: a Ctrl-C (SIGINT to the script's process group, as a terminal sends it) while a helper of
    the bundle ran printed Python's KeyboardInterrupt traceback; edgedeploy prints one line and
    exits 130. Each helper is stopped while it waits on a read (a FIFO), past its imports."""
    import signal
    import subprocess

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    python = device.env.get("PYTHON") or __import__("sys").executable
    scripts = bundle / "scripts"
    argv = {
        "bundle_helper": [
            str(scripts / "bundle_helper.py"),
            *("--bundle", str(bundle), "write-sidecar", "--precision", "fp16"),
            *("--engine", str(tmp_path / "x.engine"), "--log", str(fifo)),
        ],
        "verify_outputs": [
            str(scripts / "verify_outputs.py"),
            *("--bundle", str(bundle), "--trtexec-json", str(fifo), "--json", str(tmp_path / "v.json")),
        ],
        "tegrastats_power": [str(scripts / "tegrastats_power.py"), "stamp"],
    }[which]
    env = {k: v for k, v in device.env.items() if k != "PYTHONPATH"}
    stdin = subprocess.PIPE if which == "tegrastats_power" else subprocess.DEVNULL
    proc = subprocess.Popen(
        [python, *argv],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        if which == "tegrastats_power":  # its first stamped line: it is in its read loop
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"line\n")
            proc.stdin.flush()
            assert proc.stdout.readline().endswith(b" line\n")
            held = None
        else:
            held = _writer_when_read(fifo)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if held is not None:
        os.close(held)
    assert (proc.returncode, err.decode()) == (130, "interrupted\n")


# Put first on the device Python's path as sitecustomize: the first call of json's function
# EDGEDEPLOY_TEST_SIGINT_AT in a process given EDGEDEPLOY_TEST_SIGINT_ARGV (as an argument, or as the
# value of an --option=value) sends SIGINT to the process group, as a terminal's Ctrl-C does, once per
# run (the flag file). Python 3.6 syntax.
SIGINT_HOOK = """
import os, signal, sys

_at = os.environ.get("EDGEDEPLOY_TEST_SIGINT_AT")


def _hook(frame, event, arg):
    code = frame.f_code
    if (event == "call" and code.co_name == _at
            and os.path.basename(os.path.dirname(code.co_filename)) == "json"
            and os.environ["EDGEDEPLOY_TEST_SIGINT_ARGV"] in [a.split("=", 1)[-1] for a in sys.argv[1:]]):
        sys.setprofile(None)
        try:
            os.close(os.open(os.environ["EDGEDEPLOY_TEST_SIGINT_FLAG"], os.O_CREAT | os.O_EXCL))
        except OSError:
            return
        os.killpg(os.getpgid(0), signal.SIGINT)


if _at:
    sys.setprofile(_hook)
"""


@pytest.mark.parametrize("step", ["out-check", "settings"])
def test_ctrl_c_in_benchmark_sh_s_own_python_is_one_line_and_exit_130(
    step: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """A Ctrl-C while benchmark.sh ran the Python written into it (the check of --out, the settings
    JSON of the run) printed Python's KeyboardInterrupt traceback, and the --out check's exit was
    then taken for a refusal (exit 2); it is one line, "interrupted", and exit 130, as the helpers'
    (test_ctrl_c_in_the_device_python_is_one_line_and_exit_130)."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    out = tmp_path / "results" / "run.json"
    # the --out check reads the manifest (json.loads); the settings are written with json.dumps
    at, argv = {"out-check": ("loads", str(out)), "settings": ("dumps", "321")}[step]
    args = ["--duration", "0.1", "--warmup", "321", "--out", str(out)]
    # the status a shell reports: 130 for an exit 130, and for bash stopped by the SIGINT itself, as
    # bash stops when a command substitution's command it waited for was interrupted
    assert run_interrupted(bundle, device, tmp_path, "benchmark.sh", args, at, argv) == (130, "interrupted\n")
    assert not out.exists()


def run_interrupted(
    bundle: Path, device: Device, tmp_path: Path, name: str, args: list[str], at: str, argv: str
) -> tuple[int, str]:
    """Runs the bundle's script ``name`` with SIGINT_HOOK sending a Ctrl-C to its process group in the
    helper whose argument ``argv`` is, at its first call of json's ``at``; the status a shell reports
    (128 + N for a script stopped by signal N) and its stderr."""
    import signal
    import subprocess

    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SIGINT_HOOK)
    flag = tmp_path / "sent"
    flag.unlink(missing_ok=True)
    paths = [str(hook), *([device.env["PYTHONPATH"]] if device.env.get("PYTHONPATH") else [])]
    env = {
        **device.env,
        "PYTHONPATH": os.pathsep.join(paths),
        "EDGEDEPLOY_TEST_SIGINT_AT": at,
        "EDGEDEPLOY_TEST_SIGINT_ARGV": argv,
        "EDGEDEPLOY_TEST_SIGINT_FLAG": str(flag),
    }
    proc = subprocess.Popen(
        ["bash", str(script(bundle, name)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        # a CI job started in the background inherits an ignored SIGINT; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert flag.exists(), err.decode()  # the Ctrl-C came, in that helper
    return (proc.returncode if proc.returncode >= 0 else 128 - proc.returncode), err.decode()


# (script, its arguments, the helper stopped: its subcommand, which reads the manifest with json.loads)
HELPER_LINES = {
    "build_engine-check-files": ("build_engine.sh", ["--force"], "check-files"),  # || die "...damaged"
    "build_engine-write-sidecar": ("build_engine.sh", ["--force"], "write-sidecar"),  # if ! ...; then die
    "verify-model": ("verify.sh", [], "model"),  # helper model ... >/dev/null || exit 2
    "benchmark-model": ("benchmark.sh", ["--duration", "0.1"], "model"),  # the same line
}


@pytest.mark.parametrize("case", list(HELPER_LINES))
def test_ctrl_c_in_a_helper_whose_failure_the_script_reports_ends_it_with_130(
    case: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """A Ctrl-C in a helper the script runs as `helper ... || exit 2` (or `|| die`, `if ! helper`):
    the helper said "interrupted" and exited 130, and the script took that for the helper's refusal
    and exited 2 (with "error: the bundle is damaged" after build_engine.sh's check-files). It ends
    the script with 130 and the one line, and build_engine.sh leaves the engines folder as it was."""
    name, args, subcommand = HELPER_LINES[case]
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    engines = bundle / "device" / "engines"
    before = {p.name: p.read_bytes() for p in engines.iterdir()}
    status, err = run_interrupted(bundle, device, tmp_path, name, args, "loads", subcommand)
    assert (status, err) == (130, "interrupted\n")
    assert {p.name: p.read_bytes() for p in engines.iterdir()} == before  # no temporary file left


# (script, its arguments, the helper stopped: its subcommand) where the script sends the helper's stderr
# to /dev/null (its error line is not the script's), and so the helper's line "interrupted" too
HIDDEN_HELPER_LINES = {
    "build_engine-engine": ("build_engine.sh", [], "engine"),  # FOUND="$(helper engine ... 2>/dev/null)"
    "benchmark-engine": ("benchmark.sh", ["--duration", "0.1"], "engine"),  # if ! ENGINE="$(... 2>/dev/null)"
    "build_engine-edgedeploy-usable": ("build_engine.sh", ["--force"], "edgedeploy-usable"),  # common.sh
}


@pytest.mark.parametrize("case", list(HIDDEN_HELPER_LINES))
def test_ctrl_c_in_a_helper_whose_stderr_the_script_hides_still_says_interrupted(
    case: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """A Ctrl-C in a helper the script runs with its stderr sent to /dev/null ended the script with
    130 and no line at all (the helper's "interrupted" went to /dev/null); every other Ctrl-C in a
    helper is the one line. The script says it there, once."""
    name, args, subcommand = HIDDEN_HELPER_LINES[case]
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    status, err = run_interrupted(bundle, device, tmp_path, name, args, "loads", subcommand)
    assert (status, err) == (130, "interrupted\n")


@pytest.mark.parametrize("command", ["doctor", "build"])
def test_ctrl_c_in_edgedeploy_ends_build_engine_sh_with_130(
    command: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """edgedeploy's Ctrl-C is its line "interrupted" and exit 130, as the helpers': build_engine.sh
    took an interrupted `edgedeploy build` for a failed build (exit 1, "edgedeploy build failed"), and
    an interrupted `edgedeploy doctor` for an edgedeploy without TensorRT, and went on to build with
    trtexec. Both end the script with 130, nothing built and no temporary file left (the doctor's
    report folder either)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = device.run(
        script(bundle, "build_engine.sh"),
        FAKE_EDGEDEPLOY_TRT="1",
        FAKE_EDGEDEPLOY_INTERRUPT=command,
        TMPDIR=str(scratch),
    )
    assert res.returncode in (130, -2), res.stdout + res.stderr
    assert res.stderr == "interrupted\n" and "using trtexec" not in res.stdout  # its line, said by the script
    assert not [call for call in device.calls("trtexec") if "--saveEngine" in call]
    assert sorted(p.name for p in (bundle / "device" / "engines").iterdir()) == []
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("command", ["doctor", "build"])
def test_a_real_ctrl_c_in_edgedeploy_whose_output_build_engine_sh_hides_says_interrupted(
    command: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """build_engine.sh sends `edgedeploy doctor`'s output to /dev/null and `edgedeploy build`'s to the
    build log: a Ctrl-C in either ended the script with 130 and no line on the terminal (edgedeploy's
    "interrupted" went there). The script says it, once; nothing is built."""
    args = ["--force"] if command == "doctor" else ["--tool", "edgedeploy", "--force"]
    # the fake edgedeploy writes its doctor report and its build's sidecar with json.dumps
    status, err = run_interrupted(bundle, device, tmp_path, "build_engine.sh", args, "dumps", command)
    assert (status, err) == (130, "interrupted\n")
    assert not [call for call in device.calls("trtexec") if "--saveEngine" in call]
    assert sorted(p.name for p in (bundle / "device" / "engines").iterdir()) == []


def killing_file_tools(folder: Path) -> Path:
    """A folder with an ``mv`` and an ``rm`` that run the real ones, then SIGKILL the script that ran
    them (their parent) after the KILL_AFTER-th call, counted in the file COUNT, that names a file of
    an engines folder: a kill (power cut, OOM killer) at that point of build_engine.sh, where no EXIT
    trap runs."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "killing-tool"
    tool.write_text(
        "#!/bin/bash\n"
        'command -p "$(basename "$0")" "$@" || exit\n'
        'case "$*" in */engines/*) ;; *) exit 0 ;; esac\n'
        'n=$(( $(cat "$COUNT" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$COUNT"\n'
        '[ "$n" -ne "$KILL_AFTER" ] || kill -KILL "$PPID"\n'
    )
    tool.chmod(0o755)
    for name in ("mv", "rm"):
        (folder / name).symlink_to(tool)
    return folder


def engine_files(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() if p.is_file() else b"" for p in (bundle / "device" / "engines").iterdir()}


def assert_a_matching_pair_or_none(files: dict[str, bytes]) -> None:
    """The engine and its sidecar are one build's (the sidecar's engine_sha256 is the engine's), or the
    engine has no sidecar (which no script takes for a usable engine); a layer report (the fake
    edgedeploy's, naming its engine) is the engine's."""
    import hashlib

    engine, sidecar = files.get("dense.fp16.engine"), files.get("dense.fp16.engine.json")
    if engine is not None and sidecar is not None:
        assert json.loads(sidecar)["engine_sha256"] == hashlib.sha256(engine).hexdigest()
    else:
        assert sidecar is None
    layers = files.get("dense.fp16.layers.json")
    if layers is not None:
        assert engine is not None
        assert json.loads(layers)["fake_engine_sha256"] == hashlib.sha256(engine).hexdigest()


@pytest.mark.parametrize("tool", ["trtexec", "edgedeploy"])
@pytest.mark.parametrize("after", [1, 2, 3, 4, 5])
def test_a_kill_while_build_engine_sh_replaces_the_engine_never_leaves_a_mismatched_pair(
    after: int, tool: str, bundle: Path, device: Device, tmp_path: Path
) -> None:
    """build_engine.sh moved the new sidecar, then the new engine into place: a kill between the two
    left the new sidecar beside the old engine (which edgedeploy compare and profile would read), and
    a kill before its EXIT trap left the build's temporary files for good. Killed after any of its
    file operations in the engines folder, it leaves a matching pair or an engine without a sidecar;
    the next run rebuilds where needed and removes what the killed build left."""
    more = {"FAKE_EDGEDEPLOY_TRT": "1"} if tool == "edgedeploy" else {}
    assert device.run(script(bundle, "build_engine.sh"), "--tool", tool, **more).returncode == 0
    tools = killing_file_tools(tmp_path / "bin")
    env = {"PATH": f"{tools}{os.pathsep}{device.env['PATH']}", "COUNT": str(tmp_path / "count")}
    args = ["--tool", tool, "--max-batch", "32"]
    res = device.run(script(bundle, "build_engine.sh"), *args, KILL_AFTER=str(after), **env, **more)
    assert res.returncode in (0, -9), res.stdout + res.stderr
    assert res.returncode == -9 or after > 2  # killed at least at each of the first two points
    assert_a_matching_pair_or_none(engine_files(bundle))
    res = device.run(script(bundle, "build_engine.sh"), "--tool", tool, **more)
    assert res.returncode == 0, res.stdout + res.stderr
    files = engine_files(bundle)
    kept = ["dense.fp16.engine", "dense.fp16.engine.json"]
    kept += ["dense.fp16.layers.json"] if tool == "edgedeploy" else []
    assert sorted(files) == kept  # no temporary file left
    assert_a_matching_pair_or_none(files)


def test_build_engine_sh_keeps_edgedeploy_build_s_layer_report_beside_the_engine(
    bundle: Path, device: Device
) -> None:
    """`edgedeploy build` writes <stem>.layers.json (the engine's per-layer precisions) beside the
    engine, as a host build keeps it; build_engine.sh --tool edgedeploy took the engine and sidecar
    from its build folder and dropped the report with the folder. It lands beside the engine, the
    engine's; a trtexec build (which writes none) removes the one of the engine it replaces."""
    res = device.run(script(bundle, "build_engine.sh"), "--tool", "edgedeploy", FAKE_EDGEDEPLOY_TRT="1")
    assert res.returncode == 0, res.stdout + res.stderr
    files = engine_files(bundle)
    assert sorted(files) == ["dense.fp16.engine", "dense.fp16.engine.json", "dense.fp16.layers.json"]
    assert_a_matching_pair_or_none(files)
    res = device.run(script(bundle, "build_engine.sh"), "--tool", "trtexec", "--force")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(engine_files(bundle)) == ["dense.fp16.engine", "dense.fp16.engine.json"]


@pytest.mark.parametrize("name", ["m.onnx", "M.ONNX", "m.fp16.Onnx", "m.int8.oNNx", "model", "m.onnx.v2"])
def test_the_device_engine_path_drops_onnx_in_any_case_as_the_host_does(tmp_path: Path, name: str) -> None:
    """device_engine_path stripped a lower-case .onnx only: a bundle model M.ONNX (accepted on the
    host since 575e772) got the engine M.ONNX.engine. Its copy of the rule must agree with
    edgedeploy/onnxio.py's onnx_stem, which the host names engines by."""
    import edgedeploy.device.bundle_helper as bh
    from edgedeploy.onnxio import onnx_stem

    path = bh.device_engine_path(tmp_path, {"model": f"models/{name}"})
    assert path == tmp_path / bh.DEVICE_DIR / "engines" / f"{onnx_stem(name)}.engine"
