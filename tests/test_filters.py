"""Include/exclude filters: each one keeps exactly what it says, and counts what it drops."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudtrail_adapter.config import ConfigError, DeliveryOptions, RecordFilter, load_config
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.decoding.batches import gzip_batch
from cloudtrail_adapter.decoding.filters import Matcher
from cloudtrail_adapter.decoding.packing import pack_steps, pack_whole
from cloudtrail_adapter.decoding.values import PackLimits
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import INSTALLATION_KEY, OID, file_config


def record(n: int, **fields: Any) -> dict[str, Any]:
    base = {
        "eventVersion": "1.09",
        "eventID": f"id-{n}",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "RunInstances",
        "awsRegion": "us-east-1",
        "recipientAccountId": "111122223333",
        "eventCategory": "Management",
        "readOnly": False,
    }
    return base | fields


RECORDS = [
    record(0),
    record(
        1,
        eventSource="s3.amazonaws.com",
        eventName="GetObject",
        eventCategory="Data",
        readOnly=True,
    ),
    record(2, eventName="DescribeInstances", readOnly=True, awsRegion="eu-west-1"),
    record(3, eventName="DescribeVolumes", readOnly="true", recipientAccountId="444455556666"),
    record(4, eventSource="iam.amazonaws.com", eventName="CreateUser", errorCode="AccessDenied"),
    record(5, eventSource="sts.amazonaws.com", eventName="AssumeRole", errorCode=None),
]


def kept_ids(keep: RecordFilter, *, stream: bool = False) -> tuple[list[str], dict[str, int]]:
    limits = PackLimits(5000, 8 << 20, keep=Matcher.of(keep))
    packed = (pack_steps if stream else pack_whole)(log_file(RECORDS), limits)
    payload, _ = gzip_batch(packed.fragments)
    lines = [line for line in gzip.decompress(payload).split(b"\n") if line]
    assert packed.records == len(lines)
    return [orjson.loads(line)["eventID"] for line in lines], dict(packed.dropped)


CASES = [
    (RecordFilter(), ["id-0", "id-1", "id-2", "id-3", "id-4", "id-5"], {}),
    (
        RecordFilter(include_event_sources=("ec2.*",)),
        ["id-0", "id-2", "id-3"],
        {"include_event_sources": 3},
    ),
    (
        RecordFilter(exclude_event_sources=("s3.amazonaws.com", "sts.*")),
        ["id-0", "id-2", "id-3", "id-4"],
        {"exclude_event_sources": 2},
    ),
    (
        RecordFilter(include_event_names=("Describe*",)),
        ["id-2", "id-3"],
        {"include_event_names": 4},
    ),
    (
        RecordFilter(exclude_event_names=("Describe*", "Get*")),
        ["id-0", "id-4", "id-5"],
        {"exclude_event_names": 3},
    ),
    (RecordFilter(include_regions=("eu-*",)), ["id-2"], {"include_regions": 5}),
    (
        RecordFilter(exclude_regions=("eu-*",)),
        ["id-0", "id-1", "id-3", "id-4", "id-5"],
        {"exclude_regions": 1},
    ),
    (RecordFilter(include_accounts=("444455556666",)), ["id-3"], {"include_accounts": 5}),
    (
        RecordFilter(exclude_accounts=("444455556666",)),
        ["id-0", "id-1", "id-2", "id-4", "id-5"],
        {"exclude_accounts": 1},
    ),
    (RecordFilter(include_categories=("Data",)), ["id-1"], {"include_categories": 5}),
    (
        RecordFilter(exclude_categories=("Data",)),
        ["id-0", "id-2", "id-3", "id-4", "id-5"],
        {"exclude_categories": 1},
    ),
    (RecordFilter(read_only=False), ["id-0", "id-4", "id-5"], {"read_only": 3}),
    (RecordFilter(read_only=True), ["id-1", "id-2", "id-3"], {"read_only": 3}),
    (RecordFilter(errors="drop"), ["id-0", "id-1", "id-2", "id-3", "id-5"], {"errors": 1}),
    (RecordFilter(errors="only"), ["id-4"], {"errors": 5}),
    (
        RecordFilter(exclude_event_sources=("s3.*",), read_only=False),
        ["id-0", "id-4", "id-5"],
        {"exclude_event_sources": 1, "read_only": 2},
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("keep", "ids", "dropped"), CASES)
def test_each_filter_keeps_what_it_says_and_counts_the_rest(
    keep: RecordFilter, ids: list[str], dropped: dict[str, int], stream: bool
) -> None:
    assert kept_ids(keep, stream=stream) == (ids, dropped)


def test_a_record_whose_fields_cannot_be_read_is_shipped_not_dropped() -> None:
    keep = Matcher.of(RecordFilter(include_event_names=("Describe*",)))
    assert keep is not None and keep.refuses(b"not json at all") is None


HEAD = (
    "file:\n  path: /tmp\n  client_options:\n    identity:\n"
    f"      oid: {OID}\n      installation_key: {INSTALLATION_KEY}\n"
)


def test_filters_are_configured_per_document_and_bad_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(
        HEAD + "  filter:\n    exclude_event_names: [Describe*, List*]\n    read_only: false\n"
        "    errors: drop\n    include_regions: eu-west-1\n"
    )
    [cfg] = load_config(path, {})
    assert cfg.record_filter == RecordFilter(
        exclude_event_names=("Describe*", "List*"),
        read_only=False,
        errors="drop",
        include_regions=("eu-west-1",),
    )
    path.write_text(
        HEAD
        + "  filter:\n    exclude_event_names: [1]\n    errors: sometimes\n    readonly: true\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    text = "\n".join(str(e) for e in caught.value.errors)
    assert "file.filter.exclude_event_names" in text and "non-empty strings" in text
    assert "file.filter.errors" in text and "keep, drop, only" in text
    assert "file.filter.readonly" in text and "read_only" in text


async def test_a_filtered_source_delivers_exactly_what_it_keeps(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    root.mkdir()
    (root / "a.json.gz").write_bytes(log_file(RECORDS))
    (root / "b.json.gz").write_bytes(log_file([record(9, eventName="ListBuckets")]))
    keep = RecordFilter(exclude_event_names=("Describe*", "List*"), errors="drop")
    cfg = dataclasses.replace(
        file_config(root, lc, DeliveryOptions(batch_linger=0.01)), record_filter=keep
    )

    assert await serve([cfg], tmp_path / "state") == 0

    assert sorted(lc.store.event_ids()) == ["id-0", "id-1", "id-5"]
