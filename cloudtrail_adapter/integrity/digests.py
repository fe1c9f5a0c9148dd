"""One CloudTrail digest file: where it sits, what it says, and whether AWS signed it.

Pure functions, as the AWS CloudTrail user guide ("CloudTrail digest file structure",
"Custom implementations of CloudTrail log file integrity validation") and aws-cli's
`validate-logs` define them:

- a digest is gzip of one JSON document; its signature is hex in the object's
  `x-amz-meta-signature` metadata (`x-amz-meta-signature-algorithm`: `SHA256withRSA`);
- the signed string is `digestEndTime`, `digestS3Bucket/digestS3Object`, the hex SHA-256 of
  the *uncompressed* digest and the previous digest's signature (`null` for a starting
  digest), joined by newlines; RSA PKCS#1 v1.5 over SHA-256 of that string;
- the public key is the one `ListPublicKeys` returns, for the digest's region, whose
  `Fingerprint` equals `digestPublicKeyFingerprint`; its `Value` is DER (PKCS#1, or
  SubjectPublicKeyInfo for some old keys) and its fingerprint the MD5 of those bytes;
- a log file's `hashValue` is the hex SHA-256 of its uncompressed content;
- `previousDigestHashValue` is the hex SHA-256 of the previous digest's uncompressed content.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
from isal import isal_zlib

from cloudtrail_adapter.decoding.decode import GZIP_MAGIC, GZIP_WBITS
from cloudtrail_adapter.sources.trail_layout import DIGEST_FOLDER, DIGEST_MARK, Place, place

__all__ = [
    "HASH_ALGORITHM",
    "MAX_DIGEST_BYTES",
    "SIGNATURE_ALGORITHM",
    "DigestDocument",
    "DigestFormatError",
    "DigestName",
    "LogEntry",
    "Opened",
    "digest_name",
    "fingerprint",
    "location_problem",
    "open_digest",
    "parse_time",
    "signing_string",
    "verify_signature",
]

SIGNATURE_ALGORITHM: Final = "SHA256withRSA"
HASH_ALGORITHM: Final = "SHA-256"
#: A digest names an hour's files (a few KB); anything this large is not one.
MAX_DIGEST_BYTES: Final = 16 << 20
MAX_PLAIN_BYTES: Final = 64 << 20

_DIGEST_NAME: Final = re.compile(
    rf"^(?P<account>\d{{12}}){re.escape(DIGEST_MARK)}(?P<region>[^_/]+)_(?P<trail>[^/]+)_"
    r"(?P<stamp>\d{8}T\d{6}Z)(?P<backfill>_backfill)?\.json\.gz$"
)
_IsalError: Final[type[Exception]] = isal_zlib.error  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class DigestName:
    """What a digest's key says. `series` names one chain: the same trail's digests of one
    account and region (backfill digests chain apart); `end` is the time in the name."""

    place: Place
    series: str
    end: float
    backfill: bool


def digest_name(key: str) -> DigestName | None:
    """`ACCOUNT` `DIGEST_MARK` `REGION_TRAIL_HOMEREGION_YYYYMMDDTHHMMSSZ[_backfill].json.gz`
    under a digest folder, or None."""
    where = place(key)
    if where is None or where.kind != DIGEST_FOLDER:
        return None
    name = _DIGEST_NAME.match(key[len(where.folder) :])
    if name is None:
        return None
    stream = where.folder[: -len("YYYY/MM/DD/")]
    series = f"{stream}{name['account']}_{name['region']}_{name['trail']}"
    if name["backfill"]:
        series += "#backfill"
    end = datetime.strptime(name["stamp"], "%Y%m%dT%H%M%S%z").timestamp()
    return DigestName(where, series, end, bool(name["backfill"]))


class LogEntry(msgspec.Struct, frozen=True):
    """One log file a digest names."""

    s3Bucket: str | None = None
    s3Object: str | None = None
    hashValue: str | None = None
    hashAlgorithm: str | None = None


class DigestDocument(msgspec.Struct, frozen=True):
    """The fields a check reads; the keys aws-cli requires are required here too (a
    starting digest has `previousDigestSignature: null`, present all the same)."""

    digestStartTime: str
    digestEndTime: str
    digestS3Bucket: str
    digestS3Object: str
    digestPublicKeyFingerprint: str
    previousDigestSignature: str | None
    awsAccountId: str | None = None
    digestSignatureAlgorithm: str | None = None
    previousDigestS3Bucket: str | None = None
    previousDigestS3Object: str | None = None
    previousDigestHashValue: str | None = None
    previousDigestHashAlgorithm: str | None = None
    logFiles: list[LogEntry] = msgspec.field(default_factory=list)


_decode_document: Final = msgspec.json.Decoder(DigestDocument).decode


class DigestFormatError(Exception):
    """Not a digest CloudTrail could have written; the message says why."""


@dataclass(frozen=True, slots=True)
class Opened:
    document: DigestDocument
    sha256: str  # hex SHA-256 of the uncompressed document: what is signed, and chained
    start: float
    end: float


def open_digest(body: bytes) -> Opened:
    """The document of a digest object's bytes (gzip, as CloudTrail writes them)."""
    if len(body) > MAX_DIGEST_BYTES:
        raise DigestFormatError(f"{len(body)} bytes: larger than any digest")
    if body[:2] != GZIP_MAGIC:
        raise DigestFormatError("not gzip")
    inflater = isal_zlib.decompressobj(wbits=GZIP_WBITS)
    try:
        plain = inflater.decompress(body, MAX_PLAIN_BYTES + 1)
    except _IsalError as exc:
        raise DigestFormatError(f"corrupt gzip: {exc}") from None
    if len(plain) > MAX_PLAIN_BYTES or not inflater.eof:
        raise DigestFormatError("gzip that does not end as one digest")
    try:
        document = _decode_document(plain)
    except msgspec.DecodeError as exc:  # ValidationError included: a required key missing
        raise DigestFormatError(f"invalid format: {exc}") from None
    try:
        start, end = parse_time(document.digestStartTime), parse_time(document.digestEndTime)
    except ValueError:
        raise DigestFormatError("invalid format: digestStartTime/digestEndTime") from None
    return Opened(document, hashlib.sha256(plain).hexdigest(), start, end)


def location_problem(document: DigestDocument, bucket: str, key: str) -> str | None:
    """A digest signs where it was written; one read from anywhere else was moved or
    copied there (step 2 of AWS's custom validation)."""
    if document.digestS3Bucket != bucket or document.digestS3Object != key:
        where = f"s3://{document.digestS3Bucket}/{document.digestS3Object}"
        return f"moved from where CloudTrail wrote it ({where})"
    return None


def signing_string(document: DigestDocument, sha256: str) -> bytes:
    """What CloudTrail signed: end time, S3 path, the digest's own hash, the previous
    digest's signature (`null` when there is none, as CloudTrail's Java writer has it)."""
    previous = document.previousDigestSignature
    return (
        f"{document.digestEndTime}\n{document.digestS3Bucket}/{document.digestS3Object}\n"
        f"{sha256}\n{'null' if previous is None else previous}"
    ).encode()


def verify_signature(public_der: bytes, signature_hex: str, message: bytes) -> bool:
    """SHA256withRSA (PKCS#1 v1.5) of `message` under the DER public key; False for any
    key, signature or encoding that does not verify. `cryptography` (10 MB resident) is
    imported here, by the first verification, not by every S3 source that lists."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        signature = binascii.unhexlify(signature_hex.strip())
        key = serialization.load_der_public_key(public_der)
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def fingerprint(public_der: bytes) -> str:
    """How CloudTrail names a public key: the MD5 of its DER bytes, in hex (checked against
    the keys AWS's user guide shows with their fingerprints). A name, not a security check."""
    return hashlib.md5(public_der, usedforsecurity=False).hexdigest()


def parse_time(text: str) -> float:
    """`2015-08-17T15:01:31Z` (UTC) as seconds since the epoch."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when.timestamp()
