"""One digest, read and checked (integrity/digests.py), against AWS's own published data as
far as it goes (tests/data/real_digests/SOURCES.md), and the ledger's verdicts
(integrity/ledger.py) on their own, step by step, with the clock in the test's hands."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudtrail_adapter.integrity.digests import (
    DigestDocument,
    DigestFormatError,
    LogEntry,
    Opened,
    digest_name,
    fingerprint,
    location_problem,
    open_digest,
    signing_string,
    verify_signature,
)
from cloudtrail_adapter.integrity.judging import DIGEST_DELAY, HOUR
from cloudtrail_adapter.integrity.ledger import Ledger
from cloudtrail_adapter.sources.trail_layout import place
from tests.support.trail import TrailKey, build_trail

DATA = Path(__file__).parent / "data" / "real_digests"

#: The sample `list-public-keys` response of the AWS CloudTrail user guide ("Custom
#: implementations of CloudTrail log file integrity validation"): fingerprint -> Value.
AWS_SAMPLE_KEYS = {
    "8eba5db5bea9b640d1c96a77256fe7f2": (
        "MIIBCgKCAQEAn11L2YZ9h7onug2ILi1MWyHiMRsTQjfWE+pHVRLk1QjfWhirG+lpOa8NrwQ/r7Ah5bNL6Hep"
        "znOU9XTDSfmmnP97mqyc7z/upfZdS/AHhYcGaz7n6Wc/RRBU6VmiPCrAUojuSk6/GjvA8iOPFsYDuBtviXar"
        "vuLPlrT9kAd4Lb+rFfR5peEgBEkhlzc5HuWO7S0y+KunqxX6jQBnXGMtxmPBPP0FylgWGNdFtks/4YSKcgqw"
        "H0YDcawP9GGGDAeCIqPWIXDLG1jOjRRzWfCmD0iJUkz8vTsn4hq/5ZxRFE7UBAUiVcGbdnDdvVfhF9C3dQiD"
        "q3k7adQIziLT0cShgQIDAQAB"
    ),
    "8933b39ddc64d26d8e14ffbf6566fee4": (
        "MIIBCgKCAQEApfYL2FiZhpN74LNWVUzhR+VheYhwhYm8w0n5Gf6i95ylW5kBAWKVEmnAQG7BvS5g9SMqFDQx"
        "52fW7NWV44IvfJ2xGXT+wT+DgR6ZQ+6yxskQNqV5YcXj4Aa5Zz4jJfsYjDuO2MDTZNIzNvBNzaBJ+r2WIWAJ"
        "/Xq54kyF63B6WE38vKuDE7nSd1FqQuEoNBFLPInvgggYe2Ym1Refe2z71wNcJ2kY+q0h1BSHrSM8RWuJIw7M"
        "XwF9iQncg9jYzUlNJomozQzAG5wSRfbplcCYNY40xvGd/aAmO0m+Y+XFMrKwtLCwseHPvj843qVno6x4BJN9"
        "bpWnoPo9sdsbGoiK3QIDAQAB"
    ),
    "31e8b5433410dfb61a9dc45cc65b22ff": (
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqlzPJbvZJ42UdcmLfPUqXYNfOs6I8lCfao/tOs8C"
        "mzPOEdtLWugB9xoIUz78qVHdKIqxbaG4jWHfJBiOSSFBM0lt8cdVo4TnRa7oG9io5pysS6DJhBBAeXsicufs"
        "iFJR+wrUNh8RSLxL4k6G1+BhLX20tJkZ/erT97tDGBujAelqseGg3vPZbTx9SMfOLN65PdLFudLP7Gat0Z9p"
        "5jw/rjpclKfo9Bfc3heeBxWGKwBBOKnFAaN9V57pOaosCvPKmHd9bg7jsQkI9Xp22IzGLsTFJZYVA3KiTAEl"
        "DMu80iFXPHEq9hKNbt9e4URFam+1utKVEiLkR2disdCmPTK0VQIDAQAB"
    ),
}


@pytest.mark.parametrize("fp", sorted(AWS_SAMPLE_KEYS))
def test_awss_sample_keys_are_named_by_the_md5_of_their_der_and_load_as_rsa(fp: str) -> None:
    der = base64.b64decode(AWS_SAMPLE_KEYS[fp])
    assert fingerprint(der) == fp
    assert isinstance(serialization.load_der_public_key(der), rsa.RSAPublicKey)


def test_a_real_digest_reads_as_aws_wrote_it() -> None:
    plain = (DATA / "llm_guard_issue_147.json").read_bytes()
    opened = open_digest(gzip.compress(plain))
    doc = opened.document
    assert opened.sha256 == hashlib.sha256(plain).hexdigest()
    assert opened.end - opened.start == HOUR
    key = doc.digestS3Object
    assert "\\/" not in key and key.startswith("AWSLogs/327878933619/CloudTrail-Digest/")
    assert location_problem(doc, "llm-guard-trail", key) is None
    assert "moved" in (location_problem(doc, "llm-guard-trail", key + "x") or "")
    name = digest_name(key)
    assert name is not None and not name.backfill
    assert name.place.region == "ap-northeast-1" and name.series.endswith(
        "llm-guard-trail_us-west-2"
    )
    assert name.end == opened.end
    assert doc.previousDigestS3Object == key.replace("T230404Z", "T220404Z")
    assert len(doc.logFiles) == 5
    for entry in doc.logFiles:
        assert entry.hashAlgorithm == "SHA-256" and len(entry.hashValue or "") == 64
        where = place(entry.s3Object or "")
        assert where is not None and (where.account, where.kind) == ("327878933619", "CloudTrail")


def test_a_digest_signed_as_the_user_guide_says_verifies_and_nothing_else_does() -> None:
    trail = build_trail("bucket-1", hours=2)
    first, second = trail.digests()
    public = trail.keys["us-east-1"].der
    for digest in (first, second):
        opened = open_digest(digest.body)
        message = signing_string(opened.document, opened.sha256)
        signature = digest.metadata["signature"]
        assert verify_signature(public, signature, message)
        assert not verify_signature(public, signature, message.replace(b"\n", b"\n ", 1))
        assert not verify_signature(TrailKey.generate().der, signature, message)
        assert not verify_signature(public, "not hex", message)
        assert not verify_signature(b"not a key", signature, message)
    # The first digest of a chain signs `null` for the previous signature, the next the first's.
    opened = open_digest(first.body)
    assert signing_string(opened.document, opened.sha256).endswith(b"\nnull")
    assert signing_string(open_digest(second.body).document, "x").endswith(
        first.metadata["signature"].encode()
    )
    # Keys given as SubjectPublicKeyInfo (as AWS's oldest sample key is) verify too.
    spki = serialization.load_der_public_key(public).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert verify_signature(
        spki, second.metadata["signature"], signing_string(*_parts(second.body))
    )


def _parts(body: bytes) -> tuple[DigestDocument, str]:
    opened = open_digest(body)
    return opened.document, opened.sha256


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"digestStartTime":"x"}', "not gzip"),
        (gzip.compress(b"[1]"), "invalid format"),
        (gzip.compress(b'{"digestStartTime":"2026-01-01T00:00:00Z"}'), "invalid format"),
        (gzip.compress(b"{}" * 10)[:-6], "gzip that does not end"),
    ],
)
def test_what_is_not_a_digest_says_why(body: bytes, says: str) -> None:
    with pytest.raises(DigestFormatError, match=says):
        open_digest(body)


# -----------------------------------------------------------------------------------------
# The ledger

SCOPE, BUCKET = "usp:test", "trail"
T0 = datetime(2026, 11, 20, 8, tzinfo=UTC).timestamp()  # an hour that starts a chain
ACCOUNT, REGION = "111122223333", "us-east-1"
GRACE = 900.0


def log_key(minute: float, unique: str = "AAAA", kind: str = "CloudTrail") -> str:
    when = datetime.fromtimestamp(T0 + minute * 60, UTC)
    return (
        f"AWSLogs/{ACCOUNT}/{kind}/{REGION}/{when:%Y/%m/%d}/"
        f"{ACCOUNT}_{kind}_{REGION}_{when:%Y%m%dT%H%MZ}_{unique}.json.gz"
    )


def digest_key(hour: int, trail: str = "trail") -> str:
    end = datetime.fromtimestamp(T0 + (hour + 1) * HOUR + 61, UTC)
    return (
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/{end:%Y/%m/%d}/"
        f"{ACCOUNT}_CloudTrail-Digest_{REGION}_{trail}_{REGION}_{end:%Y%m%dT%H%M%SZ}.json.gz"
    )


def opened(
    hour: int,
    files: dict[str, str],
    previous: Opened | None = None,
    *,
    signature: str | None = None,
    restart: bool = False,
) -> Opened:
    start = T0 + hour * HOUR + 61
    prev_key = digest_key(hour - 1) if previous is not None and not restart else None
    doc = DigestDocument(
        digestStartTime=_iso(start),
        digestEndTime=_iso(start + HOUR),
        digestS3Bucket=BUCKET,
        digestS3Object=digest_key(hour),
        digestPublicKeyFingerprint="f",
        previousDigestSignature=None if prev_key is None else (signature or f"sig{hour - 1}"),
        previousDigestS3Bucket=BUCKET if prev_key else None,
        previousDigestS3Object=prev_key,
        previousDigestHashValue=previous.sha256 if previous is not None and prev_key else None,
        logFiles=[LogEntry(BUCKET, k, sha, "SHA-256") for k, sha in files.items()],
    )
    sha = hashlib.sha256(json.dumps([hour, files]).encode()).hexdigest()
    return Opened(doc, sha, start, start + HOUR)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "integrity.db", SCOPE, BUCKET, grace=GRACE)


def add(ledger: Ledger, digest: Opened, hour: int) -> list[tuple[str, str]]:
    key = digest_key(hour)
    name = digest_name(key)
    assert name is not None
    found = ledger.valid_digest(key, name, digest, f"sig{hour}")
    return [(v.verdict, v.key) for v in found.verdicts]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_file_is_checked_whichever_comes_first_it_or_its_digest(ledger: Ledger) -> None:
    early, late, edited = log_key(10, "A"), log_key(20, "B"), log_key(30, "C")
    assert not ledger.shipped(early, sha("early")).verdicts  # waits for its digest
    digest = opened(0, {early: sha("early"), late: sha("late"), edited: sha("edited")})
    assert add(ledger, digest, 0) == [("valid", early)]
    assert [(v.verdict, v.key) for v in ledger.shipped(late, sha("late")).verdicts] == [
        ("valid", late)
    ]
    [mismatch] = ledger.shipped(edited, sha("changed")).verdicts
    assert (mismatch.verdict, mismatch.expected_sha256, mismatch.actual_sha256) == (
        "hash_mismatch",
        sha("edited"),
        sha("changed"),
    )
    assert ledger.waiting_files() == 0 and ledger.due(T0 + 100 * HOUR) == []


def test_an_unreadable_file_a_digest_names_is_a_hash_mismatch(ledger: Ledger) -> None:
    key = log_key(10)
    add(ledger, opened(0, {key: sha("x")}), 0)
    [verdict] = ledger.shipped(key, None, "corrupt_gzip").verdicts
    assert verdict.verdict == "hash_mismatch" and "corrupt_gzip" in verdict.reason


def test_chains_link_break_restart_and_miss(ledger: Ledger) -> None:
    d0 = opened(0, {})
    add(ledger, d0, 0)
    d1 = opened(1, {}, d0)
    add(ledger, d1, 1)
    found = ledger.judge_chains({})
    assert Counter(v.verdict for v in found.verdicts) == Counter({"valid": 2})  # start, linked
    # A link whose hash is not the predecessor's: a chain break, named on the later digest.
    d2 = opened(2, {}, dataclass_replace_sha(d1, "0" * 64))
    add(ledger, d2, 2)
    [broken] = ledger.judge_chains({}).verdicts
    assert (broken.verdict, broken.key, broken.digest_key) == (
        "chain_break",
        digest_key(2),
        digest_key(1),
    )
    # A chain that starts again where one was going: a break, its gap unverifiable.
    add(ledger, opened(3, {}, d2, restart=True), 3)
    [restarted] = ledger.judge_chains({}).verdicts
    assert restarted.verdict == "chain_break" and "starts again" in restarted.reason


def dataclass_replace_sha(digest: Opened, sha256: str) -> Opened:
    return Opened(digest.document, sha256, digest.start, digest.end)


def test_a_predecessor_not_in_the_bucket_is_a_missing_digest_and_its_hour_a_gap(
    ledger: Ledger,
) -> None:
    d0 = opened(0, {})
    add(ledger, d0, 0)
    hour1 = log_key(60 + 10)
    ledger.shipped(hour1, sha("hour 1"))
    d2 = opened(2, {}, opened(1, {}))
    add(ledger, d2, 2)
    assert ledger.chain_questions() == [digest_key(1)]
    assert [v.verdict for v in ledger.judge_chains({}).verdicts] == ["valid"]  # d0; d2 waits
    found = ledger.judge_chains({digest_key(1): False})
    assert [(v.verdict, v.key) for v in found.verdicts] == [
        ("valid", digest_key(2)),
        ("missing_digest", digest_key(1)),
    ]
    later = T0 + 10 * HOUR
    assert ledger.judge_files(later).unverified == Counter({"missing_digest": 1})


def test_a_predecessor_before_what_was_listed_anchors_the_chain(ledger: Ledger) -> None:
    add(ledger, opened(5, {}, opened(4, {})), 5)
    found = ledger.judge_chains({digest_key(4): True})
    assert [(v.verdict, v.key) for v in found.verdicts] == [("valid", digest_key(5))]


def test_a_file_no_digest_names_is_unlisted_only_after_grace(ledger: Ledger) -> None:
    forged, insight = log_key(25, "F"), log_key(26, "I", kind="CloudTrail-Insight")
    ledger.shipped(forged, sha("forged"))
    ledger.shipped(insight, sha("insight"))
    add(ledger, opened(0, {}), 0)
    ledger.judge_chains({})
    end = T0 + HOUR + 61
    assert not ledger.judge_files(end + GRACE - 1).verdicts
    found = ledger.judge_files(end + GRACE)
    assert [(v.verdict, v.key) for v in found.verdicts] == [("unlisted", forged)]
    assert found.unverified == Counter({"not_in_digest": 1})


def test_a_file_near_a_boundary_waits_for_the_digests_on_both_sides(ledger: Ledger) -> None:
    edge = log_key(60, "E")  # named at the minute the hour's digest period ends
    ledger.shipped(edge, sha("edge"))
    add(ledger, opened(0, {}), 0)
    after_grace = T0 + HOUR + 61 + GRACE + 60
    waited = ledger.judge_files(after_grace)  # the next digest may name it
    assert not waited.verdicts and not waited.unverified and ledger.waiting_files() == 1
    assert add(ledger, opened(1, {edge: sha("edge")}, opened(0, {})), 1) == [("valid", edge)]


def test_a_file_no_digest_ever_came_for_is_given_up_on(ledger: Ledger) -> None:
    key = log_key(10)
    ledger.shipped(key, sha("x"))
    horizon = T0 + 10 * 60 + 300 + HOUR + GRACE + DIGEST_DELAY
    assert ledger.judge_files(horizon - 1).unverified == Counter()
    assert ledger.judge_files(horizon, hold=[(ACCOUNT, REGION)]).unverified == Counter()
    assert ledger.judge_files(horizon).unverified == Counter({"no_digest": 1})


def test_due_files_get_the_checkers_facts(ledger: Ledger) -> None:
    gone, there = log_key(10, "G"), log_key(20, "T")
    add(ledger, opened(0, {gone: sha("g"), there: sha("t")}), 0)
    due = T0 + HOUR + 61 + GRACE
    assert ledger.due(due - 1) == []
    assert sorted(ledger.due(due)) == sorted([gone, there])
    found = ledger.judge_due({gone: "missing", there: "not_listed"})
    assert [(v.verdict, v.key) for v in found.verdicts] == [("missing", gone)]
    assert found.unverified == Counter({"not_listed": 1})
    assert ledger.due(due) == []
    # A file that turns up after all is still checked against its digest, never "unlisted".
    assert [v.verdict for v in ledger.shipped(there, sha("t")).verdicts] == ["valid"]


def test_pruning_keeps_each_chains_latest_digest_and_eviction_bounds_files(ledger: Ledger) -> None:
    previous = None
    for hour in range(3):
        digest = opened(hour, {}, previous)
        add(ledger, digest, hour)
        previous = digest
    ledger.judge_chains({})
    ledger.prune(T0 + 100 * HOUR, T0 + 100 * HOUR)
    assert ledger.counts()["digests"] == 1 and ledger.known([digest_key(2)]) == {digest_key(2)}
    for minute in range(5):
        ledger.shipped(log_key(200 + minute, f"K{minute}"), sha(str(minute)))
    assert ledger.evict(3).unverified == Counter({"evicted": 2})
    assert ledger.waiting_files() == 3


def test_events_stay_until_acknowledged(ledger: Ledger, tmp_path: Path) -> None:
    ledger.outbox.queue([(ACCOUNT, REGION, b'{"a":1}'), (ACCOUNT, REGION, b'{"a":2}')])
    first = ledger.outbox.pending(set(), 10)
    assert [e for _, e in first] == [b'{"a":1}', b'{"a":2}']
    assert ledger.outbox.pending({first[0][0]}, 10) == first[1:]
    ledger.outbox.sent([first[0][0]])
    ledger.close()
    again = Ledger(tmp_path / "integrity.db", SCOPE, BUCKET, grace=GRACE)
    assert [e for _, e in again.outbox.pending(set(), 10)] == [b'{"a":2}']


def test_a_file_read_twice_is_judged_once(ledger: Ledger) -> None:
    """A decoding failure is retried; a file may be read again after a restart before its
    checkpoint: one verdict each, and never an `unlisted` for a file a digest named."""
    broken, shipped, forged = log_key(10, "B"), log_key(20, "S"), log_key(30, "F")
    add(ledger, opened(0, {broken: sha("b"), shipped: sha("s")}), 0)
    verdicts = []
    for _ in range(3):
        verdicts += ledger.shipped(broken, None, "corrupt_gzip").verdicts
        verdicts += ledger.shipped(shipped, sha("s")).verdicts
    assert [(v.verdict, v.key) for v in verdicts] == [
        ("hash_mismatch", broken),
        ("valid", shipped),
    ]
    ledger.shipped(forged, sha("f"))
    ledger.judge_chains({})
    later = T0 + 5 * HOUR
    assert [(v.verdict, v.key) for v in ledger.judge_files(later).verdicts] == [
        ("unlisted", forged)
    ]
    ledger.shipped(forged, sha("f"))  # read again: judged already
    assert ledger.judge_files(later + 60).verdicts == [] and ledger.waiting_files() == 0
    ledger.prune(later, later)  # a day on, the tombstones go
    assert ledger.counts()["files"] == 0
