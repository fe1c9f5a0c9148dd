"""`make bench` on a tiny corpus: every row runs, checks its delivery, and the table prints
it; every ratio finds the rows it compares. Which rows there are is the bench's to say.

The numbers mean nothing at this size; this only keeps the bench from rotting.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.__main__ import measure, ratios, small_files
from bench.listing import listing_rows, render_listing
from bench.table import render
from bench.usp_recovery import recovery, render_recovery
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import org_trail


async def test_every_row_of_the_bench_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    files = org_trail(
        7, accounts=1, regions=1, days=1, files_per_day=8, records_per_file=(1, 300), digests=False
    )
    rows = await measure(files, tmp_path, repeat=1)  # a row that loses records exits, saying so
    records = sum(len(f.event_ids) for f in files)
    names = [row.name for row in rows]
    assert rows and len(set(names)) == len(names), "each row of the table says what it is"
    own_corpus = ("1/4", "small files")  # rows over a corpus of their own
    assert all(
        row.records == records
        for row in rows
        if row.records and not any(mark in row.name for mark in own_corpus)
    )
    small = next(row for row in rows if "small files" in row.name)
    assert small.records == sum(len(f.event_ids) for f in small_files())
    assert "us CPU per file" in small.note
    assert all(row.peak_rss_mb for row in rows if row.name.startswith("daemon"))
    assert all(row.cpu_seconds for row in rows if not row.name.startswith("moto"))
    header, *lines = render(rows).splitlines()
    assert "CPU us/rec" in header
    assert all(line.startswith(name) for line, name in zip(lines, names, strict=True))
    compared = ratios(rows)  # each ratio finds the rows it compares
    assert compared and all(re.search(r"\d", line) for line in compared)
    assert not any(re.search(r"\b(nan|inf)\b", line) for line in compared), compared


async def test_the_listing_rows_run_and_the_layout_lists_less_once_steady(
    aws_options: AwsOptions,
) -> None:
    assert aws_options.endpoint_url is not None
    rows = await listing_rows(aws_options.endpoint_url, org_accounts=2, regions=3)
    sparse, sparse_flat, org, _ = rows
    assert [r.layout for r in rows] == ["auto", "flat", "auto", "flat"]
    # one StartAfter sequence a stream, yesterday and today together (issue 29's cadence)
    assert sparse.steady_calls == 40 and org.steady_calls == 2 * 3
    assert sparse.first_calls < 1000  # a walk of what exists; the calendar would be ~146,000
    assert sparse_flat.first_calls == sparse_flat.steady_calls == 1
    assert "steady pass" in render_listing(rows)


async def test_the_usp_recovery_row_resends_only_what_was_on_the_wire() -> None:
    row = await recovery(8, 0.01, 4)
    assert row.resent == 4  # the window that was in flight when the connection dropped
    assert row.with_drop_s > 0 and row.without_drop_s > 0
    assert "one drop" in render_recovery([row])
