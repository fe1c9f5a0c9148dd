"""SQS message body -> what to do: objects to fetch, records to send, nothing, or poison.

A pure function, tested on its own. Every shape AWS delivers is understood (see
shared/reference/cloudtrail-formats.md); anything else raises NotificationError, which the
SQS source treats as poison: logged, counted, left for the queue's dead-letter policy.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import msgspec

VALIDATION_MESSAGE = "CloudTrail validation message."
EXCERPT = 80
MAX_KEYS_NAMED = 8


@dataclass(frozen=True, slots=True)
class ObjectRef:
    bucket: str
    key: str
    region: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class FetchObjects:
    objects: tuple[ObjectRef, ...]


@dataclass(frozen=True, slots=True)
class InlineRecords:
    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NothingToDo:
    reason: str


Notification = FetchObjects | InlineRecords | NothingToDo


class NotificationError(Exception):
    """A body we do not understand. `reason` is a stable code for logs and counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Envelope(msgspec.Struct):
    """Only used to keep CloudTrail records as raw bytes (never rebuilt as Python objects)."""

    Records: list[msgspec.Raw] = msgspec.field(default_factory=list)
    detail: msgspec.Raw = msgspec.Raw(b"null")


@dataclass(frozen=True, slots=True)
class FilePaths:
    """LimaCharlie's `sqs-files`: where a body names its bucket and its files.

    A path is `/`-separated keys; a list met on the way is walked item by item, so
    `Records/s3/object/key` finds every record's key. `bucket`, when given, is every
    file's bucket; `decode_keys` URL-decodes the keys (S3 event notifications encode them).
    """

    file_path: str
    bucket_path: str = "bucket"
    bucket: str | None = None
    decode_keys: bool = False


def parse_body(body: str | bytes, paths: FilePaths | None = None) -> Notification:
    """What a message asks for. With `paths`, the files they find come first; a body where
    they find none is read as any other (an S3, SNS or EventBridge notification)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    try:
        found = _by_paths(raw, paths) if paths is not None else None
        return found or _parse(raw, inside_sns=False)
    except RecursionError:
        raise NotificationError("not_json", "the body is nested deeper than we decode") from None


def _by_paths(raw: bytes, paths: FilePaths) -> FetchObjects | None:
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None  # the general reading says what is wrong with it
    keys = [k for k in _walk(doc, paths.file_path) if isinstance(k, str) and k]
    if not keys:
        return None
    bucket = paths.bucket or next(
        (b for b in _walk(doc, paths.bucket_path) if isinstance(b, str) and b), None
    )
    if bucket is None:
        raise NotificationError(
            "missing_bucket",
            f"the body names files at {paths.file_path} but no bucket at {paths.bucket_path} "
            "(set bucket_path, or bucket)",
        )
    if paths.decode_keys:
        keys = [urllib.parse.unquote_plus(k) for k in keys]
    return FetchObjects(tuple(ObjectRef(bucket, k) for k in keys))


def _walk(doc: Any, path: str) -> list[Any]:
    """Every value at `path` in `doc`, lists on the way (and at the end) walked."""
    found = [doc]
    for part in (p for p in path.split("/") if p):
        step: list[Any] = []
        for value in found:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and part in item:
                    step.append(item[part])
        found = step
    return [v for value in found for v in (value if isinstance(value, list) else [value])]


def _parse(raw: bytes, *, inside_sns: bool) -> Notification:
    text = raw.strip()
    if not text:
        raise NotificationError("empty_body", "the message body is empty")
    if text == VALIDATION_MESSAGE.encode():
        return NothingToDo("cloudtrail_validation_message")
    try:
        doc = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise NotificationError("not_json", f"the body is not JSON: {_excerpt(text)}") from None
    if not isinstance(doc, dict):
        raise NotificationError(
            "unknown_shape", f"the body is JSON but not an object: {_excerpt(text)}"
        )
    if "Type" in doc and "TopicArn" in doc:
        return _sns(doc, inside_sns)
    if doc.get("Event") == "s3:TestEvent":
        return NothingToDo("s3_test_event")
    if "s3Bucket" in doc and "s3ObjectKey" in doc:
        return _cloudtrail_sns(doc)
    if "detail-type" in doc and "detail" in doc:
        return _eventbridge(doc, text)
    if "Records" in doc:
        return _records(doc, text)
    if _is_cloudtrail(doc):
        return InlineRecords((_compact(text),))
    keys = ", ".join(sorted(map(str, doc))[:MAX_KEYS_NAMED])
    raise NotificationError("unknown_shape", f"not a notification we know; top-level keys: {keys}")


def _sns(doc: dict[str, Any], inside_sns: bool) -> Notification:
    kind = doc.get("Type")
    if kind == "SubscriptionConfirmation":
        raise NotificationError(
            "sns_subscription_confirmation",
            "an SNS subscription confirmation: confirm the subscription (SubscribeURL) "
            "or enable raw message delivery",
        )
    message = doc.get("Message")
    if kind != "Notification" or not isinstance(message, str):
        raise NotificationError(
            "bad_sns_envelope", f"an SNS envelope of Type {kind!r} without a Message string"
        )
    if inside_sns:
        raise NotificationError("bad_sns_envelope", "an SNS envelope inside an SNS envelope")
    return _parse(message.encode("utf-8", "surrogatepass"), inside_sns=True)


def _cloudtrail_sns(doc: dict[str, Any]) -> Notification:
    bucket, keys = doc["s3Bucket"], doc["s3ObjectKey"]
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(bucket, str) or not bucket or not isinstance(keys, list):
        raise NotificationError(
            "bad_cloudtrail_notification",
            "s3Bucket must be a string and s3ObjectKey a list of keys",
        )
    if not keys:
        return NothingToDo("no_object_created")
    if not all(isinstance(k, str) and k for k in keys):
        raise NotificationError(
            "bad_cloudtrail_notification", "s3ObjectKey holds a key that is not a string"
        )
    return FetchObjects(_unique(ObjectRef(bucket, k) for k in keys))


def _eventbridge(doc: dict[str, Any], text: bytes) -> Notification:
    kind, source, detail = doc.get("detail-type"), doc.get("source"), doc.get("detail")
    if not isinstance(detail, dict):
        raise NotificationError(
            "bad_eventbridge_event", "an EventBridge event whose detail is not an object"
        )
    if isinstance(kind, str) and kind.endswith("via CloudTrail"):
        return InlineRecords((_compact(msgspec.json.decode(text, type=_Envelope).detail),))
    if source != "aws.s3":
        raise NotificationError(
            "unknown_shape", f"an EventBridge event we do not ship: {source} {kind!r}"
        )
    if kind != "Object Created":
        return NothingToDo("no_object_created")
    bucket = (detail.get("bucket") or {}).get("name")
    obj = detail.get("object") or {}
    key = obj.get("key")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise NotificationError(
            "bad_eventbridge_event",
            "an Object Created event without detail.bucket.name and detail.object.key",
        )
    region = doc.get("region") if isinstance(doc.get("region"), str) else None
    return FetchObjects((ObjectRef(bucket, key, region, _size(obj)),))


def _records(doc: dict[str, Any], text: bytes) -> Notification:
    records = doc["Records"]
    if not isinstance(records, list):
        raise NotificationError("unknown_shape", "Records is not a list")
    if not records:
        return NothingToDo("no_records")
    if not all(isinstance(r, dict) for r in records):
        raise NotificationError("unknown_shape", "Records holds an entry that is not an object")
    s3 = [r.get("eventSource") == "aws:s3" for r in records]
    if all(s3):
        return _s3_event(records)
    if not any(s3) and all(_is_cloudtrail(r) for r in records):
        raws = msgspec.json.decode(text, type=_Envelope).Records
        return InlineRecords(tuple(_compact(r) for r in raws))
    raise NotificationError(
        "unknown_shape", "Records mixes S3 notifications with other records, or holds neither"
    )


def _s3_event(records: list[dict[str, Any]]) -> Notification:
    refs = []
    for index, record in enumerate(records):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not isinstance(bucket, str) or not bucket:
            raise NotificationError("bad_s3_record", f"Records[{index}] has no s3.bucket.name")
        if not isinstance(key, str) or not key:
            raise NotificationError("bad_s3_record", f"Records[{index}] has no s3.object.key")
        region = record.get("awsRegion") if isinstance(record.get("awsRegion"), str) else None
        refs.append(ObjectRef(bucket, urllib.parse.unquote_plus(key), region, _size(obj)))
    return FetchObjects(_unique(refs)) if refs else NothingToDo("no_object_created")


def _is_cloudtrail(doc: dict[str, Any]) -> bool:
    return "eventVersion" in doc and "eventID" in doc


def _compact(raw: bytes | msgspec.Raw) -> bytes:
    return msgspec.json.format(bytes(raw), indent=-1)


def _size(obj: dict[str, Any]) -> int | None:
    size = obj.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _unique(refs: Any) -> tuple[ObjectRef, ...]:
    return tuple(dict.fromkeys(refs))


def _excerpt(text: bytes) -> str:
    shown = text[:EXCERPT].decode("utf-8", "replace")
    return repr(shown + ("…" if len(text) > EXCERPT else ""))
