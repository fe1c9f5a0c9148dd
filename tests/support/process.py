"""The daemon as a child process, for harnesses (the tests, bench and soak), and the way
to stop one that runs in this process.

It runs the real CLI, as an operator would, and follows its JSON log lines into a `LogWatch`
(tests/support/watch.py, the same one the in-process tests read) so a harness can wait for
an event ("every worker waits", "a retry was scheduled") instead of guessing how long that
takes. Its peak memory is the kernel's high-water mark, read while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson

from tests.support.watch import LogWatch


class CliProcess:
    """`async with CliProcess(args) as cli:` runs `cloudtrail-adapter ARGS`; killed on exit
    if still running. `cli.lines` is all it wrote to stderr (and stdout too, in order, with
    `stdout=True`, as a terminal shows both); `cli.logs` the JSON lines among them."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: bool = False,
        wrapper: Sequence[str] = (),
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self._args = list(args)
        self._keep = keep  # which lines to keep (all by default: a long bench run keeps few)
        self._env = None if env is None else {**os.environ, **env}
        self._cwd = cwd
        self._stdout = stdout
        self._wrapper = list(wrapper)  # runs the command (cgroup.MemoryLimit.wrapper)
        self.lines: list[str] = []
        self.logs = LogWatch(describe=self.tail)
        self._proc: asyncio.subprocess.Process | None = None
        self._follower: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self._proc = await asyncio.create_subprocess_exec(
            *self._wrapper,
            sys.executable,
            "-m",
            "cloudtrail_adapter",
            *self._args,
            stdout=pipe if self._stdout else devnull,
            stderr=asyncio.subprocess.STDOUT if self._stdout else pipe,
            env=self._env,
            cwd=self._cwd,
        )
        self._follower = asyncio.create_task(self._follow())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.returncode is None:
            await self.kill()
        if self._follower is not None:
            await self._follower

    @property
    def proc(self) -> asyncio.subprocess.Process:
        assert self._proc is not None, "not started"
        return self._proc

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def _follow(self) -> None:
        stream = self.proc.stdout if self._stdout else self.proc.stderr
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace")
            if self._keep is not None and not self._keep(text):
                continue
            self.lines.append(text)
            if text.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    self.logs.add(orjson.loads(text))
        self.logs.end()

    async def kill(self) -> int:
        """SIGKILL: no chance to clean up."""
        self.proc.send_signal(signal.SIGKILL)
        return await self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        return "".join(self.lines[-lines:])


class DaemonProcess(CliProcess):
    """`async with DaemonProcess(config, state) as daemon:` runs `cloudtrail-adapter run`."""

    def __init__(
        self,
        config: Path,
        state: Path,
        *,
        log_level: str = "debug",
        shutdown_grace: float = 1.0,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        args = ["run", str(config), "--state-dir", str(state), "--log-level", log_level]
        args += ["--shutdown-grace", str(shutdown_grace), *extra_args]
        super().__init__(args, env=env, wrapper=wrapper, keep=keep)

    def peak_rss_mb(self) -> float:
        """The most resident memory the daemon and its workers had: the sum of each one's
        VmHWM (an upper bound: their peaks need not coincide), with no sampling."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        return sum(vm_hwm_kb(pid) for pid in pids) / 1024

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as systemd stops it, once it is up (before its handlers are installed a
        SIGTERM ends Python at once, with nothing yet to lose); the exit code."""
        if self.running:
            await self.logs.wait_for("daemon_started", timeout=timeout)
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


RSS_STEP = 0.05  # seconds between VmHWM samples


def vm_hwm_kb(pid: int) -> int:
    """The process's resident high-water mark; 0 once it is gone (or a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from each process's parent in /proc/*/stat (this kernel
    has no /proc/*/task/*/children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # comm may hold spaces and ')'
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


class TreeUsage:
    """`async with TreeUsage(pid) as usage:` ... `usage.mb`, `usage.cpu_seconds`: over `pid`
    and its descendants while inside, sampled (nothing announces growth).

    `mb`: the largest sum of VmHWM seen. VmHWM is itself a high-water mark, so for the main
    process only the growth of its last `RSS_STEP` seconds can be missed; pages a spawned
    child shares with its parent count in both, as RSS always does.
    `cpu_seconds`: user + system CPU of every process of the tree, each as last seen. A
    worker's time is read from its own /proc entry, never from a parent's totals of reaped
    children, so nothing counts twice; what a process spends after its last sample (at most
    `RSS_STEP` seconds, while it is idle and exiting) is not counted.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kb = 0
        self._ticks: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def mb(self) -> float:
        return self.kb / 1024

    @property
    def cpu_seconds(self) -> float:
        return sum(self._ticks.values()) / _CLOCK_TICKS

    def sample(self) -> None:
        pids = [self.pid, *descendants(self.pid)]
        self.kb = max(self.kb, sum(vm_hwm_kb(p) for p in pids))
        for pid in pids:
            ticks = cpu_ticks(pid)
            if ticks is not None:
                self._ticks[pid] = max(self._ticks.get(pid, 0), ticks)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_STEP)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process (its own, not its children's), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after comm: state is field 3, utime 14
    return int(fields[11]) + int(fields[12])


async def all_workers_waiting(
    daemon: DaemonProcess, workers: int, *, since: int = 0, timeout: float = 120.0
) -> None:
    """LimaCharlie is the bottleneck and the pipeline holds all the memory its bounds allow:
    every worker waits downstream (the pipeline's `worker_waiting` debug line)."""
    await daemon.logs.wait_for(
        "worker_waiting",
        when=lambda e: bool(e["waiting_workers"] == workers),
        since=since,
        timeout=timeout,
    )


def stop_daemon() -> None:
    """Stops a daemon running in this process (`serve` in a task) as systemd stops one:
    SIGTERM, to this process, whose handler the daemon installed."""
    os.kill(os.getpid(), signal.SIGTERM)
