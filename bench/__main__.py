"""`make bench`: where the daemon stands against the limit of its own code path, against the
S3 stand-in it reads from, and against what a user would otherwise write, on one corpus.

Rows (records/s and uncompressed MB/s; peak RSS of the program measured, its worker
processes included):
- floor: one process, no I/O: decompress, split, frame and compress exactly as the
  daemon does (each object packed whole or in steps, as `packing.decoding` says, the
  fragments joined into gzip batches);
- daemon, file source -> the LimaCharlie emulator over USP on loopback, acks on; and the
  same on a quarter of the corpus, to show that memory does not follow the corpus size,
  with a filter, with eventID de-duplication (on by default) switched off, and on 3,200
  small files of their own (the cost per object);
- moto's own GetObject rate at the daemon's concurrency, and the daemon over S3 (moto);
- what `integrity.verify` costs (bench/integrity.py): the floor with the SHA-256 of each
  object's content taken too, and the daemon over S3 with the corpus's signed digests,
  verification off and on (`--only integrity` runs just these);
- the daemon on SQS notifications (moto), with the notification-to-ack latency;
- naive: boto3, gzip, json, requests to the emulator's webhook (bench/naive.py);
- listing (bench/listing.py): ListObjectsV2 calls and seconds of a first and a steady-state
  pass over a sparse ten-year bucket and an organisation's, next to `layout: flat`;
- USP recovery (bench/usp_recovery.py): what one dropped connection costs a delivery;
- organisation (bench/org.py): 1,000 accounts x 17 regions, 5 % active, on a light S3 of
  its own process: the first pass, steady LIST calls an hour, CPU per list call, landing
  to GetObject (`--only org`, about 20 minutes; `--org-accounts 50` to try it small).

Every daemon, moto and the naive script run in their own processes; the emulator runs in
this one. The machine has as many cores as it says: on 2 cores the daemon, its workers and
the emulator share them, so the daemon rows are a lower bound of what it does alone.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import os
import platform
import resource
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cloudtrail_adapter
from bench.aws_rows import (
    Totals,
    file_document,
    moto_process,
    naive_row,
    s3_rows,
    single_load_run,
    sqs_row,
    write_config,
)
from bench.corpus import bench_corpus
from bench.integrity import keys_served, verify_rows
from bench.listing import ORG_ACCOUNTS, ListingRow, listing_rows, render_listing
from bench.org import OrgSetup, org_row, render_org
from bench.table import Row, render
from bench.usp_recovery import recovery_rows, render_recovery
from cloudtrail_adapter.config import DeliveryOptions, RecordFilter
from cloudtrail_adapter.decoding.batches import gzip_batch
from cloudtrail_adapter.decoding.packing import decoding, pack_steps, pack_whole
from cloudtrail_adapter.decoding.values import Fragment, PackLimits
from cloudtrail_adapter.emulator.corpus import CorpusFile, org_trail, write_directory
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.logs import configure_logging
from tests.support.process import DaemonProcess, TreeUsage
from tests.support.trail import TrailKey

LIBRARIES = ("msgspec", "isal", "aiohttp", "aiobotocore", "moto")
PARALLEL_FETCH = 8


def floor(files: list[CorpusFile], totals: Totals, *, hash_content: bool = False) -> Row:
    """The daemon's CPU work on one core: each object packed into fragments, the fragments
    joined into batches as the batcher joins them. `hash_content`: and the SHA-256 of each
    object's uncompressed content taken too, as `integrity.verify` has the workers do."""
    delivery = DeliveryOptions()
    limits = PackLimits(
        delivery.batch_max_records, delivery.batch_max_bytes, hash_content=hash_content
    )
    batch: list[Fragment] = []
    records = size = 0
    started, cpu = time.perf_counter(), time.process_time()
    for f in files:
        whole = decoding(len(f.body), delivery.stream_threshold, limits) in ("inline", "whole")
        for part in (pack_whole if whole else pack_steps)(f.body, limits).fragments:
            full = records + part.records > limits.max_records
            if batch and (full or size + part.raw_bytes + 1 > limits.max_bytes):
                gzip_batch(batch)
                batch, records, size = [], 0, 0
            batch.append(part)
            records += part.records
            size += part.raw_bytes + 1
    gzip_batch(batch)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name = "floor + SHA-256 (integrity.verify)" if hash_content else "floor"
    return Row(
        f"{name} (pack + batch, 1 core, no I/O)",
        totals.records,
        totals.raw_bytes,
        seconds,
        note=f"this process: {rss:.0f} MB (holds the corpus)",
        cpu_seconds=cpu,
    )


def compile_bytecode() -> None:
    """Writes the package's bytecode, as installing it does, so that no daemon row pays for
    compiling our modules at each start (an editable install under PYTHONDONTWRITEBYTECODE,
    as on these machines, never keeps it: 0.1 CPU-s of every start)."""
    compileall.compile_dir(Path(cloudtrail_adapter.__file__).parent, quiet=1)


async def startup_row(workdir: Path) -> Row:
    """The daemon on an empty directory, single_load, from spawn to exit: what every start
    costs before a record moves (interpreter, imports, the worker pool, the connection)."""
    root = workdir / f"empty-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    async with LimaCharlieEmulator() as lc:
        config, state = write_config(workdir, "file", file_document(lc, root, "start"))
        started = time.perf_counter()
        async with (
            DaemonProcess(config, state, log_level="warning") as daemon,
            TreeUsage(daemon.proc.pid) as usage,
        ):
            code = await asyncio.wait_for(daemon.proc.wait(), 120)
        seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"daemon start-up run exited {code}:\n{daemon.tail()}")
    return Row(
        "daemon start-up (empty input, start to exit)",
        0,
        0,
        seconds,
        peak_rss_mb=usage.mb,
        cpu_seconds=usage.cpu_seconds,
        note=f"{usage.cpu_seconds:.2f} CPU-s",
    )


#: What a user might drop: read-only noise and one chatty service.
NOISE = RecordFilter(
    exclude_event_names=("Describe*", "List*", "Get*"), exclude_event_sources=("kms.*",)
)


async def file_row(
    files: list[CorpusFile],
    workdir: Path,
    label: str,
    keep: RecordFilter | None = None,
    *,
    dedup: bool = True,
) -> Row:
    """The CLI on a `file:` source over the corpus written to disk, single_load, to USP.
    With `keep`, a `filter:`; its rate counts the records read, kept or not. `dedup=False`
    switches eventID de-duplication off (it is on by default)."""
    totals = Totals.of(files)
    expected = totals if keep is None else Totals.kept(files, keep)
    root = workdir / f"corpus-{uuid.uuid4().hex[:8]}"
    write_directory(files, root)
    async with LimaCharlieEmulator() as lc:
        source: dict[str, Any] = {}
        if not dedup:
            source["dedup"] = {"enabled": False}
        if keep is not None:
            source["filter"] = {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(keep).items()
                if v != getattr(RecordFilter(), k)
            }
        doc = file_document(lc, root, "file", **source)
        config, state = write_config(workdir, "file", doc)
        run = await single_load_run(config, state, lc, expected, f"daemon {label}")
    note = "" if keep is None else f"shipped {expected.records:,} of {totals.records:,}"
    return Row(
        f"daemon, file source -> USP emulator{label}",
        totals.records,
        totals.raw_bytes,
        run.seconds,
        peak_rss_mb=run.peak_rss_mb,
        note=note,
        cpu_seconds=run.cpu_seconds,
    )


def small_files() -> list[CorpusFile]:
    """An organisation's quiet hours: 3,200 files of 1-10 records (a few KiB each), where
    the cost per object, not per record, decides."""
    return org_trail(
        7, accounts=20, regions=8, days=1, files_per_day=20, records_per_file=(1, 10), digests=False
    )


async def small_files_row(workdir: Path) -> Row:
    files = small_files()
    row = await file_row(files, workdir, f" ({len(files):,} small files)")
    assert row.cpu_seconds is not None
    return replace(row, note=f"{row.cpu_seconds / len(files) * 1e6:,.0f} us CPU per file")


def median(runs: list[Row]) -> Row:
    """The run of median time, with the highest peak memory of all runs."""
    middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    peaks = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    note = f"median of {len(runs)}" + (f"; {middle.note}" if middle.note else "")
    return replace(middle, peak_rss_mb=max(peaks) if peaks else None, note=note)


async def measure(files: list[CorpusFile], workdir: Path, repeat: int = 3) -> list[Row]:
    """Every row; the two whose ratio is a target (floor, file source) `repeat` times."""
    totals = Totals.of(files)
    rows = [median([floor(files, totals) for _ in range(repeat)])]
    rows.append(median([floor(files, totals, hash_content=True) for _ in range(repeat)]))
    rows.append(median([await startup_row(workdir) for _ in range(repeat)]))
    rows.append(median([await file_row(files, workdir, "") for _ in range(repeat)]))
    quarter = files[::4]
    rows.append(await file_row(quarter, workdir, " (1/4 corpus)"))
    rows.append(await small_files_row(workdir))
    filtered = [await file_row(files, workdir, " (filtered)", NOISE) for _ in range(repeat)]
    rows.append(median(filtered))
    plain = [await file_row(files, workdir, " (dedup off)", dedup=False) for _ in range(repeat)]
    rows.append(median(plain))
    key = TrailKey.generate()  # signs the digests; the moto child serves its public half
    async with contextlib.AsyncExitStack() as stack:
        with keys_served(key):
            moto = await stack.enter_async_context(moto_process())
        rows += await s3_rows(files, workdir, PARALLEL_FETCH, moto_url=moto)
        pace = rows[-1].rate / 2
        rows.append(await sqs_row(files, workdir, PARALLEL_FETCH, moto_url=moto, load=pace))
        rows.append(await naive_row(files, workdir, moto))
        rows += await verify_rows(files, workdir, PARALLEL_FETCH, moto, key, repeat)
    return rows


async def measure_integrity(files: list[CorpusFile], workdir: Path, repeat: int) -> list[Row]:
    """Only what `integrity.verify` costs (`--only integrity`): the floor with and without
    the hash, and the S3 pair."""
    totals = Totals.of(files)
    rows = [median([floor(files, totals) for _ in range(repeat)])]
    rows.append(median([floor(files, totals, hash_content=True) for _ in range(repeat)]))
    key = TrailKey.generate()
    async with contextlib.AsyncExitStack() as stack:
        with keys_served(key):
            moto = await stack.enter_async_context(moto_process())
        rows += await verify_rows(files, workdir, PARALLEL_FETCH, moto, key, repeat)
    return rows


async def measure_cpu(files: list[CorpusFile], workdir: Path, repeat: int) -> list[Row]:
    """Only the rows of the CPU targets (`--only cpu`): the floor, start-up, and the file
    source with de-duplication on and off."""
    totals = Totals.of(files)
    rows = [median([floor(files, totals) for _ in range(repeat)])]
    rows.append(median([await startup_row(workdir) for _ in range(repeat)]))
    rows.append(median([await file_row(files, workdir, "") for _ in range(repeat)]))
    plain = [await file_row(files, workdir, " (dedup off)", dedup=False) for _ in range(repeat)]
    rows.append(median(plain))
    rows.append(await small_files_row(workdir))
    return rows


def integrity_ratios(rows: list[Row]) -> list[str]:
    def row(prefix: str) -> Row:
        return next(r for r in rows if r.name.startswith(prefix))

    base, hashed = row("floor (pack"), row("floor + SHA-256")
    off, on = row("daemon, S3 (moto) -> USP, with digests"), row("daemon, S3 (moto) -> USP, integ")
    assert base.cpu_seconds and hashed.cpu_seconds is not None
    cpu = (hashed.cpu_seconds - base.cpu_seconds) / base.records * 1e6
    per_record = base.cpu_seconds / base.records * 1e6
    return [
        f"verify: hashing CPU per record:  {cpu:6.2f} us   (floor: {per_record:.2f} us)",
        f"verify: floor with / without:    {hashed.rate / base.rate:6.2f}",
        f"verify: S3 rate on / off:        {on.rate / off.rate:6.2f}",
    ]


async def measure_listing(org_accounts: int) -> list[ListingRow]:
    """The listing rows, against a moto of their own (a fresh one, with no bucket)."""
    async with moto_process() as moto:
        return await listing_rows(moto, org_accounts=org_accounts)


def cpu_ratios(base: Row, start: Row, daemon: Row, plain: Row) -> list[str]:
    """CPU per record, which a shared machine cannot hide: the daemon's after start-up
    against the floor's, start-up on its own, and what de-duplication costs."""
    assert base.cpu_seconds and start.cpu_seconds is not None
    assert daemon.cpu_seconds and plain.cpu_seconds
    floor_us = base.cpu_seconds / base.records * 1e6
    steady_us = (daemon.cpu_seconds - start.cpu_seconds) / daemon.records * 1e6
    plain_us = (plain.cpu_seconds - start.cpu_seconds) / plain.records * 1e6
    return [
        f"CPU per record, floor:      {floor_us:6.2f} us",
        f"CPU per record, daemon:     {steady_us:6.2f} us   (file source, after start-up)",
        f"floor / daemon CPU:         {floor_us / steady_us:6.2f}   (target >= 0.5)",
        f"daemon start-up:            {start.cpu_seconds:6.2f} CPU-s   (target <= 0.5)",
        f"de-duplication's CPU share: {1 - plain_us / steady_us:6.1%}   (target <= 10%)",
    ]


def ratios(rows: list[Row]) -> list[str]:
    def row(prefix: str) -> Row:
        return next(r for r in rows if r.name.startswith(prefix))

    base, daemon, s3 = (
        row("floor (pack"),
        row("daemon, file"),
        row("daemon, S3 (moto) -> USP emulator"),
    )
    filtered = row("daemon, file source -> USP emulator (filtered)")
    plain = row("daemon, file source -> USP emulator (dedup off)")
    moto, naive = row("moto raw"), row("naive")
    peak = max(r.peak_rss_mb or 0.0 for r in rows if r.name.startswith("daemon"))
    return [
        *cpu_ratios(base, row("daemon start-up"), daemon, plain),
        f"daemon (file) / floor:      {daemon.rate / base.rate:6.2f}   (target >= 0.8)",
        f"daemon (file) records/s:    {daemon.rate:,.0f}   (target >= 150,000)",
        f"daemon (file) / naive:      {daemon.rate / naive.rate:6.1f}   (target >= 10)",
        f"daemon (S3) / naive:        {s3.rate / naive.rate:6.1f}",
        f"filtered / unfiltered:      {filtered.rate / daemon.rate:6.2f}   (target >= 0.8)",
        f"dedup on / off:             {daemon.rate / plain.rate:6.2f}",
        f"daemon (S3) / moto raw GET: {s3.rate / moto.rate:6.2f}   (target >= 0.8)",
        f"peak RSS of a daemon row:   {peak:,.0f} MB   (target < 300)",
        *integrity_ratios(rows),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", type=float, default=1.0, help="file counts x SCALE")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floor and file rows")
    parser.add_argument(
        "--only",
        choices=["integrity", "cpu", "org"],
        help="only the rows of what integrity.verify costs, of the CPU targets, or the "
        "organisation row",
    )
    parser.add_argument("--org-accounts", type=int, help="the organisation row's accounts")
    parser.add_argument("--org-landing", type=float, default=660.0, help="its landing seconds")
    parser.add_argument("--org-window", type=float, default=150.0, help="its listing-only s")
    parser.add_argument(
        "--org-quiet", type=float, help="its quiet_interval (default: the daemon's own)"
    )
    args = parser.parse_args()
    org = OrgSetup(
        accounts=args.org_accounts or max(2, round(1000 * args.scale)),
        landing=args.org_landing,
        window=args.org_window,
        source=None if args.org_quiet is None else {"quiet_interval": args.org_quiet},
    )
    configure_logging("warning")
    compile_bytecode()
    files = bench_corpus(args.seed, args.scale)
    if args.only == "integrity":
        with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
            rows = asyncio.run(measure_integrity(files, Path(tmp), args.repeat))
        print(render(rows))
        print("\n".join(integrity_ratios(rows)))
        return
    if args.only == "org":
        with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
            print(render_org(asyncio.run(org_row(Path(tmp), org))))
        return
    if args.only == "cpu":
        with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
            rows = asyncio.run(measure_cpu(files, Path(tmp), args.repeat))
        print(render(rows))
        print("\n".join(cpu_ratios(*rows[:4])))
        return
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        rows = asyncio.run(measure(files, Path(tmp), args.repeat))
    listing = asyncio.run(measure_listing(max(2, round(ORG_ACCOUNTS * args.scale))))
    recovering = asyncio.run(recovery_rows())
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        organisation = asyncio.run(org_row(Path(tmp), org))
    totals = Totals.of(files)
    gz = sum(len(f.body) for f in files) / 1e6
    libs = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    size = f"{totals.records:,} records, {totals.raw_bytes / 1e6:.0f} MB JSON, {gz:.0f} MB gzip"
    print(f"corpus: seed {args.seed}, scale {args.scale:g}: {len(files)} files, {size}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {libs}")
    print(render(rows))
    print("\n".join(ratios(rows)))
    print()
    print(render_listing(listing))
    print()
    print(render_recovery(recovering))
    print()
    print(render_org(organisation))


if __name__ == "__main__":
    main()
