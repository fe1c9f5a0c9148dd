"""Streams shard across replicas (`shard: "i/N"`): each replica discovers and lists only
its own streams, every record reaches LimaCharlie exactly once across them, and going
from 2 to 3 replicas loses nothing and re-sends exactly what README "Scaling" says: the
moved streams' day folders from `lookback` before the change."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudtrail_adapter.config import AwsOptions, ConfigError, parse_documents
from cloudtrail_adapter.config.shard import Shard
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.sources.shard import handover
from cloudtrail_adapter.sources.trail_layout import Stream
from cloudtrail_adapter.state import StateStore
from tests.support.configs import s3_config
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

ACCOUNTS = [f"{100000000000 + n * 7919}" for n in range(12)]
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
DOC = """
s3:
  client_options:
    identity: {{oid: 6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a, installation_key: k}}
  bucket_name: b
  shard: {shard}
"""


def streams(n: int = 17_000) -> list[tuple[str, str]]:
    return [(f"{100000000000 + i // 17}", f"region-{i % 17:02d}") for i in range(n)]


def test_streams_split_evenly_and_a_new_replica_takes_only_its_share_from_each() -> None:
    all_streams = streams()
    two = [Shard(0, 2).owner(a, r) for a, r in all_streams]
    three = [Shard(0, 3).owner(a, r) for a, r in all_streams]
    for count, owners in ((2, two), (3, three)):
        shares = Counter(owners)
        assert all(abs(shares[i] - len(owners) / count) < 0.03 * len(owners) for i in range(count))
    moved = [(old, new) for old, new in zip(two, three, strict=True) if old != new]
    assert {new for _, new in moved} == {2}  # only to the new replica, none between old ones
    assert abs(len(moved) / len(all_streams) - 1 / 3) < 0.02
    # stable across processes and releases: the same streams stay where they were
    assert [Shard(0, 3).owner(a, r) for a, r in all_streams[:6]] == [2, 2, 2, 0, 0, 2]


def test_the_shard_key_takes_an_index_or_a_statefulset_pod_name() -> None:
    def shard(text: str, env: dict[str, str] | None = None) -> Shard | None:
        (cfg,) = parse_documents(DOC.format(shard=text), env or {}, "test")
        return cfg.source.shard  # type: ignore[union-attr]

    assert shard('"1/3"') == Shard(1, 3)
    assert shard('"${HOSTNAME}/3"', {"HOSTNAME": "cloudtrail-adapter-s3-2"}) == Shard(2, 3)
    assert shard('"${POD_INDEX}/4"', {"POD_INDEX": "0"}) == Shard(0, 4)
    for bad in ('"3/3"', '"1"', '"a/2"', '"-1/2"', '"0/0"'):
        with pytest.raises(ConfigError, match="shard"):
            shard(bad)
    with pytest.raises(ConfigError, match="needs layout: auto"):
        parse_documents(DOC.format(shard='"0/2"') + "  layout: flat\n", {}, "test")


def stream(account: str, region: str) -> Stream:
    return Stream(f"AWSLogs/{account}/CloudTrail/{region}/", account, "CloudTrail", region)


def test_a_leaving_stream_is_finished_first_and_an_arriving_one_starts_at_the_change(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    everything = [stream(a, r) for a, r in streams(60)]
    store = StateStore(tmp_path / "state.db")
    checkpoints = store.scoped("s").checkpoints("bucket")
    mine = [s for s in everything if Shard(0, 2).holds(s.account, s.region)]
    moving = [s for s in mine if not Shard(0, 3).holds(s.account, s.region)]
    assert len(moving) > 1
    for s in mine:
        checkpoints.move_cursor(s.prefix, "2026-11-21", s.prefix)  # caught up
    behind = moving[0]
    checkpoints.move_cursor(behind.prefix, "2026-11-10", behind.prefix)  # a failing object
    checkpoints.mark_shard("0/2", "", now.timestamp() - 86400 * 30)

    # 2 -> 3: the streams that go to the new replica leave; one with work left stays a while
    found = handover(checkpoints, Shard(0, 3), now, 86400, lambda s: True)
    assert set(found.leaving) == {behind.prefix}
    assert set(checkpoints.cursors()) == {s.prefix for s in mine if s not in moving[1:]}
    assert (found.before, found.since) == (Shard(0, 2), now)
    assert not [
        s for s in everything if Shard(0, 3).holds(s.account, s.region) and found.arrived(s)
    ]
    assert found.start(86400).isoformat() == "2026-11-19"
    assert found.finished(behind.prefix, found.start(86400), 86400)
    again = handover(checkpoints, Shard(0, 3), now + timedelta(hours=1), 86400, lambda s: True)
    assert (again.before, again.since) == (Shard(0, 2), now)  # a restart changes nothing

    # 3 -> 2: the streams of the replica that went arrive, and only those
    back = handover(checkpoints, Shard(0, 2), now + timedelta(days=1), 86400, lambda s: True)
    arrived = [s for s in everything if Shard(0, 2).holds(s.account, s.region) and back.arrived(s)]
    assert arrived == [
        s
        for s in everything
        if Shard(0, 3).owner(s.account, s.region) == 2 and Shard(0, 2).holds(s.account, s.region)
    ]
    assert arrived and back.start(86400).isoformat() == "2026-11-20"
    store.close()


class Bucket:
    def __init__(self) -> None:
        self.rng = random.Random(29)
        self.files: dict[str, bytes] = {}
        self.ids: dict[str, list[str]] = {}

    def add(self, account: str, region: str, when: datetime) -> str:
        recs = [cloudtrail_record(self.rng, account=account, region=region, when=when)]
        tail = "".join(self.rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=16))
        name = f"{account}_CloudTrail_{region}_{when:%Y%m%dT%H%MZ}_{tail}.json.gz"
        key = f"AWSLogs/{account}/CloudTrail/{region}/{when:%Y/%m/%d}/{name}"
        self.files[key] = log_file(recs)
        self.ids[key] = [str(r["eventID"]) for r in recs]
        return key

    def events(self, keys: list[str]) -> Counter[str]:
        return Counter(i for key in keys for i in self.ids[key])


async def test_two_replicas_ship_every_record_once_and_a_third_loses_nothing(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    trail = Bucket()
    live = [
        trail.add(a, r, now - timedelta(hours=h))
        for a in ACCOUNTS
        for r in REGIONS
        for h in (1, 20)
    ]
    history = [trail.add(a, REGIONS[0], now - timedelta(days=5)) for a in ACCOUNTS[:3]]
    await put_objects(aws_options, bucket, trail.files)

    async def replica(index: int, count: int) -> dict[str, int]:
        cfg = s3_config(aws_options, bucket, lc, shard=Shard(index, count))
        with watch_logs() as logs:
            assert await serve([cfg], tmp_path / f"replica-{index}") == 0
        (found,) = logs.named("layout_discovered")
        assert len(logs.named("shard_taken")) == 1  # an empty state, or a new shard
        return {"streams": found["streams"], "other": found["passed_over"].get("other_replica", 0)}

    first = [await replica(i, 2) for i in range(2)]
    total = len(ACCOUNTS) * len(REGIONS)
    assert [f["streams"] + f["other"] for f in first] == [total, total]
    assert sum(f["streams"] for f in first) == total  # each stream listed by one replica
    assert all(0.3 * total <= f["streams"] <= 0.7 * total for f in first)  # about half
    assert lc.store.event_ids() == trail.events(live)  # every record once; history is a backfill's

    # two more hours of files, then three replicas: nothing is lost; what the third
    # re-sends is exactly the moved streams' files from lookback before the change
    later = [trail.add(a, r, now + timedelta(minutes=5)) for a in ACCOUNTS for r in REGIONS]
    await put_objects(aws_options, bucket, {k: trail.files[k] for k in later})
    second = [await replica(i, 3) for i in range(3)]
    assert sum(s["streams"] for s in second) == total
    moved = {(a, r) for a in ACCOUNTS for r in REGIONS if Shard(0, 3).owner(a, r) == 2}
    assert moved and all(Shard(0, 2).owner(a, r) in (0, 1) for a, r in moved)
    resent = [k for k in live if tuple(k.split("/")[1:4:2]) in moved]
    assert lc.store.event_ids() == trail.events(live + later) + trail.events(resent)
    assert not set(lc.store.event_ids()) & set(trail.events(history))
