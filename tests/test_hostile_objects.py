"""Whoever can write to the bucket cannot make the daemon run out of memory (issue 26).

A bucket of ordinary files and three hostile ones, each a few MB of gzip at most: 4 GiB of
whitespace inside `Records`, a record holding a 2 GiB string, a record nested 100,000
levels deep. The daemon runs them in `single_load` inside a 768 MB memory cgroup where the
machine allows one (root, cgroup v2), as in an ordinary container; elsewhere its process
tree's peak RSS is what is measured. It is never killed, its tree stays under 600 MB, every
ordinary record arrives exactly once, and each hostile file ships as far as it is valid:
the whitespace file whole, the other two but for their hostile record, which is set aside
with its reason. `max_inflated_size` is raised above the bombs, so that every path runs to
the end: memory is bounded by what a step holds, not by that limit. At the default limit
the two bombs are set aside at once and never fetched again.

Before this issue, the 2 GiB string alone took the tree to 4.3 GB (its salvage mapped the
whole text into memory and copied the string out of it); under the cgroup the kernel
killed the worker, and the objects decoding next to it failed with it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cloudtrail_adapter.config import AwsOptions, DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.state import StateStore
from tests.support.bombs import deep_bomb, long_string_bomb, whitespace_bomb
from tests.support.cgroup import MemoryLimit
from tests.support.configs import s3_config, s3_document
from tests.support.process import DaemonProcess, TreeUsage
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

PREFIX = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/24/"
CGROUP_LIMIT = 768 << 20
PEAK_LIMIT_MB = 600
ORDINARY = 40  # files of 100 to 400 records
WHITESPACE_MIB = 4096
STRING_MIB = 2048
DEPTH = 100_000
GIB = 1 << 30


def records(n: int, rng: random.Random) -> list[dict[str, Any]]:
    when = datetime(2026, 11, 24, 12, tzinfo=UTC)
    return [
        cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
        for _ in range(n)
    ]


def bucket_objects() -> tuple[dict[str, bytes], list[dict[str, Any]], dict[str, str]]:
    """The objects by key, every record that must arrive, and the hostile keys by name."""
    rng = random.Random(26)
    objects: dict[str, bytes] = {}
    expected: list[dict[str, Any]] = []
    for n in range(ORDINARY):
        recs = records(rng.randint(100, 400), rng)
        objects[f"{PREFIX}ordinary-{n:02}.json.gz"] = log_file(recs)
        expected += recs
    hostile = {
        "whitespace": f"{PREFIX}hostile-whitespace.json.gz",
        "string": f"{PREFIX}hostile-string.json.gz",
        "deep": f"{PREFIX}hostile-deep.json.gz",
    }
    builders = {
        "whitespace": lambda a, b: whitespace_bomb(a, b, WHITESPACE_MIB),
        "string": lambda a, b: long_string_bomb(a, b, STRING_MIB),
        "deep": lambda a, b: deep_bomb(a, b, DEPTH),
    }
    for name, key in hostile.items():
        around = records(2, rng)  # the valid records on either side of the hostile part
        objects[key] = builders[name](orjson.dumps(around[0]), orjson.dumps(around[1]))
        assert len(objects[key]) < 5 << 20, (name, len(objects[key]))
        expected += around
    return objects, expected, hostile


@pytest.mark.timeout(300)
async def test_hostile_objects_run_in_bounded_memory_and_cost_only_themselves(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    objects, expected, hostile = bucket_objects()
    await put_objects(aws_options, bucket, objects)
    del objects
    assert aws_options.endpoint_url
    doc = s3_document(
        aws_options.endpoint_url,
        bucket,
        lc,
        "hostile",
        single_load=True,
        delivery={"max_inflated_size": 8 * GIB},  # every path runs to the end
    )
    config = tmp_path / "hostile.yaml"
    config.write_text(yaml.safe_dump(doc))
    state = tmp_path / "state"

    limit = MemoryLimit.make(CGROUP_LIMIT)  # None: the tree's peak RSS is all we measure
    try:
        async with (
            DaemonProcess(
                config, state, log_level="info", wrapper=limit.wrapper() if limit else ()
            ) as daemon,
            TreeUsage(daemon.proc.pid) as usage,
        ):
            code = await asyncio.wait_for(daemon.proc.wait(), 240)
        if limit is not None:
            assert limit.oom_kills() == 0, daemon.tail()
            print(f"\ncgroup of {CGROUP_LIMIT >> 20} MB: peak {limit.peak_mb()} MB")
    finally:
        if limit is not None:
            limit.remove()
    print(f"\npeak RSS of the tree: {usage.mb:.0f} MB")

    context = daemon.tail(40)
    assert code == 1, context  # records were set aside: the single-load job says so
    assert not daemon.logs.named("worker_died"), context
    assert not daemon.logs.named("object_failed"), context
    assert usage.mb < PEAK_LIMIT_MB, f"peak RSS {usage.mb:.0f} MB\n{context}"
    want = Counter(str(r["eventID"]) for r in expected)
    assert lc.store.event_ids() == want, "every valid record, exactly once"
    store = StateStore.in_dir(state)
    try:
        parts = {(p.ref.rsplit("/", 1)[-1], p.index, p.reason) for p in store.unreadable_records()}
        assert store.failures() == []
    finally:
        store.close()
    assert parts == {
        (hostile["string"].rsplit("/", 1)[-1], 1, "record_too_large"),
        (hostile["deep"].rsplit("/", 1)[-1], 1, "too_deep"),
    }


async def test_past_max_inflated_size_a_bomb_is_set_aside_at_once_and_never_fetched_again(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    rng = random.Random(261)
    good = records(50, rng)
    around = records(2, rng)
    a, b = orjson.dumps(around[0]), orjson.dumps(around[1])
    bombs = {
        f"{PREFIX}bomb-whitespace.json.gz": whitespace_bomb(a, b, 96),
        f"{PREFIX}bomb-string.json.gz": long_string_bomb(a, b, 96),
    }
    await put_objects(aws_options, bucket, {f"{PREFIX}good.json.gz": log_file(good), **bombs})
    delivery = DeliveryOptions(batch_max_records=500, max_inflated_size=64 << 20)
    cfg = s3_config(aws_options, bucket, lc, delivery=delivery, quarantine_after=5)

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 1
    quarantined = {(e["key"], e["reason"], e["attempts"]) for e in logs.named("object_quarantined")}
    assert quarantined == {(key, "inflated_too_large", 1) for key in bombs}
    assert all("max_inflated_size" in e["error"] for e in logs.named("object_quarantined"))
    assert Counter(str(r["eventID"]) for r in good) <= lc.store.event_ids()

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0  # nothing new; the bombs are not retried
    assert logs.named("source_pass_done")[0]["failing"] == 2
    assert not logs.named("object_decoded")
