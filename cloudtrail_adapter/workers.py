"""The process pool that does the CPU work (decompress, split, compress) off the event loop.

Sized to the CPUs this process may use (`usable_cpus`: its affinity and its cgroup's quota,
or the `workers` key), so that decoding uses all of them while the loop only moves bytes. Its
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
import math
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
        self.size = size or usable_cpus().count
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
            _log().error("worker_pool_restarted", restarts=self.restarts)
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


@dataclass(frozen=True)
class Cpus:
    """How many CPUs this process may use, and what says so."""

    count: int
    why: str  # "affinity", "cgroup quota", ...


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> Cpus:
    """The CPUs this process may really use: those its affinity allows, fewer when its
    cgroup's CPU quota (a container's `--cpus`, systemd's `CPUQuota=`) is lower, rounded
    up. `os.cpu_count()` counts the machine's, which a container on a large host would
    take for its own and start a worker per core it cannot run."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    allowed = allowed or os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root, proc)
    if quota is not None and math.ceil(quota) < allowed:
        return Cpus(max(1, math.ceil(quota)), f"cgroup quota of {quota:g} CPUs")
    return Cpus(allowed, "affinity")


def _cgroup_quota(root: Path, proc: Path) -> float | None:
    """CPUs of quota for this process's cgroup (v2 `cpu.max`, else v1 `cpu.cfs_*`), the
    tightest of it and its parents; None when unlimited or unreadable."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            quotas += _v2_quotas(root, path)
        elif "cpu" in controllers.split(","):
            quotas += _v1_quotas(root / controllers, path)
    return min(quotas) if quotas else None


def _v2_quotas(root: Path, path: str) -> list[float]:
    found = []
    here = root / path.lstrip("/")
    for directory in (here, *here.parents):
        if not directory.is_relative_to(root):
            break
        with contextlib.suppress(OSError, ValueError):
            limit, period = (directory / "cpu.max").read_text().split()
            if limit != "max":
                found.append(int(limit) / int(period))
    return found


def _v1_quotas(root: Path, path: str) -> list[float]:
    with contextlib.suppress(OSError, ValueError):
        here = root / path.lstrip("/")
        quota = int((here / "cpu.cfs_quota_us").read_text())
        period = int((here / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return [quota / period]
    return []


def _log() -> Any:
    """Imported when needed: every worker imports this module (its initializer is here),
    and structlog would cost each of them 25 ms of start-up for nothing."""
    import structlog

    return structlog.get_logger("cloudtrail_adapter.workers")


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
