"""A flaky S3 costs nothing: through a proxy that fails each chosen object's first two tries
(503 SlowDown, 500, a body cut at half) and throttles listings, a single-load run ships
every record exactly once and exits 0, and a second run finds nothing left to send."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cloudtrail_adapter.config import AwsOptions, DeliveryOptions
from cloudtrail_adapter.daemon import checkpoint_scope, serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.readers import READ_TRIES
from cloudtrail_adapter.state import StateStore
from tests.support.configs import s3_config
from tests.support.corpus import PREFIX, ids, records
from tests.support.fault_proxy import FaultPlan, FaultProxy
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

#: The issue's faults: every 3rd object 503 SlowDown, every 5th a 500, every 4th a body cut
#: at half, each for its first two tries; every 4th listing call 503.
ISSUE_FAULTS = FaultPlan(
    slow_down_every=3, internal_every=5, cut_every=4, tries=2, list_slow_down_every=4
)
#: And every 5th listing call's page cut at half.
WITH_CUT_PAGES = dataclasses.replace(ISSUE_FAULTS, list_cut_every=5)


def corpus(objects: int) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    bodies: dict[str, bytes] = {}
    everything: list[dict[str, Any]] = []
    for n in range(objects):
        recs = records(40 + n * 7, 1000 + n)
        everything += recs
        key = f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T12{n:02d}Z_f{n}.json.gz"
        bodies[key] = log_file(recs)
    return bodies, everything


async def test_single_load_through_faults_ships_every_record_once_and_exits_0(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    bodies, everything = corpus(24)
    await put_objects(aws_options, bucket, bodies)
    with FaultProxy(str(aws_options.endpoint_url), WITH_CUT_PAGES) as proxy:
        through = dataclasses.replace(aws_options, endpoint_url=proxy.url)
        delivery = DeliveryOptions(batch_max_records=200, batch_linger=0.05)
        cfg = s3_config(through, bucket, lc, delivery=delivery)
        assert await serve([cfg], state_dir) == 0
        kinds = proxy.kinds()
        assert kinds["cut"] >= 2 and kinds["slow_down"] >= 2 and kinds["internal"] >= 2, kinds
        assert kinds["list_slow_down"] >= 1 and kinds["list_cut"] >= 1, kinds
        assert lc.store.event_ids() == ids(everything)
        sent = {str(e.json()["eventID"]): e.json() for e in lc.store.events}
        assert sent == {str(r["eventID"]): r for r in everything}
        assert await serve([cfg], state_dir) == 0
    assert len(lc.store.events) == len(everything), "the second run re-sent records"


async def test_faults_outlasting_the_retries_in_place_are_retried_within_the_run(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """Every 4th object's body is cut on its first 6 tries, past the 4 tries in place: its
    first attempt fails, and a pass seconds later ships it, so the run still exits 0."""
    bodies, everything = corpus(8)
    await put_objects(aws_options, bucket, bodies)
    plan = FaultPlan(cut_every=4, tries=READ_TRIES + 2)
    with FaultProxy(str(aws_options.endpoint_url), plan) as proxy, watch_logs() as logs:
        cfg = s3_config(dataclasses.replace(aws_options, endpoint_url=proxy.url), bucket, lc)
        assert await serve([cfg], state_dir) == 0
        assert proxy.kinds()["cut"] == 2 * (READ_TRIES + 2)
        assert [e["objects"] for e in logs.named("single_load_retrying")] == [2]
        assert lc.store.event_ids() == ids(everything)
        assert await serve([cfg], state_dir) == 0
    assert len(lc.store.events) == len(everything), "the second run re-sent records"


async def test_what_a_run_left_to_retry_later_does_not_make_a_single_load_skip_it(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """An object a run left backing off (a minute, say, after a cut body) is loaded by the
    next single-load run, now that S3 answers."""
    bodies, everything = corpus(3)
    await put_objects(aws_options, bucket, bodies)
    cfg = s3_config(aws_options, bucket, lc)
    store = StateStore.in_dir(state_dir)
    store.scoped(checkpoint_scope(cfg)).checkpoints(bucket).record_failure(
        next(iter(bodies)), reason="ClientPayloadError", error="cut", quarantine_after=5, backoff=60
    )
    store.close()
    assert await serve([cfg], state_dir) == 0
    assert lc.store.event_ids() == ids(everything)


@pytest.mark.parametrize("code", ["RequestTimeTooSkewed", "ExpiredToken", "InvalidAccessKeyId"])
async def test_a_refusal_of_who_or_when_fails_the_source_with_its_reason_not_each_object(
    code: str, aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """Every GetObject refused for our credentials or our clock: the source fails once,
    with AWS's code and what to do (a skewed clock says by how much); no object counts a
    failure for it, so none is backed off or quarantined for what was never its fault."""
    bodies, _ = corpus(4)
    await put_objects(aws_options, bucket, bodies)
    plan = FaultPlan(refuse_objects=code, server_clock_ahead=3600)
    with FaultProxy(str(aws_options.endpoint_url), plan) as proxy, watch_logs() as logs:
        cfg = s3_config(dataclasses.replace(aws_options, endpoint_url=proxy.url), bucket, lc)
        assert await serve([cfg], state_dir) == 1
    [failed] = logs.named("source_failed")
    assert failed["reason"] == code
    if code == "RequestTimeTooSkewed":
        assert "clock is 3600 s behind" in failed["error"], failed["error"]
    assert not logs.named("object_failed")
    store = StateStore.in_dir(state_dir)
    assert store.failures() == []
    store.close()
