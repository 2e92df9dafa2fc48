"""edgedeploy matrix: models x targets x precisions, on a local process pool and on a Ray cluster.

The Ray tests start a real three-node cluster on this machine (ray.cluster_utils.Cluster: a head
and two workers, each worker announcing a different ``target:`` resource, one CPU each) and shut
it down afterwards. The matrix is two small ONNX models x three Jetson/GPU targets (two announced,
one absent) x fp32/fp16/int8 on the ONNX Runtime backend, with one cell given bad calibration
data. About 90 s on 2 busy cores, most of it the two full matrix runs.
"""

from __future__ import annotations

import html
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.errors import InputError
from edgedeploy.pipeline.executors import (
    Failed,
    LocalExecutor,
    Placement,
    RayExecutor,
    loopback_cluster,
    refuse_unreachable,
    run_task,
)
from edgedeploy.pipeline.matrix import ArtifactStore, MatrixResult, run_matrix
from edgedeploy.pipeline.matrix_config import load_matrix_config
from edgedeploy.ui import Ui
from tests.conftest import (
    assert_clean_input_error,
    checkpoint_module,
    dynamic_matmul_model,
    reflect_padded_data,
    run_cli,
    validate_manifest,
)

PRESENT = ("jetson-orin-nano", "rtx4090")
ABSENT = "jetson-agx-orin"
BAD_CELL = ("b", "rtx4090", "int8")
# Ray's driver takes loopback, not the machine's network address (read when ray is imported: set first)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _mlp(path: Path, seed: int, din: int, hidden: int, dout: int) -> None:
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (din, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (hidden,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (hidden, dout)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", din])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", dout])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def _matmul_relu(folder: Path) -> np.random.Generator:
    """``folder``/m.onnx, x[N,16] -> MatMul W[16,8] -> Relu -> z[N,8], and its compare data
    ``folder``/val.npz (8 samples); returns the generator that drew them, for more data."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"), helper.make_node("Relu", ["y"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "m.onnx")
    np.savez(folder / "val.npz", x=rng.standard_normal((8, 16)).astype(np.float32))
    return rng


CONFIG = """
workdir = "{workdir}"

[build]
backend = "onnxruntime"

[compare]
samples = 16
batch_size = 8
min_cosine = 0.99

[profile]
iterations = 5
warmup = 1
batch_sizes = [1]

[bundle]
output = "{workdir}-bundles"

[matrix]
targets = ["jetson-orin-nano", "rtx4090", "jetson-agx-orin"]
precisions = ["fp32", "fp16", "int8"]

[[matrix.models]]
source = "a.onnx"

[[matrix.models]]
name = "b"
source = "b.onnx"

[[matrix.cells]]      # bad calibration data for one cell only
model = "b"
target = "rtx4090"
precision = "int8"
calibration = {{ data = "bad.npz" }}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matrix")
    _mlp(root / "a.onnx", 0, 16, 32, 10)
    _mlp(root / "b.onnx", 1, 8, 24, 5)
    np.savez(root / "bad.npz", wrong=np.zeros((4, 3), np.float32))  # no input named "wrong"
    return root


def _config(project: Path, workdir: str, extra: str = "") -> Path:
    path = project / f"{workdir}.toml"
    text = CONFIG.format(workdir=workdir) + extra
    if "interrupted" in workdir:  # the Ctrl-C tests: one board (6 cells) is enough
        text = text.replace('["jetson-orin-nano", "rtx4090", "jetson-agx-orin"]', '["rtx4090"]')
    path.write_text(text)
    return path


def _by_cell(result: MatrixResult) -> dict[tuple[str, str, str], Any]:
    return {(c.model, c.target, c.precision): c for c in result.cells}


def _check_outcome(result: MatrixResult) -> None:
    """The matrix's result whatever the executor: the bad cell fails alone, every other ran."""
    cells = _by_cell(result)
    assert cells[BAD_CELL].status == "failed"
    assert "bad.npz" in cells[BAD_CELL].reason and "\n" not in cells[BAD_CELL].reason
    for key, cell in cells.items():
        if key == BAD_CELL or cell.target == ABSENT:
            continue
        assert cell.status == "ok", cell
        assert cell.backend == "onnxruntime" and cell.size_bytes and cell.latency_ms is not None
        assert cell.gate == "pass" and cell.min_cosine is not None and cell.min_cosine >= 0.99
        assert Path(cell.artifact).is_file()


@pytest.fixture(scope="module")
def local_run(project: Path) -> MatrixResult:
    executor = LocalExecutor(jobs=2)
    try:
        return run_matrix(load_matrix_config(_config(project, "local")), executor)
    finally:
        executor.close()


def test_local_matrix_fails_the_bad_cell_alone_and_runs_every_onnxruntime_cell(
    local_run: MatrixResult, project: Path
) -> None:
    _check_outcome(local_run)
    # the ONNX Runtime backend runs any target on this machine: the third board's cells run too
    assert all(c.status == "ok" for c in local_run.cells if c.target == ABSENT)
    # one bundle per (model, target), each a valid bundle of the cells that ran
    assert len(local_run.bundles) == 6
    import json

    manifest = json.loads((Path(local_run.bundles["b/rtx4090"]) / "manifest.json").read_text())
    validate_manifest(manifest)
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "fp16"]
    assert manifest["target"]["name"] == "rtx4090"
    assert (Path(local_run.bundles["b/rtx4090"]) / "report.html").is_file()  # the bundle's own report
    # with what its report draws: the fp16 ranges and the calibration report were left behind
    models = {p.name for p in (Path(local_run.bundles["a/rtx4090"]) / "models").iterdir()}
    assert {"a.fp16.ranges.json", "a.calib.json"} <= models, models


def test_matrix_report_has_every_cell_its_failure_reason_and_links_to_each_bundle_report(
    local_run: MatrixResult, project: Path
) -> None:
    import re

    assert local_run.report is not None
    page = Path(local_run.report).read_text()
    assert Path(local_run.report).parent == project / "local" and "<script" not in page
    rows = re.findall(r"<tr><td class=\"text\">([^<]+)</td><td class=\"text\">([^<]+)</td>", page)
    by_model = re.split(r"<section id='m\d'", page)[1:]
    cells = {
        (m, t, p)
        for m, body in zip("ab", by_model, strict=True)
        for t, p in re.findall(r"<tr><td class=\"text\">([^<]+)</td><td class=\"text\">([^<]+)</td>", body)
    }
    assert cells == {(c.model, c.target, c.precision) for c in local_run.cells} and len(rows) == len(cells)
    bad = next(c for c in local_run.cells if (c.model, c.target, c.precision) == BAD_CELL)
    assert html.escape(bad.reason, quote=True) in page and "1 failed" in page
    links = re.findall(r"<a href='([^']+)'>report</a>", page)
    assert len(links) == len(local_run.cells) - 1  # every cell but the failed one has a bundle
    assert all((project / "local" / link).resolve().is_file() for link in links)
    assert page.count("<svg") == 2  # one latency chart per model
    summary = (project / "local" / "matrix.md").read_text()
    assert summary.count("\n| ") == len(local_run.cells) + 1 and "**b/rtx4090/int8**" in summary


def test_local_rerun_takes_every_built_cell_from_the_cache(local_run: MatrixResult, project: Path) -> None:
    executor = LocalExecutor(jobs=1)
    try:
        rerun = run_matrix(load_matrix_config(_config(project, "local")), executor)
    finally:
        executor.close()
    assert all(c.cached for c in rerun.cells if c.status == "ok")
    assert [c.row() for c in rerun.cells] == [c.row() for c in local_run.cells]
    assert rerun.tasks_submitted == 1  # only the failed cell's calibration is tried again


def test_a_damaged_cached_artifact_is_built_again(local_run: MatrixResult, project: Path) -> None:
    config = load_matrix_config(_config(project, "local"))
    cell = _by_cell(local_run)[("a", "rtx4090", "fp16")]
    Path(cell.artifact).write_bytes(b"not a model")  # same name, other content: the key alone must not do
    executor = LocalExecutor(jobs=1)
    try:
        rerun = run_matrix(config, executor)
    finally:
        executor.close()
    again = _by_cell(rerun)[("a", "rtx4090", "fp16")]
    assert again.status == "ok" and not again.cached
    assert onnx.load(again.artifact) is not None
    assert sum(not c.cached for c in rerun.cells if c.status == "ok") == 1


def test_a_cell_record_edited_by_hand_is_not_believed(tmp_path: Path) -> None:
    """A cached cell's record.json whose figures were edited (a cosine, a gate) is a miss, as a
    changed file is: the cell is made again rather than its edited figures reported."""
    from edgedeploy.pipeline.executors import Produced

    store = ArtifactStore(tmp_path)
    result = {"compare": {"cosine": 0.912, "passed": False}}
    store.put("k", Produced({"a.onnx": b"model"}, result, "node-1", 1.5))
    found = store.lookup("k")
    assert found is not None and found.result == result and found.files["a.onnx"].read_bytes() == b"model"
    path = store.root / "k" / "record.json"
    original = path.read_text()
    path.write_text(original.replace("0.912", "0.999").replace("false", "true"))
    assert store.lookup("k") is None
    path.write_text(original)
    assert store.lookup("k") is not None
    record = json.loads(original)
    del record["record_sha256"]  # a record written before records had digests
    path.write_text(json.dumps(record))
    assert store.lookup("k") is None


def test_cells_say_their_warnings_also_from_the_cache_and_why_a_damaged_one_is_made_again(
    tmp_path: Path,
) -> None:
    """matrix said only its export's warnings: an int8 cell calibrated on random data (no data
    given) was shipped without a word, though build and run say so; and a damaged cached artifact
    was made again without saying why."""
    _matmul_relu(tmp_path)
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "farm"\n[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["int8"]\n[[matrix.models]]\n'
        'source = "m.onnx"\nname = "m"\n'
    )

    def run() -> tuple[MatrixResult, list[str]]:
        ui = Ui(quiet=True)
        executor = LocalExecutor(jobs=1)
        try:
            return run_matrix(load_matrix_config(config), executor, ui=ui), ui.messages
        finally:
            executor.close()

    for cached in (False, True):
        result, said = run()
        (cell,) = result.cells
        assert cell.status == "ok" and cell.cached is cached
        assert any("calibrated on synthetic data" in w for w in cell.warnings), cell.warnings
        assert any(m.startswith("warning: m int8:") and "synthetic" in m for m in said), said
        # said in the config's names: matrix has no --calib-data option
        assert any(w.startswith("no [calibration] data given") for w in cell.warnings), cell.warnings
        assert not any("--calib" in w for w in cell.warnings), cell.warnings
    Path(cell.artifact).write_bytes(b"damaged")
    result, said = run()
    assert not result.cells[0].cached
    assert any("changed since it was made: made again" in m for m in said), said


def test_ctrl_c_keeps_finished_cells_and_a_rerun_does_only_the_rest(project: Path) -> None:
    config = load_matrix_config(_config(project, "interrupted"))
    seen: list[str] = []

    def interrupt(cell: Any, done: int, total: int) -> None:
        seen.append(cell.status)
        if done == 2:
            raise KeyboardInterrupt

    executor = LocalExecutor(jobs=2)
    with pytest.raises(KeyboardInterrupt):
        run_matrix(config, executor, on_cell=interrupt)
    assert executor._pool is None  # cancelled: the worker processes were stopped
    store = ArtifactStore(config.workdir)
    kept = [p for p in store.root.iterdir() if (p / "record.json").is_file()]
    assert kept and not [p for p in store.root.iterdir() if p.name.startswith(".")]  # nothing half-written
    executor = LocalExecutor(jobs=1)  # in this process
    try:
        rerun = run_matrix(config, executor)
    finally:
        executor.close()
    cached = [c for c in rerun.cells if c.cached]
    assert len(cached) == seen.count("ok")
    _check_outcome(rerun)


# ---------------------------------------------------------------- Ray


def test_ray_at_an_address_nothing_answers_is_one_line_not_a_hang() -> None:
    """Ray's init retried a head that is not there forever ("Failed to connect to GCS" lines)."""
    import socket

    pytest.importorskip("ray")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = rf"cannot reach a Ray cluster at '127.0.0.1:{port}'.*nothing answers"
    with pytest.raises(InputError, match=refused):
        RayExecutor(address=f"127.0.0.1:{port}")
    with socket.socket() as listening:  # something answers: left to Ray
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        refuse_unreachable(f"127.0.0.1:{listening.getsockname()[1]}")
    refuse_unreachable("auto")


@pytest.mark.parametrize("given", ["loopback-address", "auto"])
def test_ray_head_on_loopback_only_is_one_line_not_a_hang(project: Path, given: str) -> None:
    """Ray dials this machine's network address for 127.0.0.1 (and for ``auto``, resolved to a
    loopback head): the probe tried the address as typed (and skipped ``auto``), which answered, and
    ray.init then waited for ever on an address where nothing listens. Something listening on
    127.0.0.1 only is such a head as far as the probe and Ray's dial go; the command runs in a process
    of its own, without this module's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, under a hard timeout."""
    import socket

    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    ask = "from ray._private.services import get_node_ip_address; print(get_node_ip_address())"
    node_ip = subprocess.run(
        [sys.executable, "-c", ask], capture_output=True, text=True, env=env, timeout=120
    ).stdout.strip()
    if not node_ip or node_ip.startswith("127."):
        pytest.skip("this machine has no network address: Ray dials loopback itself")
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        port = head.getsockname()[1]
        address = f"127.0.0.1:{port}"
        if given == "auto":
            env["RAY_ADDRESS"], address = address, "auto"
        config = _config(project, f"loopback-{given}")
        try:
            result = run_cli(
                "matrix", config, "--executor", "ray", "--address", address, cwd=project, env=env, timeout=120
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"--address {address} with a head on 127.0.0.1 only hung (ray.init waits for ever)")
    assert_clean_input_error(result, f"'{address}'", f"nothing answers at {node_ip}:{port}", "127.0.0.1")
    assert not (project / f"loopback-{given}").exists()


RAY_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_TMPDIR")


LOCAL_RAY_DRIVER = (
    "import sys\n"
    "from edgedeploy.pipeline.executors import Placement, RayExecutor, node_versions_task\n"
    "executor = RayExecutor(address='local')\n"
    "executor.submit('v', node_versions_task, (('numpy',),), Placement(on_driver=True))\n"
    "tag, outcome = executor.next_done()\n"
    "executor.close()\n"
    "print(outcome.result['numpy'])\n"
)


def _descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid`` (children, theirs, ...) and their command lines."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parents[int(entry)] = int(fh.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                names[int(entry)] = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
    found: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in found}
        found.update({p: names.get(p, "") for p in frontier})
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_ray_local_writes_nothing_outside_and_leaves_no_ray_session(tmp_path: Path) -> None:
    """``--address local`` wrote ~/.ray/auth_token (which turns token authentication on for every
    later ``ray start --head`` of the user) and a session folder in Ray's temp folder, /tmp/ray."""
    import tempfile

    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="edr-"))  # Ray's default temp root; short, as its sockets need
    try:
        env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
        env.update(HOME=str(home), RAY_TMPDIR=str(ray_tmp))
        scratch = set(Path(tempfile.gettempdir()).glob("edgedeploy-ray-*"))
        proc = subprocess.run(
            [sys.executable, "-c", LOCAL_RAY_DRIVER], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == np.__version__
        assert not list(home.iterdir()), list(home.rglob("*"))
        assert not list(ray_tmp.iterdir()), list(ray_tmp.rglob("*"))[:5]
        assert not set(Path(tempfile.gettempdir()).glob("edgedeploy-ray-*")) - scratch
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ray_local_skip_reason_names_no_address_that_is_gone(tmp_path: Path) -> None:
    """``--address local``: a board's cells were skipped with "ray start --address IP:PORT", the
    random port of the in-process Ray, which is gone when the command ends."""
    pytest.importorskip("ray")
    code = (
        "from edgedeploy.pipeline.executors import RayExecutor\n"
        "from edgedeploy.targets import load_target\n"
        "executor = RayExecutor(address='local')\n"
        "print('gcs', executor._ray.get_runtime_context().gcs_address)\n"
        "print('reason', executor.skip_reason(load_target('rtx4090'), 'onnxruntime'))\n"
        "executor.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    said = dict(
        line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("gcs ", "reason "))
    )
    assert said["gcs"] not in said["reason"], said
    assert "target:rtx4090" in said["reason"] and "has no board" in said["reason"], said
    assert "ray start --head" in said["reason"] and "--address" in said["reason"], said


def test_ray_local_ctrl_c_while_ray_starts_leaves_no_ray_process(tmp_path: Path) -> None:
    """Ctrl-C in ray.init of ``--address local`` while the raylet was starting its agents: the
    raylet and GCS stopped, and ray::DashboardAgent and ray::RuntimeEnvAgent (170 MB) stayed for good,
    waiting on a GCS that was gone. SIGINT is sent the moment the first agent is there."""
    import signal
    import tempfile

    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="edr-"))
    env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
    env.update(HOME=str(home), RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled")
    driver = subprocess.Popen(
        [sys.executable, "-c", LOCAL_RAY_DRIVER],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        while driver.poll() is None and time.monotonic() < deadline:
            below = _descendants(driver.pid)
            seen.update(below)
            if any("Agent" in name for name in below.values()):
                driver.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        else:
            pytest.fail("the local Ray started no agent")
        driver.wait(120)
        deadline = time.monotonic() + 20  # what a normal shutdown's processes take to end
        while any(_alive(p) for p in seen) and time.monotonic() < deadline:
            seen.update({p: n for p, n in _descendants(1).items() if p in seen})
            time.sleep(0.5)
        left = {p: seen[p] for p in seen if _alive(p)}
        assert not left, left
    finally:
        import shutil

        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A head started as a user starts one, ``ray start --head --port P``, where ``~/.ray/auth_token``
    exists (any local ``ray.init()`` writes it): Ray 2.59+ then turns its token authentication on.
    Its own HOME, port and temp folder; stopped through its own process (``--block`` ends the head's
    processes on SIGTERM), never ``ray stop``, which stops every Ray on the machine."""
    import contextlib
    import secrets
    import shutil
    import signal
    import socket
    import tempfile

    ray = pytest.importorskip("ray")
    if not hasattr(ray.exceptions, "AuthenticationError"):
        pytest.skip("Ray before 2.52 has no token authentication")
    home = tmp_path_factory.mktemp("token-home")
    (home / ".ray").mkdir()
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    temp = Path(tempfile.mkdtemp(prefix="edr-"))  # Ray's socket paths must stay short (107 bytes)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port)]
    command += ["--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats"]
    command += ["--temp-dir", str(temp / "ray"), "--node-ip-address", "127.0.0.1"]
    log = temp / "head.log"
    with open(log, "w") as out:
        env["HOME"] = str(home)
        head = subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        assert "Token authentication is enabled" in log.read_text(), log.read_text()
        yield {"address": f"127.0.0.1:{port}", "home": str(home), "token": token, "tmpdir": str(temp)}
    finally:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the head's own process group: whatever it left
        shutil.rmtree(temp, ignore_errors=True)


def _driver_env(token_head: dict[str, str], **extra: str) -> dict[str, str]:
    """The driver's environment: the head's machine and user (its HOME, the token file's), and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
    return {**env, "HOME": token_head["home"], "COLUMNS": "400", **extra}


def test_ray_cluster_that_wants_a_token_is_one_line_at_once_saying_how_to_give_it(
    project: Path, token_head: dict[str, str]
) -> None:
    """A plain ``ray start --head`` turned token authentication on, and the driver, which sends the
    token to an address it is given only with RAY_AUTH_MODE=token, printed "InvalidAuthToken" warnings
    every second for 20 s before "cannot reach a Ray cluster ... (start one with 'ray start --head')"."""
    config = _config(project, "token-none")
    address = token_head["address"]
    env = _driver_env(token_head)
    result = run_cli("matrix", config, "--executor", "ray", "--address", address, cwd=project, env=env)
    assert_clean_input_error(
        result, f"'{address}'", "wants a token", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN", "~/.ray/auth_token"
    )
    assert "InvalidAuthToken" not in result.stderr and "ray start --head" not in result.stderr
    assert not (project / "token-none").exists()


def test_ray_cluster_that_refuses_the_drivers_token_is_one_line_naming_where_it_came_from(
    project: Path, token_head: dict[str, str]
) -> None:
    config = _config(project, "token-wrong")
    env = _driver_env(token_head, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-heads-token")
    address = token_head["address"]
    result = run_cli("matrix", config, "--executor", "ray", "--address", address, cwd=project, env=env)
    assert_clean_input_error(result, "refused the token in RAY_AUTH_TOKEN", "ray get-auth-token")
    assert "InvalidAuthToken" not in result.stderr


def test_ray_auth_mode_token_without_a_token_is_one_line_not_a_crash(
    project: Path, token_head: dict[str, str], tmp_path: Path
) -> None:
    """RAY_AUTH_MODE=token with no token anywhere: ray.init's AuthenticationError came out as a
    traceback, and Ray's C++ GCS client, where it runs first, aborts the process."""
    config = _config(project, "token-unset")
    env = {**_driver_env(token_head, RAY_AUTH_MODE="token"), "HOME": str(tmp_path)}
    address = token_head["address"]
    result = run_cli("matrix", config, "--executor", "ray", "--address", address, cwd=project, env=env)
    assert_clean_input_error(result, "RAY_AUTH_MODE=token is set and no token is found", "~/.ray/auth_token")


@pytest.mark.parametrize("given", ["auth-mode-and-token-file", "auto-and-token-variable"])
def test_ray_cluster_that_wants_a_token_runs_tasks_with_the_token_given_as_ray_documents(
    token_head: dict[str, str], tmp_path: Path, given: str
) -> None:
    """RAY_AUTH_MODE=token with the head's ~/.ray/auth_token; or ``--address auto`` (the head found in
    its temp folder, as README's head is) with RAY_AUTH_TOKEN and no RAY_AUTH_MODE, where Ray turns
    token mode on by itself (it does for ``auto`` only, not for an address given or in RAY_ADDRESS)."""
    if given == "auth-mode-and-token-file":
        address, env = token_head["address"], _driver_env(token_head, RAY_AUTH_MODE="token")
    else:
        address = "auto"
        env = _driver_env(token_head, RAY_TMPDIR=token_head["tmpdir"], RAY_AUTH_TOKEN=token_head["token"])
        env["HOME"] = str(tmp_path)  # no token file: the variable's
    code = (
        "import json\n"
        "from edgedeploy.pipeline.executors import Placement, RayExecutor, node_versions_task\n"
        f"executor = RayExecutor(address={address!r})\n"
        "executor.submit('v', node_versions_task, (('numpy',),), Placement())\n"
        "tag, outcome = executor.next_done()\n"
        "executor.close()\n"
        "print(json.dumps(outcome.result))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["numpy"] == np.__version__
    assert "InvalidAuthToken" not in proc.stderr


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, str]]:
    """A head and two worker nodes on this machine; returns the address and each target's node id."""
    pytest.importorskip("ray")
    with loopback_cluster(PRESENT) as (address, nodes):
        yield {"address": address, **nodes}


def _ray_run(project: Path, ray_cluster: dict[str, str], workdir: str = "ray") -> MatrixResult:
    executor = RayExecutor(address=ray_cluster["address"])
    try:
        return run_matrix(load_matrix_config(_config(project, workdir)), executor)
    finally:
        executor.close()


@pytest.fixture(scope="module")
def ray_run(project: Path, ray_cluster: dict[str, str]) -> MatrixResult:
    return _ray_run(project, ray_cluster)


def test_ray_runs_each_cell_on_the_node_that_announces_its_board(
    ray_run: MatrixResult, ray_cluster: dict[str, str]
) -> None:
    _check_outcome(ray_run)
    for cell in ray_run.cells:
        if cell.target in PRESENT and cell.status == "ok":
            assert cell.node == ray_cluster[cell.target], cell


def test_tensorrt_cells_are_classified_alike_on_ray_and_locally(
    project: Path, ray_cluster: dict[str, str]
) -> None:
    """``backend = "tensorrt"`` where no TensorRT is: locally a GPU target's cells are skipped
    (this machine cannot build them, exit 0); on Ray the node announcing the board, without
    TensorRT, got them and they failed (exit 1). Both now skip them, saying why."""
    from edgedeploy.backends import get_backend

    if get_backend("tensorrt").available()[0]:
        pytest.skip("TensorRT is usable here: the nodes of this machine have it")
    text = _config(project, "trt-gpu").read_text().replace('backend = "onnxruntime"', 'backend = "tensorrt"')
    text = text.replace('["jetson-orin-nano", "rtx4090", "jetson-agx-orin"]', '["rtx4090"]')
    text = text.replace('["fp32", "fp16", "int8"]', '["fp32", "int8"]')
    config = project / "trt-gpu.toml"
    config.write_text(text)
    runs: dict[str, MatrixResult] = {}
    for name, executor in (
        ("local", LocalExecutor(jobs=1)),
        ("ray", RayExecutor(address=ray_cluster["address"])),
    ):
        try:
            runs[name] = run_matrix(load_matrix_config(config), executor)
        finally:
            executor.close()
    for name, result in runs.items():
        assert [c.status for c in result.cells] == ["skipped"] * 4, (name, result.cells)
        assert all("TensorRT" in c.reason for c in result.cells), (name, result.cells)


def test_ray_skips_the_cells_of_a_board_no_node_announces(
    ray_run: MatrixResult, ray_cluster: dict[str, str]
) -> None:
    absent = [c for c in ray_run.cells if c.target == ABSENT]
    assert len(absent) == 6
    for cell in absent:
        assert cell.status == "skipped"
        assert f"target:{ABSENT}" in cell.reason
        assert f"ray start --address {ray_cluster['address']} --resources" in cell.reason


def test_ray_rerun_is_all_cache_hits(
    ray_run: MatrixResult, project: Path, ray_cluster: dict[str, str]
) -> None:
    rerun = _ray_run(project, ray_cluster)
    assert all(c.cached for c in rerun.cells if c.status == "ok")
    assert sum(c.status == "ok" for c in rerun.cells) == 11
    # the failed cell's calibration, tried again, and each board asked its tool versions (they key its cells)
    assert rerun.tasks_submitted == 1 + len(PRESENT)
    assert [c.row() for c in rerun.cells] == [c.row() for c in ray_run.cells]


def test_local_and_ray_give_the_same_table(ray_run: MatrixResult, local_run: MatrixResult) -> None:
    local = {k: c.row() for k, c in _by_cell(local_run).items()}
    remote = {k: c.row() for k, c in _by_cell(ray_run).items()}
    assert local.keys() == remote.keys()
    for key, row in remote.items():
        if key[1] != ABSENT:  # the absent board: skipped on Ray, run locally on ONNX Runtime
            assert row == local[key], key


# ---------------------------------------------------------------- checks before work, CLI


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('\n[[matrix.cells]]\nmodel = "c"\n', "matrix.cells[1].model = 'c' is not in the matrix"),
        ('\n[[matrix.cells]]\ntarget = "rtx4090"\ncalibraton = {data = "x"}\n', "did you mean 'calibration'"),
        # named as the cell's key: the config's [compare] has no min_cosin
        ("\n[[matrix.cells]]\ncompare = {min_cosin = 0.9}\n", "key 'matrix.cells[1].compare.min_cosin'"),
        (
            '\n[[matrix.cells]]\nprofile = {iterations = "5"}\n',
            "'matrix.cells[1].profile.iterations' must be int",
        ),
        ('\n[[matrix.models]]\nname = 5\nsource = "a.onnx"\n', "'matrix.models[2].name' must be str, got 5"),
        ('\n[[matrix.cells]]\nbuild = {target = "t4"}\n', "select cells with target/precision"),
        # files and input names: each failed every cell with the same reason (exit 1), after work
        ('\n[[matrix.models]]\nname = "c"\nsource = "nope.onnx"\n', "config matrix.models[2].source: "),
        ('\n[[matrix.cells]]\nmodel = "b"\ncompare = {data = "nope.npz"}\n', "nope.npz not found"),
        ('\n[[matrix.models]]\nname = "c"\nsource = "a.onnx"\ninputs = ["y:1x16"]\n', "no input 'y'"),
    ],
)
def test_a_bad_cell_override_is_refused_before_any_work(project: Path, extra: str, needle: str) -> None:
    with pytest.raises(InputError, match=None) as info:
        load_matrix_config(_config(project, "refused", extra))
    assert needle in str(info.value)
    assert not (project / "refused").exists()


# The second model (matrix.models[1]) holds what run's config check refuses: each line named run's
# [model] key ("config model.inputs: ...", "[model] inputs"), though a matrix config has no [model].
MODEL_KEY_CASES = {
    "name": (
        '[[matrix.models]]\nname = "a\\\\b"\nsource = "a.onnx"\n',
        "config matrix.models[1].name 'a\\b' must be a plain file name (no folders, no leading dot): "
        "it names the files written in the workdir",
    ),
    "inputs item": (
        '[[matrix.models]]\nname = "c"\nsource = "a.onnx"\ninputs = ["x:axb"]\n',
        "config matrix.models[1].inputs 'x:axb': dims must be integers, e.g. 1x3x224x224",
    ),
    "inputs of an onnx source": (
        '[[matrix.models]]\nname = "c"\nsource = "a.onnx"\ninputs = ["y:1x16"]\n',
        "config matrix.models[1].inputs: y:1x16: the model has no input 'y' (its inputs: x)",
    ),
    "input_names for the inputs": (
        '[[matrix.models]]\nsource = "net.py:build"\ninputs = ["x:1x3x8x8"]\n'
        '[export]\ninput_names = ["p", "q"]\n',
        "config [export] input_names gives 2 names for 1 matrix.models[1].inputs",
    ),
    "profiles of another rank": (
        '[[matrix.models]]\nsource = "net.py:build"\ninputs = ["x:1x3x8x8"]\n'
        '[[matrix.cells]]\nmodel = "net"\n'
        "build = {profiles = [{ x = { min = [1], opt = [1], max = [1] } }]}\n",
        "config [build] profiles: profile 0 input 'x': min/opt/max must all have rank 4 like "
        "matrix.models[1].inputs gives it ([1], [1], [1])",
    ),
    "dynamic_axes of an input it lacks": (
        '[[matrix.models]]\nsource = "net.py:build"\ninputs = ["x:1x3x8x8"]\ndynamic_axes = ["y:2=h"]\n',
        "config matrix.models[1].dynamic_axes y:2=h: the model has no input 'y' (its inputs: x)",
    ),
    "unknown key": (
        '[[matrix.models]]\nname = "c"\nsource = "a.onnx"\ninput = ["x:1x16"]\n',
        "unknown config key 'matrix.models[1].input'; did you mean 'inputs'?",
    ),
    "type": (
        '[[matrix.models]]\nname = "c"\nsource = "a.onnx"\ninputs = "x:1x16"\n',
        "config key 'matrix.models[1].inputs' must be list[str], got 'x:1x16'",
    ),
}


@pytest.mark.parametrize("case", list(MODEL_KEY_CASES))
def test_matrix_names_its_own_model_keys_where_run_names_model(tmp_path: Path, case: str) -> None:
    """The lines matrix takes from run's config check named run's keys (``config model.name``,
    ``config model.inputs``, ``[model] inputs``, ``unknown config key 'model.input'``), which a matrix
    config does not have: they name the entry of that model, ``matrix.models[1].inputs``. Exit 2,
    one line, nothing written."""
    _mlp(tmp_path / "a.onnx", 0, 16, 32, 10)
    (tmp_path / "net.py").write_text(
        "import torch\n\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n"
    )
    model, said = MODEL_KEY_CASES[case]
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "out"\n[build]\n[profile]\nenabled = false\n[bundle]\noutput = "bundles"\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32"]\n[[matrix.models]]\nsource = "a.onnx"\n'
        + model
    )
    ran = run_cli("matrix", config)
    assert_clean_input_error(ran)
    assert ran.stderr.strip() == f"error: {said}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "matrix.toml", "net.py"]


def test_matrix_targets_and_cell_selectors_take_a_target_as_load_target_does(project: Path) -> None:
    """matrix.targets takes any case of a target's name (and host); one target named twice so made
    two of each of its cells (two rows, one task), and a cell's target selector refused the names
    matrix.targets takes. [matrix.cells] (a table, not [[matrix.cells]]) was said as "matrix.cells[0]
    must be a table"."""
    path = _config(project, "refused")
    path.write_text(path.read_text().replace('"jetson-agx-orin"]', '"JETSON-ORIN-NANO"]'))
    with pytest.raises(InputError, match=r"matrix.targets names jetson-orin-nano twice"):
        load_matrix_config(path)
    path.write_text(CONFIG.format(workdir="refused").replace('target = "rtx4090"', 'target = "RTX4090"'))
    plans = load_matrix_config(path).cells
    overridden = {(p.cell.model, p.cell.target, p.cell.precision) for p in plans if p.config.calibration.data}
    assert overridden == {("b", "rtx4090", "int8")}
    path.write_text(CONFIG.format(workdir="refused").replace("[[matrix.cells]]", "[matrix.cells]"))
    with pytest.raises(
        InputError, match=r"config matrix.cells must be a list of tables \(\[\[matrix.cells\]\]"
    ):
        load_matrix_config(path)
    assert not (project / "refused").exists()


def test_unknown_targets_and_precisions_are_refused(project: Path) -> None:
    path = _config(project, "refused")
    path.write_text(path.read_text().replace('"rtx4090", "jetson-agx-orin"]', '"rtx4099"]'))
    with pytest.raises(InputError, match="unknown target 'rtx4099'; did you mean 'rtx4090'"):
        load_matrix_config(path)
    path.write_text(CONFIG.format(workdir="refused").replace('"fp16", "int8"]', '"fp8"]'))
    with pytest.raises(InputError, match="'fp8' is not one of"):
        load_matrix_config(path)


def test_a_precision_the_board_lacks_is_planned_skipped_with_the_reason(project: Path) -> None:
    path = _config(project, "nano")
    path.write_text(path.read_text().replace('"jetson-agx-orin"]', '"jetson-nano"]'))
    plans = {
        (p.cell.model, p.cell.precision): p
        for p in load_matrix_config(path).cells
        if p.cell.target == "jetson-nano"
    }
    assert plans[("a", "int8")].skip is not None and "jetson-nano" in plans[("a", "int8")].skip
    assert plans[("a", "fp16")].skip is None


def test_matrix_json_naming_its_report_or_a_file_in_its_bundles_is_refused_before_any_work(
    project: Path,
) -> None:
    """``matrix --json WORKDIR/matrix.md`` (or a file in its bundles' folder) did every cell and
    only then refused the file, or replaced the report or a failure's budget file left there."""
    path = _config(project, "jsonown")
    bundles = project / "jsonown-bundles"
    for target in (
        project / "jsonown" / "matrix.md",
        bundles / "a" / "rtx4090" / "x.json",  # in a bundle, replaced whole
        bundles / "a" / "rtx4090.tar.gz",  # its archive
        bundles / "b" / "rtx4090.b.int8.budget.json",  # where a missed budget's steps are kept
    ):
        result = run_cli("matrix", path, "--json", target, cwd=project)
        assert_clean_input_error(result, "--json")
        assert not (project / "jsonown" / ".edgedeploy-cache").exists()


def test_a_timing_cache_naming_a_file_the_matrix_reads_or_writes_is_refused_before_any_work(
    project: Path,
) -> None:
    """``[build] timing_cache`` (or a cell's) naming the matrix's report, a file in its cache or its
    bundles, or a model was taken: a TensorRT cell saved its cache over the matrix's file, or the
    matrix replaced the cache. Refused when the matrix loads, as build's --timing-cache is."""
    bundles = project / "tcown-bundles"
    for cache, said in (
        ("tcown/matrix.md", "is a file this command writes"),
        ("tcown/.edgedeploy-cache/t.cache", "a folder this command writes"),
        ("tcown-bundles/a/rtx4090/t.cache", "a bundle this command writes"),
        ("tcown-bundles/a/rtx4090.tar.gz", "a bundle archive this command writes"),
        ("b.onnx", "is an input of this run"),
    ):
        # the cells of backend auto (TensorRT on a board), with the cache in a cell's or in [build]
        ort, auto = '[build]\nbackend = "onnxruntime"', '[build]\nbackend = "auto"'
        in_cell = f'\n[[matrix.cells]]\nmodel = "b"\nbuild = {{timing_cache = "{cache}"}}\n'
        for text in (
            (CONFIG.format(workdir="tcown") + in_cell).replace(ort, auto),
            CONFIG.format(workdir="tcown").replace(ort, f'{auto}\ntiming_cache = "{cache}"'),
        ):
            path = project / "tcown.toml"
            path.write_text(text)
            with pytest.raises(InputError) as info:
                load_matrix_config(path)
            assert str(info.value).startswith("config build.timing_cache:") and said in str(info.value)
        assert not (project / "tcown").exists() and not bundles.exists()
    path = _config(project, "tcown", '\n[[matrix.cells]]\nbuild = {timing_cache = "tcown/t.cache"}\n')
    path.write_text(path.read_text().replace('backend = "onnxruntime"', 'backend = "auto"'))
    assert load_matrix_config(path).cells  # another name in the workdir is the user's


def test_matrix_json_beside_its_bundles_is_written(project: Path) -> None:
    """``matrix --json out/matrix.json`` with the bundles in ``out/`` was refused as lying in a folder
    the command writes, though matrix writes only its bundles, their archives and a failed cell's
    kept files there: a file of another name beside them is the user's, and is written."""
    path = project / "jsonbeside.toml"
    path.write_text(
        'workdir = "jsonbeside"\n[build]\nbackend = "onnxruntime"\n[compare]\nsamples = 8\n'
        '[profile]\nenabled = false\n[bundle]\noutput = "jsonbeside-out"\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32"]\n[[matrix.models]]\nsource = "a.onnx"\n'
    )
    for target in ("jsonbeside-out/matrix.json", "jsonbeside-out/a/notes.json"):
        result = run_cli("matrix", path, "--json", target, cwd=project)
        assert result.code == 0, result.stderr
        assert json.loads((project / target).read_text())["cells"][0]["status"] == "ok"
    assert (project / "jsonbeside-out" / "a" / "x86-64-cpu" / "manifest.json").is_file()


def test_run_refuses_a_matrix_config_and_names_the_command(project: Path) -> None:
    result = run_cli("run", _config(project, "refused"), cwd=project)
    assert_clean_input_error(result, "edgedeploy matrix")


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_tensorrt_backend_for_a_cpu_target_is_refused_at_the_config_check(
    project: Path, executor: str
) -> None:
    """``backend = "tensorrt"`` with x86-64-cpu among the targets: locally every such cell was a
    skip (exit 0, nothing built), on Ray it was sent to a node and failed with advice to install
    TensorRT (exit 1). TensorRT builds for no CPU target: refused before any work, on both."""
    text = _config(project, f"trt-cpu-{executor}").read_text()
    text = text.replace('backend = "onnxruntime"', 'backend = "tensorrt"')
    text = text.replace('["jetson-orin-nano", "rtx4090", "jetson-agx-orin"]', '["rtx4090", "x86-64-cpu"]')
    config = project / f"trt-cpu-{executor}.toml"
    config.write_text(text)
    with pytest.raises(InputError, match=r"backend.*tensorrt.*x86-64-cpu"):
        load_matrix_config(config)
    result = run_cli("matrix", config, "--executor", executor, cwd=project, timeout=120)
    assert_clean_input_error(result, "tensorrt", "x86-64-cpu", "onnxruntime")
    assert not (project / f"trt-cpu-{executor}").exists()


def test_executor_ray_without_ray_installed_exits_2_with_the_install_line(project: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"  # import ray -> ImportError, as when it is not installed
        "from edgedeploy.cli import main\n"
        f"main(['matrix', {str(_config(project, 'noray'))!r}, '--executor', 'ray'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'edgedeploy[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "noray").exists()


def test_ray_ctrl_c_cancels_the_cluster_tasks_and_a_rerun_finishes(
    project: Path, ray_cluster: dict[str, str]
) -> None:
    config = load_matrix_config(_config(project, "ray-interrupted"))
    ok_before: list[str] = []

    def interrupt(cell: Any, done: int, total: int) -> None:
        if cell.status == "ok":
            ok_before.append(cell.precision)
            raise KeyboardInterrupt

    executor = RayExecutor(address=ray_cluster["address"])
    try:
        with pytest.raises(KeyboardInterrupt):
            run_matrix(config, executor, on_cell=interrupt)
        assert executor._refs == {}  # every task still out was cancelled
    finally:
        executor.close()
    rerun = _ray_run(project, ray_cluster, "ray-interrupted")
    assert sum(c.cached for c in rerun.cells) == len(ok_before) == 1
    _check_outcome(rerun)


def _sleeper(path: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A task that writes its process id to ``path`` and sleeps: a cell still running at Ctrl-C."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)
    return {}, {}


def _wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_ray_ctrl_c_ends_the_running_tasks_without_ray_cancel(
    ray_cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while cells ran on Ray sometimes ended in Ray's core aborting the driver ("Check failed:
    it != submissible_tasks_.end() Tried to complete task that was not pending", a 20-line C++ stack,
    exit 1, a local Ray's agent processes left running): ray.cancel of a task whose reply is on its
    way races that reply (ray-project/ray#54798). The driver now disconnects instead, and Ray ends
    the tasks of its job."""
    executor = RayExecutor(address=ray_cluster["address"])
    ray = executor._ray
    try:
        pid_file = tmp_path / "task.pid"
        executor.submit("task", _sleeper, (str(pid_file),), Placement())
        _wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the task never started")
        pid = int(pid_file.read_text())

        def cancel(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("ray.cancel races the reply of a task that just finished")

        monkeypatch.setattr(ray, "cancel", cancel)
        executor.cancel()
        assert executor._refs == {} and not ray.is_initialized()
        _wait_for(lambda: _gone(pid), 30, "the task still runs after the driver let go")
    finally:
        executor.close()


def test_ray_a_second_ctrl_c_while_the_driver_disconnects_waits_for_it(
    ray_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C while Ray shut down (the cancel of the first, seconds on a busy machine) cut
    ray.shutdown short: Ray's atexit hook shut down again after main(), where the next Ctrl-C printed
    a traceback ("Exception ignored in atexit callback ... SystemExit: 130"), and a local Ray's
    processes were left running. The shutdown now finishes, and the Ctrl-C is raised after it."""
    import signal

    executor = RayExecutor(address=ray_cluster["address"])
    ray = executor._ray
    shutdown = ray.shutdown

    def interrupted(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C lands as ray.shutdown starts
        time.sleep(0.5)
        shutdown(*args, **kwargs)

    monkeypatch.setattr(ray, "shutdown", interrupted)
    monkeypatch.setattr("edgedeploy.interrupts._received", [])  # the stop it records: this test's only
    try:
        with pytest.raises(KeyboardInterrupt):
            executor.close()
        assert not ray.is_initialized()
    finally:
        shutdown()


def test_ray_ctrl_c_at_the_end_of_ray_init_disconnects(
    ray_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C while ray.init connected (or started a local Ray) left the driver connected: the
    executor was never made, nothing closed it, and Ray's atexit hook disconnected after main(),
    where the next Ctrl-C printed a traceback. The executor now shuts Ray down on its way out."""
    import ray

    init = ray.init

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        init(*args, **kwargs)
        raise KeyboardInterrupt  # the Ctrl-C lands as ray.init returns

    monkeypatch.setattr(ray, "init", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            RayExecutor(address=ray_cluster["address"])
        assert not ray.is_initialized()
    finally:
        ray.shutdown()


def test_the_readme_matrix_example_is_a_valid_matrix(tmp_path: Path) -> None:
    import tomllib

    from edgedeploy.pipeline.matrix_config import matrix_from_dict

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Many models, many boards", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    import onnx
    from onnx import TensorProto, helper

    for name in ("classifier.py", "val.npz"):  # the files it names must be there
        (tmp_path / name).touch()
    # an ONNX source is read for what TensorRT can hold (run.refuse_for_tensorrt): a real one
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "detector", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "detector.onnx")
    (tmp_path / "calib" / "orin-camera").mkdir(parents=True)
    matrix = matrix_from_dict(tomllib.loads(block), tmp_path)
    assert len(matrix.cells) == 2 * 3 * 3
    calibrated = {p.cell.label() for p in matrix.cells if p.config.calibration.data}
    assert calibrated == {"detector/jetson-orin-nano/int8"}


def test_local_skips_tensorrt_cells_this_machine_cannot_build_and_says_why(project: Path) -> None:
    import json

    path = _config(project, "trt")
    path.write_text(path.read_text().replace('backend = "onnxruntime"', 'backend = "tensorrt"'))
    from edgedeploy.backends import get_backend

    if get_backend("tensorrt").available()[0]:
        pytest.skip("TensorRT is installed here: its cells would run")
    result = run_cli("matrix", path, "--json", project / "trt.json", cwd=project)
    assert result.code == 0, result.stderr  # skipped cells do not fail the run
    cells = json.loads((project / "trt.json").read_text())["cells"]
    assert len(cells) == 18 and {c["status"] for c in cells} == {"skipped"}
    assert all("this machine cannot build for" in c["reason"] for c in cells)
    assert "skipped" in result.stdout and "jetson-agx-orin" in result.stdout


def test_cli_matrix_on_ray_prints_every_cell_and_writes_json(
    ray_run: MatrixResult, project: Path, ray_cluster: dict[str, str]
) -> None:
    import json

    path = _config(project, "ray")  # the matrix ray_run built: the CLI finds every cell in the cache
    address = ray_cluster["address"]
    args = ("matrix", path, "--executor", "ray", "--address", address, "--json", project / "ray.json")
    result = run_cli(*args, cwd=project)
    assert result.code == 1, result.stderr  # the bad cell fails the run
    assert "b/rtx4090/int8" in result.stderr.strip().splitlines()[-1]
    data = json.loads((project / "ray.json").read_text())
    assert data["executor"] == "ray" and len(data["cells"]) == 18
    cells = {(c["model"], c["target"], c["precision"]): c for c in data["cells"]}
    assert cells[("a", "rtx4090", "int8")]["node"] == ray_cluster["rtx4090"]
    assert cells[("a", "rtx4090", "int8")]["cached"] is True
    assert cells[("a", ABSENT, "fp32")]["status"] == "skipped"
    assert result.stdout.count("cached") == 11 and result.stdout.count("skipped") == 6


def test_a_bundle_takes_bundle_primary_and_the_strictest_gates_of_its_cells(project: Path) -> None:
    """[bundle] primary names a precision of the matrix (each cell builds one, so it was refused
    per cell); a cell's own gates reach its bundle's manifest, the strictest when cells differ."""
    import json

    text = CONFIG.format(workdir="gates").split("[matrix]")[0]
    text = text.replace("[bundle]\n", '[bundle]\nprimary = "fp32"\n')
    text += (
        '[matrix]\ntargets = ["rtx4090"]\nprecisions = ["fp32", "int8"]\n\n'
        '[[matrix.models]]\nsource = "a.onnx"\n\n'
        '[[matrix.cells]]\nprecision = "int8"\ncompare = { min_cosine = 0.5 }\n\n'
        '[[matrix.cells]]\nprecision = "fp32"\ncompare = { min_cosine = 0.9999 }\n'
    )
    path = project / "gates.toml"
    path.write_text(text)
    result = run_cli("matrix", path, "--jobs", "1")
    assert result.code == 0, result.stderr
    assert "gates differ; the manifest records the strictest (min cosine 0.9999" in result.stderr
    manifest = json.loads((project / "gates-bundles" / "a" / "rtx4090" / "manifest.json").read_text())
    assert manifest["primary_precision"] == "fp32" and manifest["gates"]["min_cosine"] == 0.9999


def test_a_pytorch_source_is_exported_again_and_only_a_changed_model_rebuilds(tmp_path: Path) -> None:
    """As in run: the checkpoint the factory loads is in no key, so each matrix run exports; the
    cells are keyed by the export's sha256."""
    weights = checkpoint_module(tmp_path)

    config = tmp_path / "m.toml"
    config.write_text(
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
        '[matrix]\ntargets = ["rtx4090"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nsource = "net.py:build"\ninputs = ["input:1x1x4x4"]\n'
    )

    def run() -> MatrixResult:
        executor = LocalExecutor(jobs=1)
        try:
            return run_matrix(load_matrix_config(config), executor)
        finally:
            executor.close()

    weights(0)
    cwd = Path.cwd()
    os.chdir(tmp_path)  # torch.load('weights.pt') reads beside the config
    try:
        first = run()
        assert all(c.status == "ok" and not c.cached for c in first.cells), first.cells
        same = run()
        assert all(c.cached for c in same.cells)
        weights(1)  # retrained
        again = run()
    finally:
        os.chdir(cwd)
    assert all(c.status == "ok" and not c.cached for c in again.cells), again.cells
    assert [c.min_cosine for c in again.cells] != [None, None]


def test_an_unknown_op_type_of_a_pytorch_source_fails_its_cells_in_the_configs_names(tmp_path: Path) -> None:
    """As run says it right after the export: a PyTorch source's custom ops are known only then.
    The fp16 and int8 cells failed as ``--fp32-ops`` and ``--exclude-ops``, build's flags, which
    the matrix's config does not have."""
    (tmp_path / "net.py").write_text(
        "import torch\n\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
    )
    config = tmp_path / "m.toml"
    config.write_text(
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\nfp32_ops = ["Relu", "Sofmax"]\n'
        '[calibration]\nexclude_ops = ["Sofmax"]\nsamples = 4\nbatch_size = 2\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16", "int8"]\n'
        '[[matrix.models]]\nsource = "net.py:build"\ninputs = ["x:1x3x8x8"]\n'
    )
    fp32, fp16, int8 = _run_local(config).cells
    assert fp32.status == "ok", fp32
    assert fp16.status == "failed" and fp16.reason == "config [build] fp32_ops: no ONNX op type named Sofmax"
    said = "config [calibration] exclude_ops: no ONNX op type named Sofmax"
    assert int8.status == "failed" and int8.reason == said, int8


def test_an_export_warning_reaches_the_matrix_output(tmp_path: Path) -> None:
    from edgedeploy.ui import Ui

    (tmp_path / "fixed.py").write_text(
        "import torch\n\n\nclass Fixed(torch.nn.Module):\n    def forward(self, x):\n"
        "        return x.reshape(int(x.shape[0]), -1) * 2\n\n\ndef build():\n    return Fixed()\n"
    )
    config = tmp_path / "m.toml"
    config.write_text(
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\n[profile]\nenabled = false\n'
        '[bundle]\nenabled = false\n[matrix]\ntargets = ["rtx4090"]\nprecisions = ["fp32"]\n'
        '[[matrix.models]]\nsource = "fixed.py:build"\ninputs = ["x:2x4"]\n'
    )
    ui, executor = Ui(quiet=True), LocalExecutor(jobs=1)
    try:
        run_matrix(load_matrix_config(config), executor, ui=ui)
    finally:
        executor.close()
    assert any("fixed: export: --dynamic-batch: the batch of x (2) came out fixed" in m for m in ui.messages)


def _padded_matrix(folder: Path, model: Path, target: str, profile: str) -> Path:
    """A one-cell matrix config (fp32 on ``target``) of the reflect-padded model and its compare
    data in ``folder``; ``profile``: the lines of its [profile] section (and any after it)."""
    reflect_padded_data(folder)
    path = folder / "m.toml"
    path.write_text(
        f'workdir = "out"\n[compare]\ndata = "val.npz"\nbatch_size = 2\n[profile]\n{profile}\n'
        f'[matrix]\ntargets = ["{target}"]\nprecisions = ["fp32"]\n'
        f'[[matrix.models]]\nname = "padded"\nsource = "{model}"\n'
    )
    return path


def _run_local(path: Path, ui: Ui | None = None) -> MatrixResult:
    """The matrix config at ``path`` on a one-worker local pool."""
    executor = LocalExecutor(jobs=1)
    try:
        return run_matrix(load_matrix_config(path), executor, ui=ui or Ui(quiet=True))
    finally:
        executor.close()


def test_a_cell_profiles_dynamic_dims_as_the_compare_data_has_them(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """As ``run`` does: a dim [model] inputs leave open is timed at the compare data's size (this
    model refuses it fed as 1, which failed the cell)."""
    profile = "iterations = 3\nwarmup = 1\nbatch_sizes = [2]\n[bundle]\nenabled = false"
    path = _padded_matrix(tmp_path, reflect_padded_onnx, "x86-64-cpu", profile)
    (cell,) = _run_local(path).cells
    assert cell.status == "ok" and cell.latency_ms is not None, cell


def _bug(path: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    raise ValueError(f"no {path}")


def test_a_cell_onnxruntime_refuses_says_the_line_the_cli_says_and_only_a_bug_says_where(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """Compare data of 1 sample a row, which this model's reflect padding cannot take: the cell
    read "InvalidArgument: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ... (onnxruntime_inference_
    collection.py:406)", where the CLI says the same refusal in its one line; now the cell says
    that line. An unexpected exception (a bug) still names its file and line."""
    profile = "iterations = 3\nwarmup = 1\nbatch_sizes = [2]\n[bundle]\nenabled = false"
    path = _padded_matrix(tmp_path, reflect_padded_onnx, "x86-64-cpu", profile)
    np.savez(tmp_path / "val.npz", x=np.zeros((4, 1), np.float32))
    (cell,) = _run_local(path).cells
    assert cell.status == "failed", cell
    assert cell.reason.startswith("ONNX Runtime refused the model or its input: "), cell.reason
    assert "Pad reflect requires axis length >= 2" in cell.reason, cell.reason
    assert "[ONNXRuntimeError]" not in cell.reason and ".py:" not in cell.reason, cell.reason
    bug = run_task(_bug, "x")
    assert isinstance(bug, Failed) and bug.reason.startswith("ValueError: no x (test_matrix.py:"), bug


def test_a_gpu_bundle_of_unranged_dims_is_refused_with_the_profile_to_give(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """As ``run``: the device's engine needs a shape range for a dynamic dim besides the batch; the
    cells run, their bundle is refused in one line that says what to give (it was made, and its
    build_engine.sh refused on the device)."""
    backend = 'enabled = false\n[build]\nbackend = "onnxruntime"'
    (tmp_path / "a").mkdir()
    path = _padded_matrix(tmp_path / "a", reflect_padded_onnx, "jetson-orin-nx", backend)
    ui = Ui(quiet=True)
    result = _run_local(path, ui)
    warned = [m.removeprefix("warning: ") for m in ui.messages if m.startswith("warning: ")]
    (cell,) = result.cells
    assert cell.status == "ok", cell
    assert result.bundles == {}
    # a [[matrix.cells]] entry for this model and target: "[build] profiles = ..." reached every
    # model's cells; the onnxruntime backend takes them for the bundle (it refused them, and the
    # entry said backend = "auto" too)
    profiles = "[{ x = { min = [1, 16], opt = [2, 16], max = [2, 16] } }]"
    suggested = (
        f'a [[matrix.cells]] entry of model = "padded", target = "jetson-orin-nx" and '
        f"build = {{ profiles = {profiles} }}"
    )
    assert [w for w in warned if w.startswith("bundle padded/jetson-orin-nx: ")], warned
    assert any(w.endswith(suggested) or f"{suggested} (" in w for w in warned), warned
    cells = '[[matrix.cells]]\nmodel = "padded"\ntarget = "jetson-orin-nx"\n'
    path.write_text(path.read_text() + cells + f"build = {{ profiles = {profiles} }}\n")
    made = _run_local(path)
    assert list(made.bundles) == ["padded/jetson-orin-nx"]
    manifest = json.loads((Path(made.bundles["padded/jetson-orin-nx"]) / "manifest.json").read_text())
    assert manifest["build"]["profiles"] == [{"x": {"min": [1, 16], "opt": [2, 16], "max": [2, 16]}}]
    # without bundles nothing uses them: refused as before
    ort = 'backend = "onnxruntime"'
    path.write_text(path.read_text().replace(ort, f"{ort}\n[bundle]\nenabled = false"))
    with pytest.raises(InputError, match=r"\[build\] profiles: TensorRT options, unused by the onnxruntime"):
        load_matrix_config(path)
    path = _padded_matrix(tmp_path, reflect_padded_onnx, "jetson-orin-nx", "enabled = false")
    # a profile that does not take the reference inputs: verify.sh could not run them on the device
    narrow = "profiles = [{ x = { min = [1, 8], opt = [2, 8], max = [2, 8] } }]"
    path.write_text(path.read_text().replace("[compare]", f"[build]\n{narrow}\n[compare]"))
    ui = Ui(quiet=True)
    assert _run_local(path, ui).bundles == {}
    assert any("'x' [2, 16] lies outside every shape profile" in m for m in ui.messages), ui.messages


def test_a_missed_accuracy_budget_fails_its_cell_and_keeps_the_search_steps(tmp_path: Path) -> None:
    """A budget not met even in fp32 fails the cell (exit 1 for `run`), and the steps file its
    reason names exists: the precision task's scratch folder is gone, so the driver writes it
    where the model's bundles go (before, the reason named a file in the deleted scratch)."""
    import json

    from tests.precision import models

    models.save_beyond_fp32_fallback(tmp_path)
    config = tmp_path / "m.toml"
    config.write_text(
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\nkeep_io_types = false\n'
        'accuracy_budget = "snr>=200"\n[compare]\ndata = "x.npz"\nbatch_size = 8\n'
        '[calibration]\ndata = "x.npz"\nbatch_size = 8\n[profile]\nenabled = false\n'
        '[bundle]\noutput = "bundles"\n[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp16"]\n'
        '[[matrix.models]]\nname = "ln"\nsource = "m.onnx"\n'
    )
    (cell,) = _run_local(config).cells
    assert cell.status == "failed" and "not met even with all" in cell.reason, cell
    steps = tmp_path / "bundles" / "ln" / "x86-64-cpu.ln.fp16.budget.json"
    assert f"steps in {steps}" in cell.reason, cell.reason
    assert not json.loads(steps.read_text())["met"]


def test_a_top1_budget_without_class_scores_is_refused_when_the_matrix_loads(tmp_path: Path) -> None:
    """As run refuses it (its cells' configs are checked as run's): before any cell, where every
    cell ran and the fp16 one failed after its conversion."""
    from tests.precision import models

    models.save_dense_map(tmp_path)
    config = tmp_path / "m.toml"
    config.write_text(
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\naccuracy_budget = "top1>=0.99"\n'
        '[compare]\ndata = "seg.npz"\nbatch_size = 8\n[profile]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nname = "seg"\nsource = "seg.onnx"\n'
    )
    with pytest.raises(InputError, match=r"accuracy_budget top1 needs an output shaped \(batch, classes\)"):
        load_matrix_config(config)
    assert not (tmp_path / "out").exists()


def test_a_precision_slower_than_fp32_on_its_target_is_said_as_run_says_it() -> None:
    """PP-OCR's direction classifier on x86-64-vnni: int8 1.96 ms against fp32's 1.2 ms, which
    `run` said and `matrix` did not. Not for a GPU target measured on this CPU."""
    from types import SimpleNamespace

    from edgedeploy.pipeline.matrix import CellResult, _warn_slower
    from edgedeploy.pipeline.matrix_config import Cell
    from edgedeploy.ui import Ui

    def summary(ms: float) -> dict[str, object]:
        return {"backend": "onnxruntime", "batch_sizes": {"1": {"median_ms": ms}}}

    results = {}
    for target in ("x86-64-vnni", "jetson-orin-nano"):
        for precision, ms in (("fp32", 1.2), ("fp16", 1.25), ("int8", 1.96)):
            cell = Cell("cls", target, precision)
            results[cell] = CellResult(cell.model, target, precision, "ok", "", "onnxruntime")
            results[cell].profile = summary(ms)
    results[Cell("cls", "x86-64-vnni", "fp16")].status = "failed"
    matrix = SimpleNamespace(cells=[SimpleNamespace(cell=cell) for cell in results])
    ui = Ui(quiet=True)
    _warn_slower(matrix, results, ui)  # type: ignore[arg-type]
    said = "cls/x86-64-vnni: int8 ran slower than fp32 here (p50 1.96 ms against fp32's 1.2 ms at batch 1)"
    assert ui.messages == [f"warning: {said}"]


def test_bundles_are_not_written_into_a_runs_bundle(project: Path) -> None:
    """run and matrix both default to bundle/ beside their config: the matrix wrote its
    <model>/<target> bundles inside the run's bundle, which verify and run then refused."""
    root = project / "inbundle-bundles"
    (root / "scripts").mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="lies in the bundle"):
        load_matrix_config(_config(project, "inbundle"))
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "scripts"]


def test_bundles_are_not_written_into_the_workdirs_stage_cache(project: Path) -> None:
    """[bundle] output = "farm/.edgedeploy-cache/bb" put every (model, target) bundle among the
    stage records and finished cells (a model named "matrix" among the cells' store itself); now
    refused at the config check, as run refuses it."""
    path = _config(project, "incache")
    path.write_text(
        path.read_text().replace('output = "incache-bundles"', 'output = "incache/.edgedeploy-cache/bb"')
    )
    with pytest.raises(
        InputError, match=r"bundle.output .*bb lies in the stage cache .*incache/.edgedeploy-cache"
    ):
        load_matrix_config(path)
    assert not (project / "incache").exists()


def test_a_file_where_a_bundle_folder_goes_is_refused_before_any_work(project: Path) -> None:
    """A model named like its source file with [bundle] output "." (<output>/<model> is that file)
    built every cell and then failed with a raw 'File exists'; now refused first, in one line."""
    path = project / "onfile.toml"
    path.write_text(
        'workdir = "onfile"\n[build]\nbackend = "onnxruntime"\n[bundle]\noutput = "."\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32"]\n'
        '[[matrix.models]]\nname = "a.onnx"\nsource = "a.onnx"\n'
    )
    before = (project / "a.onnx").read_bytes()
    with pytest.raises(InputError, match=r"a\.onnx/x86-64-cpu cannot be made: .*a\.onnx is a file"):
        load_matrix_config(path)
    result = run_cli("matrix", path, cwd=project)
    assert_clean_input_error(result, "is a file: set another bundle.output")
    assert not (project / "onfile").exists()  # no cell ran
    assert (project / "a.onnx").read_bytes() == before


def test_a_profile_times_alone_on_its_machine() -> None:
    """Cells profiled side by side read up to 2x their latency alone (captcha-rec on 2 cores:
    16.3 ms at --jobs 2 against 7.4 ms): a profile holds the machine's timing lock exclusively,
    and other matrix work (builds, compares, calibration) shares it, in any worker process."""
    import subprocess
    import sys
    import time

    from edgedeploy.pipeline.executors import timing_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom edgedeploy.pipeline.executors import timing_lock\n"
         "with timing_lock(exclusive=True):\n    print('held', flush=True)\n    time.sleep(1.5)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    start = time.perf_counter()
    with timing_lock(exclusive=False):
        waited = time.perf_counter() - start
    holder.wait(10)
    assert waited > 0.8, waited  # a build waits for the profile to end
    with timing_lock(exclusive=False), timing_lock(exclusive=False):  # shared holders run side by side
        pass


def test_the_timing_lock_file_goes_with_its_last_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``matrix`` left ``edgedeploy-timing-UID.lock`` in TMPDIR for good: the last holder removes it,
    and no holder while another (here a second open of the file, as another process) still holds it."""
    import tempfile

    from edgedeploy.pipeline.executors import timing_lock

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with timing_lock(exclusive=True):
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []
    with timing_lock(exclusive=False):
        with timing_lock(exclusive=False):
            pass
        assert len(list(tmp_path.iterdir())) == 1  # the outer holder still holds it
    assert list(tmp_path.iterdir()) == []


def test_two_models_of_one_source_each_keep_their_own_files(project: Path) -> None:
    """Two [[matrix.models]] of one ONNX file (or byte-identical files) shared one export entry of
    the cache, stored under one model's name: 'model file not found: .../a.fp32.onnx', exit 2, and
    on the rerun a KeyError traceback."""
    path = project / "twins.toml"
    path.write_text(
        'workdir = "twins"\n[build]\nbackend = "onnxruntime"\n[compare]\nsamples = 8\n'
        '[profile]\nenabled = false\n[bundle]\noutput = "twins-bundles"\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nname = "a"\nsource = "a.onnx"\n[[matrix.models]]\nname = "b"\nsource = "a.onnx"\n'
    )
    for _ in range(2):  # the run, and the rerun from the cache
        result = run_cli("matrix", path, "--json", project / "twins.json", cwd=project)
        assert result.code == 0, result.stderr
        assert "Traceback" not in result.stderr
        cells = json.loads((project / "twins.json").read_text())["cells"]
        done = {(c["model"], c["precision"]) for c in cells if c["status"] in ("ok", "cached")}
        assert done == {(m, p) for m in "ab" for p in ("fp32", "fp16")}


_DRIVER = """
import sys, time
from edgedeploy.pipeline.executors import LocalExecutor
executor = LocalExecutor(jobs=2)
for _ in range(2):
    executor.submit("t", time.sleep, (120,), None)
processes = executor._pool._processes
while len(processes) < 2:
    time.sleep(0.05)
print(" ".join(str(pid) for pid in processes), flush=True)
time.sleep(120)
"""


def test_pool_workers_end_when_the_matrix_driver_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the driver (the OOM killer, a CI timeout) left its spawned workers alive for good,
    blocked on the pool's pipe, ~300 MB each: a worker now ends when its parent is gone."""
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert driver.stdout is not None
    workers = [int(pid) for pid in driver.stdout.readline().split()]
    assert len(workers) == 2
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in workers if _alive(pid)]
    for pid in alive:  # don't leave them behind when the test fails
        os.kill(pid, 9)
    assert not alive, f"workers {alive} outlived the killed driver"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_cell_built_from_its_calibrated_precision_onnx_does_not_say_its_data_was_not_used(
    tmp_path: Path,
) -> None:
    """Every fp16 and int8 cell of a matrix with [calibration] data warned "[calibration] data: not
    used: m.fp16.onnx is already an fp16 model", though the data had made that model: the cell's
    build of the precision ONNX its precision step made is not a build of a user's fp16 model."""
    rng = _matmul_relu(tmp_path)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 16)).astype(np.float32))
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "farm"\n[calibration]\ndata = "calib.npz"\nsamples = 32\n[compare]\ndata = "val.npz"\n'
        "samples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n[matrix]\n"
        'targets = ["x86-64-cpu"]\nprecisions = ["fp16", "int8"]\n[[matrix.models]]\nsource = "m.onnx"\n'
    )
    ui = Ui(quiet=True)
    cells = _run_local(config, ui).cells
    assert [c.status for c in cells] == ["ok", "ok"], cells
    for cell in cells:
        assert not any("not used" in w for w in cell.warnings), cell.warnings
    assert not any("not used" in m for m in ui.messages), ui.messages


def _counting_loader(folder: Path, counter: Path, rng: np.random.Generator) -> None:
    """``folder``/load.py, a loader of 32 samples of x[N,16] in batches of 8 that notes each call of
    load_data() as a line of ``counter``, with where it ran: ``key`` (the driver keying a cell) or
    ``task`` (anywhere else)."""
    np.save(folder / "calib.npy", rng.standard_normal((32, 16)).astype(np.float32))
    (folder / "load.py").write_text(
        "import traceback\nimport numpy as np\n\ndef load_data():\n"
        "    keying = any(f.name == '_key_cell' for f in traceback.extract_stack())\n"
        f"    with open({str(counter)!r}, 'a') as fh:\n        fh.write('key\\n' if keying else 'task\\n')\n"
        f"    a = np.load({str(folder / 'calib.npy')!r})\n"
        "    for i in range(0, len(a), 8):\n        yield {'x': a[i : i + 8]}\n"
    )


def test_a_matrix_hashes_a_loader_scripts_feeds_once_for_every_cells_key(tmp_path: Path) -> None:
    """The driver keyed every fp16/int8 cell by the sha256 of a .py loader's feeds and ran the
    loader again for each cell (a rerun with every cell cached ran it once per cell), and each
    precision and cell task ran it again; the feeds of the driver's one read are kept for every
    key and sent to the tasks, which calibrate on the bytes their keys hashed."""
    rng = _matmul_relu(tmp_path)
    counter = tmp_path / "runs.txt"
    _counting_loader(tmp_path, counter, rng)
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "farm"\n[calibration]\ndata = "load.py"\nsamples = 32\nalgorithm = "max"\n'
        '[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu", "x86-64-vnni"]\nprecisions = ["fp16", "int8"]\n'
        '[[matrix.models]]\nsource = "m.onnx"\n'
    )

    def runs() -> list[str]:
        said = counter.read_text().splitlines()
        counter.unlink()
        return said

    cells = _run_local(config).cells
    assert [c.status for c in cells] == ["ok"] * 4, cells
    assert runs() == ["key"]  # the precision and cell tasks calibrate on the keyed feeds, sent to them
    again = _run_local(config).cells
    assert all(c.cached for c in again), again
    assert runs() == ["key"]
    assert not [p.name for p in (tmp_path / "farm").iterdir() if "feeds" in p.name]


@pytest.mark.parametrize(
    "precisions", [["fp32", "fp16", "int8"], ["fp32"]], ids=["fp32-fp16-int8", "fp32-only"]
)
def test_fp32_cells_run_their_build_check_on_the_kept_feeds_not_the_loader(
    tmp_path: Path, precisions: list[str]
) -> None:
    """An fp32 cell's build runs its artifact once on the first batch of the [calibration] data
    (build.data_batch), and its task opened a loader script itself: a matrix of fp32, fp16 and int8
    ran the loader twice, and one of fp32 alone once per cell. Every cell's task now takes that
    batch from the feeds the driver kept, so the loader runs once per matrix."""
    rng = _matmul_relu(tmp_path)
    counter = tmp_path / "runs.txt"
    _counting_loader(tmp_path, counter, rng)
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "farm"\n[calibration]\ndata = "load.py"\nsamples = 32\nalgorithm = "max"\n'
        '[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
        f'[matrix]\ntargets = ["x86-64-cpu", "x86-64-vnni"]\nprecisions = {json.dumps(precisions)}\n'
        '[[matrix.models]]\nsource = "m.onnx"\n'
    )
    cells = _run_local(config).cells
    assert [c.status for c in cells] == ["ok"] * 2 * len(precisions), cells
    assert counter.read_text().splitlines() == ["key"]
    assert not [p.name for p in (tmp_path / "farm").iterdir() if "feeds" in p.name]


def test_an_fp32_cell_is_built_again_on_new_calibration_data_its_artifact_check_runs_on(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """An fp32 cell's build runs its artifact once on the first batch of the [calibration] data and
    records what that found (``checked``), but the cell's key left the data out: data this model
    refuses (a reflect pad of 2 on 2 samples) after data it runs took the cell from the store,
    "loaded and run once". The key now holds the data's identity, as ``run``'s fp32 build key does."""
    no_profile = "enabled = false\n[bundle]\nenabled = false"
    path = _padded_matrix(tmp_path, reflect_padded_onnx, "x86-64-cpu", no_profile)
    path.write_text(path.read_text() + '[calibration]\ndata = "calib.npz"\nsamples = 4\nbatch_size = 2\n')
    said = []
    for seed, length in enumerate((16, 2, 16)):  # runs, fails the model, runs (on other values)
        x = np.random.default_rng(seed).normal(size=(4, length)).astype(np.float32)
        np.savez(tmp_path / "calib.npz", x=x)
        (cell,) = _run_local(path).cells
        assert cell.status == "ok" and not cell.cached, cell
        record = json.loads((Path(cell.artifact).parent / "record.json").read_text())
        said.append(record["result"]["info"]["checked"])
    assert said[0] == said[2] == "loaded and run once", said
    assert said[1].startswith("loaded, not run: the calibration data fail the model it was made from"), said
    assert _run_local(path).cells[0].cached  # the same data: from the store


def test_an_fp16_cell_of_float16_inputs_checks_its_build_on_the_kept_feeds_not_the_loader(
    tmp_path: Path,
) -> None:
    """With keep_io_types = false the fp16 model takes float16 inputs, and its cell's build looked
    up the driver's kept feeds by those inputs, which they were not kept for (the fp32 model's
    float32 ones): each fp16 cell's task ran the loader script again. The batch is now opened for
    the fp32 model's inputs, as ``run`` opens it, and cast to float16 when the artifact runs."""
    rng = _matmul_relu(tmp_path)
    counter = tmp_path / "runs.txt"
    _counting_loader(tmp_path, counter, rng)
    config = tmp_path / "matrix.toml"
    config.write_text(
        'workdir = "farm"\n[build]\nkeep_io_types = false\n'
        '[calibration]\ndata = "load.py"\nsamples = 32\nalgorithm = "max"\n'
        '[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu", "x86-64-vnni"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nsource = "m.onnx"\n'
    )
    cells = _run_local(config).cells
    assert [c.status for c in cells] == ["ok"] * 4, cells
    assert counter.read_text().splitlines() == ["key"]
    for cell in (c for c in cells if c.precision == "fp16"):
        folder = Path(cell.artifact).parent
        fp16_model = onnx.load(folder / "m.fp16.onnx", load_external_data=False)
        assert fp16_model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
        info = json.loads((folder / "record.json").read_text())["result"]["info"]
        assert info["checked"] == "loaded and run once", info


FAILING_LOADER = """
import numpy as np


def load_data():
    yield {"x": np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)}
    raise RuntimeError("disk gone")
"""


@pytest.mark.parametrize("command", ["run", "matrix"])
@pytest.mark.parametrize("precisions", [["fp32"], ["fp32", "fp16", "int8"]], ids=["fp32", "all"])
def test_a_loader_script_failing_after_its_first_batch_is_refused_alike_by_run_and_matrix(
    tmp_path: Path, command: str, precisions: list[str]
) -> None:
    """A [calibration] loader that yields a batch, then raises: ``run`` failed at the fp16 key in one
    line naming no batch (after building fp32 on random inputs, the loader's failure passed over as
    data the model cannot take; fp32 alone ran and exited 0), and ``matrix`` failed its fp16 and int8
    cells (exit 1) and bundled the fp32 ones. Both now refuse it in one line naming the loader and
    the batch it failed at, exit 2, before any build: no cell in the store, no bundle."""
    _matmul_relu(tmp_path)
    (tmp_path / "load.py").write_text(FAILING_LOADER)
    common = (
        '[calibration]\ndata = "load.py"\nsamples = 32\nalgorithm = "max"\n[compare]\ndata = "val.npz"\n'
        '[profile]\nenabled = false\n[bundle]\noutput = "bundles"\n'
    )
    config = tmp_path / f"{command}.toml"
    if command == "run":
        config.write_text(
            f'workdir = "work"\n[model]\nsource = "m.onnx"\n[build]\nprecisions = {json.dumps(precisions)}\n'
            + common
        )
    else:
        config.write_text(
            f'workdir = "work"\n{common}[matrix]\ntargets = ["x86-64-cpu", "x86-64-vnni"]\n'
            f'precisions = {json.dumps(precisions)}\n[[matrix.models]]\nsource = "m.onnx"\n'
        )
    result = run_cli(command, config, cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr, (result.code, result.stderr)
    said = result.stderr.strip().splitlines()  # the export's line may come first, then the one error
    assert [line for line in said if line.startswith("error")] == said[-1:], said
    for needle in (f"data loader script {tmp_path / 'load.py'}", "(batch 1)", "disk gone"):
        assert needle in said[-1], said[-1]
    work = tmp_path / "work"
    assert not [p.name for p in work.iterdir() if p.name.endswith((".ort.onnx", ".ort.json"))], list(
        work.iterdir()
    )
    store = work / ".edgedeploy-cache"
    recorded = {p.name for p in store.rglob("*") if p.is_file()} if store.exists() else set()
    entries = [p for p in (store / "matrix").iterdir()] if (store / "matrix").is_dir() else []
    assert len(entries) <= 1, entries  # the export's, no cell's
    assert not recorded & {"build-fp32.json", "bundle.json"}, recorded
    assert not (tmp_path / "bundles").exists() and not (tmp_path / "bundles.tar.gz").exists()
    assert not [p.name for p in work.rglob("*") if "feeds" in p.name]


class _Recording(LocalExecutor):
    """A local pool that notes the size of each task's pickled arguments, by task kind."""

    sizes: list[tuple[str, int]]

    def submit(self, tag: Any, fn: Any, args: tuple[Any, ...], placement: Any) -> None:
        self.sizes.append((str(tag[0]), len(pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL))))
        super().submit(tag, fn, args, placement)


def _wide_loader(folder: Path, counter: Path) -> int:
    """``folder``/m.onnx (x[N,1024] -> MatMul -> Relu), its compare data val.npz and load.py, a
    loader of 16 batches of 64 samples (4 MB of feeds) that notes each call as a line of
    ``counter``; returns the size of the feeds in bytes (one batch is a 16th)."""
    rng = np.random.default_rng(0)
    width = 1024
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"), helper.make_node("Relu", ["y"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(rng.standard_normal((width, 8)).astype(np.float32), "W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "m.onnx")
    np.savez(folder / "val.npz", x=rng.standard_normal((8, width)).astype(np.float32))
    (folder / "load.py").write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    open({str(counter)!r}, 'a').write('load\\n')\n"
        "    rng = np.random.default_rng(1)\n    for _ in range(16):\n"
        f"        yield {{'x': rng.standard_normal((64, {width})).astype(np.float32)}}\n"
    )
    return 16 * 64 * width * 4


def test_local_workers_are_sent_the_kept_feeds_path_and_only_other_machines_their_bytes(
    tmp_path: Path,
) -> None:
    """Each precision and cell task was sent its own pickled copy of the loader's kept feeds: the
    data's size per task, in the pool's spill folder in TMPDIR and in each worker (a 4-cell matrix on
    100 MB: about 300 MB more in TMPDIR and 200 MB more peak memory than on a .npy file of the same
    arrays). Workers on this machine now get the kept files' paths; an executor whose tasks may run
    elsewhere (Ray) still sends the bytes. Both calibrate on the same bytes as the keys hashed."""
    counter = tmp_path / "runs.txt"
    data_bytes = _wide_loader(tmp_path, counter)
    text = (
        'workdir = "WORK"\n[calibration]\ndata = "load.py"\nsamples = 1024\nalgorithm = "max"\n'
        '[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu", "x86-64-vnni"]\nprecisions = ["fp16", "int8"]\n'
        '[[matrix.models]]\nsource = "m.onnx"\n'
    )
    made: dict[bool, dict[tuple[str, str], bytes]] = {}
    for same_machine in (True, False):
        config = tmp_path / f"{same_machine}.toml"
        config.write_text(text.replace("WORK", f"farm-{same_machine}"))
        executor = _Recording(jobs=2 if same_machine else 1, same_machine=same_machine)
        executor.sizes = []
        try:
            cells = run_matrix(load_matrix_config(config), executor, ui=Ui(quiet=True)).cells
        finally:
            executor.close()
        assert [c.status for c in cells] == ["ok"] * 4, cells
        assert counter.read_text().splitlines() == ["load"]  # the driver's read, for every key and task
        counter.unlink()
        tasks = [size for kind, size in executor.sizes if kind in ("precision", "cell")]
        assert len(tasks) == 7  # fp16 once, int8 once per target's placement, and the 4 cells
        if same_machine:
            assert max(tasks) < data_bytes / 8, executor.sizes
        else:  # a cell task is sent the one feed its build reads (the Ray test below)
            assert min(size for kind, size in executor.sizes if kind == "precision") > data_bytes
            assert max(size for kind, size in executor.sizes if kind == "cell") < data_bytes / 8
        made[same_machine] = {(c.target, c.precision): Path(c.artifact).read_bytes() for c in cells}
    assert made[True] == made[False]  # calibrated on the same bytes


class _RecordingRay(RayExecutor):
    """A Ray executor that notes, for each task by kind, the size of what its arguments send by value
    (pickled, ObjectRefs left out) and the ObjectRefs among them (what it reads from the object store)."""

    sent: list[tuple[str, int, tuple[str, ...]]]

    def submit(self, tag: Any, fn: Any, args: tuple[Any, ...], placement: Any) -> None:
        import ray

        by_value = [a for a in args if not isinstance(a, ray.ObjectRef)]
        refs = tuple(a.hex() for a in args if isinstance(a, ray.ObjectRef))
        size = len(pickle.dumps(by_value, protocol=pickle.HIGHEST_PROTOCOL))
        self.sent.append((str(tag[0]), size, refs))
        super().submit(tag, fn, args, placement)


def test_ray_precision_tasks_share_one_put_of_the_kept_feeds_and_cell_tasks_get_the_first_batch(
    tmp_path: Path, ray_cluster: dict[str, str]
) -> None:
    """Every Ray cell task was sent the bytes of all of a loader script's kept feeds (the data's size
    per cell), though a cell reads only their first batch: its build runs the artifact on it once
    (build.data_batch); a cell task is now sent that batch alone. Each precision task (fp16, and
    int8 per target family) was sent all of them by value, a copy per task in the object store,
    though all run on the driver's node: they are now put there once (ray.put, as Ray's docs
    advise for a large argument passed to several tasks) and each task is passed that reference.
    The keys and artifacts are those of a local run on the same data."""
    counter = tmp_path / "runs.txt"
    data_bytes = _wide_loader(tmp_path, counter)
    text = (
        'workdir = "WORK"\n[calibration]\ndata = "load.py"\nsamples = 1024\nalgorithm = "max"\n'
        '[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16", "int8"]\n'
        '[[matrix.models]]\nsource = "m.onnx"\n'
    )
    (tmp_path / "local.toml").write_text(text.replace("WORK", "farm-local"))
    local = _run_local(tmp_path / "local.toml").cells
    (tmp_path / "ray.toml").write_text(text.replace("WORK", "farm-ray"))
    executor = _RecordingRay(address=ray_cluster["address"])
    executor.sent = []
    try:
        cells = run_matrix(load_matrix_config(tmp_path / "ray.toml"), executor, ui=Ui(quiet=True)).cells
    finally:
        executor.close()
    assert [c.status for c in cells] == ["ok"] * 3, cells
    assert counter.read_text().splitlines() == ["load"] * 2  # the local driver's read, then Ray's driver's
    precision = [(size, refs) for kind, size, refs in executor.sent if kind == "precision"]
    assert len(precision) == 2 and max(size for size, _ in precision) < data_bytes / 8, executor.sent
    # the fp32 model's bytes and the feeds, each put once: every precision task reads the same two
    assert len({refs for _, refs in precision}) == 1 and len(precision[0][1]) == 2, executor.sent
    cell = [size for kind, size, _ in executor.sent if kind == "cell"]
    assert len(cell) == 3 and max(cell) < data_bytes / 8, executor.sent
    keys = {name: {p.name for p in (tmp_path / name / ".edgedeploy-cache" / "matrix").iterdir()}
            for name in ("farm-local", "farm-ray")}  # fmt: skip
    assert keys["farm-local"] == keys["farm-ray"]
    assert [Path(c.artifact).read_bytes() for c in cells] == [Path(c.artifact).read_bytes() for c in local]


def test_ray_cell_tasks_share_one_put_of_the_first_batch_of_the_kept_feeds(
    tmp_path: Path, ray_cluster: dict[str, str]
) -> None:
    """Each Ray cell task was sent the first batch of a loader script's kept feeds by value (its
    build runs the artifact on it once, build.data_batch): one copy per cell in the object store,
    264 KB each in a measurement, where the precision tasks share one ray.put of the feeds. The
    first batch is now put once per data set too, and every cell task is passed that reference."""
    counter = tmp_path / "runs.txt"
    data_bytes = _wide_loader(tmp_path, counter)
    (tmp_path / "ray.toml").write_text(
        'workdir = "farm"\n[calibration]\ndata = "load.py"\nsamples = 1024\nalgorithm = "max"\n'
        '[compare]\ndata = "val.npz"\nsamples = 8\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16", "int8"]\n'
        '[[matrix.models]]\nsource = "m.onnx"\n'
    )
    executor = _RecordingRay(address=ray_cluster["address"])
    executor.sent = []
    try:
        cells = run_matrix(load_matrix_config(tmp_path / "ray.toml"), executor, ui=Ui(quiet=True)).cells
    finally:
        executor.close()
    assert [c.status for c in cells] == ["ok"] * 3, cells
    cell = [(size, set(refs)) for kind, size, refs in executor.sent if kind == "cell"]
    assert len(cell) == 3, executor.sent
    # by value: the request and the small arguments only, not a batch (a 16th of the data)
    assert max(size for size, _ in cell) < data_bytes / 16 / 8, executor.sent
    # the fp32 model's bytes, the compare feeds and the first batch: each put once, read by every cell
    common = set.intersection(*(refs for _, refs in cell))
    assert len(common) == 3, executor.sent


@pytest.mark.parametrize("section", ["compare", "calibration"])
def test_the_same_data_spelled_otherwise_takes_every_cell_from_the_cache(
    tmp_path: Path, section: str
) -> None:
    """`[compare] data` as ``in/val``, ``/abs/in/val`` or ``./in/../in/val`` built, compared and
    profiled every cell again: the cell's key held the data's description with its path as written.
    `[calibration] data` so made the fp16 and int8 artifacts again: their keys held the request."""
    _mlp(tmp_path / "m.onnx", 0, 16, 32, 10)
    folder = tmp_path / "in" / "val"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(folder / f"{i}.npy", rng.standard_normal((4, 16)).astype(np.float32))
    config = tmp_path / "matrix.toml"
    text = (
        f'workdir = "farm"\n[{section}]\ndata = "DATA"\nsamples = 8\n[profile]\nenabled = false\n'
        '[bundle]\nenabled = false\n[matrix]\ntargets = ["x86-64-cpu"]\n'
        'precisions = ["fp32", "fp16", "int8"]\n[[matrix.models]]\nsource = "m.onnx"\n'
    )
    config.write_text(text.replace("DATA", "in/val"))
    cells = _run_local(config).cells
    assert [c.status for c in cells] == ["ok"] * 3 and not any(c.cached for c in cells), cells
    for spelled in (str(folder), "./in/../in/val", "in/val/"):
        config.write_text(text.replace("DATA", spelled))
        again = _run_local(config).cells
        assert all(c.cached for c in again), (spelled, again)


@pytest.mark.parametrize(
    ("address", "gcs", "joins"),
    [("10.0.0.5:6379", None, "10.0.0.5:6379"), ("auto", "10.0.0.7:6380", "10.0.0.7:6380"),
     ("ray://10.0.0.5:10001", None, "HEAD:6379")],
)  # fmt: skip
def test_a_board_no_ray_node_announces_is_told_the_clusters_address_to_join(
    address: str, gcs: str | None, joins: str
) -> None:
    """The skipped cell's hint said `ray start --address HEAD:6379` whatever --address the user gave:
    it now names that HOST:PORT, else the head's address Ray reported (a ray:// client address is
    not one a node joins; with neither, the placeholder stays)."""
    from edgedeploy.targets import load_target

    executor = object.__new__(RayExecutor)  # no cluster: only what skip_reason reads
    executor.address, executor._resources, executor._gcs_address = address, {}, gcs
    reason = executor.skip_reason(load_target("jetson-orin-nano"), "tensorrt") or ""
    assert f"ray start --address {joins} --resources" in reason, reason


def test_a_bundle_folder_holding_board_files_is_refused_before_its_cells_unless_up_to_date(
    project: Path,
) -> None:
    """matrix built every cell, then warned that a bundle folder's device/ held the board's files
    (engines, results) and left that bundle unmade. A folder that is not the bundle this workdir made
    is refused at the config check; this workdir's own bundle is refused before a cell it holds would
    be built again; a rerun with nothing to redo leaves it, and the board's files, as they are."""
    path = project / "board.toml"
    text = (
        'workdir = "board"\n[build]\nbackend = "onnxruntime"\n[compare]\nsamples = 8\n'
        '[profile]\nenabled = false\n[bundle]\noutput = "board-bundles"\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nsource = "a.onnx"\n'
    )
    path.write_text(text)
    assert list(_run_local(path).bundles) == ["a/x86-64-cpu"]
    device = project / "board-bundles" / "a" / "x86-64-cpu" / "device"
    (device / "results").mkdir(parents=True)
    (device / "results" / "verify-fp16.json").write_text("{}")
    again = _run_local(path)  # every cell cached: the bundle is not made again, nothing refused
    assert list(again.bundles) == ["a/x86-64-cpu"] and all(c.cached for c in again.cells)
    store = project / "board" / ".edgedeploy-cache" / "matrix"
    entries = sorted(store.iterdir())
    path.write_text(text.replace("samples = 8", "samples = 16"))  # every cell compares again
    with pytest.raises(InputError, match=r"x86-64-cpu/device holds 1 file written on the board"):
        _run_local(path)
    assert sorted(store.iterdir()) == entries  # refused before a cell was built
    other = project / "board-other.toml"
    other.write_text(text.replace('workdir = "board"', 'workdir = "board-other"'))
    with pytest.raises(InputError, match=r"x86-64-cpu/device holds 1 file written on the board"):
        load_matrix_config(other)
    assert (device / "results" / "verify-fp16.json").read_text() == "{}"


def test_a_cell_its_board_held_bundle_lacks_is_refused_before_any_cell_is_submitted(project: Path) -> None:
    """A bundle whose device/ holds the board's files was refused only before a cell of a precision
    it held: a cell it lacked (a precision added to the matrix, or one that failed before) was built,
    then the bundle was left unmade with a warning. Any cell that would make such a bundle again is
    now refused before anything is submitted, whatever its precision, the other targets' cells too."""
    path = project / "boardnew.toml"
    text = (
        'workdir = "boardnew"\n[build]\nbackend = "onnxruntime"\n[compare]\nsamples = 8\n'
        '[profile]\nenabled = false\n[bundle]\noutput = "boardnew-bundles"\n'
        '[matrix]\ntargets = ["x86-64-cpu", "jetson-orin-nano"]\nprecisions = ["fp32"]\n'
        '[[matrix.models]]\nsource = "a.onnx"\n'
    )
    path.write_text(text)
    assert sorted(_run_local(path).bundles) == ["a/jetson-orin-nano", "a/x86-64-cpu"]
    device = project / "boardnew-bundles" / "a" / "jetson-orin-nano" / "device"
    (device / "results").mkdir(parents=True)
    (device / "results" / "verify-fp32.json").write_text("{}")
    store = project / "boardnew" / ".edgedeploy-cache" / "matrix"
    entries = sorted(store.iterdir())
    path.write_text(text.replace('precisions = ["fp32"]', 'precisions = ["fp32", "fp16"]'))
    refused = r"jetson-orin-nano/device holds 1 file written on the board"
    assert _submitted_before_refusal(path, refused) == []  # nothing built, nor started
    assert sorted(store.iterdir()) == entries
    assert (device / "results" / "verify-fp32.json").read_text() == "{}"


def _submitted_before_refusal(path: Path, match: str) -> list[str]:
    """The tasks a local matrix of the config ``path`` submitted before it was refused with an
    InputError matching ``match`` (a refusal before any work submits none)."""
    submitted: list[str] = []

    class Recording(LocalExecutor):
        def submit(self, tag: Any, *args: Any, **kwargs: Any) -> None:
            submitted.append(tag[0])
            super().submit(tag, *args, **kwargs)

    executor = Recording(jobs=1)
    try:
        with pytest.raises(InputError, match=match):
            run_matrix(load_matrix_config(path), executor, ui=Ui(quiet=True))
    finally:
        executor.close()
    return submitted


@pytest.mark.parametrize("trigger", ["primary", "version"])
def test_a_board_held_bundle_its_cached_cells_would_make_again_is_refused(
    project: Path, trigger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every cell cached, a bundle whose device/ holds the board's files and whose own inputs
    changed (``[bundle] primary``, or the edgedeploy version its key holds: a release changes the
    cells' keys too, refused before) was left unmade with a warning, exit 0, where ``run`` refuses
    it in one line, exit 2. It is refused as run refuses it, before anything is submitted, and the
    bundle and the board's files stay as they are."""
    path = project / f"keep-{trigger}.toml"
    text = (
        f'workdir = "keep-{trigger}"\n[build]\nbackend = "onnxruntime"\n[compare]\nsamples = 8\n'
        f'[profile]\nenabled = false\n[bundle]\noutput = "keep-{trigger}-bundles"\n'
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nsource = "a.onnx"\n'
    )
    path.write_text(text)
    assert list(_run_local(path).bundles) == ["a/x86-64-cpu"]
    bundle = project / f"keep-{trigger}-bundles" / "a" / "x86-64-cpu"
    (bundle / "device" / "results").mkdir(parents=True)
    (bundle / "device" / "results" / "verify-fp16.json").write_text("{}")
    manifest = (bundle / "manifest.json").read_bytes()
    if trigger == "primary":
        path.write_text(text.replace("[bundle]\n", '[bundle]\nprimary = "fp32"\n'))
    else:  # what the bundle is keyed on; the cells' keys take the release from tool_versions
        monkeypatch.setattr("edgedeploy.pipeline.matrix.__version__", "99.0.0")
    assert _submitted_before_refusal(path, r"x86-64-cpu/device holds 1 file written on the board") == []
    assert (bundle / "manifest.json").read_bytes() == manifest
    assert (bundle / "device" / "results" / "verify-fp16.json").read_text() == "{}"


def test_matrix_speedups_compare_each_cell_with_fp32_at_a_batch_size_both_profiled(tmp_path: Path) -> None:
    """A cell profiled at batch 8 only ([[matrix.cells]] profile = { batch_sizes = [8] }) beside
    fp32 at 1 and 8: matrix.md gave int8 fp32's batch-1 p50 over int8's batch-8 p50 (0.25x, a
    speed-up across batch sizes) and the JSON no speed-up at all. The p50 and speed-up are now at
    the smallest batch size both profiled (as report's), and where they share none the cell has no
    speed-up, with the reason, in matrix.md and in the JSON."""
    from edgedeploy.pipeline.matrix import CellResult, MatrixResult, _matrix_report
    from edgedeploy.results import to_jsonable

    def cell(target: str, precision: str, medians: dict[str, float]) -> CellResult:
        result = CellResult("m", target, precision, "ok", "", "onnxruntime")
        result.profile = {"backend": "onnxruntime",
                          "batch_sizes": {b: {"median_ms": ms} for b, ms in medians.items()}}  # fmt: skip
        result.latency_ms = next(iter(medians.values()))  # as _summarise gives it: the first batch's
        return result

    cells = [
        cell("x86-64-cpu", "fp32", {"1": 1.0, "8": 4.0}),
        cell("x86-64-cpu", "int8", {"8": 2.0}),
        cell("x86-64-vnni", "fp32", {"1": 1.0}),
        cell("x86-64-vnni", "int8", {"8": 2.0}),
    ]
    result = MatrixResult("local", cells, {}, 1.0, 4)
    path = _matrix_report(result, tmp_path, Ui(quiet=True), [])
    if path is None:
        pytest.skip("matplotlib is not installed")
    rows = {
        tuple(c.strip() for c in line.split("|")[2:4]): [c.strip() for c in line.split("|")]
        for line in (tmp_path / "matrix.md").read_text().splitlines()
        if line.startswith("| m |")
    }
    assert rows[("x86-64-cpu", "int8")][6:8] == ["2", "2.00"]  # fp32's 4 ms at batch 8 over 2 ms
    assert rows[("x86-64-cpu", "fp32")][6:8] == ["4", "1.00"]
    assert rows[("x86-64-vnni", "int8")][7] == "-"
    why = "no batch size was profiled for both it and fp32 (int8: 8; fp32: 1)"
    assert f"m/x86-64-vnni/int8: no speed-up: {why}" in (tmp_path / "matrix.md").read_text()
    written = {(c["target"], c["precision"]): c for c in to_jsonable(result)["cells"]}
    assert written[("x86-64-cpu", "int8")]["speedup"] == 2.0
    assert written[("x86-64-cpu", "int8")]["batch_size"] == 8
    assert written[("x86-64-vnni", "int8")]["speedup"] is None
    assert written[("x86-64-vnni", "int8")]["no_speedup"] == why


def test_the_matrix_table_says_the_batch_size_its_p50_is_at(tmp_path: Path) -> None:
    """The terminal table's "p50 ms" is each cell's p50 at the batch size its (model, target)'s
    cells share (as matrix.md and --json say), but nothing on the terminal said which batch: an
    fp16 cell profiled at batch 8 only beside fp32 at 1 and 8 showed both at 8, read as batch 1."""
    from edgedeploy.stages.report.matrix import batch_notes

    _mlp(tmp_path / "a.onnx", 0, 16, 32, 10)
    path = tmp_path / "m.toml"
    path.write_text(
        'workdir = "w"\n[build]\nbackend = "onnxruntime"\n[compare]\nsamples = 8\nbatch_size = 8\n'
        "[profile]\niterations = 3\nwarmup = 1\nbatch_sizes = [1, 8]\n[bundle]\nenabled = false\n"
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16"]\n'
        '[[matrix.models]]\nsource = "a.onnx"\n'
        '[[matrix.cells]]\nprecision = "fp16"\nprofile = { batch_sizes = [8] }\n'
    )
    result = run_cli("matrix", path, "--jobs", "1", "--json", tmp_path / "m.json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    cells = json.loads((tmp_path / "m.json").read_text())["cells"]
    assert {c["batch_size"] for c in cells} == {8}
    assert "p50 at batch 8." in result.stdout.splitlines(), result.stdout
    # cells at other batch sizes each: the line names each one's (no speed-up column to explain here)
    mixed = [
        {"model": "a", "target": "x86-64-cpu", "precision": "fp32", "latency_ms": 1.0, "batch_size": 1},
        {"model": "a", "target": "x86-64-vnni", "precision": "fp16", "latency_ms": 2.0, "batch_size": 8,
         "no_speedup": "fp32 was not profiled"},
    ]  # fmt: skip
    assert batch_notes(mixed, speedups=False) == [
        "p50 not all at one batch size: a/x86-64-cpu/fp32 at batch 1, a/x86-64-vnni/fp16 at batch 8."
    ]


def test_fp16_artifacts_are_shared_only_by_targets_whose_runtime_keeps_the_same_ops_in_fp32() -> None:
    """An fp16 build keeps in fp32 what the target's runtime cannot run in fp16 (TensorRT for a GPU
    target, ONNX Runtime's CPU provider otherwise: a TopK is fp16 for one, fp32 for the other), so a
    matrix of a GPU and a CPU target makes two fp16 artifacts; it made one for both."""
    from edgedeploy.options import BuildRequest
    from edgedeploy.pipeline.matrix import precision_family
    from edgedeploy.targets import load_target

    cpu, vnni, orin = (load_target(t) for t in ("x86-64-cpu", "x86-64-vnni", "jetson-orin-nano"))
    request = BuildRequest("fp16", cpu)
    assert precision_family(orin, request) != precision_family(cpu, request)
    assert precision_family(vnni, request) == precision_family(cpu, request)
    assert precision_family(load_target("t4"), request) == precision_family(orin, request)


def test_a_gpu_targets_artifacts_on_the_onnxruntime_backend_are_tensorrts_as_its_bundle_builds_them() -> None:
    """A matrix with backend = "onnxruntime" checks a GPU target's cells on ONNX Runtime (on a node of
    that board), but its bundle's device builds a TensorRT engine from their artifacts: the fp16 ones
    keep TensorRT's ops of the converter's block list in fp32 and the int8 ones take TensorRT's
    placement, whatever the backend, and are keyed so (8fc9ae9 gave fp16 ONNX Runtime's list there,
    which the device's engine then ran in fp32 behind Casts). A CPU target's are ONNX Runtime's."""
    from edgedeploy.options import BuildRequest
    from edgedeploy.pipeline.matrix import precision_family
    from edgedeploy.targets import load_target

    cpu, orin = load_target("x86-64-cpu"), load_target("jetson-orin-nano")
    for backend in (
        "onnxruntime",
        "auto",
        "tensorrt",
    ):  # auto: TensorRT on the board, wherever this machine builds
        assert precision_family(orin, BuildRequest("fp16", orin, backend=backend)) == {"runtime": "tensorrt"}
        assert precision_family(orin, BuildRequest("int8", orin, backend=backend))["placement"] == "tensorrt"
    on_ort = BuildRequest("fp16", cpu, backend="onnxruntime")
    assert precision_family(cpu, on_ort) == {"runtime": "onnxruntime"}
    assert (
        precision_family(cpu, BuildRequest("int8", cpu, backend="onnxruntime"))["placement"] == "onnxruntime"
    )


def test_a_cells_cosine_is_printed_against_its_own_gate_with_the_digits_that_tell_them_apart(
    tmp_path: Path,
) -> None:
    """A cell recorded no gate, and its min cosine was rounded to 6 decimals, so a strict gate
    failed by 0.9999999x read "1.000000 ... FAIL" in the command's table, matrix.json and matrix.md
    (ui.cosine_figure had nothing to tell it from). The cell records its gate (min_cosine_gate) and
    the cosine as compare measured it, and every table prints it as run's report does."""
    from edgedeploy.ui import cosine_figure

    _matmul_relu(tmp_path)
    text = """
workdir = "w"
[build]
backend = "onnxruntime"
[compare]
data = "val.npz"
samples = 8
batch_size = 8
min_cosine = {gate}
[profile]
enabled = false
[bundle]
enabled = false
[matrix]
targets = ["x86-64-cpu"]
precisions = ["fp16"]
[[matrix.models]]
source = "m.onnx"
"""
    config = tmp_path / "m.toml"
    config.write_text(text.format(gate=0.99))
    first = run_cli("matrix", config, "--json", tmp_path / "first.json", cwd=tmp_path)
    assert first.code == 0, first.stderr
    (cell,) = json.loads((tmp_path / "first.json").read_text())["cells"]
    (output,) = cell["compare"]["outputs"].values()
    cosine = output["cosine"]
    assert 0.9999995 < cosine < 1.0, cosine  # fp16 of one MatMul: 6 decimals print it as 1
    gate = round(cosine + (1.0 - cosine) / 2, 15)  # within 1e-6 above it: the cell fails its gate
    config.write_text(text.format(gate=gate))
    second = run_cli("matrix", config, "--json", tmp_path / "second.json", cwd=tmp_path)
    assert second.code == 1, second.stderr
    (cell,) = json.loads((tmp_path / "second.json").read_text())["cells"]
    assert cell["gate"] == "FAIL" and cell["min_cosine_gate"] == gate and cell["min_cosine"] == cosine
    figure = cosine_figure(cosine, gate)
    assert float(figure) < gate and figure != "1.000000", figure
    row = next(line for line in second.stdout.splitlines() if "FAIL" in line)
    assert figure in row and "1.000000" not in row, row
    summary = (tmp_path / "w" / "matrix.md").read_text()
    assert f"| {figure} | FAIL |" in summary and "1.000000" not in summary, summary


def test_a_changed_profile_option_profiles_again_and_builds_nothing_again(tmp_path: Path) -> None:
    """A cell's key held its profile options, and one task built, compared and profiled it: a
    change of [profile] iterations (any ProfileOptions field) built every cell's artifact again (a
    TensorRT engine on its board) and compared it again, though neither reads them. The profile is
    keyed and stored on its own now: the rerun profiles each cell's stored artifact, and every
    record of the conversion, calibration, build and compare is the same file, unchanged."""
    _matmul_relu(tmp_path)
    text = """
workdir = "w"
[build]
backend = "onnxruntime"
[calibration]
data = "val.npz"
[compare]
data = "val.npz"
samples = 8
batch_size = 8
min_cosine = 0.99
[profile]
iterations = {iterations}
warmup = 1
batch_sizes = [1]
[bundle]
output = "bundles"
[matrix]
targets = ["x86-64-cpu"]
precisions = ["fp32", "int8"]
[[matrix.models]]
source = "m.onnx"
"""
    config = tmp_path / "m.toml"
    config.write_text(text.format(iterations=5))
    store = tmp_path / "w" / ".edgedeploy-cache" / "matrix"

    def run() -> MatrixResult:
        return _run_local(config)

    first = run()
    assert all(c.status == "ok" and c.profile for c in first.cells), first.cells
    records = {p.parent.name: p.read_bytes() for p in store.glob("*/record.json")}
    config.write_text(text.format(iterations=7))
    second = run()
    assert all(c.status == "ok" and c.profile for c in second.cells), second.cells
    assert all(
        c.profile["settings"] != f.profile["settings"] for c, f in zip(second.cells, first.cells, strict=True)
    )  # type: ignore[index]
    assert [c.compare for c in second.cells] == [c.compare for c in first.cells]
    assert [c.artifact for c in second.cells] == [c.artifact for c in first.cells]
    # every record the first run wrote is there as it was written (the cache checks them by content)
    assert {k: (store / k / "record.json").read_bytes() for k in records} == records
    new = {p.parent for p in store.glob("*/record.json")} - {store / k for k in records}
    # what the rerun made: one profile per cell, no file besides its record (no artifact built)
    assert len(new) == len(second.cells) == second.tasks_submitted
    assert all([f.name for f in d.iterdir()] == ["record.json"] for d in new)
    # the bundle carries the new figures
    manifest = json.loads((tmp_path / "bundles" / "m" / "x86-64-cpu" / "manifest.json").read_text())
    assert [a["profile"] for a in manifest["artifacts"]] == [c.profile for c in second.cells]


def test_a_copied_project_reports_its_own_data_for_its_cached_cells(tmp_path: Path) -> None:
    """matrix rerun in a copy of a finished project (cp -a) took its cells from the copied cache, as
    it should (they are content-addressed), but each cell's profile said it was timed on the first
    project's data ("spec": "/old/project/val.npz"), in the JSON, the tables and the bundle: the spec
    the stored profile record holds. A cell says this project's data, wherever its record was made."""
    import shutil

    first = tmp_path / "first"
    first.mkdir()
    _matmul_relu(first)
    (first / "matrix.toml").write_text(
        'workdir = "farm"\n[compare]\ndata = "val.npz"\nsamples = 8\n'
        "[profile]\niterations = 2\nwarmup = 1\nbatch_sizes = [1]\n[bundle]\nenabled = false\n"
        '[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32", "fp16"]\n[[matrix.models]]\n'
        'source = "m.onnx"\nname = "m"\n'
    )

    def run(project: Path) -> MatrixResult:
        return _run_local(project / "matrix.toml")

    def specs(result: MatrixResult) -> list[str]:
        return [cell.profile["settings"]["data"]["spec"] for cell in result.cells if cell.profile]

    made = run(first)
    assert [c.cached for c in made.cells] == [False, False] and specs(made) == [str(first / "val.npz")] * 2
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    again = run(copy)
    assert [c.cached for c in again.cells] == [True, True], [c.reason for c in again.cells]
    assert specs(again) == [str(copy / "val.npz")] * 2


def test_a_gpu_bundle_records_the_shape_profile_bundle_create_records_for_the_same_model(
    tmp_path: Path,
) -> None:
    """As run's: without [build] profiles, matrix's bundle for a GPU target recorded "profiles": []
    where `edgedeploy bundle create` of the same model records the profile its device builds (batch
    1 to the reference batch). It records bundle create's now."""
    dynamic_matmul_model(tmp_path)
    path = tmp_path / "m.toml"
    path.write_text(
        'workdir = "out"\n[build]\nbackend = "onnxruntime"\n[compare]\ndata = "val.npz"\nbatch_size = 8\n'
        "min_cosine = 0.9\n[profile]\nenabled = false\n"
        '[matrix]\ntargets = ["jetson-orin-nano"]\nprecisions = ["fp32"]\n'
        '[[matrix.models]]\nname = "m"\nsource = "m.onnx"\n'
    )
    made = _run_local(path)
    assert list(made.bundles) == ["m/jetson-orin-nano"], made
    from_matrix = json.loads((Path(made.bundles["m/jetson-orin-nano"]) / "manifest.json").read_text())
    packed = run_cli(
        "bundle", "create", tmp_path / "m.onnx", "--target", "jetson-orin-nano", "--data",
        tmp_path / "val.npz", "-o", tmp_path / "packed",
    )  # fmt: skip
    assert packed.code == 0, packed.stderr
    from_pack = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    assert from_pack["build"]["profiles"] == [{"x": {"min": [1, 8], "opt": [8, 8], "max": [8, 8]}}]
    assert from_matrix["build"]["profiles"] == from_pack["build"]["profiles"], from_matrix["build"]
