"""The state holds audit data (the bytes of records set aside), so it is private whatever
the umask: the directory 0700, the databases and their WAL and shm 0600, `quarantine
export` files 0600. A directory that exists and lets others in is warned about at start."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cloudtrail_adapter import quarantine
from cloudtrail_adapter.config import DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.decoding.values import Unreadable
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.integrity.ledger import Ledger
from cloudtrail_adapter.state import StateStore
from tests.support.configs import file_config
from tests.support.watch import watch_logs


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_run_under_umask_022_leaves_the_state_private(
    tmp_path: Path, lc: LimaCharlieEmulator
) -> None:
    trail = tmp_path / "trail"
    trail.mkdir()
    rng = random.Random(3)
    when = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    records = [cloudtrail_record(rng, account="1", region="us-east-1", when=when)]
    (trail / "one.json.gz").write_bytes(log_file(records))
    state = tmp_path / "var" / "state"

    with umask(0o022):
        assert await serve([file_config(trail, lc, DeliveryOptions())], state) == 0

    assert mode(state) == 0o700
    assert mode(state / "state.db") == 0o600
    assert len(lc.store.events) == 1


def test_the_databases_their_wal_and_shm_are_private_while_open(tmp_path: Path) -> None:
    with umask(0o022):
        store = StateStore.in_dir(tmp_path / "state")
        ledger = Ledger(tmp_path / "state" / "integrity.db", "scope", "bucket", grace=900)
    try:
        made = sorted(p.name for p in (tmp_path / "state").iterdir())
        assert {"state.db-wal", "state.db-shm", "integrity.db-wal"} <= set(made)
        assert {name: mode(tmp_path / "state" / name) for name in made} == dict.fromkeys(
            made, 0o600
        )
    finally:
        ledger.close()
        store.close()


def test_an_open_state_directory_is_warned_about_and_its_database_tightened(
    tmp_path: Path,
) -> None:
    """A state left by an older version under umask 022: the directory is someone's to
    change (warned about), the database ours (made 0600)."""
    state = tmp_path / "state"
    StateStore.in_dir(state).close()
    state.chmod(0o755)
    (state / "state.db").chmod(0o644)

    with watch_logs() as logs:
        StateStore.in_dir(state).close()

    [warning] = logs.named("state_dir_not_private")
    assert (warning["path"], warning["mode"]) == (str(state), "0755")
    assert "chmod 700" in warning["action"]
    assert mode(state) == 0o755
    assert mode(state / "state.db") == 0o600


def test_a_private_state_directory_is_not_warned_about(tmp_path: Path) -> None:
    StateStore.in_dir(tmp_path / "state").close()
    with watch_logs() as logs:
        StateStore.in_dir(tmp_path / "state").close()
    assert not logs.named("state_dir_not_private")


def test_quarantine_export_writes_private_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = StateStore.in_dir(state)
    part = Unreadable(index=2, start=10, end=30, reason="bad_json", excerpt=b"{x", raw=b'{"x":')
    store.scoped("scope").set_aside("s3://bucket/key.json.gz", [part])
    store.close()
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "s3_bucket_key.json.gz.2.json"
    stale.write_bytes(b"older export")
    stale.chmod(0o644)

    with umask(0o022):
        assert quarantine.run("export", [], state, out) == 0
        assert quarantine.run("export", [], state, out / "new") == 0

    assert mode(stale) == 0o600 and stale.read_bytes() == b'{"x":'
    assert mode(out / "new") == 0o700
    [written] = (out / "new").iterdir()
    assert mode(written) == 0o600
