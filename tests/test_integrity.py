"""Issue 18, end to end: CloudTrail's digests checked while the logs ship, through moto (the
stand-in serves ListPublicKeys) and the LimaCharlie emulator, with the real daemon.

Each tampering case gets its verdict and nothing else does; a clean trail verifies as all
valid; verification changes nothing of what is delivered; with `report: limacharlie` the
emulator gets one event per failure, in the documented shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from cloudtrail_adapter.config import AwsOptions, DeliveryOptions, IntegrityOptions, SourceConfig
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.integrity.verdicts import EVENT_TYPE, IntegrityStats
from cloudtrail_adapter.monitor import Monitor
from cloudtrail_adapter.sources.s3 import S3Source
from tests.support.configs import s3_config
from tests.support.process import stop_daemon
from tests.support.stand_in import STAND_IN
from tests.support.trail import Trail, TrailKey, build_trail
from tests.support.watch import LogWatch, passes_done, watch_logs

ACCOUNT = "111122223333"
REGION = "us-east-1"


def result_name(bucket: str) -> str:
    return f"s3[1]:{bucket}"


@dataclasses.dataclass
class Run:
    code: int
    stats: IntegrityStats
    logs: LogWatch
    metrics: str

    def violations(self) -> Counter[tuple[str, str]]:
        return Counter((e["verdict"], e["key"]) for e in self.logs.named("integrity_violation"))


def verified(
    bucket: str, lc: LimaCharlieEmulator, aws_options: AwsOptions, **integrity: Any
) -> SourceConfig:
    return s3_config(aws_options, bucket, lc, integrity=IntegrityOptions(verify=True, **integrity))


async def run(cfg: SourceConfig, trail: Trail, state_dir: Path, aws_options: AwsOptions) -> Run:
    STAND_IN.public_keys = trail.public_keys()
    await trail.upload(aws_options)
    monitor = Monitor()
    with watch_logs() as logs:
        code = await serve([cfg], state_dir, monitor=monitor)
    source = monitor.sources[cfg.name].source
    assert isinstance(source, S3Source) and source.integrity is not None
    return Run(code, source.integrity.stats, logs, generate_latest(monitor.registry).decode())


async def test_a_clean_trail_of_3_accounts_2_regions_6_hours_verifies_all_valid(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    accounts = ("111122223333", "444455556666", "777788889999")
    regions = ("us-east-1", "eu-west-1")
    trail = build_trail(bucket, accounts=accounts, regions=regions, hours=6)
    result = await run(verified(bucket, lc, aws_options), trail, state_dir, aws_options)

    assert result.code == 0
    assert result.violations() == Counter()
    assert result.stats.files == Counter({"valid": 3 * 2 * 6 * 2})
    assert result.stats.digests == Counter({"valid": 3 * 2 * 6})
    assert not result.stats.unverified and not result.stats.errors
    assert result.stats.files_waiting == 0
    assert lc.store.event_ids() == Counter(trail.event_ids())
    # Valid files are counted too: "no failure" never just means "nothing was checked".
    name = f'source="{result_name(bucket)}"'
    assert (
        f'cloudtrail_adapter_integrity_files_total{{{name},verdict="valid"}} 72.0' in result.metrics
    )
    assert (
        f'cloudtrail_adapter_integrity_digests_total{{{name},verdict="valid"}} 36.0'
        in result.metrics
    )
    assert (
        f'cloudtrail_adapter_integrity_files_total{{{name},verdict="missing"}} 0.0'
        in result.metrics
    )
    # Keys are asked of each region's CloudTrail, once a region, not once a digest.
    assert sorted({c[0] for c in STAND_IN.public_key_calls}) == sorted(regions)
    assert len(STAND_IN.public_key_calls) == len(regions)


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a 4-hour trail of one account and region (8 log files, 4 digests) gives when
    tampered with: the violations, files that cannot be checked, and how many are valid."""

    violations: Counter[tuple[str, str]]
    files_valid: int = 8
    digests_valid: int = 4
    unverified: Counter[str] = dataclasses.field(default_factory=Counter)
    exit_code: int = 0


Tamper = Callable[[Trail], Expected]


def edit_one(trail: Trail) -> Expected:
    key = trail.logs()[3].key
    trail.edit_log(key)
    return Expected(Counter({("hash_mismatch", key): 1}), files_valid=7)


def corrupt_one(trail: Trail) -> Expected:
    """Edited into something that is not a log file: it cannot be shipped (the single-load
    run fails, as it does for any object it could not read), and it is not what AWS hashed."""
    key = trail.logs()[5].key
    trail.corrupt_log(key)
    return Expected(Counter({("hash_mismatch", key): 1}), files_valid=7, exit_code=1)


def delete_one(trail: Trail) -> Expected:
    key = trail.logs()[4].key
    trail.delete(key)
    return Expected(Counter({("missing", key): 1}), files_valid=7)


def add_one(trail: Trail) -> Expected:
    key = trail.add_log(ACCOUNT, REGION, hour=2)
    return Expected(Counter({("unlisted", key): 1}))


def cut_the_chain(trail: Trail) -> Expected:
    """Hour 2's digest starts a chain of its own (as when validation was off a while)."""
    rebuilt = build_trail(trail.bucket, hours=trail.hours, keys=trail.keys, restart_at=2)
    trail.files = rebuilt.files
    return Expected(Counter({("chain_break", trail.digests()[2].key): 1}), digests_valid=3)


def wrong_key(trail: Trail) -> Expected:
    """Signed with a key that is not CloudTrail's, under CloudTrail's key's name."""
    key = trail.digests()[1].key
    trail.resign(key, TrailKey.generate(), own_fingerprint=False)
    return Expected(
        Counter({("bad_signature", key): 1}),
        files_valid=6,
        digests_valid=3,
        unverified=Counter({"bad_signature": 2}),
    )


def unknown_key(trail: Trail) -> Expected:
    """Signed with a key of its own, named as such: CloudTrail has no such key."""
    key = trail.digests()[1].key
    trail.resign(key, TrailKey.generate(), own_fingerprint=True)
    return Expected(
        Counter({("unknown_key", key): 1}),
        files_valid=6,
        digests_valid=3,
        unverified=Counter({"unknown_key": 2}),
    )


def drop_a_digest(trail: Trail) -> Expected:
    key = trail.digests()[1].key
    trail.delete(key)
    return Expected(
        Counter({("missing_digest", key): 1}),
        files_valid=6,
        digests_valid=3,
        unverified=Counter({"missing_digest": 2}),
    )


@pytest.mark.parametrize(
    "tamper",
    [
        edit_one,
        corrupt_one,
        delete_one,
        add_one,
        cut_the_chain,
        wrong_key,
        unknown_key,
        drop_a_digest,
    ],
    ids=lambda t: t.__name__,
)
async def test_each_tampering_gets_its_verdict_and_nothing_else_does(
    tamper: Tamper,
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    trail = build_trail(bucket, hours=4)
    expected = tamper(trail)
    result = await run(verified(bucket, lc, aws_options), trail, state_dir, aws_options)

    assert result.code == expected.exit_code
    assert result.violations() == expected.violations
    assert result.stats.files["valid"] == expected.files_valid
    assert result.stats.digests["valid"] == expected.digests_valid
    assert result.stats.unverified == expected.unverified
    assert result.stats.files_waiting == 0
    # Shipping is untouched: every record of every log file in the bucket arrives.
    assert lc.store.event_ids() == Counter(trail.event_ids())


@pytest.mark.parametrize("threshold", [None, 1024], ids=["whole", "ranges"])
async def test_a_damaged_log_file_is_salvaged_and_still_judged_by_all_of_its_content(
    threshold: int | None,
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    """Damage inside `Records`: the file's readable records ship and the damaged one is set
    aside (so the single-load run exits 1), and the hash of its whole content, taken where
    it was salvaged (read whole, or read again after the stream decoder refused it part-way
    through its ranges), is not the digest's."""
    trail = build_trail(bucket, hours=4)
    damaged = trail.logs()[3].key
    trail.damage_log(damaged)
    delivery = None
    if threshold is not None:
        delivery = DeliveryOptions(batch_linger=0.05, stream_threshold=threshold)
        assert all(len(f.body) > threshold for f in trail.logs())
    cfg = s3_config(
        aws_options, bucket, lc, delivery=delivery, integrity=IntegrityOptions(verify=True)
    )
    result = await run(cfg, trail, state_dir, aws_options)

    assert result.code == 1  # records were set aside
    assert result.violations() == Counter({("hash_mismatch", damaged): 1})
    assert result.stats.files == Counter({"valid": 7, "hash_mismatch": 1})
    assert result.stats.digests == Counter({"valid": 4})
    assert lc.store.event_ids() == Counter(trail.event_ids())


EVENT_KEYS = {
    "event_type",
    "eventName",
    "eventTime",
    "schema_version",
    "verdict",
    "subject",
    "account",
    "region",
    "bucket",
    "key",
    "digest_key",
    "reason",
    "expected_sha256",
    "actual_sha256",
    "period_start",
    "period_end",
    "detected_at",
    "source",
}


async def test_with_report_limacharlie_each_failure_is_one_event_of_the_documented_shape(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    """Four failures in two accounts; a filter that would drop every integrity event if it
    applied to them (they are the daemon's own, not CloudTrail records)."""
    trail = build_trail(bucket, accounts=("111122223333", "444455556666"), hours=4)
    first = trail.logs("111122223333")
    trail.edit_log(first[1].key)
    trail.delete(first[5].key)
    forged = trail.add_log("444455556666", REGION, hour=1)
    dropped = trail.digests("444455556666")[2].key
    trail.delete(dropped)
    cfg = verified(bucket, lc, aws_options, report="limacharlie")
    cfg = dataclasses.replace(
        cfg,
        record_filter=dataclasses.replace(
            cfg.record_filter, include_event_sources=("none.example",)
        ),
    )
    result = await run(cfg, trail, state_dir, aws_options)

    assert result.code == 0
    events = [e.json() for e in lc.store.events if e.json().get("event_type") == EVENT_TYPE]
    assert (
        Counter((e["verdict"], e["key"]) for e in events)
        == result.violations()
        == Counter(
            {
                ("hash_mismatch", first[1].key): 1,
                ("missing", first[5].key): 1,
                ("unlisted", forged): 1,
                ("missing_digest", dropped): 1,
            }
        )
    )
    for event in events:
        assert set(event) == EVENT_KEYS
        assert event["schema_version"] == 1 and event["bucket"] == bucket
        assert event["source"] == cfg.name and event["region"] == REGION
        assert event["key"].startswith(f"AWSLogs/o-a1b2c3d4e5/{event['account']}/")
        assert datetime.strptime(event["detected_at"], "%Y-%m-%dT%H:%M:%SZ")
        assert (event["eventName"], event["eventTime"]) == (EVENT_TYPE, event["detected_at"])
        assert event["reason"]
    by = {e["verdict"]: e for e in events}
    mismatch = by["hash_mismatch"]
    assert (
        mismatch["subject"] == "log_file"
        and mismatch["digest_key"] == trail.digests("111122223333")[0].key
    )
    assert mismatch["expected_sha256"] != mismatch["actual_sha256"]
    assert len(mismatch["actual_sha256"]) == 64
    gap = by["missing_digest"]
    assert gap["subject"] == "digest" and gap["digest_key"] == trail.digests("444455556666")[2].key
    start = datetime.strptime(gap["period_start"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    end = datetime.strptime(gap["period_end"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert end - start == timedelta(hours=1)
    # The filter still applies to CloudTrail's records: it keeps none of them.
    assert all(e.json().get("event_type") == EVENT_TYPE for e in lc.store.events)
    assert result.stats.events_queued == 0


async def test_verification_changes_nothing_that_is_delivered(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    tmp_path: Path,
    keys_served: None,
) -> None:
    trail = build_trail(bucket, regions=("us-east-1", "eu-west-1"), hours=3)
    trail.edit_log(trail.logs()[0].key)  # a failure, reported to the log only
    STAND_IN.public_keys = trail.public_keys()
    await trail.upload(aws_options)
    plain = s3_config(aws_options, bucket, lc)
    assert await serve([plain], tmp_path / "plain") == 0
    unverified = Counter(e.raw for e in lc.store.events)
    lc.store.clear()
    assert await serve([verified(bucket, lc, aws_options)], tmp_path / "verified") == 0
    assert Counter(e.raw for e in lc.store.events) == unverified
    assert sum(unverified.values()) == len(trail.event_ids())


async def test_a_restart_keeps_what_verdicts_still_wait_for(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    """Hour 3's digest is not written when the first run ends: its files were shipped and
    their hashes kept on disk. The second run finds the digest and checks them, without
    reading them again, and checks no digest twice."""
    keys = {REGION: TrailKey.generate()}
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    before = build_trail(bucket, hours=4, start=start, keys=keys, digest_hours=range(3))
    cfg = verified(bucket, lc, aws_options, grace=6 * 3600)  # hour 3 waits, whatever the time
    first = await run(cfg, before, state_dir, aws_options)
    assert first.code == 0 and first.violations() == Counter()
    assert first.stats.files == Counter({"valid": 6}) and first.stats.files_waiting == 2

    after = build_trail(bucket, hours=4, start=start, keys=keys)
    hour3 = after.digests()[3]
    assert hour3.key not in before.files
    after.files = {hour3.key: hour3}  # only the new digest is written
    with_requests: list[tuple[str, str]] = []
    STAND_IN.requests = with_requests
    try:
        second = await run(cfg, after, state_dir, aws_options)
    finally:
        STAND_IN.requests = None
    assert second.code == 0 and second.violations() == Counter()
    assert second.stats.files == Counter({"valid": 2}) and second.stats.files_waiting == 0
    assert second.stats.digests == Counter({"valid": 1})
    log_gets = [u for m, u in with_requests if m == "GET" and "/CloudTrail/" in u]
    assert log_gets == [] or all("list-type" in u for u in log_gets)


async def test_a_running_daemon_checks_each_digest_as_it_arrives(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    """Long-running: the last hour's digest comes while the daemon runs; the next pass
    checks it, and the event for the file edited in that hour reaches LimaCharlie."""
    keys = {REGION: TrailKey.generate()}
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    trail = build_trail(bucket, hours=2, start=start, keys=keys, digest_hours=[0])
    edited = trail.logs()[2].key  # of hour 1
    trail.edit_log(edited)
    STAND_IN.public_keys = trail.public_keys()
    await trail.upload(aws_options)
    integrity = IntegrityOptions(verify=True, report="limacharlie", grace=3 * 3600)
    cfg = s3_config(
        aws_options,
        bucket,
        lc,
        single_load=False,
        poll_interval=0.3,
        quiet_interval=0.3,
        integrity=integrity,
    )
    monitor = Monitor()
    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir, monitor=monitor))
        await lc.store.wait_for(len(trail.event_ids()), timeout=30)
        await passes_done(logs, [cfg], more=2)
        source = monitor.sources[cfg.name].source
        assert isinstance(source, S3Source) and source.integrity is not None
        stats = source.integrity.stats
        assert stats.files == Counter({"valid": 2}) and stats.files_waiting == 2
        assert not logs.named("integrity_violation")

        later = build_trail(bucket, hours=2, start=start, keys=keys)
        digest = later.digests()[1]
        await Trail(bucket, start, 2, keys, {digest.key: digest}).upload(aws_options)
        await lc.store.wait_for(len(trail.event_ids()) + 1, timeout=30)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0

    assert stats.files == Counter({"valid": 3, "hash_mismatch": 1}) and stats.files_waiting == 0
    assert stats.digests == Counter({"valid": 2})
    [event] = [e.json() for e in lc.store.events if e.json().get("event_type") == EVENT_TYPE]
    assert (event["verdict"], event["key"]) == ("hash_mismatch", edited)
    assert stats.events_queued == 0


async def test_documents_splitting_a_bucket_by_account_each_judge_their_own(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    keys_served: None,
) -> None:
    """One document per account, one destination (so one checkpoint scope, one integrity
    database): each verdict is given once, by the document whose account it is."""
    first, second = "111122223333", "444455556666"
    trail = build_trail(bucket, accounts=(first, second), hours=4)
    deleted = trail.logs(first)[2].key
    trail.delete(deleted)
    STAND_IN.public_keys = trail.public_keys()
    await trail.upload(aws_options)
    integrity = IntegrityOptions(verify=True)
    configs = [
        dataclasses.replace(
            s3_config(aws_options, bucket, lc, accounts=(account,), integrity=integrity),
            index=index,
        )
        for index, account in ((1, first), (2, second))
    ]
    monitor = Monitor()
    with watch_logs() as logs:
        assert await serve(configs, state_dir, monitor=monitor) == 0
    stats = []
    for cfg in configs:
        source = monitor.sources[cfg.name].source
        assert isinstance(source, S3Source) and source.integrity is not None
        stats.append(source.integrity.stats)
    assert Counter((e["verdict"], e["key"]) for e in logs.named("integrity_violation")) == (
        Counter({("missing", deleted): 1})
    )
    assert stats[0].files == Counter({"valid": 7, "missing": 1})
    assert stats[1].files == Counter({"valid": 8})
    assert [s.digests for s in stats] == [Counter({"valid": 4})] * 2
    assert not stats[0].unverified and not stats[1].unverified
