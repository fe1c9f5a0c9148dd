"""The webhook transport against the emulator's webhook endpoint, both over real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import orjson
import pytest

from cloudtrail_adapter.config import WebhookOptions
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.errors import FatalSinkError
from cloudtrail_adapter.model import Batch, WebhookStats
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.sinks.webhook import RetryPolicy, WebhookSink, parse_retry_after
from tests.support.configs import OID, WEBHOOK_SECRET
from tests.support.watch import AckRecorder, watch_logs

HOOK = "cloudtrail"
FAST = RetryPolicy(initial=0.01, maximum=0.1, jitter=0.01)


def counts(sink: WebhookSink) -> WebhookStats:
    stats = sink.stats().webhook
    assert stats is not None
    return stats


def make_batches(count: int, per_batch: int, seed: int = 1) -> tuple[list[Batch], list[str]]:
    """`count` gzip NDJSON batches of CloudTrail-shaped records, and every eventID in order."""
    rng = random.Random(seed)
    batches, ids = [], []
    for b in range(count):
        lines = []
        for i in range(per_batch):
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            ids.append(event_id)
            record = {
                "eventVersion": "1.08",
                "eventID": event_id,
                "eventName": "GetObject",
                "eventSource": "s3.amazonaws.com",
                "recipientAccountId": "111122223333",
                "seq": b * per_batch + i,
            }
            lines.append(orjson.dumps(record))
        raw = b"\n".join(lines)
        batches.append(Batch(gzip.compress(raw), len(lines), len(raw)))
    return batches, ids


def options(url: str, secret: str = WEBHOOK_SECRET, **kw: Any) -> WebhookOptions:
    return WebhookOptions(url=url, secret=Secret(secret), **kw)


@pytest.fixture
def hook_url(lc: LimaCharlieEmulator) -> str:
    lc.webhook.register(OID, HOOK, WEBHOOK_SECRET)
    return lc.webhook_url(OID, HOOK)


@asynccontextmanager
async def running(sink: WebhookSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        await sink.close()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)


def assert_each_once(lc: LimaCharlieEmulator, ids: list[str]) -> None:
    accepted = lc.store.event_ids()
    assert set(accepted) == set(ids)
    assert [i for i, n in accepted.items() if n != 1] == []


async def test_delivers_every_record_once_and_acks_in_send_order(
    lc: LimaCharlieEmulator, hook_url: str
) -> None:
    batches, ids = make_batches(60, 25)
    acks = AckRecorder()
    async with aiohttp.ClientSession() as shared:
        sink = WebhookSink(options(hook_url, max_in_flight=4), acks, session=shared)
        async with running(sink):
            for batch in batches:
                await sink.send(batch)
            await lc.store.wait_for(len(ids), timeout=10)
            await acks.wait_for(len(batches))
        assert not shared.closed  # a session the sink was given is not the sink's to close
    assert_each_once(lc, ids)
    assert lc.store.by_sensor() == Counter({f"{OID}/{HOOK}": len(ids)})
    assert [id(b) for b in acks.batches] == [id(b) for b in batches]
    assert lc.webhook.accepted == len(batches)
    assert lc.webhook.auth_via == Counter({"header": len(batches)})  # never in the URL
    assert counts(sink).acked == len(batches)
    assert counts(sink).retries == 0
    assert counts(sink).in_flight == 0
    assert 1 <= counts(sink).max_in_flight_seen <= 4


async def test_retries_server_errors_and_holds_back_later_acks(
    lc: LimaCharlieEmulator, hook_url: str
) -> None:
    lc.webhook_faults.statuses = [500, 503, 429]
    lc.webhook_faults.retry_after = "0"
    batches, ids = make_batches(12, 10)
    acks = AckRecorder()
    sink = WebhookSink(options(hook_url, max_in_flight=4), acks, retry=FAST)
    async with running(sink):
        for batch in batches:
            await sink.send(batch)
        await acks.wait_for(len(batches))
    assert_each_once(lc, ids)
    # the first requests failed and were retried while later batches succeeded: the acks
    # still come in send order
    assert [id(b) for b in acks.batches] == [id(b) for b in batches]
    assert lc.webhook.rejected == Counter({500: 1, 503: 1, 429: 1})
    assert counts(sink).retries == 3


async def test_honours_retry_after(lc: LimaCharlieEmulator, hook_url: str) -> None:
    lc.webhook_faults.statuses = [429]
    lc.webhook_faults.retry_after = "1"
    batches, ids = make_batches(1, 5)
    acks = AckRecorder()
    sink = WebhookSink(options(hook_url, max_in_flight=1), acks, retry=FAST)
    with watch_logs() as logs:
        async with running(sink):
            started = time.monotonic()
            await sink.send(batches[0])
            await acks.wait_for(1)
            waited = time.monotonic() - started
    assert waited >= 0.95  # the backoff alone would have retried after ~0.02 s
    assert_each_once(lc, ids)
    assert counts(sink).retries == 1
    retry = logs.named("webhook_retry")
    assert len(retry) == 1
    assert retry[0]["status"] == 429
    assert retry[0]["retry_in"] >= 1.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    for unreadable in (None, "", "soon", "inf", "nan"):
        assert parse_retry_after(unreadable, now) is None


async def test_retries_connection_errors_until_limacharlie_is_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lc = LimaCharlieEmulator(port=port)
    lc.webhook.register(OID, HOOK, WEBHOOK_SECRET)
    batches, ids = make_batches(3, 4)
    acks = AckRecorder()
    sink = WebhookSink(options(lc.webhook_url(OID, HOOK)), acks, retry=FAST)
    with watch_logs() as logs:
        async with running(sink):
            for batch in batches:
                await sink.send(batch)
            await logs.wait_for("webhook_retry", count=3)  # nothing listens yet: refused
            async with lc:
                await acks.wait_for(len(batches))
                assert_each_once(lc, ids)
    assert "ClientConnectorError" in logs.named("webhook_retry")[0]["reason"]
    assert [id(b) for b in acks.batches] == [id(b) for b in batches]


async def test_timeout_is_retried(lc: LimaCharlieEmulator, hook_url: str) -> None:
    lc.webhook_faults.delay = 1.0
    batches, ids = make_batches(1, 5)
    acks = AckRecorder()
    sink = WebhookSink(options(hook_url, timeout=0.2), acks, retry=FAST)
    with watch_logs() as logs:
        async with running(sink):
            await sink.send(batches[0])
            await lc.webhook.wait_requests(1)
            lc.webhook_faults.delay = 0.0  # the first request stays slow, the retry is not
            await acks.wait_for(1)
    # a timed-out POST may still have been accepted: at-least-once, nothing lost
    assert set(ids) <= set(lc.store.event_ids())
    assert acks.batches == [batches[0]]
    assert counts(sink).retries == 1
    retry = logs.named("webhook_retry")
    assert retry[0]["reason"] == "no answer within 0.2s"


async def test_wrong_secret_is_fatal_and_never_leaks(
    lc: LimaCharlieEmulator, hook_url: str
) -> None:
    wrong = "wrong-secret-do-not-log-91c2"
    batches, _ = make_batches(2, 3)
    acks = AckRecorder()
    sink = WebhookSink(options(hook_url, secret=wrong), acks, retry=FAST)
    with watch_logs() as logs:
        await sink.send(batches[0])
        with pytest.raises(FatalSinkError) as failure:
            await asyncio.wait_for(sink.run(), 5)
        with pytest.raises(FatalSinkError):
            await sink.send(batches[1])
        await sink.close()
    message = str(failure.value)
    assert "401" in message
    assert hook_url in message
    assert "webhook secret was refused" in message
    for text in (message, repr(sink), repr(logs.entries)):
        assert wrong not in text
        assert WEBHOOK_SECRET not in text
    assert [e["status"] for e in logs.named("webhook_rejected")] == [401]
    assert lc.webhook.rejected == Counter({401: 1})  # refused once, not retried
    assert acks.batches == []
    assert lc.store.events == []


async def test_secret_in_the_url_is_redacted(lc: LimaCharlieEmulator) -> None:
    """Someone may paste the hook URL with its secret path segment; errors still hide it."""
    url = f"{lc.base_url}/{OID}/unknown-hook/{WEBHOOK_SECRET}"
    sink = WebhookSink(options(url), AckRecorder(), retry=FAST)
    async with running(sink) as task:
        await sink.send(make_batches(1, 1)[0][0])
        with pytest.raises(FatalSinkError) as failure:
            await asyncio.wait_for(task, 5)
    assert "404" in str(failure.value)
    assert WEBHOOK_SECRET not in str(failure.value)
    assert WEBHOOK_SECRET not in repr(sink)


async def test_unknown_hook_is_fatal(lc: LimaCharlieEmulator) -> None:
    url = lc.webhook_url(OID, "no-such-hook")
    sink = WebhookSink(options(url), AckRecorder(), retry=FAST)
    async with running(sink) as task:
        await sink.send(make_batches(1, 3)[0][0])
        with pytest.raises(FatalSinkError) as failure:
            await asyncio.wait_for(task, 5)
    message = str(failure.value)
    assert "404" in message
    assert url in message
    assert "no such webhook" in message
    assert lc.webhook.rejected == Counter({404: 1})


async def test_oversized_batch_is_fatal(lc: LimaCharlieEmulator, hook_url: str) -> None:
    lc.webhook_faults.max_body_bytes = 64
    sink = WebhookSink(options(hook_url), AckRecorder(), retry=FAST)
    async with running(sink) as task:
        await sink.send(make_batches(1, 50)[0][0])
        with pytest.raises(FatalSinkError) as failure:
            await asyncio.wait_for(task, 5)
    assert "413" in str(failure.value)
    assert "batch_max_bytes" in str(failure.value)


async def test_max_in_flight_is_respected_and_send_waits(
    lc: LimaCharlieEmulator, hook_url: str
) -> None:
    lc.webhook_faults.delay = 0.5
    batches, ids = make_batches(6, 5)
    acks = AckRecorder()
    sink = WebhookSink(options(hook_url, max_in_flight=3), acks, retry=FAST)
    async with running(sink):
        for batch in batches[:3]:
            await sink.send(batch)
        await lc.webhook.wait_requests(3)
        fourth = asyncio.create_task(sink.send(batches[3]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not fourth.done()  # no room until a batch is acknowledged
        assert counts(sink).in_flight == 3
        await fourth
        for batch in batches[4:]:
            await sink.send(batch)
        await acks.wait_for(len(batches))
    assert_each_once(lc, ids)
    assert counts(sink).max_in_flight_seen == 3
    assert lc.webhook.max_concurrent == 3


async def test_close_abandons_unacked_batches_promptly(
    lc: LimaCharlieEmulator, hook_url: str
) -> None:
    lc.webhook_faults.delay = 3.0
    batches, _ = make_batches(2, 3)
    acks = AckRecorder()
    sink = WebhookSink(options(hook_url, max_in_flight=1), acks)
    run = asyncio.create_task(sink.run())
    await sink.send(batches[0])
    await lc.webhook.wait_requests(1)
    blocked = asyncio.create_task(sink.send(batches[1]))
    await asyncio.wait_for(sink.close(), 1.0)
    await asyncio.wait_for(run, 1.0)  # returns, does not raise
    await asyncio.wait_for(blocked, 1.0)  # a waiting send is released, its batch dropped
    assert acks.batches == []
    assert lc.webhook.requests == 1


# --- the emulator's endpoint, spoken to directly ----------------------------------------------

EVENTS = [{"eventID": f"e{i}", "n": i, "s": "ü"} for i in range(3)]
BODIES = {
    "object": (orjson.dumps(EVENTS[0]), EVENTS[:1]),
    "array": (orjson.dumps(EVENTS, option=orjson.OPT_INDENT_2), EVENTS),
    "ndjson": (b"\n".join(orjson.dumps(e) for e in EVENTS) + b"\n", EVENTS),
}


@pytest.mark.parametrize("shape", list(BODIES))
@pytest.mark.parametrize("encoding", ["plain", "gzip-header", "gzip-magic"])
async def test_emulator_accepts_object_array_and_ndjson(
    lc: LimaCharlieEmulator, hook_url: str, shape: str, encoding: str
) -> None:
    body, events = BODIES[shape]
    headers = {"lc-secret": WEBHOOK_SECRET}
    if encoding != "plain":
        body = gzip.compress(body)
    if encoding == "gzip-header":
        headers["Content-Encoding"] = "gzip"
    async with (
        aiohttp.ClientSession() as http,
        http.post(hook_url, data=body, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
    assert [e.raw for e in lc.store.events] == [orjson.dumps(e) for e in events]
    assert {e.sensor for e in lc.store.events} == {f"{OID}/{HOOK}"}


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "fragment"),
    [
        (f"/{OID}/{HOOK}/{WEBHOOK_SECRET}", {}, b'{"a":1}', 200, "success"),
        (f"/{OID}/{HOOK}/wrong", {}, b'{"a":1}', 401, "secret"),
        (f"/{OID}/{HOOK}", {}, b'{"a":1}', 401, "secret"),
        (f"/{OID}/{HOOK}", {"lc-secret": "wrong"}, b'{"a":1}', 401, "secret"),
        (f"/{OID}/other", {"lc-secret": WEBHOOK_SECRET}, b'{"a":1}', 404, "other"),
        (f"/{OID}/{HOOK}", {"lc-secret": WEBHOOK_SECRET}, b'{"a":1}\n{"b":\n', 400, "line 2"),
        (f"/{OID}/{HOOK}", {"lc-secret": WEBHOOK_SECRET}, b"[1, 2]", 400, "element 1"),
        (f"/{OID}/{HOOK}", {"lc-secret": WEBHOOK_SECRET}, b" \n", 400, "no events"),
        (
            f"/{OID}/{HOOK}",
            {"lc-secret": WEBHOOK_SECRET},
            b"\x1f\x8bnot really gzip",
            400,
            "gzip",
        ),
        (
            f"/{OID}/{HOOK}",
            {"lc-secret": WEBHOOK_SECRET, "Content-Encoding": "gzip"},
            b'{"plain": "but labelled gzip"}',
            400,
            "Content-Encoding",
        ),
    ],
)
async def test_emulator_answers(
    lc: LimaCharlieEmulator,
    hook_url: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    fragment: str,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(lc.base_url + path, data=body, headers=headers) as r,
    ):
        assert r.status == status
        assert fragment in await r.text()
    assert len(lc.store.events) == (1 if status == 200 else 0)
    if status == 200:
        assert lc.webhook.auth_via == Counter({"path": 1})
    else:
        assert lc.webhook.rejected == Counter({status: 1})


async def test_emulator_injected_statuses(lc: LimaCharlieEmulator, hook_url: str) -> None:
    lc.webhook_faults.statuses = [200, 503]
    lc.webhook_faults.retry_after = "7"
    headers = {"lc-secret": WEBHOOK_SECRET}
    async with aiohttp.ClientSession() as http:
        answers = []
        for n in range(3):
            async with http.post(hook_url, data=b'{"n":%d}' % n, headers=headers) as r:
                answers.append((r.status, r.headers.get("Retry-After")))
    assert answers == [(200, None), (503, "7"), (200, None)]
    assert [e.json()["n"] for e in lc.store.events] == [0, 2]
    assert (lc.webhook.requests, lc.webhook.accepted) == (3, 2)
