"""The emulator's USP endpoint: LimaCharlie's side of the adapter WebSocket, with fault knobs.

It behaves as the protocol says the cloud does (see go-uspclient): check the JSON header,
answer `rd` (or `error` and close), grant a window with `fl`, read msgpack data messages and
acknowledge cumulatively. Events are recorded in the store only when the message carrying
them is acknowledged, so a sender that fails to re-send unacked messages loses them here.

Ack policy: an ack when a message asks (`a`) and at least every `ack_every` messages. The
real cloud's timing beyond that is not public; deliberately, there is no idle timer here, so
a client that never asks for an ack at the edge of its window stalls in tests instead of
passing slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from isal import igzip, isal_zlib

from cloudtrail_adapter.emulator.store import EventStore, Observer

_gunzip: Callable[[bytes], bytes] = igzip.decompress  # isal's function is untyped
# isal's stub declares `error` as an instance; at run time it is the exception class.
_GZIP_ERRORS: tuple[type[Exception], ...] = (EOFError, OSError, isal_zlib.error)  # type: ignore[assignment]
_DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, *_GZIP_ERRORS)

HEADER_TIMEOUT = 30.0
MAX_FRAME = 256 * 1024 * 1024
REQUIRED_HEADER_KEYS = (
    "version",
    "oid",
    "iid",
    "platform",
    "architecture",
    "sensor_seed_key",
    "is_compressed",
    "data_format",
    "instance_id",
)


def _released() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class UspFaults:
    """Knobs a test turns before or during a run. The `*_after_messages` faults count data
    messages on one connection and fire once (then reset themselves to None)."""

    window: int | None = 16  # the `fl` sent after `rd`; None sends none (client stays at 1)
    ack_every: int = 16  # ack at least every N messages even when none asks
    handshake_error: str | None = None  # answer every header with this error
    ack_delay: float = 0.0  # seconds between deciding to ack and acking
    drop_after_messages: int | None = None  # abort the connection, unacked, on the Nth message
    backoff_after_messages: tuple[int, float] | None = None  # (N, seconds): send `bo`
    reconnect_after_messages: int | None = None  # send `re` on the Nth message
    error_after_messages: int | None = None  # send `error` on the Nth message, then close
    stall_after_messages: int | None = None  # stop reading and acking after the Nth message
    pong_delay: float = 0.0  # seconds before a ping is answered (a slow uplink's late pong)
    control_frames: Literal["text", "binary"] = "text"  # the frame type of control JSON
    ack_unsent_after_messages: int | None = None  # on the Nth message, ack x + 1000 (never sent)
    acks_released: asyncio.Event = field(default_factory=_released, repr=False)
    peer_released: asyncio.Event = field(default_factory=_released, repr=False)
    stall_began: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def hold_acks(self) -> None:
        """From now on nothing is acknowledged, and so nothing recorded, until release."""
        self.acks_released.clear()

    def release_acks(self) -> None:
        self.acks_released.set()

    @property
    def acks_held(self) -> bool:
        return not self.acks_released.is_set()

    def release_peer(self) -> None:
        """Ends a stall: the server reads (and answers pings) and acks again."""
        self.peer_released.set()

    @property
    def stalled(self) -> bool:
        return not self.peer_released.is_set()


@dataclass
class UspSession:
    """One accepted connection, as a test inspects it."""

    number: int
    sensor: str
    instance_id: str
    header: dict[str, Any] = field(repr=False)
    window: int | None
    messages: int = 0
    first_seq: int | None = None  # a reconnecting client continues its numbering
    acked_upto: int = 0
    max_unacked: int = 0  # most messages received and not yet acknowledged at once
    backoff_sent_at: float | None = None  # loop time the `bo` went out
    resumed_at: float | None = None  # loop time of the first data message after it
    pings: int = 0  # pings the client sent on this connection
    ended: str = ""


class UspEndpoint:
    """`GET /usp`. Counters span all connections; `sessions` has one entry per connection."""

    def __init__(
        self, store: EventStore, faults: UspFaults, observer: Observer | None = None
    ) -> None:
        self.store = store
        self.faults = faults
        self._observer = observer
        self.sessions: list[UspSession] = []
        self.refused: list[str] = []  # the `err` of every refused handshake
        self.messages_received = 0
        self.duplicates_received = 0  # same (instance_id, x) seen again: a re-send
        self.sequence_gaps = 0  # a number skipped: the client lost a message
        self.protocol_errors: list[str] = []
        self._seen: dict[str, set[int]] = {}
        self._highest: dict[str, int] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._received = asyncio.Condition()

    @property
    def connections(self) -> int:
        """Connections that passed the handshake."""
        return len(self.sessions)

    @property
    def max_unacked_seen(self) -> int:
        return max((s.max_unacked for s in self.sessions), default=0)

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` data messages arrived (acked or not), across connections."""

        async def reached() -> None:
            async with self._received:
                await self._received.wait_for(lambda: self.messages_received >= count)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"emulator received {self.messages_received} USP messages, expected {count}"
            ) from None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, autoping=False)  # pongs: _read_loop
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._converse(request, ws)
        except ConnectionError:
            pass  # the client went away mid-write; what was unacked stays unrecorded
        finally:
            self._sockets.discard(ws)
            await ws.close()
        return ws

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def _converse(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        try:
            msg = await ws.receive(timeout=HEADER_TIMEOUT)
        except TimeoutError:
            await self._refuse(ws, f"no connection header within {HEADER_TIMEOUT:g} s")
            return
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        if msg.type is not WSMsgType.TEXT:
            await self._refuse(ws, "the first frame must be the JSON connection header")
            return
        header, problem = check_header(msg.data)
        problem = problem or self.faults.handshake_error
        if problem is not None:
            await self._refuse(ws, problem)
            return
        session = UspSession(
            number=len(self.sessions) + 1,
            sensor=f"{header['oid']}/{header.get('host_name', '')}",
            instance_id=str(header["instance_id"]),
            header=header,
            window=self.faults.window,
        )
        self.sessions.append(session)
        self._tell("usp_connected", sensor=session.sensor, platform=header["platform"])
        live = _Connection(self, request, ws, session, compressed=bool(header["is_compressed"]))
        try:
            await live.run()
        finally:
            self._tell(
                "usp_disconnected",
                sensor=session.sensor,
                messages=session.messages,
                acked_upto=session.acked_upto,
                reason=session.ended or "connection lost",
            )

    def _tell(self, event: str, **fields: Any) -> None:
        if self._observer is not None:
            self._observer(event, fields)

    async def _refuse(self, ws: web.WebSocketResponse, err: str) -> None:
        self.refused.append(err)
        self._tell("usp_refused", reason=err)
        await _send_control(ws, self.faults, {"v": "error", "err": err})

    async def _count(self, instance_id: str, seq: int, previous: int | None) -> None:
        seen = self._seen.setdefault(instance_id, set())
        if seq in seen:
            self.duplicates_received += 1
        seen.add(seq)
        highest = self._highest.get(instance_id, 0)
        if seq > highest + 1 or (previous is not None and seq != previous + 1):
            self.sequence_gaps += 1
        self._highest[instance_id] = max(highest, seq)
        self.messages_received += 1
        async with self._received:
            self._received.notify_all()


class _Connection:
    """One live connection: a reader (this task) and an acker task that records and acks."""

    def __init__(
        self,
        endpoint: UspEndpoint,
        request: web.Request,
        ws: web.WebSocketResponse,
        session: UspSession,
        *,
        compressed: bool,
    ) -> None:
        self.endpoint = endpoint
        self.faults = endpoint.faults
        self.request = request
        self.ws = ws
        self.session = session
        self.compressed = compressed
        self.unacked: deque[tuple[int, list[bytes]]] = deque()
        self.ack_target = 0
        self.ack_wanted = asyncio.Event()
        self.since_ack = 0
        self.last_seq: int | None = None
        self._pongs: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await self._control({"v": "rd"})
        if self.faults.window is not None:
            await self._control({"v": "fl", "win": self.faults.window})
        acker = asyncio.create_task(self._ack_loop())
        try:
            self.session.ended = await self._read_loop()
        finally:
            acker.cancel()
            await asyncio.gather(acker, return_exceptions=True)

    async def _control(self, message: dict[str, Any]) -> None:
        await _send_control(self.ws, self.faults, message)

    async def _pong(self, payload: bytes) -> None:
        await asyncio.sleep(self.faults.pong_delay)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.pong(payload)

    async def _read_loop(self) -> str:
        async for msg in self.ws:
            await self.faults.peer_released.wait()  # a stalled peer reads nothing, not even pings
            if msg.type is WSMsgType.PING:
                self.session.pings += 1
                self._pongs.add(pong := asyncio.create_task(self._pong(msg.data)))
                pong.add_done_callback(self._pongs.discard)
                continue
            if msg.type is not WSMsgType.BINARY:
                continue  # data_format msgpack: text frames carry nothing for us
            try:
                seq, lines, ask = decode_message(msg.data, compressed=self.compressed)
            except ValueError as exc:
                self.endpoint.protocol_errors.append(str(exc))
                await self._control({"v": "error", "err": str(exc)})
                return f"bad data message: {exc}"
            reason = await self._on_message(seq, lines, ask)
            if reason is not None:
                return reason
        return "closed by client"

    async def _on_message(self, seq: int, lines: list[bytes], ask: bool) -> str | None:
        s, f = self.session, self.faults
        loop = asyncio.get_running_loop()
        s.messages += 1
        if s.first_seq is None:
            s.first_seq = seq
        await self.endpoint._count(s.instance_id, seq, self.last_seq)
        self.last_seq = seq
        if s.backoff_sent_at is not None and s.resumed_at is None:
            s.resumed_at = loop.time()
        self.unacked.append((seq, lines))
        s.max_unacked = max(s.max_unacked, len(self.unacked))

        if f.drop_after_messages is not None and s.messages >= f.drop_after_messages:
            f.drop_after_messages = None
            if self.request.transport is not None:
                self.request.transport.abort()  # like a network failure: no close frame
            return "dropped (fault)"
        if f.backoff_after_messages is not None and s.messages >= f.backoff_after_messages[0]:
            seconds = f.backoff_after_messages[1]
            f.backoff_after_messages = None
            dur: float | int = int(seconds) if float(seconds).is_integer() else seconds
            await self._control({"v": "bo", "dur": dur})
            s.backoff_sent_at = loop.time()
        if f.reconnect_after_messages is not None and s.messages >= f.reconnect_after_messages:
            f.reconnect_after_messages = None
            await self._control({"v": "re"})
        if f.error_after_messages is not None and s.messages >= f.error_after_messages:
            f.error_after_messages = None
            await self._control({"v": "error", "err": "internal error (fault)"})
            return "error sent (fault)"
        if f.ack_unsent_after_messages is not None and s.messages >= f.ack_unsent_after_messages:
            f.ack_unsent_after_messages = None
            await self._control({"v": "ack", "x": seq + 1000})
        if f.stall_after_messages is not None and s.messages >= f.stall_after_messages:
            f.stall_after_messages = None
            f.peer_released.clear()  # TCP back-pressure reaches the client once buffers fill
            f.stall_began.set()

        self.since_ack += 1
        if ask or self.since_ack >= max(1, f.ack_every):
            self.since_ack = 0
            self.ack_target = seq
            self.ack_wanted.set()
        return None

    async def _ack_loop(self) -> None:
        """Records, then acks, everything up to the latest requested number. Held acks and
        delays only postpone this; requests made meanwhile merge into one cumulative ack."""
        while True:
            await self.ack_wanted.wait()
            self.ack_wanted.clear()
            await self.faults.acks_released.wait()
            await self.faults.peer_released.wait()
            if self.faults.ack_delay > 0:
                await asyncio.sleep(self.faults.ack_delay)
            target = self.ack_target
            lines: list[bytes] = []
            acked = 0
            while self.unacked and self.unacked[0][0] <= target:
                lines.extend(self.unacked.popleft()[1])
                acked += 1
            if acked == 0:
                continue
            await self.endpoint.store.add("usp", self.session.sensor, lines)
            try:
                await self._control({"v": "ack", "x": target})
            except ConnectionError:
                return
            self.session.acked_upto = target


async def _send_control(
    ws: web.WebSocketResponse, faults: UspFaults, message: dict[str, Any]
) -> None:
    if faults.control_frames == "binary":
        await ws.send_bytes(orjson.dumps(message))
    else:
        await ws.send_json(message)


def check_header(text: str) -> tuple[dict[str, Any], str | None]:
    """The parsed header and what is wrong with it (None when nothing). Never echoes `iid`."""
    try:
        header = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}, "connection header is not JSON"
    if not isinstance(header, dict):
        return {}, "connection header is not a JSON object"
    missing = [key for key in REQUIRED_HEADER_KEYS if key not in header]
    if missing:
        return header, f"connection header lacks {', '.join(missing)}"
    if type(header["version"]) is not int or header["version"] != 2:
        return header, f"unsupported protocol version {header['version']!r} (expected 2)"
    if not _is_uuid(header["oid"]):
        return header, "oid is not a UUID"
    if not _is_uuid(header["iid"]):
        return header, "iid (the installation key) is not a UUID"
    if header["data_format"] != "msgpack":
        return header, f"unsupported data_format {header['data_format']!r} (expected 'msgpack')"
    if not isinstance(header["is_compressed"], bool):
        return header, "is_compressed is not a boolean"
    if not isinstance(header["platform"], str) or not header["platform"]:
        return header, "platform is empty"
    return header, None


def decode_message(frame: bytes, *, compressed: bool) -> tuple[int, list[bytes], bool]:
    """One data frame -> (x, record lines, ack asked). Raises ValueError naming the problem."""
    try:
        if compressed:
            frame = _gunzip(frame)
        message = msgspec.msgpack.decode(frame)
    except _DECODE_ERRORS as exc:
        raise ValueError(f"undecodable data frame ({exc})") from None
    if not isinstance(message, dict):
        raise ValueError("data message is not a msgpack map")
    seq = message.get("x")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("data message has no sequence number x")
    return seq, message_records(message), bool(message.get("a"))


def message_records(message: dict[str, Any]) -> list[bytes]:
    """Every payload form the protocol has: `t` text, `j` JSON map, `b` binary, `o` bundle
    of newline-separated records, `p` the same bundle gzipped."""
    lines: list[bytes] = []
    text = message.get("t")
    if isinstance(text, str) and text:
        lines.append(text.encode())
    obj = message.get("j")
    if isinstance(obj, dict):
        lines.append(orjson.dumps(obj))
    blob = message.get("b")
    if isinstance(blob, str | bytes) and blob:
        lines.append(blob.encode() if isinstance(blob, str) else blob)
    bundle = message.get("o")
    if isinstance(bundle, bytes):
        lines.extend(bundle.split(b"\n"))
    packed = message.get("p")
    if isinstance(packed, bytes):
        try:
            lines.extend(_gunzip(packed).split(b"\n"))
        except _GZIP_ERRORS as exc:
            raise ValueError(f"bundle p is not gzip ({exc})") from None
    return [line for line in lines if line]


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
