"""The USP sink against the emulator's USP endpoint: delivery, window, faults, refusals."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from isal import igzip

from cloudtrail_adapter.config import ClientOptions, Identity
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.errors import FatalSinkError
from cloudtrail_adapter.model import Batch
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.sinks.usp import UspSink, discover_usp_url
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.watch import AckRecorder, watch_logs

HOST = "test-host"
_gunzip: Callable[[bytes], bytes] = igzip.decompress  # isal's function is untyped
SENSOR = f"{OID}/{HOST}"


def make_batches(n: int, per: int = 5, tag: str = "e") -> list[Batch]:
    batches = []
    for i in range(n):
        lines = [orjson.dumps({"eventID": f"{tag}{i}-{j}", "eventName": "X"}) for j in range(per)]
        batches.append(
            Batch(
                payload=igzip.compress(b"\n".join(lines)),
                records=per,
                raw_bytes=sum(map(len, lines)),
            )
        )
    return batches


def event_ids(batches: Sequence[Batch]) -> Counter[str]:
    return Counter(
        str(orjson.loads(line)["eventID"])
        for b in batches
        for line in _gunzip(b.payload).split(b"\n")
    )


def usp_options(lc: LimaCharlieEmulator, **overrides: Any) -> ClientOptions:
    values: dict[str, Any] = {
        "identity": Identity(OID, Secret(INSTALLATION_KEY)),
        "hostname": HOST,
        "sensor_seed_key": "usp-tests",
        "dest_url": lc.usp_url,
    }
    values.update(overrides)
    return ClientOptions(**values)


@asynccontextmanager
async def running(sink: UspSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        await sink.close()
        await asyncio.wait_for(task, 5.0)


async def feed(sink: UspSink, batches: Sequence[Batch]) -> None:
    for batch in batches:
        await sink.send(batch)


async def deliver(sink: UspSink, acks: AckRecorder, batches: Sequence[Batch]) -> None:
    async with running(sink):
        producer = asyncio.create_task(feed(sink, batches))
        await acks.wait_for(len(batches))
        await asyncio.wait_for(producer, 5.0)


def assert_each_acked_once_in_order(acks: AckRecorder, batches: Sequence[Batch]) -> None:
    assert [id(b) for b in acks.batches] == [id(b) for b in batches]


async def test_delivers_every_batch_and_acks_each_once_in_order() -> None:
    async with LimaCharlieEmulator() as lc:
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(40)

        async with running(sink):
            await feed(sink, batches)
            await acks.wait_for(len(batches))
            assert sink.window == 16, "the window granted by fl was not applied"

        assert_each_acked_once_in_order(acks, batches)
        await lc.store.wait_for(200)
        assert lc.store.event_ids() == event_ids(batches)
        assert lc.store.by_sensor() == Counter({SENSOR: 200})
        assert (lc.usp.connections, sink.reconnects, sink.in_flight) == (1, 0, 0)
        assert (lc.usp.duplicates_received, lc.usp.sequence_gaps) == (0, 0)
        header = lc.usp.sessions[0].header
        assert header["version"] == 2
        assert header["iid"] == INSTALLATION_KEY
        assert header["architecture"] == "usp_adapter"
        assert header["platform"] == "aws"
        assert header["is_compressed"] is False
        assert header["data_format"] == "msgpack"
        assert header["instance_id"] == sink.instance_id
        assert "mapping" not in header and "indexing" not in header


async def test_unacked_messages_never_exceed_the_window_and_send_blocks() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.window = 2
        lc.usp_faults.hold_acks()
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(12)

        async with running(sink):
            producer = asyncio.create_task(feed(sink, batches))
            await lc.usp.wait_for_messages(2)  # the window is full: no third until an ack
            assert not producer.done(), "send() did not block on a full window"
            assert (sink.in_flight, len(acks.batches), len(lc.store.events)) == (2, 0, 0)

            lc.usp_faults.ack_delay = 0.01  # keep acks slower than sends: the window stays full
            lc.usp_faults.release_acks()
            await acks.wait_for(len(batches))
            await asyncio.wait_for(producer, 5.0)

        assert_each_acked_once_in_order(acks, batches)
        assert lc.store.event_ids() == event_ids(batches)
        assert lc.usp.max_unacked_seen == 2
        assert sink.max_in_flight_seen == 2


async def test_dropped_connection_resends_unacked_and_acks_each_batch_once() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.drop_after_messages = 5
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(30)

        await deliver(sink, acks, batches)

        assert_each_acked_once_in_order(acks, batches)
        await lc.store.wait_for(150)
        assert set(lc.store.event_ids()) == set(event_ids(batches)), "records were lost"
        assert lc.usp.connections == 2 and sink.reconnects == 1
        assert lc.usp.duplicates_received >= 1, "the unacked message was not re-sent"
        assert lc.usp.sequence_gaps == 0
        first_again = lc.usp.sessions[1].first_seq
        assert first_again is not None and 1 < first_again <= 5, "numbering restarted"


async def test_reconnect_request_is_honoured_without_loss() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.reconnect_after_messages = 3
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(20)

        with watch_logs() as logs:
            await deliver(sink, acks, batches)

        assert_each_acked_once_in_order(acks, batches)
        await lc.store.wait_for(100)
        assert set(lc.store.event_ids()) == set(event_ids(batches))
        assert lc.usp.connections == 2 and sink.reconnects == 1
        assert len(logs.named("usp_reconnect_requested")) == 1


async def test_backoff_request_silences_the_sender() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.window = None  # no fl: the window stays 1, one message in flight
        lc.usp_faults.backoff_after_messages = (2, 0.5)
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(4)

        await deliver(sink, acks, batches)

        assert_each_acked_once_in_order(acks, batches)
        session = lc.usp.sessions[0]
        assert session.backoff_sent_at is not None and session.resumed_at is not None
        assert session.resumed_at - session.backoff_sent_at >= 0.5
        assert sink.backoffs == 1 and sink.max_in_flight_seen == 1


async def test_refused_handshake_is_fatal_names_the_error_and_hides_the_key() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.handshake_error = "installation key not found"
        sink = UspSink(usp_options(lc), AckRecorder())

        with watch_logs() as logs, pytest.raises(FatalSinkError) as refused:
            await asyncio.wait_for(sink.run(), 5.0)

        message = str(refused.value)
        assert "installation key not found" in message and f"oid={OID}" in message
        assert INSTALLATION_KEY not in message + repr(sink) + repr(logs.entries)
        assert lc.usp.refused == ["installation key not found"], "a refusal was retried"


async def test_emulator_refuses_a_bad_header_by_name() -> None:
    async with LimaCharlieEmulator() as lc:
        key = "not-a-uuid-but-secret"
        options = usp_options(lc, identity=Identity(OID, Secret(key)))
        sink = UspSink(options, AckRecorder())

        with pytest.raises(FatalSinkError) as refused:
            await asyncio.wait_for(sink.run(), 5.0)

        assert "iid (the installation key) is not a UUID" in str(refused.value)
        assert key not in str(refused.value)
        assert lc.usp.connections == 0


async def test_discovery_resolves_the_usp_url_from_the_api() -> None:
    async with LimaCharlieEmulator() as lc, aiohttp.ClientSession() as session:
        assert await discover_usp_url(session, lc.base_url, OID) == lc.usp_url
        acks = AckRecorder()
        sink = UspSink(usp_options(lc, dest_url=None, api_url=lc.base_url), acks, session=session)
        batches = make_batches(3)

        with watch_logs() as logs:
            await deliver(sink, acks, batches)

        assert_each_acked_once_in_order(acks, batches)
        assert lc.store.event_ids() == event_ids(batches)
        connecting = logs.named("usp_connecting")
        assert connecting and connecting[0]["url"] == lc.usp_url
        assert not session.closed, "the sink closed a session it does not own"


async def test_connection_failures_back_off_then_deliver() -> None:
    refusals = 0
    two_refused = asyncio.Event()

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal refusals
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        refusals += 1
        if refusals == 2:
            two_refused.set()

    busy = await asyncio.start_server(unavailable, "127.0.0.1", 0)  # a load balancer saying 503
    port: int = busy.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/usp"
    acks = AckRecorder()
    options = ClientOptions(Identity(OID, Secret(INSTALLATION_KEY)), hostname=HOST, dest_url=url)
    sink = UspSink(options, acks)
    batches = make_batches(2)

    with watch_logs() as logs:
        task = asyncio.create_task(sink.run())
        producer = asyncio.create_task(feed(sink, batches))
        await asyncio.wait_for(two_refused.wait(), 5.0)
        busy.close()
        await busy.wait_closed()
        async with LimaCharlieEmulator(port=port) as lc:
            await acks.wait_for(len(batches), timeout=10.0)
            await asyncio.wait_for(producer, 5.0)
            await sink.close()
            await asyncio.wait_for(task, 5.0)
        assert lc.store.event_ids() == event_ids(batches)

    failed = logs.named("usp_connect_failed")
    assert [e["attempt"] for e in failed][:2] == [1, 2] and all(e["url"] == url for e in failed)
    assert "503" in failed[0]["error"]
    assert failed[0]["retry_in"] >= 0.25 and failed[1]["retry_in"] >= 0.5, "no backoff"
    assert INSTALLATION_KEY not in repr(logs.entries)


async def test_close_is_prompt_and_reports_nothing_unacked() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.hold_acks()
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        task = asyncio.create_task(sink.run())
        producer = asyncio.create_task(feed(sink, make_batches(3)))
        await lc.usp.wait_for_messages(1)

        await sink.close()
        await asyncio.wait_for(task, 2.0)
        await asyncio.wait_for(producer, 2.0)  # a blocked send() returns on close

        lc.usp_faults.release_acks()
        assert acks.batches == [] and lc.store.events == []


async def test_emulator_decodes_every_payload_form_and_acks_cumulatively() -> None:
    """A hand-written client: whole-frame gzip (is_compressed), t/j/b/o/p payloads, and a
    (delayed) ack after `ack_every` messages that asked for none."""
    records = [{"eventID": f"r{i}"} for i in range(6)]
    lines = [orjson.dumps(r) for r in records]
    messages: list[dict[str, Any]] = [
        {"x": 1, "t": lines[0].decode()},
        {"x": 2, "j": records[1]},
        {"x": 3, "b": lines[2]},
        {"x": 4, "o": lines[3] + b"\n" + lines[4] + b"\n"},
        {"x": 5, "p": igzip.compress(lines[5])},
    ]
    header = {
        "version": 2,
        "oid": OID,
        "iid": INSTALLATION_KEY,
        "host_name": HOST,
        "platform": "aws",
        "architecture": "usp_adapter",
        "sensor_seed_key": "",
        "is_compressed": True,
        "data_format": "msgpack",
        "instance_id": "raw-client",
    }
    async with LimaCharlieEmulator() as lc, aiohttp.ClientSession() as session:
        lc.usp_faults.ack_every = 5
        lc.usp_faults.ack_delay = 0.2
        loop = asyncio.get_running_loop()
        async with session.ws_connect(lc.usp_url) as ws:
            await ws.send_str(orjson.dumps(header).decode())
            assert orjson.loads(await ws.receive_str(timeout=5.0)) == {"v": "rd"}
            assert orjson.loads(await ws.receive_str(timeout=5.0)) == {"v": "fl", "win": 16}
            for m in messages:
                await ws.send_bytes(igzip.compress(msgspec.msgpack.encode(m)))
            sent_at = loop.time()
            assert orjson.loads(await ws.receive_str(timeout=5.0)) == {"v": "ack", "x": 5}
            assert loop.time() - sent_at >= 0.2, "ack_delay was not applied"

        assert sorted(e.json()["eventID"] for e in lc.store.events) == [
            r["eventID"] for r in records
        ]
        assert lc.store.by_sensor() == Counter({SENSOR: 6})

        async with session.ws_connect(lc.usp_url) as ws:
            await ws.send_str(orjson.dumps({**header, "version": 1}).decode())
            refusal = orjson.loads(await ws.receive_str(timeout=5.0))
        assert refusal == {"v": "error", "err": "unsupported protocol version 1 (expected 2)"}


# -- what the reference client tolerates (refractionPOINT/go-uspclient) ----------------------


async def test_a_late_pong_never_drops_a_healthy_connection() -> None:
    """On a slow uplink the cloud is silent for long stretches and a ping queued behind
    bundles is answered late; the reference never drops the link for it. Pings every 50 ms,
    each answered after 400 ms; acks 600 ms apart."""
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.pong_delay = 0.4
        lc.usp_faults.window = 4
        lc.usp_faults.ack_delay = 0.6
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks, ping_interval=0.05)
        batches = make_batches(8, per=1)
        await deliver(sink, acks, batches)

        assert_each_acked_once_in_order(acks, batches)
        assert (lc.usp.connections, sink.reconnects) == (1, 0)
        assert lc.usp.sessions[0].pings >= 10  # pinged all along, pongs always late


async def test_control_messages_in_binary_frames_are_read() -> None:
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.control_frames = "binary"
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(20)
        async with running(sink), asyncio.timeout(15):
            await feed(sink, batches)
            await acks.wait_for(len(batches))
            assert sink.window == 16  # the binary `fl` was applied

        assert_each_acked_once_in_order(acks, batches)
        assert lc.store.event_ids() == event_ids(batches)
        assert lc.usp.connections == 1


async def test_an_ack_for_a_number_never_written_commits_nothing() -> None:
    """The cloud acks 1000 past what it got, then the link drops before any real ack: the
    batches must still be unacknowledged, re-sent and delivered, never committed unsent."""
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.hold_acks()
        lc.usp_faults.ack_unsent_after_messages = 3
        lc.usp_faults.drop_after_messages = 5
        acks = AckRecorder()
        sink = UspSink(usp_options(lc), acks)
        batches = make_batches(10)
        with watch_logs() as logs:
            async with running(sink):
                producer = asyncio.create_task(feed(sink, batches))
                async with asyncio.timeout(10):
                    while lc.usp.connections < 2:
                        await lc.usp.wait_for_messages(lc.usp.messages_received + 1)
                assert acks.batches == []  # nothing acknowledged: nothing committed
                lc.usp_faults.release_acks()
                await acks.wait_for(len(batches))
                await asyncio.wait_for(producer, 5.0)

        assert_each_acked_once_in_order(acks, batches)
        assert lc.store.event_ids() == event_ids(batches)  # every record reached the cloud
        unknown = logs.named("usp_ack_unknown")
        assert unknown and unknown[0]["x"] > 1000
