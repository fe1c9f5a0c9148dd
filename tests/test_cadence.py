"""LIST calls follow activity: a stream that delivers is listed every poll_interval, a quiet
one less and less often up to quiet_interval, and nothing today's listing finds is missed
(late files within lookback, a quiet stream's next file, a retry). The source runs in this
process on a clock of the test's own, against moto, so every count is exact."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from prometheus_client import generate_latest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, S3SourceOptions
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.model import WorkItem
from cloudtrail_adapter.monitor import Monitor
from cloudtrail_adapter.sources.cadence import ACTIVE_WINDOW, JITTER, Schedule
from cloudtrail_adapter.sources.listing_cost import ListingPlan, report, sqs_monthly_cost
from cloudtrail_adapter.sources.s3 import S3Source
from cloudtrail_adapter.sources.trail_layout import Stream
from cloudtrail_adapter.state import StateStore
from tests.support.stand_in import listings, put_objects

POLL, QUIET = 60.0, 480.0
STREAM = "AWSLogs/{account}/CloudTrail/us-east-1/"
BUSY, QUIET_ACCOUNT = "111111111111", "222222222222"
START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def stream(name: str = "a") -> Stream:
    return Stream(f"AWSLogs/{name}/CloudTrail/us-east-1/", name, "CloudTrail", "us-east-1")


def test_a_stream_that_delivers_is_listed_every_poll_and_a_quiet_one_up_to_quiet_interval() -> None:
    schedule = Schedule(POLL, QUIET, random.Random(1))
    s, now = stream(), 100_000.0
    schedule.listed(s, now, newest=now - 60, busy=False)
    assert schedule.due([s], now + POLL) == [s] and schedule.active == 1

    gaps, at = [], now + ACTIVE_WINDOW  # quiet from here on: its newest is `now - 60`
    for _ in range(12):
        schedule.listed(s, at, newest=None, busy=False)
        nxt = min(t for t in (at + g for g in range(1, 10_000)) if schedule.due([s], t))
        gaps.append(nxt - at)
        at = nxt
    assert gaps[0] == POLL  # just past the window
    assert all(b >= a * (1 - JITTER) - 1 for a, b in itertools.pairwise(gaps))
    assert max(gaps) <= QUIET and max(gaps) >= QUIET * (1 - JITTER) - 1  # grew to the cap
    assert schedule.active == 0

    schedule.listed(s, at, newest=None, busy=True)  # a retry waits: listed every poll again
    assert schedule.due([s], at + POLL) == [s]
    schedule.listed(s, at + POLL, newest=at + POLL - 5, busy=False)  # a new file
    assert schedule.due([s], at + 2 * POLL) == [s]


def test_a_stream_never_listed_is_due_and_one_that_is_gone_is_forgotten() -> None:
    schedule = Schedule(POLL, QUIET)
    a, b = stream("a"), stream("b")
    assert schedule.due([a, b], 0.0) == [a, b]
    schedule.listed(a, 0.0, None, False)
    schedule.listed(b, 0.0, None, False)
    assert schedule.due([a, b], 1.0) == []
    assert schedule.calls_per_hour() <= 2 * 3600 / POLL
    schedule.keep([b])
    assert schedule.streams == 1 and schedule.due([a], 1.0) == [a]


def test_streams_found_quiet_at_once_come_due_spread_over_quiet_interval() -> None:
    schedule = Schedule(POLL, QUIET, random.Random(2))
    many = [stream(str(n)) for n in range(400)]
    for s in many:
        schedule.listed(s, 0.0, None, False)
    per_pass = [len(schedule.due(many, t)) for t in range(60, 540, 60)]
    assert per_pass[-1] == len(many)
    waves = [later - earlier for earlier, later in itertools.pairwise([0, *per_pass])]
    assert max(waves) < len(many) / 4  # no pass takes them all
    for s in many:  # after that, each comes back about quiet_interval later
        schedule.listed(s, 1000.0, None, False)
    assert schedule.due(many, 1000 + QUIET * (1 - JITTER) - 1) == []


def test_quiet_interval_below_poll_interval_means_every_poll() -> None:
    schedule = Schedule(POLL, 10.0)
    schedule.listed(stream(), 0.0, None, False)
    assert schedule.due([stream()], POLL - 1) == [] and schedule.due([stream()], POLL) != []


def test_the_plan_prices_its_calls_and_names_sqs_above_the_threshold() -> None:
    plan = ListingPlan(
        streams=17_000,
        active=850,
        list_calls_per_hour=170_000,
        discovery_calls_per_hour=8_000,
        price=0.005,
    )
    assert round(plan.monthly_cost) == round(178_000 * 730 * 0.005 / 1000)
    sqs = sqs_monthly_cost(plan.files_per_hour())
    assert sqs < plan.monthly_cost / 20
    with structlog.testing.capture_logs() as logs:
        report(plan, bucket="b", shard="0/2", threshold=50.0)
        report(plan, bucket="b", shard=None, threshold=0.0)  # 0: never warns
        report(plan, bucket="b", shard=None, threshold=plan.monthly_cost + 1)
    names = [e["event"] for e in logs]
    assert names.count("listing_plan") == 3 and names.count("listing_cost_high") == 1
    (warning,) = [e for e in logs if e["event"] == "listing_cost_high"]
    assert warning["sqs_monthly_cost_usd"] == round(sqs, 2)
    assert "SQS" in warning["action"] and "SNS" in warning["action"]


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def key(account: str, when: datetime) -> str:
    name = f"{account}_CloudTrail_us-east-1_{when:%Y%m%dT%H%MZ}_{uuid.uuid4().hex[:16]}"
    return f"{STREAM.format(account=account)}{when:%Y/%m/%d}/{name}.json.gz"


async def offered(source: S3Source) -> list[str]:
    """One pass; what it offered is committed at once (as if LimaCharlie acknowledged it)."""
    out: asyncio.Queue[WorkItem] = asyncio.Queue()
    await source.one_pass(out)
    refs = []
    while not out.empty():
        item = out.get_nowait()
        refs.append(item.ref.split("/", 3)[3])
        await item.commit()
    return refs


def listed_streams(calls: list[dict[str, str]]) -> Counter[str]:
    """Listings of each account's stream (delimiter listings are discovery's)."""
    return Counter(c["prefix"].split("/")[1] for c in calls if "delimiter" not in c)


async def test_a_quiet_stream_is_listed_a_fraction_as_often_and_nothing_is_missed(
    aws_options: AwsOptions,
    bucket: str,
    tmp_path: Path,
    requests: list[tuple[str, str]],
) -> None:
    body = log_file([])
    await put_objects(
        aws_options,
        bucket,
        {
            key(BUSY, START - timedelta(minutes=3)): body,
            key(QUIET_ACCOUNT, START - timedelta(hours=5)): body,
        },
    )
    clock = Clock(START)
    options = S3SourceOptions(bucket_name=bucket, poll_interval=POLL, quiet_interval=QUIET)
    store = StateStore(tmp_path / "state.db")
    monitor = Monitor()
    async with aws.client("s3", aws_options) as s3:
        source = S3Source(
            "cadence",
            options,
            s3=s3,
            checkpoints=store.scoped("t").checkpoints(bucket),
            clock=clock,
        )
        runtime = monitor.add("cadence", "s3")
        runtime.source = source

        async def passes(minutes: int, land: Callable[[int], dict[str, bytes]]) -> dict[str, int]:
            """A pass a minute (what lands before it is named at its time); the minute
            each key was offered."""
            found: dict[str, int] = {}
            for minute in range(minutes):
                new = land(minute)
                if new:
                    await put_objects(aws_options, bucket, new)
                for ref in await offered(source):
                    found[ref] = minute
                clock.now += timedelta(seconds=POLL)
            return found

        with structlog.testing.capture_logs() as logs:
            first = await passes(1, lambda m: {})
        assert len(first) == 2  # the first pass lists (walks) every stream
        (plan,) = [e for e in logs if e["event"] == "listing_plan"]
        assert (plan["streams"], plan["active"], plan["quiet"]) == (2, 1, 1)

        # 30 minutes: the busy stream delivers every 5 minutes, the quiet one nothing
        del requests[:]

        def busy(minute: int) -> dict[str, bytes]:
            return {key(BUSY, clock.now): body} if minute % 5 == 0 else {}

        found = await passes(30, busy)
        counts = listed_streams(listings(requests, bucket))
        assert counts[BUSY] == 30  # every poll_interval
        assert 3 <= counts[QUIET_ACCOUNT] <= 30 * POLL / (QUIET * (1 - JITTER)) + 1
        assert sorted(found.values()) == list(range(0, 30, 5))  # each file at its first pass
        spans = [c for c in listings(requests, bucket) if "start-after" in c]
        assert len(spans) == sum(counts.values())  # one call per listing: yesterday and today
        assert all(
            c["start-after"].endswith(f"{START - timedelta(days=1):%Y/%m/%d}") for c in spans
        )

        # a late file in the busy stream's yesterday (within lookback), and the quiet
        # stream's first new file: both found, the quiet one within quiet_interval + poll
        late = key(BUSY, clock.now - timedelta(hours=20))
        wake = key(QUIET_ACCOUNT, clock.now)
        await put_objects(aws_options, bucket, {late: body, wake: body})
        found = await passes(12, busy)
        assert found[late] == 0
        assert found[wake] * POLL <= QUIET + POLL

        # once it delivers, the woken stream is listed every poll_interval too
        del requests[:]

        def both(minute: int) -> dict[str, bytes]:
            return (
                {key(a, clock.now): body for a in (BUSY, QUIET_ACCOUNT)} if minute % 5 == 0 else {}
            )

        found = await passes(10, both)
        assert listed_streams(listings(requests, bucket))[QUIET_ACCOUNT] == 10
        assert sorted(found.values()) == [0, 0, 5, 5]

        stats = source.stats().listing
        assert stats is not None and stats.requests["list"] >= stats.list_calls
        assert stats.requests["get"] == 0  # nothing fetched: the test commits what is offered
        assert stats.streams == 2 and stats.streams_active == 2
        text = generate_latest(monitor.registry).decode()
        assert 'cloudtrail_adapter_s3_requests_total{kind="list",source="cadence"}' in text
        assert 'cloudtrail_adapter_s3_requests_total{kind="head",source="cadence"} 0.0' in text
    store.close()
