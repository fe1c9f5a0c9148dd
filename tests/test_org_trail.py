"""An organisation trail's bucket, listed by day folders: each account through its own
role, only per-day prefixes listed (counted from the stand-in's request log), late files
found through the lookback, backfill windows, and the state kept bounded."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudtrail_adapter.config import (
    AwsOptions,
    ConfigError,
    DedupOptions,
    S3SourceOptions,
    SourceConfig,
    parse_documents,
)
from cloudtrail_adapter.daemon import checkpoint_scope, serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, digest_key, log_file, object_key
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.sources.trail_layout import file_time, logs_root
from tests.support.configs import s3_config, usp_client_options
from tests.support.process import stop_daemon
from tests.support.stand_in import listings, put_objects
from tests.support.watch import passes_done, watch_logs

ORG = "o-a1b2c3d4e5"
ACCOUNTS = ("210987654321", "321098765432", "432109876543")
REGIONS = ("us-east-1", "eu-west-1", "ap-south-1", "sa-east-1")
DAY_LISTING = "AWSLogs/o-a1b2c3d4e5/{account}/CloudTrail/{region}/{day:%Y/%m/%d}/"


class Trail:
    """The bucket's files, made and remembered: key -> eventIDs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.ids: dict[str, list[str]] = {}

    def add(self, account: str, region: str, when: datetime, records: int = 3) -> str:
        recs = [
            cloudtrail_record(self.rng, account=account, region=region, when=when)
            for _ in range(records)
        ]
        key = object_key(
            prefix="", org_id=ORG, account=account, region=region, when=when, rng=self.rng
        )
        self.files[key] = log_file(recs)
        self.ids[key] = [str(r["eventID"]) for r in recs]
        return key

    def digest(self, account: str, region: str, when: datetime) -> None:
        key = digest_key(prefix="", org_id=ORG, account=account, region=region, when=when)
        self.files[key] = log_file([])

    def events_of(self, keys: list[str]) -> Counter[str]:
        return Counter(i for key in keys for i in self.ids[key])


def day_listings(calls: list[dict[str, str]]) -> set[str]:
    """The first day folder of each listing that is not a delimiter one: its prefix, or
    where it lists a span of days from a stream's prefix, the folder it starts after."""
    return {
        c["start-after"] + "/" if "start-after" in c else c["prefix"]
        for c in calls
        if "delimiter" not in c
    }


def source(
    options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, account: str, **extra: Any
) -> SourceConfig:
    """One account of the bucket, read through that account's own role."""
    role = dataclasses.replace(
        options,
        role_arn=f"arn:aws:iam::{account}:role/trail-reader",
        role_session_name=f"reader-{account}",
    )
    cfg = s3_config(role, bucket, lc, accounts=(account,), **extra)
    client = dataclasses.replace(usp_client_options(lc, account), sensor_seed_key=account)
    return dataclasses.replace(cfg, index=ACCOUNTS.index(account) + 1, client_options=client)


def by_sensor(lc: LimaCharlieEmulator) -> dict[str, Counter[str]]:
    got: dict[str, Counter[str]] = {}
    for event in lc.store.events:
        got.setdefault(event.sensor.rsplit("/", 1)[1], Counter())[str(event.json()["eventID"])] += 1
    return got


async def test_an_org_trail_is_read_by_day_through_a_role_per_account_and_late_files_are_found(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    requests: list[tuple[str, str]],
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    trail = Trail(3)
    first: dict[str, list[str]] = {a: [] for a in ACCOUNTS}
    for account in ACCOUNTS:
        for region in REGIONS:
            for back in (2, 1, 0):
                when = today - timedelta(days=back) + timedelta(hours=1)
                first[account].append(trail.add(account, region, when))
                trail.digest(account, region, when)
    await put_objects(aws_options, bucket, trail.files)
    configs = [
        source(aws_options, bucket, lc, a, single_load=False, poll_interval=0.3, quiet_interval=0.3)
        for a in ACCOUNTS
    ]
    # de-duplication off: a file listed and shipped twice must show as a duplicate
    configs = [dataclasses.replace(c, dedup=DedupOptions(enabled=False)) for c in configs]

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve(configs, state_dir))
        await lc.store.wait_for(3 * 4 * 3 * 3, timeout=60)
        await passes_done(logs, configs, more=2)
        expected = {a: trail.events_of(first[a]) for a in ACCOUNTS}
        assert by_sensor(lc) == expected  # every record once, each account in its sensor

        calls = listings(requests, bucket)
        days = {today.date() - timedelta(days=n) for n in (2, 1, 0)}
        wanted = {
            DAY_LISTING.format(account=a, region=r, day=d)
            for a in ACCOUNTS
            for r in REGIONS
            for d in days
        }
        assert day_listings(calls) <= wanted | tomorrow(wanted)  # only day folders
        assert wanted <= day_listings(calls)
        spans = [c for c in calls if "start-after" in c]
        assert all(c["start-after"] + "/" in wanted for c in spans)  # a stream from a day on
        assert all(
            c.get("delimiter") == "/" for c in calls if c["prefix"] not in wanted and c not in spans
        )

        # new files for today, a late one for yesterday: exactly those are delivered
        del requests[:]
        late = [
            trail.add(ACCOUNTS[0], REGIONS[0], today + timedelta(hours=2)),
            trail.add(ACCOUNTS[1], REGIONS[2], today + timedelta(hours=3)),
            trail.add(ACCOUNTS[2], REGIONS[3], today - timedelta(days=1) + timedelta(hours=23)),
        ]
        await put_objects(aws_options, bucket, {k: trail.files[k] for k in late})
        await lc.store.wait_for(3 * 4 * 3 * 3 + 9, timeout=30)
        await passes_done(logs, configs, more=2)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0

    for account, key in zip(ACCOUNTS, late, strict=True):
        expected[account] += trail.events_of([key])
    assert by_sensor(lc) == expected
    recent = {today.date() - timedelta(days=1), today.date()}
    allowed = {
        DAY_LISTING.format(account=a, region=r, day=d)
        for a in ACCOUNTS
        for r in REGIONS
        for d in recent
    }
    assert day_listings(listings(requests, bucket)) <= allowed | tomorrow(allowed)

    # checkpoints of days before the lookback are pruned: 4 regions x 2 days, plus the new
    # file (one day fewer if the test ran across midnight UTC: the lookback moved on)
    with contextlib.closing(sqlite3.connect(state_dir / "state.db")) as db:
        query = "SELECT COUNT(*) FROM s3_checkpoints WHERE scope=?"
        kept = db.execute(query, (checkpoint_scope(configs[0]),)).fetchone()[0]
    crossed = datetime.now(UTC).date() != today.date()
    assert kept == 4 * 2 + 1 or (crossed and kept == 4 + 1), kept


def tomorrow(prefixes: set[str]) -> set[str]:
    """The same folders a day later: the test may cross midnight (UTC)."""
    later = set()
    for prefix in prefixes:
        day = datetime.strptime(prefix[-11:-1], "%Y/%m/%d").date() + timedelta(days=1)
        later.add(f"{prefix[:-11]}{day:%Y/%m/%d}/")
    return later


async def test_start_and_end_time_and_regions_deliver_exactly_the_files_of_the_window(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    requests: list[tuple[str, str]],
) -> None:
    trail = Trail(4)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    low, high = datetime(2026, 10, 2, 12, tzinfo=UTC), datetime(2026, 10, 4, 12, tzinfo=UTC)
    inside: list[str] = []
    for day in range(6):
        for hour in (3, 15):
            when = start + timedelta(days=day, hours=hour)
            key = trail.add(ACCOUNTS[0], REGIONS[0], when)
            trail.add(ACCOUNTS[0], REGIONS[1], when)  # eu-west-1: not wanted
            if low <= when < high:
                inside.append(key)
    await put_objects(aws_options, bucket, trail.files)
    cfg = s3_config(
        aws_options,
        bucket,
        lc,
        start_time=low,
        end_time=high,
        regions=("us-*",),
        prefix=f"AWSLogs/{ORG}/",  # a prefix inside the layout still lists by day
    )

    assert await serve([cfg], state_dir) == 0

    assert len(inside) == 4
    assert Counter(str(e.json()["eventID"]) for e in lc.store.events) == trail.events_of(inside)
    listed = day_listings(listings(requests, bucket))
    assert {p[-11:-1] for p in listed} == {"2026/10/02"}  # from the window's first day on
    assert all("/us-east-1/" in p for p in listed)


def test_layout_helpers() -> None:
    assert logs_root("") == ("AWSLogs/", "")
    assert logs_root("trails") == ("trails/AWSLogs/", "")
    assert logs_root("trails/") == ("trails/AWSLogs/", "")
    assert logs_root("trails/AWSLogs/") == ("trails/AWSLogs/", "trails/AWSLogs/")
    inside = "AWSLogs/o-a1b2c3d4e5/111122223333/"
    assert logs_root(inside) == ("AWSLogs/", inside)
    folder = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/24/"
    key = f"{folder}111122223333_CloudTrail_us-east-1_20261124T0105Z_AbC.json.gz"
    assert file_time(key) == datetime(2026, 11, 24, 1, 5, tzinfo=UTC)
    assert file_time("AWSLogs/x/y.json.gz") is None


DOC = """
s3:
  bucket_name: trail
  client_options:
    identity: {oid: 6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a, installation_key: k}
"""


def test_window_and_account_keys_parse_and_mistakes_are_named() -> None:
    (cfg,) = parse_documents(
        DOC + "  accounts: [111122223333, '222233334444']\n  regions: [us-*]\n"
        "  start_time: 2026-09-01\n  end_time: 2026-10-01T12:00:00+02:00\n",
        {},
        "c.yaml",
    )
    src = cfg.source
    assert isinstance(src, S3SourceOptions)
    assert src.accounts == ("111122223333", "222233334444") and src.regions == ("us-*",)
    assert src.start_time == datetime(2026, 9, 1, tzinfo=UTC)
    assert src.end_time == datetime(2026, 10, 1, 10, tzinfo=UTC)
    (recent,) = parse_documents(DOC + "  start_time: 90d\n", {}, "c.yaml")
    assert isinstance(recent.source, S3SourceOptions) and recent.source.start_time
    ago = datetime.now(UTC) - recent.source.start_time
    assert timedelta(days=90) <= ago < timedelta(days=90, minutes=1)

    with pytest.raises(ConfigError) as caught:
        parse_documents(
            DOC + "  accounts: [1234]\n  start_time: yesterday\n"
            "  end_time: 2026-01-01\n  layout: flat\n",
            {},
            "c.yaml",
        )
    text = str(caught.value)
    assert (
        "s3.accounts: expected 12-digit account IDs (quote one that starts with 0), got 1234"
        in text
    )
    assert "s3.start_time: expected an ISO 8601 date or time" in text
    assert "s3.end_time: needs layout: auto" in text
    with pytest.raises(ConfigError) as caught:
        parse_documents(DOC + "  start_time: 2026-02-01\n  end_time: 2026-01-01\n", {}, "c.yaml")
    assert "s3.end_time: must be later than start_time" in str(caught.value)
