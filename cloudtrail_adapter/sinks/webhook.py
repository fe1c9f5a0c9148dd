"""LimaCharlie's webhook transport: each Batch is one gzip NDJSON POST; a 2xx acknowledges it.

- Up to `max_in_flight` batches are unacknowledged at once; `send` waits for room, which is the
  backpressure the pipeline relies on. The window counts batches until they are *acked*, not
  until their POST returns, so a batch stuck in retries cannot let held-back acks pile up.
- Acks are released strictly in `send` order: a batch answered 2xx waits for every earlier
  batch, so the tracker sees the same order whatever the network did.
- 429, 5xx, 408, timeouts and connection errors are retried forever with exponential backoff
  and jitter, never sooner than `Retry-After`. Any other answer means the configuration is
  wrong (secret, OID, hook name, size): retrying cannot help, so `run` raises FatalSinkError.
- Redirects are not followed: aiohttp would replay the `lc-secret` header to the new host.

Content-Type: LimaCharlie documents the body formats a hook accepts (one JSON object, an
array, or newline-delimited JSON, optionally gzip) and detects which one from the body; it
names no Content-Type. We send `application/x-ndjson`, which says truthfully what the body is,
and `Content-Encoding: gzip`.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
)

from cloudtrail_adapter.config import WebhookOptions
from cloudtrail_adapter.errors import Backoff, FatalSinkError
from cloudtrail_adapter.model import AckCallback, Batch, SinkStats, WebhookStats
from cloudtrail_adapter.sinks.proxies import Routes, proxy_refused, refused_by_proxy

log = structlog.get_logger("cloudtrail_adapter.sinks.webhook")

CONTENT_TYPE = "application/x-ndjson"
USER_AGENT = "cloudtrail-adapter"
_RETRYABLE_4XX = frozenset({408, 425, 429})
PROXY_KEYS = "webhook.proxy.username and password"
_ERROR_SNIPPET = 200

_MEANINGS = {
    400: "the hook could not parse the body; this is a bug in the adapter, please report it",
    401: "the webhook secret was refused; check the hook's secret",
    403: "the webhook secret was refused; check the hook's secret",
    404: "no such webhook; check the OID and hook name in the URL, and that the hook exists",
    405: "the URL does not accept POST; is it a LimaCharlie webhook URL?",
    413: "a batch is larger than the hook accepts; lower batch_max_bytes",
    415: "the hook refused the body's type or encoding",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts of one batch (errors.Backoff): `initial * 2**n`, at most
    `maximum`, plus up to `jitter` times that; a server's Retry-After wins when longer,
    capped at `retry_after_cap` so that a bogus date cannot park a batch for days."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5
    retry_after_cap: float = 600.0


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """The hook's answer to `WebhookSink.probe`: its status and the start of its body."""

    status: int
    said: str


class _Retryable(Exception):
    """One attempt failed in a way that retrying can fix."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(eq=False, slots=True)
class _Entry:
    batch: Batch
    accepted: bool = False


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` (delay-seconds or HTTP-date); None if absent
    or unreadable. A date in the past means "now"."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class WebhookSink:
    """Implements `model.Sink` over a LimaCharlie webhook (see the module docstring)."""

    def __init__(
        self,
        options: WebhookOptions,
        on_ack: AckCallback,
        *,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        routes: Routes | None = None,
    ) -> None:
        self._options = options
        self._route = (routes or Routes(options.proxy, {})).for_url(options.url)
        self._on_ack = on_ack
        self._session = session
        self._owns_session = session is None
        self._retry = retry or RetryPolicy()
        self._backoff = Backoff(
            self._retry.initial, self._retry.maximum, self._retry.jitter
        ).tenacity_wait()
        self._window = max(1, options.max_in_flight)
        self._timeout = aiohttp.ClientTimeout(total=options.timeout)
        self._url = options.url
        self._safe_url = self._redact(options.url)
        self._unacked: deque[_Entry] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Condition()
        self._stopped = asyncio.Event()
        self._closed = False
        self._failure: BaseException | None = None
        self._max_seen = 0
        self._retries = 0
        self._down_since: float | None = None  # since the first failure of the current POSTs
        self._acked = 0

    def __repr__(self) -> str:
        return (
            f"WebhookSink(url={self._safe_url!r}, max_in_flight={self._window}, "
            f"in_flight={len(self._unacked)}, acked={self._acked})"
        )

    def stats(self) -> SinkStats:
        """`in_flight` counts batches sent but not yet acknowledged."""
        counts = WebhookStats(len(self._unacked), self._max_seen, self._retries, self._acked)
        return SinkStats(webhook=counts)

    async def run(self) -> None:
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    async def send(self, batch: Batch) -> None:
        """Waits for room in the window, then starts delivering `batch` and returns.

        After `close` the batch is dropped unsent (and so never acked). After the sink failed
        this raises too, so a sender cannot wait forever on a sink nobody runs: a
        FatalSinkError with the message `run` raises, or RuntimeError after an internal error.
        """
        async with self._room:
            await self._room.wait_for(
                lambda: len(self._unacked) < self._window or self._stopped.is_set()
            )
        if isinstance(self._failure, FatalSinkError):
            raise FatalSinkError(str(self._failure))
        if self._failure is not None:
            raise RuntimeError("the webhook sink failed; see run()") from self._failure
        if self._closed:
            return
        entry = _Entry(batch)
        self._unacked.append(entry)
        self._max_seen = max(self._max_seen, len(self._unacked))
        task = asyncio.create_task(self._deliver(entry), name="webhook-post")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stops at once: POSTs in progress are cancelled and their batches never acked."""
        if not self._closed:
            self._closed = True
            abandoned = len(self._unacked)
            self._stopped.set()
            await self._cancel_tasks()
            async with self._room:
                self._room.notify_all()
            log.info("webhook_closed", url=self._safe_url, abandoned=abandoned, acked=self._acked)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, entry: _Entry) -> None:
        try:
            attempts = await self._post_until_accepted(entry.batch)
            entry.accepted = True
            self._down_since = None
            if attempts > 1:
                log.info("webhook_recovered", url=self._safe_url, attempts=attempts)
            self._release_acks()
        except FatalSinkError as exc:
            await self._fail(exc)
            return
        except Exception as exc:  # a bug (e.g. in on_ack) must stop the sink, not vanish
            log.exception("webhook_sink_failed", url=self._safe_url)
            await self._fail(exc)
            return
        async with self._room:
            self._room.notify_all()

    def _release_acks(self) -> None:
        while self._unacked and self._unacked[0].accepted:
            entry = self._unacked.popleft()
            self._acked += 1
            self._on_ack(entry.batch)

    async def _fail(self, exc: BaseException) -> None:
        if self._failure is None and not self._closed:
            self._failure = exc
            self._stopped.set()
            async with self._room:
                self._room.notify_all()
            await self._cancel_tasks()

    async def _post_until_accepted(self, batch: Batch) -> int:
        """Returns how many attempts it took; raises FatalSinkError on a refusal."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=self._wait,
            stop=stop_never,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        attempts = 0
        async for attempt in retrying:
            attempts = attempt.retry_state.attempt_number
            with attempt:
                await self._post_once(batch)
        return attempts

    def _wait(self, state: RetryCallState) -> float:
        delay = self._backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._retry.retry_after_cap))
        return delay

    def unreachable_for(self, now: float) -> float | None:
        return None if self._down_since is None else now - self._down_since

    def _before_sleep(self, state: RetryCallState) -> None:
        self._retries += 1
        self._down_since = self._down_since or time.monotonic()
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = exc.reason if isinstance(exc, _Retryable) else repr(exc)
        log.warning(
            "webhook_retry",
            url=self._safe_url,
            attempt=state.attempt_number,
            status=exc.status if isinstance(exc, _Retryable) else None,
            reason=reason,
            retry_in=round(state.upcoming_sleep, 3),
        )

    async def _post_once(self, batch: Batch) -> None:
        try:
            status, body, retry_after = await self._exchange(batch)
        except aiohttp.InvalidURL as exc:
            raise FatalSinkError(f"webhook URL {self._safe_url} is not a valid URL") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused = refused_by_proxy(exc, self._route, PROXY_KEYS)
            if refused:
                log.error("webhook_proxy_refused", proxy=self._route.describe())
                raise FatalSinkError(refused) from None
            raise _Retryable(self._describe(exc)) from exc
        if 200 <= status < 300:
            log.debug("webhook_accepted", url=self._safe_url, records=batch.records)
            return
        refused = proxy_refused(status, self._route, PROXY_KEYS)  # an http:// hook's proxy
        if refused:
            log.error("webhook_proxy_refused", proxy=self._route.describe())
            raise FatalSinkError(refused)
        self._refused(status, body, retry_after)

    async def probe(self) -> ProbeAnswer:
        """`check`'s probe: one POST made as a batch's is (URL, route, proxy, secret header)
        of an empty gzip body, which holds no event: the hook answers it as a batch (404 no
        such hook, 401 the secret) and records nothing. Errors are raised, not retried."""
        empty = Batch(payload=gzip.compress(b""), records=0, raw_bytes=0)
        status, body, _ = await self._exchange(empty)
        return ProbeAnswer(status, self._redact(" ".join(body.split())))

    async def _exchange(self, batch: Batch) -> tuple[int, str, str | None]:
        """One POST: the status, the start of an error body, and any Retry-After."""
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Content-Encoding": "gzip",
            "User-Agent": USER_AGENT,
        }
        if self._options.secret:
            headers["lc-secret"] = self._options.secret.reveal()
        headers |= self._route.request_headers
        async with self._http().post(
            self._url,
            data=batch.payload,
            headers=headers,
            timeout=self._timeout,
            allow_redirects=False,
            proxy=self._route.proxy,
            proxy_headers=self._route.headers,
        ) as resp:
            if 200 <= resp.status < 300:
                await resp.read()  # lets the connection be reused
                return resp.status, "", None
            body = await resp.content.read(_ERROR_SNIPPET)
            return resp.status, body.decode("utf-8", "replace"), resp.headers.get("Retry-After")

    def _refused(self, status: int, body: str, retry_after: str | None) -> None:
        """Raises _Retryable or FatalSinkError for a non-2xx answer."""
        if status >= 500 or status in _RETRYABLE_4XX:
            raise _Retryable(f"HTTP {status}", status, parse_retry_after(retry_after))
        if 300 <= status < 400:
            meaning = (
                "the webhook URL redirects elsewhere; it is not followed so that the secret "
                "is not sent to another address: configure the final URL"
            )
        else:
            meaning = _MEANINGS.get(status, "LimaCharlie refused the batch; retrying cannot help")
        message = f"webhook {self._safe_url} answered HTTP {status}: {meaning}"
        said = " ".join(body.split())
        if said:
            message += f" (server said: {said})"
        message = self._redact(message)
        log.error("webhook_rejected", url=self._safe_url, status=status, meaning=meaning)
        raise FatalSinkError(message)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self._options.timeout:g}s"
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _redact(self, text: str) -> str:
        secret = self._options.secret.reveal()
        return text.replace(secret, "***") if secret else text


__all__ = ["ProbeAnswer", "RetryPolicy", "WebhookSink", "parse_retry_after"]
