"""Where the matrix's tasks run: ``local`` (a process pool on this machine) or ``ray`` (a cluster).

Both take the same small calls: ``skip_reason`` (can a cell for this target run anywhere this
executor reaches?), ``submit`` (a task, with where it must run), ``next_done`` (the next finished
task) and ``cancel``. Tasks are plain module-level functions that take and return picklable values
(artifacts travel as bytes with their sha256, never as paths), so the same task runs in a local
child process or on a Jetson across the network.

Placement: a task that must run on a board or GPU names the custom resource ``target:<name>``;
Ray schedules it only on a node that announced it (``ray start --resources
'{"target:jetson-orin-nano": 1}'``), one cell at a time per announced unit, so two profiles never
share a board. Tasks that read the user's files (export from the model source, calibration from
the data folder) run on the driver's machine: pinned to the driver's Ray node, or in the local pool.

Ray does the scheduling, cancelling and moving of bytes; nothing here is a scheduler of our own.
The local pool is ``concurrent.futures`` (spawned children that ignore SIGINT, so Ctrl-C reaches
only the driver, which then terminates them). Ray is imported only inside ``RayExecutor``.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edgedeploy.errors import InputError, first_line
from edgedeploy.fileio import file_lock, scratch_dir
from edgedeploy.interrupts import deferred
from edgedeploy.ui import quiet_descriptors

if TYPE_CHECKING:
    from edgedeploy.targets import Target

RAY_INSTALL = "pip install 'edgedeploy[ray]'"
EXECUTORS = ("local", "ray")


@dataclass
class Produced:
    """What a task sends back: its files' bytes (by file name), a JSON-able result, and where it ran."""

    files: dict[str, bytes]
    result: dict[str, Any]
    node: str
    seconds: float


@dataclass
class Failed:
    """A task that raised, crashed or was cancelled: one line on why, and where; and the files
    the failure left to read (an accuracy budget's steps), which its scratch folder would lose."""

    reason: str
    node: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


Outcome = Produced | Failed


@dataclass(frozen=True)
class Placement:
    resource: str | None = None  # a custom resource the task needs, e.g. "target:jetson-orin-nano"
    on_driver: bool = False  # reads the user's files: run on the driver's machine


@contextmanager
def timing_lock(exclusive: bool) -> Iterator[None]:
    """One machine's matrix work around its timings: a profile (``exclusive``) runs alone on the
    machine, the other work (builds, calibration, compares: shared) side by side but never while a
    profile times. Cells profiled side by side on 2 cores read up to 2x their latency alone
    (captcha-rec, 4 cells at --jobs 2: 16.2-16.4 ms in three, 7.4 ms in the fourth; 7.2-7.6 ms
    with this lock or at --jobs 1), and fp16 "2x faster" than fp32 on a CPU without fp16 math.
    An flock on a file in this machine's temp folder (:func:`edgedeploy.fileio.file_lock`, which
    its last holder removes): every worker process of every executor on the machine takes it,
    Ray's included."""
    path = os.path.join(tempfile.gettempdir(), f"edgedeploy-timing-{os.getuid()}.lock")
    with file_lock(path, exclusive=exclusive):
        yield


def target_resource(target: Target) -> str | None:
    """The custom resource a cell for ``target`` requests: boards and GPUs only."""
    return f"target:{target.name}" if target.is_gpu else None


def this_node() -> str:
    """The Ray node id inside a Ray worker, else ``local:<hostname>``."""
    import sys

    if "ray" in sys.modules:
        ray = sys.modules["ray"]  # imported already (this is a Ray worker)

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    return f"local:{socket.gethostname()}"


def run_task(fn: Callable[..., tuple[dict[str, bytes], dict[str, Any]]], *args: Any) -> Outcome:
    """Run one task and never raise: a failure comes back as its first line; a failure of the
    user's input or machine as the CLI's line for it (``user_failure``), a bug also with where it
    happened."""
    start = time.perf_counter()
    node = this_node()
    try:
        files, result = fn(*args)
    except Exception as exc:
        from calibration.errors import CalibrationError
        from edgedeploy.errors import EdgeDeployError, user_failure

        if isinstance(exc, (EdgeDeployError, CalibrationError)):
            return Failed(first_line(exc), node, dict(getattr(exc, "files", {})))
        said = user_failure(exc)  # ONNX Runtime's refusal, an OSError: as main() says them
        if said is not None:
            return Failed(said, node)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Failed(
            f"{type(exc).__name__}: {first_line(exc)} ({os.path.basename(where.filename)}:{where.lineno})",
            node,
        )
    return Produced(files, result, node, time.perf_counter() - start)


def _spill(obj: Any, folder: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(dir=folder, suffix=suffix)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _unspill(path: str) -> Any:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    finally:
        os.unlink(path)


def spilled_task(task: str) -> str:
    """A pool worker's side of :class:`LocalExecutor`: the task and its outcome travel as files.

    Only their paths cross the pool's pipes: a message that small is written in one piece, so a
    worker terminated by Ctrl-C can never leave half a message (megabytes of artifact bytes) in a
    pipe, where the pool's feeder or manager thread would wait for the rest forever."""
    fn, args = _unspill(task)
    return _spill(run_task(fn, *args), os.path.dirname(task), ".outcome")


def node_versions_task(
    packages: tuple[str, ...], extra: dict[str, str] | None = None
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The installed versions of ``packages`` on the node this runs on, and its machine type.

    Read from package metadata, so asking is cheap: nothing is imported but TensorRT, and that
    only where its metadata is missing (JetPack's system package may have none).
    """
    import importlib.metadata
    import platform

    versions: dict[str, Any] = {"machine": platform.machine(), **(extra or {})}
    for package in packages:
        names = [package, f"{package}-cu12", f"{package}-cu13"] if package == "tensorrt" else [package]
        versions[package] = None
        for name in names:
            try:
                versions[package] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    if "tensorrt" in packages and versions["tensorrt"] is None:
        try:
            import tensorrt

            versions["tensorrt"] = str(tensorrt.__version__)
        except ImportError:
            pass
    return {}, versions


class Executor(Protocol):
    name: str
    same_machine: bool  # every task runs on this machine (its tool versions are the driver's)

    def skip_reason(self, target: Target, backend: str) -> str | None:
        """Why a cell for ``target`` cannot run anywhere this executor reaches (None: it can)."""
        ...

    def submit(self, tag: Any, fn: Callable[..., Any], args: tuple[Any, ...], placement: Placement) -> None:
        """Start ``run_task(fn, *args)`` where ``placement`` says; ``tag`` comes back with its outcome."""
        ...

    def share(self, value: Any) -> Any:
        """A handle to pass ``value`` (e.g. model bytes) to many tasks without copying it for each."""
        ...

    def next_done(self) -> tuple[Any, Outcome]:
        """Block until a submitted task finishes; its tag and outcome."""
        ...

    def cancel(self) -> None:
        """Stop every task still queued or running (finished ones keep their results)."""
        ...

    def close(self) -> None: ...


PARENT_POLL_SECONDS = 1.0  # how often a pool worker checks that the driver that started it lives
STOP_SECONDS = 30  # LocalExecutor.cancel: how long it keeps killing workers while the pool winds down


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool``'s worker processes, then let its manager thread end (no public way before 3.14).

    Terminated first (the children are ours and write only into their temp folders), then killed
    while the manager thread lives: a worker stopped while it held the result queue's lock leaves
    another blocked on that lock, and the manager, which sees the pool broken, waits for every
    child to exit before it ends. A pool shut down with ``wait=True`` once hung there for good on a
    worker alive and stuck in that lock (the Ctrl-C test in tests/test_matrix.py), so the wait here
    is bounded and kills whatever worker is still alive each time round.
    """
    processes = getattr(pool, "_processes", None) or {}  # the dict the manager thread reads too
    manager = getattr(pool, "_executor_manager_thread", None)
    for process in list(processes.values()):
        process.terminate()
    for process in list(processes.values()):
        process.join(timeout=10)
    pool.shutdown(wait=False, cancel_futures=True)  # its manager thread sees the pool broken and ends
    deadline = time.monotonic() + STOP_SECONDS
    while manager is not None and manager.is_alive() and time.monotonic() < deadline:
        for process in list(processes.values()):
            if process.is_alive():
                process.kill()
        manager.join(timeout=0.5)


def _start_worker(parent: int) -> None:
    """A pool worker's start: Ctrl-C is the driver's to handle, and the worker ends when the driver
    is gone. A driver killed by SIGKILL (the OOM killer, a CI timeout) cannot stop its pool, and a
    spawned worker waits on the pool's pipe for good (its own copy keeps the pipe open), holding
    hundreds of MB; so a daemon thread watches the parent pid. Polled rather than Linux's
    PR_SET_PDEATHSIG, which fires when the *thread* that started the worker ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="edgedeploy-parent-watch", daemon=True).start()


@dataclass
class LocalExecutor:
    """A pool of spawned processes on this machine (spawned: torch and ONNX Runtime threads do not fork well).

    ``concurrent.futures`` rather than ``multiprocessing.Pool``: a worker that dies (a crash in a
    native library, the OOM killer) breaks the pool and fails its futures, where Pool would wait
    forever for the lost task. The tasks caught by a broken pool are reported failed; a rerun
    retries them. ``jobs=1`` runs the tasks in this process, one by one, without the start-up of
    a worker process (which imports ONNX Runtime, Polygraphy and onnx again: seconds per worker).
    """

    jobs: int = 0
    name: str = "local"
    same_machine: bool = True
    submitted: int = 0
    _pool: ProcessPoolExecutor | None = None
    _futures: dict[Future[str], Any] = field(default_factory=dict)  # future (an outcome file) -> tag
    _inline: list[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = field(default_factory=list)  # jobs=1
    _spill_dir: str = ""  # where tasks and outcomes wait for the pool (a scratch folder)
    _stack: ExitStack = field(default_factory=ExitStack)

    def skip_reason(self, target: Target, backend: str) -> str | None:
        """The ONNX Runtime backend runs every target here; TensorRT needs its GPU and TensorRT."""
        from edgedeploy.backends import resolve_backend

        try:
            resolve_backend(backend, target.is_gpu)
        except InputError as exc:
            return f"this machine cannot build for {target.name}: {first_line(exc)}"
        return None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            jobs = self.jobs or max(1, min(4, os.cpu_count() or 1))
            self._pool = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
            if not self._spill_dir:
                self._spill_dir = str(self._stack.enter_context(scratch_dir("pool")))
        return self._pool

    def submit(self, tag: Any, fn: Callable[..., Any], args: tuple[Any, ...], placement: Placement) -> None:
        self.submitted += 1
        if self.jobs == 1:
            self._inline.append((tag, fn, args))  # run when its outcome is asked for
        else:
            pool = self._get_pool()
            self._futures[pool.submit(spilled_task, _spill((fn, args), self._spill_dir, ".task"))] = tag

    def share(self, value: Any) -> Any:
        return value

    def next_done(self) -> tuple[Any, Outcome]:
        if self._inline:
            tag, fn, args = self._inline.pop(0)
            return tag, run_task(fn, *args)
        if not self._futures:
            raise RuntimeError("next_done() with no task running")
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        future = next(iter(done))
        tag = self._futures.pop(future)
        try:
            return tag, _unspill(future.result())
        except BrokenProcessPool:
            self._pool = None  # a fresh pool for whatever is submitted next
            return tag, Failed(
                "a worker process died (a crash or out of memory) while this ran; rerun to retry"
            )

    def cancel(self) -> None:
        pool, self._pool = self._pool, None
        self._futures.clear()
        self._inline.clear()
        if pool is None:
            return
        _stop_pool(pool)
        self._stack.close()  # the tasks and outcomes no worker will read
        self._spill_dir = ""

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._stack.close()
        self._spill_dir = ""


PROBE_SECONDS = 5.0
LOOPBACK = "127.0.0.1"


def refuse_unreachable(address: str) -> None:
    """A head that nothing answers at is refused in one line: Ray's ``init`` retries such a head's GCS
    forever, printing "Failed to connect to GCS" lines, and never raises.

    Probed where Ray will dial, not as typed: ``ray.init`` passes the address (and ``auto``, which it
    resolves from RAY_ADDRESS, its temp folder's last cluster or a running GCS process) through
    ``canonicalize_bootstrap_address``, which replaces a loopback host (127.0.0.1, localhost) by this
    machine's network address. A head started with ``--node-ip-address 127.0.0.1`` answers the typed
    address and not that one, and ``ray.init`` waited on it forever. ``auto`` that finds no cluster
    and ``local`` are ``ray.init``'s to report; a ``ray://`` client address is probed as typed."""
    if address == "local":
        return
    typed = address.removeprefix("ray://")
    dialled = typed
    if not address.startswith("ray://"):
        try:
            with deferred():
                from ray._private.services import canonicalize_bootstrap_address
        except ImportError:
            pass
        else:
            try:
                dialled = canonicalize_bootstrap_address(address) or typed
            except (ConnectionError, ValueError):  # no cluster found, a bad address: ray.init says so
                return
            except Exception:  # a name Ray cannot resolve: probed as typed, which says why
                dialled = typed
    host, _, port = dialled.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS):
            pass
    except OSError as exc:
        why = f"nothing answers at {dialled} ({exc.strerror or exc})"
        if dialled != typed:
            why = f"nothing answers at {dialled}, where Ray dials for it ({exc.strerror or exc})"
            if _answers(LOOPBACK, int(port)):
                why += (
                    f"; something listens at {LOOPBACK}:{port} only, and Ray dials this machine's "
                    "address for a loopback one: start the head without --node-ip-address 127.0.0.1"
                )
        raise ConnectionError(why) from None


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


HEAD_TOKEN = "the head's token (what 'ray get-auth-token' prints on the head)"


def _token_source() -> str:
    """Where Ray reads the driver's token from: the first of its three places that is set."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"{os.environ['RAY_AUTH_TOKEN_PATH']} (RAY_AUTH_TOKEN_PATH)"
    return "~/.ray/auth_token"


def refuse_without_token(ray: Any, address: str) -> None:
    """A cluster with Ray's token authentication on is refused in one line when this driver would
    send it no token, or another one. Ray 2.59+ turns it on for a plain ``ray start --head`` where
    ``~/.ray/auth_token`` exists (every local ``ray.init()`` writes one), but sends the token to an
    address only with ``RAY_AUTH_MODE=token`` (``auto`` finds it by itself), and ``ray.init`` then
    retried for 20 s, an "InvalidAuthToken" warning a second, before failing. One try of Ray's own
    GCS client (its token, its TLS) tells at once. A Ray without token authentication, a ``ray://``
    client address, or any other failure: left to ``ray.init``."""
    refused = getattr(ray.exceptions, "AuthenticationError", None)  # Ray 2.52+
    if refused is None or address.startswith("ray://") or address == "local":
        return
    try:
        with deferred():
            from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
            from ray._private.authentication.authentication_utils import is_token_auth_enabled
            from ray._private.services import canonicalize_bootstrap_address
            from ray._raylet import GcsClient  # type: ignore[attr-defined]  # not in _raylet.pyi
    except ImportError:
        return
    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError):  # no cluster found, a bad address: ray.init says so
        return
    if gcs is None:
        return
    # what ray.init does next for ``auto`` (Ray 2.59+; RAY_ADDRESS counts as an address given):
    # token mode where a token is found
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        try:
            with deferred():
                from ray._private.authentication.authentication_token_setup import (
                    maybe_enable_token_auth_if_token_available,
                )
        except ImportError:
            pass
        else:
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    sources = "in RAY_AUTH_TOKEN, in the file RAY_AUTH_TOKEN_PATH names, or in ~/.ray/auth_token"
    if is_token_auth_enabled():
        try:  # ray.init's own check: Ray's C++ GCS client aborts the process where no token is
            ensure_token_if_auth_enabled(None, create_token_if_missing=False)
        except refused:
            raise InputError(
                f"cannot reach a Ray cluster at '{address}': RAY_AUTH_MODE=token is set and no token "
                f"is found: put {HEAD_TOKEN} {sources}"
            ) from None
    try:
        with quiet_descriptors():  # its C++ side prints a warning of its own before it raises
            GcsClient(address=gcs, cluster_id=None)
    except refused:
        if is_token_auth_enabled():
            why = f"it refused the token in {_token_source()}: put {HEAD_TOKEN} there"
        else:
            why = f"it wants a token (Ray's token authentication): set RAY_AUTH_MODE=token, with {HEAD_TOKEN}"
            why += f" {sources}"
        raise InputError(f"cannot reach a Ray cluster at '{address}': {why}") from None
    except Exception:  # anything else is ray.init's to report
        return


def import_ray() -> Any:
    try:
        with deferred():  # a signal inside an extension's initialization can crash the process
            import ray
    except ImportError:
        raise InputError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


@dataclass
class RayExecutor:
    """Tasks on a Ray cluster: cells request ``target:<name>``; file-reading tasks stay on the driver node."""

    address: str = "auto"
    name: str = "ray"
    same_machine: bool = False
    submitted: int = 0
    _ray: Any = None
    _refs: dict[Any, Any] = field(default_factory=dict)  # ObjectRef -> tag
    _resources: dict[str, float] = field(default_factory=dict)
    _driver_node: str = ""
    _driver_cpus: int = 1
    _remote: Any = None
    _gcs_address: str | None = None  # the head's address as Ray reports it: what a board's node joins
    _local_dir: str = ""  # ``local``: the in-process Ray's temp folder (a scratch folder of ours)
    _saved_env: dict[str, str | None] = field(default_factory=dict)  # ``local``: variables set for it
    _stack: ExitStack = field(default_factory=ExitStack)

    def __post_init__(self) -> None:
        self._ray = import_ray()
        try:
            self._connect()
        except BaseException:  # a Ctrl-C in ray.init: not left connected (or a local Ray left running)
            self.close()
            raise

    def _connect(self) -> None:
        ray = self._ray
        try:
            if not ray.is_initialized():
                refuse_unreachable(self.address)
                refuse_without_token(ray, self.address)
                local = {"_temp_dir": self._start_local()} if self.address == "local" else {}
                ray.init(
                    address=self.address,
                    logging_level="WARNING",
                    log_to_driver=False,
                    include_dashboard=False,
                    **local,
                )
        except InputError:  # said in full already
            raise
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"cannot reach a Ray cluster at '{self.address}': {first_line(exc)} "
                "(start one with 'ray start --head', or pass --address HOST:PORT)"
            ) from None
        self._resources = dict(ray.cluster_resources())
        self._driver_node = ray.get_runtime_context().get_node_id()
        here: dict[str, Any] = next((n for n in ray.nodes() if n.get("NodeID") == self._driver_node), {})
        # a head started with --num-cpus 0 still runs the driver's file-reading tasks (without a CPU claim)
        self._driver_cpus = 1 if here.get("Resources", {}).get("CPU", 0) >= 1 else 0
        self._remote = ray.remote(run_task)
        try:
            self._gcs_address = str(ray.get_runtime_context().gcs_address) or None
        except Exception:  # a client (ray://) connection or another Ray release: the hint keeps a placeholder
            self._gcs_address = None

    def _start_local(self) -> str:
        """What the in-process Ray of ``--address local`` gets so that it writes nothing outside: its
        temp folder (Ray's default, /tmp/ray, kept a session folder per run) is a scratch folder of
        ours, removed by :meth:`close`; and its token authentication (on by default for a local
        ``ray.init`` since Ray 2.59, which wrote a new ``~/.ray/auth_token``, and that file turns token
        authentication on for every later ``ray start --head`` of the user) gets a throw-away token
        in this process's environment, which Ray reads first and its processes inherit."""
        import secrets

        self._local_dir = str(self._stack.enter_context(scratch_dir("ray")))
        for name, value in (("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN", secrets.token_hex(32))):
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _reread_ray_auth()
        return self._local_dir

    def skip_reason(self, target: Target, backend: str) -> str | None:
        resource = target_resource(target)
        if resource is None or self._resources.get(resource, 0) >= 1:
            return None
        if self.address == "local":  # its address is gone when the command ends: no board can join it
            return (
                f"no node of the Ray cluster announces {resource}: the in-process Ray of --address "
                "local has no board nodes (start a head with 'ray start --head', on the board "
                f"ray start --address HEAD:6379 --resources '{{\"{resource}\": 1}}', and pass "
                "--address HEAD:6379)"
            )
        return (
            f"no node of the Ray cluster announces {resource} "
            f"(on a {target.name}: ray start --address {self._join_address()} "
            f"--resources '{{\"{resource}\": 1}}')"
        )

    def _join_address(self) -> str:
        """What ``ray start --address`` takes on a board: the HOST:PORT the user gave, else the head's
        address Ray reported (``auto`` and ``ray://`` client addresses are not one; ``local``'s
        in-process Ray has none to give: skip_reason says so)."""
        given = self.address
        if given not in ("auto", "local") and not given.startswith("ray://"):
            return given
        return self._gcs_address or "HEAD:6379"

    def submit(self, tag: Any, fn: Callable[..., Any], args: tuple[Any, ...], placement: Placement) -> None:
        with deferred():
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if placement.resource:
            options["resources"] = {placement.resource: 1}
        if placement.on_driver:
            options["num_cpus"] = self._driver_cpus
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self._driver_node, soft=False)
        ref = self._remote.options(**options).remote(fn, *args)
        self._refs[ref] = tag
        self.submitted += 1

    def share(self, value: Any) -> Any:
        return self._ray.put(value)  # a top-level ObjectRef argument arrives in the task as its value

    def next_done(self) -> tuple[Any, Outcome]:
        ray = self._ray
        if not self._refs:
            raise RuntimeError("next_done() with no task running")
        [ref], _ = ray.wait(list(self._refs), num_returns=1)
        tag = self._refs.pop(ref)
        try:
            outcome: Outcome = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            outcome = Failed("cancelled")
        except ray.exceptions.RayError as exc:  # worker or node died, object lost
            outcome = Failed(f"Ray: {type(exc).__name__}: {first_line(exc)}")
        return tag, outcome

    def cancel(self) -> None:
        """The driver disconnects (this executor is done), and Ray ends its job's tasks, queued or
        running. Not ``ray.cancel`` on each: one that races the reply of a task just finished
        aborts the driver inside Ray's core ("Check failed: it != submissible_tasks_.end() Tried to
        complete task that was not pending", ray-project/ray#54798), a C++ stack and exit 1 where
        Ctrl-C says one line."""
        self._refs.clear()
        self.close()

    def close(self) -> None:
        """Disconnect this driver (a Ray that ray.init started here stops; a cluster keeps running),
        with Ctrl-C held until it is done: cut short, Ray's atexit hook would do it again after
        main(), where a Ctrl-C prints a traceback, and a local Ray's processes could be left."""
        with deferred():
            self._ray.shutdown()
            if self._saved_env:
                for name, value in self._saved_env.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                self._saved_env.clear()
                _reread_ray_auth()
            if self._local_dir:  # the in-process Ray's processes that its shutdown left
                stop_processes_holding(self._local_dir)
                self._local_dir = ""
            self._stack.close()


def _reread_ray_auth() -> None:
    """Ray's driver reads RAY_AUTH_MODE and its token once, and caches them: after they were set here,
    it reads them again as Ray does after it sets them itself (authentication_token_setup)."""
    try:
        with deferred():
            from ray._private.authentication.authentication_token_setup import AuthenticationTokenLoader
            from ray._raylet import Config  # type: ignore[attr-defined]  # not in _raylet.pyi
    except ImportError:
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def stop_processes_holding(folder: str, seconds: float = 10.0) -> list[int]:
    """Kill the processes (not this one) with a file open in ``folder``, and wait (``seconds`` at
    most) until they are gone; returns their pids. Linux only (``/proc``); elsewhere nothing.

    For a local Ray stopped by ``ray.shutdown`` while its raylet was starting its agents (a Ctrl-C
    in ``ray.init``): the raylet and GCS end, and ray::DashboardAgent and ray::RuntimeEnvAgent,
    still starting, wait for the gone GCS for good (~170 MB). Their process titles name no folder,
    but every process of that Ray holds its log files, in the session folder of its temp folder."""
    prefix = os.path.realpath(folder) + os.sep
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}").startswith(prefix):
                    found.append(int(entry))
                    break
            except OSError:
                continue
    for pid in found:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}/fd/0") for pid in found):
        time.sleep(0.05)
    return found


@contextmanager
def loopback_cluster(
    targets: Iterable[str], object_store_mb: int = 80
) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head and one single-CPU node per target on this machine, every node bound to 127.0.0.1;
    yields the cluster address and each target's node id, and shuts everything down after.

    For tests and benchmarks of the ``ray`` executor without boards. Set
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before anything imports ray, or the driver still takes
    the machine's network address instead of loopback (Ray reads it once, at import).
    """
    ray = import_ray()
    with deferred():
        from ray.cluster_utils import Cluster

    store = object_store_mb * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": store,
            "include_dashboard": False,
            "node_ip_address": LOOPBACK,
        },
    )
    try:
        nodes = {
            target: cluster.add_node(
                num_cpus=1,
                resources={f"target:{target}": 1},
                object_store_memory=store,
                node_ip_address=LOOPBACK,
            )
            for target in targets
        }
        cluster.wait_for_nodes()
        yield cluster.address, {target: node.node_id for target, node in nodes.items()}
    finally:
        ray.shutdown()
        cluster.shutdown()


def make_executor(name: str, *, address: str | None = None, jobs: int = 0) -> Executor:
    if name == "local":
        if address:
            raise InputError("--address goes with --executor ray")
        return LocalExecutor(jobs=jobs)
    if name == "ray":
        return RayExecutor(address=address or "auto")
    raise InputError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")
