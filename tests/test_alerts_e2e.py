"""deploy/prometheus/alerts.yaml as shipped, in a real Prometheus (Debian's package) that
scrapes a running daemon every second and evaluates every second.

Each alert's event is caused once, before Prometheus' first scrape and again after it has
scraped the source healthy; each alert must fire within its `for:` (or the duration its
threshold names, on the daemon's clock) plus a few evaluations, and nothing else may be
pending or firing: the other sources are healthy, with a trail that keeps writing.

The daemon's clock (monitor.Clock) runs RATE times real time, so that a threshold of an hour
(NoRecords) is crossed in 30 s; Prometheus' own `for:` (CloudTrailAdapterDown, 2 min) runs
in real time, and the other alerts fire meanwhile. A healthy daemon at the real clock, that
shipped a backfill before the first scrape, makes no alert even pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, DedupOptions, IntegrityOptions, SourceConfig
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file, object_key
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.monitor import FAILURE_REASONS, Clock, Monitor, SourceRuntime
from tests.support import messages
from tests.support.configs import s3_config, sqs_config
from tests.support.prometheus import Api, free_port, prometheus
from tests.support.stand_in import STAND_IN
from tests.support.trail import Trail, TrailFile, TrailKey, build_trail
from tests.support.watch import LogWatch, watch_logs

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ACCOUNT, REGION, ORG = "111122223333", "us-east-1", "o-a1b2c3d4e5"
RATE = 120.0  # the daemon's clock: an hour in 30 s
SLACK = 10.0  # seconds past an alert's due time: a few scrapes and evaluations
POLL = 0.5  # the S3 sources' poll_interval
FEED_EVERY = 4.0  # real seconds between a live trail's files (8 minutes on the daemon's clock)
DOWN_FOR = 120.0  # CloudTrailAdapterDown's `for:`, the one Prometheus measures
#: Thresholds on the daemon's clock, as alerts.yaml has them, in real seconds here.
FAILING, UNREACHABLE, BEHIND, SILENT = (s / RATE for s in (300, 300, 1500, 3600))

Key = tuple[str, str, str]  # alertname, source (or instance), reason or verdict


def key_of(labels: dict[str, str]) -> Key:
    who = labels.get("source") or labels.get("instance", "")
    return labels["alertname"], who, labels.get("reason") or labels.get("verdict") or ""


@dataclass
class Seen:
    """When each alert was first seen pending and firing (monotonic seconds)."""

    pending: dict[Key, float] = field(default_factory=dict)
    firing: dict[Key, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    scrape_errors: dict[str, set[str]] = field(default_factory=dict)  # by target

    def note(self, alerts: list[dict[str, Any]], now: float) -> None:
        for alert in alerts:
            book = self.firing if alert["state"] == "firing" else self.pending
            book.setdefault(key_of(alert["labels"]), now)
        self.changed.set()

    def keys(self) -> set[Key]:
        return set(self.pending) | set(self.firing)

    def slow_scrape(self, key: Key) -> bool:
        """CloudTrailAdapterDown pending, never firing, for a target a scrape of which timed
        out: the rule doing its job on a machine too loaded to answer within the 1 s scrape
        timeout (its `for:` is there so that such a scrape never pages anyone)."""
        alert, target, _ = key
        timed_out = any("deadline exceeded" in e for e in self.scrape_errors.get(target, ()))
        return alert == "CloudTrailAdapterDown" and key not in self.firing and timed_out

    async def all_firing(self, keys: set[Key]) -> None:
        while not keys <= set(self.firing):
            self.changed.clear()
            await self.changed.wait()


async def watch(api: Api, seen: Seen, stop: asyncio.Event) -> None:
    """Polls Prometheus' alerts (nothing pushes them) until stopped."""
    while not stop.is_set():
        seen.note(await api.alerts(), time.monotonic())
        for target, state in (await api.targets()).items():
            if state["lastError"]:
                seen.scrape_errors.setdefault(target, set()).add(state["lastError"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


# -- what the buckets and queues hold ---------------------------------------------------


class Records:
    """Fresh CloudTrail records, each with its own eventID."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def make(self, n: int, when: datetime | None = None, spread: int = 0) -> list[dict[str, Any]]:
        """`n` records at `when` (now), over `spread` minutes before it."""
        at = when or datetime.now(UTC)
        return [
            cloudtrail_record(
                self._rng,
                account=ACCOUNT,
                region=REGION,
                when=at - timedelta(minutes=i % spread if spread else 0),
            )
            for i in range(n)
        ]


@dataclass
class Feed:
    """A live trail: one new file (or message) per tick while `active`."""

    put: Callable[[], Awaitable[None]]
    active: bool = True
    count: int = 0

    async def tick(self) -> None:
        if self.active:
            await self.put()
            self.count += 1


@contextlib.asynccontextmanager
async def fed(feeds: list[Feed]) -> AsyncIterator[None]:
    """CloudTrail's cadence: a tick every FEED_EVERY seconds while the block runs."""
    stop = asyncio.Event()

    async def ticks() -> None:
        while not stop.is_set():
            for f in feeds:
                await f.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FEED_EVERY)

    task = asyncio.create_task(ticks())
    try:
        yield
    finally:
        stop.set()
        await task


@dataclass
class Clients:
    """One S3 and one SQS client for the whole run: making a client is CPU work that would
    hold up the event loop the daemon (and its /metrics) share with the test."""

    s3: Any
    sqs: Any

    async def put(self, bucket: str, objects: dict[str, bytes]) -> None:
        for key, body in objects.items():
            await self.s3.put_object(Bucket=bucket, Key=key, Body=body)

    async def put_files(self, bucket: str, files: Iterable[TrailFile]) -> None:
        for f in files:
            await self.s3.put_object(Bucket=bucket, Key=f.key, Body=f.body, Metadata=f.metadata)

    async def send(self, queue: str, body: str) -> None:
        await self.sqs.send_message(QueueUrl=queue, MessageBody=body)

    async def new_bucket(self) -> str:
        name = f"alerts-{uuid.uuid4().hex[:12]}"
        await self.s3.create_bucket(Bucket=name)
        return name

    async def new_queue(self) -> str:
        made = await self.sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:12]}")
        return str(made["QueueUrl"])


@contextlib.asynccontextmanager
async def clients(options: AwsOptions) -> AsyncIterator[Clients]:
    async with aws.client("s3", options) as s3, aws.client("sqs", options) as sqs:
        yield Clients(s3, sqs)


def flat_feed(aws: Clients, bucket: str, records: Records) -> Feed:
    numbers = itertools.count()

    async def put() -> None:
        key = f"AWSLogs/live/{next(numbers):05d}.json.gz"
        await aws.put(bucket, {key: log_file(records.make(1))})

    return Feed(put)


def trail_feed(aws: Clients, bucket: str, records: Records) -> Feed:
    """Files in the trail's layout, named for now: after every digest there is."""
    rng = random.Random(bucket)

    async def put() -> None:
        now = datetime.now(UTC)
        key = object_key(prefix="", org_id=ORG, account=ACCOUNT, region=REGION, when=now, rng=rng)
        await aws.put(bucket, {key: log_file(records.make(1))})

    return Feed(put)


def queue_feed(aws: Clients, queue: str, records: Records) -> Feed:
    async def put() -> None:
        await aws.send(queue, messages.eventbridge_cloudtrail(records.make(1)[0]))

    return Feed(put)


# -- the daemon ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def daemon(
    configs: list[SourceConfig], state_dir: Path, monitor: Monitor, logs: LogWatch
) -> AsyncIterator[str]:
    """In-process, its HTTP endpoints on a free port (yielded); stopped with SIGTERM, with
    a short grace: objects LimaCharlie never acknowledges are not waited for."""
    task = asyncio.create_task(
        serve(
            configs,
            state_dir,
            monitor=monitor,
            http_address=("127.0.0.1", 0),
            shutdown_grace=1.0,
        )
    )
    try:
        await logs.wait_for("http_listening", timeout=30)
        yield str(logs.named("http_listening")[0]["address"])
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 60)


async def logged(logs: LogWatch, event: str, source: str, count: int = 1) -> dict[str, Any]:
    """Until the daemon logged `event` for `source` `count` times; the last of them."""
    async with asyncio.timeout(60):
        while True:
            found = [e for e in logs.named(event) if e.get("source") == source]
            if len(found) >= count:
                return found[count - 1]
            await logs.wait_for(event, len(logs.named(event)) + 1, timeout=60)


def hours_ago(n: int) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=n)


# -- the alerts each source's events must raise ----------------------------------------


@dataclass
class Expect:
    """An alert that must fire by `due` (monotonic), or by what `due_of` says at the end
    (when it depends on the daemon's own timing: its last record, its oldest object)."""

    key: Key
    due: float | None = None
    due_of: Callable[[], float] | None = None

    def deadline(self) -> float:
        if self.due_of is not None:
            return self.due_of()
        assert self.due is not None
        return self.due


def silent_since(rt: SourceRuntime, floor: float) -> Callable[[], float]:
    """NoRecords' due: an hour (daemon clock) after the source's last record (or start)."""

    def due() -> float:
        last = rt.last_record_at if rt.last_record_at is not None else rt.added_at
        return max(floor, last / RATE + SILENT) + SLACK

    return due


def behind_since(rt: SourceRuntime, floor: float) -> Callable[[], float]:
    """FallingBehind's due: 25 minutes (daemon clock) after the oldest object was opened."""

    def due() -> float:
        assert rt.tracker is not None
        opened = time.monotonic() - rt.tracker.oldest_open_age(time.monotonic())
        return max(floor, opened + BEHIND) + SLACK

    return due


# -- the run: every event once, before the first scrape and after it --------------------

BUCKETS = (
    "main",
    "integrity_early",
    "integrity_late",
    "dedup_late",
    "no_match",
    "stale",
    "refused_early",
    "refused_late",
    "unreach_early",
    "unreach_late",
    "behind_early",
    "behind_late",
)
WHEN = ("early", "late")
FED = ("main", "dedup_late", "refused_late", "unreach_late", "behind_late")


@dataclass
class Rig:
    """The buckets, queues and LimaCharlies of every source, and what each is to raise."""

    options: AwsOptions
    aws: Clients
    lc: LimaCharlieEmulator  # the healthy one
    others: dict[str, LimaCharlieEmulator]
    buckets: dict[str, str]
    queues: dict[str, str]
    records: Records = field(default_factory=lambda: Records(27))
    keys: dict[str, TrailKey] = field(default_factory=lambda: {REGION: TrailKey.generate()})
    trail_start: datetime = field(default_factory=lambda: hours_ago(5))
    configs: dict[str, SourceConfig] = field(default_factory=dict)
    feeds: dict[str, Feed] = field(default_factory=dict)
    expected: list[Expect] = field(default_factory=list)
    arriving: list[TrailFile] = field(default_factory=list)  # digests that come later

    def name(self, source: str) -> str:
        return self.configs[source].name

    def expect(self, alert: str, source: str, detail: str = "", **due: Any) -> None:
        self.expected.append(
            Expect((f"CloudTrailAdapter{alert}", self.name(source), detail), **due)
        )

    # before the daemon starts, so before Prometheus' first scrape

    async def early_events(self) -> None:
        """A damaged object, more eventIDs than dedup.max_keys, a poison message, a
        tampered trail; a LimaCharlie that refuses us, one that is not there, one that
        does not acknowledge."""
        await self.aws.put(
            self.buckets["main"],
            {
                "AWSLogs/backfill.json.gz": log_file(self.records.make(30, spread=30)),
                "AWSLogs/damaged.json.gz": b"not json",
            },
        )
        await self.aws.send(self.queues["sqs_early"], "this is not a notification")
        early = build_trail(
            self.buckets["integrity_early"], hours=4, start=self.trail_start, keys=self.keys
        )
        early.edit_log(early.logs()[0].key)  # hash_mismatch
        early.delete(early.digests()[2].key)  # missing_digest
        late = self.late_trail(digest_hours=[0])
        late.edit_log(late.logs()[2].key)  # of hour 1, whose digest comes later
        self.arriving = self.later_digests()
        STAND_IN.public_keys = early.public_keys()
        elsewhere = build_trail(self.buckets["no_match"], hours=1, digest_hours=[])
        for trail in (early, late, elsewhere):  # `elsewhere`: data, for no account chosen
            await self.aws.put_files(trail.bucket, trail.files.values())
        backfill = {"AWSLogs/backfill.json.gz": log_file(self.records.make(10))}
        await self.aws.put(self.buckets["stale"], backfill)
        await self.aws.put(self.buckets["behind_early"], backfill)
        self.others["refused_early"].usp_faults.handshake_error = "refused, for the test"
        await self.others["unreach_early"].stop()  # nothing listens where its URL points
        self.others["behind_early"].usp_faults.hold_acks()

    def late_trail(self, **shape: Any) -> Trail:
        return build_trail(
            self.buckets["integrity_late"], hours=3, start=self.trail_start, keys=self.keys, **shape
        )

    def later_digests(self) -> list[TrailFile]:
        """Hours 1 and 2's digests: hour 1's names the edited file as CloudTrail wrote it
        (hash_mismatch); hour 2's is signed by a key that is not CloudTrail's (unknown_key).
        Made now: signing is CPU work the running daemon should not wait for."""
        later = self.late_trail()
        later.files = {d.key: d for d in later.digests()[1:]}
        later.resign(later.digests()[1].key, TrailKey.generate(), own_fingerprint=True)
        return later.digests()

    def make_configs(self) -> None:
        index = itertools.count(1)

        def s3(source: str, **options: Any) -> SourceConfig:
            to = self.others.get(source, self.lc)
            chosen: dict[str, Any] = {"layout": "flat", "quarantine_after": 1} | options
            cfg = s3_config(
                self.options,
                self.buckets[source],
                to,
                single_load=False,
                poll_interval=POLL,
                **chosen,
            )
            return dataclasses.replace(cfg, index=next(index))

        def sqs(source: str) -> SourceConfig:
            cfg = sqs_config(
                self.options, self.queues[source], self.lc, single_load=False, wait_time_seconds=1
            )
            return dataclasses.replace(cfg, index=next(index))

        verify = IntegrityOptions(verify=True, grace=6 * 3600)
        self.configs = {
            "main": dataclasses.replace(s3("main"), dedup=DedupOptions(max_keys=10)),
            "sqs_early": sqs("sqs_early"),
            "sqs_late": sqs("sqs_late"),
            "integrity_early": s3("integrity_early", layout="auto", integrity=verify),
            "integrity_late": s3("integrity_late", layout="auto", integrity=verify),
            "dedup_late": dataclasses.replace(s3("dedup_late"), dedup=DedupOptions(max_keys=100)),
            "no_match": s3("no_match", layout="auto", accounts=("999999999999",)),
        } | {source: s3(source) for source in BUCKETS[5:]}
        self.feeds = {s: flat_feed(self.aws, self.buckets[s], self.records) for s in FED}
        for source in ("integrity_early", "integrity_late"):
            self.feeds[source] = trail_feed(self.aws, self.buckets[source], self.records)
        for source in ("sqs_early", "sqs_late"):
            self.feeds[source] = queue_feed(self.aws, self.queues[source], self.records)

    async def early_events_happened(self, logs: LogWatch) -> str:
        """Until the daemon met each early event; the damaged object's reason."""
        reason = str((await logged(logs, "object_quarantined", self.name("main")))["reason"])
        await logged(logs, "dedup_window_shortened", self.name("main"))
        await logged(logs, "sqs_message_poison", self.name("sqs_early"))
        await logged(logs, "integrity_violation", self.name("integrity_early"), 2)
        await logged(logs, "source_failed", self.name("refused_early"))
        await logged(logs, "usp_connect_failed", self.name("unreach_early"))
        return reason

    def expect_early(self, monitor: Monitor, reason: str, started: float, first: float) -> None:
        """Due from the first scrape (the event came before it), or from when the daemon's
        own clock crossed the alert's threshold, whichever is later."""
        rt = {s: monitor.sources[self.name(s)] for s in self.configs}
        due = first + SLACK
        self.expect("ObjectsFailing", "main", reason, due=due)
        self.expect("ObjectsQuarantined", "main", reason, due=due)
        self.expect("DedupWindowShortened", "main", due=due)
        self.expect("SqsPoison", "sqs_early", due=due)
        self.expect("IntegrityFileViolation", "integrity_early", "hash_mismatch", due=due)
        self.expect("IntegrityDigestViolation", "integrity_early", "missing_digest", due=due)
        self.expect("SourceDown", "refused_early", due=max(first, started + FAILING) + SLACK)
        self.expect(
            "LimaCharlieUnreachable", "unreach_early", due=max(first, started + UNREACHABLE) + SLACK
        )
        self.expect("FallingBehind", "behind_early", due_of=behind_since(rt["behind_early"], first))
        for silent in ("unreach_early", "behind_early", "no_match", "stale"):
            self.expect("NoRecords", silent, due_of=silent_since(rt[silent], first))

    # after Prometheus scraped every source healthy

    async def late_events(self, monitor: Monitor, logs: LogWatch) -> None:
        """The same events again, each to a source Prometheus has seen healthy; each one
        due from when it was caused."""
        main = self.buckets["main"]
        await self.aws.put(main, {"AWSLogs/cut.json.gz": b"\x1f\x8b" + bytes(range(64))})
        cut_at = time.monotonic()
        await self.aws.send(self.queues["sqs_late"], "not a notification either")
        gone = messages.s3_event(main, ["AWSLogs/gone.json.gz"])  # NoSuchKey: AWS's own code
        await self.aws.send(self.queues["sqs_late"], gone)
        sent_at = time.monotonic()
        await self.aws.put_files(self.buckets["integrity_late"], self.arriving)
        digests_at = time.monotonic()
        burst = {"AWSLogs/burst.json.gz": log_file(self.records.make(150, spread=20))}
        await self.aws.put(self.buckets["dedup_late"], burst)
        burst_at = time.monotonic()
        refused_at = await self.refuse()
        behind_at = await self.stop_acknowledging()
        unreachable_at = await self.go_away(monitor, logs)

        reason = str((await logged(logs, "object_quarantined", self.name("main"), 2))["reason"])
        code = str((await logged(logs, "object_failed", self.name("sqs_late")))["reason"])
        assert code not in FAILURE_REASONS  # not known ahead: its series appeared at 1
        rt = {s: monitor.sources[self.name(s)] for s in self.configs}
        self.expect("ObjectsFailing", "main", reason, due=cut_at + POLL + SLACK)
        self.expect("ObjectsQuarantined", "main", reason, due=cut_at + POLL + SLACK)
        self.expect("SqsPoison", "sqs_late", due=sent_at + 1 + SLACK)
        self.expect("ObjectsFailing", "sqs_late", code, due=sent_at + 1 + SLACK)
        for alert, verdict in [
            ("IntegrityFileViolation", "hash_mismatch"),
            ("IntegrityDigestViolation", "unknown_key"),
        ]:
            self.expect(alert, "integrity_late", verdict, due=digests_at + POLL + SLACK)
        self.expect("DedupWindowShortened", "dedup_late", due=burst_at + POLL + SLACK)
        self.expect("SourceDown", "refused_late", due=refused_at + FAILING + SLACK)
        self.expect(
            "LimaCharlieUnreachable", "unreach_late", due=unreachable_at + UNREACHABLE + SLACK
        )
        self.expect("NoRecords", "unreach_late", due_of=silent_since(rt["unreach_late"], cut_at))
        self.expect(
            "FallingBehind", "behind_late", due_of=behind_since(rt["behind_late"], behind_at)
        )
        self.expect("NoRecords", "behind_late", due_of=silent_since(rt["behind_late"], behind_at))

    async def refuse(self) -> float:
        """LimaCharlie drops the connection and refuses every one after it."""
        lc = self.others["refused_late"]
        self.feeds["refused_late"].active = False
        lc.usp_faults.handshake_error = "refused from now on"
        await lc.usp.close_all()
        return time.monotonic()

    async def stop_acknowledging(self) -> float:
        """LimaCharlie keeps the connection and acknowledges nothing; a file arrives."""
        self.others["behind_late"].usp_faults.hold_acks()
        waiting = {"AWSLogs/waiting.json.gz": log_file(self.records.make(5))}
        await self.aws.put(self.buckets["behind_late"], waiting)
        return time.monotonic()

    async def go_away(self, monitor: Monitor, logs: LogWatch) -> float:
        """LimaCharlie goes away once everything sent to it was acknowledged (so that no
        object waits: that would be FallingBehind as well)."""
        feed = self.feeds["unreach_late"]
        feed.active = False
        await logged(logs, "item_committed", self.name("unreach_late"), feed.count)
        tracker = monitor.sources[self.name("unreach_late")].tracker
        assert tracker is not None
        await tracker.wait_idle()
        await self.others["unreach_late"].stop()
        return time.monotonic()


@pytest.mark.timeout(400)
async def test_each_alert_fires_for_its_event_before_and_after_the_first_scrape_and_no_other(
    aws_options: AwsOptions,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    tmp_path: Path,
    keys_served: None,
) -> None:
    faulty = [f"{fault}_{when}" for fault in ("refused", "unreach", "behind") for when in WHEN]
    async with contextlib.AsyncExitStack() as stack:
        others = {n: await stack.enter_async_context(LimaCharlieEmulator()) for n in faulty}
        aws_clients = await stack.enter_async_context(clients(aws_options))
        rig = Rig(
            aws_options,
            aws_clients,
            lc,
            others,
            {b: await aws_clients.new_bucket() for b in BUCKETS},
            {q: await aws_clients.new_queue() for q in ("sqs_early", "sqs_late")},
        )
        await rig.early_events()
        rig.make_configs()
        seen, deadlines, logs = await run(rig, state_dir, tmp_path)

    wanted = {e.key for e in rig.expected}
    late_or_missing = {
        k: (round(seen.firing[k] - due, 1) if k in seen.firing else "never")
        for k, due in deadlines.items()
        if k not in seen.firing or seen.firing[k] > due
    }
    assert late_or_missing == {}, "fired late (seconds after due) or never"
    unexpected = {k for k in seen.keys() - wanted if not seen.slow_scrape(k)}
    assert unexpected == set(), story(logs, {k[1] for k in unexpected}) + str(seen.scrape_errors)


def story(logs: LogWatch, sources: set[str]) -> str:
    """What the daemon logged for `sources`, for a failure message."""
    lines = [
        f"{e.get('source')}: {e['event']} {e.get('reason') or e.get('error') or ''}"
        for e in logs.entries
        if e.get("source") in sources and e["event"] not in ("item_committed", "source_pass_done")
    ]
    return "pending or firing without its event; their sources logged:\n" + "\n".join(lines[-60:])


async def run(rig: Rig, state_dir: Path, tmp_path: Path) -> tuple[Seen, dict[Key, float], LogWatch]:
    """The daemon (its clock RATE times real time) and, once it met every early event, a
    Prometheus scraping it and a daemon that is not running; until every expected alert
    fired, or the last was overdue. What was seen, and each expected alert's due time."""
    monitor = Monitor(clock=Clock(RATE))
    dead = f"127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    seen = Seen()
    with watch_logs() as logs:
        async with (
            fed(list(rig.feeds.values())),
            daemon(list(rig.configs.values()), state_dir, monitor, logs) as address,
        ):
            started = time.monotonic()
            reason = await rig.early_events_happened(logs)
            with prometheus(tmp_path, [address, dead], [ALERTS]) as server:
                async with aiohttp.ClientSession() as http:
                    api = Api(http, server)
                    try:
                        async with asyncio.timeout(60):
                            await api.scraped(address)
                    except TimeoutError:
                        raise AssertionError(f"never scraped:\n{server.tail()}") from None
                    first = time.monotonic()
                    watching = asyncio.create_task(watch(api, seen, stop))
                    rig.expect_early(monitor, reason, started, first)
                    rig.expected.append(
                        Expect(("CloudTrailAdapterDown", dead, ""), first + DOWN_FOR + SLACK)
                    )
                    await api.scraped_after(address, time.time())
                    await api.evaluations(2)
                    await rig.late_events(monitor, logs)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(first + DOWN_FOR + 3 * SLACK - time.monotonic()):
                            await seen.all_firing({e.key for e in rig.expected})
                    stop.set()
                    await watching
                    deadlines = {e.key: e.deadline() for e in rig.expected}
    return seen, deadlines, logs


#: What a healthy daemon may raise as Prometheus first sees it: nothing. Every duration an
#: alert holds against is the daemon's own (0 at start), and every counter is 0 until its
#: first event.
EXPECTED_AT_START: set[Key] = set()


@pytest.mark.timeout(200)
async def test_a_healthy_daemon_that_shipped_a_backfill_makes_no_alert_even_pending(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    tmp_path: Path,
    keys_served: None,
) -> None:
    """At the real clock, with the backfill shipped before Prometheus' first scrape (the
    rules once had NoRecords pending within a second of it): an S3 bucket, an SQS queue and
    a verified trail, watched for 15 evaluations."""
    records = Records(5)
    async with clients(aws_options) as aws_clients:
        await aws_clients.put(bucket, {"AWSLogs/backfill.json.gz": log_file(records.make(50))})
        await aws_clients.send(queue, messages.eventbridge_cloudtrail(records.make(1)[0]))
        trail = build_trail(await aws_clients.new_bucket(), hours=2)
        await aws_clients.put_files(trail.bucket, trail.files.values())
    STAND_IN.public_keys = trail.public_keys()
    s3 = s3_config(aws_options, bucket, lc, single_load=False, poll_interval=POLL, layout="flat")
    sqs = sqs_config(aws_options, queue, lc, single_load=False, wait_time_seconds=1)
    verified = s3_config(
        aws_options,
        trail.bucket,
        lc,
        single_load=False,
        poll_interval=POLL,
        integrity=IntegrityOptions(verify=True),
    )
    configs = [s3, dataclasses.replace(sqs, index=2), dataclasses.replace(verified, index=3)]
    seen = Seen()
    stop = asyncio.Event()
    with watch_logs() as logs:
        async with daemon(configs, state_dir, Monitor(), logs) as address:
            await lc.store.wait_for(50 + 1 + len(trail.event_ids()), timeout=60)
            await logs.wait_for("integrity_settled", timeout=60)
            with prometheus(tmp_path, [address], [ALERTS]) as server:
                async with aiohttp.ClientSession() as http, asyncio.timeout(120):
                    api = Api(http, server)
                    await api.scraped(address)
                    watching = asyncio.create_task(watch(api, seen, stop))
                    await api.evaluations(15)
                    stop.set()
                    await watching
    assert {k for k in seen.keys() - EXPECTED_AT_START if not seen.slow_scrape(k)} == set()
