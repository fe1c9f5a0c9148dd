"""The verdict rules the ledger applies, without the database: when a log file was
delivered, which digests may speak for it, and what a digest's listing means for it (pure).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from cloudtrail_adapter.integrity.verdicts import Verdict
from cloudtrail_adapter.sources.trail_layout import LOG_FOLDER, file_time

#: Log file kinds a digest may name; only `CloudTrail` files must be named (`unlisted`).
#: A log file's name gives its delivery minute; it may belong to the digest either side of
#: a boundary within this many seconds of it.
MARGIN: Final = 300.0
HOUR: Final = 3600.0
DAY: Final = 86400.0
#: After its hour and `grace`, how long a digest may still be on its way before a file no
#: digest speaks for is given up on (`no_digest`).
DIGEST_DELAY: Final = 900.0
#: Digests contiguous in a chain meet exactly; this much slack still counts as meeting.
TOUCH: Final = 1.0


def span(key: str, folder: str) -> tuple[float, float]:
    """When a log file was delivered, as far as its key says: its name's minute (give or
    take MARGIN), else its whole day folder."""
    when = file_time(key)
    if when is not None:
        at = when.timestamp()
        return at - MARGIN, at + MARGIN
    year, month, day = folder.rstrip("/").rsplit("/", 3)[-3:]
    start = datetime(int(year), int(month), int(day), tzinfo=UTC).timestamp()
    return start - MARGIN, start + DAY + MARGIN


def file_verdict(
    key: str,
    digest_key: str,
    account: str,
    region: str,
    expected: str,
    actual: str | None,
    note: str,
) -> Verdict:
    if actual is None:
        return Verdict(
            "hash_mismatch",
            "log_file",
            account,
            region,
            key,
            f"not readable as CloudTrail writes it ({note})",
            digest_key=digest_key,
            expected_sha256=expected,
        )
    if actual == expected:
        return Verdict("valid", "log_file", account, region, key, digest_key=digest_key)
    return Verdict(
        "hash_mismatch",
        "log_file",
        account,
        region,
        key,
        "its SHA-256 is not the one the digest names",
        digest_key=digest_key,
        expected_sha256=expected,
        actual_sha256=actual,
    )


def judge_file(
    key: str,
    account: str,
    region: str,
    kind: str,
    lo: float,
    hi: float,
    sha: str | None,
    covers: list[tuple[float, float, str]],
    gaps: list[tuple[float, float, str]],
    now: float,
    grace: float,
    held: bool,
) -> Verdict | str | None:
    """A waiting file's fate: a verdict, a reason it cannot be checked, or None (wait)."""
    for start, end, reason in gaps:
        if start <= hi and end >= lo:
            return reason
    found = covering(covers, lo, hi)
    if found is not None:
        last_end, digest_key = found
        if now < last_end + grace:
            return None
        if kind != LOG_FOLDER:
            return (
                "not_in_digest"  # Insights files: whether digests must name them is not documented
            )
        return Verdict(
            "unlisted",
            "log_file",
            account,
            region,
            key,
            "shipped, yet no digest of its period names it",
            digest_key=digest_key,
            actual_sha256=sha,
        )
    if not held and now >= hi + HOUR + grace + DIGEST_DELAY:
        return "no_digest"
    return None


def covering(
    covers: list[tuple[float, float, str]], lo: float, hi: float
) -> tuple[float, str] | None:
    """When valid digests cover [lo, hi] without a hole: the end of the last of them that
    does, and the one that covers the middle; else None."""
    reach: float | None = None
    middle = (lo + hi) / 2
    named = ""
    last_end = 0.0
    for start, end, key in covers:
        if end < lo:
            continue
        if reach is None:
            if start > lo + TOUCH:
                return None
            reach = end
        elif start > reach + TOUCH:
            return None
        else:
            reach = max(reach, end)
        if start <= middle <= end:
            named = key
        last_end = max(last_end, end)
        if reach >= hi:
            return last_end, named
    return None
