"""A small thread pool shared by the provenance stages that run per image (watermark embedding, fingerprints).

Their heavy steps are numpy ufuncs and Pillow resizes, which release the GIL, so one image's work split over
two threads takes less wall time when a second core is free. The calling thread always works too and takes
whatever the helper has not started, so a busy second core (another process) costs little: the work then
mostly runs on the caller, as it would without the pool. Only long calls gain: a hand-off of the GIL costs
tens of microseconds, hence MIN_PIXELS and the chunk sizes of the callers. The pool is created on first use,
holds ``min(2, os.cpu_count())`` threads (a helper each for two images handled at once) and is dropped in a
forked child, whose copy of it has no threads.

Work given to the pool must not wait on the pool itself: with every worker waiting on a task queued behind
it, nothing would run. Everything submitted here is a leaf (numpy and Pillow calls), so it never does.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["MIN_PIXELS", "WORKERS", "both", "run_items"]

A = TypeVar("A")
B = TypeVar("B")

#: threads one image's work is split over (the caller's thread is one of them)
WORKERS = min(2, os.cpu_count() or 1)
#: images of at least this many pixels (about 724 x 724) are split; at 512 x 512 two threads measured no faster
MIN_PIXELS = 2**19

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="provgen-parallel")
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads are gone, so the next use creates a new pool."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _finish(future: Future[A]) -> None:
    """Wait for a helper task, or take it back from the queue when it has not started (the helper thread may be
    slow to get a core); the caller then does its share itself."""
    if not future.cancel():
        wait([future])


def run_items(fn: Callable[[A], B], items: Sequence[A], parallel: bool = True) -> list[B]:
    """``[fn(item) for item in items]``, the calling thread and one pool thread each taking the next item not
    yet taken (so a helper that gets no core takes none). Which thread runs an item must not change its
    result. Every item has finished when this returns or raises (the first error is raised), so no task
    still writes into shared arrays afterwards."""
    if not parallel or WORKERS <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    results: list[B | None] = [None] * len(items)
    counter = itertools.count()  # next() on it is atomic under the GIL: no item is taken twice

    def work() -> None:
        while (i := next(counter)) < len(items):
            results[i] = fn(items[i])

    future = _executor().submit(work)
    try:
        work()
    finally:
        _finish(future)
    if not future.cancelled():
        future.result()  # raises the helper's error
    return results  # type: ignore[return-value]  # every slot is filled once both loops are done


def both(f: Callable[[], A], g: Callable[[], B], parallel: bool = True) -> tuple[A, B]:
    """``(f(), g())``: g on the pool while f runs on the calling thread, or g on the caller too if the pool
    has not started it by then (or not ``parallel``)."""
    if not parallel or WORKERS <= 1:
        return f(), g()
    future = _executor().submit(g)
    try:
        a = f()
    finally:
        _finish(future)
    return a, g() if future.cancelled() else future.result()
