"""The worker pool: it survives a dead worker, and it never outlives or outvotes the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import yaml

from cloudtrail_adapter.emulator.corpus import org_trail, write_directory
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.workers import WorkerPool
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


def test_a_dead_worker_costs_the_calls_in_work_and_the_next_call_gets_a_new_pool() -> None:
    pool = WorkerPool(1)
    try:
        with pytest.raises(BrokenProcessPool):
            pool.submit(os._exit, 3).result(timeout=60)
        assert pool.submit(sum, [1, 2, 3]).result(timeout=60) == 6
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
