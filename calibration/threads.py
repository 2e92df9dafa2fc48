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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
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


def map_ordered(fn: Callable[[T], R], items: Iterable[T], count: int) -> list[R]:
    """``[fn(x) for x in items]``, on ``count`` threads; the first error is raised after the
    pieces not started are cancelled and the running ones have finished."""
    todo = list(items)
    if count <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    pool = ThreadPoolExecutor(max_workers=min(count, len(todo)), thread_name_prefix="edgedeploy-calib")
    try:
        return list(pool.map(fn, todo))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
