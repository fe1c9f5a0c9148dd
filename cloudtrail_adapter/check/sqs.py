"""The steps of an `sqs:` (or `sqs-files:`) document: the queue, its dead-letter queue, and
the permissions to receive, delete and change visibility, proven without touching a message.

- DeleteMessage and ChangeMessageVisibility are asked with a receipt handle that names no
  message: SQS authorises the call, then refuses the handle (`ReceiptHandleIsInvalid`), so
  the answer proves the permission and nothing changes. A refusal is an access denial.
- ReceiveMessage cannot be proven so: any receive that succeeds takes messages and counts
  a receive against the dead-letter queue's `maxReceiveCount`. It is asked for 0 messages,
  which SQS refuses for the count (`InvalidParameterValue`) and never answers with a
  message: an access denial is then named, and otherwise the step says it is unproven.
- The buckets the queue's messages name are not guessed: no message is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from cloudtrail_adapter.check.denials import (
    AWS_ERRORS,
    aws_failure,
    described,
    is_refusal,
    partition,
)
from cloudtrail_adapter.check.identity import AwsAccess
from cloudtrail_adapter.check.steps import Step, skipped
from cloudtrail_adapter.config import SqsFilesSourceOptions, SqsSourceOptions, queue_region
from cloudtrail_adapter.errors import aws_error_code

__all__ = ["SQS_STEPS", "sqs_steps"]

#: Not a receipt handle SQS ever gave: it can name no message.
NO_MESSAGE = "cloudtrail-adapter-check-names-no-message"
_HANDLE_REFUSED = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "InvalidParameterValue",
    }
)
_COUNT_REFUSED = frozenset(
    {"InvalidParameterValue", "AWS.SimpleQueueService.InvalidParameterValue"}
)
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_AFTER_QUEUE = ("dead_letter", "receive", "delete", "change_visibility")
SQS_STEPS = ("queue", *_AFTER_QUEUE, "buckets")


async def sqs_steps(access: AwsAccess, src: SqsSourceOptions) -> AsyncIterator[Step]:
    arn = _queue_arn(src.queue_url, access.cfg.aws.region)
    elsewhere = _region_mismatch(access, src)
    if elsewhere is not None:
        yield elsewhere
        for step in skipped(access.source, _AFTER_QUEUE, "the queue's region is wrong"):
            yield step
    else:
        async with access.client("sqs") as sqs:
            queue, attributes = await _queue(access, src, sqs, arn)
            yield queue
            if attributes is None:
                for step in skipped(access.source, _AFTER_QUEUE, "the queue cannot be read"):
                    yield step
            else:
                arn = str(attributes.get("QueueArn") or arn)
                yield _dead_letter(access, attributes)
                yield await _receive(access, src, sqs, arn)
                yield await _handle_probe(access, src, sqs, arn, "delete", "sqs:DeleteMessage")
                yield await _handle_probe(
                    access, src, sqs, arn, "change_visibility", "sqs:ChangeMessageVisibility"
                )
    yield _buckets(access, src)


def _queue_arn(queue_url: str, region: str | None) -> str:
    """The queue's ARN from its URL (`.../ACCOUNT/NAME`), until GetQueueAttributes says."""
    account, name = queue_url.rstrip("/").rsplit("/", 2)[-2:]
    return f"arn:{partition(region)}:sqs:{region or 'us-east-1'}:{account}:{name}"


def _region_mismatch(access: AwsAccess, src: SqsSourceOptions) -> Step | None:
    configured, in_url = access.cfg.aws.region, queue_region(src.queue_url)
    if configured is None or in_url is None or configured == in_url:
        return None
    said = f"region: {configured} is set, but the queue's URL is in {in_url}"
    fix = f"leave region out (it is taken from queue_url) or set it to {in_url}"
    return Step(access.source, "queue", "failed", f"the queue {src.queue_url}", said, fix=fix)


async def _queue(
    access: AwsAccess, src: SqsSourceOptions, sqs: Any, arn: str
) -> tuple[Step, dict[str, Any] | None]:
    tried = f"GetQueueAttributes {src.queue_url}"
    try:
        answer = await sqs.get_queue_attributes(QueueUrl=src.queue_url, AttributeNames=["All"])
    except AWS_ERRORS as exc:
        if aws_error_code(exc) in _NO_QUEUE:
            region = access.cfg.aws.region or "us-east-1"
            said = f"no such queue in {region} ({described(exc)})"
            fix = "check queue_url (and region, when the URL does not name it)"
            return Step(access.source, "queue", "failed", tried, said, fix=fix), None
        failed = aws_failure(
            access.source,
            "queue",
            tried,
            exc,
            action="sqs:GetQueueAttributes",
            resource=arn,
            grantee=access.grantee,
        )
        return failed, None
    attributes: dict[str, Any] = answer.get("Attributes", {})
    theirs = attributes.get("VisibilityTimeout", "?")
    waiting = attributes.get("ApproximateNumberOfMessages", "?")
    in_flight = attributes.get("ApproximateNumberOfMessagesNotVisible", "?")
    said = (
        f"{attributes.get('QueueArn', arn)}: {waiting} waiting, {in_flight} in flight; "
        f"visibility timeout: the queue's {theirs} s, ours {src.visibility_timeout} s (asked "
        "on every receive, extended while a message is in work)"
    )
    return Step(access.source, "queue", "passed", tried, said), attributes


def _dead_letter(access: AwsAccess, attributes: dict[str, Any]) -> Step:
    tried = "the queue's RedrivePolicy"
    policy = attributes.get("RedrivePolicy")
    if not policy:
        said = "no dead-letter queue: a message that cannot be handled comes back forever"
        fix = "give the queue a redrive policy (README: Configure a dead-letter queue)"
        return Step(access.source, "dead_letter", "warning", tried, said, fix=fix)
    try:
        redrive = orjson.loads(policy)
        target, count = redrive["deadLetterTargetArn"], redrive["maxReceiveCount"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Step(access.source, "dead_letter", "warning", tried, f"unreadable: {policy!r}")
    said = f"{target}, after {count} receives"
    return Step(access.source, "dead_letter", "passed", tried, said)


async def _receive(access: AwsAccess, src: SqsSourceOptions, sqs: Any, arn: str) -> Step:
    tried = "ReceiveMessage for 0 messages (SQS refuses the count, so none is taken)"
    refused = {"action": "sqs:ReceiveMessage", "resource": arn, "grantee": access.grantee}
    try:
        answer = await sqs.receive_message(
            QueueUrl=src.queue_url, MaxNumberOfMessages=0, WaitTimeSeconds=0
        )
    except AWS_ERRORS as exc:
        if aws_error_code(exc) in _COUNT_REFUSED:
            said = (
                "not denied, but unproven: proving it would take a message and count a receive "
                "against the dead-letter queue; the daemon's first receive proves it"
            )
            return Step(access.source, "receive", "unproven", tried, said)
        return aws_failure(access.source, "receive", tried, exc, **refused)
    taken = len(answer.get("Messages", ()))  # an endpoint that ignores the count
    said = f"the endpoint answered a receive of 0 messages with {taken}: receive allowed"
    return Step(access.source, "receive", "warning" if taken else "passed", tried, said)


async def _handle_probe(
    access: AwsAccess, src: SqsSourceOptions, sqs: Any, arn: str, name: str, action: str
) -> Step:
    """`action` asked with a receipt handle that names no message."""
    tried = f"{action.removeprefix('sqs:')} with a receipt handle that names no message"
    try:
        if name == "delete":
            await sqs.delete_message(QueueUrl=src.queue_url, ReceiptHandle=NO_MESSAGE)
        else:
            await sqs.change_message_visibility(
                QueueUrl=src.queue_url, ReceiptHandle=NO_MESSAGE, VisibilityTimeout=0
            )
    except AWS_ERRORS as exc:
        if not is_refusal(exc) and aws_error_code(exc) in _HANDLE_REFUSED:
            said = (
                f"allowed (SQS then refused the handle: {aws_error_code(exc)}); no message changed"
            )
            return Step(access.source, name, "passed", tried, said)
        return aws_failure(
            access.source, name, tried, exc, action=action, resource=arn, grantee=access.grantee
        )
    said = "allowed (the endpoint accepted a handle that names no message)"
    return Step(access.source, name, "passed", tried, said)


def _buckets(access: AwsAccess, src: SqsSourceOptions) -> Step:
    """What the document lets the queue's messages name; no message is read to find out."""
    tried = "the buckets messages may name (no message is read)"
    if isinstance(src, SqsFilesSourceOptions) and src.bucket:
        said = f"every file is read from s3://{src.bucket}"
    elif src.buckets:
        said = f"objects are read only from buckets matching {', '.join(src.buckets)}"
    else:
        said = (
            "objects are read from whichever bucket a message names (set buckets: to trust "
            "only yours)"
        )
    owner = src.bucket_owner
    said += (
        f", expected to be owned by account {owner}"
        if owner
        else ", whoever owns them (expected_bucket_owner: none)"
    )
    said += "; s3:GetObject there (and kms:Decrypt) is proven by the first message"
    return Step(access.source, "buckets", "unproven", tried, said)
