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

A worker's death costs only the call it was running. ProcessPoolExecutor fails every call
in the pool when one worker dies (`BrokenProcessPool`), and does not say whose it was; so
each worker marks, in memory it shares with the daemon, which call it is running. When the
pool breaks, the calls whose workers had ended fail with WorkerDied, every other one with
WorkerLost (not its fault: run it again), and the surviving workers are killed: their
calls are lost anyway, and one blocked sending a large result to a pool nobody reads would
otherwise never end.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8
ARENAS = 2
#: What a worker process keeps: its slot in its pool's marks (`_start_worker` sets it;
#: ProcessPoolExecutor gives a call no other way to reach what its initializer was given).
_WORKER: dict[str, Any] = {}


class WorkerLost(Exception):
    """The pool broke while this call was in it, but not in the worker that died: the call
    is not at fault, and is to be run again."""


class WorkerDied(Exception):
    """The worker running this call died during it: the OOM killer, a signal, a crash."""


@dataclass
class _Generation:
    """One ProcessPoolExecutor, until it breaks, and the marks its workers keep: per slot,
    a worker's pid and the call it runs (0: none)."""

    pool: ProcessPoolExecutor
    marks: Any  # a multiprocessing Array of 2 x size int64
    lock: threading.Lock = field(default_factory=threading.Lock)
    dead: dict[int, str] | None = None  # once broken: the calls whose workers ended, and how


class WorkerPool(Executor):
    """A process pool that replaces itself when broken, and says whose call a dead worker
    was running (see the module docstring): the next call after a break gets a new pool.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size or usable_cpus().count
        self.restarts = 0
        self._calls = itertools.count(1)
        self._lock = threading.Lock()
        self._generation = self._new()

    def _new(self) -> _Generation:
        context = multiprocessing.get_context("spawn")
        marks = context.Array("q", 2 * self.size)
        pool = ProcessPoolExecutor(
            max_workers=self.size,
            mp_context=context,
            initializer=_start_worker,
            initargs=(os.getpid(), marks),
        )
        return _Generation(pool, marks)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        call = next(self._calls)
        with self._lock:
            generation = self._generation
            try:
                inner = generation.pool.submit(_traced, call, fn, *args, **kwargs)
            except BrokenProcessPool:
                self.restarts += 1
                _log().error("worker_pool_restarted", restarts=self.restarts)
                generation.pool.shutdown(wait=False, cancel_futures=True)
                generation = self._generation = self._new()
                inner = generation.pool.submit(_traced, call, fn, *args, **kwargs)
        outer: Future[T] = Future()
        # A weak reference back: the two futures must not hold each other in a cycle, which
        # would keep every result (an object's fragments) until the garbage collector ran.
        pending = weakref.ref(inner)
        outer.add_done_callback(functools.partial(_cancel, pending))
        inner.add_done_callback(functools.partial(_settle, generation, call, outer))
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._generation.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def warm_up(self) -> None:
        """Starts the workers now, while the sources list and the sinks connect, instead
        of when the first object waits for them (a spawn takes a few hundred ms)."""
        for _ in range(self.size):
            self.submit(int)


def _cancel(pending: weakref.ref[Future[Any]], outer: Future[Any]) -> None:
    """A call cancelled by its caller is taken out of the pool's queue, if still there."""
    inner = pending()
    if outer.cancelled() and inner is not None:
        inner.cancel()


def _settle(generation: _Generation, call: int, outer: Future[T], inner: Future[T]) -> None:
    """The call's outcome, passed on; a broken pool's, as WorkerDied or WorkerLost."""
    if inner.cancelled():
        outer.cancel()
        return
    error = inner.exception()
    if isinstance(error, BrokenProcessPool):
        error = _blame(generation, call)
    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
        if error is None:
            outer.set_result(inner.result())
        else:
            outer.set_exception(error)


def _blame(generation: _Generation, call: int) -> Exception:
    """Runs (first) in the pool's manager thread, as it fails the calls: before it stops
    the surviving workers, so each worker's mark still says what it was running."""
    with generation.lock:
        if generation.dead is None:
            generation.dead = _dead_calls(generation)
            _log().error("worker_died", calls_lost=sorted(generation.dead.values()))
    how = generation.dead.get(call)
    if how is None:
        return WorkerLost("another worker of the pool died while this call was in it")
    return WorkerDied(f"the worker decoding it died ({how})")


def _dead_calls(generation: _Generation) -> dict[int, str]:
    """The calls whose workers have ended, and how each ended; the survivors are killed.
    A worker has ended when its sentinel is ready (ProcessPoolExecutor saw that much):
    its exit status is then waited for without reaping it, which is the executor's to do."""
    # The executor's own processes (a private attribute, in every CPython since 3.2): no
    # public way says which of them ended.
    processes = dict(generation.pool._processes)
    ended = set(multiprocessing.connection.wait([p.sentinel for p in processes.values()], 0))
    marks = generation.marks
    dead: dict[int, str] = {}
    for slot in range(0, len(marks), 2):
        pid, call = marks[slot], marks[slot + 1]
        process = processes.get(pid)
        if process is None:
            continue
        if process.sentinel not in ended:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        elif call:
            dead[call] = _how_it_ended(pid)
    return dead


def _how_it_ended(pid: int) -> str:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        return "it ended"  # reaped already
    if info is None:
        return "it ended"
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(info.si_status).name}"
        return f"killed by signal {info.si_status}"
    return f"exited with status {info.si_status}"


def _traced(call: int, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """A call in a worker, marked in its slot while it runs."""
    marks, slot = _WORKER.get("marks"), _WORKER.get("slot", -1)
    if marks is None or slot < 0:
        return fn(*args, **kwargs)
    marks[slot + 1] = call
    try:
        return fn(*args, **kwargs)
    finally:
        marks[slot + 1] = 0


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


def _start_worker(parent: int, marks: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with marks.get_lock():
        free = [slot for slot in range(0, len(marks), 2) if not marks[slot]]
        if free:
            marks[free[0]] = os.getpid()
            _WORKER.update(marks=marks, slot=free[0])
    tune_allocator()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(1)
