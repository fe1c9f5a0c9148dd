"""eventID de-duplication: each eventID ships once, across objects, in-flight copies and
restarts; the window and the key bound hold; counted; off switch."""

from __future__ import annotations

import dataclasses
import gzip
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudtrail_adapter.acks import AckTracker, ItemProgress
from cloudtrail_adapter.config import AwsOptions, DedupOptions, DeliveryOptions, parse_documents
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.decoding.batches import drop_lines, fragment, pack_lines
from cloudtrail_adapter.decoding.event_keys import ENTRY, record_keys
from cloudtrail_adapter.decoding.values import PackLimits
from cloudtrail_adapter.dedup import Deduplicator
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.model import WorkItem
from cloudtrail_adapter.readers import BytesReader
from cloudtrail_adapter.state import StateStore
from tests.support.configs import s3_config
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

ACCOUNT = "111122223333"
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PREFIX = f"AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/24/"


def record(n: int, *, when: datetime = START, account: str = ACCOUNT) -> bytes:
    body = {"eventID": f"id-{n}", "recipientAccountId": account, "eventTime": _iso(when)}
    return orjson.dumps(body | {"eventName": "GetObject"})


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def corpus_with_repeats(
    files: int, per_file: int, share: float, seed: int
) -> tuple[dict[str, bytes], set[str], int]:
    """Objects in which `share` of the records repeat an earlier eventID (same event, as
    CloudTrail's own duplicates are), in the same object or another; returns the objects,
    the distinct eventIDs and the number of repeats."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    repeats = 0
    for n in range(files * per_file):
        if records and rng.random() < share:
            records.append(rng.choice(records[-200:]))
            repeats += 1
        else:
            when = START + timedelta(seconds=n)
            records.append(cloudtrail_record(rng, account=ACCOUNT, region="eu-west-1", when=when))
    objects = {
        f"{PREFIX}{ACCOUNT}_CloudTrail_eu-west-1_{i:04}.json.gz": log_file(
            records[i * per_file : (i + 1) * per_file]
        )
        for i in range(files)
    }
    return objects, {str(r["eventID"]) for r in records}, repeats


def delivered_ids(lc: LimaCharlieEmulator) -> list[str]:
    return [str(e.json()["eventID"]) for e in lc.store.events]


# --------------------------------------------------------------------------------------------
# End to end, through moto's S3 and the emulator
# --------------------------------------------------------------------------------------------


async def test_five_percent_repeated_event_ids_arrive_once_and_are_counted(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects, ids, repeats = corpus_with_repeats(files=40, per_file=50, share=0.05, seed=5)
    assert 80 <= repeats <= 120  # the corpus is what the test says it is
    await put_objects(aws_options, bucket, objects)
    delivery = DeliveryOptions(batch_max_records=120, batch_linger=0.05)
    cfg = s3_config(aws_options, bucket, lc, delivery=delivery, parallel_fetch=8)

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0

    got = delivered_ids(lc)
    assert sorted(got) == sorted(ids)  # every eventID, each exactly once
    (finished,) = logs.named("source_finished")
    assert finished["duplicates"] == repeats
    assert finished["objects"] == len(objects)


async def test_a_restart_does_not_ship_again_what_was_acknowledged_and_the_switch_turns_it_off(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """The same events under new object names (a redelivery) after a restart: dropped,
    from the keys read back from the state database; with dedup off they ship again."""
    rng = random.Random(9)
    events = [
        cloudtrail_record(rng, account=ACCOUNT, region="eu-west-1", when=START) for _ in range(30)
    ]
    cfg = s3_config(aws_options, bucket, lc)
    await put_objects(aws_options, bucket, {f"{PREFIX}a.json.gz": log_file(events)})
    assert await serve([cfg], state_dir) == 0
    assert len(lc.store.events) == 30

    await put_objects(aws_options, bucket, {f"{PREFIX}b.json.gz": log_file(events[::-1])})
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0
    assert len(lc.store.events) == 30
    assert logs.named("dedup_loaded")[0]["keys"] == 30
    assert logs.named("source_finished")[0]["duplicates"] == 30

    await put_objects(aws_options, bucket, {f"{PREFIX}c.json.gz": log_file(events)})
    off = dataclasses.replace(cfg, dedup=DedupOptions(enabled=False))
    assert await serve([off], state_dir) == 0
    assert len(lc.store.events) == 60


# --------------------------------------------------------------------------------------------
# The deduplicator itself
# --------------------------------------------------------------------------------------------


class Progress:
    """What the tracker would be told: credits, and whether the item was failed."""

    def __init__(self, tracker: AckTracker, name: str) -> None:
        item = WorkItem("test", name, BytesReader(b""), commit=_nothing)
        self.progress: ItemProgress = tracker.open(item)


async def _nothing() -> None:
    return None


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.db")


def dedup_of(store: StateStore, **options: Any) -> Deduplicator:
    return Deduplicator("test", store.scoped("scope").delivered_keys(), DedupOptions(**options))


def keyed(lines: list[bytes]) -> Any:
    return fragment(lines, keyed=True)


def test_record_keys_identify_an_event_by_id_and_account_and_skip_what_has_no_identity() -> None:
    lines = [
        record(1),
        record(1),
        record(1, account="999999999999"),
        b'{"eventTime":"2026-11-24T10:00:00Z"}',
        b'{"eventID":"x","eventTime":"not a time"}',
        b"[1]",
    ]
    keys = record_keys(lines)
    entries = [keys[i : i + ENTRY] for i in range(0, len(keys), ENTRY)]
    assert len(entries) == len(lines)
    assert entries[0] == entries[1] != entries[2]
    assert entries[3] == entries[4] == entries[5] == bytes(ENTRY)
    minute = int((START - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) // 60
    assert int.from_bytes(entries[0][12:], "little") == minute


def test_pack_lines_keys_only_when_asked() -> None:
    lines = [record(n) for n in range(10)]
    plain = pack_lines(lines, PackLimits(4, 1 << 20))
    keyed_parts = pack_lines(lines, PackLimits(4, 1 << 20, dedup=True))
    assert [p.keys for p in plain] == [b""] * 3
    assert b"".join(p.keys for p in keyed_parts) == record_keys(lines)


def test_drop_lines_removes_exactly_those_records() -> None:
    lines = [record(n) for n in range(6)]
    part = drop_lines(fragment(lines), [0, 3, 5])
    assert part.records == 3
    text = gzip.decompress(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        + part.deflate
        + b"\x03\x00"
        + part.crc.to_bytes(4, "little")
        + part.raw_bytes.to_bytes(4, "little")
    )
    assert text.split(b"\n") == [lines[1], lines[2], lines[4]]


class _NoWalk(dict[int, Any]):
    """Pending keys that may be looked up but not walked: screening one fragment must cost
    its own keys, not every key in flight (set.isdisjoint(dict) walked them all)."""

    def __iter__(self) -> Any:
        raise AssertionError("screening walked every pending key")


def test_screening_a_fragment_does_not_walk_the_keys_in_flight(store: StateStore) -> None:
    tracker = AckTracker("test")
    dedup = dedup_of(store)
    progress = Progress(tracker, "a").progress
    dedup.screen(progress, keyed([record(n) for n in range(1000)]))
    dedup.pending = _NoWalk(dedup.pending)
    flight, drop = dedup.screen(progress, keyed([record(n) for n in range(1000, 1010)]))
    assert drop == [] and len(flight.keys) == 10
    _, drop = dedup.screen(progress, keyed([record(5), record(2000)]))
    assert drop == [0]


def test_a_copy_of_a_pending_record_waits_for_its_acknowledgement(store: StateStore) -> None:
    tracker = AckTracker("test")
    dedup = dedup_of(store)
    first, second = Progress(tracker, "a").progress, Progress(tracker, "b").progress
    tracker.set_total(second, 2)

    flight, drop = dedup.screen(first, keyed([record(1), record(2), record(1)]))
    assert drop == [2]  # the copy within one fragment waits on the first
    _, drop = dedup.screen(second, keyed([record(2), record(3)]))
    assert drop == [0] and dedup.stats.duplicates == 2
    second.acknowledged(1)  # record 3 acknowledged: record 2 is still only in flight
    assert second.acked == 1 and not second.done

    dedup.delivered([flight])
    assert second.acked == 2 and second.done
    assert first.acked == 1  # its own copy, credited by its own flight
    assert dedup.stats.keys_held == 2


def test_an_abandoned_flight_hands_back_the_items_that_waited_on_it(store: StateStore) -> None:
    tracker = AckTracker("test")
    dedup = dedup_of(store)
    first, second = Progress(tracker, "a").progress, Progress(tracker, "b").progress
    flight, _ = dedup.screen(first, keyed([record(1)]))
    _, drop = dedup.screen(second, keyed([record(1)]))
    assert drop == [0]

    assert dedup.abandon([flight]) == [second]
    _, drop = dedup.screen(second, keyed([record(1)]))  # read again: it ships this time
    assert drop == []


def test_delivered_keys_are_read_back_within_the_window_newest_first(store: StateStore) -> None:
    tracker = AckTracker("test")
    dedup = dedup_of(store, window=3600)
    item = Progress(tracker, "a").progress
    old = [record(n, when=START) for n in range(5)]
    new = [record(n, when=START + timedelta(hours=2)) for n in range(5, 10)]
    for lines in (old, new):
        flight, _ = dedup.screen(item, keyed(lines))
        dedup.delivered([flight])
    assert dedup.stats.keys_held == 5  # the old minute fell out of the window

    again = dedup_of(store, window=3600)
    assert again.load() == 5
    _, drop = again.screen(item, keyed(old + new))
    assert drop == [5, 6, 7, 8, 9]  # old ones are beyond the window: shipped


def test_max_keys_forgets_the_oldest_minutes_early_and_says_so(store: StateStore) -> None:
    tracker = AckTracker("test")
    dedup = dedup_of(store, max_keys=1000)
    item = Progress(tracker, "a").progress
    with watch_logs() as logs:
        for minute in range(3):
            lines = [
                record(minute * 1000 + n, when=START + timedelta(minutes=minute))
                for n in range(400)
            ]
            flight, _ = dedup.screen(item, keyed(lines))
            dedup.delivered([flight])
    assert dedup.stats.keys_held == 800 and dedup.stats.forgotten_early == 400
    assert len(logs.named("dedup_window_shortened")) == 1
    later = START + timedelta(minutes=1)
    _, drop = dedup.screen(item, keyed([record(0), record(1000, when=later)]))
    assert drop == [1]

    assert dedup_of(store, max_keys=1000).load() == 1000  # the bound holds on reload too


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


DOC = """
s3:
  bucket_name: b
  client_options:
    identity: {oid: 6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a, installation_key: k}
  dedup:
"""


def test_dedup_options_parse_and_bad_values_say_where() -> None:
    (cfg,) = parse_documents(DOC + "    window: 7200\n    max_keys: 5000\n", {}, "c.yaml")
    assert cfg.dedup == DedupOptions(enabled=True, window=7200, max_keys=5000)
    (off,) = parse_documents(DOC + "    enabled: false\n", {}, "c.yaml")
    assert not off.dedup.enabled
    with pytest.raises(Exception) as caught:
        parse_documents(DOC + "    window: 10\n    keys: 3\n", {}, "c.yaml")
    text = str(caught.value)
    assert "s3.dedup.window: expected a number at least 60" in text
    assert "s3.dedup.keys: unknown key" in text
