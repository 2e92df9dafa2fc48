"""Hostile bundles and usage against the device scripts (issue 12): the device refuses what the
workstation's ``edgedeploy bundle verify`` refuses, usage errors exit 2 (1 means "accuracy
failed"), and a board without NumPy or ONNX Runtime gets one line, not a traceback.

Each row of the table damages a fresh copy of the real bundle, then runs verify.sh and the
workstation check on it. Run time: about 25 s (each row starts bash and python).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Device

from edgedeploy.stages.bundle import verify_bundle


def script(bundle: Path, name: str) -> Path:
    return bundle / "scripts" / name


def _edit_manifest(bundle: Path, edit: Callable[[dict], None]) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _symlink_leaving(bundle: Path) -> None:
    model = bundle / "models" / "dense.fp16.onnx"
    outside = bundle.parent / "elsewhere.onnx"
    outside.write_bytes(model.read_bytes())  # same bytes: only where it lives is wrong
    model.unlink()
    model.symlink_to(outside)


def _climbing_model_path(bundle: Path) -> None:
    (bundle.parent.parent / "model.onnx").write_bytes((bundle / "models" / "dense.fp16.onnx").read_bytes())
    _edit_manifest(bundle, lambda m: m["artifacts"][1].update(model="../../model.onnx"))


def _fifo(bundle: Path) -> None:
    os.mkfifo(bundle / "models" / "pipe")


def _listed_fifo(bundle: Path) -> None:
    (bundle / "reference" / "inputs.npz").unlink()
    os.mkfifo(bundle / "reference" / "inputs.npz")


def _not_executable(bundle: Path) -> None:
    (bundle / "scripts" / "benchmark.sh").chmod(0o644)


def _absolute_reference(bundle: Path) -> None:
    _edit_manifest(bundle, lambda m: m["reference"].update(inputs="/etc/passwd"))


def _artifacts_not_a_list(bundle: Path) -> None:
    _edit_manifest(bundle, lambda m: m.update(artifacts=[1, 2]))


def _files_not_a_table(bundle: Path) -> None:
    _edit_manifest(bundle, lambda m: m.update(files=["models/dense.onnx"]))


def _size_not_a_number(bundle: Path) -> None:
    _edit_manifest(bundle, lambda m: m["files"]["models/dense.onnx"].update(size="big"))


def _manifest_not_json(bundle: Path) -> None:
    (bundle / "manifest.json").write_text("{not json")


def _manifest_a_list(bundle: Path) -> None:
    (bundle / "manifest.json").write_text("[]")


def _linked_folder(bundle: Path) -> None:
    outside = bundle.parent / "outside-models"
    (bundle / "models").rename(outside)
    (bundle / "models").symlink_to(outside)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "model symlink leaving the bundle": (_symlink_leaving, "link leaves the bundle"),
    "manifest model path ../../model.onnx": (_climbing_model_path, "../../model.onnx"),
    "unlisted FIFO": (_fifo, "models/pipe"),
    "listed file replaced by a FIFO": (_listed_fifo, "not a regular file"),
    "script not executable": (_not_executable, "not executable"),
    "absolute reference path": (_absolute_reference, "/etc/passwd"),
    "artifacts of the wrong type": (_artifacts_not_a_list, "artifacts"),
    "files not a table": (_files_not_a_table, "files"),
    "file size not a number": (_size_not_a_number, "size"),
    "manifest not JSON": (_manifest_not_json, "not valid JSON"),
    "manifest a list": (_manifest_a_list, "not a JSON object"),
    "models folder a link leaving the bundle": (_linked_folder, "link leaves the bundle"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_verify_sh_refuses_what_bundle_verify_refuses(bundle: Path, device: Device, case: str) -> None:
    damage, phrase = DAMAGE[case]
    damage(bundle)
    workstation = verify_bundle(bundle)
    assert not workstation.ok, case
    res = device.run(script(bundle, "verify.sh"), "--files-only")
    assert res.returncode == 2, (case, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert phrase in res.stderr, (case, res.stderr)
    assert device.calls("trtexec") == []


def test_helper_refuses_to_hand_out_a_model_path_outside_the_bundle(bundle: Path, device: Device) -> None:
    _climbing_model_path(bundle)
    res = device.run(bundle / "scripts" / "bundle_helper.py", "model", "--precision", "fp16")
    res = _helper(bundle, device, "model", "--precision", "fp16")
    assert res.returncode == 2 and "not a file of this bundle" in res.stderr
    assert "Traceback" not in res.stderr


def _helper(bundle: Path, device: Device, *args: str, **env: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(bundle / "scripts" / "bundle_helper.py"), "--bundle", str(bundle), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**device.env, **env},
    )


USAGE: list[tuple[str, tuple[str, ...], str]] = [
    ("verify.sh", ("--precision",), "--precision needs a value"),
    ("verify.sh", ("--bogus",), "unknown option --bogus"),
    ("benchmark.sh", ("--interval", "abc"), "--interval needs a positive whole number"),
    ("benchmark.sh", ("--interval",), "--interval needs a value"),
    ("benchmark.sh", ("--duration", "nan"), "--duration needs a positive number"),
    ("benchmark.sh", ("--duration", "0"), "--duration needs a positive number"),
    ("benchmark.sh", ("--batch", "-1"), "--batch needs a positive whole number"),
    ("benchmark.sh", ("--warmup", "1e3"), "--warmup needs a positive whole number"),
    ("benchmark.sh", ("--tool", "magic"), "--tool takes auto, edgedeploy or trtexec"),
    ("benchmark.sh", ("--out",), "--out needs a value"),
    ("build_engine.sh", ("--workspace-mb", "lots"), "--workspace-mb needs a positive whole number"),
    ("build_engine.sh", ("--max-batch",), "--max-batch needs a value"),
    ("build_engine.sh", ("--precision", "--force"), "--precision needs a value"),
]


@pytest.mark.parametrize(("name", "args", "phrase"), USAGE, ids=[" ".join((u[0], *u[1])) for u in USAGE])
def test_device_script_usage_errors_exit_2_with_one_line(
    bundle: Path, device: Device, name: str, args: tuple[str, ...], phrase: str
) -> None:
    res = device.run(script(bundle, name), *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "unbound variable" not in res.stderr
    assert phrase in res.stderr, res.stderr
    assert device.calls("trtexec") == []


def _no_module(tmp_path: Path, *names: str) -> str:
    """A PYTHONPATH folder on which importing ``names`` fails, as on a bare JetPack python3."""
    folder = tmp_path / "bare-python"
    for name in names:
        (folder / name).mkdir(parents=True)
        message = f"No module named {name!r}"
        (folder / name / "__init__.py").write_text(f"raise ImportError({message!r}, name={name!r})\n")
    return str(folder)


def test_reference_inputs_without_numpy_exit_2_with_one_line(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    res = _helper(
        bundle, device, "ref-inputs", "--out", str(tmp_path / "x"), PYTHONPATH=_no_module(tmp_path, "numpy")
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "numpy is needed" in res.stderr


def test_verify_outputs_without_numpy_or_onnxruntime_exits_2_not_1(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, str(bundle / "scripts" / "verify_outputs.py"), "--bundle", str(bundle)]
    model = ["--onnxruntime", str(bundle / "models" / "dense.onnx")]
    for missing in ("numpy", "onnxruntime"):
        env = {**device.env, "PYTHONPATH": _no_module(tmp_path / missing, missing)}
        res = subprocess.run([*cmd, *model], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 2, (missing, res.stderr)
        assert "Traceback" not in res.stderr and f"{missing} is needed" in res.stderr


def _cpu_bundle(
    folder: Path, model: Any, shapes: tuple[tuple[object, ...], tuple[object, ...]], x: Any
) -> Path:
    """A bundle for x86-64-cpu of ``model`` (one input, one output, named as in the model, with
    ``shapes`` as the manifest records them) whose reference input is ``x``."""
    import numpy as np
    import onnx

    from calibration.modelinfo import TensorSpec
    from edgedeploy.stages.bundle import BundleArtifact, make_bundle
    from edgedeploy.targets import load_target

    name = model.graph.name
    onnx.save(model, folder / f"{name}.onnx")
    given, made = model.graph.input[0].name, model.graph.output[0].name
    reference = _ort_run(folder / f"{name}.onnx", {given: x})
    return make_bundle(
        folder / "cpu-bundle",
        model_name=name,
        model_source=f"{name}.onnx",
        model_sha256="0" * 64,
        target=load_target("x86-64-cpu"),
        inputs=[TensorSpec(given, shapes[0], "float32")],
        outputs=[TensorSpec(made, shapes[1], "float32")],
        artifacts=[BundleArtifact("fp32", "onnxruntime", folder / f"{name}.onnx")],
        gates={},
        reference_inputs={given: x},
        reference_outputs={made: np.asarray(reference)},
    ).directory


def _ort_run(path: Path, feed: dict[str, Any]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_benchmark_on_a_cpu_bundle_says_how_to_measure_it(tmp_path: Path, device: Device) -> None:
    import numpy as np
    from conftest import dense_model

    model = dense_model(False)
    model.graph.name = "dense"
    shapes = (("batch", 1, 8, 8), ("batch", 10))
    out = _cpu_bundle(tmp_path, model, shapes, np.zeros((2, 1, 8, 8), np.float32))
    res = device.run(script(out, "benchmark.sh"), PATH=device.path_without_edgedeploy())
    assert res.returncode == 2, res.stderr
    assert "edgedeploy profile" in res.stderr and "build_engine.sh" not in res.stderr
    assert res.stderr.strip().endswith("dense.onnx"), res.stderr  # no dims to give: none given


def test_benchmark_on_a_cpu_bundle_times_its_model_on_onnx_runtime_with_edgedeploy(
    tmp_path: Path, device: Device
) -> None:
    """benchmark.sh of a CPU bundle exited 2 ("error: ... there is no engine to benchmark") even
    where edgedeploy is installed, with --duration, --warmup and --out unused. It now times the
    model on ONNX Runtime with `edgedeploy profile` (as --tool edgedeploy times an engine), its JSON
    under device/results/; --tool trtexec, which times engines only, is refused in one line; and
    without edgedeploy it says in one line that it is needed, with the command to run."""
    import numpy as np
    from conftest import dense_model

    model = dense_model(False)
    model.graph.name = "dense"
    x = np.zeros((2, 1, 8, 8), np.float32)
    out = _cpu_bundle(tmp_path, model, (("batch", 1, 8, 8), ("batch", 10)), x)
    res = device.run(script(out, "benchmark.sh"), "--duration", "2", "--warmup", "100", "--batch", "4")
    assert res.returncode == 0, res.stderr
    result = out / "device" / "results" / "benchmark-fp32-b4.json"
    model_path = out / "models" / "dense.onnx"
    assert device.calls("edgedeploy")[-1] == (
        f"edgedeploy profile {model_path} --batch-sizes=4 --duration 2 --warmup-ms 100 --json {result}"
    )
    assert "latency_ms" in json.loads(result.read_text())
    res = device.run(script(out, "benchmark.sh"), "--tool", "trtexec")
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert "trtexec times TensorRT engines" in errors[0] and "x86-64-cpu" in errors[0], errors[0]
    res = device.run(script(out, "benchmark.sh"), PATH=device.path_without_edgedeploy())
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert "edgedeploy is not installed here" in errors[0] and errors[0].endswith("dense.onnx"), errors[0]


def test_benchmark_on_a_cpu_bundle_gives_the_reference_shapes_of_dynamic_dims(
    tmp_path: Path, device: Device
) -> None:
    """Run as suggested, ``edgedeploy profile`` would feed the dynamic height and width as 1 (a 1x1
    image): the suggestion gives the reference inputs' shape, at batch 1."""
    import numpy as np

    image, model = _image_relu()
    out = _cpu_bundle(tmp_path, model, (image, image), np.zeros((2, 3, 48, 192), np.float32))
    res = device.run(script(out, "benchmark.sh"), PATH=device.path_without_edgedeploy())
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().endswith("relu.onnx --input=x:1x3x48x192"), res.stderr


def _image_relu() -> tuple[tuple[str | int, ...], Any]:
    """A Relu on images [N, 3, H, W] (every dim but the channels dynamic) and its shape."""
    from onnx import TensorProto, helper

    image = ("N", 3, "H", "W")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, image)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, image)],
    )
    return image, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_benchmark_on_a_cpu_bundle_suggests_the_asked_batch(tmp_path: Path, device: Device) -> None:
    """--batch N went unused in the suggested ``edgedeploy profile`` command (which then ran batch 1):
    it sets the batch of the reference shapes, or is --batch-sizes when no input needs a shape."""
    import numpy as np
    from conftest import dense_model

    model = dense_model(False)
    model.graph.name = "dense"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x = np.zeros((2, 1, 8, 8), np.float32)
    out = _cpu_bundle(tmp_path / "a", model, (("batch", 1, 8, 8), ("batch", 10)), x)
    res = device.run(script(out, "benchmark.sh"), "--batch", "4", PATH=device.path_without_edgedeploy())
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().endswith("dense.onnx --batch-sizes=4"), res.stderr
    image, relu = _image_relu()
    out = _cpu_bundle(tmp_path / "b", relu, (image, image), np.zeros((2, 3, 48, 192), np.float32))
    res = device.run(script(out, "benchmark.sh"), "--batch", "3", PATH=device.path_without_edgedeploy())
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().endswith("relu.onnx --input=x:3x3x48x192"), res.stderr


def test_benchmark_on_a_cpu_bundle_refuses_a_batch_the_model_fixes(tmp_path: Path, device: Device) -> None:
    import numpy as np
    from conftest import dense_model

    model = dense_model(False)
    model.graph.name = "dense"
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    out = _cpu_bundle(tmp_path, model, ((2, 1, 8, 8), (2, 10)), np.zeros((2, 1, 8, 8), np.float32))
    res = device.run(script(out, "benchmark.sh"), "--batch", "4")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == "error: --batch 4: the model's inputs have a fixed batch of 2", res.stderr
    # its own batch: the suggestion, where edgedeploy is not installed
    res = device.run(script(out, "benchmark.sh"), "--batch", "2", PATH=device.path_without_edgedeploy())
    assert res.returncode == 2 and res.stderr.strip().endswith("dense.onnx"), res.stderr


def test_benchmark_on_a_cpu_bundle_names_its_result_after_the_batch_it_ran(
    tmp_path: Path, device: Device
) -> None:
    """A model fixed at batch 4 (input [4, 1, 8, 8]): benchmark.sh without --batch ran `edgedeploy
    profile`, which times such a model at its own batch, 4, and wrote its result to
    benchmark-fp32-b1.json. The file now says the batch that ran, as the JSON edgedeploy profile
    writes in it does."""
    import os
    import sys

    import numpy as np
    from conftest import dense_model

    model = dense_model(False)
    model.graph.name = "dense"
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    out = _cpu_bundle(tmp_path, model, ((4, 1, 8, 8), (4, 10)), np.zeros((4, 1, 8, 8), np.float32))
    results = out / "device" / "results"
    res = device.run(script(out, "benchmark.sh"), "--duration", "0.2", "--warmup", "0")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in results.glob("*.json")) == ["benchmark-fp32-b4.json"]
    # the real edgedeploy profile (this venv's): its JSON, under that name, says batch 4
    (results / "benchmark-fp32-b4.json").unlink()
    real = os.pathsep.join([str(Path(sys.executable).parent), device.path_without_edgedeploy()])
    res = device.run(script(out, "benchmark.sh"), "--duration", "0.2", "--warmup", "0", PATH=real)
    assert res.returncode == 0, res.stderr
    written = json.loads((results / "benchmark-fp32-b4.json").read_text())
    assert [b["batch_size"] for b in written["batches"]] == [4]
    assert not (results / "benchmark-fp32-b1.json").exists()


def test_benchmark_on_a_gpu_bundle_names_its_result_after_the_batch_it_ran(
    tmp_path: Path, device: Device
) -> None:
    """The GPU path of the test above (which it passed before too): an engine fixed at batch 4 is
    timed at 4 (run-shapes), and its result is benchmark-fp32-b4.json, whose settings say batch 4."""
    import numpy as np
    from conftest import dense_model

    from calibration.modelinfo import TensorSpec
    from edgedeploy.stages.bundle import BundleArtifact, make_bundle
    from edgedeploy.targets import load_target

    model = dense_model(False)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx_path = tmp_path / "dense.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    x = np.zeros((4, 1, 8, 8), np.float32)
    out = make_bundle(
        tmp_path / "gpu-bundle",
        model_name="dense",
        model_source=str(onnx_path),
        model_sha256="0" * 64,
        target=load_target("jetson-orin-nano"),
        inputs=[TensorSpec("input", (4, 1, 8, 8), "float32")],
        outputs=[TensorSpec("logits", (4, 10), "float32")],
        artifacts=[BundleArtifact("fp32", "tensorrt", onnx_path)],
        gates={},
        reference_inputs={"input": x},
        reference_outputs={"logits": _ort_run(onnx_path, {"input": x})},
    ).directory
    assert device.run(script(out, "build_engine.sh")).returncode == 0
    res = device.run(script(out, "benchmark.sh"), "--duration", "0.2", "--warmup", "0")
    assert res.returncode == 0, res.stderr
    results = out / "device" / "results"
    assert sorted(p.name for p in results.glob("*.json")) == ["benchmark-fp32-b4.json"]
    assert json.loads((results / "benchmark-fp32-b4.json").read_text())["settings"]["batch"] == 4


def test_commands_the_scripts_print_paste_back_with_blanks_in_the_path(
    tmp_path: Path, device: Device, bundle: Path
) -> None:
    """A CPU bundle under "my board" suggested `edgedeploy profile /…/my board/…/dense.onnx`, which a
    shell splits in two; benchmark.sh's and build_engine.sh's trtexec lines did the same."""
    import shlex
    import shutil

    import numpy as np
    from conftest import dense_model

    model = dense_model(False)
    model.graph.name = "dense"
    (tmp_path / "my board").mkdir()
    x = np.zeros((2, 1, 8, 8), np.float32)
    out = _cpu_bundle(tmp_path / "my board", model, (("batch", 1, 8, 8), ("batch", 10)), x)
    res = device.run(script(out, "benchmark.sh"), "--batch", "4", PATH=device.path_without_edgedeploy())
    assert res.returncode == 2, res.stderr
    suggested = shlex.split(res.stderr.strip().split("measure it with: ")[-1])
    assert suggested == ["edgedeploy", "profile", str(out / "models" / "dense.onnx"), "--batch-sizes=4"]
    # the engine bundle, moved under a folder with a blank: the trtexec lines split into its arguments
    moved = tmp_path / "my board" / "gpu bundle"
    shutil.move(bundle, moved)
    res = device.run(script(moved, "build_engine.sh"))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("==> building with "))
    args = shlex.split(line.removeprefix("==> building with ").split(" (log: ")[0])
    assert f"--onnx={moved}/models/dense.fp16.onnx" in args
    res = device.run(script(moved, "benchmark.sh"), "--duration", "0.1", "--warmup", "0")
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "--loadEngine=" in ln)
    args = shlex.split(line.removeprefix("==> "))
    assert f"--loadEngine={moved}/device/engines/dense.fp16.engine" in args
    # build_engine.sh's edgedeploy build line (it said "building with edgedeploy build" and no more)
    res = device.run(
        script(moved, "build_engine.sh"), "--tool", "edgedeploy", "--force", FAKE_EDGEDEPLOY_TRT="1"
    )
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("==> building with "))
    args = shlex.split(line.removeprefix("==> building with ").split(" (log: ")[0])
    assert args[:3] == ["edgedeploy", "build", f"{moved}/models/dense.fp16.onnx"], line
    assert args[args.index("-o") + 1].startswith(f"{moved}/device/engines/") and "--timing-cache" in args


def test_benchmark_tool_edgedeploy_missing_exits_2_with_one_line(bundle: Path, device: Device) -> None:
    """`--tool edgedeploy` without edgedeploy on PATH ended on `exec: edgedeploy: not found`, 127."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    path = device.path_without_edgedeploy()
    res = device.run(script(bundle, "benchmark.sh"), "--tool", "edgedeploy", "--duration", "0.1", PATH=path)
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert errors[0].startswith("error: edgedeploy not found on PATH"), errors[0]


def test_verify_outputs_failed_write_keeps_the_previous_result(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify_outputs.py wrote device/results/verify-*.json with a plain write_text: a write that failed
    (disk full) left half a JSON in place of the previous result. Now it writes a temporary file and
    renames it: the previous result stays whole, no temporary file is left, exit 2 with one line."""
    import errno
    import io

    from edgedeploy.device import verify_outputs

    result = bundle / "device" / "results" / "verify-dense.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    previous = json.dumps({"passed": True, "gates": {}, "outputs": {}}, indent=2) + "\n"
    result.write_text(previous)
    real_open = io.open

    class DiskFull:
        """A text file that takes half of what is written, then fails as a full disk does."""

        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def write(self, text: str) -> int:
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self) -> DiskFull:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    def full_disk_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        return DiskFull(fh) if "w" in mode else fh

    monkeypatch.setattr(io, "open", full_disk_open)
    model = str(bundle / "models" / "dense.onnx")
    code = verify_outputs.main(["--bundle", str(bundle), "--onnxruntime", model, "--json", str(result)])
    monkeypatch.undo()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == [f"error: cannot write {result}: No space left on device"], err
    assert result.read_text() == previous
    assert sorted(p.name for p in result.parent.iterdir()) == [result.name]
