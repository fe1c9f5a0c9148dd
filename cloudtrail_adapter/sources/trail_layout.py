"""The CloudTrail bucket layout, so that a pass lists day prefixes instead of a bucket.

CloudTrail writes `[prefix/]AWSLogs/[o-ORGID/]ACCOUNT/KIND/REGION/YYYY/MM/DD/FILE`, where
KIND is `CloudTrail` (events), `CloudTrail-Insight` (Insights events) or
`CloudTrail-Digest` (digests, never shipped), and FILE is
`ACCOUNT_KIND_REGION_YYYYMMDDTHHMMZ_UNIQUE.json.gz`. A *stream* is one
ACCOUNT/KIND/REGION; its files sort by day under it. Pure functions only: the listing
itself is the S3 source's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

__all__ = [
    "Stream",
    "day_of",
    "day_prefix",
    "days",
    "file_time",
    "is_account",
    "is_org",
    "logs_root",
]

LOGS: Final = "AWSLogs/"
_ACCOUNT: Final = re.compile(r"\d{12}")
_ORG: Final = re.compile(r"o-[a-z0-9]{10,32}")
_FILE_TIME: Final = re.compile(r"_(\d{8}T\d{4}Z)_[^/]*$")


@dataclass(frozen=True, order=True, slots=True)
class Stream:
    """One account's files of one kind in one region: `prefix` ends in `REGION/`."""

    prefix: str
    account: str
    kind: str
    region: str


def logs_root(prefix: str) -> tuple[str, str]:
    """Where CloudTrail writes, given the configured prefix, and the part of the prefix
    inside it ("" when the prefix stops above it). CloudTrail's own "S3 key prefix" setting
    is a folder name without a slash."""
    at = prefix.find(LOGS)
    if at >= 0 and (at == 0 or prefix[at - 1] == "/"):
        return prefix[: at + len(LOGS)], prefix
    root = f"{prefix}/{LOGS}" if prefix and not prefix.endswith("/") else f"{prefix}{LOGS}"
    return root, ""


def is_account(name: str) -> bool:
    return _ACCOUNT.fullmatch(name) is not None


def is_org(name: str) -> bool:
    return _ORG.fullmatch(name) is not None


def day_prefix(stream: Stream, day: date) -> str:
    return f"{stream.prefix}{day:%Y/%m/%d}/"


def day_of(parts: tuple[str, ...]) -> date | None:
    """The date a `YYYY`, `MM`, `DD` folder path names (a prefix of it: the first day of
    that year or month), or None where a part is not a date folder as CloudTrail writes
    it (`2024/1/` or `2024/13/` or `backup/` are off the layout)."""
    widths = (4, 2, 2)
    if not 1 <= len(parts) <= 3:
        return None
    if any(len(p) != w or not p.isdigit() for p, w in zip(parts, widths, strict=False)):
        return None
    numbers = [int(p) for p in parts] + [1] * (3 - len(parts))
    try:
        return date(numbers[0], numbers[1], numbers[2])
    except ValueError:
        return None


def file_time(key: str) -> datetime | None:
    """The time in a CloudTrail file name (the end of the period it covers), if named so."""
    match = _FILE_TIME.search(key)
    if match is None:
        return None
    return datetime.strptime(match[1], "%Y%m%dT%H%MZ").replace(tzinfo=UTC)


def days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)
