"""A backfill on a terminal shows objects done of those to do, records, rate and ETA."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from pathlib import Path

import yaml

from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.progress import Snapshot, render
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.corpus import records

FILES = 12


def test_the_line_says_how_far_and_how_long() -> None:
    assert render(Snapshot(done=25, todo=100, final=True, records=5000), elapsed=10.0) == (
        "25/100 objects (25%)  5,000 records  500 rec/s  ETA 0m30s"
    )
    listing = render(Snapshot(done=3, todo=40, final=False, records=60), elapsed=2.0)
    assert listing == "3/40+ objects  60 records  30 rec/s", "no ETA while the total grows"
    assert render(Snapshot(0, 0, True, 0), elapsed=0.0) == "0/0 objects  0 records  0 rec/s"


async def test_a_backfill_on_a_terminal_draws_progress_to_the_end(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    (tmp_path / "trail").mkdir()
    for n in range(FILES):
        (tmp_path / "trail" / f"f{n:02}.json.gz").write_bytes(log_file(records(10, 970 + n)))
    config = tmp_path / "c.yaml"
    identity = {"installation_key": INSTALLATION_KEY, "oid": OID}
    client = {"identity": identity, "dest_url": lc.usp_url}
    doc = {"file": {"path": str(tmp_path / "trail"), "client_options": client}}
    config.write_text(yaml.safe_dump(doc))
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloudtrail_adapter",
        "run",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        "--log-level",
        "warning",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    screen = await asyncio.wait_for(asyncio.to_thread(read_all, leader), 60)
    assert await proc.wait() == 0, screen
    final = screen.rstrip().split("\r\x1b[K")[-1]
    assert final.startswith(f"{FILES}/{FILES} objects (100%)  {FILES * 10} records"), final


def read_all(fd: int) -> str:
    """Everything the child wrote to its terminal, until it closed it."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child's side of the terminal is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
