"""YAML adapter documents -> frozen, typed configuration.

The value types below are the contract the rest of the daemon codes against. The parser
(further down) fills them from LimaCharlie's adapter YAML, verbatim, plus our optional keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import socket
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml

from cloudtrail_adapter.filters import FILTERS, RecordFilter
from cloudtrail_adapter.secret import Secret

DEFAULT_API_URL = "https://api.limacharlie.io"
#: Command-line options' defaults (cli.py), here so that the daemon and the monitor share them.
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds in-flight work may take after SIGTERM
DEFAULT_UNREADY_AFTER = 60.0  # seconds LimaCharlie may be unreachable before /readyz says so


@dataclass(frozen=True)
class Identity:
    oid: str
    installation_key: Secret


@dataclass(frozen=True)
class ClientOptions:
    """LimaCharlie's `client_options`: who we are and where USP data goes."""

    identity: Identity
    hostname: str
    platform: str = "aws"
    sensor_seed_key: str = ""
    dest_url: str | None = None
    api_url: str = DEFAULT_API_URL
    mapping: dict[str, Any] | None = field(default=None, compare=False)
    mappings: list[Any] | None = field(default=None, compare=False)
    indexing: list[Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class WebhookOptions:
    """Our webhook destination: POST gzip NDJSON to a LimaCharlie webhook adapter.

    `url` is the hook's address without the secret (https://<hooks-domain>/<OID>/<HOOK_NAME>);
    the secret travels in the `lc-secret` header so it never appears in a URL or a log.
    """

    url: str
    secret: Secret
    max_in_flight: int = 4
    timeout: float = 30.0


@dataclass(frozen=True)
class DeliveryOptions:
    """How records are packed into bundles before either transport."""

    batch_max_records: int = 5000
    batch_max_bytes: int = 8 * 1024 * 1024
    batch_linger: float = 0.5
    stream_threshold: int = 32 << 20
    max_buffered_bytes: int = 64 << 20


@dataclass(frozen=True)
class DedupOptions:
    """eventID de-duplication (dedup.py): on unless switched off; `window` in seconds of
    event time."""

    enabled: bool = True
    window: float = 3600.0
    max_keys: int = 1_000_000


@dataclass(frozen=True)
class AwsOptions:
    access_key: str | None = None
    secret_key: Secret | None = None
    region: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None  # assumed on top of the keys or the chain
    external_id: Secret | None = None
    role_session_name: str = "cloudtrail-adapter"
    role_session_duration: int = 3600  # seconds


@dataclass(frozen=True)
class S3SourceOptions:
    bucket_name: str
    prefix: str = ""
    parallel_fetch: int = 8
    single_load: bool = False
    poll_interval: float = 60.0
    delete_after_ack: bool = False
    quarantine_after: int = 5
    retry_backoff: float = 60.0
    max_object_size: int = 1 << 30
    layout: Literal["auto", "flat"] = "auto"  # auto: by day when the CloudTrail layout is there
    accounts: tuple[str, ...] = ()  # CloudTrail layout: only these accounts (all when empty)
    regions: tuple[str, ...] = ()  # ... and regions (globs)
    start_time: datetime | None = None  # ... and files of this window only
    end_time: datetime | None = None
    lookback: float = 86400.0  # seconds of day prefixes listed again for late files
    discovery_interval: float = 900.0  # seconds between finding accounts, kinds and regions
    parallel_list: int = 8  # streams listed at once

    @property
    def by_layout(self) -> bool:
        """Whether a key only the CloudTrail layout can honour is set."""
        return bool(self.accounts or self.regions or self.start_time or self.end_time)


@dataclass(frozen=True)
class SqsSourceOptions:
    queue_url: str
    parallel_fetch: int = 8
    single_load: bool = False
    wait_time_seconds: int = 20
    max_messages: int = 10
    visibility_timeout: int = 300
    max_messages_in_work: int = 100

    @property
    def queue_name(self) -> str:
        """The queue's name, the last part of its URL."""
        return self.queue_url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FileSourceOptions:
    path: Path
    parallel_fetch: int = 8
    single_load: bool = True
    poll_interval: float = 10.0
    quarantine_after: int = 5
    retry_backoff: float = 60.0
    max_object_size: int = 1 << 30


SourceOptions = S3SourceOptions | SqsSourceOptions | FileSourceOptions
SourceKind = Literal["s3", "sqs", "file"]


@dataclass(frozen=True)
class SourceConfig:
    """One YAML document: one source and where its records go.

    Exactly one of `client_options` (USP) and `webhook` is set.
    """

    index: int
    kind: SourceKind
    source: SourceOptions
    aws: AwsOptions
    client_options: ClientOptions | None
    webhook: WebhookOptions | None
    delivery: DeliveryOptions = DeliveryOptions()
    healthcheck: int | None = None  # LimaCharlie's top-level `healthcheck: PORT`
    record_filter: RecordFilter = field(default_factory=RecordFilter)  # `filter:`; keeps all
    dedup: DedupOptions = DedupOptions()

    @property
    def name(self) -> str:
        """A stable, secret-free name for logs: `s3[1]:bucket`, `sqs[2]:queue`, `file[1]:path`."""
        src = self.source
        if isinstance(src, S3SourceOptions):
            what = src.bucket_name
        elif isinstance(src, SqsSourceOptions):
            what = src.queue_name
        else:
            what = str(src.path)
        return f"{self.kind}[{self.index}]:{what}"


# --------------------------------------------------------------------------------------------
# Problems: every error (and warning) names where it is and which dotted key it concerns.
# --------------------------------------------------------------------------------------------

SOURCE_KINDS: tuple[SourceKind, ...] = ("s3", "sqs", "file")
HEALTHCHECK = "healthcheck"
COMMAND_LINE = "command line"


@dataclass(frozen=True)
class ConfigProblem:
    """One error or warning. Messages never contain a secret's value."""

    origin: str  # the file, or "command line"
    document: int | None  # 1-based YAML document; None for the command line or the whole file
    line: int | None  # 1-based line in the file, when known
    key: str  # dotted key, e.g. "s3.client_options.identity.oid"; "" for the whole document
    message: str

    @property
    def location(self) -> str:
        where = self.origin
        if self.document is not None:
            where += f": document {self.document}"
            if self.line is not None:
                where += f" (line {self.line})"
        elif self.line is not None:
            where += f": line {self.line}"
        return where

    def __str__(self) -> str:
        if self.key:
            return f"{self.location}: {self.key}: {self.message}"
        return f"{self.location}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a configuration, not just the first."""

    def __init__(self, errors: list[ConfigProblem]) -> None:
        super().__init__(errors)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# --------------------------------------------------------------------------------------------
# A small located tree, built from YAML nodes or from `key=value` arguments, so that one
# validator serves both forms and every value keeps its line.
# --------------------------------------------------------------------------------------------

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


@dataclass
class _Leaf:
    value: object  # as YAML constructed it (str from the command line)
    text: str | None  # a scalar as written; None for sequences
    line: int | None
    expandable: bool  # a string: ${VAR} references apply


@dataclass
class _Map:
    items: dict[str, _Map | _Leaf]
    line: int | None


_Tree = _Map | _Leaf


@dataclass
class _Doc:
    """The document being read: where it is, what the environment holds, what went wrong."""

    origin: str
    number: int | None
    env: Mapping[str, str]
    errors: list[ConfigProblem]
    warnings: list[ConfigProblem]
    keys: set[str] = dataclasses.field(default_factory=set)  # every dotted key looked up

    def error(self, key: str, line: int | None, message: str) -> None:
        self.errors.append(ConfigProblem(self.origin, self.number, line, key, message))

    def warn(self, key: str, line: int | None, message: str) -> None:
        self.warnings.append(ConfigProblem(self.origin, self.number, line, key, message))


def _plain(tree: _Tree) -> object:
    if isinstance(tree, _Map):
        return {k: _plain(v) for k, v in tree.items.items()}
    return tree.value


def _tree_from_node(
    loader: yaml.SafeLoader, node: yaml.Node, line: int, doc: _Doc, path: str, seen: frozenset[int]
) -> _Tree | None:
    if id(node) in seen:
        doc.error(path, line, "a YAML alias refers to itself")
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        items: dict[str, _Tree] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
                doc.error(path, key_line, "keys must be strings")
                continue
            key = key_node.value
            child_path = _join(path, key)
            if key in items:
                doc.error(child_path, key_line, "duplicate key")
                continue
            child = _tree_from_node(
                loader, value_node, key_line, doc, child_path, seen | {id(node)}
            )
            if child is not None:
                items[key] = child
        return _Map(items, line)
    try:
        value = loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        doc.error(path, line, f"cannot read this value ({problem})")
        return None
    if isinstance(node, yaml.ScalarNode):
        return _Leaf(value, str(node.value), line, node.tag == _STR_TAG)
    return _Leaf(value, None, line, expandable=False)


def _tree_from_pairs(kind: SourceKind, pairs: list[str], doc: _Doc) -> _Map:
    """LimaCharlie's `key=value` form; keys are dotted and relative to the source."""
    section = _Map({}, None)
    for number, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            # The argument is not echoed: a misplaced secret is as likely as a typo.
            doc.error("", None, f"argument {number} is not key=value (e.g. bucket_name=my-trail)")
            continue
        node = section
        for depth, part in enumerate(parts[:-1], 1):
            child = node.items.setdefault(part, _Map({}, None))
            if isinstance(child, _Leaf):
                prefix = ".".join(parts[:depth])
                doc.error(f"{kind}.{prefix}", None, "given both as a value and as a section")
                break
            node = child
        else:
            if parts[-1] in node.items:
                doc.error(f"{kind}.{key.strip()}", None, "given more than once")
            else:
                node.items[parts[-1]] = _Leaf(value, value, None, expandable=True)
    return _Map({kind: section}, None)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------------------------
# ${VAR} expansion
# --------------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREDENTIAL = "credential:"
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _expand(
    text: str, env: Mapping[str, str], report: Callable[[str], None], *, secret: bool
) -> str | None:
    """Expands `${VAR}` and `${VAR:-default}` (default when VAR is unset or empty), and `$${`
    to a literal `${`. Reports every bad reference; never includes the value in a message."""
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal failed
        whole, body = match.group(0), match.group(1)
        if whole == "$${":
            return "${"
        if body is None:
            failed = True
            report("unterminated ${ (write $${ for a literal ${)")
            return ""
        if body.startswith(_CREDENTIAL):
            value = _credential(body.removeprefix(_CREDENTIAL), env, report)
            failed = failed or value is None
            return value or ""
        name, has_default, default = body.partition(":-")
        if not _VAR_NAME.fullmatch(name):
            failed = True
            shown = "" if secret else f" {whole}"
            report(
                f"malformed variable reference{shown} (expected ${{NAME}} or ${{NAME:-default}})"
            )
            return ""
        value = env.get(name, "")
        if value:
            return value
        if has_default:
            return default
        if name in env:
            return ""
        failed = True
        report(f"environment variable {name} is not set (and no default given)")
        return ""

    result = _REFERENCE.sub(replace, text)
    return None if failed else result


def _credential(name: str, env: Mapping[str, str], report: Callable[[str], None]) -> str | None:
    """`${credential:NAME}`: the file NAME in systemd's $CREDENTIALS_DIRECTORY (from
    `LoadCredential=`), without its final newline; secrets then never sit in the environment."""
    if not _CREDENTIAL_NAME.fullmatch(name):
        report(f"malformed credential name {name!r} (letters, digits, '.', '_', '-')")
        return None
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        report(f"${{credential:{name}}} needs $CREDENTIALS_DIRECTORY (systemd's LoadCredential=)")
        return None
    try:
        text = (Path(directory) / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        report(f"credential {name} cannot be read from $CREDENTIALS_DIRECTORY: {reason}")
        return None
    return text.removesuffix("\n").removesuffix("\r")


# --------------------------------------------------------------------------------------------
# Reading one mapping: typed accessors that record the keys they know, and then complain about
# the rest.
# --------------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_SHOW_MAX = 40


def _describe(value: object) -> str:
    """What a value is, for `expected X, got Y`. Never called with a secret's value: a secret
    accepts any scalar, so only mappings and lists (described, not shown) are wrong there."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    shown = repr(value)
    return shown if len(shown) <= _SHOW_MAX else shown[: _SHOW_MAX - 3] + "..."


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class _Section:
    def __init__(self, doc: _Doc, path: str, tree: _Map) -> None:
        self.doc = doc
        self.path = path
        self.tree = tree
        self.known: list[str] = []

    @property
    def line(self) -> int | None:
        return self.tree.line

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def has(self, name: str) -> bool:
        item = self.tree.items.get(name)
        return item is not None and not (isinstance(item, _Leaf) and item.value is None)

    def line_of(self, name: str) -> int | None:
        item = self.tree.items.get(name)
        return item.line if item is not None else self.line

    def error(self, name: str, line: int | None, message: str) -> None:
        self.doc.error(self.key(name), line, message)

    def _take(self, name: str, *, required: bool) -> _Tree | None:
        """The item under `name`; null counts as absent."""
        self.known.append(name)
        self.doc.keys.add(self.key(name))
        item = self.tree.items.get(name)
        if item is None or (isinstance(item, _Leaf) and item.value is None):
            if required:
                self.error(name, self.line, "required key is missing")
            return None
        return item

    def _scalar(self, name: str, item: _Tree, *, secret: bool) -> object:
        """The scalar's value with ${VAR} expanded; _INVALID after reporting a problem."""
        if isinstance(item, _Map):
            return {}  # described as "a mapping"
        if item.expandable and item.text is not None:
            expanded = _expand(
                item.text,
                self.doc.env,
                lambda message: self.error(name, item.line, message),
                secret=secret,
            )
            return _INVALID if expanded is None else expanded.strip()
        return item.value

    def _optional_scalar(self, name: str) -> tuple[_Tree, object] | None:
        """An optional key's item and expanded value; None when absent or already reported."""
        item = self._take(name, required=False)
        if item is None:
            return None
        value = self._scalar(name, item, secret=False)
        return None if value is _INVALID else (item, value)

    def section(self, name: str, *, required: bool = False) -> _Section | None:
        item = self._take(name, required=required)
        if item is None:
            return None
        if not isinstance(item, _Map):
            self.error(name, item.line, f"expected a mapping, got {_describe(item.value)}")
            return None
        return _Section(self.doc, self.key(name), item)

    def string(self, name: str, *, required: bool = False, secret: bool = False) -> str | None:
        item = self._take(name, required=required)
        if item is None:
            return None
        if isinstance(item, _Map) or item.text is None:
            got = _describe({} if isinstance(item, _Map) else item.value)
            self.error(name, item.line, f"expected a string, got {got}")
            return None
        value = self._scalar(name, item, secret=secret)
        if value is _INVALID:
            return None
        text = value if isinstance(value, str) else item.text.strip()
        if not text:
            if required:
                self.error(name, item.line, "must not be empty")
            return None  # empty means unset, so `${VAR:-}` works for optional keys
        return text

    def secret(self, name: str, *, required: bool = False) -> Secret | None:
        text = self.string(name, required=required, secret=True)
        return None if text is None else Secret(text)

    def integer(self, name: str, low: int, high: int) -> int | None:
        taken = self._optional_scalar(name)
        if taken is None:
            return None
        item, value = taken
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = int(value)
        if number is None or not low <= number <= high:
            got = _describe(value) if number is None else str(number)
            self.error(name, item.line, f"expected an integer from {low} to {high}, got {got}")
            return None
        return number

    def number(
        self, name: str, *, minimum: float, maximum: float, minimum_allowed: bool
    ) -> float | None:
        taken = self._optional_scalar(name)
        if taken is None:
            return None
        item, value = taken
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        low_ok = number is not None and (number >= minimum if minimum_allowed else number > minimum)
        if number is None or not math.isfinite(number) or not low_ok or number > maximum:
            low = f"at least {minimum:g}" if minimum_allowed else f"greater than {minimum:g}"
            got = _describe(value) if number is None else f"{number:g}"
            self.error(
                name, item.line, f"expected a number {low} and at most {maximum:g}, got {got}"
            )
            return None
        return number

    def boolean(self, name: str) -> bool | None:
        taken = self._optional_scalar(name)
        if taken is None:
            return None
        item, value = taken
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        self.error(name, item.line, f"expected true/false (or yes/no, 1/0), got {_describe(value)}")
        return None

    def url(self, name: str, schemes: tuple[str, ...], *, required: bool = False) -> str | None:
        text = self.string(name, required=required)
        if text is None:
            return None
        problem = _url_problem(text, schemes)
        if problem:
            self.error(name, self.line_of(name), problem)
            return None
        return text

    def passthrough_mapping(self, name: str) -> dict[str, Any] | None:
        item = self._take(name, required=False)
        if item is None:
            return None
        if not isinstance(item, _Map):
            self.error(name, item.line, f"expected a mapping, got {_describe(item.value)}")
            return None
        plain = _plain(item)
        assert isinstance(plain, dict)
        return plain

    def globs(self, name: str) -> tuple[str, ...] | None:
        """A list of non-empty strings (a single string is a list of one)."""
        item = self._take(name, required=False)
        if item is None:
            return None
        value = [] if isinstance(item, _Map) else item.value
        values = [value] if isinstance(value, str) else value
        if isinstance(item, _Map) or not isinstance(values, list) or not values:
            self.error(name, item.line, f"expected a list of strings, got {_describe(value)}")
            return None
        bad = [v for v in values if not isinstance(v, str) or not v.strip()]
        if bad:
            self.error(name, item.line, f"expected non-empty strings, got {_describe(bad[0])}")
            return None
        return tuple(v.strip() for v in values)

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        text = self.string(name)
        if text is not None and text not in options:
            self.error(
                name, self.line_of(name), f"expected one of {', '.join(options)}, got {text!r}"
            )
            return None
        return text

    def passthrough_list(self, name: str) -> list[Any] | None:
        item = self._take(name, required=False)
        if item is None:
            return None
        if isinstance(item, _Map) or not isinstance(item.value, list):
            got = _describe({} if isinstance(item, _Map) else item.value)
            self.error(name, item.line, f"expected a list, got {got}")
            return None
        return item.value

    def finish(self) -> None:
        """Every key nobody asked for is an error, with the closest known key as a hint."""
        for name, item in self.tree.items.items():
            if name in self.known:
                continue
            close = difflib.get_close_matches(name, self.known, n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {close[0]}?"
            else:
                hint = "known keys: " + ", ".join(sorted(self.known))
            self.doc.error(self.key(name), item.line, f"unknown key; {hint}")


class _Invalid:
    """Marks a value whose problem was already reported."""


_INVALID = _Invalid()


def _url_problem(text: str, schemes: tuple[str, ...]) -> str | None:
    """Why `text` is not a URL with one of `schemes`; the URL itself is never echoed (it may
    carry credentials)."""
    wanted = ("an " if schemes[0].startswith("h") else "a ") + " or ".join(
        f"{s}://" for s in schemes
    )
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"expected {wanted} URL, got a malformed URL"
    if parts.scheme.lower() not in schemes:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        return f"expected {wanted} URL, got {got}"
    if not parts.hostname:
        return f"expected {wanted} URL with a host name"
    return None


# --------------------------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------------------------

_HTTP = ("http", "https")
_WS = ("ws", "wss")
MAX_PARALLEL_FETCH = 256
MAX_INTERVAL = 86400.0
MAX_DEDUP_WINDOW = 7 * 86400.0
_INSTALLATION_KEY_HINT = (
    "not a UUID: adapters authenticate with the installation key's ID (a UUID, shown in the "
    "web app's 'Adapter Key' column), not the full installation key; LimaCharlie will likely "
    "refuse this one"
)


def _kwargs(**values: object) -> dict[str, Any]:
    """Only the values that were given, so the dataclasses' own defaults apply to the rest."""
    return {k: v for k, v in values.items() if v is not None}


def _identity(sec: _Section) -> Identity | None:
    before = len(sec.doc.errors)
    oid = sec.string("oid", required=True)
    if oid is not None and not _is_uuid(oid):
        sec.error(
            "oid",
            sec.line_of("oid"),
            "expected the organization ID, a UUID (the value is not shown: it may be a swapped "
            "installation key)",
        )
        oid = None
    key = sec.secret("installation_key", required=True)
    if key is not None and not _is_uuid(key.reveal()):
        sec.doc.warn(
            sec.key("installation_key"), sec.line_of("installation_key"), _INSTALLATION_KEY_HINT
        )
    sec.finish()
    if len(sec.doc.errors) > before or oid is None or key is None:
        return None
    return Identity(oid=str(uuid.UUID(oid)), installation_key=key)


def _client_options(sec: _Section) -> ClientOptions | None:
    before = len(sec.doc.errors)
    identity_section = sec.section("identity", required=True)
    identity = _identity(identity_section) if identity_section else None
    values = _kwargs(
        hostname=sec.string("hostname") or socket.gethostname(),
        platform=sec.string("platform"),
        sensor_seed_key=sec.string("sensor_seed_key"),
        dest_url=sec.url("dest_url", _WS),
        api_url=sec.url("api_url", _HTTP),
        mapping=sec.passthrough_mapping("mapping"),
        mappings=sec.passthrough_list("mappings"),
        indexing=sec.passthrough_list("indexing"),
    )
    sec.finish()
    if len(sec.doc.errors) > before or identity is None:
        return None
    return ClientOptions(identity=identity, **values)


def _webhook(sec: _Section) -> WebhookOptions | None:
    before = len(sec.doc.errors)
    url = sec.url("url", _HTTP, required=True)
    secret = sec.secret("secret", required=True)
    if url is not None and secret is not None and _url_holds(url, secret.reveal()):
        sec.error(
            "url",
            sec.line_of("url"),
            "contains the webhook secret; give the hook's URL without it "
            "(the secret travels in the lc-secret header)",
        )
    values = _kwargs(
        max_in_flight=sec.integer("max_in_flight", 1, MAX_PARALLEL_FETCH),
        timeout=sec.number("timeout", minimum=0, maximum=3600, minimum_allowed=False),
    )
    sec.finish()
    if len(sec.doc.errors) > before or url is None or secret is None:
        return None
    return WebhookOptions(url=url, secret=secret, **values)


def _url_holds(url: str, secret: str) -> bool:
    """Whether the secret is one of the URL's path segments or query values."""
    parts = urllib.parse.urlsplit(url)
    values = [v for _, v in urllib.parse.parse_qsl(parts.query)]
    return secret in parts.path.split("/") or secret in values


def _filter(sec: _Section) -> RecordFilter | None:
    before = len(sec.doc.errors)
    values: dict[str, Any] = {}
    for name in FILTERS:
        if name == "read_only":
            values[name] = sec.boolean(name)
        elif name == "errors":
            values[name] = sec.choice(name, ("keep", "drop", "only"))
        else:
            values[name] = sec.globs(name)
    sec.finish()
    if len(sec.doc.errors) > before:
        return None
    return RecordFilter(**_kwargs(**values))


def _dedup(sec: _Section) -> DedupOptions | None:
    before = len(sec.doc.errors)
    values = _kwargs(
        enabled=sec.boolean("enabled"),
        window=sec.number("window", minimum=60, maximum=MAX_DEDUP_WINDOW, minimum_allowed=True),
        max_keys=sec.integer("max_keys", 1000, 100_000_000),
    )
    sec.finish()
    return None if len(sec.doc.errors) > before else DedupOptions(**values)


def _delivery(sec: _Section) -> DeliveryOptions | None:
    before = len(sec.doc.errors)
    values = _kwargs(
        batch_max_records=sec.integer("batch_max_records", 1, 100_000),
        batch_max_bytes=sec.integer("batch_max_bytes", 1024, 64 * 1024 * 1024),
        batch_linger=sec.number("batch_linger", minimum=0, maximum=60, minimum_allowed=True),
        stream_threshold=sec.integer("stream_threshold", 1024, 1 << 40),
        max_buffered_bytes=sec.integer("max_buffered_bytes", 1 << 20, 1 << 34),
    )
    sec.finish()
    return None if len(sec.doc.errors) > before else DeliveryOptions(**values)


def _aws(sec: _Section) -> AwsOptions:
    before = len(sec.doc.errors)
    access_key = sec.string("access_key")
    secret_key = sec.secret("secret_key")
    read_cleanly = len(sec.doc.errors) == before
    if read_cleanly and (access_key is None) != (secret_key is None):
        given, missing = (
            ("access_key", "secret_key") if secret_key is None else ("secret_key", "access_key")
        )
        sec.error(
            missing,
            sec.line_of(given),
            f"{given} is set but {missing} is not; set both, or neither to use the AWS "
            "credential chain (environment, profile, instance or task role)",
        )
    region = sec.string("region")
    before = len(sec.doc.errors)
    endpoint_url = sec.url("endpoint_url", _HTTP)
    if endpoint_url is None and len(sec.doc.errors) == before:
        from_env = sec.doc.env.get("AWS_ENDPOINT_URL", "").strip()
        if from_env:
            problem = _url_problem(from_env, _HTTP)
            if problem:
                sec.error("endpoint_url", sec.line, f"from AWS_ENDPOINT_URL: {problem}")
            else:
                endpoint_url = from_env
    return AwsOptions(
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        endpoint_url=endpoint_url,
        **_role(sec),
    )


_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")


def _matching(sec: _Section, name: str, pattern: re.Pattern[str], what: str) -> str | None:
    text = sec.string(name)
    if text is not None and not pattern.fullmatch(text):
        sec.error(name, sec.line_of(name), f"expected {what}")
    return text


def _role(sec: _Section) -> dict[str, Any]:
    """`role_arn` and what goes with it; the others without `role_arn` are an error."""
    role_arn = _matching(
        sec, "role_arn", _ROLE_ARN, "an IAM role ARN like arn:aws:iam::123456789012:role/NAME"
    )
    name = _matching(sec, "role_session_name", _SESSION_NAME, "2 to 64 letters, digits or +=,.@_-")
    duration = sec.integer("role_session_duration", 900, 43200)  # what STS allows
    values = _kwargs(
        role_arn=role_arn,
        external_id=sec.secret("external_id"),
        role_session_name=name,
        role_session_duration=duration,
    )
    for key in ("external_id", "role_session_name", "role_session_duration"):
        if key in values and role_arn is None:
            sec.error(key, sec.line_of(key), "is only used with role_arn, which is not set")
    return values


def _s3(sec: _Section) -> S3SourceOptions | None:
    bucket = sec.string("bucket_name", required=True)
    if bucket is not None and ("/" in bucket or any(c.isspace() for c in bucket)):
        sec.error(
            "bucket_name",
            sec.line_of("bucket_name"),
            f"expected a bucket name, got {bucket!r} (put a key prefix in prefix, not here)",
        )
        bucket = None
    values = _kwargs(
        prefix=sec.string("prefix"),
        parallel_fetch=sec.integer("parallel_fetch", 1, MAX_PARALLEL_FETCH),
        single_load=sec.boolean("single_load"),
        poll_interval=_interval(sec, "poll_interval"),
        delete_after_ack=sec.boolean("delete_after_ack"),
        layout=sec.choice("layout", ("auto", "flat")),
        accounts=_accounts(sec),
        regions=sec.globs("regions"),
        start_time=_time(sec, "start_time"),
        end_time=_time(sec, "end_time"),
        lookback=sec.number("lookback", minimum=0, maximum=90 * 86400, minimum_allowed=True),
        discovery_interval=sec.number(
            "discovery_interval", minimum=0, maximum=MAX_INTERVAL, minimum_allowed=True
        ),
        parallel_list=sec.integer("parallel_list", 1, MAX_PARALLEL_FETCH),
        **_failure_keys(sec),
    )
    start, end = values.get("start_time"), values.get("end_time")
    if start is not None and end is not None and end <= start:
        sec.error("end_time", sec.line_of("end_time"), "must be later than start_time")
    if values.get("layout") == "flat":
        for name in ("accounts", "regions", "start_time", "end_time", "discovery_interval"):
            if name in values:
                sec.error(name, sec.line_of(name), "needs layout: auto (the CloudTrail layout)")
    return None if bucket is None else S3SourceOptions(bucket_name=bucket, **values)


def _accounts(sec: _Section) -> tuple[str, ...] | None:
    """12-digit account IDs; YAML reads an unquoted one as a number, which is fine unless
    it starts with 0 (then it must be quoted)."""
    values = sec.passthrough_list("accounts")
    if values is None:
        return None
    accounts = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
    bad = [
        given
        for given, v in zip(values, accounts, strict=True)
        if not (isinstance(v, str) and re.fullmatch(r"\d{12}", v))
    ]
    if bad or not accounts:
        got = _describe(bad[0]) if bad else "an empty list"
        sec.error(
            "accounts",
            sec.line_of("accounts"),
            f"expected 12-digit account IDs (quote one that starts with 0), got {got}",
        )
        return None
    return tuple(accounts)


_RELATIVE = re.compile(r"(\d+)\s*([dhm])")
_UNIT = {"d": 86400, "h": 3600, "m": 60}


def _time(sec: _Section, name: str) -> datetime | None:
    """An ISO 8601 date or time (UTC unless it says), or `90d` / `36h` / `30m` before now."""
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
            f"expected an ISO 8601 date or time (2026-09-01, 2026-09-01T12:00:00Z) or an age "
            f"(90d, 36h, 30m), got {text!r}",
        )
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


_SQS_HOST = re.compile(
    r"(?:sqs\.(?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?"
)


def _sqs(sec: _Section) -> SqsSourceOptions | None:
    queue_url = sec.string("queue_url", required=True)
    if queue_url is not None and queue_url.startswith("arn:"):
        sec.error(
            "queue_url",
            sec.line_of("queue_url"),
            "expected the queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>), "
            "not its ARN",
        )
        queue_url = None
    elif queue_url is not None:
        problem = _url_problem(queue_url, _HTTP)
        if problem:
            sec.error("queue_url", sec.line_of("queue_url"), problem)
            queue_url = None
    values = _kwargs(
        parallel_fetch=sec.integer("parallel_fetch", 1, MAX_PARALLEL_FETCH),
        single_load=sec.boolean("single_load"),
        wait_time_seconds=sec.integer("wait_time_seconds", 0, 20),
        max_messages=sec.integer("max_messages", 1, 10),
        visibility_timeout=sec.integer("visibility_timeout", 1, 43200),
        max_messages_in_work=sec.integer("max_messages_in_work", 1, 10_000),
    )
    return None if queue_url is None else SqsSourceOptions(queue_url=queue_url, **values)


def queue_region(queue_url: str) -> str | None:
    """The region in an AWS SQS queue URL's host name, if it is one."""
    host = urllib.parse.urlsplit(queue_url).hostname or ""
    match = _SQS_HOST.fullmatch(host)
    return (match.group("a") or match.group("b")) if match else None


def _file(sec: _Section) -> FileSourceOptions | None:
    text = sec.string("path", required=True)
    path = Path(text).expanduser() if text is not None else None
    if path is not None and not path.is_dir():
        sec.error("path", sec.line_of("path"), f"expected a directory, got {str(path)!r}")
        path = None
    values = _kwargs(
        parallel_fetch=sec.integer("parallel_fetch", 1, MAX_PARALLEL_FETCH),
        single_load=sec.boolean("single_load"),
        poll_interval=_interval(sec, "poll_interval"),
        **_failure_keys(sec),
    )
    return None if path is None else FileSourceOptions(path=path, **values)


def _failure_keys(sec: _Section) -> dict[str, int | float | None]:
    """How the polling sources treat objects that fail: backoff, quarantine, size limit."""
    return {
        "quarantine_after": sec.integer("quarantine_after", 1, 1000),
        "retry_backoff": _interval(sec, "retry_backoff"),
        "max_object_size": sec.integer("max_object_size", 1024, 1 << 40),
    }


def _interval(sec: _Section, name: str) -> float | None:
    return sec.number(name, minimum=0, maximum=MAX_INTERVAL, minimum_allowed=False)


def _source(doc: _Doc, kind: SourceKind, sec: _Section) -> SourceConfig | None:
    before = len(doc.errors)
    source: SourceOptions | None
    aws = AwsOptions()
    if kind == "s3":
        source = _s3(sec)
        aws = _aws(sec)
    elif kind == "sqs":
        source = _sqs(sec)
        aws = _aws(sec)
        if aws.region is None and source is not None:
            aws = dataclasses.replace(aws, region=queue_region(source.queue_url))
    else:
        source = _file(sec)
    client_section = sec.section("client_options")
    webhook_section = sec.section("webhook")
    delivery_section = sec.section("delivery")
    filter_section = sec.section("filter")
    dedup_section = sec.section("dedup")
    client = _client_options(client_section) if client_section else None
    record_filter = _filter(filter_section) if filter_section else RecordFilter()
    dedup = _dedup(dedup_section) if dedup_section else DedupOptions()
    webhook = _webhook(webhook_section) if webhook_section else None
    delivery = _delivery(delivery_section) if delivery_section else DeliveryOptions()
    if sec.has("client_options") and sec.has("webhook"):
        sec.error(
            "webhook",
            sec.line_of("webhook"),
            "client_options and webhook are both set; a document sends to exactly one "
            "destination (client_options for USP, or webhook)",
        )
    elif not sec.has("client_options") and not sec.has("webhook"):
        sec.error(
            "client_options",
            sec.line,
            "required key is missing: set client_options (LimaCharlie USP) or webhook",
        )
    sec.finish()
    if (
        len(doc.errors) > before
        or source is None
        or delivery is None
        or record_filter is None
        or dedup is None
    ):
        return None
    return SourceConfig(
        index=doc.number or 1,
        kind=kind,
        source=source,
        aws=aws,
        client_options=client,
        webhook=webhook,
        delivery=delivery,
        record_filter=record_filter,
        dedup=dedup,
    )


def _document(doc: _Doc, tree: _Tree, expect_kind: SourceKind | None) -> SourceConfig | None:
    if not isinstance(tree, _Map):
        doc.error("", tree.line, "expected a mapping with one top-level key: s3, sqs or file")
        return None
    kinds: list[SourceKind] = [k for k in SOURCE_KINDS if k in tree.items]
    for name, item in tree.items.items():
        if name not in SOURCE_KINDS and name != HEALTHCHECK:
            close: list[str] = [k for k in SOURCE_KINDS if name.lower().startswith(k)]
            close = close or difflib.get_close_matches(name, SOURCE_KINDS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else "expected s3, sqs or file"
            doc.error(name, item.line, f"unknown key; {hint}")
    if not kinds:
        doc.error("", tree.line, "no source: expected one top-level key s3, sqs or file")
        return None
    if len(kinds) > 1:
        doc.error(
            "",
            tree.line,
            f"one document holds one source, found {' and '.join(kinds)}; "
            "separate documents with ---",
        )
        return None
    kind = kinds[0]
    item = tree.items[kind]
    if expect_kind is not None and kind != expect_kind:
        doc.error(kind, item.line, f"a {kind} source, but the command is `{expect_kind}`")
    if not isinstance(item, _Map):
        doc.error(kind, item.line, f"expected a mapping, got {_describe(item.value)}")
        return None
    before = len(doc.errors)
    config = _source(doc, kind, _Section(doc, kind, item))
    port = _Section(doc, "", tree).integer(HEALTHCHECK, 1, 65535)
    if config is None or len(doc.errors) != before:
        return None
    return dataclasses.replace(config, healthcheck=port) if port else config


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def parse_documents(
    text: str,
    env: Mapping[str, str],
    origin: str,
    *,
    expect_kind: SourceKind | None = None,
    warnings: list[ConfigProblem] | None = None,
) -> list[SourceConfig]:
    """Every non-empty YAML document in `text` as one source; raises ConfigError with every
    problem found. Warnings are appended to `warnings` when given, errors or not."""
    errors: list[ConfigProblem] = []
    found: list[ConfigProblem] = []
    sources: list[SourceConfig] = []
    loader = yaml.SafeLoader(text)
    number = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.MarkedYAMLError as exc:
                errors.append(_syntax_problem(origin, number + 1, exc))
                break
            number += 1
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG):
                continue  # an empty document
            doc = _Doc(origin, number, env, [], found)
            tree = _tree_from_node(loader, node, node.start_mark.line + 1, doc, "", frozenset())
            config = _document(doc, tree, expect_kind) if tree is not None else None
            if config is not None and not doc.errors:
                sources.append(config)
            errors.extend(sorted(doc.errors, key=lambda p: p.line or 0))
    finally:
        loader.dispose()
    if not sources and not errors:
        errors.append(
            ConfigProblem(
                origin, None, None, "", "no source documents (expected s3:, sqs: or file:)"
            )
        )
    errors.extend(_healthcheck_conflicts(origin, sources))
    if warnings is not None:
        warnings.extend(found)
    if errors:
        raise ConfigError(errors)
    return sources


def _healthcheck_conflicts(origin: str, sources: list[SourceConfig]) -> list[ConfigProblem]:
    """One process serves one health endpoint: documents may repeat the port, not differ."""
    ports = {s.healthcheck for s in sources if s.healthcheck}
    if len(ports) <= 1:
        return []
    shown = ", ".join(f"{s.index}: {s.healthcheck}" for s in sources if s.healthcheck)
    message = f"documents name different ports ({shown}); one process serves one endpoint"
    return [ConfigProblem(origin, None, None, HEALTHCHECK, message)]


def _syntax_problem(origin: str, number: int, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    """The parser's complaint without its source snippet, which could show a secret."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = f", column {mark.column + 1}" if mark is not None else ""
    what = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
    return ConfigProblem(origin, number, line, "", f"invalid YAML{column}: {what}")


def known_keys(kind: SourceKind) -> set[str]:
    """Every dotted key a `kind` document accepts (relative to the source, with top-level
    keys as they are): read off the parser itself, so documentation can be checked
    against it. Sections that take any key (`client_options.mapping`) count as one."""
    sections = (
        "client_options",
        "client_options.identity",
        "webhook",
        "delivery",
        "filter",
        "dedup",
    )
    tree = _Map({}, 1)
    for section in sections:
        parent = tree
        for part in section.split("."):
            parent = parent.items.setdefault(part, _Map({}, 1))  # type: ignore[assignment]
    doc = _Doc("", 1, {}, [], [])
    _document(doc, _Map({kind: tree, HEALTHCHECK: _Leaf(None, None, 1, False)}, 1), None)
    return {key.removeprefix(f"{kind}.") for key in doc.keys}


def load_config(
    path: Path,
    env: Mapping[str, str],
    *,
    expect_kind: SourceKind | None = None,
    warnings: list[ConfigProblem] | None = None,
) -> list[SourceConfig]:
    """Reads a file of one or more adapter documents; see `parse_documents`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        problem = ConfigProblem(str(path), None, None, "", f"cannot read: {reason}")
        raise ConfigError([problem]) from None
    return parse_documents(text, env, str(path), expect_kind=expect_kind, warnings=warnings)


def parse_dotted(
    kind: SourceKind,
    pairs: list[str],
    env: Mapping[str, str],
    *,
    warnings: list[ConfigProblem] | None = None,
) -> list[SourceConfig]:
    """LimaCharlie's `lc_adapter s3 client_options.identity.oid=... bucket_name=...` form: one
    source; values are strings, converted per field."""
    doc = _Doc(COMMAND_LINE, None, env, [], [])
    config = _document(doc, _tree_from_pairs(kind, pairs, doc), None)
    if warnings is not None:
        warnings.extend(doc.warnings)
    if doc.errors:
        raise ConfigError(doc.errors)
    assert config is not None
    return [config]
