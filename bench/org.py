"""The organisation row of `make bench`: 1,000 accounts x 17 regions, 5 % active.

What an organisation's trail costs to poll, as issue 29 measured it before the listing
followed activity: 17,000 streams (one account and region each), one file each, on a
light S3 of its own process (bench/light_s3.py: moto would spend more CPU per call than
the daemon), the daemon (the real CLI) at its defaults. Then:

1. **first pass**: its ListObjectsV2 calls (the daemon's `source_pass_done`) and seconds
   (from `daemon_started` to that line);
2. **listing only** (`window` seconds, nothing lands, everything fetched): the daemon's CPU
   (its process tree, from /proc) over the stand-in's count of list calls in the window:
   CPU per list call;
3. **landing** (`landing` seconds): every `tick` seconds one new file lands in each of the
   active streams (5 %), named by its landing time as CloudTrail names it; a minute in,
   a first file in each of `woken` streams that were quiet until then, and a late file
   (named 20 hours back, within `lookback`) in an active stream. Steady LIST calls an hour
   are the stand-in's list calls over this phase; each file's latency is the stand-in's
   time from its landing to its first GetObject. Every file landed must be fetched, once.

"Today's" calls an hour, for the target, are what issue 29 measured with two calls per
stream per pass: 1.14 million an hour for 17,000 streams, i.e. 67 a stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import aiohttp
import orjson

from bench.aws_rows import LOG_LEVEL, ROOT, document, write_config
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.process import DaemonProcess, cpu_ticks, descendants

__all__ = ["ORG_ACCOUNTS", "OrgRow", "OrgSetup", "org_row", "render_org"]

ORG_ACCOUNTS = 1000
REGIONS = 17
ORG = "o-a1b2c3d4e5"
BULK = 2000  # keys a bulk request to the stand-in names
TODAYS_CALLS_PER_STREAM_HOUR = 1_140_000 / 17_000  # issue 29, before this row existed
TARGETS = {"calls": 0.2, "active_p95": 120.0, "woken": 600.0}
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class OrgSetup:
    accounts: int = ORG_ACCOUNTS
    regions: int = REGIONS
    active: float = 0.05  # the share of streams that deliver
    tick: float = 30.0  # seconds between landings in the active streams
    window: float = 150.0  # listing only
    landing: float = 660.0  # > quiet_interval + poll_interval, so a woken stream is seen
    woken: int = 20  # quiet streams that get their first new file
    source: dict[str, Any] | None = None  # keys beside the defaults (none for the row)

    @property
    def streams(self) -> int:
        return self.accounts * self.regions

    @property
    def label(self) -> str:
        return (
            f"organisation, {self.accounts:,} accounts x {self.regions} regions, "
            f"{self.active:.0%} active"
        )


@dataclass(frozen=True)
class OrgRow:
    setup: OrgSetup
    first_calls: int
    first_seconds: float
    steady_calls_per_hour: float
    cpu_ms_per_list: float
    stand_in_ms_per_call: float
    active_p50: float
    active_p95: float
    woken: list[float]  # seconds from landing to GetObject, each quiet stream's first file
    late: float | None  # the late file's, None if never fetched
    landed: int
    missed: int
    fetched_twice: int

    @property
    def todays_calls_per_hour(self) -> float:
        return self.setup.streams * TODAYS_CALLS_PER_STREAM_HOUR


def key(account: str, region: str, when: datetime) -> str:
    name = f"{account}_CloudTrail_{region}_{when:%Y%m%dT%H%MZ}_{uuid.uuid4().hex[:16]}"
    return f"AWSLogs/{ORG}/{account}/CloudTrail/{region}/{when:%Y/%m/%d}/{name}.json.gz"


def stream_names(setup: OrgSetup) -> list[tuple[str, str]]:
    return [
        (f"{200000000000 + a}", f"region-{r:02d}")
        for a in range(setup.accounts)
        for r in range(setup.regions)
    ]


BODY = gzip.compress(
    orjson.dumps({"Records": [{"eventID": "org-bench", "eventTime": "2026-01-01T00:00:00Z"}]})
)


class StandIn:
    """The light S3 child: its URL, its bulk calls, its CPU."""

    def __init__(self, url: str, pid: int, http: aiohttp.ClientSession, bucket: str) -> None:
        self.url, self.pid, self._http, self.bucket = url, pid, http, bucket

    async def put(self, keys: list[str]) -> None:
        """Lands `keys`, a few thousand a request (aiohttp's limit is 1 MiB a body)."""
        content = base64.b64encode(BODY).decode()
        for start in range(0, len(keys), BULK):
            body = {"bucket": self.bucket, "keys": keys[start : start + BULK], "body": content}
            url = f"{self.url}/_bench/put"
            async with self._http.post(url, data=orjson.dumps(body)) as answer:
                answer.raise_for_status()

    async def stats(self) -> dict[str, int]:
        async with self._http.get(f"{self.url}/_bench/stats") as answer:
            found: dict[str, int] = orjson.loads(await answer.read())
        return found

    async def objects(self, keys: list[str]) -> dict[str, tuple[float, float | None, int]]:
        found: dict[str, tuple[float, float | None, int]] = {}
        for start in range(0, len(keys), BULK):
            body = {"bucket": self.bucket, "keys": keys[start : start + BULK]}
            url = f"{self.url}/_bench/objects"
            async with self._http.post(url, data=orjson.dumps(body)) as got:
                got.raise_for_status()
                found.update(orjson.loads(await got.read()))
        return found

    def cpu(self) -> float:
        return (cpu_ticks(self.pid) or 0) / _TICKS


@contextlib.asynccontextmanager
async def light_s3() -> AsyncIterator[StandIn]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.light_s3",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not url.startswith("http://"):
            raise SystemExit(f"the light S3 did not start (exit {proc.returncode})")
        async with aiohttp.ClientSession() as http:
            yield StandIn(url, proc.pid, http, f"org-{uuid.uuid4().hex[:8]}")
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 10)


def tree_cpu(pid: int) -> float:
    return sum(cpu_ticks(p) or 0 for p in [pid, *descendants(pid)]) / _TICKS


async def org_row(workdir: Path, setup: OrgSetup) -> OrgRow:
    rng = random.Random(29)
    names = stream_names(setup)
    active = rng.sample(names, max(1, round(len(names) * setup.active)))
    quiet = [s for s in names if s not in set(active)]
    async with light_s3() as s3, LimaCharlieEmulator() as lc:
        now = datetime.now(UTC)
        chosen = set(active)
        await s3.put(
            [
                key(a, r, now - (timedelta(minutes=2) if (a, r) in chosen else timedelta(hours=2)))
                for a, r in names
            ]
        )
        doc = document("s3", lc, s3.url, bucket_name=s3.bucket, **(setup.source or {}))
        config, state = write_config(workdir, "org", doc)
        wanted = ("daemon_started", "source_pass_done", "listing_plan", "source_failed")

        def keep(line: str) -> bool:
            return any(f'"{name}"' in line for name in wanted)

        async with DaemonProcess(config, state, log_level=LOG_LEVEL, keep=keep) as daemon:
            row = await _measure(setup, daemon, s3, lc, active, quiet, rng)
            await daemon.stop(timeout=120)
    return row


async def _measure(
    setup: OrgSetup,
    daemon: DaemonProcess,
    s3: StandIn,
    lc: LimaCharlieEmulator,
    active: list[tuple[str, str]],
    quiet: list[tuple[str, str]],
    rng: random.Random,
) -> OrgRow:
    await daemon.logs.wait_for("daemon_started", timeout=120)
    started = time.perf_counter()
    first = await daemon.logs.wait_for("source_pass_done", timeout=3600)
    first_seconds = time.perf_counter() - started
    await _all_fetched(s3, setup.streams)

    # listing only: nothing lands, everything is fetched
    before, cpu, own = await s3.stats(), tree_cpu(daemon.proc.pid), s3.cpu()
    await asyncio.sleep(setup.window)
    after, cpu, own = await s3.stats(), tree_cpu(daemon.proc.pid) - cpu, s3.cpu() - own
    lists = after.get("list", 0) - before.get("list", 0)
    if after.get("get", 0) != before.get("get", 0):
        raise SystemExit("org row: objects were fetched in the listing-only window")
    calls = sum(after.values()) - sum(before.values())

    # landing
    landed: list[str] = []
    woken_keys: list[str] = []
    late: str | None = None
    t0 = time.perf_counter()
    base = await s3.stats()
    ticks = int(setup.landing // setup.tick)
    for n in range(ticks):
        at = datetime.now(UTC)
        batch = [key(a, r, at) for a, r in active]
        if n == 2:
            woken_keys = [key(a, r, at) for a, r in rng.sample(quiet, setup.woken)]
            late = key(*active[0], at - timedelta(hours=20))
            batch += [*woken_keys, late]
        await s3.put(batch)
        landed += batch
        await asyncio.sleep(max(0.0, t0 + (n + 1) * setup.tick - time.perf_counter()))
    end = await s3.stats()
    hours = (time.perf_counter() - t0) / 3600
    steady = (end.get("list", 0) - base.get("list", 0)) / hours
    seen = await _all_fetched(s3, 0, landed, timeout=900)
    latency = {k: seen[k][1] - seen[k][0] for k in landed if seen[k][1] is not None}  # type: ignore[operator]
    plain = [latency[k] for k in landed if k not in woken_keys and k != late and k in latency]
    cuts = quantiles(plain, n=20)
    return OrgRow(
        setup=setup,
        first_calls=int(first["list_calls"]),
        first_seconds=first_seconds,
        steady_calls_per_hour=steady,
        cpu_ms_per_list=cpu / lists * 1000 if lists else float("nan"),
        stand_in_ms_per_call=own / calls * 1000 if calls else float("nan"),
        active_p50=median(plain),
        active_p95=cuts[18],
        woken=sorted(latency[k] for k in woken_keys if k in latency),
        late=latency.get(late) if late else None,
        landed=len(landed),
        missed=sum(1 for k in landed if seen[k][1] is None),
        fetched_twice=sum(1 for k in landed if seen[k][2] > 1),
    )


async def _all_fetched(
    s3: StandIn, count: int, keys: list[str] | None = None, timeout: float = 3600
) -> dict[str, tuple[float, float | None, int]]:
    """Until the stand-in served `count` GETs (or every one of `keys`), polling it once
    a second (it is another process: its counts are its to tell)."""
    deadline = time.perf_counter() + timeout
    while True:
        if keys is None:
            if (await s3.stats()).get("get", 0) >= count:
                return {}
        else:
            seen = await s3.objects(keys)
            if all(seen[k][1] is not None for k in keys) or time.perf_counter() > deadline:
                return seen
        if time.perf_counter() > deadline:
            raise SystemExit(f"org row: not every file was fetched in {timeout:.0f} s")
        await asyncio.sleep(1.0)


def render_org(row: OrgRow) -> str:
    s = row.setup
    ratio = row.steady_calls_per_hour / row.todays_calls_per_hour
    woken = max(row.woken) if row.woken else float("nan")
    late = "missed" if row.late is None else f"{row.late:.0f} s"
    lines = [
        f"{s.label} ({s.streams:,} streams; light S3 stand-in, its own process)",
        f"  first pass:                   {row.first_calls:,} calls in {row.first_seconds:.0f} s",
        f"  steady LIST calls per hour:   {row.steady_calls_per_hour:,.0f}   "
        f"({ratio:.2f} of today's {row.todays_calls_per_hour:,.0f}; target <= 0.20)",
        f"  CPU per list call (daemon):   {row.cpu_ms_per_list:.2f} ms   "
        f"(stand-in: {row.stand_in_ms_per_call:.2f} ms per call)",
        f"  landing to GetObject, active: p50 {row.active_p50:.0f} s, p95 {row.active_p95:.0f} s"
        f"   (target p95 <= 120 s)",
        f"  a quiet stream's first file:  at most {woken:.0f} s of {len(row.woken)}"
        f" (median {median(row.woken) if row.woken else float('nan'):.0f} s; target <= 600 s)",
        f"  files landed {row.landed:,}: missed {row.missed}, fetched twice {row.fetched_twice};"
        f" late file (20 h, within lookback): {late}",
    ]
    return "\n".join(lines)
