"""A CloudTrail trail with log file validation on, built as CloudTrail builds one.

Per account and region: log files (gzip of compact `{"Records":[...]}`), and one digest an
hour naming the hour's files with the SHA-256 of their uncompressed content, chained to the
digest before it (`previousDigestSignature`, `previousDigestHashValue` of the previous
digest's uncompressed content), written as CloudTrail's Java writer writes JSON (compact,
`/` escaped as `\\/`, as real digests are), gzipped, and signed SHA256withRSA over the
string the AWS user guide gives, with the region's key; the signature and its algorithm in
the object's metadata. `public_keys()` is what the stand-in's ListPublicKeys serves.

The tampering helpers change a built trail as someone with write access to the bucket
could (edit, delete or add a file; drop a digest; sign with another key), or as a trail
whose validation was turned off and on would look (`restart_at`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import cloudtrail_record
from cloudtrail_adapter.sources.trail_layout import file_time, place

__all__ = ["Trail", "TrailFile", "TrailKey", "build_trail", "digests_for", "signed_digest"]

HOUR = timedelta(hours=1)
#: Where a digest's period starts within its hour (CloudTrail's are at odd seconds too).
PERIOD_OFFSET = timedelta(minutes=1, seconds=1)
#: When the hour's log files are delivered: well inside the period.
DELIVERIES = (timedelta(minutes=10), timedelta(minutes=40))
ALGORITHM = "SHA256withRSA"
VALIDITY = timedelta(days=400)


@dataclass(frozen=True)
class TrailKey:
    """One region's signing key, and its public half as ListPublicKeys gives it."""

    private: rsa.RSAPrivateKey
    der: bytes  # the public key, DER in PKCS#1 ("the DER encoded public key value in PKCS#1")
    fingerprint: str  # MD5 of `der`, as CloudTrail names its keys

    @classmethod
    def generate(cls) -> TrailKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        return cls(private, der, hashlib.md5(der, usedforsecurity=False).hexdigest())

    def sign(self, message: bytes) -> str:
        return self.private.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex()


@dataclass(frozen=True)
class TrailFile:
    key: str
    body: bytes
    kind: Literal["log", "digest"]
    account: str
    region: str
    hour: int
    metadata: dict[str, str] = field(default_factory=dict)
    event_ids: tuple[str, ...] = ()
    plain: bytes = b""  # uncompressed content


@dataclass
class Trail:
    bucket: str
    start: datetime
    hours: int
    keys: dict[str, TrailKey]  # by region
    files: dict[str, TrailFile] = field(default_factory=dict)
    prefix: str = ""
    org_id: str | None = None
    trail_name: str = "org-trail"
    home_region: str = "us-east-1"

    def logs(self, account: str | None = None, region: str | None = None) -> list[TrailFile]:
        return self._of("log", account, region)

    def digests(self, account: str | None = None, region: str | None = None) -> list[TrailFile]:
        return self._of("digest", account, region)

    def _of(self, kind: str, account: str | None, region: str | None) -> list[TrailFile]:
        return sorted(
            (
                f
                for f in self.files.values()
                if f.kind == kind
                and (account is None or f.account == account)
                and (region is None or f.region == region)
            ),
            key=lambda f: f.key,
        )

    def event_ids(self) -> list[str]:
        return [e for f in self.logs() for e in f.event_ids]

    def public_keys(self) -> dict[str, list[tuple[bytes, float, float]]]:
        """For the stand-in: each region's key, valid around the trail's time."""
        since = (self.start - VALIDITY / 2).timestamp()
        until = (self.start + VALIDITY / 2).timestamp()
        return {region: [(k.der, since, until)] for region, k in self.keys.items()}

    async def upload(self, options: AwsOptions) -> None:
        async with aws.client("s3", options) as s3:
            for f in self.files.values():
                await s3.put_object(Bucket=self.bucket, Key=f.key, Body=f.body, Metadata=f.metadata)

    # ---------------------------------------------------------------------------------
    # Tampering

    def edit_log(self, key: str) -> None:
        """One record's eventName changed, the file re-gzipped: still a valid log file."""
        f = self.files[key]
        doc = json.loads(f.plain)
        doc["Records"][0]["eventName"] = "DeleteTrail"
        plain = json.dumps(doc, separators=(",", ":")).encode()
        self.files[key] = replace(f, body=gzip.compress(plain), plain=plain)

    def damage_log(self, key: str) -> None:
        """One byte of its first record's eventName made invalid UTF-8, the file re-gzipped:
        damage inside `Records`, so the file is salvaged (its other records ship, that one
        is set aside), and not what AWS hashed."""
        f = self.files[key]
        doc = json.loads(f.plain)
        name = doc["Records"][0]["eventName"].encode()
        plain = f.plain.replace(b'"eventName":"' + name, b'"eventName":"\xff' + name[1:], 1)
        assert plain != f.plain
        lost = doc["Records"][0]["eventID"]
        ids = tuple(i for i in f.event_ids if i != lost)
        self.files[key] = replace(f, body=gzip.compress(plain), plain=plain, event_ids=ids)

    def corrupt_log(self, key: str) -> None:
        """Replaced by bytes that are gzip's magic and nothing CloudTrail could write."""
        f = self.files[key]
        self.files[key] = replace(f, body=b"\x1f\x8b" + bytes(range(64)), event_ids=())

    def delete(self, key: str) -> None:
        del self.files[key]

    def add_log(self, account: str, region: str, hour: int, minute: int = 25) -> str:
        """A log file CloudTrail never wrote, named and shaped as its own are."""
        rng = random.Random(f"forged-{account}-{region}-{hour}")
        f = _log_file(self, rng, account, region, hour, timedelta(minutes=minute))
        self.files[f.key] = f
        return f.key

    def resign(self, key: str, with_key: TrailKey, *, own_fingerprint: bool) -> None:
        """A digest signed with another key: naming the region's key (`own_fingerprint`
        False, a forgery under CloudTrail's name) or the signer's own (unknown to AWS)."""
        f = self.files[key]
        doc = json.loads(f.plain)
        if own_fingerprint:
            doc["digestPublicKeyFingerprint"] = with_key.fingerprint
        plain = _java_json(doc)
        signature = with_key.sign(_signing_string(doc, plain))
        metadata = {"signature": signature, "signature-algorithm": ALGORITHM}
        self.files[key] = replace(f, body=gzip.compress(plain), plain=plain, metadata=metadata)


def build_trail(
    bucket: str,
    *,
    accounts: Iterable[str] = ("111122223333",),
    regions: Iterable[str] = ("us-east-1",),
    hours: int = 4,
    start: datetime = datetime(2026, 11, 20, 8, tzinfo=UTC),
    keys: dict[str, TrailKey] | None = None,
    org_id: str | None = "o-a1b2c3d4e5",
    prefix: str = "",
    restart_at: int | None = None,
    digest_hours: Iterable[int] | None = None,
    seed: int = 7,
) -> Trail:
    """`hours` hours from `start` (on the hour): two log files an hour per account and
    region, and the hour's digest (only for `digest_hours`, when given: a digest not
    written yet). `restart_at`: that hour's digest starts a new chain (validation off and
    on again), the ones after chain to it."""
    regions = list(regions)
    keys = keys if keys is not None else {r: TrailKey.generate() for r in regions}
    trail = Trail(bucket, start, hours, keys, prefix=prefix, org_id=org_id)
    rng = random.Random(seed)
    wanted = set(range(hours) if digest_hours is None else digest_hours)
    for account in accounts:
        for region in regions:
            previous: TrailFile | None = None
            for hour in range(hours):
                logs = [_log_file(trail, rng, account, region, hour, at) for at in DELIVERIES]
                for log in logs:
                    trail.files[log.key] = log
                link = None if hour == restart_at else previous
                digest = _digest_file(trail, account, region, hour, logs, link)
                if hour in wanted:
                    trail.files[digest.key] = digest
                previous = digest
    return trail


def _layout(trail: Trail, account: str, kind: str, region: str, when: datetime) -> str:
    parts = [trail.prefix.strip("/")] if trail.prefix.strip("/") else []
    parts.append("AWSLogs")
    if trail.org_id:
        parts.append(trail.org_id)
    parts += [account, kind, region, when.strftime("%Y/%m/%d")]
    return "/".join(parts) + "/"


def _log_file(
    trail: Trail, rng: random.Random, account: str, region: str, hour: int, at: timedelta
) -> TrailFile:
    delivered = trail.start + hour * HOUR + at
    records = [
        cloudtrail_record(
            rng, account=account, region=region, when=delivered - timedelta(seconds=s)
        )
        for s in sorted(rng.sample(range(30, 290), 3))
    ]
    plain = json.dumps({"Records": records}, separators=(",", ":")).encode()
    unique = "".join(
        rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=16)
    )
    name = f"{account}_CloudTrail_{region}_{delivered:%Y%m%dT%H%MZ}_{unique}.json.gz"
    key = _layout(trail, account, "CloudTrail", region, delivered) + name
    ids = tuple(str(r["eventID"]) for r in records)
    return TrailFile(
        key, gzip.compress(plain), "log", account, region, hour, event_ids=ids, plain=plain
    )


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest_file(
    trail: Trail,
    account: str,
    region: str,
    hour: int,
    logs: list[TrailFile],
    previous: TrailFile | None,
) -> TrailFile:
    start = trail.start + hour * HOUR + PERIOD_OFFSET
    root = _layout(trail, account, "CloudTrail-Digest", region, start + HOUR)
    name = f"{trail.trail_name}_{trail.home_region}"
    digest = signed_digest(
        trail.bucket, root, account, region, start, logs, previous, trail.keys[region], name
    )
    return replace(digest, hour=hour)


def signed_digest(
    bucket: str,
    folder: str,
    account: str,
    region: str,
    start: datetime,
    logs: list[TrailFile],
    previous: TrailFile | None,
    key: TrailKey,
    trail: str = "org-trail_us-east-1",
) -> TrailFile:
    """The digest of the hour from `start` naming `logs`, in `folder` (its day folder),
    chained to `previous`, signed with `key`. `trail` is the name's TRAIL_HOMEREGION."""
    end = start + HOUR
    name = f"{account}_CloudTrail-Digest_{region}_{trail}_{end:%Y%m%dT%H%M%SZ}.json.gz"
    key_name = folder + name
    times = [_event_times(f) for f in logs]
    previous_doc: dict[str, Any] = {}
    if previous is not None:
        previous_doc = {
            "previousDigestS3Bucket": bucket,
            "previousDigestS3Object": previous.key,
            "previousDigestHashValue": hashlib.sha256(previous.plain).hexdigest(),
            "previousDigestHashAlgorithm": "SHA-256",
            "previousDigestSignature": previous.metadata["signature"],
        }
    doc: dict[str, Any] = {
        "awsAccountId": account,
        "digestStartTime": _iso(start),
        "digestEndTime": _iso(end),
        "digestS3Bucket": bucket,
        "digestS3Object": key_name,
        "digestPublicKeyFingerprint": key.fingerprint,
        "digestSignatureAlgorithm": ALGORITHM,
        "newestEventTime": max(t[1] for t in times) if times else None,
        "oldestEventTime": min(t[0] for t in times) if times else None,
        "previousDigestS3Bucket": previous_doc.get("previousDigestS3Bucket"),
        "previousDigestS3Object": previous_doc.get("previousDigestS3Object"),
        "previousDigestHashValue": previous_doc.get("previousDigestHashValue"),
        "previousDigestHashAlgorithm": previous_doc.get("previousDigestHashAlgorithm"),
        "previousDigestSignature": previous_doc.get("previousDigestSignature"),
        "logFiles": [
            {
                "s3Bucket": bucket,
                "s3Object": f.key,
                "hashValue": hashlib.sha256(f.plain).hexdigest(),
                "hashAlgorithm": "SHA-256",
                "newestEventTime": t[1],
                "oldestEventTime": t[0],
            }
            for f, t in zip(logs, times, strict=True)
        ],
    }
    plain = _java_json(doc)
    signature = key.sign(_signing_string(doc, plain))
    metadata = {"signature": signature, "signature-algorithm": ALGORITHM}
    return TrailFile(
        key_name, gzip.compress(plain), "digest", account, region, 0, metadata, plain=plain
    )


def digests_for(bucket: str, logs: Iterable[tuple[str, bytes]], key: TrailKey) -> list[TrailFile]:
    """Signed, chained digests for log files already written (key, gzip body), one per
    account, region and hour that has files, each naming the files delivered in its
    period (the hour from :01:01), all signed with `key`."""
    groups: dict[tuple[str, str, str], dict[datetime, list[TrailFile]]] = {}
    for log_key, body in logs:
        where = place(log_key)
        when = file_time(log_key)
        if where is None or when is None:
            continue
        plain = gzip.decompress(body)
        log = TrailFile(log_key, body, "log", where.account, where.region, 0, plain=plain)
        root = where.folder.split(f"/CloudTrail/{where.region}/")[0] + "/CloudTrail-Digest/"
        start = (when - PERIOD_OFFSET).replace(minute=0, second=0) + PERIOD_OFFSET
        stream = groups.setdefault((root, where.account, where.region), {})
        stream.setdefault(start, []).append(log)
    digests = []
    for (root, account, region), hours in groups.items():
        previous = None
        for start in sorted(hours):
            folder = f"{root}{region}/{start + HOUR:%Y/%m/%d}/"
            previous = signed_digest(
                bucket, folder, account, region, start, hours[start], previous, key
            )
            digests.append(previous)
    return digests


def _event_times(f: TrailFile) -> tuple[str, str]:
    times = sorted(str(r["eventTime"]) for r in json.loads(f.plain)["Records"])
    return times[0], times[-1]


def _java_json(doc: dict[str, Any]) -> bytes:
    """Compact, with `/` escaped, as the digests CloudTrail writes are."""
    return json.dumps(doc, separators=(",", ":")).replace("/", "\\/").encode()


def _signing_string(doc: dict[str, Any], plain: bytes) -> bytes:
    """The AWS user guide's Data_To_Sign_String."""
    previous = doc["previousDigestSignature"]
    return (
        f"{doc['digestEndTime']}\n{doc['digestS3Bucket']}/{doc['digestS3Object']}\n"
        f"{hashlib.sha256(plain).hexdigest()}\n{'null' if previous is None else previous}"
    ).encode()
