"""A flaky S3 costs nothing: through a proxy that fails each chosen object's first two tries
(503 SlowDown, 500, a body cut at half) and throttles listings, a single-load run ships
every record exactly once and exits 0, and a second run finds nothing left to send."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cloudtrail_adapter.config import AwsOptions, DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import s3_config
from tests.support.corpus import PREFIX, ids, records
from tests.support.fault_proxy import FaultPlan, FaultProxy
from tests.support.stand_in import put_objects

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
