"""The AWS rows of `make bench`: moto's own GetObject rate, the daemon over S3 and over SQS
notifications, and the naive script, all against the same corpus.

Every program measured runs in its own process, as in production: moto (so its request
handling does not share a GIL with the LimaCharlie emulator, which runs in this process),
the daemon (the real CLI, `DaemonProcess`) and the naive script (`bench/naive.py`). Peak
RSS is the kernel's high-water mark (VmHWM) of the measured process plus any processes it
started, sampled while it runs (the kernel keeps no figure once a process is reaped).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from isal import igzip

from bench.kill_harness import aws_options, drained
from bench.table import Row
from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, RecordFilter
from cloudtrail_adapter.decoding.decode import decode_object
from cloudtrail_adapter.decoding.filters import Matcher
from cloudtrail_adapter.emulator.corpus import CorpusFile
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.emulator.store import AcceptedEvent
from tests.support import messages
from tests.support.process import DaemonProcess, TreeUsage
from tests.support.stand_in import ACCESS_KEY, REGION, SECRET_KEY

__all__ = ["moto_process", "naive_row", "s3_rows", "sqs_row"]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent  # children import `bench` from here
OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
INSTALLATION_KEY = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"
HOOK = "cloudtrail-naive"
WEBHOOK_SECRET = "bench-webhook-secret-3c9d"  # noqa: S105 (the emulator's, made up here)
LOG_LEVEL = "info"  # quiet per object; DaemonProcess.stop() waits for its daemon_started line
TIMEOUT = 600.0  # for any one run; the corpus decides how long a run really takes
UPLOAD_CONCURRENCY = 8
SQS_BATCH = 10  # SendMessageBatch's limit
# The daemon's long poll. A long poll answers as soon as a message arrives, so latency does
# not depend on it, but a SIGTERM waits for the poll in progress (up to 20 s by default).
SQS_WAIT = 2
_gunzip: Callable[[bytes], bytes] = igzip.decompress  # isal's function is untyped

# The moto child: serves until its stdin closes (so it also ends if the bench dies).
_MOTO_CHILD = """
import os, sys
from tests.support.stand_in import moto_server
with moto_server() as url:
    print(url, flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nobody reads stdout any more
    sys.stdin.read()
"""


# ---------------------------------------------------------------------------------------
# Processes: moto, and peak memory of a process tree


@contextlib.asynccontextmanager
async def moto_process(start_timeout: float = 60.0) -> AsyncIterator[str]:
    """Yields the endpoint URL of moto's ThreadedMotoServer running in a child process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _MOTO_CHILD,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), start_timeout)
        url = line.decode().strip()
        if not url.startswith("http://"):
            raise SystemExit(f"moto did not start (exit {proc.returncode}, said {line!r})")
        yield url
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:  # a request thread still long-polling holds the exit
            proc.kill()
            await proc.wait()


# ---------------------------------------------------------------------------------------
# The corpus, in a bucket


@dataclass(frozen=True)
class Totals:
    """What the log files of a corpus hold: records, eventIDs and uncompressed bytes."""

    records: int
    raw_bytes: int
    event_ids: frozenset[str]

    @classmethod
    def of(cls, files: Iterable[CorpusFile]) -> Totals:
        logs = [f for f in files if f.kind == "log"]
        return cls(
            records=sum(len(f.event_ids) for f in logs),
            raw_bytes=sum(len(_gunzip(f.body)) for f in logs),
            event_ids=frozenset(e for f in logs for e in f.event_ids),
        )

    @classmethod
    def kept(cls, files: Iterable[CorpusFile], keep: RecordFilter) -> Totals:
        """What a filtered source ships of the corpus (read before any clock starts)."""
        matcher = Matcher.of(keep)
        assert matcher is not None, "a filter that keeps everything"
        lines = [
            line
            for f in files
            if f.kind == "log"
            for line in decode_object(f.body).records
            if matcher.refuses(line) is None
        ]
        ids = frozenset(str(orjson.loads(line)["eventID"]) for line in lines)
        return cls(len(lines), sum(map(len, lines)), ids)


async def endpoint_of(stack: contextlib.AsyncExitStack, moto_url: str | None) -> str:
    """`moto_url`, else a moto process of our own that lives as long as `stack`."""
    if moto_url is not None:
        return moto_url
    url: str = await stack.enter_async_context(moto_process())
    return url


async def each(items: Iterable[T], concurrency: int, work: Callable[[T], Awaitable[None]]) -> None:
    """`work` on every item, `concurrency` at a time (workers sharing one iterator)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def upload(files: Sequence[CorpusFile], options: AwsOptions) -> str:
    """A fresh bucket holding every file at its key; its name."""
    return await upload_objects([(f.key, f.body) for f in files], options)


async def upload_objects(objects: Sequence[tuple[str, bytes]], options: AwsOptions) -> str:
    """A fresh bucket holding each (key, body); its name."""
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    async with aws.client("s3", options, pool=UPLOAD_CONCURRENCY) as s3:
        await s3.create_bucket(Bucket=bucket)

        async def put(item: tuple[str, bytes]) -> None:
            await s3.put_object(Bucket=bucket, Key=item[0], Body=item[1])

        await each(objects, UPLOAD_CONCURRENCY, put)
    return bucket


# ---------------------------------------------------------------------------------------
# Checks and the daemon's document


def verify(events: Sequence[AcceptedEvent], totals: Totals, what: str, log: str = "") -> None:
    """Every record accepted exactly once, or SystemExit saying what is wrong."""
    got = [str(orjson.loads(e.raw).get("eventID")) for e in events]
    missing = len(totals.event_ids - set(got))
    if missing or len(got) != totals.records:
        raise SystemExit(
            f"{what}: the emulator holds {len(got)} records for {totals.records} in the corpus "
            f"({missing} missing, {len(got) - len(set(got))} duplicates)\n{log}"
        )


def file_document(lc: LimaCharlieEmulator, root: Path, name: str, **source: Any) -> dict[str, Any]:
    """A single_load `file:` document over `root` to the emulator over USP, as sensor
    `bench-<name>` of a fresh organisation; `source` adds or overrides keys."""
    client = {
        "hostname": f"bench-{name}",
        "identity": {"installation_key": str(uuid.uuid4()), "oid": str(uuid.uuid4())},
        "dest_url": lc.usp_url,
    }
    return {"file": {"path": str(root), "single_load": True, "client_options": client} | source}


def document(kind: str, lc: LimaCharlieEmulator, endpoint: str, **source: Any) -> dict[str, Any]:
    """An `s3:`/`sqs:` YAML document to the emulator over USP; delivery options at defaults."""
    client = {
        "hostname": f"bench-{kind}",
        "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
        "platform": "aws",
        "sensor_seed_key": f"bench-{kind}",
        "dest_url": lc.usp_url,
    }
    aws_keys = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION}
    return {kind: {"client_options": client, "endpoint_url": endpoint} | aws_keys | source}


def write_config(workdir: Path, name: str, doc: dict[str, Any]) -> tuple[Path, Path]:
    """The config file and a fresh state directory (no checkpoint from an earlier run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = f"{name}-{uuid.uuid4().hex[:8]}"
    config = workdir / f"{run}.yaml"
    config.write_text(yaml.safe_dump(doc))
    return config, workdir / f"state-{run}"


@dataclass(frozen=True)
class Run:
    """One single_load run of the CLI: its time, its process tree's peak memory and CPU
    (start-up included), and the daemon, for what its log lines said."""

    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    daemon: DaemonProcess


async def single_load_run(
    config: Path, state: Path, lc: LimaCharlieEmulator, totals: Totals, what: str
) -> Run:
    """The CLI on a single_load config.

    Timed from its daemon_started line (interpreter start-up and imports, about a second,
    are paid once per process and say nothing of throughput) until it exited 0 and the
    emulator holds every record; any other outcome is a SystemExit saying what happened.
    """
    async with (
        DaemonProcess(config, state, log_level=LOG_LEVEL) as daemon,
        TreeUsage(daemon.proc.pid) as rss,
    ):
        try:
            await daemon.logs.wait_for("daemon_started", timeout=TIMEOUT)
            started = time.perf_counter()
            code = await asyncio.wait_for(daemon.proc.wait(), TIMEOUT)
            if code == 0:
                await lc.store.wait_for(totals.records, TIMEOUT)
        except TimeoutError as exc:
            raise SystemExit(f"{what}: {exc}\n{daemon.tail()}") from None
        seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{what} exited {code}:\n{daemon.tail()}")
    verify(lc.store.events, totals, what, daemon.tail())
    return Run(seconds, rss.mb, rss.cpu_seconds, daemon)


# ---------------------------------------------------------------------------------------
# S3: moto's ceiling, then the daemon


async def moto_get_row(
    files: Sequence[CorpusFile], options: AwsOptions, bucket: str, totals: Totals, parallel: int
) -> Row:
    """GetObject of every log file, `parallel` at a time, each body read whole: what moto can
    serve at the daemon's concurrency, the ceiling of any S3 row."""
    logs = [f for f in files if f.kind == "log"]
    async with aws.client("s3", options, pool=parallel) as s3:

        async def get(f: CorpusFile) -> None:
            answer = await s3.get_object(Bucket=bucket, Key=f.key)
            async with answer["Body"] as body:
                data = await body.read()
            if len(data) != len(f.body):
                raise SystemExit(f"moto served {len(data)} bytes of {f.key}, not {len(f.body)}")

        started = time.perf_counter()
        await each(logs, parallel, get)
        seconds = time.perf_counter() - started
    gzipped = sum(len(f.body) for f in logs) / 1e6
    return Row(
        f"moto raw GetObject ({parallel} parallel)",
        totals.records,
        totals.raw_bytes,
        seconds,
        note=f"{len(logs)} objects, {gzipped:.1f} MB gzip",
    )


async def s3_rows(
    files: list[CorpusFile],
    workdir: Path,
    parallel_fetch: int = 8,
    *,
    moto_url: str | None = None,
) -> list[Row]:
    """[moto raw GetObject, daemon S3 -> USP], on one bucket of one moto (its own process,
    started here unless `moto_url` is given).

    The daemon row is timed as `single_load_run` says.
    """
    async with contextlib.AsyncExitStack() as stack:
        endpoint = await endpoint_of(stack, moto_url)
        options = aws_options(endpoint)
        totals = Totals.of(files)
        bucket = await upload(files, options)
        raw = await moto_get_row(files, options, bucket, totals, parallel_fetch)
        lc = await stack.enter_async_context(LimaCharlieEmulator())
        doc = document(
            "s3", lc, endpoint, bucket_name=bucket, single_load=True, parallel_fetch=parallel_fetch
        )
        config, state = write_config(workdir, "s3", doc)
        run = await single_load_run(config, state, lc, totals, "daemon S3 run")
    daemon_row = Row(
        "daemon, S3 (moto) -> USP emulator",
        totals.records,
        totals.raw_bytes,
        run.seconds,
        peak_rss_mb=run.peak_rss_mb,
        cpu_seconds=run.cpu_seconds,
        note=f"share of moto raw: {raw.seconds / run.seconds:.2f}",
    )
    return [raw, daemon_row]


# ---------------------------------------------------------------------------------------
# SQS: notifications at a steady pace, latency per object


async def send_notifications(
    options: AwsOptions,
    queue: str,
    bucket: str,
    logs: Sequence[CorpusFile],
    load: float | None,
) -> dict[str, float]:
    """One S3 event notification per object, SQS_BATCH per SendMessageBatch; batch n is due
    when the records before it, at `load` records/s, have been offered (all at once when
    None). Returns key -> monotonic time its message was visible (SendMessageBatch answered).
    """
    sent: dict[str, float] = {}
    async with aws.client("sqs", options) as sqs:
        started = time.monotonic()
        offered = 0
        for first in range(0, len(logs), SQS_BATCH):
            batch = logs[first : first + SQS_BATCH]
            if load is not None:
                await asyncio.sleep(max(0.0, started + offered / load - time.monotonic()))
            entries = [
                {
                    "Id": str(n),
                    "MessageBody": messages.s3_event(bucket, [f.key], sizes=[len(f.body)]),
                }
                for n, f in enumerate(batch)
            ]
            answer = await sqs.send_message_batch(QueueUrl=queue, Entries=entries)
            if answer.get("Failed"):
                raise SystemExit(f"SendMessageBatch failed: {answer['Failed']}")
            now = time.monotonic()
            sent.update((f.key, now) for f in batch)
            offered += sum(len(f.event_ids) for f in batch)
    return sent


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least `p` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def latencies(
    logs: Sequence[CorpusFile], sent: dict[str, float], events: Sequence[AcceptedEvent]
) -> list[float]:
    """Per object: from its message's send until its last record was (first) accepted."""
    accepted: dict[str, float] = {}
    for event in events:
        accepted.setdefault(str(orjson.loads(event.raw)["eventID"]), event.at)
    return [
        max(accepted[e] for e in f.event_ids) - sent[f.key]
        for f in logs
        if f.event_ids  # an empty log file has no record to wait for
    ]


async def sqs_row(
    files: list[CorpusFile],
    workdir: Path,
    parallel_fetch: int = 8,
    *,
    moto_url: str | None = None,
    load: float | None = None,
    timeout: float = TIMEOUT,
) -> Row:
    """The daemon on an `sqs:` source, fed one S3 event notification per object.

    The objects sit in a moto bucket before the run; the daemon is up (its daemon_started
    line) before the first message, so start-up is not counted. Messages are sent in
    batches of 10 at a steady pace of `load` records/s (all at once when None). Under a
    steady load below capacity (the bench passes half the S3 row's rate) the latency is
    what a notification waits in the daemon, batch linger included; all at once, it would
    mostly measure the backlog ahead of each message. Throughput is every record over the
    time from the first send to the last acceptance: with a paced load it follows `load`
    (more on a run of a few batches, since a batch of 10 goes at once), so it is a
    capacity only when everything is sent at once. The note has p50/p99 of the per-object
    latency: from the moment SQS answered the SendMessageBatch holding its notification
    until the emulator accepted the last of its records (the emulator runs in this
    process: one monotonic clock). Delivery options are the defaults (batch_linger 0.5 s
    is in every latency); the long poll is SQS_WAIT seconds, so that the final SIGTERM
    does not wait out a 20 s poll.
    """
    logs = [f for f in files if f.kind == "log"]
    async with contextlib.AsyncExitStack() as stack:
        endpoint = await endpoint_of(stack, moto_url)
        options = aws_options(endpoint)
        totals = Totals.of(files)
        bucket = await upload(files, options)
        async with aws.client("sqs", options) as sqs:
            made = await sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:12]}")
        queue = str(made["QueueUrl"])
        lc = await stack.enter_async_context(LimaCharlieEmulator())
        doc = document(
            "sqs",
            lc,
            endpoint,
            queue_url=queue,
            parallel_fetch=parallel_fetch,
            wait_time_seconds=SQS_WAIT,
        )
        config, state = write_config(workdir, "sqs", doc)
        async with (
            DaemonProcess(config, state, log_level=LOG_LEVEL) as daemon,
            TreeUsage(daemon.proc.pid) as rss,
        ):
            try:
                await daemon.logs.wait_for("daemon_started", timeout=timeout)
                sent = await send_notifications(options, queue, bucket, logs, load)
                await lc.store.wait_for(totals.records, timeout)
                await drained(options, queue, timeout)
            except TimeoutError as exc:
                raise SystemExit(f"daemon SQS run: {exc}\n{daemon.tail()}") from None
            code = await daemon.stop()
        if code != 0:
            raise SystemExit(f"daemon SQS run exited {code}:\n{daemon.tail()}")
        events = list(lc.store.events)
    verify(events, totals, "daemon SQS run", daemon.tail())
    waits = latencies(logs, sent, events)
    seconds = max(e.at for e in events) - min(sent.values())
    p50, p99 = percentile(waits, 0.5) * 1e3, percentile(waits, 0.99) * 1e3
    paced = "all at once" if load is None else f"paced at {load:,.0f} rec/s"
    return Row(
        "daemon, SQS notifications (moto) -> USP emulator",
        totals.records,
        totals.raw_bytes,
        seconds,
        peak_rss_mb=rss.mb,
        cpu_seconds=rss.cpu_seconds,
        note=f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({paced})",
    )


# ---------------------------------------------------------------------------------------
# The naive script


async def naive_row(
    files: list[CorpusFile],
    workdir: Path,
    moto_url: str,
    *,
    bucket: str | None = None,
    timeout: float = TIMEOUT,
) -> Row:
    """`python -m bench.naive` (boto3 + json + requests, one thread) from a moto bucket to
    the emulator's webhook; timed like the daemon rows, from launch until it exited (the
    note gives the script's own time, start-up excluded). `workdir` is unused: the script
    keeps no state."""
    del workdir
    options = aws_options(moto_url)
    totals = Totals.of(files)
    bucket = bucket or await upload(files, options)
    async with LimaCharlieEmulator() as lc:
        lc.webhook.register(OID, HOOK, WEBHOOK_SECRET)
        env = os.environ | {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "LC_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        args = ["--endpoint", moto_url, "--bucket", bucket, "--webhook", lc.webhook_url(OID, HOOK)]
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.naive",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        async with TreeUsage(proc.pid) as rss:
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise SystemExit(f"naive script still running after {timeout}s") from None
            seconds = time.perf_counter() - started
        log = err.decode(errors="replace")[-3000:]
        if proc.returncode != 0:
            raise SystemExit(f"naive script exited {proc.returncode}:\n{log}")
        verify(lc.store.events, totals, "naive script", log)
    said = orjson.loads(out.splitlines()[-1])
    return Row(
        "naive: boto3 + json + requests -> webhook",
        totals.records,
        totals.raw_bytes,
        seconds,
        peak_rss_mb=rss.mb,
        cpu_seconds=rss.cpu_seconds,
        note=f"in-script {said['seconds']:.2f} s",
    )
