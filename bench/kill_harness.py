"""kill -9 at random moments, restart, and count what LimaCharlie got: lost must be 0.

The daemon runs as a real process (the CLI), against moto for S3/SQS and the LimaCharlie
emulator over USP, whose acks are slowed so that kills land between sending and
acknowledgement. Kill moments are drawn from a seeded generator as amounts of progress (so
many more events accepted since the last restart), so they spread over the whole run
whatever the machine's speed; the property checked does not depend on when they land.

With de-duplication on (the default), it also accounts for every kill: the eventIDs
LimaCharlie accepted before the kill, and those the daemon had recorded as acknowledged (its
state database, read once the process is dead). An eventID recorded before a kill must never
arrive again after it (`resent`); every duplicate must have been in flight, accepted but not
yet recorded, at some kill (`unexplained` counts those that were not); and every eventID
of an object checkpointed at a kill must have been recorded (`unrecorded` counts those that
were not: the keys are stored before anything is committed).

Used by tests/test_kill.py (short form, in `make test`) and bench/soak.py (`make soak`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.decoding.event_keys import ENTRY, KEY_BYTES, event_key
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from tests.support import messages
from tests.support.process import DaemonProcess
from tests.support.stand_in import ACCESS_KEY, REGION, SECRET_KEY

Mode = Literal["s3", "sqs"]
OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
INSTALLATION_KEY = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"
ACCOUNT = "111122223333"
PREFIX = f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2026/11/24/"
PARALLEL_FETCH = 4
VISIBILITY_TIMEOUT = 2
#: Seconds of event time the input spans: within the default de-duplication window (1 h),
#: so that every eventID stays remembered for the whole run.
EVENT_SPAN = 1800


@dataclass(frozen=True)
class KillPlan:
    mode: Mode
    kills: int = 20
    objects: int = 120
    records_per_object: tuple[int, int] = (1, 60)
    seed: int = 7
    ack_delay: float = 0.02  # the emulator's delay before each ack: kills land mid-flight
    finish_timeout: float = 120.0
    dedup: bool = True


@dataclass
class KillReport:
    mode: Mode
    kills: int = 0
    seeded: int = 0
    accepted: int = 0  # distinct eventIDs
    lost: int = 0
    duplicated: int = 0  # deliveries beyond the first
    in_flight: int = 0  # the most eventIDs accepted but not yet recorded at one kill
    resent: int = 0  # deliveries of an eventID recorded as acknowledged before a kill
    unexplained: int = 0  # duplicated eventIDs that were not in flight at any kill
    unrecorded: int = 0  # eventIDs of objects checkpointed at a kill but not recorded
    seconds: float = 0.0
    exits: list[int] = field(default_factory=list)  # return codes of the killed processes
    log_tail: str = field(default="", repr=False)  # the last run's log, for failures

    def line(self) -> str:
        return (
            f"{self.mode:<5}{self.kills:>7}{self.seeded:>10}{self.accepted:>10}"
            f"{self.lost:>7}{self.duplicated:>12}{self.in_flight:>11}{self.resent:>8}"
            f"{self.unexplained:>13}{self.unrecorded:>12}{self.seconds:>10.1f}"
        )

    @staticmethod
    def header() -> str:
        names = f"{'kills':>7}{'seeded':>10}{'accepted':>10}{'lost':>7}{'duplicated':>12}"
        more = f"{'in_flight':>11}{'resent':>8}{'unexplained':>13}{'unrecorded':>12}"
        return f"{'mode':<5}{names}{more}{'seconds':>10}"


@dataclass(frozen=True)
class Input:
    """What was put in the bucket: object key -> the eventIDs in it."""

    objects: dict[str, list[str]]

    @property
    def event_ids(self) -> set[str]:
        return {e for ids in self.objects.values() for e in ids}

    @property
    def largest(self) -> int:
        return max(len(ids) for ids in self.objects.values())


def make_objects(plan: KillPlan) -> dict[str, bytes]:
    rng = random.Random(plan.seed)
    when = datetime(2026, 11, 24, tzinfo=UTC)
    spacing = timedelta(seconds=EVENT_SPAN / plan.objects)
    objects: dict[str, bytes] = {}
    for n in range(plan.objects):
        count = rng.randint(*plan.records_per_object)
        stamp = when + spacing * n
        records = [
            cloudtrail_record(rng, account=ACCOUNT, region="us-east-1", when=stamp)
            for _ in range(count)
        ]
        objects[f"{PREFIX}kill_{n:05}.json.gz"] = log_file(records)
    return objects


def ids_of(body: bytes) -> list[str]:
    return [str(r["eventID"]) for r in orjson.loads(gzip.decompress(body))["Records"]]


async def seed(plan: KillPlan, options: AwsOptions) -> tuple[Input, str, str]:
    """A fresh bucket (and queue) holding the plan's objects; returns input, bucket, queue."""
    objects = make_objects(plan)
    bucket = f"kill-{uuid.uuid4().hex[:12]}"
    queue = ""
    async with aws.client("s3", options) as s3:
        await s3.create_bucket(Bucket=bucket)
        for key, body in objects.items():
            await s3.put_object(Bucket=bucket, Key=key, Body=body)
    if plan.mode == "sqs":
        queue = await notify(options, bucket, list(objects))
    return Input({key: ids_of(body) for key, body in objects.items()}), bucket, queue


async def notify(options: AwsOptions, bucket: str, keys: list[str]) -> str:
    async with aws.client("sqs", options) as sqs:
        answer = await sqs.create_queue(QueueName=f"kill-{uuid.uuid4().hex[:12]}")
        url = str(answer["QueueUrl"])
        for start in range(0, len(keys), 10):
            entries = [
                {"Id": str(i), "MessageBody": messages.s3_event(bucket, [key])}
                for i, key in enumerate(keys[start : start + 10])
            ]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url


def config(
    plan: KillPlan, endpoint: str, lc: LimaCharlieEmulator, bucket: str, queue: str
) -> dict[str, Any]:
    """Long-running (not single-load): a kill must be able to land at any point of a pass."""
    common: dict[str, Any] = {
        "client_options": {
            "hostname": f"kill-{plan.mode}",
            "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
            "platform": "aws",
            "sensor_seed_key": "kill-harness",
            "dest_url": lc.usp_url,
        },
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "region": REGION,
        "endpoint_url": endpoint,
        "parallel_fetch": PARALLEL_FETCH,
        "delivery": {"batch_max_records": 10, "batch_linger": 0.02},  # objects span batches
        "dedup": {"enabled": plan.dedup},
    }
    if plan.mode == "s3":
        return {"s3": common | {"bucket_name": bucket, "poll_interval": 0.5}}
    return {
        "sqs": common
        | {"queue_url": queue, "wait_time_seconds": 1, "visibility_timeout": VISIBILITY_TIMEOUT}
    }


class Accepted:
    """The eventIDs the emulator accepted, in order, read incrementally as events arrive."""

    def __init__(self, lc: LimaCharlieEmulator) -> None:
        self._lc = lc
        self._seen = 0
        self.ids: Counter[str] = Counter()
        self.order: list[tuple[str, bytes]] = []  # (eventID, de-duplication key)

    def refresh(self) -> None:
        events = self._lc.store.events
        for event in events[self._seen :]:
            body = event.json()
            event_id = str(body.get("eventID"))
            self.ids[event_id] += 1
            self.order.append((event_id, event_key(event_id, body["recipientAccountId"])))
        self._seen = len(events)

    @property
    def total(self) -> int:
        return len(self._lc.store.events)

    async def wait_total(self, count: int, timeout: float) -> None:
        await self._lc.store.wait_for(count, timeout)

    async def wait_distinct(self, count: int, timeout: float) -> None:
        """Until `count` distinct eventIDs arrived: progress that re-sent duplicates cannot
        fake, so every kill target is reachable."""
        await self._wait(lambda: len(self.ids) >= count, timeout)

    async def wait_covering(self, expected: set[str], timeout: float) -> None:
        await self._wait(lambda: expected <= self.ids.keys(), timeout)

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            if done():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.ids)} distinct eventIDs after {timeout}s")
            await self.wait_total(self.total + 1, remaining)


async def run_plan(
    plan: KillPlan, options: AwsOptions, lc: LimaCharlieEmulator, workdir: Path
) -> KillReport:
    """Seeds, kills `plan.kills` times, lets a last run deliver everything, and reports."""
    started = time.monotonic()
    assert options.endpoint_url
    data, bucket, queue = await seed(plan, options)
    path = workdir / f"{plan.mode}.yaml"
    path.write_text(yaml.safe_dump(config(plan, options.endpoint_url, lc, bucket, queue)))
    state = workdir / f"state-{plan.mode}"
    report = KillReport(plan.mode, seeded=len(data.event_ids))
    rng = random.Random(plan.seed)
    accepted = Accepted(lc)
    kills: list[Kill] = []
    lc.usp_faults.ack_delay = plan.ack_delay
    step = max(1, len(data.event_ids) // (plan.kills + 2))
    for _ in range(plan.kills):
        async with DaemonProcess(path, state, log_level="info") as daemon:
            accepted.refresh()
            target = min(len(data.event_ids), len(accepted.ids) + rng.randint(0, step))
            await accepted.wait_distinct(target, plan.finish_timeout)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.05))  # between two progress points
            assert daemon.running, f"the daemon exited by itself:\n{daemon.tail()}"
            report.exits.append(await daemon.kill())
            report.kills += 1
            accepted.refresh()
            kills.append(Kill.read(len(accepted.order), state / "state.db"))
    async with DaemonProcess(path, state, log_level="info") as daemon:
        with contextlib.suppress(TimeoutError):  # what never arrived is counted as lost
            await accepted.wait_covering(data.event_ids, plan.finish_timeout)
        if plan.mode == "sqs":
            await drained(options, queue, plan.finish_timeout)
        report.exits.append(await daemon.stop())
        report.log_tail = daemon.tail()
    lc.usp_faults.ack_delay = 0.0
    accepted.refresh()
    report.accepted = len(data.event_ids & set(accepted.ids))
    report.lost = len(data.event_ids - set(accepted.ids))
    report.duplicated = sum(accepted.ids.values()) - len(accepted.ids)
    if plan.dedup:
        account_for_kills(report, accepted.order, kills, data)
    report.seconds = time.monotonic() - started
    return report


@dataclass(frozen=True)
class Kill:
    """At one kill: how many events LimaCharlie had accepted, and the keys the daemon had
    recorded as acknowledged."""

    accepted: int
    recorded: frozenset[bytes]
    committed: frozenset[str]  # object keys checkpointed (s3)

    @classmethod
    def read(cls, accepted: int, db: Path) -> Kill:
        """The keys and checkpoints in a dead daemon's state database."""
        if not db.exists():
            return cls(accepted, frozenset(), frozenset())
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT entries FROM delivered_keys").fetchall()
            committed = conn.execute("SELECT key FROM s3_checkpoints").fetchall()
        recorded = (blob[i : i + KEY_BYTES] for (blob,) in rows for i in range(0, len(blob), ENTRY))
        return cls(accepted, frozenset(recorded), frozenset(key for (key,) in committed))


def account_for_kills(
    report: KillReport, order: list[tuple[str, bytes]], kills: list[Kill], data: Input
) -> None:
    """Fills `in_flight`, `resent` and `unexplained` (see the module docstring)."""
    in_flight: set[str] = set()
    start = 0
    for kill in kills:
        run = order[start : kill.accepted]  # accepted during the run this kill ended
        unrecorded = {event_id for event_id, key in run if key not in kill.recorded}
        report.in_flight = max(report.in_flight, len(unrecorded))
        in_flight |= unrecorded
        report.resent += sum(1 for _, key in order[kill.accepted :] if key in kill.recorded)
        report.unrecorded += sum(
            1
            for name in kill.committed
            for event_id in data.objects[name]
            if event_key(event_id, ACCOUNT) not in kill.recorded
        )
        start = kill.accepted
    seen: set[str] = set()
    for event_id, _ in order:
        if event_id in seen and event_id not in in_flight:
            report.unexplained += 1
        seen.add(event_id)


async def drained(options: AwsOptions, queue: str, timeout: float) -> None:
    """Waits until every message was deleted: those whose records a killed daemon delivered
    but did not delete come back after their visibility timeout and are deleted then."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    async with aws.client("sqs", options) as sqs, asyncio.timeout(timeout):
        while True:
            answer = await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)
            if all(answer["Attributes"][name] == "0" for name in names):
                return
            await asyncio.sleep(0.2)  # SQS tells no one when it empties: ask again


def aws_options(endpoint: str) -> AwsOptions:
    return AwsOptions(ACCESS_KEY, Secret(SECRET_KEY), REGION, endpoint)


def in_flight_bound(plan: KillPlan) -> int:
    """Records that can be sent but not yet committed when a kill lands: every object in
    work (fetchers, work queue, decoded queue, batcher) at the largest object size."""
    return (PARALLEL_FETCH * 3 + 4) * plan.records_per_object[1]


__all__ = [
    "KillPlan",
    "KillReport",
    "aws_options",
    "in_flight_bound",
    "run_plan",
]
