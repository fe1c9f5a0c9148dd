"""The process pool that does the CPU work (decompress, split, compress) off the event loop.

Sized to the cores, so that decoding uses all of them while the loop only moves bytes. Its
processes are spawned (not forked from a process that runs threads and an event loop), and
they stay out of the daemon's own life cycle:

- they ignore SIGINT and SIGTERM: a Ctrl-C reaches the whole process group, and systemd
  signals the whole control group, but it is the daemon that decides how to stop, and it
  still needs its workers to finish in-flight work within the shutdown grace;
- they are killed when the daemon dies (Linux parent-death signal), so a `kill -9` of the
  daemon leaves no orphans behind.

`tune_allocator` caps glibc's malloc arenas (one per thread by default, up to 8 per core):
the daemon's threads each pass large buffers through, and every arena keeps its own slack,
which is resident memory for nothing. Two arenas cost no measurable speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("cloudtrail_adapter.workers")
T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8
ARENAS = 2


class WorkerPool(Executor):
    """A process pool that replaces itself when broken.

    A worker that dies (the OOM killer, a crash in a C extension) breaks a
    ProcessPoolExecutor for good: every later call fails. The calls in work when it broke
    fail (their items are released and offered again); the next call gets a new pool.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size or os.cpu_count() or 2
        self.restarts = 0
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(os.getpid(),),
        )

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self.restarts += 1
            log.error("worker_pool_restarted", restarts=self.restarts)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def warm_up(self) -> None:
        """Starts the workers now, while the sources list and the sinks connect, instead
        of when the first object waits for them (a spawn takes a few hundred ms)."""
        for _ in range(self.size):
            self.submit(int)


def tune_allocator() -> None:
    """Caps malloc arenas (glibc only; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, ARENAS)


def _start_worker(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_allocator()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(1)
