"""Every bad object gets one clear log line (bucket, key, reason), a counter and a failure
record; the objects next to it are delivered; an object that keeps failing is quarantined,
listed and retried through the CLI."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from cloudtrail_adapter import aws, cli, pipeline
from cloudtrail_adapter.config import AwsOptions, DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.state import StateStore
from tests.support.configs import s3_config
from tests.support.corpus import (
    BAD_BODIES,
    PREFIX,
    VALID_BODY,
    VALID_IDS,
    blob_records,
    records,
)
from tests.support.process import stop_daemon
from tests.support.stand_in import put_objects
from tests.support.streaming import RANGE, STREAMING, stalled_mid_object
from tests.support.watch import watch_logs

GOOD = records(12, 500)
GOOD_KEY = f"{PREFIX}good.json.gz"
# Damage inside Records costs only the record it is in (salvage.py): the object commits, the
# part is set aside with its reason. A lone surrogate escape is JSON (RFC 8259 grammar): it
# ships as it is.
DAMAGED: dict[str, tuple[bytes, list[str], list[object]]] = {
    "record_not_an_object": (
        gzip.compress(b'{"Records": [{"a": 1}, 5]}'),
        ["record_not_object"],
        [{"a": 1}],
    ),
    "invalid_utf8": (b'{"Records": [{"eventID": "\xff\xfe"}]}', ["invalid_utf8"], []),
    "lone_surrogate_bytes": (b'{"Records": [{"eventID": "\xed\xa0\x80"}]}', ["invalid_utf8"], []),
    "lone_surrogate_escape": (
        b'{"Records": [{"eventID": "\\ud800"}]}',
        [],
        [{"eventID": "\ud800"}],
    ),
}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", sorted(DAMAGED))
async def test_a_damaged_record_is_set_aside_and_its_object_committed(
    case: str,
    streamed: bool,
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
) -> None:
    body, reasons, readable = DAMAGED[case]
    key = f"{PREFIX}{case}.json.gz"
    await put_objects(aws_options, bucket, {key: body, GOOD_KEY: log_file(GOOD)})
    delivery = DeliveryOptions(batch_max_records=500, stream_threshold=0 if streamed else 1 << 30)
    cfg = s3_config(aws_options, bucket, lc, delivery=delivery)

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == (1 if reasons else 0)

    assert logs.named("object_failed") == []
    delivered = [json.loads(e.raw) for e in lc.store.events]  # orjson refuses a lone surrogate
    assert sorted(map(repr, delivered)) == sorted(map(repr, [*GOOD, *readable]))
    store = StateStore.in_dir(state_dir)
    try:
        assert store.failures() == []
        assert [p.reason for p in store.unreadable_records()] == reasons
        assert all(p.ref == f"s3://{bucket}/{key}" for p in store.unreadable_records())
    finally:
        store.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_object_is_named_counted_recorded_and_the_rest_goes_on(
    case: str,
    streamed: bool,
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
) -> None:
    body, reason = BAD_BODIES[case]
    bad_key = f"{PREFIX}{case}.json.gz"
    await put_objects(aws_options, bucket, {bad_key: body, GOOD_KEY: log_file(GOOD)})
    delivery = DeliveryOptions(batch_max_records=500, stream_threshold=0 if streamed else 1 << 30)

    with watch_logs() as logs:
        assert await serve([s3_config(aws_options, bucket, lc, delivery=delivery)], state_dir) == 1

    failed = logs.named("object_failed")
    assert [(f["bucket"], f["key"], f["reason"]) for f in failed] == [(bucket, bad_key, reason)]
    assert failed[0]["error"], "the line must say what is wrong"
    assert logs.named("source_finished")[0]["failures"] == {reason: 1}
    good, delivered = Counter(str(r["eventID"]) for r in GOOD), lc.store.event_ids()
    assert {key: delivered[key] for key in good} == good
    # Streaming hands on the records before a fault (the object is not committed, so they
    # come again on retry: at least once); whole decoding sends nothing from a bad object.
    extra = set(delivered) - set(good)
    assert extra <= (VALID_IDS if streamed else set())
    store = StateStore.in_dir(state_dir)
    try:
        [failure] = store.failures()
    finally:
        store.close()
    assert (failure.key, failure.reason, failure.attempts) == (bad_key, reason, 1)


async def test_an_object_over_the_size_limit_is_quarantined_without_being_fetched(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    big_key = f"{PREFIX}big.json.gz"
    big = log_file(records(200, 502))
    await put_objects(aws_options, bucket, {big_key: big, GOOD_KEY: log_file(GOOD)})
    cfg = s3_config(aws_options, bucket, lc, max_object_size=len(big) - 1)

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 1

    [quarantined] = logs.named("object_quarantined")
    assert (quarantined["key"], quarantined["reason"]) == (big_key, "too_large")
    assert str(len(big)) in quarantined["error"]
    assert {e["key"] for e in logs.named("object_decoded")} == {GOOD_KEY}, "never fetched"
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in GOOD)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_record_over_256kb_is_delivered_whole_and_reported(
    streamed: bool, aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """CloudTrail documents 256 KB as the maximum; a larger record is still an audit event."""
    huge = {"eventID": "huge-record", "requestParameters": {"policy": "p" * (300 << 10)}}
    around = records(5, 503)
    key = f"{PREFIX}oversized.json.gz"
    body = log_file([*around[:2], huge, *around[2:]])
    await put_objects(aws_options, bucket, {key: body, GOOD_KEY: log_file(GOOD)})
    delivery = DeliveryOptions(batch_max_records=500, stream_threshold=0 if streamed else 1 << 30)

    with watch_logs() as logs:
        assert await serve([s3_config(aws_options, bucket, lc, delivery=delivery)], state_dir) == 0

    [line] = logs.named("records_oversized")
    assert (line["bucket"], line["key"], line["count"], line["indexes"]) == (bucket, key, 1, [2])
    assert line["largest"] > 300 << 10
    assert logs.named("source_finished")[0]["oversized"] == 1
    expected = Counter(str(r["eventID"]) for r in [*GOOD, *around, huge])
    assert lc.store.event_ids() == expected
    [delivered] = [e.json() for e in lc.store.events if b'"huge-record"' in e.raw]
    assert delivered == huge


async def test_quarantine_lifecycle_backoff_list_and_retry(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Fails, backs off, fails again, is quarantined and skipped; `quarantine list` shows it;
    once the object is fixed, `quarantine retry` lets the running daemon deliver it."""
    bad_key = f"{PREFIX}flaky.json.gz"
    fixed = records(4, 503)
    await put_objects(aws_options, bucket, {bad_key: b"\x1f\x8b broken", GOOD_KEY: log_file(GOOD)})
    cfg = s3_config(
        aws_options,
        bucket,
        lc,
        single_load=False,
        poll_interval=0.05,
        quiet_interval=0.05,  # a released object is offered at its stream's next listing
        quarantine_after=2,
        retry_backoff=0.05,
    )

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir, shutdown_grace=5))
        await logs.wait_for("object_quarantined", timeout=30)
        passes = len(logs.named("source_pass_done"))
        await logs.wait_for("source_pass_done", count=passes + 3, timeout=30)
        assert len(logs.named("object_failed")) == 2, "a quarantined object was fetched again"
        assert logs.named("source_pass_done")[-1]["failing"] == 1

        assert cli.main(["quarantine", "list", "--state-dir", str(state_dir)]) == 0
        listed = capsys.readouterr().out
        assert bad_key in listed and "2 attempts" in listed and "truncated_gzip" in listed

        await put_objects(aws_options, bucket, {bad_key: log_file(fixed)})
        assert cli.main(["quarantine", "retry", bad_key, "--state-dir", str(state_dir)]) == 0
        await lc.store.wait_for(len(GOOD) + len(fixed), timeout=30)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0

    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in GOOD + fixed)
    assert cli.main(["quarantine", "list", "--state-dir", str(state_dir)]) == 0
    assert bad_key not in capsys.readouterr().out


def test_quarantine_without_a_state_database_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["quarantine", "list", "--state-dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_bad_bodies_really_are_what_they_claim() -> None:
    """The corpus of this file is only worth something if each body is broken as named."""
    assert orjson.loads(gzip.decompress(VALID_BODY))["Records"]
    with pytest.raises(EOFError):
        gzip.decompress(BAD_BODIES["truncated_gzip"][0])


async def test_an_object_deleted_between_listing_and_get_is_named_and_the_rest_goes_on(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker streams the first object while LimaCharlie holds its acks, so the second
    object, already listed, waits in the work queue while it is deleted."""
    monkeypatch.setattr(pipeline, "STREAM_RANGE", RANGE)
    first, gone = blob_records(300, 604), records(3, 605)
    first_key, gone_key = f"{PREFIX}a-first.json.gz", f"{PREFIX}b-gone.json.gz"
    await put_objects(aws_options, bucket, {first_key: log_file(first), gone_key: log_file(gone)})
    cfg = s3_config(aws_options, bucket, lc, delivery=STREAMING, parallel_fetch=1)

    with watch_logs() as logs:
        async with (
            stalled_mid_object(lc, cfg, state_dir) as run,
            aws.client("s3", aws_options) as s3,
        ):
            await s3.delete_object(Bucket=bucket, Key=gone_key)
        assert await run == 1

    [failed] = logs.named("object_failed")
    assert (failed["bucket"], failed["key"], failed["reason"]) == (bucket, gone_key, "NoSuchKey")
    assert logs.named("source_finished")[0]["failures"] == {"NoSuchKey": 1}
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in first)
