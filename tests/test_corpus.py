"""emulator/corpus.py: a seeded corpus that looks like a real organisation trail."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import random
import re
import statistics
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudtrail_adapter.decoding.decode import decode_object
from cloudtrail_adapter.emulator.corpus import (
    REGIONS,
    CorpusFile,
    cloudtrail_record,
    digest_key,
    log_file,
    object_key,
    org_trail,
    write_directory,
)
from cloudtrail_adapter.sources.trail_layout import is_digest_key

# The key filter of aws/aws-cloudtrail-processing-library.
PROCESSING_LIBRARY_KEY = re.compile(r".+_CloudTrail_[\w\-]+_\d{8}T\d{4}Z_[\w]+\.json\.gz")
LOG_LAYOUT = re.compile(
    r"(?:(?P<prefix>.+)/)?AWSLogs/(?:(?P<org>o-[a-z0-9]{10,32})/)?(?P<account>\d{12})/CloudTrail/"
    r"(?P<region>[a-z]{2}-[a-z]+-\d)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=account)_CloudTrail_(?P=region)_(?P=y)(?P=m)(?P=d)T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz"
)
DIGEST_LAYOUT = re.compile(
    r"(?:.+/)?AWSLogs/(?:o-[a-z0-9]+/)?(?P<account>\d{12})/CloudTrail-Digest/"
    r"(?P<region>[a-z]{2}-[a-z]+-\d)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=account)_CloudTrail-Digest_(?P=region)_[\w\-]+_(?P=region)_"
    r"(?P=y)(?P=m)(?P=d)T\d{6}Z\.json\.gz"
)
WHEN = datetime(2024, 5, 6, 9, 41, 7, tzinfo=UTC)


def small_trail(seed: int, **overrides: Any) -> list[CorpusFile]:
    options: dict[str, Any] = {"records_per_file": (1, 40)} | overrides
    return org_trail(seed, **options)


def test_the_same_seed_gives_the_same_corpus_and_another_seed_another() -> None:
    first, again, other = small_trail(11), small_trail(11), small_trail(12)

    assert first == again
    assert [f.key for f in first] != [f.key for f in other]
    assert {e for f in first for e in f.event_ids}.isdisjoint(e for f in other for e in f.event_ids)


def test_org_trail_shape_counts_and_unique_event_ids() -> None:
    files = small_trail(13, accounts=3, regions=2, days=2, files_per_day=3)
    logs = [f for f in files if f.kind == "log"]
    digests = [f for f in files if f.kind == "digest"]

    assert len(logs) == 3 * 2 * 2 * 3
    assert digests and all(not f.event_ids for f in digests)
    assert len({f.key for f in files}) == len(files)
    ids = [e for f in logs for e in f.event_ids]
    assert len(ids) == len(set(ids)) >= len(logs)
    placed: Counter[tuple[str, str]] = Counter()
    for f in logs:
        match = LOG_LAYOUT.fullmatch(f.key)
        assert match, f.key
        placed[match["account"], match["region"]] += 1
    assert len({account for account, _ in placed}) == 3
    assert {region for _, region in placed} == set(REGIONS[:2])
    assert set(placed.values()) == {2 * 3}  # every account and region, every day


@pytest.mark.parametrize(
    ("prefix", "org_id"), [("", "o-a1b2c3d4e5"), ("trails/prod/", None), ("/x", "o-zz9yy8xx7w")]
)
def test_keys_follow_the_cloudtrail_layout(prefix: str, org_id: str | None) -> None:
    files = small_trail(14, prefix=prefix, org_id=org_id, files_per_day=2)

    for f in files:
        expected_start = f"{prefix.strip('/')}/AWSLogs/" if prefix.strip("/") else "AWSLogs/"
        assert f.key.startswith(expected_start + (f"{org_id}/" if org_id else ""))
        if f.kind == "log":
            match = LOG_LAYOUT.fullmatch(f.key)
            assert match, f.key
            assert PROCESSING_LIBRARY_KEY.fullmatch(f.key), f.key
            assert not is_digest_key(f.key)
        else:
            assert DIGEST_LAYOUT.fullmatch(f.key), f.key
            assert not PROCESSING_LIBRARY_KEY.fullmatch(f.key), f.key
            assert is_digest_key(f.key)


def test_object_and_digest_keys_encode_the_delivery_time() -> None:
    rng = random.Random(1)
    key = object_key(
        prefix="", org_id=None, account="111122223333", region="eu-west-1", when=WHEN, rng=rng
    )
    assert key.startswith(
        "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/05/06/"
        "111122223333_CloudTrail_eu-west-1_20240506T0941Z_"
    )
    assert digest_key(
        prefix="p", org_id="o-a1b2c3d4e5", account="111122223333", region="eu-west-1", when=WHEN
    ) == (
        "p/AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/eu-west-1/2024/05/06/"
        "111122223333_CloudTrail-Digest_eu-west-1_org-trail_eu-west-1_20240506T094107Z.json.gz"
    )


def test_record_sizes_are_mostly_one_to_four_kilobytes_with_rare_large_ones() -> None:
    rng = random.Random(15)
    sizes = [
        len(orjson.dumps(cloudtrail_record(rng, account="111122223333", region=region, when=WHEN)))
        for region in ("us-east-1", "eu-west-1")
        for _ in range(10_000)
    ]

    typical = [s for s in sizes if 800 <= s <= 4096]
    large = [s for s in sizes if s > 64 * 1024]
    assert len(typical) / len(sizes) >= 0.95
    assert 1000 <= statistics.median(sizes) <= 2500
    assert 5 <= len(large) <= 60  # ~0.1% of 20,000
    assert all(70 * 1024 <= s <= 256 * 1024 for s in large)  # ~100 KB, under the 256 KB limit


def test_records_look_like_cloudtrail() -> None:
    rng = random.Random(16)
    recs = [
        cloudtrail_record(rng, account="111122223333", region="us-east-1", when=WHEN)
        for _ in range(3000)
    ]

    required = {
        "eventVersion",
        "userIdentity",
        "eventTime",
        "eventSource",
        "eventName",
        "awsRegion",
        "sourceIPAddress",
        "userAgent",
        "requestParameters",
        "responseElements",
        "requestID",
        "eventID",
        "readOnly",
        "eventType",
        "managementEvent",
        "recipientAccountId",
        "eventCategory",
    }
    assert all(required <= r.keys() for r in recs)
    assert {r["eventVersion"] for r in recs} == {"1.08", "1.09"}
    assert {r["eventTime"] for r in recs} == {"2024-05-06T09:41:07Z"}
    assert {r["userIdentity"]["type"] for r in recs} == {
        "IAMUser",
        "AssumedRole",
        "AWSService",
        "Root",
    }
    assert {r["eventCategory"] for r in recs} == {"Management", "Data"}
    assert {r["recipientAccountId"] for r in recs} == {"111122223333"}
    sources = Counter(r["eventSource"].split(".")[0] for r in recs)
    assert {"s3", "ec2", "iam", "sts", "kms", "lambda", "signin"} <= sources.keys()
    assert 0.3 < sum(r["responseElements"] is None for r in recs) / len(recs) < 0.9
    assert 0.02 < sum("errorCode" in r for r in recs) / len(recs) < 0.1
    assert any("tlsDetails" in r for r in recs) and any("resources" in r for r in recs)
    assert any(r["userIdentity"].get("sessionContext", {}).get("sessionIssuer") for r in recs)
    assert len({r["eventID"] for r in recs}) == len(recs)
    assert all(
        re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", r["eventID"]
        )
        for r in recs
    )


def test_global_service_events_appear_only_in_us_east_1() -> None:
    rng = random.Random(17)
    recs = [
        cloudtrail_record(rng, account="111122223333", region="eu-west-1", when=WHEN)
        for _ in range(3000)
    ]
    assert {r["awsRegion"] for r in recs} == {"eu-west-1"}
    assert not {"iam.amazonaws.com", "signin.amazonaws.com"} & {r["eventSource"] for r in recs}


def test_decode_object_round_trips_every_corpus_file() -> None:
    files = small_trail(18, records_per_file=(0, 120))

    for f in files:
        decoded = decode_object(f.body)
        if f.kind == "digest":
            assert decoded.kind == "digest"
            continue
        assert decoded.kind == "log"
        assert tuple(orjson.loads(line)["eventID"] for line in decoded.records) == f.event_ids
        assert decoded.raw_bytes == len(gzip.decompress(f.body))


def test_files_without_records_decode_as_empty_logs() -> None:
    files = small_trail(22, accounts=1, regions=1, days=1, records_per_file=(0, 0))

    logs = [f for f in files if f.kind == "log"]
    assert logs and all(gzip.decompress(f.body) == b'{"Records":[]}' for f in logs)
    assert all(decode_object(f.body).kind == "log" for f in logs)


def test_log_files_are_compact_gzip_level_6_and_reproducible() -> None:
    recs = [
        cloudtrail_record(random.Random(19), account="111122223333", region="us-east-1", when=WHEN)
    ]
    plain = log_file(recs, gzipped=False)

    assert plain == b'{"Records":[' + orjson.dumps(recs[0]) + b"]}"
    assert gzip.decompress(log_file(recs)) == plain
    assert log_file(recs) == gzip.compress(plain, compresslevel=6, mtime=0)


def test_digests_reference_real_log_files_and_chain() -> None:
    files = small_trail(20, accounts=1, regions=1, days=2, files_per_day=4)
    logs = {f.key: f for f in files if f.kind == "log"}
    digests = [orjson.loads(gzip.decompress(f.body)) for f in files if f.kind == "digest"]
    digest_bodies = {f.key: gzip.decompress(f.body) for f in files if f.kind == "digest"}

    referenced = [entry for d in digests for entry in d["logFiles"]]
    assert sorted(e["s3Object"] for e in referenced) == sorted(logs)
    for entry in referenced:
        plain = gzip.decompress(logs[entry["s3Object"]].body)
        assert entry["hashValue"] == hashlib.sha256(plain).hexdigest()
    assert any(not d["logFiles"] for d in digests)  # an idle hour still gets a digest
    assert digests[0]["previousDigestS3Object"] is None
    for before, after in itertools.pairwise(digests):
        assert after["previousDigestS3Object"] == before["digestS3Object"]
        previous = digest_bodies[before["digestS3Object"]]
        assert after["previousDigestHashValue"] == hashlib.sha256(previous).hexdigest()


def test_write_directory_writes_each_key_as_a_relative_path(tmp_path: Path) -> None:
    files = small_trail(21, accounts=1, regions=1, days=1, files_per_day=2)

    write_directory(files, tmp_path)

    written = {
        p.relative_to(tmp_path).as_posix(): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    assert written == {f.key: f.body for f in files}


@pytest.mark.parametrize("key", ["../escape.json.gz", "/etc/passwd", "a/../../b"])
def test_write_directory_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_directory([CorpusFile(key, b"x", (), "log")], tmp_path / "root")
    assert not any(tmp_path.rglob("*"))


def test_bad_arguments_are_refused_with_the_argument_named() -> None:
    with pytest.raises(ValueError, match="files_per_day"):
        org_trail(1, files_per_day=289)
    with pytest.raises(ValueError, match="regions"):
        org_trail(1, regions=len(REGIONS) + 1)
    with pytest.raises(ValueError, match="records_per_file"):
        org_trail(1, records_per_file=(5, 1))
