"""A worker's death costs only its own object (issue 26).

The daemon runs as its own process over a directory of objects each large enough (some
40 MB of text) to keep a worker busy for a while, decoded whole in the pool. The test kills
a worker, with SIGKILL, while it decodes: only the object it was decoding counts an
attempt; the others in the pool go again at once. An object whose decoding dies twice is
quarantined with its own reason, also when what died was the daemon itself, across
restarts: its attempt was recorded before decoding.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cloudtrail_adapter import cli
from cloudtrail_adapter.emulator.corpus import cloudtrail_record
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.process import DaemonProcess, cpu_ticks, descendants

#: Resident memory a worker gains once it inflated one of these objects (~40 MB of text):
#: it is then surely inside the decoding call, for some hundreds of ms more.
INFLATED_MB = 30
IDLE_POLLS = 30  # of 10 ms each


def big_object(seed: int) -> tuple[bytes, list[str]]:
    """~40 MB of CloudTrail text (gzip: ~6.5 MB, so decoded whole in a worker), and its
    eventIDs, each distinct."""
    rng = random.Random(seed)
    when = datetime(2026, 11, 24, 12, tzinfo=UTC)
    base = [
        orjson.dumps(cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when))
        for _ in range(1000)
    ]
    parts = []
    for copy in range(24):
        tag = b'"eventID":"%d-%d-' % (seed, copy)
        parts += [record.replace(b'"eventID":"', tag, 1) for record in base]
    ids = [str(orjson.loads(part)["eventID"]) for part in parts]
    return zlib.compress(b'{"Records":[' + b",".join(parts) + b"]}", 6, wbits=31), ids


def document(path: Path, lc: LimaCharlieEmulator, **source: Any) -> dict[str, Any]:
    client = {
        "identity": {"oid": str(uuid.uuid4()), "installation_key": str(uuid.uuid4())},
        "dest_url": lc.usp_url,
    }
    defaults = {"single_load": False, "poll_interval": 0.05, "retry_backoff": 0.05}
    return {"workers": 2, "file": {"path": str(path), "client_options": client} | defaults | source}


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump(doc))
    return config


def pool_workers(daemon: DaemonProcess) -> list[int]:
    """The daemon's decoding processes (not multiprocessing's resource tracker)."""
    found = []
    for pid in descendants(daemon.proc.pid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--multiprocessing-fork" in args:
            found.append(pid)
    return found


async def workers_idle(daemon: DaemonProcess, count: int, timeout: float = 60.0) -> None:
    """Until the pool's workers all started and are done starting (their imports take
    CPU and memory): no CPU used over IDLE_POLLS."""
    seen: dict[int, int] = {}
    quiet = 0
    async with asyncio.timeout(timeout):
        while quiet < IDLE_POLLS:
            now = {pid: cpu_ticks(pid) or 0 for pid in pool_workers(daemon)}
            quiet = quiet + 1 if len(now) == count and now == seen else 0
            seen = now
            await asyncio.sleep(0.01)


def drop_in(trail: Path, name: str, body: bytes) -> None:
    """A file appears whole in the watched directory (a rename), never half written."""
    staged = trail.parent / f".{name}"
    staged.write_bytes(body)
    staged.rename(trail / name)


async def decoding_worker(daemon: DaemonProcess, timeout: float = 60.0) -> int:
    """A worker that is running a decoding call: one holding the object's text, its
    resident memory INFLATED_MB over the least it was seen with (nothing announces that a
    worker took a call; its CPU time would not say: receiving the object takes some too).
    A pool just rebuilt starts its workers as calls come, so they are looked for each time."""
    least: dict[int, int] = {}
    async with asyncio.timeout(timeout):
        while True:
            for pid in pool_workers(daemon):
                rss = rss_kb(pid)
                if rss - least.setdefault(pid, rss) >= INFLATED_MB << 10:
                    return pid
                least[pid] = min(least[pid], rss)
            await asyncio.sleep(0.005)


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = (line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(next(found, "0"))


@pytest.mark.timeout(240)
async def test_a_killed_worker_costs_only_the_object_it_was_decoding(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    trail = tmp_path / "trail"
    trail.mkdir()
    bodies = [big_object(n) for n in range(3)]
    expected = Counter(i for _, ids in bodies for i in ids)
    config = write(tmp_path, document(trail, lc, parallel_fetch=3))

    async with DaemonProcess(config, tmp_path / "state") as daemon:
        await workers_idle(daemon, 2)
        for n, (body, _) in enumerate(bodies):
            drop_in(trail, f"object-{n}.json.gz", body)
        await daemon.logs.wait_for("object_decoding", 3)  # all three are in the pool
        os.kill(await decoding_worker(daemon), signal.SIGKILL)
        await lc.store.wait_for(expected.total(), timeout=180)
        assert await daemon.stop() == 0, daemon.tail()

    context = daemon.tail(60)
    [died] = daemon.logs.named("object_failed")
    assert died["reason"] == "worker_died" and "SIGKILL" in died["error"], context
    [retry] = daemon.logs.named("object_retry_scheduled")
    assert (retry["path"], retry["reason"], retry["attempts"]) == (died["path"], "worker_died", 1)
    requeued = {e["path"] for e in daemon.logs.named("object_requeued")}
    assert requeued and died["path"] not in requeued, context  # again at once, uncounted
    assert len(daemon.logs.named("worker_pool_restarted")) == 1, context
    assert not daemon.logs.named("object_quarantined"), context
    assert lc.store.event_ids() == expected, "all three delivered, each record once"


@pytest.mark.timeout(240)
async def test_an_object_whose_decoding_killed_its_worker_twice_is_quarantined(
    lc: LimaCharlieEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail = tmp_path / "trail"
    trail.mkdir()
    body, _ = big_object(7)
    config = write(tmp_path, document(trail, lc, parallel_fetch=1, quarantine_after=5))
    state = tmp_path / "state"

    async with DaemonProcess(config, state) as daemon:
        await workers_idle(daemon, 2)
        drop_in(trail, "killer.json.gz", body)
        for attempt in (1, 2):
            await daemon.logs.wait_for("object_decoding", attempt)
            os.kill(await decoding_worker(daemon), signal.SIGKILL)
        quarantined = await daemon.logs.wait_for("object_quarantined")
        [retried] = daemon.logs.named("object_retry_scheduled")
        assert await daemon.stop() == 0, daemon.tail()

    assert (retried["reason"], retried["attempts"]) == ("worker_died", 1)
    assert (quarantined["reason"], quarantined["attempts"]) == ("decode_killed", 2)
    assert "died 2 time(s)" in quarantined["error"]
    assert not daemon.logs.named("object_decoded")
    assert cli.main(["quarantine", "list", "--state-dir", str(state)]) == 0
    assert "decode_killed" in capsys.readouterr().out


@pytest.mark.timeout(240)
async def test_a_daemon_killed_twice_while_decoding_an_object_does_not_decode_it_again(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    """An OOM kill of the daemon itself, twice over one object: the attempts were recorded
    before decoding, so the third start quarantines it instead of dying a third time."""
    trail = tmp_path / "trail"
    trail.mkdir()
    body, _ = big_object(8)
    (trail / "killer.json.gz").write_bytes(body)
    config = write(tmp_path, document(trail, lc, parallel_fetch=1, single_load=True))
    state = tmp_path / "state"

    for _ in range(2):
        async with DaemonProcess(config, state) as daemon:
            await daemon.logs.wait_for("object_decoding")
            assert await daemon.kill() == -signal.SIGKILL
    async with DaemonProcess(config, state) as daemon:
        quarantined = await daemon.logs.wait_for("object_quarantined")
        assert await asyncio.wait_for(daemon.proc.wait(), 60) == 1  # single load: it says so
    assert quarantined["reason"] == "decode_killed", daemon.tail()
    assert "an earlier run died decoding it" in quarantined["error"]
    assert not daemon.logs.named("object_decoding"), "not decoded a third time"
