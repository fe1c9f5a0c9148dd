"""SQS through a flaky network: the heartbeat keeps a message hidden however slowly the
receive was answered."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support import messages
from tests.support.configs import sqs_config
from tests.support.corpus import PREFIX, ids, records
from tests.support.fault_proxy import FaultPlan, FaultProxy
from tests.support.stand_in import depth, put_objects, send

KEY = f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1200Z_slow.json.gz"
VISIBILITY = 4


async def test_the_heartbeat_counts_the_visibility_timeout_from_when_the_receive_was_sent(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """A receive answered 2.5 s late, with a 4 s visibility timeout, and an object slow to
    read: the message is extended before 4 s have passed since the receive was sent (and
    then within every 4 s, until deleted), so no other consumer could take it meanwhile."""
    recs = records(30, 77)
    await put_objects(aws_options, bucket, {KEY: log_file(recs)})
    await send(aws_options, queue, [messages.s3_event(bucket, [KEY])])
    plan = FaultPlan(delays={"ReceiveMessage": 2.5, "GetObject": 6.0})
    with FaultProxy(str(aws_options.endpoint_url), plan) as proxy:
        through = dataclasses.replace(aws_options, endpoint_url=proxy.url)
        cfg = sqs_config(through, queue, lc, visibility_timeout=VISIBILITY)
        assert await serve([cfg], state_dir) == 0
    received = next(c.at for c in proxy.calls if c.action == "ReceiveMessage" and c.carried)
    extended = [c.at for c in proxy.calls if c.action == "ChangeMessageVisibility"]
    deleted = next(c.at for c in proxy.calls if c.action == "DeleteMessageBatch")
    hidden = [received, *extended, deleted]
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(hidden)]
    assert extended and max(gaps) < VISIBILITY, f"visibility lapsed: {gaps}"
    assert lc.store.event_ids() == ids(recs)
    assert await depth(aws_options, queue) == (0, 0)
