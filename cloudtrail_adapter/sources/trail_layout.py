"""The CloudTrail bucket layout, so that a pass lists day prefixes instead of a bucket.

CloudTrail writes `[prefix/]AWSLogs/[o-ORGID/]ACCOUNT/KIND/REGION/YYYY/MM/DD/FILE`, where
KIND is `LOG_FOLDER` (events), `INSIGHT_FOLDER` (Insights events) or `DIGEST_FOLDER`
(digests, never shipped), and FILE is `ACCOUNT_KIND_REGION_YYYYMMDDTHHMMZ_UNIQUE.json.gz`.
A *stream* is one ACCOUNT/KIND/REGION; its files sort by day under it. This module is the
one home of those names, and so of what makes a key a digest: the sources, the decoders,
the integrity check and the demo's corpus all ask it. Pure functions only: the listing
itself is the S3 source's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

__all__ = [
    "DIGEST_FOLDER",
    "DIGEST_MARK",
    "INSIGHT_FOLDER",
    "LOG_FOLDER",
    "LOG_KINDS",
    "Place",
    "Stream",
    "day_in",
    "day_of",
    "day_prefix",
    "days",
    "file_time",
    "is_account",
    "is_digest_key",
    "is_org",
    "logs_of",
    "logs_root",
    "place",
    "stream_of",
]

LOGS: Final = "AWSLogs/"
LOG_FOLDER: Final = "CloudTrail"
INSIGHT_FOLDER: Final = "CloudTrail-Insight"
DIGEST_FOLDER: Final = "CloudTrail-Digest"
#: The kinds whose files hold events (and so are shipped, and named by digests).
LOG_KINDS: Final = frozenset({LOG_FOLDER, INSIGHT_FOLDER})
#: What a digest's file name holds between the account and the region.
DIGEST_MARK: Final = f"_{DIGEST_FOLDER}_"
_ACCOUNT: Final = re.compile(r"\d{12}")
_ORG: Final = re.compile(r"o-[a-z0-9]{10,32}")
_STREAM: Final = re.compile(r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?(\d{12})/([^/]+)/([^/]+)/$")
_FILE_TIME: Final = re.compile(r"_(\d{8}T\d{4}Z)_[^/]*$")
_PLACE: Final = re.compile(
    r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?(\d{12})/([^/]+)/([^/]+)/(\d{4})/(\d{2})/(\d{2})/[^/]+$"
)


@dataclass(frozen=True, order=True, slots=True)
class Stream:
    """One account's files of one kind in one region: `prefix` ends in `REGION/`."""

    prefix: str
    account: str
    kind: str
    region: str


@dataclass(frozen=True, slots=True)
class Place:
    """Where a key sits in CloudTrail's layout: `.../AWSLogs/[o-ORG/]ACCOUNT/KIND/REGION/
    YYYY/MM/DD/NAME`; `folder` is the key up to its name."""

    account: str
    kind: str
    region: str
    folder: str


def place(key: str) -> Place | None:
    found = _PLACE.search(key)
    if found is None:
        return None
    return Place(found[1], found[2], found[3], key.rsplit("/", 1)[0] + "/")


def stream_of(prefix: str) -> Stream | None:
    """The stream a prefix (`.../AWSLogs/[o-ORG/]ACCOUNT/KIND/REGION/`) names, if it names one."""
    found = _STREAM.search(prefix)
    if found is None:
        return None
    return Stream(prefix, found[1], found[2], found[3])


def is_digest_key(key: str) -> bool:
    """A digest by its name or its folder: a digest is never shipped, wherever it sits."""
    return DIGEST_MARK in key.rsplit("/", 1)[-1] or DIGEST_FOLDER in key.split("/")


def logs_of(digest_stream: str) -> str:
    """The prefix of the log stream whose files a digest stream's digests name."""
    return digest_stream.replace(f"/{DIGEST_FOLDER}/", f"/{LOG_FOLDER}/")


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


def day_in(stream: Stream, key: str) -> date | None:
    """The day of the day folder a key of `stream` sits in (`REGION/YYYY/MM/DD/NAME`, or
    deeper), or None where it sits elsewhere (off the layout)."""
    parts = key[len(stream.prefix) :].split("/")
    if not key.startswith(stream.prefix) or len(parts) < 4:
        return None
    return day_of(tuple(parts[:3]))


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
