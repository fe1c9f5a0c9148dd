"""Which records to ship: include/exclude by a few CloudTrail fields, each drop counted.

A `RecordFilter` is a frozen value from the config; it travels to the worker processes
with each object. A record is kept when it passes every filter that is set; a dropped
record is counted under the first filter that refused it, in the order of `FILTERS`.
Only the fields a filter needs are decoded (msgspec skips the rest of the record), and a
source without filters never decodes a record at all.

String filters take shell-style globs (`Describe*`, `s3.amazonaws.com`), matched case
sensitively, as CloudTrail's own values are.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Final, Literal

import msgspec

__all__ = ["FIELD_OF", "FILTERS", "RecordFilter", "apply_filter"]

ErrorsMode = Literal["keep", "drop", "only"]

#: Every filter key, in the order a dropped record is attributed to one.
FILTERS: Final = (
    "include_event_sources",
    "exclude_event_sources",
    "include_event_names",
    "exclude_event_names",
    "include_regions",
    "exclude_regions",
    "include_accounts",
    "exclude_accounts",
    "include_categories",
    "exclude_categories",
    "read_only",
    "errors",
)


class _Fields(msgspec.Struct):
    """The fields filters look at; any type is accepted (a filter compares text)."""

    eventSource: Any = None
    eventName: Any = None
    awsRegion: Any = None
    recipientAccountId: Any = None
    eventCategory: Any = None
    readOnly: Any = None
    errorCode: Any = None


_decode_fields: Final = msgspec.json.Decoder(_Fields).decode
#: The CloudTrail field each string filter looks at, by the filter name's suffix.
FIELD_OF: Final = {
    "event_sources": "eventSource",
    "event_names": "eventName",
    "regions": "awsRegion",
    "accounts": "recipientAccountId",
    "categories": "eventCategory",
}


@dataclass(frozen=True)
class RecordFilter:
    include_event_sources: tuple[str, ...] = ()
    exclude_event_sources: tuple[str, ...] = ()
    include_event_names: tuple[str, ...] = ()
    exclude_event_names: tuple[str, ...] = ()
    include_regions: tuple[str, ...] = ()
    exclude_regions: tuple[str, ...] = ()
    include_accounts: tuple[str, ...] = ()
    exclude_accounts: tuple[str, ...] = ()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    read_only: bool | None = None  # True: only read-only calls; False: only writes
    errors: ErrorsMode = "keep"  # "drop" calls that failed (errorCode set), or keep "only" them

    @property
    def active(self) -> bool:
        return self != RecordFilter()

    @cached_property
    def _checks(self) -> tuple[tuple[str, str, bool, re.Pattern[str]], ...]:
        """(filter name, record field, include?, one regex for all its globs)."""
        checks = []
        for field in fields(self):
            globs = getattr(self, field.name)
            if field.name in ("read_only", "errors") or not globs:
                continue
            mode, _, what = field.name.partition("_")
            pattern = "|".join(fnmatch.translate(glob) for glob in globs)
            checks.append((field.name, FIELD_OF[what], mode == "include", re.compile(pattern)))
        return tuple(checks)

    def refuses(self, record: bytes) -> str | None:
        """The first filter that refuses the record, or None to keep it."""
        try:
            values = _decode_fields(record)
        except msgspec.DecodeError:
            return None  # a record we cannot read is shipped, never silently dropped
        for name, field, include, pattern in self._checks:
            value = getattr(values, field)
            matched = value is not None and pattern.match(str(value)) is not None
            if matched != include:
                return name
        if self.read_only is not None and _truthy(values.readOnly) != self.read_only:
            return "read_only"
        failed = values.errorCode not in (None, "")
        if (self.errors == "drop" and failed) or (self.errors == "only" and not failed):
            return "errors"
        return None


def apply_filter(
    lines: Sequence[Any], keep: RecordFilter | None
) -> tuple[Sequence[Any], dict[str, int]]:
    """The lines the filter keeps, and how many each filter dropped."""
    if keep is None or not keep.active:
        return lines, {}
    kept: list[Any] = []
    dropped: dict[str, int] = {}
    for line in lines:
        refused = keep.refuses(line)
        if refused is None:
            kept.append(line)
        else:
            dropped[refused] = dropped.get(refused, 0) + 1
    return kept, dropped


def merge_counts(into: dict[str, int], more: Iterable[tuple[str, int]]) -> None:
    for name, count in more:
        into[name] = into.get(name, 0) + count


def _truthy(value: object) -> bool:
    """CloudTrail writes readOnly as a boolean, and in some older records as a string."""
    return value is True or (isinstance(value, str) and value.lower() == "true")
