"""A seeded, realistic CloudTrail corpus for the demo, the tests and the benchmarks.

Everything is drawn from the `random.Random` passed in (or seeded from `seed`), so a seed
always yields the same keys, bodies and event IDs. Records follow the shapes of real
CloudTrail records (nested identities, `requestParameters` per API, `responseElements`
often null, occasional errors, booleans that are sometimes strings); keys follow the exact
S3 layout CloudTrail writes, organisation prefix and digest files included.

Sizes: most records are 0.8-4 KB; about one in a thousand carries a ~100 KB inline policy,
as real `PutRolePolicy`/`PutBucketPolicy` calls do.

This module assembles records and files; its data lives beside it: the name tables in
`corpus_names.py`, one template per API in `corpus_apis.py`, the seeded draws both use in
`corpus_draw.py`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import orjson

from cloudtrail_adapter.emulator import corpus_draw as draw
from cloudtrail_adapter.emulator.corpus_apis import APIS, Api, large_policy
from cloudtrail_adapter.emulator.corpus_draw import Ctx, Json
from cloudtrail_adapter.emulator.corpus_names import (
    HUMAN_WEIGHTS,
    IDENTITY_WEIGHTS,
    REGIONS,
    ROLES,
    SERVICES,
    SESSIONS,
    TLS,
    USER_AGENTS,
    USERS,
)
from cloudtrail_adapter.sources.trail_layout import DIGEST_FOLDER, DIGEST_MARK, LOG_FOLDER

__all__ = [
    "LARGE_RECORD_RATE",
    "REGIONS",
    "START",
    "CorpusFile",
    "cloudtrail_record",
    "digest_file",
    "digest_key",
    "log_file",
    "object_key",
    "org_trail",
    "write_directory",
]

#: The first day of every `org_trail` corpus (fixed, so that keys are stable).
START: Final = datetime(2024, 5, 6, tzinfo=UTC)
#: How often a record carries a ~100 KB policy document.
LARGE_RECORD_RATE: Final = 0.001

_GZIP_LEVEL: Final = 6
_DELIVERY_STEP_MINUTES: Final = 5
_KEY_LAYOUT_TIME: Final = "%Y%m%dT%H%MZ"
_DIGEST_LAYOUT_TIME: Final = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class CorpusFile:
    """One S3 object of the corpus; `event_ids` in file order (empty for digests)."""

    key: str
    body: bytes
    event_ids: tuple[str, ...]
    kind: Literal["log", "digest"]


# ---------------------------------------------------------------------------------------
# Records


def cloudtrail_record(
    rng: random.Random, *, account: str, region: str, when: datetime
) -> dict[str, Any]:
    """One realistic CloudTrail record made in `account`/`region` at `when` (UTC)."""
    large = rng.random() < LARGE_RECORD_RATE
    identity_type = _weighted(rng, HUMAN_WEIGHTS if large else IDENTITY_WEIGHTS)
    identity, actor_arn = _identity(rng, identity_type, account, when)
    ctx = Ctx(rng, account, region, when, identity, actor_arn)
    api = large_policy(ctx) if large else _pick_api(rng, identity_type, region).build(ctx)
    return _assemble(ctx, identity_type, api)


def _assemble(ctx: Ctx, identity_type: str, api: Json) -> Json:
    rng = ctx.rng
    service = api["eventSource"].split(".", 1)[0]
    record: Json = {
        "eventVersion": rng.choice(("1.08", "1.09", "1.09")),
        "userIdentity": ctx.identity,
        "eventTime": draw.iso(ctx.when),
        "eventSource": api["eventSource"],
        "eventName": api["eventName"],
        "awsRegion": "us-east-1" if api.get("global") else ctx.region,
    }
    if identity_type == "AWSService":
        invoker = ctx.identity["invokedBy"]
        record["sourceIPAddress"] = invoker
        record["userAgent"] = invoker
    else:
        record["sourceIPAddress"] = draw.public_ip(rng)
        agent = api.get("userAgent") or rng.choice(USER_AGENTS)
        record["userAgent"] = agent.format(service=service, op=_kebab(api["eventName"]))
    response = api.get("responseElements")
    if rng.random() < 0.05 and api.get("canFail", True):
        code, message = _error(rng, service, api["eventName"], ctx.actor_arn)
        record["errorCode"] = code
        record["errorMessage"] = message
        response = None
    record["requestParameters"] = api.get("requestParameters")
    record["responseElements"] = response
    if "additionalEventData" in api:
        record["additionalEventData"] = api["additionalEventData"]
    record["requestID"] = api.get("requestID") or draw.uuid(rng)
    record["eventID"] = draw.uuid(rng)
    record["readOnly"] = api["readOnly"]
    if "resources" in api:
        record["resources"] = api["resources"]
    record["eventType"] = api.get("eventType", "AwsApiCall")
    category = api.get("eventCategory", "Management")
    record["managementEvent"] = category == "Management"
    record["recipientAccountId"] = ctx.account
    if identity_type == "AWSService" and rng.random() < 0.5:
        record["sharedEventID"] = draw.uuid(rng)
    if category == "Data" and rng.random() < 0.2:
        record["vpcEndpointId"] = f"vpce-{draw.hex_digits(rng, 17)}"
    record["eventCategory"] = category
    if identity_type != "AWSService":
        version, cipher = rng.choice(TLS)
        host = api.get("host") or f"{service}.{record['awsRegion']}.amazonaws.com"
        record["tlsDetails"] = {
            "tlsVersion": version,
            "cipherSuite": cipher,
            "clientProvidedHostHeader": host,
        }
    if identity_type in ("IAMUser", "Root") and rng.random() < 0.3:
        record["sessionCredentialFromConsole"] = "true"
    return record


def _identity(rng: random.Random, kind: str, account: str, when: datetime) -> tuple[Json, str]:
    created = draw.iso(when - timedelta(minutes=rng.randint(1, 600)))
    mfa = rng.choice(("true", "false"))
    if kind == "AWSService":
        return {"type": "AWSService", "invokedBy": rng.choice(SERVICES)}, ""
    if kind == "Root":
        arn = f"arn:aws:iam::{account}:root"
        return {
            "type": "Root",
            "principalId": account,
            "arn": arn,
            "accountId": account,
            "accessKeyId": draw.key_id(rng, "ASIA"),
            "sessionContext": {"attributes": {"creationDate": created, "mfaAuthenticated": mfa}},
        }, arn
    if kind == "IAMUser":
        user = rng.choice(USERS)
        arn = f"arn:aws:iam::{account}:user/{user}"
        identity: Json = {
            "type": "IAMUser",
            "principalId": draw.stable_id("AIDA", account, user),
            "arn": arn,
            "accountId": account,
            "accessKeyId": draw.key_id(rng, rng.choice(("AKIA", "ASIA"))),
            "userName": user,
        }
        if identity["accessKeyId"].startswith("ASIA"):
            identity["sessionContext"] = {
                "attributes": {"creationDate": created, "mfaAuthenticated": mfa}
            }
        return identity, arn
    role = rng.choice(ROLES)
    session = rng.choice(SESSIONS)
    role_id = draw.stable_id("AROA", account, role)
    arn = f"arn:aws:sts::{account}:assumed-role/{role}/{session}"
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": arn,
        "accountId": account,
        "accessKeyId": draw.key_id(rng, "ASIA"),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": created, "mfaAuthenticated": mfa},
            **({"sourceIdentity": session} if "@" in session else {}),
        },
    }, arn


def _pick_api(rng: random.Random, identity_type: str, region: str) -> Api:
    apis, weights = _candidates(identity_type, region == "us-east-1")
    return rng.choices(apis, cum_weights=weights)[0]


@cache
def _candidates(identity_type: str, global_region: bool) -> tuple[list[Api], list[int]]:
    apis = [
        api
        for api in APIS
        if identity_type in api.identities and (global_region or not api.global_service)
    ]
    return apis, list(itertools.accumulate(api.weight for api in apis))


def _error(rng: random.Random, service: str, name: str, actor: str) -> tuple[str, str]:
    if rng.random() < 0.15:
        return "ThrottlingException", "Rate exceeded"
    if service == "ec2":
        blob = base64.b64encode(rng.randbytes(rng.randint(300, 600))).decode()
        return (
            "Client.UnauthorizedOperation",
            "You are not authorized to perform this operation. User: "
            f"{actor} is not authorized to perform: ec2:{name} because no identity-based "
            f"policy allows the ec2:{name} action. Encoded authorization failure message: {blob}",
        )
    if service in ("kms", "lambda", "secretsmanager", "ssm"):
        return (
            "AccessDeniedException",
            f"User: {actor} is not authorized to perform: {service}:{name} because no "
            "identity-based policy allows the action",
        )
    if service == "iam" and name.startswith("Get"):
        return "NoSuchEntity", "The user with name nobody cannot be found."
    return "AccessDenied", "Access Denied"


# ---------------------------------------------------------------------------------------
# Files and keys


def log_file(records: list[dict[str, Any]], *, gzipped: bool = True) -> bytes:
    """A log file as CloudTrail writes it: compact `{"Records":[...]}`, gzip level 6."""
    plain = orjson.dumps({"Records": records})
    return _gzip(plain) if gzipped else plain


def object_key(
    *,
    prefix: str,
    org_id: str | None,
    account: str,
    region: str,
    when: datetime,
    rng: random.Random,
) -> str:
    """`[prefix/]AWSLogs/[o-ORGID/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/<name>.json.gz`."""
    when = when.astimezone(UTC)
    stamp = when.strftime(_KEY_LAYOUT_TIME)
    name = f"{account}_CloudTrail_{region}_{stamp}_{draw.alnum(rng, 16)}.json.gz"
    return _layout(prefix, org_id, account, LOG_FOLDER, region, when, name)


def digest_key(
    *,
    prefix: str,
    org_id: str | None,
    account: str,
    region: str,
    when: datetime,
    trail_name: str = "org-trail",
) -> str:
    """The digest delivered at `when` (its end time), in the digest folder of its stream."""
    when = when.astimezone(UTC)
    name = (
        f"{account}{DIGEST_MARK}{region}_{trail_name}_{region}_"
        f"{when.strftime(_DIGEST_LAYOUT_TIME)}.json.gz"
    )
    return _layout(prefix, org_id, account, DIGEST_FOLDER, region, when, name)


def digest_file(
    *,
    bucket: str,
    key: str,
    account: str,
    start: datetime,
    end: datetime,
    rng: random.Random,
    logs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = (),
    previous: tuple[str, bytes] | None = None,
    gzipped: bool = True,
) -> bytes:
    """A digest file for the log files delivered between `start` and `end`.

    `logs` are (key, records) of those files; `previous` is the previous digest's key and
    uncompressed content, which the chain of hashes refers to. Hashes are real SHA-256
    values of the uncompressed content; signatures are random hex (nothing verifies them).
    """
    entries = []
    for log_key, records in logs:
        plain = orjson.dumps({"Records": records})
        times = sorted(str(r["eventTime"]) for r in records)
        entries.append(
            {
                "s3Bucket": bucket,
                "s3Object": log_key,
                "hashValue": hashlib.sha256(plain).hexdigest(),
                "hashAlgorithm": "SHA-256",
                "newestEventTime": times[-1] if times else None,
                "oldestEventTime": times[0] if times else None,
            }
        )
    newest = [e["newestEventTime"] for e in entries if e["newestEventTime"]]
    oldest = [e["oldestEventTime"] for e in entries if e["oldestEventTime"]]
    document: Json = {
        "awsAccountId": account,
        "digestStartTime": draw.iso(start),
        "digestEndTime": draw.iso(end),
        "digestS3Bucket": bucket,
        "digestS3Object": key,
        "digestPublicKeyFingerprint": draw.hex_digits(rng, 32),
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": max(newest) if newest else None,
        "oldestEventTime": min(oldest) if oldest else None,
        "previousDigestS3Bucket": bucket if previous else None,
        "previousDigestS3Object": previous[0] if previous else None,
        "previousDigestHashValue": hashlib.sha256(previous[1]).hexdigest() if previous else None,
        "previousDigestHashAlgorithm": "SHA-256" if previous else None,
        "previousDigestSignature": draw.hex_digits(rng, 512) if previous else None,
        "logFiles": entries,
    }
    plain = orjson.dumps(document)
    return _gzip(plain) if gzipped else plain


def org_trail(
    seed: int,
    *,
    accounts: int = 3,
    regions: int = 2,
    days: int = 2,
    files_per_day: int = 2,
    records_per_file: tuple[int, int] = (1, 200),
    org_id: str | None = "o-a1b2c3d4e5",
    prefix: str = "",
    digests: bool = True,
) -> list[CorpusFile]:
    """An organisation trail's bucket: logs per account, region and day, and their digests.

    Log files are delivered at distinct 5-minute marks of each day (so `files_per_day` is
    at most 288) and hold `records_per_file` records (inclusive bounds; 0 gives
    `{"Records":[]}` files). Digests cover each hour that had a delivery plus one idle hour
    a day, chained per account and region like CloudTrail's. Same seed, same corpus.
    """
    slots = 24 * 60 // _DELIVERY_STEP_MINUTES
    if not 0 <= files_per_day <= slots:
        raise ValueError(f"files_per_day must be between 0 and {slots}, got {files_per_day}")
    if not 1 <= regions <= len(REGIONS):
        raise ValueError(f"regions must be between 1 and {len(REGIONS)}, got {regions}")
    low, high = records_per_file
    if not 0 <= low <= high:
        raise ValueError(
            f"records_per_file must be (low, high) with 0 <= low <= high, got {records_per_file}"
        )
    rng = random.Random(seed)
    account_ids = _account_ids(rng, accounts)
    owner = account_ids[0] if account_ids else "000000000000"
    bucket = f"aws-cloudtrail-logs-{owner}-{draw.hex_digits(rng, 8)}"
    layout: Json = {"prefix": prefix, "org_id": org_id}
    files: list[CorpusFile] = []
    for account in account_ids:
        for region in REGIONS[:regions]:
            delivered: dict[datetime, list[tuple[str, list[Json]]]] = {}
            for day in range(days):
                day_start = START + timedelta(days=day)
                marks = sorted(rng.sample(range(slots), files_per_day))
                for mark in marks:
                    when = day_start + timedelta(minutes=mark * _DELIVERY_STEP_MINUTES)
                    records = [
                        cloudtrail_record(
                            rng,
                            account=account,
                            region=region,
                            when=when - timedelta(seconds=rng.randint(20, 900)),
                        )
                        for _ in range(rng.randint(low, high))
                    ]
                    key = object_key(account=account, region=region, when=when, rng=rng, **layout)
                    event_ids = tuple(str(r["eventID"]) for r in records)
                    files.append(CorpusFile(key, log_file(records), event_ids, "log"))
                    hour = when.replace(minute=0)
                    delivered.setdefault(hour, []).append((key, records))
                idle = day_start + timedelta(hours=rng.randrange(24))
                delivered.setdefault(idle, [])
            if digests:
                files.extend(_digests(rng, bucket, account, region, delivered, layout))
    return files


def _digests(
    rng: random.Random,
    bucket: str,
    account: str,
    region: str,
    delivered: Mapping[datetime, list[tuple[str, list[Json]]]],
    layout: Json,
) -> list[CorpusFile]:
    out: list[CorpusFile] = []
    previous: tuple[str, bytes] | None = None
    for hour in sorted(delivered):
        end = hour + timedelta(hours=1, seconds=rng.randint(0, 59))
        key = digest_key(account=account, region=region, when=end, **layout)
        plain = digest_file(
            bucket=bucket,
            key=key,
            account=account,
            start=end - timedelta(hours=1),
            end=end,
            rng=rng,
            logs=delivered[hour],
            previous=previous,
            gzipped=False,
        )
        out.append(CorpusFile(key, _gzip(plain), (), "digest"))
        previous = (key, plain)
    return out


def write_directory(files: Iterable[CorpusFile], root: Path) -> None:
    """Write each file at its key, relative to `root` (the layout the `file:` source reads)."""
    for f in files:
        relative = PurePosixPath(f.key)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"refusing to write outside {root}: {f.key!r}")
        path = root.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.body)


def _layout(
    prefix: str,
    org_id: str | None,
    account: str,
    folder: str,
    region: str,
    when: datetime,
    name: str,
) -> str:
    parts = [prefix.strip("/")] if prefix.strip("/") else []
    parts.append("AWSLogs")
    if org_id:
        parts.append(org_id)
    parts += [account, folder, region, when.strftime("%Y/%m/%d"), name]
    return "/".join(parts)


# ---------------------------------------------------------------------------------------
# Small helpers (every random choice goes through the rng passed in)


def _gzip(plain: bytes) -> bytes:
    return gzip.compress(plain, compresslevel=_GZIP_LEVEL, mtime=0)


def _weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([name for name, _ in table], weights=[w for _, w in table])[0]


def _account_ids(rng: random.Random, count: int) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[str(rng.randrange(10**11, 10**12))] = None
    return list(seen)


@lru_cache(maxsize=256)
def _kebab(name: str) -> str:
    out = [f"-{c.lower()}" if c.isupper() else c for c in name.rstrip("0123456789v")]
    return "".join(out).lstrip("-")
