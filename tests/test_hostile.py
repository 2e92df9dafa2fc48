"""Hostile input and faults (issue 12): no data loss, no write outside the target, no traceback,
no wrong verdict.

The CLI runs in-process (``edgedeploy.cli.main(argv)``) so the table stays fast; only signals
and device scripts need a subprocess. Every table row hashes the files it names before and after
the command: a refused command must not have changed them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import shapeless_model
from tests.device.conftest import dense_model


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def cli(*args: str | Path, cwd: Path | None = None) -> Outcome:
    """``edgedeploy ARGS`` in this process: exit code, stdout and stderr."""
    from edgedeploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # anything else escaping main is a traceback for the user
            import traceback

            err.write("Traceback (escaped main)\n" + "".join(traceback.format_exception(exc)))
            code = 99
    return Outcome(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


def one_line_error(result: Outcome, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, one non-empty line on stderr naming the problem; the line."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.text, result.text
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip() and not ln.startswith("warning")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def digest(paths: list[Path]) -> dict[str, str | None]:
    """sha256 of each file (every file under a folder), None when absent."""
    table: dict[str, str | None] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            table[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None
        if path.is_dir():
            table[str(path) + "/"] = ",".join(sorted(p.name for p in path.iterdir()))
    return table


@dataclass
class Tiny:
    """A dense model (input [batch,1,8,8] -> logits [batch,10]), its fp16 twin and data."""

    root: Path
    model: Path
    fp16: Path
    data: Path


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny")
    onnx.save(dense_model(False), root / "model.onnx")
    onnx.save(dense_model(True), root / "model.fp16.onnx")
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    np.savez(root / "data.npz", input=x)
    return Tiny(root, root / "model.onnx", root / "model.fp16.onnx", root / "data.npz")


@pytest.fixture
def tiny(tiny_src: Tiny, tmp_path: Path) -> Tiny:
    """A fresh copy in a project folder per test (tests damage and overwrite files)."""
    proj = tmp_path / "proj"
    shutil.copytree(tiny_src.root, proj)
    return Tiny(proj, proj / "model.onnx", proj / "model.fp16.onnx", proj / "data.npz")


def write_config(tiny: Tiny, body: str = "", *, bundle: str = "", profile: bool = False) -> Path:
    config = tiny.root / "edgedeploy.toml"
    config.write_text(f"""
workdir = "work"

[model]
source = "model.onnx"
name = "tiny"

[build]
precisions = ["fp32", "fp16"]

[compare]
data = "data.npz"
samples = 8
batch_size = 4

[profile]
enabled = {"true" if profile else "false"}
iterations = 5
duration_s = 0
warmup = 1

[bundle]
{bundle}
{body}
""")
    return config


@contextlib.contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    before = digest(list(paths))
    yield
    assert digest(list(paths)) == before


# ---------------------------------------------------------------- data loss: the bundle guard


def test_bundle_into_a_project_folder_with_a_web_manifest_is_refused_and_deletes_nothing(tiny: Tiny) -> None:
    (tiny.root / "manifest.json").write_text('{"name": "my web app", "start_url": "/"}')
    with unchanged(tiny.root):
        result = cli("bundle", "model.onnx", "-o", ".", "--data", "data.npz", cwd=tiny.root)
    one_line_error(result, 2, "not a bundle")


def test_bundle_over_a_bundle_the_user_added_files_to_is_refused(tiny: Tiny) -> None:
    out = tiny.root / "b"
    assert cli("bundle", tiny.model, "-o", out, "--data", tiny.data).code == 0
    (out / "notes.txt").write_text("mine")
    with unchanged(tiny.root):
        result = cli("bundle", tiny.model, "-o", out, "--data", tiny.data)
    one_line_error(result, 2, "notes.txt", "does not list")
    (out / "notes.txt").unlink()
    assert cli("bundle", tiny.model, "-o", out, "--data", tiny.data).code == 0  # ours again: replaced


def test_bundle_over_a_bundle_whose_device_folder_holds_board_outputs_is_refused_before_any_work(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """device/ (engines built on the board, benchmark and verify results) was deleted without a word
    when the bundle was made again over it; an empty device/ is remade as before."""
    out = tiny.root / "b"
    assert cli("bundle", tiny.model, "-o", out, "--data", tiny.data).code == 0
    (out / "device" / "engines").mkdir(parents=True)
    (out / "device" / "results").mkdir()
    (out / "device" / "engines" / "model.fp16.engine").write_bytes(b"built on the board")
    (out / "device" / "results" / "benchmark-fp16-b1.json").write_text('{"latency_ms": {}}')
    assert cli("bundle", "verify", out).code == 0

    def no_work(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("compared before refusing the output")

    with monkeypatch.context() as patch:
        patch.setattr("edgedeploy.pipeline.pack.compare", no_work)
        with unchanged(tiny.root):
            result = cli("bundle", tiny.model, tiny.fp16, "-o", out, "--data", tiny.data)
    line = one_line_error(result, 2, "2 files", "written on the board", f"{out}/device")
    assert "move them" in line and "remove" in line, line
    (out / "device" / "engines" / "model.fp16.engine").unlink()
    (out / "device" / "results" / "benchmark-fp16-b1.json").unlink()
    assert cli("bundle", tiny.model, "-o", out, "--data", tiny.data).code == 0  # empty device/: remade
    assert not (out / "device").exists()


def test_bundle_over_a_manifest_with_our_keys_but_foreign_files_is_refused(tiny: Tiny) -> None:
    (tiny.root / "manifest.json").write_text(
        json.dumps({"schema_version": 1, "edgedeploy_version": "0", "files": {}})
    )
    with unchanged(tiny.root):
        result = cli("bundle", "model.onnx", "-o", ".", "--data", "data.npz", cwd=tiny.root)
    one_line_error(result, 2, "not a bundle")


def test_run_with_bundle_output_dot_refuses_before_any_work(tiny: Tiny) -> None:
    (tiny.root / "manifest.json").write_text("{}")
    config = write_config(tiny, bundle='output = "."')
    with unchanged(tiny.root):
        result = cli("run", config)
    one_line_error(result, 2, "not a bundle")
    assert not (tiny.root / "work").exists()


def test_six_concurrent_bundles_into_one_folder_all_succeed_and_leave_one_whole_bundle(tiny: Tiny) -> None:
    from calibration.modelinfo import TensorSpec
    from edgedeploy.stages.bundle import BundleArtifact, make_bundle, verify_bundle
    from edgedeploy.targets import load_target

    out = tiny.root / "b"

    def one(_: int) -> None:
        make_bundle(
            out,
            model_name="tiny",
            model_source=str(tiny.model),
            model_sha256="0" * 64,
            target=load_target("x86-64-cpu"),
            inputs=[TensorSpec("input", ("batch", 1, 8, 8), "float32")],
            outputs=[TensorSpec("logits", ("batch", 10), "float32")],
            artifacts=[BundleArtifact("fp32", "onnxruntime", tiny.model)],
            gates={},
        )

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(6)))
    assert verify_bundle(out).ok
    assert verify_bundle(out.with_name("b.tar.gz")).ok
    assert sorted(p.name for p in tiny.root.iterdir() if p.name.startswith(".")) == []


def test_temp_files_left_by_a_killed_writer_are_removed_by_the_next_write(tmp_path: Path) -> None:
    from edgedeploy.fileio import atomic_dir, atomic_write_text

    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".model.onnx.{dead}.abc123.onnx").write_bytes(b"half")
    (tmp_path / f".bundle.{dead}.xyz").mkdir()
    (tmp_path / f".bundle.{dead}.xyz" / "big").write_bytes(b"x" * 100)
    (tmp_path / ".model.onnx.notapid.onnx").write_bytes(b"user's")  # not ours: kept
    atomic_write_text(tmp_path / "model.onnx", "m")
    with atomic_dir(tmp_path / "bundle") as root:
        (root / "f").write_text("f")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.onnx.notapid.onnx", "bundle", "model.onnx"]


# ---------------------------------------------------------------- stage cache verified by content


def test_a_corrupted_precision_model_is_rebuilt_and_compared_again_not_up_to_date(tiny: Tiny) -> None:
    config = write_config(tiny)
    assert cli("run", config).code == 0
    fp16 = tiny.root / "work" / "tiny.fp16.onnx"
    model = onnx.load(fp16)
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init).copy()
        arr[...] = np.nan
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, fp16)
    again = cli("run", config)
    assert again.code == 0, again.text
    assert "build-fp16: up to date" not in again.text
    assert np.isfinite(onnx.numpy_helper.to_array(onnx.load(fp16).graph.initializer[0])).all()
    bundled = next((tiny.root / "bundle" / "models").glob("*.fp16.onnx"))
    assert bundled.read_bytes() == fp16.read_bytes()


def test_a_copied_project_reuses_none_of_the_files_of_the_project_it_was_copied_from(tiny: Tiny) -> None:
    """The stage records name their outputs by absolute path: in a copy of a finished project the
    copy's run hashed, reused and bundled the first project's files, said every stage was up to
    date, and left its own damaged fp16 model as it was (its run.json named the other project)."""
    config = write_config(tiny)
    assert cli("run", config).code == 0
    copy = tiny.root.parent / "copy"
    shutil.copytree(tiny.root, copy, symlinks=True)
    shutil.rmtree(copy / "bundle")
    (copy / "bundle.tar.gz").unlink()
    fp16 = copy / "work" / "tiny.fp16.onnx"
    damaged = bytearray(fp16.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    fp16.write_bytes(bytes(damaged))
    with unchanged(tiny.root):
        again = cli("run", copy / "edgedeploy.toml")
    assert again.code == 0, again.text
    assert "build-fp16: up to date" not in again.text
    assert f"written for the workdir {tiny.root / 'work'}" in again.text
    assert fp16.read_bytes() == (tiny.root / "work" / "tiny.fp16.onnx").read_bytes()
    assert (copy / "bundle" / "models" / "tiny.fp16.onnx").read_bytes() == fp16.read_bytes()
    assert str(tiny.root) not in (copy / "work" / "run.json").read_text()
    assert "nothing changed" in cli("run", copy / "edgedeploy.toml").text


def test_run_refuses_a_bundle_output_it_cannot_write_before_any_stage(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle output in a read-only folder was found after export, build and compare had run."""
    import os

    ro = tiny.root / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    config = write_config(tiny, bundle='output = "ro/bundle"')
    with unchanged(tiny.root):
        one_line_error(cli("run", config), 2, "bundle.output", "cannot write in", "read-only")


def test_run_and_an_output_option_refuse_an_unwritable_folder_by_one_check(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run's workdir and bundle folder and the commands' -o are refused by the same test of
    writability (fileio.refuse_unwritable), in the same words: run wrote its own os.access test."""
    import os

    from edgedeploy.errors import InputError
    from edgedeploy.fileio import refuse_unwritable

    ro = tiny.root / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    refuse_unwritable(tiny.root, "-o out")  # a folder that can be written: nothing said
    with pytest.raises(InputError, match=r"^-o out: cannot write in .*ro \(read-only or no permission\)$"):
        refuse_unwritable(ro, "-o out")
    tail = f"cannot write in {ro} (read-only or no permission)"
    built = one_line_error(cli("build", "model.onnx", "-o", "ro/out", cwd=tiny.root), 2)
    assert built.endswith(f"-o ro/out: {tail}"), built
    config = write_config(tiny).read_text().replace('workdir = "work"', 'workdir = "ro/work"')
    (tiny.root / "edgedeploy.toml").write_text(config)
    with unchanged(tiny.root):
        ran = one_line_error(cli("run", tiny.root / "edgedeploy.toml"), 2)
    assert ran.endswith(f"config workdir: {ro / 'work'}: {tail}"), ran


def test_run_writes_a_bundle_through_a_symlinked_output_as_bundle_create_does(tiny: Tiny) -> None:
    """A bundle output that is a link to a folder: the bundle goes into that folder and its archive
    beside it (as ``bundle create -o LINK``); the run used to fail after every stage, refusing the
    archive as "outside the output folder"."""
    (tiny.root / "real").mkdir()
    (tiny.root / "link").symlink_to("real")
    config = write_config(tiny, bundle='output = "link"')
    result = cli("run", config)
    assert result.code == 0, result.text
    assert (tiny.root / "real" / "manifest.json").is_file() and (tiny.root / "real.tar.gz").is_file()
    assert (tiny.root / "link").is_symlink()
    assert "up to date" in cli("run", config).text


def test_json_never_replaces_a_file_the_command_writes_or_a_bundle_file(tiny: Tiny) -> None:
    """--json was checked against the inputs only: ``run --json bundle/manifest.json`` left a bundle
    no later run would take, ``run --json work/tiny.fp16.onnx`` and ``build -o o --json
    o/model.fp16.onnx`` replaced a model with JSON, and ``export -o m.onnx --json m.onnx`` too."""
    config = write_config(tiny, bundle='output = "bundle"')
    assert cli("run", config).code == 0
    with unchanged(tiny.root):
        one_line_error(cli("run", config, "--json", tiny.root / "bundle" / "manifest.json"), 2, "bundle")
        line = one_line_error(cli("run", config, "--json", tiny.root / "work" / "tiny.fp16.onnx"), 2)
        assert "exists and is not a JSON file" in line
        one_line_error(cli("run", config, "--json", tiny.root / "work" / "run.json"), 2, "the run's record")
        # a stage record in the cache (matrix's cell records alike): the next run failed on it
        records = sorted((tiny.root / "work" / ".edgedeploy-cache").glob("*.json"))
        assert records
        one_line_error(cli("run", config, "--json", records[0]), 2, "lies in the cache")
        one_line_error(cli("export", tiny.model, "-o", tiny.root / "m.onnx", "--json", tiny.root / "m.onnx"),
                       2, "also given as -o")  # fmt: skip
    assert cli("run", config, "--json", tiny.root / "run.json").code == 0  # a JSON file of its own is fine
    # named like build's outputs: refused before any work
    out = tiny.root / "o"
    built = cli("build", tiny.model, "--precision", "fp16", "-o", out, "--json", out / "model.fp16.onnx")
    one_line_error(built, 2, "are this command's outputs")
    assert not out.exists()
    # a file this command writes anew, or one in the folder it writes whole: refused before any work
    # (it was refused when the JSON was due, the bundle and the report written)
    b = tiny.root / "b"
    for json_path in (tiny.root / "b.tar.gz", b / "manifest.json", b / "mine.json"):
        bundled = cli("bundle", tiny.model, "-o", b, "--json", json_path)
        one_line_error(bundled, 2, f"--json {json_path}", "this command writes: name another file")
        assert not b.exists() and not (tiny.root / "b.tar.gz").exists()
    compared = tiny.root / "cmp.json"
    assert cli("compare", tiny.model, tiny.fp16, "--data", tiny.data, "--json", compared).code == 0
    r = tiny.root / "r"
    for name in ("report.html", "report.md"):
        reported = cli("report", compared, "-o", r, "--json", r / name)
        one_line_error(reported, 2, f"--json {r / name} is a file this command writes")
        assert not r.exists()


def test_run_json_naming_a_stage_output_or_report_of_the_workdir_is_refused_before_any_work(
    tiny: Tiny,
) -> None:
    """``run --json work/tiny.fp16.plan.json`` replaced the cached precision plan (the next run
    rebuilt), and on a fresh workdir did the whole run and only then refused the file."""
    config = write_config(tiny)
    work = tiny.root / "work"
    fresh = one_line_error(cli("run", config, "--json", work / "tiny.fp16.plan.json"), 2, "outputs")
    assert "tiny.*" in fresh
    assert not work.exists() or not any(work.glob("tiny.*"))  # refused before any work
    assert cli("run", config).code == 0
    with unchanged(tiny.root):
        for name in ("tiny.fp16.plan.json", "tiny.calib.json", "tiny.fp16.ranges.json", "report.md"):
            one_line_error(cli("run", config, "--json", work / name), 2)
    assert "up to date" in cli("run", config).text


def test_json_may_go_to_a_bundles_device_folder_where_the_board_writes_its_results(tmp_path: Path) -> None:
    """benchmark.sh --tool edgedeploy runs `edgedeploy profile ENGINE --json device/results/...json`,
    the folder where the device scripts write and no manifest lists (bundle/tools.device_outputs):
    profile refused it ("lies in the bundle"), exit 2, so the script never timed anything. A
    --json under the bundle's device/ is taken; anywhere else in the bundle is refused as before."""
    from edgedeploy.cli.guard import check_json_output
    from edgedeploy.errors import InputError

    bundle = tmp_path / "bundle"
    (bundle / "scripts").mkdir(parents=True)
    (bundle / "manifest.json").write_text("{}")
    check_json_output(bundle / "device" / "results" / "benchmark-fp16-b1.json")
    for outside in (bundle / "p.json", bundle / "models" / "p.json", bundle / "device" / ".." / "p.json"):
        with pytest.raises(InputError, match="lies in the bundle"):
            check_json_output(outside)


def test_an_output_folder_in_a_bundle_is_refused_before_any_work_as_json_is(made_bundle: Path) -> None:
    """``report b.tar.gz -o b`` (the bundle named by its archive) wrote report.html and report.md over
    the bundle's own, ``build -o b/models`` added files its manifest does not list: exit 0, and then
    ``bundle verify`` (and the board's verify.sh) found the bundle damaged. --json was refused there;
    -o and --out are now too, but under device/, where the board's scripts write."""
    root = made_bundle.parent
    archive = made_bundle.with_name(made_bundle.name + ".tar.gz")
    model = root / "model.onnx"
    refused = {
        ("report", archive, "-o", made_bundle): f"-o {made_bundle} is the bundle {made_bundle}",
        ("report", archive, "-o", made_bundle / "sub"): f"lies in the bundle {made_bundle}",
        ("build", model, "-o", made_bundle / "models"): f"-o {made_bundle / 'models'} lies in the bundle",
        ("calibrate", model, "--data", "random", "-o", made_bundle / "int8"): "lies in the bundle",
        ("export", model, "-o", made_bundle / "models" / "clean.onnx"): "lies in the bundle",
        ("demo", "--out", made_bundle): "is the bundle",
    }
    with unchanged(root):
        for args, said in refused.items():
            one_line_error(cli(*args), 2, said, "write it outside the bundle")
    assert cli("bundle", "verify", made_bundle).code == 0
    assert cli("build", model, "-o", made_bundle / "device" / "out").code == 0  # the board's folder
    assert cli("bundle", "verify", made_bundle).code == 0


def test_json_never_replaces_a_file_bundle_create_reads_beside_an_artifact(tiny: Tiny) -> None:
    """bundle create takes an artifact's plan and report data by name beside it (pipeline/pack.py),
    which no argument names: ``--json model.fp16.plan.json`` replaced the plan it was to read."""
    siblings = ["model.fp16.plan.json", "model.fp16.ranges.json", "model.fp16.budget.json"]
    for name in siblings:
        (tiny.root / name).write_text("{}")
    with unchanged(tiny.root):
        for name in siblings:
            result = cli("bundle", tiny.model, tiny.fp16, "-o", tiny.root / "b", "--json", tiny.root / name)
            one_line_error(result, 2, f"--json {tiny.root / name} is an input of this command")


def test_a_garbage_archive_beside_an_intact_bundle_folder_is_made_again(tiny: Tiny) -> None:
    from edgedeploy.stages.bundle import verify_bundle

    config = write_config(tiny)
    assert cli("run", config).code == 0
    archive = tiny.root / "bundle.tar.gz"
    archive.write_bytes(b"garbage")
    again = cli("run", config)
    assert again.code == 0, again.text
    assert verify_bundle(archive).ok


def test_an_archive_that_is_not_a_bundles_is_not_replaced(tiny: Tiny) -> None:
    """``bundle -o mydata`` replaced an unrelated ``mydata.tar.gz`` beside it, where the folder side
    was refused ("is not empty and is not a bundle"); an archive of the same bundle is remade."""
    archive = tiny.root / "mydata.tar.gz"
    archive.write_bytes(b"precious")
    config = write_config(tiny, bundle='output = "mydata"')
    with unchanged(tiny.root):
        one_line_error(cli("bundle", tiny.model, "-o", tiny.root / "mydata"), 2, "is not a bundle archive")
        one_line_error(cli("run", config), 2, "is not a bundle archive")
    assert cli("bundle", tiny.model, "-o", tiny.root / "b").code == 0
    shutil.rmtree(tiny.root / "b")  # the archive of an earlier bundle of that name is ours to remake
    assert cli("bundle", tiny.model, "-o", tiny.root / "b").code == 0


# ---------------------------------------------------------------- helpers used by later sections


def python_without(*modules: str) -> list[str]:
    """A python3 command line in which importing ``modules`` fails (a bare JetPack python)."""
    blocker = "import sys\nclass _B:\n    def find_spec(self, name, *a):\n" + (
        f"        if name.split('.')[0] in {list(modules)!r}: raise ImportError(name)\n"
        "sys.meta_path.insert(0, _B())\n"
    )
    return [sys.executable, "-c", blocker + "import runpy; runpy.run_path(sys.argv[1], run_name='__main__')"]


# ---------------------------------------------------------------- bundle verify / inspect of hostile archives


@pytest.fixture
def made_bundle(tiny: Tiny) -> Path:
    out = tiny.root / "b"
    result = cli("bundle", tiny.model, "-o", out, "--data", tiny.data)
    assert result.code == 0, result.text
    return out


def _tar_with(path: Path, bundle: Path, extra: dict[str, int] | None = None, count: int = 0) -> Path:
    """``bundle`` packed with ``extra`` members (name -> size, zeros) and ``count`` tiny stray members."""
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
        for name, size in (extra or {}).items():
            info = tarfile.TarInfo(f"{bundle.name}/{name}")
            info.size = size
            tar.addfile(info, _Zeros(size))
        for i in range(count):
            info = tarfile.TarInfo(f"{bundle.name}/junk/{i}")
            tar.addfile(info, io.BytesIO(b""))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def test_verify_of_a_tar_bomb_refuses_before_extracting_with_one_short_line(
    made_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    bomb = _tar_with(tmp_path / "bomb.tar.gz", made_bundle, {"models/huge.bin": 64 << 20})
    assert bomb.stat().st_size < 2 << 20
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    line = one_line_error(cli("bundle", "verify", bomb), 2, "models/huge.bin", "not listed")
    assert len(line) < 400
    assert list(scratch.iterdir()) == []  # nothing extracted, nothing left


def test_verify_of_an_archive_with_30k_members_gives_one_short_line(
    made_bundle: Path, tmp_path: Path
) -> None:
    many = _tar_with(
        tmp_path / "many.tar.gz", made_bundle, count=10_050
    )  # the issue saw 30k; the limit is 10k
    line = one_line_error(cli("bundle", "verify", many), 2, "more than")
    assert len(line) < 400


def test_verify_of_a_member_larger_than_its_manifest_says_is_refused(
    made_bundle: Path, tmp_path: Path
) -> None:
    listed = json.loads((made_bundle / "manifest.json").read_text())["files"]
    rel = next(r for r in listed if r.startswith("models/"))
    (made_bundle / rel).write_bytes(b"\0" * (listed[rel]["size"] + 1000))
    archive = tmp_path / "bigger.tar.gz"
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made_bundle, arcname="b")
    one_line_error(cli("bundle", "verify", archive), 2, rel, "manifest says")


def test_bundle_and_inspect_count_the_same_files_and_bytes(tiny: Tiny) -> None:
    """What ``bundle`` prints and what ``inspect`` reports (folder and archive) are the files on
    disk, the manifest among them."""
    import re

    out = tiny.root / "counted"
    made = cli("bundle", tiny.model, "-o", out, "--data", tiny.data)
    assert made.code == 0, made.text
    on_disk = [p for p in out.rglob("*") if p.is_file()]
    truth = (len(on_disk), sum(p.stat().st_size for p in on_disk))
    from edgedeploy.ui import human_size

    printed = re.search(r"\((\d+) files, ([\d.]+ [kMG]?B)\)", made.text)
    assert printed, made.text
    assert (int(printed[1]), printed[2]) == (truth[0], human_size(truth[1]))
    for where in (out, out.with_name(out.name + ".tar.gz")):
        report = tiny.root / "inspect.json"
        assert cli("bundle", "inspect", where, "--json", report).code == 0
        summary = json.loads(report.read_text())
        assert (summary["files"], summary["size_bytes"]) == truth


def test_inspect_of_a_damaged_bundle_exits_2(made_bundle: Path) -> None:
    model = next((made_bundle / "models").glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:-10])
    result = cli("bundle", "inspect", made_bundle)
    assert result.code == 2, result.text
    assert result.stdout == ""  # one line, as for a damaged archive (it printed the whole summary too)
    one_line_error(result, 2, "damaged")


@pytest.mark.parametrize(
    "manifest",
    [
        {"artifacts": "x"},
        {"artifacts": [1]},
        {"files": []},
        {"target": None},
        {"io": {"inputs": 3}},
        {"reference": ["a"]},
    ],
    ids=lambda m: json.dumps(m),
)
def test_verify_and_inspect_of_a_manifest_breaking_the_schema_give_one_line(
    made_bundle: Path, manifest: dict[str, object]
) -> None:
    path = made_bundle / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **manifest}))
    one_line_error(cli("bundle", "verify", made_bundle), 2, "damaged")
    one_line_error(cli("bundle", "inspect", made_bundle), 2, "damaged")
    import tarfile

    archive = made_bundle.with_name("edited.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made_bundle, arcname=made_bundle.name)
    inspected = cli("bundle", "inspect", archive)
    assert str(archive) in one_line_error(inspected, 2)
    assert "edgedeploy-inspect" not in inspected.stderr  # the archive is named, not its scratch folder


def test_a_non_tar_archive_gives_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "b.tar.gz"
    fake.write_bytes(b"PK\x03\x04 this is a zip\n\nsecond line\n")
    one_line_error(cli("bundle", "verify", fake), 2, "not a readable tar archive")
    one_line_error(cli("bundle", "inspect", fake), 2, "not a readable tar archive")


# ---------------------------------------------------------------- the hostile-case table


def _no_input_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    const = helper.make_tensor("c", TensorProto.FLOAT, [1, 3], [1.0, 2.0, 3.0])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=const), helper.make_node("Relu", ["k"], ["y"])],
        "noinput",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _huge_dims_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 200_000, 100_000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 200_000, 100_000])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _tokens_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    emb = numpy_helper.from_array(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32), "E")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "ids"], ["h"]),
            helper.make_node("ReduceMean", ["h"], ["y"], axes=[1]),
        ],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [emb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _two_inputs_model() -> onnx.ModelProto:
    """a [batch, 4] + b [batch, 4]: two inputs that name one dim."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


FACTORY_EXIT = """
import sys
import torch


def build():
    sys.exit(0)


def example_inputs():
    return {"x": torch.zeros(1, 4)}
"""

MISFIT = """
import torch


def build():
    return torch.nn.Linear(4, 2)


def example_inputs():
    return {"x": torch.zeros(1, 7)}
"""

LOADER_EXIT = """
import sys


def load_data():
    sys.exit(0)
"""


@pytest.fixture(scope="module")
def project_src(tiny_src: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder holding every hostile input the table refers to."""
    root = tmp_path_factory.mktemp("hostile-project")
    for f in tiny_src.root.iterdir():
        shutil.copy2(f, root / f.name)
    x = np.random.default_rng(1).standard_normal((8, 1, 8, 8)).astype(np.float32)
    np.savez(root / "empty.npz", input=x[:0])
    np.savez(root / "wrongname.npz", x=x)
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    np.savez(root / "nan.npz", input=nan)
    (root / "garbage.npz").write_bytes(b"not a zip")
    (root / "garbage.onnx").write_bytes(b"\x08\x07garbage")
    (root / "garbage.tar.gz").write_bytes(b"PK\x03\x04 a zip, not a tar\nline two\n")
    onnx.save(_no_input_model(), root / "noinput.onnx")
    onnx.save(_huge_dims_model(), root / "huge.onnx")
    onnx.save(_tokens_model(), root / "tokens.onnx")
    np.savez(root / "tokens_bad.npz", ids=np.full((2, 5), 99, np.int64))
    onnx.save(_two_inputs_model(), root / "two.onnx")
    shapeless_model(root / "shapeless.onnx")
    rows = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    np.savez(root / "two_rows_differ.npz", a=rows[:4], b=rows)  # 'batch' 4 on a, 5 on b
    ext = dense_model(False)
    onnx.save(ext, root / "ext.onnx", save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (root / "ext.onnx.data").unlink()
    broken = dense_model(True)  # the fp16 twin with NaN weights: runs, and must fail the gate
    for init in broken.graph.initializer:
        arr = onnx.numpy_helper.to_array(init).copy()
        arr[...] = np.nan
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(broken, root / "nan.fp16.onnx")
    (root / "bad_preprocess.json").write_text("{not json")
    (root / "factory_exit.py").write_text(FACTORY_EXIT)
    (root / "misfit.py").write_text(MISFIT)
    (root / "loader_exit.py").write_text(LOADER_EXIT)
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("mine")
    (root / "afile").write_text("a file")
    (root / "site").mkdir()
    (root / "site" / "manifest.json").write_text('{"name": "web app"}')
    (root / "site" / "index.html").write_text("<html></html>")
    return root


BASE_CONFIG = """
workdir = "work"

[model]
source = "model.onnx"
name = "tiny"

[build]
precisions = ["fp32"]

[calibration]

[compare]
data = "data.npz"
samples = 8
batch_size = 4

[profile]
enabled = false
iterations = 5
duration_s = 0

[bundle]
enabled = false
"""


def config_with(**changes: str) -> str:
    """BASE_CONFIG with ``section__key="value"`` lines replaced or added."""
    text = BASE_CONFIG
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        lines = text.splitlines()
        start = lines.index(f"[{section}]") if section else 0
        for i in range(start + 1, len(lines) + 1):
            if i == len(lines) or lines[i].startswith("["):
                lines.insert(i, f"{key} = {value}")
                break
            if lines[i].split("=")[0].strip() == key:
                lines[i] = f"{key} = {value}"
                break
        text = "\n".join(lines) + "\n"
    return text


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    phrase: str = ""
    config: str | None = None  # written to edgedeploy.toml before the command
    keep: tuple[str, ...] = (".",)  # files/folders (relative) that must not change; "." = the project
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards


def C(id: str, *args: str, code: int = 2, phrase: str = "", **kw: object) -> Case:
    return Case(id, args, code, phrase, **kw)  # type: ignore[arg-type]


def line(id: str, command: str, phrase: str, **kw: object) -> Case:
    """A refused command written as one line (words split on spaces)."""
    return C(id, *command.split(" "), phrase=phrase, **kw)


RUN = ("run", "edgedeploy.toml")


def refused_run(id: str, phrase: str, **changes: str) -> Case:
    """``run`` of BASE_CONFIG with ``changes`` (see :func:`config_with`): exit 2 before any work."""
    return C(id, *RUN, config=config_with(**changes), phrase=phrase, absent=("work",))


CASES: list[Case] = [
    # inputs that are missing, of the wrong kind or damaged
    C("build a missing model", "build", "missing.onnx", "-o", "out", phrase="not found", absent=("out",)),
    C("build a folder as model", "build", "adir", "-o", "out", phrase="folder", absent=("out",)),
    C("compare a folder as model", "compare", "adir", "model.onnx", phrase="folder"),
    C("profile a folder", "profile", "adir", phrase="folder"),
    # an input the model declares without a shape: named, not taken for a 0-d tensor
    line("build a shapeless model", "build shapeless.onnx -o out", "input 'x' has no shape", absent=("out",)),
    line(
        "build int8 of a shapeless model with --input",
        "build shapeless.onnx -o out --precision int8 --input x:2x4",
        "input 'x' has no shape",
        absent=("out",),
    ),
    line(
        "calibrate a shapeless model",
        "calibrate shapeless.onnx -o out --data random",
        "input 'x' has no shape",
        absent=("out",),
    ),
    line(
        "profile a shapeless model without --input",
        "profile shapeless.onnx",
        "give its shape, e.g. --input x:",
    ),
    C(
        "build a garbage model",
        "build",
        "garbage.onnx",
        "-o",
        "out",
        phrase="not a valid ONNX",
        absent=("out",),
    ),
    C(
        "build a model missing its external data",
        "build",
        "ext.onnx",
        "-o",
        "out",
        phrase="ext.onnx.data",
        absent=("out",),
    ),
    C(
        "compare a model missing its external data",
        "compare",
        "ext.onnx",
        "model.onnx",
        phrase="ext.onnx.data",
    ),
    C("run --json onto model", *RUN, "--json", "model.onnx", phrase="input of this run", config=BASE_CONFIG),
    C("run --json onto its data", *RUN, "--json", "data.npz", phrase="input of this run", config=BASE_CONFIG),
    C("run a missing config", "run", "missing.toml", phrase="not found"),
    C("run a folder as config", "run", "adir", phrase="folder"),
    C("run invalid TOML", *RUN, phrase="not valid TOML", config="[model\nsource ="),
    # outputs: never an input, never the wrong kind, never empty
    C(
        "compare --json naming the reference",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--json",
        "model.onnx",
        phrase="is an input",
    ),
    C(
        "compare --json naming the data",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--data",
        "data.npz",
        "--json",
        "data.npz",
        phrase="is an input",
    ),
    C(
        "compare --json naming a folder",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--json",
        "adir",
        phrase="is a folder",
    ),
    C(
        "compare --json under a file",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--json",
        "afile/x.json",
        phrase="is a file",
    ),
    C("compare --json empty", "compare", "model.onnx", "model.fp16.onnx", "--json", "", phrase="empty"),
    C("build -o empty", "build", "model.onnx", "-o", "", phrase="empty"),
    C("build --output= empty", "build", "model.onnx", "--output=", phrase="empty"),
    C("build -o an existing file", "build", "model.onnx", "-o", "afile", phrase="not a folder"),
    C(
        "build --json naming the model",
        "build",
        "model.onnx",
        "-o",
        "out",
        "--json",
        "model.onnx",
        phrase="is an input",
        absent=("out",),
    ),
    C(
        "build an fp16 model into its own folder (kept as it is)",
        "build",
        "model.fp16.onnx",
        "--precision",
        "fp16",
        "-o",
        ".",
        code=0,
        keep=("model.fp16.onnx", "model.onnx", "data.npz"),
    ),
    C(
        "analyze --json naming the model",
        "analyze",
        "model.onnx",
        "--data",
        "data.npz",
        "--json",
        "model.onnx",
        phrase="is an input",
    ),
    C(
        "profile --json naming the model",
        "profile",
        "model.onnx",
        "--json",
        "model.onnx",
        phrase="is an input",
    ),
    C(
        "export -o naming a folder",
        "export",
        "misfit.py:build:example_inputs",
        "-o",
        "adir",
        phrase="is a folder",
    ),
    line("export -o spelt as a folder", "export model.onnx -o new/", "is a folder", absent=("new",)),
    line(
        "compare --json spelt as a folder",
        "compare model.onnx model.fp16.onnx --json=report/",
        "is a folder",
        absent=("report",),
    ),
    C(
        "export -o naming its own source",
        "export",
        "misfit.py:build:example_inputs",
        "-o",
        "misfit.py",
        phrase="is an input",
    ),
    C(
        "bundle -o . in a folder with a web manifest",
        "bundle",
        "../model.onnx",
        "-o",
        ".",
        "--data",
        "../data.npz",
        phrase="not a bundle",
        keep=(".",),
    ),
    C(
        "bundle -o a folder of the user's",
        "bundle",
        "model.onnx",
        "-o",
        "adir",
        "--data",
        "data.npz",
        phrase="not a bundle",
    ),
    C(
        "bundle -o the project folder holding the model",
        "bundle",
        "model.onnx",
        "-o",
        ".",
        "--data",
        "data.npz",
        phrase="not a bundle",
    ),
    C(
        "bundle --json naming the model",
        "bundle",
        "model.onnx",
        "-o",
        "b",
        "--data",
        "data.npz",
        "--json",
        "model.onnx",
        phrase="is an input",
        absent=("b",),
    ),
    C(
        "bundle verify --json inside the folder verified",
        "bundle",
        "verify",
        "adir",
        "--json",
        "adir/r.json",
        phrase="a folder this command reads",
    ),
    C(
        "config TensorRT options on the onnxruntime backend",
        *RUN,
        config=config_with(build__backend='"onnxruntime"', build__workspace_mb="64"),
        phrase="TensorRT options",
        absent=("work",),
    ),
    refused_run(
        "config percentile out of range, before export",
        "percentile must be within",
        build__precisions='["fp32", "int8"]',
        calibration__percentile="150",
    ),
    refused_run(
        "config preprocess misspelt, with .npz data, before export",
        "unknown preprocess option(s) resizee",
        build__precisions='["fp32", "int8"]',
        calibration__data='"data.npz"',
        calibration__preprocess="{ resizee = 3 }",
    ),
    refused_run(
        "config trt_version not a version, before export",
        "bad TensorRT version 'banana'",
        build__precisions='["fp32", "int8"]',
        calibration__trt_version='"banana"',
    ),
    refused_run(
        "config exclude_nodes not a regex, before export",
        "bad --exclude-nodes pattern",
        build__precisions='["fp32", "int8"]',
        calibration__exclude_nodes='["("]',
    ),
    refused_run(
        "config build threads below 1 with profile off",
        "build.threads must be >= 1",
        build__threads="-3",
    ),
    refused_run("config compare data empty", "config [compare] data is empty", compare__data='""'),
    refused_run(
        "config calibration data empty",
        "config [calibration] data is empty",
        build__precisions='["fp32", "int8"]',
        calibration__data='""',
    ),
    refused_run("config compare seed -1", "config compare.seed must be >= 0, got -1", compare__seed="-1"),
    refused_run(
        "config calibration data random:-2",
        "config [calibration] data: bad data spec 'random:-2': the seed must be >= 0",
        calibration__data='"random:-2"',
    ),
    refused_run(
        "config compare data random:5 with seed 7",
        "config [compare] data random:5 and [compare] seed 7 name two seeds",
        compare__data='"random:5"',
        compare__seed="7",
    ),
    refused_run(
        "config bundle output is the workdir",
        "holds the workdir",
        bundle__enabled="true",
        bundle__output='"work"',
    ),
    refused_run(  # was refused by the bundle stage, after every build, compare and profile
        "config bundle output in the stage cache",
        "lies in the stage cache",
        bundle__enabled="true",
        bundle__output='"work/.edgedeploy-cache/b"',
    ),
    refused_run(
        "config TensorRT options named by their keys",
        "[build] opt_level: TensorRT options",
        build__backend='"onnxruntime"',
        build__opt_level="3",
    ),
    C(
        "config hardware_compat at its default on onnxruntime",
        *RUN,
        config=config_with(build__backend='"onnxruntime"', build__hardware_compat='"none"'),
        code=0,
    ),
    C("calibrate -o an existing file", "calibrate", "model.onnx", "-o", "afile", phrase="not a folder"),
    C("targets list --json under a file", "targets", "--json", "afile/t.json", phrase="is a file"),
    C(
        "targets show --json naming a folder",
        "targets",
        "show",
        "jetson-nano",
        "--json",
        "adir",
        phrase="folder",
    ),
    C("doctor --json under a file", "doctor", "--json", "afile/d.json", phrase="is a file"),
    C(
        "run --json naming the config",
        *RUN,
        "--json",
        "edgedeploy.toml",
        config=BASE_CONFIG,
        phrase="is an input",
        absent=("work",),
    ),
    C(
        "run --json under a file",
        *RUN,
        "--json",
        "afile/r.json",
        config=BASE_CONFIG,
        phrase="is a file",
        absent=("work",),
    ),
    C(
        "analyze --json under a file",
        "analyze",
        "model.onnx",
        "--data",
        "data.npz",
        "--json",
        "afile/a.json",
        phrase="is a file",
    ),
    C(
        "calibrate --json naming the data",
        "calibrate",
        "model.onnx",
        "-o",
        "out",
        "--data",
        "data.npz",
        "--json",
        "data.npz",
        phrase="is an input",
        absent=("out",),
    ),
    C(
        "export --json under a file",
        "export",
        "misfit.py:build:example_inputs",
        "-o",
        "m3.onnx",
        "--json",
        "afile/e.json",
        phrase="is a file",
        absent=("m3.onnx",),
    ),
    C(
        "bundle inspect --json naming a folder",
        "bundle",
        "inspect",
        "adir",
        "--json",
        "site",
        phrase="folder",
    ),
    C("demo --out an existing file", "demo", "--out", "afile", phrase="not a folder"),
    C("demo -o (as every command) an existing file", "demo", "-o", "afile", phrase="not a folder"),
    # numbers that would hang or mean nothing
    C("profile --duration nan", "profile", "model.onnx", "--duration", "nan", phrase="duration"),
    C("profile --duration inf", "profile", "model.onnx", "--duration", "inf", phrase="duration"),
    C("profile --duration -1", "profile", "model.onnx", "--duration", "-1", phrase="duration"),
    C("profile --iterations 0", "profile", "model.onnx", "--iterations", "0", phrase="iterations"),
    C("compare --threads 0", "compare", "model.onnx", "model.onnx", "--threads", "0", phrase="--threads"),
    C("analyze --top 0", "analyze", "model.onnx", "--data", "data.npz", "--top", "0", phrase="--top"),
    C(
        "compare --layers-shown -1",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--per-layer",
        "--layers-shown",
        "-1",
        phrase="--layers-shown",
    ),
    C("bundle fp16 as the reference", "bundle", "model.fp16.onnx", "-o", "bb", phrase="fp32 reference"),
    C(
        "bundle the same precision twice",
        "bundle",
        "model.onnx",
        "model.fp16.onnx",
        "model.fp16.onnx",
        "-o",
        "bb",
        phrase="one artifact per precision",
        absent=("bb",),
    ),
    C(
        "build int8 with fp16 options",
        "build",
        "model.onnx",
        "-o",
        "out",
        "--precision",
        "int8",
        "--fp32-ops",
        "Gemm",
        phrase="--fp32-ops: not used by an int8 build",
        absent=("out",),
    ),
    C(
        "build fp32 with data options",
        "build",
        "model.onnx",
        "-o",
        "out",
        "--precision",
        "fp32",
        "--calib-data",
        "data.npz",
        "--input",
        "input:1x1x8x8",
        phrase="--calib-data: not used by an fp32 build",
        absent=("out",),
    ),
    line(
        "build fp32 with calibration options typed at their defaults",
        "build model.onnx -o out --precision fp32 --calib-samples 512 --calib-algorithm auto",
        "--calib-samples, --calib-algorithm: not used by an fp32 build",
        absent=("out",),
    ),
    line("compare random:5 --seed 7", "compare model.onnx model.onnx --data random:5 --seed 7", "two seeds"),
    line("analyze random:5 --seed 7", "analyze model.onnx --data random:5 --seed 7", "two seeds"),
    # an empty data spec (an unset $CALIB): Path('') is the current folder, whose files were read
    C("compare --data ''", "compare", "model.onnx", "model.onnx", "--data", "", phrase="--data is empty"),
    C("analyze --data=", "analyze", "model.onnx", "--data=", phrase="--data is empty"),
    C(
        "calibrate --data ''",
        "calibrate",
        "model.onnx",
        "-o",
        "out",
        "--data",
        " ",
        phrase="--data is empty",
        absent=("out",),
    ),
    C(
        "build int8 --calib-data ''",
        "build",
        "model.onnx",
        "-o",
        "out",
        "--precision",
        "int8",
        "--calib-data",
        "",
        phrase="--calib-data is empty",
        absent=("out",),
    ),
    C(
        "bundle --data ''",
        "bundle",
        "model.onnx",
        "-o",
        "out",
        "--data",
        "",
        phrase="--data is empty",
        absent=("out", "out.tar.gz"),
    ),
    # a negative seed: numpy's generator failed at the first batch with its traceback, after the work
    line("compare --seed -1", "compare model.onnx model.onnx --seed -1", "invalid value for '--seed'"),
    line("compare random:-5", "compare model.onnx model.onnx --data random:-5", "the seed must be >= 0"),
    line("analyze random:seed=-3", "analyze model.onnx --data random:seed=-3", "the seed must be >= 0"),
    line(
        "calibrate --seed -1",
        "calibrate model.onnx -o out --data random --seed -1",
        "invalid value for '--seed'",
        absent=("out",),
    ),
    line(
        "build int8 --calib-data random:-1",
        "build model.onnx -o out --precision int8 --calib-data random:-1",
        "--calib-data: bad data spec 'random:-1': the seed must be >= 0",
        absent=("out",),
    ),
    line(
        "bundle --data random:-1",
        "bundle model.onnx -o out --data random:-1",
        "--data: bad data spec 'random:-1'",
        absent=("out", "out.tar.gz"),
    ),
    C(
        "targets --json before show",
        "targets",
        "--json",
        "t.json",
        "show",
        "jetson-orin-nano",
        phrase="put it after",
        absent=("t.json",),
    ),
    C("profile --input naming none", "profile", "model.onnx", "--input", "x:1x8x8", phrase="no input 'x'"),
    C(
        "compare data whose inputs disagree on a named dim",
        "compare",
        "two.onnx",
        "two.onnx",
        "--data",
        "two_rows_differ.npz",
        phrase="share the dim 'batch'",
    ),
    C(
        "build fp16 --fp32-nodes naming no node, with data to analyse",
        "build",
        "model.onnx",
        "-o",
        "out",
        "--precision",
        "fp16",
        "--calib-data",
        "data.npz",
        "--fp32-nodes",
        "nosuch",
        phrase="no node named nosuch",
        absent=("out",),
    ),
    C(
        "calibrate --trt-version older than 8",
        "calibrate",
        "model.onnx",
        "--data",
        "data.npz",
        "--target",
        "jetson-orin-nx",
        "--trt-version",
        "7.1.3",
        "-o",
        "out",
        phrase="older than any edgedeploy writes",
        absent=("out",),
    ),
    C("profile --warmup -1", "profile", "model.onnx", "--warmup", "-1", phrase="warm"),
    C("profile --warmup-ms nan", "profile", "model.onnx", "--warmup-ms", "nan", phrase="warm"),
    C("profile --batch-sizes 0", "profile", "model.onnx", "--batch-sizes", "0", phrase="batch"),
    C("profile --batch-sizes a", "profile", "model.onnx", "--batch-sizes", "a", phrase="batch"),
    C("profile --cuda-graph on an ONNX model", "profile", "model.onnx", "--cuda-graph", phrase="engine"),
    C("compare --samples 0", "compare", "model.onnx", "model.fp16.onnx", "--samples", "0", phrase="samples"),
    C(
        "analyze --samples 0",
        "analyze",
        "model.onnx",
        "--data",
        "data.npz",
        "--samples",
        "0",
        phrase="samples",
    ),
    C(
        "compare --batch-size 0",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--batch-size",
        "0",
        phrase="batch",
    ),
    C(
        "compare --min-cosine nan",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--min-cosine",
        "nan",
        phrase="cosine",
    ),
    C("compare --min-top1 -1", "compare", "model.onnx", "model.fp16.onnx", "--min-top1", "-1", phrase="top1"),
    C(
        "budget cosine>=2",
        "build",
        "model.onnx",
        "--precision",
        "fp16",
        "--accuracy-budget",
        "cosine>=2",
        "-o",
        "out",
        phrase="can never be met",
        absent=("out",),
    ),
    C(
        "budget top1>=-1",
        "build",
        "model.onnx",
        "--precision",
        "fp16",
        "--accuracy-budget",
        "top1>=-1",
        "-o",
        "out",
        phrase="met by any model",
        absent=("out",),
    ),
    C(
        "budget cosine>=1e999",
        "build",
        "model.onnx",
        "--precision",
        "fp16",
        "--accuracy-budget",
        "cosine>=1e999",
        "-o",
        "out",
        phrase="finite",
        absent=("out",),
    ),
    C(
        "budget unknown metric",
        "build",
        "model.onnx",
        "--precision",
        "fp16",
        "--accuracy-budget",
        "psnr>=3",
        "-o",
        "out",
        phrase="unknown metric",
        absent=("out",),
    ),
    C(
        "budget on fp32",
        "build",
        "model.onnx",
        "--precision",
        "fp32",
        "--accuracy-budget",
        "cosine>=0.99",
        "-o",
        "out",
        phrase="fp32",
        absent=("out",),
    ),
    # TensorRT-only options on the ONNX Runtime backend
    C(
        "--memory-pool on the onnxruntime backend",
        "build",
        "model.onnx",
        "--backend",
        "onnxruntime",
        "--memory-pool",
        "workspace=5",
        "-o",
        "out",
        phrase="TensorRT options",
        absent=("out",),
    ),
    C(
        "--opt-level 99",
        "build",
        "model.onnx",
        "--opt-level",
        "99",
        "-o",
        "out",
        phrase="0..5",
        absent=("out",),
    ),
    C(
        "--profile naming no input",
        "build",
        "model.onnx",
        "--profile",
        "nosuch:1x1x8x8,2x1x8x8,4x1x8x8",
        "-o",
        "out",
        phrase="nosuch",
        absent=("out",),
    ),
    C(
        "--workspace-mb on onnxruntime",
        "build",
        "model.onnx",
        "--backend",
        "onnxruntime",
        "--workspace-mb",
        "64",
        "-o",
        "out",
        phrase="TensorRT options",
        absent=("out",),
    ),
    # data that is empty, mis-named, NaN, out of range, or not data
    C(
        "compare on 0 samples",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--data",
        "empty.npz",
        phrase="0 samples",
    ),
    C("analyze on 0 samples", "analyze", "model.onnx", "--data", "empty.npz", phrase="0 samples"),
    C(
        "compare on mis-named data",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--data",
        "wrongname.npz",
        phrase="unknown input",
    ),
    C("compare on NaN data", "compare", "model.onnx", "model.fp16.onnx", "--data", "nan.npz", phrase="NaN"),
    C(
        "compare on a garbage npz",
        "compare",
        "model.onnx",
        "model.fp16.onnx",
        "--data",
        "garbage.npz",
        phrase="garbage.npz is not a NumPy file",  # was numpy's "allow_pickle=False", not the problem
    ),
    # a bundle -o named as its archive made a folder bb.tar.gz and an archive bb.tar.gz.tar.gz
    line("bundle -o an archive name", "bundle model.onnx -o bb.tar.gz", "give -o bb", absent=("bb.tar.gz",)),
    # --json named like an output: refused before the calibration, not after it wrote its files
    line(
        "calibrate --json named like its report",
        "calibrate model.onnx --data data.npz -o q --json q/model.calib.json",
        "are this command's outputs",
        absent=("q",),
    ),
    line(
        "build --json named like its model",
        "build model.onnx --precision fp16 -o q --json q/model.fp16.onnx",
        "are this command's outputs",
        absent=("q",),
    ),
    # fp8 named an sm_89 target, which then refused it as not built by edgedeploy
    line("build fp8", "build model.onnx --precision fp8 --target h100 -o out", "not built by edgedeploy"),
    # a workdir that is a file was the OS error "File exists" (or "Not a directory" below it)
    refused_run("config workdir a file", "workdir: ", workdir='"data.npz"'),
    refused_run("config workdir in a file", "lies in", workdir='"data.npz/sub"'),
    C(
        "compare out-of-range token ids",
        "compare",
        "tokens.onnx",
        "tokens.onnx",
        "--data",
        "tokens_bad.npz",
        phrase="ONNX Runtime",
    ),
    C(
        "calibrate with a malformed --preprocess",
        "calibrate",
        "model.onnx",
        "-o",
        "out",
        "--preprocess",
        "bad_preprocess.json",
        "--data",
        "data.npz",
        phrase="preprocessing file",
        absent=("out",),
    ),
    C(
        "calibrate with a loader calling sys.exit(0)",
        "calibrate",
        "model.onnx",
        "-o",
        "out",
        "--data",
        "loader_exit.py",
        phrase="exit",
        absent=("out/model.int8.onnx",),
    ),
    C(
        "bundle on 0 samples",
        "bundle",
        "model.onnx",
        "model.fp16.onnx",
        "--data",
        "empty.npz",
        "-o",
        "b",
        phrase="0 samples",
        absent=("b",),
    ),
    # models that cannot serve as they are
    C(
        "build int8 of a model with no inputs",
        "build",
        "noinput.onnx",
        "--precision",
        "int8",
        "-o",
        "out",
        phrase="no inputs",
        absent=("out",),
    ),
    C("compare a model with no inputs", "compare", "noinput.onnx", "noinput.onnx", phrase="no inputs"),
    C(
        "bundle a model with no inputs",
        "bundle",
        "noinput.onnx",
        "-o",
        "b",
        phrase="no inputs",
        absent=("b",),
    ),
    C("compare a model with huge declared dims", "compare", "huge.onnx", "huge.onnx", phrase="memory"),
    C(
        "export a factory calling sys.exit(0)",
        "export",
        "factory_exit.py:build:example_inputs",
        "-o",
        "f.onnx",
        phrase="exit",
        absent=("f.onnx",),
    ),
    C(
        "export example inputs that do not fit",
        "export",
        "misfit.py:build:example_inputs",
        "-o",
        "m2.onnx",
        phrase="example inputs",
        absent=("m2.onnx",),
    ),
    # the config, validated whole before any work
    C(
        "config batch_sizes of the wrong type",
        *RUN,
        config=config_with(profile__batch_sizes='["a", 0]'),
        phrase="batch_sizes",
        absent=("work",),
    ),
    C(
        "config profiles of the wrong type",
        *RUN,
        config=config_with(build__profiles="[1, 2]"),
        phrase="profiles",
        absent=("work",),
    ),
    C(
        "config duration_s = -3",
        *RUN,
        config=config_with(profile__enabled="true", profile__duration_s="-3"),
        phrase="duration",
        absent=("work",),
    ),
    C(
        "config iterations = -3",
        *RUN,
        config=config_with(profile__enabled="true", profile__iterations="-3"),
        phrase="iterations",
        absent=("work",),
    ),
    C(
        "config duplicate precisions",
        *RUN,
        config=config_with(build__precisions='["fp32", "fp32"]'),
        phrase="more than once",
        absent=("work",),
    ),
    C(
        "config samples = 0",
        *RUN,
        config=config_with(compare__samples="0"),
        phrase="samples",
        absent=("work",),
    ),
    C(
        "config batch_size = 0",
        *RUN,
        config=config_with(compare__batch_size="0"),
        phrase="batch_size",
        absent=("work",),
    ),
    C(
        "config model.name climbing out",
        *RUN,
        config=config_with(model__name='"../../x"'),
        phrase="plain file name",
        absent=("work",),
    ),
    C(
        "config model.name absolute",
        *RUN,
        config=config_with(model__name='"/tmp/x"'),
        phrase="plain file name",
        absent=("work",),
    ),
    C(
        "config unknown key",
        *RUN,
        config=config_with(build__precision='["fp16"]'),
        phrase="did you mean",
        absent=("work",),
    ),
    C(
        "config bundle.output = '.'",
        *RUN,
        config=config_with(bundle__enabled="true", bundle__output='"."'),
        phrase="not a bundle",
        absent=("work",),
    ),
    C(
        "config empty precisions",
        *RUN,
        config=config_with(build__precisions="[]"),
        phrase="precisions",
        absent=("work",),
    ),
    C("config workdir empty", *RUN, config=config_with(workdir='""'), phrase="workdir", absent=("work",)),
    C(
        "config opt_level 99",
        *RUN,
        config=config_with(build__opt_level="99"),
        phrase="0..5",
        absent=("work",),
    ),
    C(
        "config memory pools on onnxruntime",
        *RUN,
        config=config_with(build__backend='"onnxruntime"', build__memory_pools_mb="{bogus = 5}"),
        phrase="memory pool",
        absent=("work",),
    ),
    C(
        "config min_cosine = 2",
        *RUN,
        config=config_with(compare__min_cosine="2.0"),
        phrase="min_cosine",
        absent=("work",),
    ),
    C(
        "config min_top1 = -1",
        *RUN,
        config=config_with(compare__min_top1="-1.0"),
        phrase="min_top1",
        absent=("work",),
    ),
    C(
        "config fp32_nodes of the wrong type",
        *RUN,
        config=config_with(build__fp32_nodes="[1]"),
        phrase="fp32_nodes",
        absent=("work",),
    ),
    # wrong verdicts: a model that runs but is broken fails its gate (exit 1), never passes
    C(
        "compare a NaN-weight candidate",
        "compare",
        "model.onnx",
        "nan.fp16.onnx",
        "--data",
        "data.npz",
        code=1,
        phrase="NaN",
    ),
    C(
        "bundle a NaN-weight candidate",
        "bundle",
        "model.onnx",
        "nan.fp16.onnx",
        "--data",
        "data.npz",
        "-o",
        "b",
        code=1,
        phrase="fp16",
        keep=("model.onnx", "nan.fp16.onnx", "data.npz"),
    ),
    # targets and bundles
    C("targets show in capitals", "targets", "show", "JETSON-ORIN-NANO", code=0),
    C("targets show unknown", "targets", "show", "jetson-nanoo", phrase="unknown target"),
    C("bundle verify missing", "bundle", "verify", "missing", phrase="not found"),
    C("bundle verify a zip named .tar.gz", "bundle", "verify", "garbage.tar.gz", phrase="not a readable tar"),
    C("bundle verify a plain file", "bundle", "verify", "afile", phrase="is not a bundle"),
    C("bundle verify a folder that is not a bundle", "bundle", "verify", "adir", phrase="not a bundle"),
    C("bundle inspect a folder that is not a bundle", "bundle", "inspect", "adir", phrase="not a bundle"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, project_src: Path, tmp_path: Path) -> None:
    proj = tmp_path / "p"
    shutil.copytree(project_src, proj)
    if case.config is not None:
        (proj / "edgedeploy.toml").write_text(case.config)
    cwd = proj / "site" if "web manifest" in case.id else proj
    keep = [(cwd / k) for k in case.keep] if "web manifest" in case.id else [(proj / k) for k in case.keep]
    before = digest(keep)
    result = cli(*case.args, cwd=cwd)
    assert "Traceback" not in result.text, result.text
    if case.code == 0:
        assert result.code == 0, result.text
    elif case.code == 1:  # a failed gate: the last line says which, after what was written
        assert result.code == 1, result.text
        assert case.phrase in result.stderr.strip().splitlines()[-1], result.stderr
    else:
        one_line_error(result, case.code, case.phrase)
        after = digest(keep)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, changed
    for rel in case.absent:
        assert not (proj / rel).exists(), rel
    leftovers = [p.name for p in proj.iterdir() if p.name.startswith(".") and p.name != ".edgedeploy-cache"]
    assert leftovers == []


# ---------------------------------------------------------------- signals (the only subprocess tests here)


def _start(args: list[str], cwd: Path, tmpdir: Path) -> subprocess.Popen[str]:
    import os
    import signal

    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen(
        [sys.executable, "-m", "edgedeploy", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a CI job started in the background inherits an ignored SIGINT; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for(predicate: object, timeout: float = 60) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the point to interrupt")


def _write_held_net(root: Path) -> None:
    """net.py in ``root``: a PyTorch source whose build() says it started, then waits while ``hold``
    exists, so that a test can interrupt an export stage there."""
    (root / "net.py").write_text(
        "import pathlib\nimport time\n\nimport torch\n\nHERE = pathlib.Path(__file__).parent\n\n\n"
        "def build():\n"
        "    (HERE / 'started').touch()\n"
        "    while (HERE / 'hold').exists():  # the export waits here for the Ctrl-C\n"
        "        time.sleep(0.05)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n\n\n"
        "def example_inputs():\n"
        "    return (torch.zeros(1, 1, 8, 8),)\n"
    )


def _interrupted_in_export(args: list[str], root: Path, tmp_path: Path) -> None:
    """Runs the command ``args`` in ``root`` (with :func:`_write_held_net`'s net.py as its source),
    sends it a Ctrl-C while its export waits, checks it ended 130, and lets the next export go on."""
    import signal

    (root / "hold").touch()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    proc = _start(args, root, tmpdir)
    try:
        _wait_for(lambda: (root / "started").exists() or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    (root / "hold").unlink()


def _temp_leftovers(project: Path, tmpdir: Path) -> list[str]:
    """Hidden temporary files/folders (``.NAME.PID.xxx``) in the project, edgedeploy's in TMPDIR."""
    hidden = [
        str(p.relative_to(project))
        for p in project.rglob(".*")
        if p.name != ".edgedeploy-cache" and ".edgedeploy-cache/" not in str(p.relative_to(project)) + "/"
    ]
    return hidden + [p.name for p in tmpdir.iterdir() if "edgedeploy" in p.name]


def test_sigterm_during_run_unwinds_exits_143_and_leaves_no_temp_files(tiny: Tiny, tmp_path: Path) -> None:
    import signal

    config = write_config(tiny, profile=True)
    config.write_text(
        config.read_text().replace("iterations = 5", "").replace("duration_s = 0", "duration_s = 60")
    )
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _start(["run", str(config)], tiny.root, tmpdir)
    cache = tiny.root / "work" / ".edgedeploy-cache"
    try:
        _wait_for(lambda: (cache / "compare-fp32.json").exists() or proc.poll() is not None)
        import time

        time.sleep(1.0)  # inside the profile's timed loop
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "terminated (SIGTERM)" in lines[-1] and "Traceback" not in err
    assert _temp_leftovers(tiny.root, tmpdir) == []
    config.write_text(config.read_text().replace("duration_s = 60", "duration_s = 0"))
    again = cli("run", config)  # resumes: the finished stages are not redone
    assert "compare-fp32: up to date" in again.stderr


def test_an_upper_case_onnx_suffix_is_an_onnx_model_to_build_compare_profile_and_bundle(
    tiny: Tiny, tmp_path: Path
) -> None:
    """A model source took M.ONNX (9abc9b2), but compare, profile and bundle told an ONNX artifact
    from an engine by its suffix as written: m.fp16.ONNX was an engine (pycuda's import error as a
    traceback where TensorRT is missing), --per-layer refused it, and build named its artifacts
    m.ONNX.fp16.onnx, beside which bundle found no calibration cache. Each now reads it as ONNX."""
    up = tmp_path / "up"
    up.mkdir()
    shutil.copy(tiny.model, up / "m.ONNX")
    shutil.copy(tiny.fp16, up / "m.fp16.ONNX")
    for precision in ("fp16", "int8"):
        built = cli(
            "build", up / "m.ONNX", "--precision", precision, "--target", "jetson-orin-nano",
            "--calib-data", tiny.data, "-o", tmp_path / "built",
        )  # fmt: skip
        assert built.code == 0, built.text
    assert {"m.fp16.onnx", "m.int8.onnx", "m.calib.cache"} <= {p.name for p in (tmp_path / "built").iterdir()}
    shutil.copy(tmp_path / "built" / "m.int8.onnx", up / "m.int8.ONNX")
    shutil.copy(tmp_path / "built" / "m.calib.cache", up / "m.calib.cache")

    compared = cli(
        "compare", up / "m.ONNX", up / "m.fp16.ONNX", "--data", tiny.data, "--json", tmp_path / "c.json"
    )
    assert compared.code == 0, compared.text
    mode = json.loads((tmp_path / "c.json").read_text())["mode"]
    assert mode.startswith("fp16 (CPU emulation"), mode  # an fp16 ONNX, emulated as compare does
    per_layer = cli("compare", up / "m.ONNX", up / "m.fp16.ONNX", "--data", tiny.data, "--per-layer")
    assert per_layer.code == 0, per_layer.text

    profiled = cli("profile", up / "m.ONNX", "--iterations", "3", "--json", tmp_path / "p.json")
    assert profiled.code == 0, profiled.text
    assert json.loads((tmp_path / "p.json").read_text())["backend"] == "onnxruntime"

    bundled = cli(
        "bundle", up / "m.ONNX", up / "m.fp16.ONNX", up / "m.int8.ONNX", "--target", "jetson-orin-nano",
        "--data", tiny.data, "-o", tmp_path / "b",
    )  # fmt: skip
    assert bundled.code in (0, 1), bundled.text  # (1: a gate failed on the tiny model's random data)
    artifacts = json.loads((tmp_path / "b" / "manifest.json").read_text())["artifacts"]
    assert [(a["precision"], a["backend"]) for a in artifacts] == [
        ("fp32", "onnxruntime"), ("fp16", "onnxruntime"), ("int8", "onnxruntime"),
    ]  # fmt: skip
    assert artifacts[2]["calibration_cache"] == "models/m.calib.cache" and artifacts[2]["qdq"] is True


def _held_net_config(tiny: Tiny) -> Path:
    """The tiny project's run config on the held net (its fp32 only), whose export a test interrupts."""
    _write_held_net(tiny.root)
    config = write_config(tiny)
    config.write_text(
        config.read_text()
        .replace('source = "model.onnx"', 'source = "net.py:build:example_inputs"')
        .replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]')
    )
    return config


def test_a_run_interrupted_in_its_first_stage_is_reported_as_such(tiny: Tiny, tmp_path: Path) -> None:
    """A run stopped by Ctrl-C before any stage finished left an empty workdir, which `report`
    called "not an `edgedeploy run` workdir"; it now says the run stopped before any stage finished
    and to rerun it with the same workdir, and that rerun runs to its end."""
    config = _held_net_config(tiny)
    _interrupted_in_export(["run", str(config)], tiny.root, tmp_path)
    work = tiny.root / "work"
    line = one_line_error(cli("report", work, "-o", tmp_path / "r"), 2, "stopped before any stage finished")
    assert "not an `edgedeploy run` workdir" not in line and "rerun `edgedeploy run CONFIG`" in line, line
    assert not (tmp_path / "r").exists()
    assert cli("run", config).code == 0  # the rerun the line advises, with the same workdir
    assert cli("report", work, "-o", tmp_path / "r").code == 0


def test_a_matrix_interrupted_before_any_of_its_work_finished_is_reported_as_such(
    tiny: Tiny, tmp_path: Path
) -> None:
    """A matrix stopped by Ctrl-C in its first export left an empty workdir, which `report` called
    "no run.json (not an `edgedeploy run` workdir, ...; rerun edgedeploy run)": no word of matrix.
    It now says it is a matrix workdir whose matrix stopped before any of its work finished, and to
    rerun `edgedeploy matrix CONFIG` with it; once rerun, report gives the matrix's usual line."""
    _write_held_net(tiny.root)
    config = tiny.root / "farm.toml"
    config.write_text(
        'workdir = "farm"\n[profile]\nenabled = false\n[bundle]\nenabled = false\n[matrix]\n'
        'targets = ["x86-64-cpu"]\nprecisions = ["fp32"]\n[[matrix.models]]\n'
        'source = "net.py:build:example_inputs"\nname = "net"\n'
    )
    _interrupted_in_export(["matrix", str(config), "--jobs", "1"], tiny.root, tmp_path)
    farm = tiny.root / "farm"
    line = one_line_error(cli("report", farm, "-o", tmp_path / "r"), 2, "is an `edgedeploy matrix` workdir")
    assert "stopped before any of its work finished" in line, line
    assert "rerun `edgedeploy matrix CONFIG`" in line and "edgedeploy run" not in line, line
    assert not (tmp_path / "r").exists()
    assert cli("matrix", config, "--jobs", "1").code == 0  # the rerun the line advises, same workdir
    line = one_line_error(cli("report", farm, "-o", tmp_path / "r"), 2, "is an `edgedeploy matrix` workdir")
    assert "stopped before" not in line and "report one (model, target)" in line, line


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])
def test_ctrl_c_during_compare_exits_130_cleanly(tiny: Tiny, tmp_path: Path, delay: float) -> None:
    """Polygraphy imports torch lazily mid-compare; torch's import cut by Ctrl-C crashed or was ignored."""
    import signal
    import time

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    # 20000 samples: several seconds of comparing after the 1.5 s wait on a fast, idle machine
    # (4000 were sometimes all compared before the signal came, and the run exited 0)
    args = ["compare", "model.onnx", "model.fp16.onnx", "--samples", "20000", "--batch-size", "1"]
    proc = _start(args, tiny.root, tmpdir)
    try:  # from the moment compare starts (its scratch folder appears), torch's import comes next
        _wait_for(lambda: any(tmpdir.glob("edgedeploy-compare-*")) or proc.poll() is not None)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)  # not a segfault (-11), not ignored (0)
    assert "interrupted" in err and "Traceback" not in err
    assert _temp_leftovers(tiny.root, tmpdir) == []


def test_ctrl_c_inside_polygraphys_bare_excepts_still_stops_the_comparison(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polygraphy asks 'is numpy importable?' behind a bare except on every array; a Ctrl-C landing
    there was swallowed, the ndarray was "unsupported" and compare exited 0 (seen in CI)."""
    import os
    import signal
    import types

    from polygraphy.util import array

    from edgedeploy.stages.compare.outputs import run_pair

    sent: list[int] = []
    infers: list[int] = []

    class Numpy(types.SimpleNamespace):
        def __getattr__(self, name: str) -> object:
            return getattr(np, name)

        def is_installed(self) -> bool:
            return True

        def is_importable(self) -> bool:
            try:
                if not sent:
                    sent.append(1)
                    os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C lands inside Polygraphy's try
                return True
            except:  # noqa: E722  (Polygraphy's own clause: docs/design.md, "Principles" 7, Signals)
                return False

    monkeypatch.setattr(array, "np", Numpy())
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    from polygraphy.backend.onnxrt import OnnxrtRunner

    real_infer = OnnxrtRunner.infer

    def counted(self: OnnxrtRunner, *args: object, **kwargs: object) -> object:
        infers.append(1)
        return real_infer(self, *args, **kwargs)

    monkeypatch.setattr(OnnxrtRunner, "infer", counted)
    with pytest.raises(KeyboardInterrupt):
        run_pair(tiny.model, tiny.fp16, [{"input": x}] * 50)
    assert sent and len(infers) < 50  # stopped at the next batch, not after the whole run
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_that_a_library_turned_into_its_own_error_still_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ONNX Runtime's extension, cut by Ctrl-C while it initializes (its lazy import mid-compare),
    raises ImportError from the KeyboardInterrupt: seen in a fresh clone's test run, exit 1 with a
    traceback."""
    import edgedeploy.cli as cli_module

    def run(args: list[str]) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt

    monkeypatch.setattr(cli_module, "handle_signals", lambda: None)
    monkeypatch.setattr(cli_module, "sweep_scratch", lambda: None)
    monkeypatch.setattr(cli_module, "_run_click", run)
    with pytest.raises(SystemExit) as stop:
        cli_module.main(["targets"])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and "initialization" not in err


def test_deferred_interrupts_hold_ctrl_c_until_the_block_ends() -> None:
    import os
    import signal

    from edgedeploy.interrupts import deferred

    done = []
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("finished the block")
    assert done == ["finished the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------- the machine's failures, at the one place


def test_a_full_disk_is_one_line_naming_the_output(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    def full(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device", str(kwargs.get("dir", "")))

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with unchanged(tiny.root):
        result = cli("compare", "model.onnx", "model.fp16.onnx", "--json", "r.json", cwd=tiny.root)
    one_line_error(result, 2, "r.json", "No space left on device")


def test_a_disk_that_fills_while_writing_names_the_output(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write() that fails with ENOSPC carries no file name: the line names the output the user
    asked for (not our temporary file), for a file and for a file inside a folder written whole."""
    import errno

    from edgedeploy.fileio import atomic_dir

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with unchanged(tiny.root):
        result = cli("compare", "model.onnx", "model.fp16.onnx", "--json", "r.json", cwd=tiny.root)
    one_line_error(result, 2, "r.json: No space left on device")

    def full_in(path: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with pytest.raises(OSError) as caught, atomic_dir(tiny.root / "bundle") as tmp:
        full_in(str(tmp / "engines" / "a.onnx"))
    assert caught.value.filename == str(tiny.root / "bundle" / "engines" / "a.onnx")
    assert not (tiny.root / "bundle").exists()


@pytest.mark.parametrize("fails", ["report.html", "report.md"])
def test_a_report_the_disk_could_not_hold_leaves_no_output_folder(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """``report ... -o r`` on a full disk said so in one line but left the folder r it had made
    (empty, or holding report.html alone when report.md was the one that did not fit), where build,
    calibrate and bundle leave nothing."""
    import errno

    compared = tiny.root / "c.json"
    assert cli("compare", tiny.model, tiny.fp16, "--data", tiny.data, "--json", compared).code == 0
    write = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name.startswith(f".{fails}."):  # the temporary beside it (calibration/atomic.temp_prefix)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with unchanged(tiny.root):
        result = cli("report", compared, "-o", tiny.root / "r" / "deeper")
    one_line_error(result, 2, f"{fails}: No space left on device")
    kept = tiny.root / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("mine")
    one_line_error(cli("report", compared, "-o", kept), 2, "No space left on device")
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]


def test_a_read_only_output_folder_is_refused_before_any_work(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    real_access = os.access
    ro = tiny.root / "ro"
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    result = cli("build", "model.onnx", "-o", "ro/out", cwd=tiny.root)
    one_line_error(result, 2, "cannot write in", "read-only")
    assert list(ro.iterdir()) == []


def test_memory_and_onnxruntime_failures_map_to_one_line_and_bugs_keep_their_traceback() -> None:
    from edgedeploy.errors import user_failure

    assert (
        user_failure(MemoryError("Unable to allocate 224. GiB"))
        == "out of memory: Unable to allocate 224. GiB"
    )
    assert user_failure(IsADirectoryError(21, "Is a directory", "out.json")) == "out.json: Is a directory"
    assert user_failure(KeyError("x")) is None and user_failure(TypeError("bug")) is None


def test_sigterm_while_verifying_an_archive_removes_its_extraction(
    made_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tarfile
    import tempfile

    from edgedeploy.interrupts import Terminated

    archive = made_bundle.with_name("b.tar.gz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real = tarfile.TarFile.extractall

    def killed_midway(self: tarfile.TarFile, path: str = ".", *args: object, **kwargs: object) -> None:
        real(self, path, *args, **kwargs)  # type: ignore[arg-type]
        import signal

        import edgedeploy.interrupts as interrupts

        interrupts._received.append(signal.SIGTERM)
        raise Terminated()

    monkeypatch.setattr(tarfile.TarFile, "extractall", killed_midway)
    result = cli("bundle", "verify", archive)
    monkeypatch.setattr("edgedeploy.interrupts._received", [])
    assert result.code == 143, result.text
    assert "terminated (SIGTERM)" in result.stderr and "Traceback" not in result.text
    assert list(scratch.iterdir()) == []


def test_tensorrt_options_for_a_cpu_target_are_named_in_one_warning_that_says_they_do_not_apply(
    tiny: Tiny,
) -> None:
    """The CPU target's runtime is ONNX Runtime: nothing falls back, as the warning said it did."""
    args = ("--target", "x86-64-cpu", "--workspace-mb", "64", "--profile", "input:1x1x8x8,8x1x8x8,8x1x8x8")
    result = cli("build", "model.onnx", "--precision", "fp32", *args, "-o", "out", cwd=tiny.root)
    assert result.code == 0, result.text
    warnings = [ln for ln in result.stderr.splitlines() if "TensorRT options" in ln]
    assert warnings == [
        "warning: profiles, workspace_mb: TensorRT options, which do not apply to x86-64-cpu: "
        "a CPU target builds with ONNX Runtime"
    ], result.stderr


def test_a_gate_over_no_finite_values_fails() -> None:
    from edgedeploy.stages.compare import Gates
    from edgedeploy.stages.compare.outputs import output_metrics

    nothing = output_metrics(
        "y", [np.full((2, 3), np.nan, np.float32)], [np.zeros((2, 3), np.float32)], Gates()
    )
    assert not nothing.passed
    assert any("6 NaN/Inf value(s) unlike the reference's" in f for f in nothing.failures)


def test_onnxruntime_writes_nothing_outside_the_output_on_import_or_run(tmp_path: Path) -> None:
    """ONNX Runtime 1.32's Linux wheels, on import, write a ".ses" file into TMPDIR and a device id
    and an event database under ~/.cache/Microsoft, and queue usage telemetry to send; edgedeploy
    turns that off before anything imports onnxruntime. A CI variable turns it off by itself, so
    those are removed here: what a user's terminal has."""
    import os

    home, tmpdir, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for folder in (home, tmpdir, work):
        folder.mkdir()
    quiet = ("CI", "GITHUB_ACTIONS", "TF_BUILD", "JENKINS_URL")  # ONNX Runtime is quiet under CI
    quiet += ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED")
    env = {k: v for k, v in os.environ.items() if k not in quiet and not k.startswith("XDG_")}
    env.update(HOME=str(home), TMPDIR=str(tmpdir))
    code = (
        "import edgedeploy, onnxruntime as ort\n"
        "from onnx import TensorProto, helper\n"
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',\n"
        "    [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],\n"
        "    [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])\n"
        "ort.InferenceSession(helper.make_model(g).SerializeToString()).run(None, {'x': [1.0]})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()] == []


def test_onnxruntime_build_reuses_its_output_only_with_the_contents_it_wrote(
    tiny: Tiny, tmp_path: Path
) -> None:
    """A .ort.onnx replaced, truncated or flipped since its build is built again, not reused."""
    from edgedeploy.backends.base import BuildOptions
    from edgedeploy.backends.onnxruntime import OnnxRuntimeBackend
    from edgedeploy.targets import load_target

    backend, opts = OnnxRuntimeBackend(), BuildOptions(precision="fp32", target=load_target("x86-64-cpu"))
    first = backend.build(tiny.model, opts, tmp_path)
    good = first.artifact.read_bytes()
    assert backend.build(tiny.model, opts, tmp_path).skipped
    for bad in (tiny.fp16.read_bytes(), good[:100], good[:-4] + b"\xff" * 4):
        first.artifact.write_bytes(bad)
        again = backend.build(tiny.model, opts, tmp_path)
        assert not again.skipped and first.artifact.read_bytes() == good


def test_a_new_bundle_primary_redoes_the_runs_report_too(tiny: Tiny) -> None:
    """[bundle] primary redid the bundle only: the run's report.md went on recommending the old
    primary precision, which the bundle's manifest and report no longer said."""
    config = write_config(tiny)
    assert cli("run", config).code == 0
    config.write_text(config.read_text().replace("[bundle]\n", '[bundle]\nprimary = "fp32"\n'))
    again = cli("run", config)
    assert again.code == 0, again.text
    assert "report: up to date" not in again.text
    assert "recommended precision: **fp32**" in (tiny.root / "work" / "report.md").read_text()


def test_a_timing_cache_in_a_read_only_folder_is_refused_before_any_work(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timing cache in a read-only folder failed the build late ("rotc/t.cache.lock: Permission
    denied", exit 2), after the fp16 conversion and range analysis had written -o: the cache is
    rewritten beside itself, so its folder is checked as -o's is, before any work."""
    import os

    real_access = os.access
    ro = tiny.root / "rotc"
    ro.mkdir()
    (ro / "t.cache").write_bytes(b"tactics")
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    result = cli("build", "model.onnx", "--timing-cache", "rotc/t.cache", "-o", "out", cwd=tiny.root)
    line = one_line_error(result, 2, "cannot write in", "read-only")
    tail = f"cannot write in {ro} (read-only or no permission)"
    assert line.endswith(f"--timing-cache rotc/t.cache: {tail}"), line
    assert not (tiny.root / "out").exists() and sorted(p.name for p in ro.iterdir()) == ["t.cache"]
    config = write_config(tiny).read_text().replace("[build]", '[build]\ntiming_cache = "rotc/t.cache"')
    (tiny.root / "edgedeploy.toml").write_text(config)
    with unchanged(tiny.root):
        ran = one_line_error(cli("run", tiny.root / "edgedeploy.toml"), 2)
    assert ran.endswith(f"config build.timing_cache: {ro / 't.cache'}: {tail}"), ran
    unreadable = tiny.root / "u.cache"  # build's option is refused by the CLI's own check of a path
    unreadable.write_bytes(b"tactics")
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.R_OK if Path(p) == unreadable else True)
    (tiny.root / "edgedeploy.toml").write_text(config.replace("rotc/t.cache", "u.cache"))
    with unchanged(tiny.root):
        ran = one_line_error(cli("run", tiny.root / "edgedeploy.toml"), 2)
    assert ran.endswith(f"config build.timing_cache: {unreadable}: cannot read it (no permission)"), ran


def test_a_timing_cache_naming_the_build_s_own_input_or_output_is_refused_before_any_work(
    tiny: Tiny,
) -> None:
    """``--timing-cache out/m.fp16.engine -o out`` exited 0 with the engine replacing the cache (the
    next build loaded an engine as its timing cache), and ``--timing-cache model.onnx`` was refused
    only after the whole build: both are refused before any work, as --json is."""
    model = tiny.root / "model.onnx"
    before = model.read_bytes()
    (tiny.root / "calib").mkdir()
    for cache, said in (
        ("out/model.fp16.engine", "model.* in out are this command's outputs"),
        ("out/model.fp16.ort.onnx", "model.* in out are this command's outputs"),
        ("model.onnx", "is an input of this command"),
        ("calib/t.cache", "a folder this command reads"),
    ):
        args = ["build", "model.onnx", "--timing-cache", cache, "-o", "out"]
        args += ["--calib-data", "calib"] if cache.startswith("calib/") else []
        line = one_line_error(cli(*args, cwd=tiny.root), 2, said)
        assert line.startswith(f"error: --timing-cache {cache}"), line
        assert not (tiny.root / "out").exists() and model.read_bytes() == before
    one_line_error(cli("build", "model.onnx", "--timing-cache", "t.cache", "--json", "t.cache", "-o", "out",
                       cwd=tiny.root), 2, "--timing-cache t.cache is also given as --json")  # fmt: skip
    one_line_error(cli("build", "model.onnx", "--timing-cache", "out", "-o", "out", cwd=tiny.root), 2,
                   "--timing-cache out is also given as -o")  # fmt: skip


def test_a_timing_cache_naming_a_file_the_run_reads_or_writes_is_refused_before_any_work(tiny: Tiny) -> None:
    """``[build] timing_cache = "work/tiny.fp16.engine"`` (or the run's report, record, stage cache or
    bundle, or its model) was taken as build's --timing-cache no longer is: a TensorRT build saved its
    cache over the run's file, or the run replaced the cache with its own. Each is refused before
    any work with the run's own check, one line, exit 2."""
    base = write_config(tiny).read_text()
    config = tiny.root / "edgedeploy.toml"
    work, bundle = tiny.root / "work", tiny.root / "bundle"
    cases = (
        ("work/tiny.fp16.engine", "tiny.* in"),
        ("work/tiny.fp32.ort.onnx", "tiny.* in"),
        ("work/report.md", "is a file this command writes"),
        ("work/run.json", "the run's record"),
        ("work/.edgedeploy-cache/t.cache", "a folder this command writes"),
        ("bundle/t.cache", "the run's bundle"),
        ("bundle.tar.gz", "the run's bundle"),
        ("model.onnx", "is an input of this run"),
        ("data.npz", "is an input of this run"),
    )
    for cache, said in cases:
        config.write_text(base.replace("[build]", f'[build]\ntiming_cache = "{cache}"'))
        line = one_line_error(cli("run", config), 2, said)
        assert line.startswith("error: config build.timing_cache:"), line
        assert not work.exists() and not bundle.exists()
    config.write_text(base)
    assert cli("run", config).code == 0
    with unchanged(tiny.root):
        for cache, said in cases[:5]:
            config.write_text(base.replace("[build]", f'[build]\ntiming_cache = "{cache}"'))
            one_line_error(cli("run", config), 2, said)
        config.write_text(base)
    config.write_text(base.replace("[build]", '[build]\ntiming_cache = "work/shared.timing"'))
    assert cli("run", config).code == 0  # another name in the workdir is the user's


def test_a_folder_where_an_output_file_goes_is_refused_before_any_work(tiny: Tiny) -> None:
    """``build -o out`` with a folder out/model.fp16.ort.onnx converted the model, wrote the fp16
    artifact, its plan and ranges, and only then failed "is a folder, not a file", exit 2, the
    build half made; calibrate alike at out/model.calib.json. Refused now before any work."""
    for folder, args in (
        ("model.fp16.ort.onnx", ("build", "model.onnx", "--precision", "fp16", "-o", "out")),
        ("model.fp16.onnx", ("build", "model.onnx", "--precision", "fp16", "-o", "out")),
        ("model.calib.json", ("calibrate", "model.onnx", "--data", "data.npz", "-o", "out")),
        (
            "model.int8.onnx",
            ("build", "model.onnx", "--precision", "int8", "--calib-data", "data.npz", "-o", "out"),
        ),
    ):
        out = tiny.root / "out"
        shutil.rmtree(out, ignore_errors=True)
        (out / folder).mkdir(parents=True)
        with unchanged(tiny.root):
            one_line_error(cli(*args, cwd=tiny.root), 2, f"out/{folder} is a folder where", "model.*")
    (tiny.root / "out" / "model.notes").mkdir()  # a folder of another name is the user's
    (tiny.root / "out" / "model.int8.onnx").rmdir()
    assert cli("build", "model.onnx", "--precision", "fp16", "-o", "out", cwd=tiny.root).code == 0


def test_a_run_interrupted_after_an_earlier_run_is_not_reported_as_that_earlier_run(
    tiny: Tiny, tmp_path: Path
) -> None:
    """An earlier run's run.json outlived a later run stopped by Ctrl-C in its export, and `report`
    showed that earlier run as the workdir's latest, as if nothing had been tried since. A run now
    removes the earlier record at its start: report says the last run stopped before its end, and
    the rerun it advises records and reports the run again."""
    config = _held_net_config(tiny)
    work = tiny.root / "work"
    assert cli("run", config).code == 0
    assert cli("report", work, "-o", tmp_path / "first").code == 0  # the earlier run, reported
    (tiny.root / "started").unlink()  # its export's: the next one says so again
    _interrupted_in_export(["run", str(config)], tiny.root, tmp_path)
    line = one_line_error(cli("report", work, "-o", tmp_path / "r"), 2, "stopped before its end")
    assert "rerun `edgedeploy run CONFIG`" in line, line
    assert not (tmp_path / "r").exists()
    assert cli("run", config).code == 0
    assert cli("report", work, "-o", tmp_path / "r").code == 0
