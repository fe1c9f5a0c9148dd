"""The emulator's webhook endpoint: LimaCharlie's hook ingestion, strict, with fault knobs.

A hook is `(oid, hook name)` with a secret given by `register`. Its secret may come as the
last path segment or in an `lc-secret` header, as LimaCharlie documents. The body is one JSON
object, a JSON array of objects, or newline-delimited objects, gzip-compressed or not (by
`Content-Encoding` or by magic bytes). Events are recorded in the store only when the answer
is 2xx, each as one compact JSON line, under sensor `<oid>/<hook>`.

Status codes: 404 unknown hook, 401 missing or wrong secret, 400 unreadable body (the message
names the line), 413 body over `max_body_bytes`. LimaCharlie documents none of these; they are
the plain-HTTP reading a sender must handle.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from isal import igzip

from cloudtrail_adapter.emulator.store import EventStore, Observer

_GZIP_MAGIC = b"\x1f\x8b"
_gunzip: Callable[[bytes], bytes] = igzip.decompress  # isal's function is untyped


@dataclass
class WebhookFaults:
    """Knobs a test turns; read on every request.

    `statuses` are popped one per request before normal handling: an error status is answered
    as is (with `Retry-After: retry_after` on 429 and 503 when set) and nothing is recorded; a
    2xx entry means "handle this request normally". `delay` is slept before answering any
    request; `max_body_bytes` bounds the body as sent (compressed), answered 413 above it.
    """

    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    delay: float = 0.0
    max_body_bytes: int | None = None


class BadBody(ValueError):
    """The body is not what a LimaCharlie hook accepts; the message says where."""


class WebhookEndpoint:
    """Serves `POST /{oid}/{hook}` and `POST /{oid}/{hook}/{secret}` (routed by server.py).

    Counters: `requests` received, `accepted` (answered 2xx), `rejected` (by status),
    `auth_via` (how the accepted secret travelled: "header" or "path"), and `max_concurrent`
    requests being handled at once.
    """

    def __init__(
        self, store: EventStore, faults: WebhookFaults, observer: Observer | None = None
    ) -> None:
        self.store = store
        self.faults = faults
        self._observer = observer
        self.requests = 0
        self.accepted = 0
        self.rejected: Counter[int] = Counter()
        self.auth_via: Counter[str] = Counter()
        self.active = 0
        self.max_concurrent = 0
        self._hooks: dict[tuple[str, str], str] = {}
        self._arrived = asyncio.Condition()

    def register(self, oid: str, hook: str, secret: str) -> None:
        self._hooks[(oid, hook)] = secret

    async def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least `count` requests arrived (answered or not)."""

        async def reached() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: self.requests >= count)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"webhook received {self.requests} requests, expected {count}"
            ) from None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.active += 1
        self.max_concurrent = max(self.max_concurrent, self.active)
        async with self._arrived:
            self._arrived.notify_all()
        try:
            if self.faults.delay > 0:
                await asyncio.sleep(self.faults.delay)
            response = await self._answer(request)
        finally:
            self.active -= 1
        if 200 <= response.status < 300:
            self.accepted += 1
        else:
            self.rejected[response.status] += 1
            if self._observer is not None:
                hook = f"{request.match_info['oid']}/{request.match_info['hook']}"
                fields = {"hook": hook, "status": response.status, "reason": _reason(response)}
                self._observer("webhook_rejected", fields)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        injected = self.faults.statuses.pop(0) if self.faults.statuses else None
        if injected is not None and not 200 <= injected < 300:
            return self._injected(injected)
        oid, hook = request.match_info["oid"], request.match_info["hook"]
        expected = self._hooks.get((oid, hook))
        if expected is None:
            return _error(404, f"no webhook {hook!r} in organization {oid!r}")
        via, given = self._given_secret(request)
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(401, "missing or wrong webhook secret")
        try:
            raw = await request.read()  # aiohttp already undid Content-Encoding: gzip
        except RequestPayloadError:
            return _error(400, "body does not decode as its Content-Encoding says")
        limit = self.faults.max_body_bytes
        sent = request.content_length if request.content_length is not None else len(raw)
        if limit is not None and sent > limit:
            return _error(413, f"body of {sent} bytes is over the limit of {limit}")
        try:
            lines = parse_body(raw)
        except BadBody as exc:
            return _error(400, str(exc))
        await self.store.add("webhook", f"{oid}/{hook}", lines)
        self.auth_via[via] += 1
        return web.json_response({"success": True, "events": len(lines)})

    def _injected(self, status: int) -> web.Response:
        headers = {}
        if status in (429, 503) and self.faults.retry_after is not None:
            headers["Retry-After"] = self.faults.retry_after
        return web.json_response({"error": "injected fault"}, status=status, headers=headers)

    @staticmethod
    def _given_secret(request: web.Request) -> tuple[str, str | None]:
        in_path = request.match_info.get("secret")
        if in_path is not None:
            return "path", in_path
        return "header", request.headers.get("lc-secret")


def parse_body(raw: bytes) -> list[bytes]:
    """Body -> one compact JSON line per event; BadBody names what and where is wrong."""
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = _gunzip(raw)
        except (OSError, EOFError, ValueError) as exc:
            raise BadBody(f"body looks like gzip but does not decompress: {exc}") from None
    text = raw.strip()
    if not text:
        raise BadBody("body has no events")
    try:
        whole: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return [_compact(_parse_line(line, n)) for n, line in _numbered_lines(text)]
    if isinstance(whole, list):
        for n, item in enumerate(whole, 1):
            if not isinstance(item, dict):
                raise BadBody(f"array element {n} is not a JSON object")
        return [_compact(item) for item in whole]
    if isinstance(whole, dict):
        return [_compact(whole)]
    raise BadBody("body is JSON but neither an object nor an array of objects")


def _numbered_lines(text: bytes) -> list[tuple[int, bytes]]:
    return [(n, line) for n, line in enumerate(text.split(b"\n"), 1) if line.strip()]


def _parse_line(line: bytes, number: int) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"line {number} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadBody(f"line {number} is not a JSON object")
    return value


def _compact(event: Any) -> bytes:
    return orjson.dumps(event)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _reason(response: web.Response) -> str:
    """The `error` of one of our answers (never the request's path: it may hold the secret)."""
    body = response.body
    if isinstance(body, bytes):
        answer = orjson.loads(body)
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            return str(answer["error"])
    return f"HTTP {response.status}"
