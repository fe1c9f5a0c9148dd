"""How a key is declared: its kind (type and range), its one-line doc, whose key it is.

A key is declared once, on the dataclass field that holds its value (`Setting.field`), so the
field's default is the key's default. `read_declared` parses a section from those
declarations, and `reference.py` writes the README's key table from the same ones.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from cloudtrail_adapter.config.reader import Section, describe
from cloudtrail_adapter.secret import Secret

T = TypeVar("T")

_SETTING = "cloudtrail_adapter.setting"
_REQUIRED = "cloudtrail_adapter.required"


class Kind(Generic[T]):
    """How one key's value is read from a section, and what it accepts (for the README)."""

    secret = False

    def read(self, sec: Section, name: str, *, required: bool) -> T | None:
        raise NotImplementedError

    def accepts(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One key: how it is read, what it means, whether LimaCharlie's adapter has it too.

    `shown` is the default as the README gives it, where the value alone would not say it
    (a computed default, or one a rule fills in). `env` names an environment variable read
    when the key is absent. `unused` says why a key LimaCharlie's adapter reads is accepted
    here and not used: a document that sets it gets one info line saying so.
    """

    kind: Kind[T]
    doc: str
    lc: bool = False
    shown: str | None = None
    env: str | None = None
    fallback: Callable[[], T] | None = None
    unused: str | None = None

    def field(
        self, default: T | None = None, *, shown: str | None = None, compare: bool = True
    ) -> Any:
        """A dataclass field holding this key, with its default."""
        setting = self if shown is None else dataclasses.replace(self, shown=shown)
        return dataclasses.field(
            default=default, compare=compare, metadata={_SETTING: setting, _REQUIRED: False}
        )

    def derived(self) -> Any:
        """A field without a default in code, filled from `fallback` when the key is absent."""
        assert self.fallback is not None
        return dataclasses.field(metadata={_SETTING: self, _REQUIRED: False})

    def factory(self, make: Callable[[], T], *, shown: str | None = None) -> Any:
        """A field whose default is made per instance (a mutable or composite value)."""
        setting = self if shown is None else dataclasses.replace(self, shown=shown)
        return dataclasses.field(
            default_factory=make, metadata={_SETTING: setting, _REQUIRED: False}
        )

    def required(self) -> Any:
        """A field the document must give."""
        return dataclasses.field(metadata={_SETTING: self, _REQUIRED: True})


@dataclass(frozen=True)
class Declared:
    """A declared key of a class, as the reader and the reference see it."""

    name: str
    setting: Setting[Any]
    required: bool
    default: Any  # dataclasses.MISSING when required


def declared(cls: type) -> Iterator[Declared]:
    """The class's keys, in field order."""
    for f in dataclasses.fields(cls):
        setting = f.metadata.get(_SETTING)
        if setting is None:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        yield Declared(f.name, setting, bool(f.metadata.get(_REQUIRED)), default)


@dataclass(frozen=True)
class Invalid:
    """A cross-key rule's verdict: `key` is wrong; the line cited is `at`'s (default `key`)."""

    key: str
    message: str
    at: str | None = None


@runtime_checkable
class Checked(Protocol):
    """A value class with rules across its keys (Beats' `Validate()`); `given` names the keys
    the document set (valid or not), so a rule can tell a default from a choice. The value
    holds the valid ones, defaults in place of the rest."""

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]: ...


def read_declared(sec: Section, cls: type) -> dict[str, Any]:
    """The section's values for `cls`'s keys: only those given (and valid), so the
    dataclass defaults apply to the rest."""
    values: dict[str, Any] = {}
    for key in declared(cls):
        value = key.setting.kind.read(sec, key.name, required=key.required)
        if key.setting.unused and sec.has(key.name):
            sec.doc.note(
                sec.key(key.name), sec.line_of(key.name), f"not used: {key.setting.unused}"
            )
        if value is None and key.setting.env and not sec.has(key.name):
            value = _from_env(sec, key.name, key.setting.kind, key.setting.env)
        if value is None and key.setting.fallback is not None and not sec.has(key.name):
            value = key.setting.fallback()
        if value is not None:
            values[key.name] = value
    return values


def _from_env(sec: Section, name: str, kind: Kind[T], variable: str) -> T | None:
    text = sec.doc.env.get(variable, "").strip()
    if not text:
        return None
    return kind.read(sec.from_environment(name, text, variable), name, required=False)


def build(sec: Section, cls: Callable[..., T], values: dict[str, Any], before: int) -> T | None:
    """`cls(**values)` with its cross-key rules applied; None when the section (since
    `before` errors) had a problem or a value without a default is missing."""
    keys = list(declared(cls))  # type: ignore[arg-type]
    if any(k.default is dataclasses.MISSING and k.name not in values for k in keys):
        return None
    value = cls(**values)
    if isinstance(value, Checked):
        given = frozenset(k.name for k in keys if sec.has(k.name))
        for invalid in value.problems(given):
            sec.error(invalid.key, sec.line_of(invalid.at or invalid.key), invalid.message)
    return None if len(sec.doc.errors) > before else value


# --------------------------------------------------------------------------------------------
# The kinds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text(Kind[str]):
    """A string; `check` returns why a value is wrong (never echoing a secret)."""

    check: Callable[[str], str | None] | None = None
    what: str = "text"

    def read(self, sec: Section, name: str, *, required: bool) -> str | None:
        text = sec.string(name, required=required)
        if text is not None and self.check is not None:
            problem = self.check(text)
            if problem:
                sec.error(name, sec.line_of(name), problem)
                return None
        return text

    def accepts(self) -> str:
        return self.what


def matching(pattern: str, what: str) -> Text:
    """Text that must match `pattern` in full; `what` is the error's `expected ...`."""
    compiled = re.compile(pattern)
    return Text(lambda text: None if compiled.fullmatch(text) else f"expected {what}", what=what)


@dataclass(frozen=True)
class SecretText(Kind[Secret]):
    """A secret string: never shown; `warn` may note a doubtful value without showing it."""

    warn: Callable[[str], str | None] | None = None
    secret = True

    def read(self, sec: Section, name: str, *, required: bool) -> Secret | None:
        value = sec.secret(name, required=required)
        if value is not None and self.warn is not None:
            warning = self.warn(value.reveal())
            if warning:
                sec.doc.warn(sec.key(name), sec.line_of(name), warning)
        return value

    def accepts(self) -> str:
        return "text (secret)"


@dataclass(frozen=True)
class Uuid(Kind[str]):
    """A UUID, normalised; `message` is the error (which must not show the value)."""

    message: str = "expected a UUID"

    def read(self, sec: Section, name: str, *, required: bool) -> str | None:
        text = sec.string(name, required=required)
        if text is None:
            return None
        try:
            return str(uuid.UUID(text))
        except ValueError:
            sec.error(name, sec.line_of(name), self.message)
            return None

    def accepts(self) -> str:
        return "a UUID"


@dataclass(frozen=True)
class Integer(Kind[int]):
    low: int
    high: int
    unit: str = ""

    def read(self, sec: Section, name: str, *, required: bool) -> int | None:
        assert not required
        return sec.integer(name, self.low, self.high)

    def accepts(self) -> str:
        if self.unit == "bytes":
            return f"bytes, {size(self.low)} to {size(self.high)}"
        unit = f"{self.unit}, " if self.unit else "integer "
        return f"{unit}{self.low} to {self.high}"


def size(n: int) -> str:
    """`n` bytes in the largest binary unit that divides it (`8 MiB`)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return str(n)


@dataclass(frozen=True)
class Seconds(Kind[float]):
    """A duration in seconds: a number, or a Go duration as LimaCharlie's YAML writes it
    (`45s`, `1m30s`, `500ms`)."""

    low: float
    high: float
    low_allowed: bool = True

    def read(self, sec: Section, name: str, *, required: bool) -> float | None:
        assert not required
        return sec.number(
            name,
            minimum=self.low,
            maximum=self.high,
            minimum_allowed=self.low_allowed,
            parse=go_duration,
        )

    def accepts(self) -> str:
        low = f"{self.low:.10g}" if self.low_allowed else f"more than {self.low:.10g}"
        return f"seconds (or `45s`, `1m30s`), {low} to {self.high:.10g}"


@dataclass(frozen=True)
class Dollars(Kind[float]):
    """An amount in US dollars, from 0 to `high`."""

    high: float

    def read(self, sec: Section, name: str, *, required: bool) -> float | None:
        assert not required
        return sec.number(name, minimum=0.0, maximum=self.high, minimum_allowed=True)

    def accepts(self) -> str:
        return f"US dollars, 0 to {self.high:,.10g}"


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float | None:
    """Seconds in a Go duration string (`time.ParseDuration`, without a sign), else None."""
    parts = _GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNIT[u] for n, u in parts)


@dataclass(frozen=True)
class Boolean(Kind[bool]):
    def read(self, sec: Section, name: str, *, required: bool) -> bool | None:
        return sec.boolean(name)

    def accepts(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice(Kind[str]):
    options: tuple[str, ...]

    def read(self, sec: Section, name: str, *, required: bool) -> str | None:
        return sec.choice(name, self.options)

    def accepts(self) -> str:
        return " or ".join(f"`{o}`" for o in self.options)


@dataclass(frozen=True)
class Globs(Kind[tuple[str, ...]]):
    def read(self, sec: Section, name: str, *, required: bool) -> tuple[str, ...] | None:
        return sec.globs(name)

    def accepts(self) -> str:
        return "list of globs"


@dataclass(frozen=True)
class Url(Kind[str]):
    schemes: tuple[str, ...]

    def read(self, sec: Section, name: str, *, required: bool) -> str | None:
        return sec.url(name, self.schemes, required=required)

    def accepts(self) -> str:
        return " or ".join(f"`{s}://`" for s in self.schemes) + " URL"


@dataclass(frozen=True)
class PassMapping(Kind[dict[str, Any]]):
    def read(self, sec: Section, name: str, *, required: bool) -> dict[str, Any] | None:
        return sec.passthrough_mapping(name)

    def accepts(self) -> str:
        return "mapping, passed through"


@dataclass(frozen=True)
class PassList(Kind[list[Any]]):
    def read(self, sec: Section, name: str, *, required: bool) -> list[Any] | None:
        return sec.passthrough_list(name)

    def accepts(self) -> str:
        return "list, passed through"


@dataclass(frozen=True)
class Directory(Kind[Path]):
    def read(self, sec: Section, name: str, *, required: bool) -> Path | None:
        text = sec.string(name, required=required)
        path = Path(text).expanduser() if text is not None else None
        if path is not None and not path.is_dir():
            sec.error(name, sec.line_of(name), f"expected a directory, got {str(path)!r}")
            return None
        return path

    def accepts(self) -> str:
        return "a directory"


@dataclass(frozen=True)
class Accounts(Kind[tuple[str, ...]]):
    """12-digit account IDs; YAML reads an unquoted one as a number, which is fine unless
    it starts with 0 (then it must be quoted)."""

    def read(self, sec: Section, name: str, *, required: bool) -> tuple[str, ...] | None:
        values = sec.passthrough_list(name)
        if values is None:
            return None
        accounts = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
        bad = [
            given
            for given, v in zip(values, accounts, strict=True)
            if not (isinstance(v, str) and re.fullmatch(r"\d{12}", v))
        ]
        if bad or not accounts:
            got = describe(bad[0]) if bad else "an empty list"
            sec.error(
                name,
                sec.line_of(name),
                f"expected 12-digit account IDs (quote one that starts with 0), got {got}",
            )
            return None
        return tuple(accounts)

    def accepts(self) -> str:
        return "list of 12-digit account IDs"


_RELATIVE = re.compile(r"(\d+)\s*([dhm])")
_UNIT = {"d": 86400, "h": 3600, "m": 60}


@dataclass(frozen=True)
class Time(Kind[datetime]):
    """An ISO 8601 date or time (UTC unless it says), or `90d` / `36h` / `30m` before now."""

    def read(self, sec: Section, name: str, *, required: bool) -> datetime | None:
        text = sec.string(name)
        if text is None:
            return None
        relative = _RELATIVE.fullmatch(text)
        if relative:
            ago = int(relative[1]) * _UNIT[relative[2]]
            return datetime.now(UTC) - timedelta(seconds=ago)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            sec.error(
                name,
                sec.line_of(name),
                f"expected an ISO 8601 date or time (2026-09-01, 2026-09-01T12:00:00Z) or an "
                f"age (90d, 36h, 30m), got {text!r}",
            )
            return None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    def accepts(self) -> str:
        return "ISO 8601 date or time, or an age (`90d`, `36h`, `30m`)"


@dataclass(frozen=True)
class Nested(Kind[T]):
    """A section of its own, read from `cls`'s declarations and built with its rules."""

    cls: Callable[..., T]

    def read(self, sec: Section, name: str, *, required: bool) -> T | None:
        child = sec.section(name, required=required)
        if child is None:
            return None
        before = len(sec.doc.errors)
        values = read_declared(child, self.cls)  # type: ignore[arg-type]
        child.finish()
        return build(child, self.cls, values, before)

    def accepts(self) -> str:
        return "mapping"
