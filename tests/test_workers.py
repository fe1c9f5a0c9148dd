"""The worker pool: it survives a dead worker, and it never outlives or outvotes the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest
import yaml

from cloudtrail_adapter.emulator.corpus import org_trail, write_directory
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.workers import WorkerDied, WorkerLost, WorkerPool
from tests.support.process import DaemonProcess, descendants


def running(pid: int) -> bool:
    """Alive, not a zombie waiting for whoever inherited it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def exited(pid: int, timeout: float = 30.0) -> None:
    """Waits for a process that is not our child to end, on a pidfd (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await asyncio.wait_for(gone.wait(), timeout)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def test_a_dead_worker_costs_its_call_and_the_next_call_gets_a_new_pool() -> None:
    pool = WorkerPool(1)
    try:
        with pytest.raises(WorkerDied, match="exited with status 3"):
            pool.submit(os._exit, 3).result(timeout=60)
        assert pool.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        assert pool.restarts == 1
    finally:
        pool.shutdown()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _blocked(started: str, release: str) -> int:
    """Says it runs (writes to the FIFO `started`), then waits for a writer on `release`."""
    Path(started).write_bytes(b"")  # a FIFO: returns once the test opened it to read
    Path(release).read_bytes()  # returns once someone opened it to write
    return os.getpid()


def spawned_workers() -> set[int]:
    """This process's multiprocessing workers (not the resource tracker)."""
    found = set()
    for pid in descendants(os.getpid()):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--multiprocessing-fork" in args and running(pid):
            found.add(pid)
    return found


async def test_only_the_call_whose_worker_died_is_blamed_and_the_survivors_are_ended(
    tmp_path: Path,
) -> None:
    """Three calls in a pool of two: one running in the other worker, one waiting in the
    queue. ProcessPoolExecutor fails all three alike; here only the killed worker's call
    is WorkerDied, and the worker left blocked in its call is ended, not leaked."""
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    os.mkfifo(release)
    before = spawned_workers()
    pool = WorkerPool(2)
    try:
        running_call = pool.submit(_blocked, str(started), str(release))
        await asyncio.to_thread(started.read_bytes)  # returns once the call runs in a worker
        killer = pool.submit(_die)
        queued = pool.submit(sum, [1, 2])
        with pytest.raises(WorkerDied, match="SIGKILL"):
            await asyncio.to_thread(killer.result, 60)
        workers = spawned_workers() - before  # the survivor, being ended
        for lost in (running_call, queued):
            with pytest.raises(WorkerLost):
                await asyncio.to_thread(lost.result, 60)
        await asyncio.gather(*(exited(pid) for pid in workers))
        assert not spawned_workers() - before, "a worker of the broken pool was left"
        assert await asyncio.to_thread(pool.submit(sum, [1, 2, 3]).result, 60) == 6
        assert pool.restarts == 1
    finally:
        pool.shutdown()


def test_workers_leave_sigterm_to_the_daemon() -> None:
    """systemd signals the whole control group; the daemon still needs its workers to
    finish in-flight work during the shutdown grace."""
    pool = WorkerPool(1)
    try:
        worker = pool.submit(os.getpid).result(timeout=60)
        os.kill(worker, signal.SIGTERM)
        os.kill(worker, signal.SIGINT)
        assert pool.submit(os.getpid).result(timeout=60) == worker
        assert pool.restarts == 0
    finally:
        pool.shutdown()


async def test_kill_9_of_the_daemon_takes_its_workers_with_it(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    write_directory(org_trail(5, accounts=1, regions=1, days=1, files_per_day=4), tmp_path / "c")
    client = {"identity": {"oid": str(uuid.uuid4()), "installation_key": str(uuid.uuid4())}}
    doc = {
        "file": {"path": str(tmp_path / "c"), "client_options": client | {"dest_url": lc.usp_url}}
    }
    config = tmp_path / "file.yaml"
    config.write_text(yaml.safe_dump(doc))
    lc.usp_faults.hold_acks()  # the daemon stays busy with what it sent
    async with DaemonProcess(config, tmp_path / "state") as daemon:
        await daemon.logs.wait_for("object_decoded")  # the pool has run a call: workers exist
        workers = descendants(daemon.proc.pid)
        assert len(workers) >= 2, workers  # the pool (and multiprocessing's resource tracker)
        await daemon.kill()
        await asyncio.gather(*(exited(pid) for pid in workers))
    assert not [pid for pid in workers if running(pid)]
