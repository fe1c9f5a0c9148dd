"""A reverse proxy on 127.0.0.1 in front of the stand-in that fails requests the way real S3
and SQS do under load: 503 SlowDown, 500 InternalError, a GetObject body cut at half with
the headers still promising the full length, a throttled ListObjectsV2, and SQS
ReceiveMessage and DeleteMessageBatch 500s.

A client reaches it as its `endpoint_url` (`proxy.url`); it runs in its own thread and
forwards what it lets through to `upstream` as it came (moto does not check signatures).
Faults are counted per object (GetObject and HeadObject of one key) or per call (a listing,
an SQS action), so a rule reads "each chosen object's first two tries": `FaultPlan` says
which; `FaultProxy.injected` records every fault it answered, for a test to show they
happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp

#: The headers not passed on as they came: the proxy frames each response itself.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

SLOW_DOWN = (
    503,
    "SlowDown",
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
)
INTERNAL = (
    500,
    "InternalError",
    b"<Error><Code>InternalError</Code><Message>We encountered an internal error. "
    b"Please try again.</Message></Error>",
)


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail, and how. Objects are numbered 1, 2, ... in the order their key
    is first asked for; a rule `every: n` hits the objects whose number n divides, for
    their first `tries` GetObject requests (HeadObject included). Listings and SQS calls
    are numbered by call; `every` of them fail (once each: the retry is another call).
    0 turns a rule off."""

    slow_down_every: int = 0  # objects answered 503 SlowDown
    internal_every: int = 0  # objects answered 500 InternalError
    cut_every: int = 0  # objects whose body is cut at half, Content-Length promising all
    tries: int = 2
    only_first: int = 0  # when set, only objects numbered up to this fail
    #: When set, every GetObject and HeadObject is refused (403) with this AWS code:
    #: ExpiredToken, InvalidAccessKeyId, SignatureDoesNotMatch or RequestTimeTooSkewed
    #: (as from an AWS whose clock is `server_clock_ahead` seconds ahead of ours).
    refuse_objects: str = ""
    server_clock_ahead: float = 3600.0
    list_slow_down_every: int = 0  # ListObjectsV2 calls answered 503 SlowDown
    list_cut_every: int = 0  # ListObjectsV2 calls whose page is cut at half
    receive_internal_every: int = 0  # SQS ReceiveMessage calls answered 500
    delete_internal_every: int = 0  # SQS DeleteMessageBatch calls answered 500
    #: Action (an SQS action, or GetObject) -> seconds every answer to it is held back:
    #: a slow network.
    delays: dict[str, float] = field(default_factory=dict)
    #: ListObjectsV2 calls, per bucket, answered 503 SlowDown whatever their number: the
    #: next this many (a throttled bucket; counted down as they are answered).
    throttle_lists: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Injected:
    kind: str  # slow_down, internal, cut, list_slow_down, list_cut, receive_internal, ...
    target: str  # the object's key, or the call's action


@dataclass(frozen=True)
class Call:
    """A request as it reached the proxy: its action, when (time.monotonic), and whether
    its answer carried anything (SQS messages, for a ReceiveMessage)."""

    action: str
    at: float
    carried: bool


@dataclass
class FaultProxy:
    """`with FaultProxy(endpoint, plan) as proxy:` serves at `proxy.url`."""

    upstream: str
    plan: FaultPlan = field(default_factory=FaultPlan)
    injected: list[Injected] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _objects: dict[str, int] = field(default_factory=dict)  # key -> its number
    _tries: Counter[str] = field(default_factory=Counter)  # key -> GET/HEAD requests seen
    _calls: Counter[str] = field(default_factory=Counter)  # action -> calls seen
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kinds(self) -> Counter[str]:
        return Counter(i.kind for i in list(self.injected))

    def __enter__(self) -> FaultProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = server = self._loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the fault proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None

        async def stop() -> None:  # closed: a client still pointed here is refused at once
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            try:
                while await self._one(reader, writer, http):
                    pass
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        http: aiohttp.ClientSession,
    ) -> bool:
        """One request on a kept-alive connection; False once the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in lines if h)]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        body = await reader.readexactly(length) if length else b""
        arrived = time.monotonic()
        lowered = {k.lower(): v for k, v in headers}
        action = _action(method, target, lowered)
        fault = self._fault(method, target, lowered)
        if fault == "refused":
            _write(writer, 403, "Forbidden", [("Content-Type", "application/xml")], self._refusal())
            await writer.drain()
            return True
        if fault is not None and fault != "cut":
            status, code, text = SLOW_DOWN if fault.endswith("slow_down") else INTERNAL
            kind = "application/xml"
            if fault.startswith(("receive", "delete")):
                kind = "application/x-amz-json-1.0"
                text = b'{"__type":"InternalError","message":"We encountered an internal error."}'
            text = b"" if method == "HEAD" else text
            _write(writer, status, code, [("Content-Type", kind)], text)
            await writer.drain()
            return True
        sent = [(k, v) for k, v in headers if k.lower() not in ("host", *_FRAMING)]
        async with http.request(
            method, self.upstream + target, headers=sent, data=body or None
        ) as answer:
            data = await answer.read()
            kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _FRAMING]
            reason = answer.reason or ""
            promised = answer.content_length if method == "HEAD" else None
        self.calls.append(Call(action, arrived, b'"Messages"' in data))
        await asyncio.sleep(self.plan.delays.get(action, 0.0))
        if fault == "cut" and len(data) > 1:
            _write(writer, answer.status, reason, kept, data[: len(data) // 2], len(data))
            await writer.drain()
            return False  # the connection resets halfway through the body
        _write(writer, answer.status, reason, kept, data, promised)
        await writer.drain()
        return True

    def _fault(self, method: str, target: str, headers: dict[str, str]) -> str | None:
        parts = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        action = headers.get("x-amz-target", "").rpartition(".")[2]
        plan = self.plan
        with self._lock:
            if action:
                return self._by_call(action)
            path = parts.path.strip("/")
            bucket, _, key = path.partition("/")
            if method == "GET" and not key and query.get("list-type") == "2":
                left = plan.throttle_lists.get(bucket, 0)
                if left > 0:
                    plan.throttle_lists[bucket] = left - 1
                    return self._record("list_slow_down", bucket)
                return self._by_call("ListObjectsV2")
            if method in ("GET", "HEAD") and key:
                return self._by_object(key, method)
        return None

    def _by_call(self, action: str) -> str | None:
        self._calls[action] += 1
        number = self._calls[action]
        rules = {
            "ListObjectsV2": ("list_slow_down", self.plan.list_slow_down_every),
            "ReceiveMessage": ("receive_internal", self.plan.receive_internal_every),
            "DeleteMessageBatch": ("delete_internal", self.plan.delete_internal_every),
        }
        kind, every = rules.get(action, ("", 0))
        if every and number % every == 0:
            return self._record(kind, action)
        cut = self.plan.list_cut_every if action == "ListObjectsV2" else 0
        if cut and number % cut == 0:
            self._record("list_cut", action)
            return "cut"
        return None

    def _refusal(self) -> bytes:
        code = self.plan.refuse_objects
        now = datetime.now(UTC)
        server = (now + timedelta(seconds=self.plan.server_clock_ahead)).isoformat()
        extra = (
            f"<RequestTime>{now:%Y%m%dT%H%M%SZ}</RequestTime><ServerTime>{server}</ServerTime>"
            if code == "RequestTimeTooSkewed"
            else ""
        )
        return f"<Error><Code>{code}</Code><Message>refused</Message>{extra}</Error>".encode()

    def _by_object(self, key: str, method: str) -> str | None:
        if self.plan.refuse_objects:
            return self._record("refused", key)
        number = self._objects.setdefault(key, len(self._objects) + 1)
        self._tries[key] += 1
        if self._tries[key] > self.plan.tries or 0 < self.plan.only_first < number:
            return None
        plan = self.plan
        for kind, every in (
            ("slow_down", plan.slow_down_every),
            ("internal", plan.internal_every),
            ("cut", plan.cut_every if method == "GET" else 0),
        ):
            if every and number % every == 0:
                return self._record(kind, key)
        return None

    def _record(self, kind: str, target: str) -> str:
        self.injected.append(Injected(kind, target))
        return kind


def _action(method: str, target: str, headers: dict[str, str]) -> str:
    """The request's AWS action, as far as the proxy tells them apart."""
    named = headers.get("x-amz-target", "").rpartition(".")[2]
    if named:
        return named
    parts = urllib.parse.urlsplit(target)
    key = parts.path.strip("/").partition("/")[2]
    if not key:
        return "ListObjectsV2" if "list-type=2" in parts.query else f"{method} bucket"
    return {"GET": "GetObject", "HEAD": "HeadObject"}.get(method, f"{method} object")


def _write(
    writer: asyncio.StreamWriter,
    status: int,
    reason: str,
    headers: list[tuple[str, str]],
    body: bytes,
    promised: int | None = None,
) -> None:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    lines.append(f"Content-Length: {len(body) if promised is None else promised}")
    writer.write(("\r\n".join([*lines, "", ""])).encode("latin-1") + body)
