"""The worker processes that prepare tiles: the start method, what each worker does first (die with
its parent, leave Ctrl-C to the main process, tune glibc's malloc), and the ordered stream of
prepared tiles, at most a few tiles per worker ahead of the one being recorded. The workers keep no
state between tiles: each task is `prepare_tile` bound to the job (a small immutable value).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial

from landmeta.data import TileRef
from landmeta.data.preprocess.cut import Prepared, TileJob, prepare_tile
from landmeta.errors import DataError
from landmeta.workers import die_with_parent

PREPARE_AHEAD = 2  # tiles per worker prepared ahead of the one being written (memory: this many more)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"  # of the worker processes


def _start_worker() -> None:
    """First thing in each worker process."""
    die_with_parent()  # a killed preprocess leaves no worker blocked on the pool's pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Have glibc serve arrays up to 32 MB from the heap and keep freed memory for reuse: every tile
    allocates arrays of the same sizes, which would otherwise be mapped afresh and fault in page by
    page (measured: a third of a worker's time). A no-op where the C library has no `mallopt`."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def prepared_tiles(job: TileJob, items: list[tuple[TileRef, int, int, int]],
                   workers: int) -> Iterator[Prepared | DataError]:
    """`prepare_tile` of every tile, in order: in this process (workers ≤ 1) or in a process pool, at
    most PREPARE_AHEAD tiles per worker ahead of the one being written (memory stays flat)."""
    prepare = partial(prepare_tile, job)
    if workers <= 1 or len(items) <= 1:
        yield from map(prepare, items)
        return
    context = multiprocessing.get_context(START_METHOD)
    with ProcessPoolExecutor(workers, context, initializer=_start_worker) as pool:
        try:
            pending: deque[Future] = deque()
            for item in items:
                pending.append(pool.submit(prepare, item))
                if len(pending) > PREPARE_AHEAD * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(cancel_futures=True)
