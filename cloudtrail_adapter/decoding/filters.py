"""Which records a filter keeps, as the worker processes apply it.

The config's `RecordFilter` (config/values.py, where its keys are declared) is turned into
a `Matcher` on the event loop's side (`Matcher.of`): a frozen value of its globs and modes
that pickles small and needs nothing of the config package, so the workers never import it.
Only the fields a filter needs are decoded (msgspec skips the rest of the record), and a
source without filters never decodes a record at all.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Literal, Protocol

import msgspec

__all__ = ["Matcher", "apply_filter", "merge_counts"]

ErrorsMode = Literal["keep", "drop", "only"]
Globs = tuple[tuple[str, str, bool, tuple[str, ...]], ...]


class FilterKeys(Protocol):
    """What a matcher is made of: the config's RecordFilter."""

    @property
    def active(self) -> bool: ...
    @property
    def read_only(self) -> bool | None: ...
    @property
    def errors(self) -> ErrorsMode: ...
    def globs(self) -> Globs: ...


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


@dataclass(frozen=True)
class Matcher:
    """A filter as the workers apply it. `globs`: (filter name, record field, include?,
    shell-style globs), in the order a dropped record is attributed to one."""

    globs: Globs
    read_only: bool | None = None  # True: only read-only calls; False: only writes
    errors: ErrorsMode = "keep"  # "drop" calls that failed (errorCode set), or keep "only" them

    @classmethod
    def of(cls, keys: FilterKeys | None) -> Matcher | None:
        """The matcher of a filter, or None where it keeps every record."""
        if keys is None or not keys.active:
            return None
        return cls(keys.globs(), keys.read_only, keys.errors)

    @cached_property
    def _checks(self) -> tuple[tuple[str, str, bool, re.Pattern[str]], ...]:
        """(filter name, record field, include?, one regex for all its globs)."""
        return tuple(
            (name, field, include, re.compile("|".join(fnmatch.translate(g) for g in globs)))
            for name, field, include, globs in self.globs
        )

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
    lines: Sequence[Any], keep: Matcher | None
) -> tuple[Sequence[Any], dict[str, int]]:
    """The lines the filter keeps, and how many each filter dropped."""
    if keep is None:
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
