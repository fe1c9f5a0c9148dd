"""The tests' S3/SQS/STS: moto in server mode on 127.0.0.1, reached over real HTTP, made to
behave as AWS does where moto differs and the tests depend on it.

moto runs in this process, so what it changes is moto's own classes (patched once, on the
first `moto_server()`) and `STAND_IN`, the knobs a test turns: moto's backends are
process-wide, and so are these.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import functools
import hashlib
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from moto.cloudtrail.responses import CloudTrailResponse
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import _RESTError
from moto.core.responses import BaseResponse
from moto.core.utils import utcnow
from moto.s3.exceptions import MissingBucket, S3ClientError
from moto.s3.models import S3Backend
from moto.s3.responses import ACTION_MAP as S3_ACTIONS
from moto.s3.responses import S3Response
from moto.s3.utils import _VersionedKeyStore
from moto.sqs.exceptions import OverLimit
from moto.sqs.models import SQSBackend
from moto.sts.models import AssumedRole, STSBackend, sts_backends

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator import local_aws
from cloudtrail_adapter.emulator.local_aws import ACCESS_KEY, REGION, SECRET_KEY

__all__ = [
    "ACCESS_KEY",
    "PUBLIC_KEYS_VARIABLE",
    "REGION",
    "SECRET_KEY",
    "STAND_IN",
    "StandIn",
    "depth",
    "listings",
    "moto_server",
    "put_objects",
    "send",
    "set_auth",
]

POLL_STEP = 0.02


def _atomic_receive(receive: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """moto checks a message's visibility and marks it received without a lock, while its
    server answers each request on its own thread: two consumers polling at once can both
    take one message. Real SQS hands a message to one receiver per visibility period, and
    the scale-out tests depend on that, so the stand-in takes messages under one lock and
    does its long-poll waiting outside it. `STAND_IN.receive_faults` fails receives first."""
    lock = threading.Lock()

    @functools.wraps(receive)
    def receive_message(
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        if STAND_IN.receive_faults > 0:
            STAND_IN.receive_faults -= 1
            raise OverLimit(STAND_IN.receive_faults + 8)
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with lock:
                got = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(POLL_STEP)

    return receive_message


@dataclass
class StandIn:
    """Knobs of the stand-in (it runs in the test process): `role_session_seconds` cuts
    every role session STS hands out to that length (AWS's shortest is 900 s, too long
    to wait out in a test); `requests` records what was asked of it; `public_keys` is what
    CloudTrail's ListPublicKeys answers, by region."""

    role_session_seconds: float | None = None
    #: When a list, every request is appended to it: (method, URL), in arrival order.
    requests: list[tuple[str, str]] | None = None
    #: Region -> [(DER of a public key in PKCS#1, valid from, valid until)], epoch seconds.
    public_keys: dict[str, list[tuple[bytes, float, float]]] = field(default_factory=dict)
    #: ListPublicKeys calls answered: (region, StartTime, EndTime).
    public_key_calls: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    #: The next this many ReceiveMessage calls fail with OverLimit (403), an error botocore
    #: does not retry itself and the source does not take for a missing queue.
    receive_faults: int = 0
    #: The next this many DeleteMessageBatch calls fail whole, with OverLimit (403): an error
    #: botocore does not retry itself, so each is one failed call of the source's (a 5xx
    #: would be retried by botocore first, with its backoff of seconds).
    delete_faults: int = 0
    #: The codes the next entries of DeleteMessageBatch calls fail with, one entry each, in
    #: order (the call itself succeeds, as SQS answers a partial failure).
    delete_entry_faults: list[str] = field(default_factory=list)
    #: Bucket -> the account that owns it, where a test says (moto makes every bucket its
    #: creator's, which is the one account of the stand-in's keys).
    bucket_owners: dict[str, str] = field(default_factory=dict)


STAND_IN = StandIn()
#: A child process's stand-in (bench) takes its public keys from here: JSON of region ->
#: [[base64 DER, valid from, valid until]].
PUBLIC_KEYS_VARIABLE = "STAND_IN_PUBLIC_KEYS"


def _list_public_keys(self: CloudTrailResponse) -> str:
    """CloudTrail's ListPublicKeys, which moto lacks: the keys of the request's region
    valid at any time in [StartTime, EndTime] (now, when not given), as AWS answers it:
    `Value` the DER bytes (base64 in JSON), `Fingerprint` their MD5 in hex."""
    start, end = self._get_param("StartTime"), self._get_param("EndTime")
    STAND_IN.public_key_calls.append((self.region, start, end))
    now = time.time()
    low = float(start) if start is not None else now
    high = float(end) if end is not None else now
    keys = [
        {
            "Value": base64.b64encode(der).decode(),
            "ValidityStartTime": since,
            "ValidityEndTime": until,
            "Fingerprint": hashlib.md5(der, usedforsecurity=False).hexdigest(),
        }
        for der, since, until in STAND_IN.public_keys.get(self.region, [])
        if since <= high and until >= low
    ]
    return json.dumps({"PublicKeyList": keys})


def _keys_from_environment() -> None:
    text = os.environ.get(PUBLIC_KEYS_VARIABLE)
    if text:
        STAND_IN.public_keys = {
            region: [(base64.b64decode(der), since, until) for der, since, until in keys]
            for region, keys in json.loads(text).items()
        }


def _failing_deletes(delete_batch: Callable[..., Any]) -> Callable[..., Any]:
    """DeleteMessageBatch as SQS fails it: whole (`STAND_IN.delete_faults`), or for some of
    its entries only (`STAND_IN.delete_entry_faults`), the rest deleted."""

    @functools.wraps(delete_batch)
    def delete_message_batch(
        self: SQSBackend, queue_name: str, receipts: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        if STAND_IN.delete_faults > 0:
            STAND_IN.delete_faults -= 1
            raise OverLimit(STAND_IN.delete_faults + 8)
        failed: list[dict[str, Any]] = []
        kept = []
        for entry in receipts:
            if STAND_IN.delete_entry_faults:
                code = STAND_IN.delete_entry_faults.pop(0)
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": code})
            else:
                kept.append(entry)
        success, errors = delete_batch(self, queue_name, kept) if kept else ([], [])
        return success, [*failed, *errors]

    return delete_message_batch


def _short_sessions(assume_role: Callable[..., AssumedRole]) -> Callable[..., AssumedRole]:
    @functools.wraps(assume_role)
    def assume(self: STSBackend, **kwargs: Any) -> AssumedRole:
        role = assume_role(self, **kwargs)
        if STAND_IN.role_session_seconds is not None:
            role.expiration = utcnow() + timedelta(seconds=STAND_IN.role_session_seconds)
        return role

    return assume


_ORDER_LOCK = threading.Lock()


class _Listed(dict[str, Any]):
    """The part of a bucket's key store under one prefix, shaped as moto's listing reads it."""


@dataclass
class _BucketView:
    keys: _Listed


def _indexed_listing(list_objects: Callable[..., Any]) -> Callable[..., Any]:
    """moto's ListObjects scans every key of the bucket per call (10 ms a call at 15,000
    objects), so listing an organisation's bucket by folders costs moto minutes. The
    stand-in keeps each bucket's key names sorted (rebuilt after any put or delete) and
    hands moto only the keys under the prefix; what moto answers is unchanged."""

    @functools.wraps(list_objects)
    def listing(self: S3Backend, bucket: Any, prefix: str | None, *args: Any, **kw: Any) -> Any:
        store = bucket.keys
        if not prefix or not isinstance(store, _VersionedKeyStore):
            return list_objects(self, bucket, prefix, *args, **kw)
        with _ORDER_LOCK:
            names: list[str] | None = store.__dict__.get("sorted_names")
            if names is None:
                names = store.__dict__["sorted_names"] = sorted(dict.keys(store))
        under = _Listed()
        for name in names[bisect.bisect_left(names, prefix) :]:
            if not name.startswith(prefix):
                break
            key = store.get(name)
            if key is not None:
                under[name] = key
        return list_objects(self, _BucketView(under), prefix, *args, **kw)

    return listing


def _forgetting_order(change: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(change)
    def changed(self: _VersionedKeyStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return change(self, *args, **kwargs)
        finally:
            with _ORDER_LOCK:  # after the change: a listing between them sorts it in
                self.__dict__.pop("sorted_names", None)

    return changed


class ExpiredToken(_RESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("ExpiredToken", "The security token included in the request is expired")


def _refusing_expired(current_account: Callable[[BaseResponse], str]) -> Callable[..., str]:
    """moto accepts an assumed role's keys forever; AWS refuses them once the session
    expired (ExpiredToken). The stand-in does too, so a daemon that fails to refresh its
    role's credentials fails against it as it would against AWS."""

    @functools.wraps(current_account)
    def get_current_account(self: BaseResponse) -> str:
        if STAND_IN.requests is not None:
            STAND_IN.requests.append((self.method, self.uri))
        key = self.get_access_key()
        if key.startswith("ASIA"):
            now = utcnow()
            for by_partition in sts_backends.values():
                for backend in by_partition.values():
                    role = backend.get_assumed_role_from_access_key(key)
                    if role is not None and role.expiration <= now:
                        raise ExpiredToken()
        return current_account(self)

    return get_current_account


def _checking_owner(respond: Callable[..., Any]) -> Callable[..., Any]:
    """moto ignores `x-amz-expected-bucket-owner`; S3 refuses a request whose header names
    another account than the bucket's owner, with the same bare 403 AccessDenied as for a
    missing permission. The stand-in does too (owners: `STAND_IN.bucket_owners`, else the
    account that created the bucket)."""

    @functools.wraps(respond)
    def checked(self: S3Response, request: Any, full_url: str) -> Any:
        expected = request.headers.get("x-amz-expected-bucket-owner")
        name = self.parse_bucket_name_from_url(request, full_url)
        if expected is not None and name:
            owner = STAND_IN.bucket_owners.get(name)
            if owner is None:
                with contextlib.suppress(MissingBucket):
                    owner = self.backend.get_bucket(name).account_id
            if owner is not None and owner != expected:
                raise S3ClientError("AccessDenied", "Access Denied")
        return respond(self, request, full_url)

    return checked


def _json_refusals(authorize: Callable[..., None]) -> Callable[..., None]:
    """moto answers a refused call in XML even when the request was JSON (as botocore sends
    SQS and CloudTrail calls); AWS answers in JSON, and so does the stand-in, so that a
    refusal reads as AccessDenied with its message."""

    @functools.wraps(authorize)
    def authorized(self: BaseResponse, resource: str = "*") -> None:
        try:
            authorize(self, resource)
        except _RESTError as exc:
            if "json" in str(self.headers.get("Content-Type", "")):
                raise exc.to_json() from None
            raise

    return authorized


def _patch_moto() -> None:
    """Once per process: each patch marks what it wrapped with `__wrapped__`."""
    if not hasattr(SQSBackend.receive_message, "__wrapped__"):
        SQSBackend.receive_message = _atomic_receive(SQSBackend.receive_message)  # type: ignore[method-assign]
    if not hasattr(SQSBackend.delete_message_batch, "__wrapped__"):
        SQSBackend.delete_message_batch = _failing_deletes(SQSBackend.delete_message_batch)  # type: ignore[method-assign]
    if not hasattr(STSBackend.assume_role, "__wrapped__"):
        STSBackend.assume_role = _short_sessions(STSBackend.assume_role)  # type: ignore[method-assign]
    if not hasattr(S3Backend.list_objects, "__wrapped__"):
        S3Backend.list_objects = _indexed_listing(S3Backend.list_objects)  # type: ignore[method-assign]
        for name in ("__setitem__", "__delitem__", "pop", "setlist", "clear", "update"):
            setattr(_VersionedKeyStore, name, _forgetting_order(getattr(_VersionedKeyStore, name)))
    if not hasattr(BaseResponse.get_current_account, "__wrapped__"):
        BaseResponse.get_current_account = _refusing_expired(BaseResponse.get_current_account)  # type: ignore[method-assign]
    for name in ("_key_response", "_bucket_response"):
        if not hasattr(getattr(S3Response, name), "__wrapped__"):
            setattr(S3Response, name, _checking_owner(getattr(S3Response, name)))
    if not hasattr(CloudTrailResponse, "list_public_keys"):
        CloudTrailResponse.list_public_keys = _list_public_keys  # type: ignore[attr-defined]
    authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if not hasattr(authorize, "__wrapped__"):
        ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = _json_refusals(  # type: ignore[method-assign]
            authorize
        )
    # moto authorises HeadBucket as `s3:HeadBucket`, an action IAM does not have; AWS
    # authorises it as s3:ListBucket, so a policy that allows only that may ask it.
    S3_ACTIONS["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Yields the endpoint URL of a fresh stand-in on a free loopback port."""
    _patch_moto()
    _keys_from_environment()
    with local_aws.moto_server() as endpoint:
        yield endpoint


async def put_objects(aws_options: AwsOptions, bucket: str, objects: dict[str, bytes]) -> None:
    async with aws.client("s3", aws_options) as s3:
        for key, body in objects.items():
            await s3.put_object(Bucket=bucket, Key=key, Body=body)


async def send(aws_options: AwsOptions, queue_url: str, bodies: list[str]) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def depth(aws_options: AwsOptions, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) as SQS counts them."""
    async with aws.client("sqs", aws_options) as sqs:
        answer = await sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    attrs = answer["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def set_auth(endpoint: str, after_actions: str) -> None:
    """moto checks credentials and IAM policies after this many more actions ("0": from now
    on; "inf": never again, moto's default), over its own HTTP API."""
    async with aiohttp.ClientSession() as http:
        answer = await http.post(f"{endpoint}/moto-api/reset-auth", data=after_actions)
        answer.raise_for_status()


def listings(requests: list[tuple[str, str]], bucket: str) -> list[dict[str, str]]:
    """The ListObjectsV2 calls on the bucket (from `STAND_IN.requests`), as their query
    parameters."""
    found = []
    for method, url in requests:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if method == "GET" and parts.path.strip("/") == bucket and query.get("list-type") == "2":
            found.append(query)
    return found
