"""What listing a real bucket costs, and that nothing under the prefix vanishes: a sparse
ten-year bucket is listed for calls in proportion to what it holds (counted in the
stand-in's request log), discovery is cached, and files off the CloudTrail layout are
shipped or reported, never dropped in silence."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudtrail_adapter.config import AwsOptions, ConfigError, S3SourceOptions, parse_documents
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.sources.trail_layout import day_of
from tests.support.configs import s3_config
from tests.support.process import stop_daemon
from tests.support.stand_in import listings, put_objects
from tests.support.watch import passes_done, watch_logs

ACCOUNTS = ("111111111111", "222222222222", "333333333333", "444444444444")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1")
KINDS = ("CloudTrail", "CloudTrail-Insight")


class Bucket:
    """Files made and remembered: key -> eventIDs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.ids: dict[str, list[str]] = {}

    def add(self, folder: str, account: str, region: str, when: datetime, kind: str) -> str:
        """A CloudTrail-named file in `folder` (which need not fit the layout)."""
        recs = [
            cloudtrail_record(self.rng, account=account, region=region, when=when) for _ in range(2)
        ]
        suffix = "".join(self.rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=16))
        key = f"{folder}{account}_{kind}_{region}_{when:%Y%m%dT%H%MZ}_{suffix}.json.gz"
        self.files[key] = log_file(recs)
        self.ids[key] = [str(r["eventID"]) for r in recs]
        return key

    def in_layout(self, account: str, kind: str, region: str, when: datetime) -> str:
        folder = f"AWSLogs/{account}/{kind}/{region}/{when:%Y/%m/%d}/"
        return self.add(folder, account, region, when, kind)

    def events(self, keys: list[str] | None = None) -> Counter[str]:
        return Counter(i for key in (keys or list(self.ids)) for i in self.ids[key])


def delivered(lc: LimaCharlieEmulator) -> Counter[str]:
    return Counter(str(e.json()["eventID"]) for e in lc.store.events)


def sparse_bucket() -> tuple[Bucket, int, int, int, int]:
    """Forty streams over ten years, about a hundred day folders among them; with what a
    walk of them costs: streams, years, months and days (per stream, summed)."""
    bucket = Bucket(11)
    rng = random.Random(5)
    first, span = date(2016, 1, 1), (date(2026, 11, 1) - date(2016, 1, 1)).days
    years = months = found_days = 0
    for account in ACCOUNTS:
        for kind in KINDS:
            for region in REGIONS:
                chosen = {
                    first + timedelta(days=rng.randrange(span)) for _ in range(rng.choice((2, 3)))
                }
                for day in chosen:
                    when = datetime(day.year, day.month, day.day, 13, 5, tzinfo=UTC)
                    bucket.in_layout(account, kind, region, when)
                years += len({d.year for d in chosen})
                months += len({(d.year, d.month) for d in chosen})
                found_days += len(chosen)
    return bucket, len(ACCOUNTS) * len(KINDS) * len(REGIONS), years, months, found_days


def discovery_calls(accounts: int, kinds: int) -> int:
    """The bucket's top (above AWSLogs/), AWSLogs/, then per account its kinds and per
    kind its regions."""
    return 2 + accounts * (1 + kinds)


def list_calls(logs: Any) -> list[int]:
    return [int(e["list_calls"]) for e in logs.named("source_pass_done")]


async def test_a_sparse_ten_year_bucket_costs_what_it_holds_and_then_what_today_adds(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    requests: list[tuple[str, str]],
) -> None:
    trail, streams, years, months, days = sparse_bucket()
    assert 90 <= days <= 130 and streams == 40
    await put_objects(aws_options, bucket, trail.files)
    discovery = discovery_calls(len(ACCOUNTS), len(KINDS))

    cfg = s3_config(aws_options, bucket, lc)
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0
    assert delivered(lc) == trail.events()  # every record once
    (first_pass,) = list_calls(logs)
    assert first_pass == len(listings(requests, bucket))  # the log tells the truth
    assert first_pass == discovery + streams + years + months + days
    assert first_pass <= 2 * (streams + years + months + days) + discovery
    (backfill,) = logs.named("backfill_starting")
    assert backfill["streams"] == streams and backfill["day_folders"] == days
    assert backfill["first_day"] == "-".join(min(k.split("/")[4:7] for k in trail.files))

    # a long-running daemon on the same state: once every stream's cursor has moved past
    # its files, a pass lists yesterday and today of each due stream in one call, and
    # discovery is cached (every stream is due every pass here: quiet_interval is short)
    del requests[:]
    running = s3_config(
        aws_options, bucket, lc, single_load=False, poll_interval=0.1, quiet_interval=0.1
    )
    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([running], state_dir))
        await passes_done(logs, [running], more=4)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0
    assert delivered(lc) == trail.events()  # nothing again
    steady = list_calls(logs)[2:]
    assert steady and all(calls == streams for calls in steady), steady
    assert len(logs.named("layout_discovered")) == 1
    tops = [c for c in listings(requests, bucket) if c.get("prefix") == "AWSLogs/"]
    assert len(tops) == 1  # discovery once, however many passes


async def test_a_new_account_is_found_within_one_discovery_interval(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    trail = Bucket(12)
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    trail.in_layout(ACCOUNTS[0], "CloudTrail", REGIONS[0], now)
    await put_objects(aws_options, bucket, trail.files)
    cfg = s3_config(
        aws_options, bucket, lc, single_load=False, poll_interval=0.1, discovery_interval=0.5
    )
    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir))
        await lc.store.wait_for(2, timeout=30)
        later = trail.in_layout(ACCOUNTS[1], "CloudTrail", REGIONS[1], now)
        await put_objects(aws_options, bucket, {later: trail.files[later]})
        await lc.store.wait_for(4, timeout=30)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0
    assert delivered(lc) == trail.events()
    assert len(logs.named("layout_discovered")) >= 2


ORG = "o-a1b2c3d4e5"


def odd_bucket() -> tuple[Bucket, list[str], dict[str, bytes]]:
    """A bucket as people leave them: CloudTrail files in the layout, others in folders
    that do not fit it, and other services' logs beside them."""
    trail = Bucket(13)
    when = datetime(2025, 3, 4, 5, 6, tzinfo=UTC)
    account, region = ACCOUNTS[0], REGIONS[0]
    stream = f"AWSLogs/{account}/CloudTrail/{region}/"
    shipped = [
        trail.in_layout(account, "CloudTrail", region, when),
        trail.add(
            f"AWSLogs/{ORG}/{account}/CloudTrail/{region}/2025/03/04/",
            account,
            region,
            when,
            "CloudTrail",
        ),
        # account folders that are not 12 digits, at the top and inside an organisation
        trail.add("AWSLogs/backup-2019/", account, region, when, "CloudTrail"),
        trail.add(
            f"AWSLogs/{ORG}/legacy/CloudTrail/{region}/", account, region, when, "CloudTrail"
        ),
        # stray keys at each level, and date folders CloudTrail never writes
        trail.add("AWSLogs/", account, region, when, "CloudTrail"),
        trail.add(f"AWSLogs/{account}/", account, region, when, "CloudTrail"),
        trail.add(f"AWSLogs/{account}/CloudTrail/", account, region, when, "CloudTrail"),
        trail.add(stream, account, region, when, "CloudTrail"),
        trail.add(f"{stream}2025/", account, region, when, "CloudTrail"),
        trail.add(f"{stream}2025/03/", account, region, when, "CloudTrail"),
        trail.add(f"{stream}2025/3/4/", account, region, when, "CloudTrail"),
        trail.add(f"{stream}2025/03/32/", account, region, when, "CloudTrail"),
        trail.add(f"{stream}copied/", account, region, when, "CloudTrail"),
        # beside AWSLogs/, under the same (empty) prefix
        trail.add("manual-export/", account, region, when, "CloudTrail"),
        trail.add("", account, region, when, "CloudTrail"),
    ]
    passed = {
        f"AWSLogs/{account}/elasticloadbalancing/{region}/2025/03/04/elb.log.gz": b"not ours",
        f"AWSLogs/{account}/CloudTrail-Digest/{region}/2025/03/04/"
        f"{account}_CloudTrail-Digest_{region}_t_{region}_20250304T050600Z.json.gz": b"{}",
    }
    return trail, shipped, passed


async def test_files_off_the_layout_are_shipped_and_other_folders_reported(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    trail, shipped, passed = odd_bucket()
    await put_objects(aws_options, bucket, trail.files | passed)
    cfg = s3_config(aws_options, bucket, lc)
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0
    assert delivered(lc) == trail.events(shipped)  # every one, once
    assert not logs.named("object_quarantined")
    found = {w for e in logs.named("off_layout_found") for w in e["examples"]}
    stream = f"AWSLogs/{ACCOUNTS[0]}/CloudTrail/{REGIONS[0]}/"
    assert {
        "AWSLogs/backup-2019/",
        f"AWSLogs/{ORG}/legacy/",
        "manual-export/",
        f"{stream}2025/3/",
        f"{stream}2025/03/32/",
        f"{stream}copied/",
    } <= found
    reported = {e["reason"]: e["examples"] for e in logs.named("folders_passed_over")}
    assert reported == {
        "not_cloudtrail": [f"AWSLogs/{ACCOUNTS[0]}/elasticloadbalancing/"],
        "digest": [f"AWSLogs/{ACCOUNTS[0]}/CloudTrail-Digest/"],
    }
    (done,) = logs.named("source_pass_done")
    assert done["off_layout"] == len(shipped) - 2

    # a restart ships nothing again, off the layout included
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0
    assert delivered(lc) == trail.events(shipped)


async def test_a_window_counts_what_it_leaves_out(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    trail = Bucket(14)
    inside: list[str] = []
    outside: list[str] = []
    for hour in range(0, 24, 3):
        when = datetime(2025, 6, 2, hour, 10, tzinfo=UTC)
        key = trail.in_layout(ACCOUNTS[0], "CloudTrail", REGIONS[0], when)
        (inside if hour >= 12 else outside).append(key)
    await put_objects(aws_options, bucket, trail.files)
    cfg = s3_config(
        aws_options,
        bucket,
        lc,
        start_time=datetime(2025, 6, 2, 12, tzinfo=UTC),
        end_time=datetime(2025, 6, 3, tzinfo=UTC),
    )
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0
    assert delivered(lc) == trail.events(inside)
    (done,) = logs.named("source_pass_done")
    assert done["outside_window"] == len(outside) and done["offered"] == len(inside)


def test_date_folders_are_read_as_cloudtrail_writes_them() -> None:
    assert day_of(("2024",)) == date(2024, 1, 1)
    assert day_of(("2024", "02")) == date(2024, 2, 1)
    assert day_of(("2024", "02", "29")) == date(2024, 2, 29)
    for odd in (
        ("2024", "2"),
        ("2024", "13"),
        ("2023", "02", "29"),
        ("24",),
        ("0000",),
        ("backup",),
        ("2024", "01", "01", "x"),
        (),
    ):
        assert day_of(odd) is None, odd


def test_listing_keys_parse_and_mistakes_are_named() -> None:
    doc = (
        "s3:\n  bucket_name: trail\n  client_options:\n"
        "    identity: {oid: 6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a, installation_key: k}\n"
    )
    (cfg,) = parse_documents(doc + "  discovery_interval: 0\n  parallel_list: 32\n", {}, "c.yaml")
    assert isinstance(cfg.source, S3SourceOptions)
    assert cfg.source.discovery_interval == 0 and cfg.source.parallel_list == 32
    (plain,) = parse_documents(doc, {}, "c.yaml")
    assert isinstance(plain.source, S3SourceOptions)
    assert plain.source.discovery_interval == 900 and plain.source.parallel_list == 8
    with pytest.raises(ConfigError) as caught:
        parse_documents(doc + "  discovery_interval: -5\n  parallel_list: 0\n", {}, "c.yaml")
    text = str(caught.value)
    assert "s3.discovery_interval" in text and "s3.parallel_list" in text
    with pytest.raises(ConfigError) as caught:
        parse_documents(doc + "  layout: flat\n  discovery_interval: 60\n", {}, "c.yaml")
    assert "s3.discovery_interval: needs layout: auto" in str(caught.value)
