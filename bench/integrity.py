"""What `integrity.verify` costs: the corpus in a bucket with the digests CloudTrail would
have written for it (signed, chained, as tests/support/trail.py builds them), shipped by
the daemon over S3 with verification off and on, in turns, each run from a fresh state.

A verified run must find every digest and every log file valid, and nothing else (its
`integrity_settled` lines say so), else the bench stops saying what it found. The moto
child serves ListPublicKeys with the key the digests are signed with (`keys_served`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.aws_rows import (
    UPLOAD_CONCURRENCY,
    Run,
    Totals,
    document,
    each,
    single_load_run,
    write_config,
)
from bench.kill_harness import aws_options
from bench.table import Row
from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import START, CorpusFile
from cloudtrail_adapter.emulator.corpus_names import REGIONS
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.stand_in import PUBLIC_KEYS_VARIABLE
from tests.support.trail import TrailFile, TrailKey, digests_for

__all__ = ["keys_served", "verify_rows"]

VALIDITY = timedelta(days=365)


@contextlib.contextmanager
def keys_served(key: TrailKey) -> Iterator[None]:
    """A moto child started within serves `key`'s public half in every corpus region (the
    stand-in reads PUBLIC_KEYS_VARIABLE when it starts)."""
    since, until = (START - VALIDITY).timestamp(), (START + VALIDITY).timestamp()
    entry = [base64.b64encode(key.der).decode(), since, until]
    before = os.environ.get(PUBLIC_KEYS_VARIABLE)
    os.environ[PUBLIC_KEYS_VARIABLE] = json.dumps({region: [entry] for region in REGIONS})
    try:
        yield
    finally:
        if before is None:
            del os.environ[PUBLIC_KEYS_VARIABLE]
        else:
            os.environ[PUBLIC_KEYS_VARIABLE] = before


async def verify_rows(
    files: list[CorpusFile],
    workdir: Path,
    parallel_fetch: int,
    moto_url: str,
    key: TrailKey,
    repeat: int,
) -> tuple[Row, Row]:
    """(S3 with signed digests, verification off; the same with integrity.verify): each
    the median of `repeat` runs, off and on taking turns."""
    options = aws_options(moto_url)
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    logs = [f for f in files if f.kind == "log"]
    digests = digests_for(bucket, [(f.key, f.body) for f in logs], key)
    await _upload(options, bucket, files, digests)
    totals = Totals.of(files)
    want = Counter({"files_valid": len(logs), "digests_valid": len(digests)})
    off: list[Run] = []
    on: list[Run] = []
    async with LimaCharlieEmulator() as lc:
        for _ in range(repeat):
            for verified, runs in ((False, off), (True, on)):
                lc.store.clear()
                source: dict[str, Any] = {"bucket_name": bucket, "single_load": True}
                source["parallel_fetch"] = parallel_fetch
                if verified:
                    source["integrity"] = {"verify": True, "report": "limacharlie"}
                doc = document("s3", lc, moto_url, **source)
                config, state = write_config(workdir, "s3-verify" if verified else "s3", doc)
                what = "daemon S3 run" + (" (integrity.verify)" if verified else "")
                measured, found = await _run(config, state, lc, totals, what)
                if verified and found != want:
                    raise SystemExit(f"{what}: checked {dict(found)}, expected {dict(want)}")
                runs.append(measured)
    note = f"{len(digests)} digests"
    plain = _row("daemon, S3 (moto) -> USP, with digests", totals, off, f"{note}, not read")
    checked = _row(
        "daemon, S3 (moto) -> USP, integrity.verify",
        totals,
        on,
        f"{note} and {len(logs)} files, all valid",
    )
    return plain, checked


async def _run(
    config: Path, state: Path, lc: LimaCharlieEmulator, totals: Totals, what: str
) -> tuple[Run, Counter[str]]:
    """aws_rows.single_load_run, and what its `integrity_settled` lines sum to."""
    run = await single_load_run(config, state, lc, totals, what)
    found: Counter[str] = Counter()
    for line in run.daemon.logs.named("integrity_settled"):
        found.update({k: line[k] for k in ("files_valid", "digests_valid", "violations")})
        found.update(line["unverified"])
    return run, +found


async def _upload(
    options: AwsOptions, bucket: str, files: Sequence[CorpusFile], digests: Sequence[TrailFile]
) -> None:
    objects: list[tuple[str, bytes, dict[str, str]]] = [(f.key, f.body, {}) for f in files]
    objects += [(d.key, d.body, d.metadata) for d in digests]
    async with aws.client("s3", options, pool=UPLOAD_CONCURRENCY) as s3:
        await s3.create_bucket(Bucket=bucket)

        async def put(item: tuple[str, bytes, dict[str, str]]) -> None:
            await s3.put_object(Bucket=bucket, Key=item[0], Body=item[1], Metadata=item[2])

        await each(objects, UPLOAD_CONCURRENCY, put)


def _row(name: str, totals: Totals, runs: list[Run], note: str) -> Row:
    middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    return Row(
        name,
        totals.records,
        totals.raw_bytes,
        middle.seconds,
        peak_rss_mb=max(r.peak_rss_mb for r in runs),
        note=f"median of {len(runs)}; {note}",
        cpu_seconds=middle.cpu_seconds,
    )
