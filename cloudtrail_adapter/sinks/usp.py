"""The USP transport: batches over LimaCharlie's native adapter WebSocket, acked cumulatively.

Wire behaviour follows refractionPOINT/go-uspclient (client.go, ack_buffer.go, protocol/):

- Sequence numbers belong to the sink, not to a connection: they start at 1 and keep
  counting across reconnects, and a re-sent message keeps its number (the reference's ack
  buffer survives reconnects; the cloud can tell a re-send by `instance_id` + `x`).
- The window starts at 1 on every connection and follows `fl`. A batch counts against it from
  `send()` until its `ack`, so `send()` blocking on a full window is the pipeline's backpressure.
- A message asks for an ack (`a`) when its number is a multiple of max(1, window // 2), as the
  reference does, and also when it fills the window or empties our queue: the reference fixes
  `a` when a message is queued, so a re-send after a reconnect can go out without one and wait
  on the cloud's own timer; asking at those two points means we never wait on a timer.
- `is_compressed` stays false: a Batch's payload is already gzip and travels as `p` (the
  compressed bundle), which is exactly what LimaCharlie's own S3 adapter does for gzip files
  with the reference client's default (uncompressed frames). Gzipping the frame again would
  cost CPU for nothing.
- Control messages are JSON in text or binary frames; an `ack` counts only for numbers
  written on this connection (anything else is ignored with a warning, never committed).
- A ping every 30 s keeps the link alive, and a late pong never ends it (the reference's read
  deadline is a day): a slow uplink answers pings late, and is still a healthy connection.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
import orjson
import structlog
import yarl
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
)

from cloudtrail_adapter.config import ClientOptions
from cloudtrail_adapter.errors import Backoff, FatalSinkError
from cloudtrail_adapter.model import AckCallback, Batch, SinkStats, UspStats
from cloudtrail_adapter.sinks.proxies import Route, Routes, refused_by_proxy

log = structlog.get_logger("cloudtrail_adapter.sinks.usp")

PROTOCOL_VERSION = 2
ARCHITECTURE = "usp_adapter"
HANDSHAKE_TIMEOUT = 25.0  # the reference client's wait for `rd`
PING_INTERVAL = 30.0  # the reference client's keep-alive
CLOSE_TIMEOUT = 2.0
DISCOVERY_TIMEOUT = 30.0
RETRY_INITIAL = 0.25
RETRY_MAX = 30.0
RECONNECT = Backoff(RETRY_INITIAL, RETRY_MAX, jitter=0.5)


class _Disconnected(Exception):
    """The connection ended before it delivered anything; worth a backed-off retry."""


# Failures that a later attempt may not see: network, TLS, timeouts, a server going away.
_RETRYABLE = (aiohttp.ClientError, OSError, TimeoutError, _Disconnected)


def safe_url(url: str | yarl.URL) -> str:
    """A URL fit for a log line: no user info, no query string."""
    u = yarl.URL(url)
    return str(u.with_user(None).with_password(None).with_query(None).with_fragment(None))


async def discover_usp_url(
    session: aiohttp.ClientSession, api_url: str, oid: str, route: Route | None = None
) -> str:
    """Where an organisation's USP endpoint lives, from LimaCharlie's unauthenticated
    `GET /v1/orgs/{oid}/url` (answer: `{"url": {"lc_wss": host, ...}, ...}`).

    A plain `http://` API URL (our loopback emulator) gives `ws://`; anything else `wss://`.
    An org the API does not know is fatal; other failures are left to the caller's retries.
    """
    where = f"{api_url.rstrip('/')}/v1/orgs/{oid}/url"
    timeout = aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT)
    route = route or Route()
    async with session.get(
        where,
        timeout=timeout,
        proxy=route.proxy,
        proxy_headers=route.headers,
        headers=route.request_headers,
    ) as resp:
        if resp.status in (400, 401, 403, 404):
            raise FatalSinkError(
                f"LimaCharlie has no USP endpoint for oid={oid}: "
                f"{safe_url(where)} answered HTTP {resp.status}"
            )
        resp.raise_for_status()
        try:
            body: Any = await resp.json(content_type=None)
        except ValueError:
            raise FatalSinkError(
                f"LimaCharlie's discovery answer for oid={oid} is not JSON ({safe_url(where)})"
            ) from None
    urls = body.get("url") if isinstance(body, dict) else None
    host = urls.get("lc_wss") if isinstance(urls, dict) else None
    if not isinstance(host, str) or not host:
        raise FatalSinkError(f"LimaCharlie's discovery answer for oid={oid} has no url.lc_wss")
    scheme = "ws" if api_url.startswith("http://") else "wss"
    return f"{scheme}://{host.rstrip('/')}/usp"


@dataclass(slots=True)
class HandshakeProbe:
    """What `UspSink.handshake_only` found: whether the dial reached a WebSocket, the TLS it
    negotiated (None on `ws://`), and LimaCharlie's refusal or why the link ended first."""

    connected: bool = False
    tls: str | None = None
    refused: str | None = None
    ended: str | None = None


class _HandshakeDone(Exception):
    """Ends a `handshake_only` connection at `rd`, before anything else is sent."""


@dataclass(slots=True)
class _Pending:
    seq: int
    batch: Batch
    timestamp_ms: int


class _DataMessage(msgspec.Struct, omit_defaults=True):
    """protocol.DataMessage, the fields we use: `x` sequence, `a` ack wanted, `p` gzip batch
    (the protocol's "bundle"), `s` timestamp in ms."""

    x: int
    p: bytes
    s: int = 0
    a: bool = False


_encoder = msgspec.msgpack.Encoder()
_T = TypeVar("_T")


class UspSink:
    """Implements `Sink` over USP. Every batch given to `send` is reported to `on_ack` exactly
    once, in order, after the cloud acknowledged it; unacked batches are re-sent after every
    reconnect (at-least-once on the wire, exactly-once to the tracker)."""

    def __init__(
        self,
        options: ClientOptions,
        on_ack: AckCallback,
        *,
        session: aiohttp.ClientSession | None = None,
        instance_id: str | None = None,
        ping_interval: float = PING_INTERVAL,
        routes: Routes | None = None,
    ) -> None:
        self._options = options
        self._routes = routes or Routes(options.proxy, {})
        self._ping_interval = ping_interval
        self._on_ack = on_ack
        self._session = session
        self.instance_id = instance_id or str(uuid.uuid4())
        self._url: str | None = options.dest_url or None
        self._pending: deque[_Pending] = deque()
        self._next_seq = 1
        self._on_wire = 0  # leading _pending entries already sent on the current connection
        self._window = 1
        self._backoff_until = 0.0
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._connections = 0
        self._down_since: float | None = time.monotonic()  # not connected yet
        self._acked_here = 0  # batches acked on the current connection
        self._max_in_flight = 0
        self._backoffs = 0
        self._probe: HandshakeProbe | None = None  # set by handshake_only

    # -- read-only stats ---------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Batches accepted by `send` and not yet acknowledged."""
        return len(self._pending)

    @property
    def window(self) -> int:
        return self._window

    @property
    def reconnects(self) -> int:
        return max(0, self._connections - 1)

    @property
    def max_in_flight_seen(self) -> int:
        return self._max_in_flight

    @property
    def backoffs(self) -> int:
        """How many `bo` requests the cloud sent."""
        return self._backoffs

    def __repr__(self) -> str:
        url = safe_url(self._url) if self._url else "(discovery)"
        return (
            f"UspSink(oid={self._options.identity.oid}, url={url}, "
            f"in_flight={self.in_flight}, window={self._window})"
        )

    # -- the Sink protocol -------------------------------------------------------------

    async def send(self, batch: Batch) -> None:
        """Queues `batch`, waiting while the window is full. After `close()` it returns
        without queueing: the batch is never acknowledged, so nothing commits it."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._closing.is_set() or len(self._pending) < self._window
            )
            if self._closing.is_set():
                return
            self._pending.append(_Pending(self._next_seq, batch, time.time_ns() // 1_000_000))
            self._next_seq += 1
            self._max_in_flight = max(self._max_in_flight, len(self._pending))
            self._changed.notify_all()

    async def close(self) -> None:
        self._closing.set()
        async with self._changed:
            self._changed.notify_all()

    async def run(self) -> None:
        """Owns the connection until `close()`; raises FatalSinkError when LimaCharlie refuses
        us. Closing cancels whatever the loop is doing (dialing, handshake, backoff)."""
        loop_task = asyncio.create_task(self._connection_loop())
        closing = asyncio.create_task(self._closing.wait())
        try:
            await asyncio.wait({loop_task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (loop_task, closing):
                task.cancel()
            await asyncio.gather(loop_task, closing, return_exceptions=True)
        if loop_task.done() and not loop_task.cancelled():
            loop_task.result()  # re-raises FatalSinkError (or a bug)
        log.info("usp_closed", oid=self._options.identity.oid, unacked=len(self._pending))

    # -- connection loop ---------------------------------------------------------------

    async def _connection_loop(self) -> None:
        session = self._session or aiohttp.ClientSession(timeout=self._session_timeout())
        try:
            while True:
                # A fresh retry state after every connection that delivered something, so the
                # next reconnect is quick (the reference reconnects at once); a server that
                # keeps failing before any ack gets exponential backoff with jitter.
                retrying = AsyncRetrying(
                    retry=retry_if_exception_type(_RETRYABLE),
                    wait=RECONNECT.tenacity_wait(),
                    before_sleep=self._log_retry,
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        await self._connection(session)
                # Spread reconnects a little, so a cloud restart is not met by a stampede.
                await asyncio.sleep(random.uniform(0, RETRY_INITIAL))
        finally:
            if self._session is None:
                await session.close()

    def _session_timeout(self) -> aiohttp.ClientTimeout:
        """Our own session's timeouts; a configured proxy's bound the connect and each read
        of the CONNECT and upgrade exchange (after the upgrade, aiohttp reads without one)."""
        proxy = self._options.proxy
        if proxy is None:
            return aiohttp.ClientTimeout(total=None, sock_connect=30.0)
        return aiohttp.ClientTimeout(
            total=None, sock_connect=proxy.connect_timeout, sock_read=proxy.read_write_timeout
        )

    def unreachable_for(self, now: float) -> float | None:
        if self._down_since is None:
            return None
        return math.inf if self._connections == 0 else now - self._down_since

    def stats(self) -> SinkStats:
        return SinkStats(usp=UspStats(self.window, self.in_flight, self.reconnects, self.backoffs))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "usp_connect_failed",
            url=safe_url(self._url) if self._url else "(discovery)",
            error=self._scrub(f"{type(exc).__name__}: {exc}"),
            attempt=state.attempt_number,
            retry_in=round(state.upcoming_sleep, 3),
        )

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        """One connection, from dial to disconnect. Returns after a connection that got at
        least one ack; raises _Disconnected (retryable) after one that got none."""
        if self._url is None:
            api_url = self._options.api_url
            self._url = await self._through_proxy(
                discover_usp_url(
                    session, api_url, self._options.identity.oid, self._routes.for_url(api_url)
                ),
                self._routes.for_url(api_url),
            )
        url = self._url
        route = self._routes.for_url(url)
        log.info(
            "usp_connecting",
            url=safe_url(url),
            instance_id=self.instance_id,
            proxy=route.describe(),
        )
        dialing = session.ws_connect(
            url,
            heartbeat=None,  # our own pings (_keep_alive): a late pong never drops a link
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
            proxy=route.proxy,
            proxy_headers=route.headers,
            headers=route.request_headers,
        )
        async with await self._through_proxy(dialing, route) as ws:
            try:
                await self._handshake(ws)
                self._down_since = None
                self._connections += 1
                log.info(
                    "usp_connected",
                    url=safe_url(url),
                    instance_id=self.instance_id,
                    queued=len(self._pending),
                    reconnects=self.reconnects,
                )
                reason = await self._serve(ws)
            finally:
                acked = self._acked_here
                self._down_since = self._down_since or time.monotonic()
                await self._reset_connection()
        log.warning(
            "usp_disconnected",
            url=safe_url(url),
            reason=reason,
            acked_on_connection=acked,
            unacked=len(self._pending),
        )
        if acked == 0:
            raise _Disconnected(reason)

    async def _through_proxy(self, dialing: Awaitable[_T], route: Route) -> _T:
        """Awaits a dial, within a configured proxy's handshake timeout; a proxy that refuses
        our credentials (to a CONNECT, or to the request it carried) is fatal: a wrong
        password does not fix itself."""
        limit = route.options.handshake_timeout if route.options is not None else None
        try:
            async with asyncio.timeout(limit):
                return await dialing
        except aiohttp.ClientResponseError as exc:
            refused = refused_by_proxy(exc, route, "client_options.proxy.username and password")
            if refused:
                log.error("usp_proxy_refused", proxy=route.describe(), source=route.source)
                raise FatalSinkError(refused) from None
            raise

    async def _reset_connection(self) -> None:
        """After any connection ends: window back to 1, everything unacked due again."""
        async with self._changed:
            self._window = 1
            self._on_wire = 0
            self._acked_here = 0
            self._changed.notify_all()

    def _header(self) -> dict[str, Any]:
        o = self._options
        header: dict[str, Any] = {
            "version": PROTOCOL_VERSION,
            "oid": o.identity.oid,
            "iid": o.identity.installation_key.reveal(),
            "host_name": o.hostname,  # the config defaults it to this machine's name
            "platform": o.platform,
            "architecture": ARCHITECTURE,
            "sensor_seed_key": o.sensor_seed_key,
            "is_compressed": False,
            "data_format": "msgpack",
            "instance_id": self.instance_id,
        }
        if o.mapping:
            header["mapping"] = o.mapping
        if o.mappings:
            header["mappings"] = o.mappings
        if o.indexing:
            header["indexing"] = o.indexing
        return header

    async def handshake_only(self) -> HandshakeProbe:
        """`check`'s probe: one connection made as `run` makes it (URL, route, proxy, TLS),
        the connection header, LimaCharlie's `rd` or `error`, then a close. No data message
        is sent and nothing is retried: a failure before the WebSocket is raised as it came
        (aiohttp's connection errors, FatalSinkError for a proxy's 407)."""
        self._probe = probe = HandshakeProbe()
        session = self._session or aiohttp.ClientSession(timeout=self._session_timeout())
        try:
            await self._connection(session)
        except _HandshakeDone:
            pass
        except FatalSinkError as exc:
            if not probe.connected:
                raise
            probe.refused = str(exc)
        except _Disconnected as exc:
            if not probe.connected:
                raise
            probe.ended = str(exc)
        finally:
            if self._session is None:
                await session.close()
        return probe

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self._probe is not None:
            self._probe.connected = True
            self._probe.tls = _tls_of(ws)
        await ws.send_str(orjson.dumps(self._header()).decode())
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            while True:
                msg = await ws.receive()
                if msg.type not in _CONTROL_FRAMES:
                    raise _Disconnected(f"connection ended before ready ({msg.type.name})")
                control = _parse_control(msg.data)
                verb = control.get("v")
                if verb == "rd":
                    if self._probe is not None:
                        raise _HandshakeDone
                    return
                if verb == "error":
                    err = self._scrub(str(control.get("err", "")))
                    raise FatalSinkError(
                        f"LimaCharlie refused the connection for "
                        f"oid={self._options.identity.oid}: {err}"
                    )
                if await self._control(control) is not None:
                    raise _Disconnected("reconnect requested before ready")

    # -- one live connection -----------------------------------------------------------

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Reads control messages and writes data until either side ends; returns why."""
        reader = asyncio.create_task(self._read(ws))
        writer = asyncio.create_task(self._write(ws))
        pinger = asyncio.create_task(self._keep_alive(ws))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer, pinger):
                task.cancel()
            await asyncio.gather(reader, writer, pinger, return_exceptions=True)
        if reader in done:
            return reader.result()  # re-raises a bug (e.g. in on_ack)
        exc = writer.exception()
        if exc is not None and not isinstance(exc, _RETRYABLE):
            raise exc
        return f"send failed: {type(exc).__name__}: {exc}"

    async def _keep_alive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A ping every interval, as the reference client does, and never a verdict on the
        pong: on a slow uplink a ping queued behind megabytes of batches is answered late,
        and dropping that healthy connection would cost the window and re-send everything.
        A dead peer is found by the failing writes and reads themselves."""
        while True:
            await asyncio.sleep(self._ping_interval)
            await ws.ping()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive()
            if msg.type in _CONTROL_FRAMES:  # JSON in either frame type, as the reference reads
                try:
                    control = _parse_control(msg.data)
                except _Disconnected as exc:
                    return str(exc)
                reason = await self._control(control)
                if reason is not None:
                    return reason
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return f"closed by server (code {ws.close_code})"
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"connection error: {ws.exception()}"
            else:
                log.warning("usp_unexpected_frame", type=msg.type.name)

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self._on_wire < min(len(self._pending), self._window)
                )
                pause = self._backoff_until - loop.time()
                message = None if pause > 0 else self._next_message()
            if message is None:
                await asyncio.sleep(pause)  # `bo`: the cloud asked for silence, not an event
                continue
            await ws.send_bytes(_encoder.encode(message))

    def _next_message(self) -> _DataMessage:
        """The next pending batch for this connection (caller holds the lock)."""
        entry = self._pending[self._on_wire]
        self._on_wire += 1
        ask = (
            entry.seq % max(1, self._window // 2) == 0
            or self._on_wire >= self._window
            or self._on_wire == len(self._pending)
        )
        return _DataMessage(x=entry.seq, p=entry.batch.payload, s=entry.timestamp_ms, a=ask)

    async def _control(self, control: dict[str, Any]) -> str | None:
        """Applies one control message; returns a reason when the connection must end."""
        verb = control.get("v")
        if verb == "ack":
            await self._acknowledge(_int(control.get("x")))
        elif verb == "fl":
            async with self._changed:
                window = max(1, _int(control.get("win")))
                log.debug("usp_window", old=self._window, new=window)
                self._window = window
                self._changed.notify_all()
        elif verb == "bo":
            seconds = max(0.0, _float(control.get("dur")))
            self._backoffs += 1
            log.warning("usp_backoff", seconds=seconds)
            async with self._changed:
                until = asyncio.get_running_loop().time() + seconds
                self._backoff_until = max(self._backoff_until, until)
        elif verb == "re":
            log.info("usp_reconnect_requested", url=safe_url(self._url or ""))
            return "reconnect requested"
        elif verb == "error":
            log.error("usp_server_error", error=self._scrub(str(control.get("err", ""))))
        elif verb != "rd":
            log.warning("usp_unknown_control", verb=str(verb))
        return None

    async def _acknowledge(self, seq: int) -> None:
        """Cumulative: every batch written on this connection and numbered <= seq is done.
        An ack for a number not written on this connection is ignored with a warning, as
        the reference client does: it must never commit a batch LimaCharlie did not get.
        Callbacks run under the lock, without an await between pop and call, so a cancel
        cannot skip or repeat one."""
        async with self._changed:
            written = self._pending[self._on_wire - 1].seq if self._on_wire else None
            if written is None or seq > written:
                log.warning("usp_ack_unknown", x=seq, last_written=written)
                return
            acked = 0
            try:
                while self._pending and self._pending[0].seq <= seq:
                    entry = self._pending.popleft()
                    acked += 1
                    self._on_ack(entry.batch)
            finally:
                if acked:
                    self._on_wire = max(0, self._on_wire - acked)
                    self._acked_here += acked
                    self._changed.notify_all()

    def _scrub(self, text: str) -> str:
        """Server and library messages may echo what we sent; the key never goes further."""
        key = self._options.identity.installation_key.reveal()
        return text.replace(key, "***") if key else text


_CONTROL_FRAMES = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)


def _parse_control(data: str | bytes) -> dict[str, Any]:
    try:
        control = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _Disconnected("control message is not JSON") from None
    if not isinstance(control, dict):
        raise _Disconnected("control message is not a JSON object")
    return control


def _tls_of(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The TLS version and cipher of a connection, None when it is plain."""
    tls = ws.get_extra_info("ssl_object")
    if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
        return None
    cipher = tls.cipher()
    return f"{tls.version()} {cipher[0]}" if cipher else str(tls.version())


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
