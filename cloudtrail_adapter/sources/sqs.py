"""The SQS source: notifications in, objects or inline records out, delete only after ack.

A received message is *in work* until it is deleted or given up on; the number in work is
bounded (`max_messages_in_work`), and the receive loop asks only for as many as there is
room for, so a slow LimaCharlie slows receiving instead of growing memory.

- Each message is handled on its own: its objects become WorkItems whose commits count
  down; at zero the message is deleted (batched), never before.
- While in work, a heartbeat extends its visibility every half timeout, so a file that takes
  longer than the timeout to deliver is not redelivered to another consumer. The half
  timeout is counted from when the request that hid it (the ReceiveMessage, then each
  extension) was sent, not from when its answer came: SQS starts the clock somewhere in
  between, and a slow answer must not eat into the time we have.
- A body we cannot parse (poison), or a message whose object could not be read, is logged
  with its message id, counted and *left on the queue*: it becomes visible again after its
  visibility timeout and, after the queue's maxReceiveCount, moves to its dead-letter queue.
  Nothing is deleted unread and nothing is retried in a tight loop.
- Whoever can send to the queue can name any bucket, so a message is trusted no further
  than its buckets: one naming a bucket outside `buckets` is poison, never fetched; every
  read expects the bucket's owner (`expected_bucket_owner`, by default the queue's account),
  and a bucket another account owns makes its message poison too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from cloudtrail_adapter.aio import Stopped, unless_stopped
from cloudtrail_adapter.aws import BucketClients
from cloudtrail_adapter.config import SqsFilesSourceOptions, SqsSourceOptions
from cloudtrail_adapter.errors import Backoff, QueueUnavailable, failure_reason
from cloudtrail_adapter.model import QueueStats, SourceStats, WorkItem
from cloudtrail_adapter.readers import BytesReader, Reader, S3Reader, WrongBucketOwner
from cloudtrail_adapter.sources.notifications import (
    FetchObjects,
    FilePaths,
    InlineRecords,
    NothingToDo,
    Notification,
    NotificationError,
    ObjectRef,
    parse_body,
)
from cloudtrail_adapter.sources.trail_layout import is_digest_key

log = structlog.get_logger("cloudtrail_adapter.sources.sqs")

DELETE_BATCH = 10  # SQS's limit for DeleteMessageBatch
DELETE_LINGER = 0.05
DELETE_ATTEMPTS = 4
#: Jittered: a scaled-out deployment runs many replicas on one queue, and a fault they all
#: met at once must not bring them back in step.
RECEIVE_BACKOFF = Backoff(0.5, 60.0, jitter=0.5)
DELETE_BACKOFF = Backoff(0.2, 60.0, jitter=0.5)
RECEIVE_MARGIN = 5.0  # beyond the long-poll wait, for the answer to arrive
MAX_RECEIVERS = 4  # receive loops per source (fewer when little may be in work)
GONE_HANDLE_CODES = frozenset(
    {"ReceiptHandleIsInvalid", "AWS.SimpleQueueService.MessageNotInflight", "MessageNotInflight"}
)
FATAL_QUEUE_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)


ItemFactory = Callable[["_Message"], WorkItem]


class _Message:
    """One received message in work: how many of its items are still open, and whether one
    failed (`failure`, its reason) or was never queued because intake stopped (`unqueued`:
    the message is then made visible at once rather than left to its timeout)."""

    __slots__ = (
        "failure",
        "handle",
        "heartbeat",
        "hidden_at",
        "message_id",
        "outstanding",
        "poisoned",
        "receives",
        "unqueued",
    )

    def __init__(
        self,
        message_id: str,
        handle: str,
        outstanding: int,
        receives: str = "",
        hidden_at: float = 0.0,
    ) -> None:
        self.message_id = message_id
        #: When (the loop's clock) the request that last hid it was sent: its visibility
        #: timeout runs from no earlier than that.
        self.hidden_at = hidden_at
        self.handle = handle
        self.outstanding = outstanding
        self.receives = receives  # ApproximateReceiveCount, for the logs
        self.failure: str | None = None
        self.poisoned = False  # an item found the message poison (logged and counted then)
        self.unqueued = False
        self.heartbeat: asyncio.Task[None] | None = None


def _foreign_buckets(note: Notification, options: SqsSourceOptions) -> str:
    """The buckets a notification names outside `buckets`, comma-separated ("" if none)."""
    if not isinstance(note, FetchObjects):
        return ""
    named = dict.fromkeys(ref.bucket for ref in note.objects)
    return ", ".join(b for b in named if not options.bucket_trusted(b))


def _file_paths(options: SqsSourceOptions) -> FilePaths | None:
    """An `sqs-files` document's paths into message bodies."""
    if not isinstance(options, SqsFilesSourceOptions):
        return None
    return FilePaths(
        options.file_path, options.bucket_path, options.bucket, options.is_decode_object_key
    )


class SqsSource:
    def __init__(
        self, name: str, options: SqsSourceOptions, *, sqs: Any, buckets: BucketClients
    ) -> None:
        self.name = name
        self._counts = QueueStats()  # what stats() shows, counted as it changes
        self._left_for_redelivery = 0  # messages whose objects failed
        self._options = options
        self._sqs = sqs
        self._buckets = buckets
        self._paths = _file_paths(options)
        self._owner = options.bucket_owner
        self._queue_name = options.queue_name
        self._left = asyncio.Event()  # set whenever a message stops being in work
        self._reserved = 0  # room asked for by receives under way
        self._stop = asyncio.Event()
        self._messages: set[_Message] = set()  # in work: received, not deleted or given up
        self._unstarted: list[_Message] = []  # cut off by a stop before all of it was queued
        self._receiving: asyncio.Task[None] | None = None
        self._deletes: asyncio.Queue[_Message] = asyncio.Queue()

    def problems(self) -> int:
        """Messages given up on in this run (poison, or their objects failed)."""
        return self._counts.poison + self._left_for_redelivery

    def recovered(self) -> int:
        """Nothing is retried within a run: a message left comes back through SQS."""
        return 0

    def stats(self) -> SourceStats:
        return SourceStats(queue=replace(self._counts))

    def stop_intake(self) -> None:
        self._stop.set()

    async def hand_back(self) -> None:
        """Makes every message still in work visible again at once, for another consumer or
        our own next start: the shutdown grace ran out before LimaCharlie acknowledged it.

        A receive still under way is let finish first (a long poll whose client went away
        still takes messages, in SQS as in moto), and what it returns is handed back too."""
        if self._receiving is not None and not self._receiving.done():
            with contextlib.suppress(TimeoutError, Stopped):
                async with asyncio.timeout(self._options.wait_time_seconds + RECEIVE_MARGIN):
                    await asyncio.shield(self._receiving)
        await self._make_visible([*self._messages, *self._unstarted])

    async def _make_visible(self, messages: list[_Message]) -> None:
        self._unstarted = [m for m in self._unstarted if m not in messages]
        for message in messages:
            if message.heartbeat is not None:
                message.heartbeat.cancel()
        for start in range(0, len(messages), DELETE_BATCH):
            chunk = messages[start : start + DELETE_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.handle, "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            try:
                await self._sqs.change_message_visibility_batch(
                    QueueUrl=self._options.queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("sqs_hand_back_failed", error=str(exc))
        log.info("sqs_handed_back", messages=len(messages))

    async def run(self, out: asyncio.Queue[WorkItem]) -> None:
        """Receives until stopped; in single-load mode, until the queue is empty. Then waits
        until every message in work was deleted or given up on."""
        log.info(
            "sqs_buckets_trusted",
            source=self.name,
            buckets=list(self._options.buckets),  # none: any bucket
            expected_bucket_owner=self._owner,
        )
        deleter = asyncio.create_task(self._deleter())
        self._receiving = asyncio.create_task(self._receivers(out))
        try:
            await self._receiving
            await self._taken_below(1)  # the receive loops are done: nothing is reserved
            if self._unstarted:
                await self._make_visible(self._unstarted)
        finally:
            deleter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deleter

    async def _receivers(self, out: asyncio.Queue[WorkItem]) -> None:
        """Several receive loops: one long poll at a time caps a consumer at a few hundred
        messages a second (each receive is a round trip); room in work is shared."""
        options = self._options
        count = min(MAX_RECEIVERS, -(-options.max_messages_in_work // options.max_messages))
        try:
            async with asyncio.TaskGroup() as loops:
                for _ in range(count):
                    loops.create_task(self._receive_loop(out))
        except BaseExceptionGroup as group:  # the first failure is the source's failure
            raise group.exceptions[0] from None

    async def _receive_loop(self, out: asyncio.Queue[WorkItem]) -> None:
        """Stopping interrupts every wait here but never a receive under way: its messages
        would be taken in SQS and lost to us until their visibility timeout."""
        failures = 0
        try:
            while not self._stop.is_set():
                room = await unless_stopped(self._stop, self._wait_for_room())
                asked = min(room, self._options.max_messages)
                with self._reserving(asked):
                    sent_at = asyncio.get_running_loop().time()
                    try:
                        messages = await self._receive(asked)
                    except (ClientError, BotoCoreError) as exc:
                        failures += 1
                        error: Exception | None = exc
                    else:
                        failures, error = 0, None
                        if not await self._accept_all(messages, out, sent_at):
                            return
                if error is not None:
                    await unless_stopped(self._stop, self._receive_failed(error, failures))
                elif not messages and self._options.single_load:
                    return
        except Stopped:
            return

    @contextlib.contextmanager
    def _reserving(self, count: int) -> Iterator[None]:
        """Room other loops must not take: asked for, then received and being accepted
        (counted twice meanwhile, which only makes the others wait, never take too many)."""
        self._reserved += count
        try:
            yield
        finally:
            self._reserved -= count
            self._left.set()

    async def _accept_all(
        self, messages: list[dict[str, Any]], out: asyncio.Queue[WorkItem], sent_at: float
    ) -> bool:
        """False when a stop cut it short (what was not accepted yet was given back)."""
        for index, message in enumerate(messages):
            if self._stop.is_set():
                await self._give_back_unread(messages[index:])
                return False
            await self._accept(message, out, sent_at)
        return True

    async def _give_back_unread(self, messages: list[dict[str, Any]]) -> None:
        """Received during a stop: not started, so visible again at once."""
        unread = [
            _Message(str(m.get("MessageId", "")), str(m["ReceiptHandle"]), 0) for m in messages
        ]
        if unread:
            await self._make_visible(unread)

    async def _wait_for_room(self) -> int:
        limit = self._options.max_messages_in_work
        await self._taken_below(limit)
        return limit - self._taken

    @property
    def _taken(self) -> int:
        """Messages in work, and room other receive loops asked for."""
        return self._counts.in_work + self._reserved

    async def _taken_below(self, limit: int) -> None:
        while self._taken >= limit:
            self._left.clear()
            await self._left.wait()

    async def _receive(self, count: int) -> list[dict[str, Any]]:
        answer = await self._sqs.receive_message(
            QueueUrl=self._options.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self._options.wait_time_seconds,
            VisibilityTimeout=self._options.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        self._counts.received += len(messages)
        return messages

    async def _receive_failed(self, exc: Exception, failures: int) -> None:
        code = failure_reason(exc)
        if code in FATAL_QUEUE_CODES:
            raise QueueUnavailable(
                f"cannot read SQS queue {self._options.queue_url}: {code}: {exc}"
            ) from exc
        delay = RECEIVE_BACKOFF.delay(failures)
        log.warning("sqs_receive_failed", error=f"{code}: {exc}", retry_in=delay)
        await asyncio.sleep(delay)

    async def _accept(
        self, received: dict[str, Any], out: asyncio.Queue[WorkItem], sent_at: float
    ) -> None:
        message_id = str(received.get("MessageId", ""))
        receives = received.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        try:
            note = parse_body(received.get("Body", ""), self._paths)
        except NotificationError as exc:
            self._poison(message_id, receives, exc.reason, str(exc))
            return
        except Exception as exc:  # a parser bug must cost one message, never the source
            self._poison(message_id, receives, "parser_error", f"{type(exc).__name__}: {exc}")
            return
        log.debug(
            "sqs_message_received",
            message_id=message_id,
            receive_count=receives,
            kind=type(note).__name__,
        )
        foreign = _foreign_buckets(note, self._options)
        if foreign:
            error = f"names buckets outside buckets ({', '.join(self._options.buckets)})"
            self._poison(message_id, receives, "bucket_not_trusted", error, bucket=foreign)
            return
        items = self._items(note, message_id)
        handle = str(received["ReceiptHandle"])
        message = _Message(message_id, handle, len(items), receives, hidden_at=sent_at)
        self._enter(message)
        if not items:
            why = note.reason if isinstance(note, NothingToDo) else "digest_files_only"
            log.info("sqs_message_nothing_to_do", message_id=message_id, why=why)
            self._deletes.put_nowait(message)
            return
        message.heartbeat = asyncio.create_task(self._heartbeat(message))
        for queued, make in enumerate(items):
            try:
                await unless_stopped(self._stop, out.put(make(message)))
            except (Stopped, asyncio.CancelledError):  # what was not queued is handed back
                message.unqueued = True
                for _ in range(len(items) - queued):
                    self._item_done(message)
                raise

    def _poison(
        self, message_id: str, receives: str, reason: str, error: str, **fields: str
    ) -> None:
        """Left as received: back after its visibility timeout, then to the dead-letter queue."""
        self._counts.poison += 1
        log.error(
            "sqs_message_poison",
            message_id=message_id,
            reason=reason,
            error=error,
            receive_count=receives,
            **fields,
        )

    def _items(self, note: Notification, message_id: str) -> list[ItemFactory]:
        """Factories of the message's WorkItems (made once its _Message exists)."""
        if isinstance(note, FetchObjects):
            refs = [ref for ref in note.objects if not is_digest_key(ref.key)]
            return [functools.partial(self._object_item, ref=ref) for ref in refs]
        if isinstance(note, InlineRecords):
            body = b'{"Records":[' + b",".join(note.records) + b"]}"
            return [functools.partial(self._inline_item, body=body)]
        return []

    def _object_item(self, message: _Message, ref: ObjectRef) -> WorkItem:
        async def client() -> Any:
            return await self._buckets.for_bucket(ref.bucket, ref.region)

        def release(reason: str, error: str) -> None:
            if reason == WrongBucketOwner.reason and not message.poisoned:
                message.poisoned = True
                self._poison(
                    message.message_id,
                    message.receives,
                    reason,
                    error,
                    bucket=ref.bucket,
                    expected_owner=self._owner or "",
                )
            self._item_failed(message, reason, error)

        reader = S3Reader(client, ref.bucket, ref.key, size=ref.size, owner=self._owner)
        fields = {"message_id": message.message_id, "bucket": ref.bucket, "key": ref.key}
        ref_text = f"s3://{ref.bucket}/{ref.key}"
        return self._work_item(message, ref_text, reader, fields, release)

    def _inline_item(self, message: _Message, body: bytes) -> WorkItem:
        ref = f"sqs://{self._queue_name}/{message.message_id}"
        return self._work_item(message, ref, BytesReader(body), {"message_id": message.message_id})

    def _work_item(
        self,
        message: _Message,
        ref: str,
        reader: Reader,
        fields: dict[str, str],
        release: Callable[[str, str], None] | None = None,
    ) -> WorkItem:
        async def commit() -> None:
            self._item_done(message)

        def failed(reason: str, error: str) -> None:
            self._item_failed(message, reason, error)

        return WorkItem(
            source=self.name,
            ref=ref,
            reader=reader,
            commit=commit,
            release=release or failed,
            log_fields=fields,
        )

    def _item_failed(self, message: _Message, reason: str, error: str) -> None:
        message.failure = reason
        self._item_done(message)

    def _item_done(self, message: _Message) -> None:
        message.outstanding -= 1
        if message.outstanding > 0:
            return
        if message.heartbeat is not None:
            message.heartbeat.cancel()
        if message.unqueued:
            self._unstarted.append(message)
            self._leave(message)
        elif message.poisoned:  # already logged and counted as poison
            self._leave(message)
        elif message.failure is not None:
            self._left_for_redelivery += 1
            log.warning("sqs_message_left", message_id=message.message_id, reason=message.failure)
            self._leave(message)
        else:
            self._deletes.put_nowait(message)

    def _enter(self, message: _Message) -> None:
        self._messages.add(message)
        self._counts.in_work += 1

    def _leave(self, message: _Message) -> None:
        """The message is no longer ours: deleted, or left for redelivery."""
        self._messages.discard(message)
        self._counts.in_work -= 1
        self._left.set()

    async def _heartbeat(self, message: _Message) -> None:
        """Keeps the message invisible to other consumers while its records are in work."""
        timeout = self._options.visibility_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, message.hidden_at + timeout / 2 - loop.time()))
            sent_at = loop.time()
            try:
                await self._sqs.change_message_visibility(
                    QueueUrl=self._options.queue_url,
                    ReceiptHandle=message.handle,
                    VisibilityTimeout=timeout,
                )
            except (ClientError, BotoCoreError) as exc:
                code = failure_reason(exc)
                log.warning(
                    "sqs_visibility_extend_failed",
                    message_id=message.message_id,
                    error=f"{code}: {exc}",
                )
                if code in GONE_HANDLE_CODES or code == "InvalidParameterValue":
                    return  # deleted, expired or past SQS's 12-hour cap: nothing to keep
                await asyncio.sleep(min(1.0, timeout / 4))  # and again, not in a tight loop
                continue
            message.hidden_at = sent_at
            self._counts.visibility_extensions += 1
            log.debug("sqs_visibility_extended", message_id=message.message_id)

    async def _deleter(self) -> None:
        """Deletes acknowledged messages in batches of up to ten."""
        while True:
            batch = [await self._deletes.get()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELETE_LINGER):
                    while len(batch) < DELETE_BATCH:
                        batch.append(await self._deletes.get())
            await self._delete(batch)

    async def _delete(self, batch: list[_Message]) -> None:
        pending = {str(i): message for i, message in enumerate(batch)}
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            failed = await self._delete_once(pending)
            retry = {i: pending[i] for i, code in failed.items() if code not in GONE_HANDLE_CODES}
            for i, code in failed.items():
                if i not in retry:
                    self._gone(pending[i], code)
            for i in pending.keys() - failed.keys():
                self._counts.deleted += 1
                log.debug("sqs_message_deleted", message_id=pending[i].message_id)
                self._leave(pending[i])
            pending = retry
            if not pending:
                return
            await asyncio.sleep(DELETE_BACKOFF.delay(attempt))
        for message in pending.values():
            self._gone(message, "delete_failed")

    async def _delete_once(self, pending: dict[str, _Message]) -> dict[str, str]:
        """Entry id -> error code for the entries SQS did not delete (all of them on an error)."""
        entries = [{"Id": i, "ReceiptHandle": s.handle} for i, s in pending.items()]
        try:
            answer = await self._sqs.delete_message_batch(
                QueueUrl=self._options.queue_url, Entries=entries
            )
        except (ClientError, BotoCoreError) as exc:
            code = failure_reason(exc)
            log.warning("sqs_delete_failed", error=f"{code}: {exc}")
            return dict.fromkeys(pending, code)
        return {str(f["Id"]): str(f.get("Code", "")) for f in answer.get("Failed", [])}

    def _gone(self, message: _Message, code: str) -> None:
        """Could not delete: the message will come back and be shipped again (a duplicate)."""
        self._counts.delete_failures += 1
        log.warning("sqs_message_not_deleted", message_id=message.message_id, code=code)
        self._leave(message)
