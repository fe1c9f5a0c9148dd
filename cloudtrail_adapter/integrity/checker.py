"""The integrity check beside one S3 source. Shipping never waits for it.

- Listing: every digest key the source lists that was not checked yet is fetched and
  checked in the background (at most `PARALLEL` at once): format, where it was written,
  signature (the region's public key from `ListPublicKeys`); the files it names are checked
  at once if they were shipped, else expected.
- Shipping: when the source commits a log file, the SHA-256 a worker process took of its
  uncompressed content (while decoding it for shipping: no second read) is checked against
  the digest that named it, or kept until one does.
- Settling, after each listing pass (and once more when a single-load run is done): each
  chain link, oldest first; expected files whose time is up (`missing` only after the
  bucket says so: a HeadObject, the one request this adds, and only then); shipped files
  no digest named (`unlisted`).
- Reporting: every verdict is counted; every one that is not valid is logged
  (`integrity_violation`) and, with `report: limacharlie`, queued as an event (in the
  integrity database until LimaCharlie acknowledged it) that the source ships like a file.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol, get_args

import orjson
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from cloudtrail_adapter.aio import gather_limited
from cloudtrail_adapter.decoding.values import DecodeReason
from cloudtrail_adapter.errors import aws_error_code, failure_reason
from cloudtrail_adapter.integrity.digests import (
    MAX_DIGEST_BYTES,
    SIGNATURE_ALGORITHM,
    DigestFormatError,
    DigestName,
    digest_name,
    location_problem,
    open_digest,
    parse_time,
    signing_string,
    verify_signature,
)
from cloudtrail_adapter.integrity.judging import HOUR
from cloudtrail_adapter.integrity.keys import PublicKeys
from cloudtrail_adapter.integrity.ledger import Found, Ledger
from cloudtrail_adapter.integrity.verdicts import IntegrityStats
from cloudtrail_adapter.model import WorkItem
from cloudtrail_adapter.readers import BytesReader, owner_header
from cloudtrail_adapter.sources.trail_layout import is_digest_key

if TYPE_CHECKING:
    from cloudtrail_adapter.config import IntegrityOptions
    from cloudtrail_adapter.sources.polling import Listed

__all__ = ["IntegrityChecker", "Presence"]

log = structlog.get_logger("cloudtrail_adapter.integrity")

PARALLEL: Final = 8  # digests fetched at once, and HeadObject questions asked at once
#: Files waiting for their digest, at most (about 200 bytes each on disk).
MAX_FILES: Final = 1_000_000
EVENTS_PER_ITEM: Final = 500
#: How long a file judged is remembered, so that it is never judged twice (a retried
#: decoding failure, a file read again after a restart before its checkpoint).
TOMBSTONE: Final = 86400.0
EXAMPLES: Final = 5
_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})
#: Decoding failures: the object is not what CloudTrail writes, so not what it hashed (a
#: record too large to hold is CloudTrail's own, only large).
_UNREADABLE: Final = frozenset(get_args(DecodeReason)) - {"record_too_large"}


class Presence(Protocol):
    """What the source knows of a log file the digests name and that was not shipped."""

    def in_work(self, key: str) -> bool: ...

    def committed(self, keys: list[str]) -> set[str]: ...

    def failing(self) -> tuple[set[str], set[str]]:
        """(keys being retried, keys quarantined)"""
        ...

    def will_list(self, key: str) -> bool:
        """Whether a later pass lists its folder (and so would ship it)."""
        ...

    def oldest_in_work(self) -> float | None:
        """The delivery time (by name) of the oldest object in work, if any."""
        ...


class IntegrityChecker:
    def __init__(
        self,
        source: str,
        options: IntegrityOptions,
        *,
        bucket: str,
        s3: Any,
        keys: PublicKeys,
        ledger: Ledger,
        retention: float,
        max_files: int = MAX_FILES,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        """`owner`: the account every read expects to own the bucket, as the source's do."""
        self.source = source
        self.stats = IntegrityStats()
        self._options = options
        self._bucket = bucket
        self._s3 = s3
        self._owner = owner_header(owner)
        self._keys = keys
        self._ledger = ledger
        self._retention = retention
        self._max_files = max_files
        self._clock = clock
        self._waiting: collections.deque[tuple[str, DigestName, int]] = collections.deque()
        self._fetchers: set[asyncio.Task[None]] = set()
        self._queued: set[str] = set()  # waiting or being checked
        self._done = asyncio.Event()  # set while nothing is queued
        self._done.set()
        self._unread: dict[str, tuple[str, str]] = {}  # digest key -> (account, region)
        self._unread_why: Counter[str] = Counter()
        self._gone: set[str] = set()  # log files a GET found missing
        self._sending: set[int] = set()  # outbox ids in flight to LimaCharlie
        self._since = Found()  # reported since the last settle, for its log line
        self.stats.files_waiting = ledger.waiting_files()
        self.stats.events_queued = ledger.outbox.waiting()

    # -------------------------------------------------------------------------------------
    # From the source

    def listed(self, page: Sequence[Listed]) -> None:
        """A page of the listing: digests not checked yet are queued, and checked in the
        background by at most PARALLEL fetchers (asyncio tasks; a queue of keys: a backfill
        of years of digests costs their names in memory, not a task each)."""
        names = {
            item.key: (name, item.size)
            for item in page
            if is_digest_key(item.key)
            and item.key not in self._queued
            and (name := digest_name(item.key)) is not None
        }
        if not names:
            return
        known = self._ledger.known(list(names))
        for key, (name, size) in names.items():
            if key not in known:
                self._queued.add(key)
                self._waiting.append((key, name, size))
        if self._waiting:
            self._done.clear()
        while self._waiting and sum(not w.done() for w in self._fetchers) < PARALLEL:
            fetcher = asyncio.create_task(self._work())
            self._fetchers.add(fetcher)
            fetcher.add_done_callback(self._fetchers.discard)

    def shipped(self, key: str, sha256: str) -> None:
        """A log file was committed; `sha256` of its uncompressed content."""
        self._report(self._ledger.shipped(key, sha256))

    def failed(self, key: str, reason: str) -> None:
        """A log file could not be shipped this time."""
        if reason in _UNREADABLE:
            self._report(self._ledger.shipped(key, None, reason))
        elif reason in _NOT_FOUND:
            self._gone.add(key)

    async def drained(self) -> None:
        """Returns once every digest listed so far was checked (or could not be read)."""
        await self._done.wait()

    async def close(self) -> None:
        for fetcher in list(self._fetchers):
            fetcher.cancel()
        await asyncio.gather(*list(self._fetchers), return_exceptions=True)

    # -------------------------------------------------------------------------------------
    # One digest

    async def _work(self) -> None:
        while self._waiting:
            key, name, size = self._waiting.popleft()
            try:
                found = await self._read_and_judge(key, name, size)
            except Exception as exc:  # a bug must not stop the checking, nor go unseen
                self._could_not_read(key, name, failure_reason(exc))
                log.exception("integrity_check_failed", key=key)
                found = None
            finally:
                self._queued.discard(key)
            if found is not None:
                self._unread.pop(key, None)
                self._report(found)
        if not self._queued:
            self._done.set()

    async def _read_and_judge(self, key: str, name: DigestName, size: int) -> Found | None:
        if size > MAX_DIGEST_BYTES:  # not read: no digest is this large
            reason = f"{size} bytes: not a digest CloudTrail wrote"
            return self._ledger.invalid_digest(
                key, name, "bad_signature", reason, (name.end - HOUR, name.end)
            )
        try:
            answer = await self._s3.get_object(Bucket=self._bucket, Key=key, **self._owner)
            async with answer["Body"] as body:
                data: bytes = await body.read()
            metadata = {str(k).lower(): str(v) for k, v in (answer.get("Metadata") or {}).items()}
        except Exception as exc:
            if aws_error_code(exc) in _NOT_FOUND:
                self._unread.pop(key, None)
                return None  # gone since it was listed: the next digest's chain says so
            self._could_not_read(key, name, failure_reason(exc))
            return None
        try:
            return await self._judge(key, name, data, metadata)
        except (ClientError, BotoCoreError) as exc:  # ListPublicKeys: try again next pass
            self._could_not_read(key, name, f"ListPublicKeys: {failure_reason(exc)}")
            return None

    async def _judge(
        self, key: str, name: DigestName, data: bytes, metadata: dict[str, str]
    ) -> Found:
        where = name.place
        fallback = (name.end - HOUR, name.end)

        def bad(reason: str, period: tuple[float, float] = fallback) -> Found:
            return self._ledger.invalid_digest(key, name, "bad_signature", reason, period)

        try:
            opened = open_digest(data)
        except DigestFormatError as exc:
            return bad(f"not a digest CloudTrail wrote: {exc}")
        doc = opened.document
        period = (opened.start, opened.end)
        moved = location_problem(doc, self._bucket, key)
        if moved is not None:
            return bad(moved, period)
        signature = metadata.get("signature")
        if not signature:
            return bad("no signature (x-amz-meta-signature)", period)
        algorithm = metadata.get("signature-algorithm")
        if algorithm != SIGNATURE_ALGORITHM or doc.digestSignatureAlgorithm not in (
            None,
            SIGNATURE_ALGORITHM,
        ):
            return bad(f"signature algorithm {algorithm!r}, not {SIGNATURE_ALGORITHM}", period)
        window = period
        if name.backfill:
            generated = metadata.get("backfill-generation-timestamp")
            try:
                at = parse_time(generated or "")
            except ValueError:
                return bad("a backfill digest without backfill-generation-timestamp", period)
            window = (at - HOUR, at + HOUR)
        fingerprint = doc.digestPublicKeyFingerprint
        public = await self._keys.find(where.region, fingerprint, *window)
        if public is None:
            reason = f"CloudTrail has no public key {fingerprint} in {where.region} for its time"
            return self._ledger.invalid_digest(key, name, "unknown_key", reason, period)
        if not verify_signature(public.der, signature, signing_string(doc, opened.sha256)):
            return bad(f"the signature does not verify with CloudTrail's key {fingerprint}", period)
        return self._ledger.valid_digest(key, name, opened, signature)

    def _could_not_read(self, key: str, name: DigestName, reason: str) -> None:
        self._unread[key] = (name.place.account, name.place.region)
        self._unread_why[reason] += 1
        self.stats.errors[reason.split(":", 1)[0]] += 1

    # -------------------------------------------------------------------------------------
    # Settling

    async def settle(self, presence: Presence) -> None:
        """After a listing pass: chains, files due, files no digest named."""
        await self.drained()
        now = self._clock()
        found = Found()
        found.add(self._ledger.judge_chains(await self._predecessors()))
        found.add(self._ledger.judge_due(await self._due_facts(presence, now)))
        held = set(self._unread.values())
        found.add(self._ledger.judge_files(now, held))
        found.add(self._ledger.evict(self._max_files))
        # Nothing an object still in work may need is pruned (a backfill's are old).
        oldest = presence.oldest_in_work()
        cutoffs = (now - self._retention, now - TOMBSTONE)
        if oldest is not None:
            cutoffs = (min(cutoffs[0], oldest - 2 * HOUR), min(cutoffs[1], oldest - 2 * HOUR))
        self._ledger.prune(*cutoffs)
        self.stats.files_waiting = self._ledger.waiting_files()
        self._report(found)
        self._log_settled()
        self._gone.clear()

    async def _predecessors(self) -> dict[str, bool]:
        asked = [k for k in self._ledger.chain_questions() if k not in self._unread]
        answers = await gather_limited([partial(self._exists, k) for k in asked], PARALLEL)
        return {k: a for k, a in zip(asked, answers, strict=True) if a is not None}

    async def _due_facts(self, presence: Presence, now: float) -> dict[str, str]:
        due = self._ledger.due(now)
        if not due:
            return {}
        facts: dict[str, str] = {}
        committed = presence.committed(due)
        retrying, quarantined = presence.failing()
        ask = []
        for key in due:
            if key in self._gone:
                facts[key] = "missing"
            elif presence.in_work(key) or key in retrying:
                continue  # its hash is on the way
            elif key in quarantined:
                facts[key] = "not_read"
            elif key in committed:
                facts[key] = "shipped_unhashed"  # before verification was on
            else:
                ask.append(key)
        answers = await gather_limited([partial(self._exists, k) for k in ask], PARALLEL)
        for key, there in zip(ask, answers, strict=True):
            if there is False:
                facts[key] = "missing"
            elif there and not presence.will_list(key):
                facts[key] = "not_listed"
        return facts

    async def _exists(self, key: str) -> bool | None:
        """HeadObject: True, False (not there), or None (could not tell)."""
        try:
            await self._s3.head_object(Bucket=self._bucket, Key=key, **self._owner)
        except Exception as exc:
            if aws_error_code(exc) in _NOT_FOUND:
                return False
            self.stats.errors[failure_reason(exc)] += 1
            log.warning("integrity_head_failed", key=key, reason=failure_reason(exc))
            return None
        return True

    # -------------------------------------------------------------------------------------
    # Reporting

    def _report(self, found: Found) -> None:
        self._since.add(found)
        self.stats.unverified.update(found.unverified)
        events = []
        now = self._clock()
        for verdict in found.verdicts:
            self.stats.count(verdict)
            if verdict.valid:
                continue
            log.warning("integrity_violation", bucket=self._bucket, **verdict.fields())
            if self._options.report == "limacharlie":
                event = verdict.event(source=self.source, bucket=self._bucket, detected_at=now)
                events.append((verdict.account, verdict.region, orjson.dumps(event)))
        if events:
            self._ledger.outbox.queue(events)
            self.stats.events_queued = self._ledger.outbox.waiting()

    def _log_settled(self) -> None:
        since, self._since = self._since, Found()
        unread, self._unread_why = self._unread_why, Counter()
        if not since.verdicts and not since.unverified and not unread:
            return
        by: Counter[str] = Counter(f"{v.subject}:{v.verdict}" for v in since.verdicts)
        log.info(
            "integrity_settled",
            bucket=self._bucket,
            files_valid=by["log_file:valid"],
            digests_valid=by["digest:valid"],
            violations=sum(n for k, n in by.items() if not k.endswith(":valid")),
            unverified=dict(since.unverified),
            files_waiting=self.stats.files_waiting,
        )
        if unread:
            examples = list(self._unread)[:EXAMPLES]
            log.warning(
                "integrity_digests_unread",
                bucket=self._bucket,
                reasons=dict(unread),
                count=len(self._unread),
                examples=examples,
                action="read again next pass",
            )

    def outgoing(self) -> list[WorkItem]:
        """Events for LimaCharlie not yet on their way, as work items the source ships:
        each is deleted from the integrity database only once LimaCharlie acknowledged it."""
        if self._options.report != "limacharlie":
            return []
        rows = self._ledger.outbox.pending(self._sending, EVENTS_PER_ITEM * 20)
        items = []
        for at in range(0, len(rows), EVENTS_PER_ITEM):
            chunk = rows[at : at + EVENTS_PER_ITEM]
            ids = [i for i, _ in chunk]
            self._sending.update(ids)
            body = b'{"Records":[' + b",".join(e for _, e in chunk) + b"]}"
            items.append(self._event_item(ids, body))
        return items

    def _event_item(self, ids: list[int], body: bytes) -> WorkItem:
        async def commit() -> None:
            self._ledger.outbox.sent(ids)
            self._sending.difference_update(ids)
            self.stats.events_queued = self._ledger.outbox.waiting()

        def release(reason: str, error: str) -> None:
            self._sending.difference_update(ids)  # sent again after the next pass
            log.warning("integrity_events_not_sent", events=len(ids), reason=reason, error=error)

        return WorkItem(
            source=self.source,
            ref=f"integrity events ({len(ids)})",
            reader=BytesReader(body),
            commit=commit,
            release=release,
            log_fields={"bucket": self._bucket, "integrity_events": str(len(ids))},
            own=True,
        )
