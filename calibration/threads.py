"""Independent pieces of calibration work on a few threads of this process.

``auto``'s measurements are many ONNX Runtime runs and numpy operations on large arrays, both of
which release the GIL: one node's runs per tensor, one Q/DQ model per candidate threshold set,
and the candidate thresholds of each distinct histogram.
Each piece computes the same values on a thread as in a loop (the node sessions run on one
thread of their own, and nothing a piece writes is read by another), so the results do not
depend on the number of workers; tests pin that. Threads rather than processes: the pieces
share the model, its weights and the held-out activations, which processes would copy.

``concurrent.futures`` does the pooling; what is added here is the stop: an interrupt or an error
cancels the pieces not started and waits only for the ones running.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import ParamSpec, TypeVar

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

MAX_WORKERS = 4  # a cap, not a measurement (only 2 cores measured); workers never exceed the cores


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers(threads: int | None = None) -> int:
    """How many threads: ``threads`` when the user limited them, else the usable cores (at most
    :data:`MAX_WORKERS`)."""
    if threads:
        return max(1, int(threads))
    return max(1, min(MAX_WORKERS, usable_cores()))


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_here = threading.local()  # .depth: how many map_ordered calls this thread runs a piece of
if hasattr(os, "register_at_fork"):  # a forked child has none of the pools' threads: it makes its own
    os.register_at_fork(after_in_child=_pools.clear)


def _pool(size: int, depth: int) -> ThreadPoolExecutor:
    """The process's pool of ``size`` threads for pieces at ``depth``, made on first use and
    kept: ``collect`` hands each batch's tensors to the observers through :func:`map_ordered` (64
    calls on a 64-batch calibration), and a pool made and shut down per call started 145 threads
    on ddddocr's recognizer, 0.36 s of its 5.4 s on a loaded 2-core machine. A piece that maps
    again (the per-tensor step's candidates) uses the pool of the next depth: in its own pool it
    could wait for pieces queued behind itself."""

    def mark() -> None:
        _here.depth = depth + 1

    with _pools_lock:
        pool = _pools.get((size, depth))
        if pool is None:
            name = "edgedeploy-calib" + (f"-{depth}" if depth else "")
            pool = ThreadPoolExecutor(size, thread_name_prefix=name, initializer=mark)
            _pools[size, depth] = pool
        return pool


def map_ordered(fn: Callable[[T], R], items: Iterable[T], count: int) -> list[R]:
    """``[fn(x) for x in items]``, on ``count`` threads; the first error is raised after the
    pieces not started are cancelled and the running ones have finished."""
    todo = list(items)
    if count <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    pool = _pool(count, getattr(_here, "depth", 0))
    futures: list[Future[R]] = [pool.submit(fn, x) for x in todo]
    try:
        return [f.result() for f in futures]
    finally:
        for f in futures:
            f.cancel()
        wait(futures)


def one_blas_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with numpy's BLAS on one thread while it runs, through threadpoolctl.

    Calibration runs its numpy work on threads of its own (:func:`map_ordered`, ``collect``'s
    observers) beside ONNX Runtime's. OpenBLAS's own threads keep spinning after each of the many
    small matrix products (GPTQ's input moments, ``calibration.rounding``) and took the cores from
    them: on ddddocr's detector the calibration used 29 s of CPU instead of 21 s, 2.3 s more wall
    time (OPENBLAS_NUM_THREADS=1 against the default, same code)."""

    @functools.wraps(fn)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # a declared dependency; without it numpy keeps its own threads
            return fn(*args, **kwargs)
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return limited
