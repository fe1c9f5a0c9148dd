"""Verdicts, and the one event shape LimaCharlie receives for each that is not valid.

The event is a documented interface (README, "Proving the logs are AWS's"): every key is
always present (null when it does not apply), `schema_version` changes only when a key's
meaning does, and new keys may be added.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "DIGEST_VERDICTS",
    "EVENT_TYPE",
    "FILE_VERDICTS",
    "IntegrityStats",
    "Verdict",
    "iso",
]

EVENT_TYPE: Final = "cloudtrail_integrity"
SCHEMA_VERSION: Final = 1
FILE_VERDICTS: Final = ("valid", "hash_mismatch", "missing", "unlisted")
DIGEST_VERDICTS: Final = ("valid", "bad_signature", "chain_break", "unknown_key", "missing_digest")
Subject = Literal["log_file", "digest"]


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What was found about one log file or digest. `key` is the file or digest it is
    about; `digest_key` the digest that says so (for a log file), or the digest whose
    chain names a missing one."""

    verdict: str
    subject: Subject
    account: str
    region: str
    key: str
    reason: str = ""
    digest_key: str | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    period_start: float | None = None
    period_end: float | None = None

    @property
    def valid(self) -> bool:
        return self.verdict == "valid"

    def fields(self) -> dict[str, Any]:
        """For a log line: what was found and where, never more."""
        return {
            "verdict": self.verdict,
            "subject": self.subject,
            "account": self.account,
            "region": self.region,
            "key": self.key,
            "digest_key": self.digest_key,
            "reason": self.reason,
        }

    def event(self, *, source: str, bucket: str, detected_at: float) -> dict[str, Any]:
        """The `cloudtrail_integrity` event, with every key present."""
        detected = iso(detected_at)
        return {
            "event_type": EVENT_TYPE,
            # The same again under CloudTrail's names, for a sensor whose mapping takes the
            # event type from `eventName` and its time from `eventTime`, as CloudTrail's do.
            "eventName": EVENT_TYPE,
            "eventTime": detected,
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict,
            "subject": self.subject,
            "account": self.account,
            "region": self.region,
            "bucket": bucket,
            "key": self.key,
            "digest_key": self.digest_key,
            "reason": self.reason,
            "expected_sha256": self.expected_sha256,
            "actual_sha256": self.actual_sha256,
            "period_start": iso(self.period_start),
            "period_end": iso(self.period_end),
            "detected_at": detected,
            "source": source,
        }


@dataclass
class IntegrityStats:
    """Counted since start by the checker; what its source's `stats()` shows is a copy
    (`snapshot`), the `integrity` part of model.SourceStats, read by the metrics at scrape
    time. Defined here, not in model.py, with the verdicts it counts: this module imports
    nothing of the package, so model.py names it for type checking only."""

    files: Counter[str] = field(default_factory=Counter)  # by verdict, valid included
    digests: Counter[str] = field(default_factory=Counter)  # by verdict, valid included
    unverified: Counter[str] = field(default_factory=Counter)  # files not checkable, by reason
    errors: Counter[str] = field(default_factory=Counter)  # digests not read this time, by reason
    files_waiting: int = 0  # shipped files whose digest has not come yet
    events_queued: int = 0  # events for LimaCharlie not yet acknowledged

    def count(self, verdict: Verdict) -> None:
        (self.files if verdict.subject == "log_file" else self.digests)[verdict.verdict] += 1

    def snapshot(self) -> IntegrityStats:
        """The counts as of now, which later counting leaves alone."""
        return IntegrityStats(
            Counter(self.files),
            Counter(self.digests),
            Counter(self.unverified),
            Counter(self.errors),
            self.files_waiting,
            self.events_queued,
        )
