"""How many requests of one kind a bucket gets at once, lowered when S3 throttles us.

AWS asks a client answered `503 SlowDown` to back off and lower its request rate; botocore
only does the first (it retries the request after a pause). An `AimdLimiter` does the
second: each 503 halves the requests allowed at once (not below 1), each success adds one
back (up to the configured ceiling): additive increase, multiplicative decrease. One 503
halves once: the requests already under way when the limit fell, and throttled for the
same reason, do not halve it again. Every change is said in a log line
(`s3_concurrency_changed`); the current limit and the throttles counted are metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("cloudtrail_adapter.limiter")


@dataclass(slots=True)
class _Slot:
    """The slot the running task holds: its limiter and the limiter's generation when it
    was taken, so that a 503 seen by botocore's retry handler (in the same task) is put
    down to the right limiter, once; a slot throttled on the way is no success."""

    limiter: AimdLimiter
    generation: int
    throttled: bool = False


_HELD: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("aimd_slot", default=None)
#: HTTP statuses and AWS codes that mean "slow down".
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled"})


class AimdLimiter:
    """At most `limit` slots held at once; `limit` starts at, and never passes, `ceiling`."""

    def __init__(self, bucket: str, what: str, ceiling: int) -> None:
        self.bucket = bucket
        self.what = what  # "fetch" or "list", for the log line
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.throttled = 0
        self._held = 0
        self._generation = 0  # moves on every decrease
        self._room = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Held around one request (and the reading of its body): a success if it returns,
        whatever the throttles botocore retried on the way."""
        async with self._room:
            await self._room.wait_for(lambda: self._held < self.limit)
            self._held += 1
        held = _Slot(self, self._generation)
        token = _HELD.set(held)
        ok = False
        try:
            yield
            ok = not held.throttled
        finally:
            _HELD.reset(token)
            async with self._room:
                self._held -= 1
                if ok and self.limit < self.ceiling:
                    self._change(self.limit + 1, "recovering")
                self._room.notify_all()

    def throttle(self, held: _Slot) -> None:
        """The request of `held` was answered 503."""
        self.throttled += 1
        held.throttled = True
        if held.generation == self._generation and self.limit > 1:
            self._generation += 1
            self._change(max(1, self.limit // 2), "throttled")

    def _change(self, limit: int, why: str) -> None:
        log.warning(
            "s3_concurrency_changed",
            bucket=self.bucket,
            requests=self.what,
            old=self.limit,
            new=limit,
            ceiling=self.ceiling,
            why=why,
        )
        self.limit = limit


def watch_throttles(s3: Any) -> None:
    """Has the S3 client tell the limiter of the slot in hand about every 503 botocore is
    about to retry (or give up on): through botocore's own retry event."""
    s3.meta.events.register("needs-retry.s3", _on_answer)


def _on_answer(response: Any = None, **_: Any) -> None:
    held = _HELD.get()
    if held is None or not response:
        return
    http, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code")
    if getattr(http, "status_code", None) == 503 or code in _THROTTLE_CODES:
        held.limiter.throttle(held)
