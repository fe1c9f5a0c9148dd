"""What the tests put in buckets, queues and decoders: CloudTrail records by seed, records
that compress badly (so an object is large), and objects broken in each way a decoder names.

The same `(n, seed)` always gives the same records, so a test can build its input twice
(once to upload, once to compare what LimaCharlie received) without passing it around.
"""

from __future__ import annotations

import base64
import gzip
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file

ACCOUNT = "111122223333"
#: When the records happened, unless a test says otherwise.
TIME = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
#: The day folder the tests' log files go in: an organisation trail's, on TIME's day.
PREFIX = f"AWSLogs/o-a1b2c3d4e5/{ACCOUNT}/CloudTrail/us-east-1/2026/11/24/"


def records(
    n: int, seed: int, *, region: str = "us-east-1", when: datetime = TIME
) -> list[dict[str, Any]]:
    """`n` CloudTrail records of ACCOUNT in `region`, at `when`, the same for the same seed."""
    rng = random.Random(seed)
    return [cloudtrail_record(rng, account=ACCOUNT, region=region, when=when) for _ in range(n)]


def blob_records(n: int, seed: int, *, size: int = 3000) -> list[dict[str, Any]]:
    """Records padded with incompressible data, so that the compressed object is large."""
    rng = random.Random(seed)
    return [
        {"eventID": f"blob-{seed}-{i}", "pad": base64.b64encode(rng.randbytes(size)).decode()}
        for i in range(n)
    ]


def ids(recs: list[dict[str, Any]]) -> Counter[str]:
    """Each record's eventID, counted: what `lc.store.event_ids()` holds once all arrived."""
    return Counter(str(r["eventID"]) for r in recs)


#: A good log file, the material of the broken ones below.
VALID_BODY = log_file(records(3, 501))
VALID_IDS = {str(r["eventID"]) for r in records(3, 501)}
#: Objects no decoder can read, by case: (body, the reason the decoder gives).
BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "corrupt_gzip": (b"\x1f\x8b\x08\x00" + b"\x00garbage" * 20, "corrupt_gzip"),
    "truncated_gzip": (VALID_BODY[: len(VALID_BODY) // 2], "truncated_gzip"),
    "data_after_gzip_member": (VALID_BODY + b"trailing junk", "corrupt_gzip"),
    "not_json": (gzip.compress(b"this is not json"), "not_json"),
    "json_without_records": (gzip.compress(b'{"hello": "world"}'), "no_records"),
    "records_not_a_list": (gzip.compress(b'{"Records": {"a": 1}}'), "records_not_list"),
}
