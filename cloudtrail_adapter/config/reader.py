"""Reading YAML (or `key=value` arguments) into a located tree, and typed accessors over it.

Knows nothing of this adapter's keys: `schema.py` says what a document holds. Every problem
names its file, document, line and dotted key, and never shows a secret's value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cloudtrail_adapter.secret import Secret

# --------------------------------------------------------------------------------------------
# Problems: every error (and warning) names where it is and which dotted key it concerns.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One error, warning or note. Messages never contain a secret's value."""

    origin: str  # the file, or "command line"
    document: int | None  # 1-based YAML document; None for the command line or the whole file
    line: int | None  # 1-based line in the file, when known
    key: str  # dotted key, e.g. "s3.client_options.identity.oid"; "" for the whole document
    message: str
    level: Literal["warning", "info"] = "warning"  # info: a key accepted and not used

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
class Leaf:
    value: object  # as YAML constructed it (str from the command line)
    text: str | None  # a scalar as written; None for sequences
    line: int | None
    expandable: bool  # a string: ${VAR} references apply


@dataclass
class Map:
    items: dict[str, Map | Leaf]
    line: int | None


Tree = Map | Leaf


@dataclass
class Doc:
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

    def note(self, key: str, line: int | None, message: str) -> None:
        """Something worth one info line, such as a key accepted but not used; the
        warnings list carries it, with level info."""
        problem = ConfigProblem(self.origin, self.number, line, key, message, "info")
        self.warnings.append(problem)


def plain_value(tree: Tree) -> object:
    if isinstance(tree, Map):
        return {k: plain_value(v) for k, v in tree.items.items()}
    return tree.value


def tree_from_node(
    loader: yaml.SafeLoader, node: yaml.Node, line: int, doc: Doc, path: str, seen: frozenset[int]
) -> Tree | None:
    if id(node) in seen:
        doc.error(path, line, "a YAML alias refers to itself")
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        items: dict[str, Tree] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
                doc.error(path, key_line, "keys must be strings")
                continue
            key = key_node.value
            child_path = join(path, key)
            if key in items:
                doc.error(child_path, key_line, "duplicate key")
                continue
            child = tree_from_node(loader, value_node, key_line, doc, child_path, seen | {id(node)})
            if child is not None:
                items[key] = child
        return Map(items, line)
    try:
        value = loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        doc.error(path, line, f"cannot read this value ({problem})")
        return None
    if isinstance(node, yaml.ScalarNode):
        return Leaf(value, str(node.value), line, node.tag == _STR_TAG)
    return Leaf(value, None, line, expandable=False)


def join(path: str, key: str) -> str:
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


def describe(value: object) -> str:
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


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Section:
    """One mapping being read: typed accessors that record the keys they were asked for, so
    `finish` can name the rest. `note` prefixes every error (e.g. "from AWS_ENDPOINT_URL: ")."""

    def __init__(self, doc: Doc, path: str, tree: Map, note: str = "") -> None:
        self.doc = doc
        self.path = path
        self.tree = tree
        self.note = note
        self.known: list[str] = []

    def from_environment(self, name: str, text: str, variable: str) -> Section:
        """`name` as if it held `text`, the value of environment variable `variable`."""
        leaf = Leaf(text, text, self.line, expandable=False)
        return Section(self.doc, self.path, Map({name: leaf}, self.line), f"from {variable}: ")

    @property
    def line(self) -> int | None:
        return self.tree.line

    def key(self, name: str) -> str:
        return join(self.path, name)

    def has(self, name: str) -> bool:
        item = self.tree.items.get(name)
        return item is not None and not (isinstance(item, Leaf) and item.value is None)

    def line_of(self, name: str) -> int | None:
        item = self.tree.items.get(name)
        return item.line if item is not None else self.line

    def error(self, name: str, line: int | None, message: str) -> None:
        self.doc.error(self.key(name), line, self.note + message)

    def _take(self, name: str, *, required: bool) -> Tree | None:
        """The item under `name`; null counts as absent."""
        self.known.append(name)
        self.doc.keys.add(self.key(name))
        item = self.tree.items.get(name)
        if item is None or (isinstance(item, Leaf) and item.value is None):
            if required:
                self.error(name, self.line, "required key is missing")
            return None
        return item

    def _scalar(self, name: str, item: Tree, *, secret: bool) -> object:
        """The scalar's value with ${VAR} expanded; _INVALID after reporting a problem."""
        if isinstance(item, Map):
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

    def _optional_scalar(self, name: str) -> tuple[Tree, object] | None:
        """An optional key's item and expanded value; None when absent or already reported."""
        item = self._take(name, required=False)
        if item is None:
            return None
        value = self._scalar(name, item, secret=False)
        return None if value is _INVALID else (item, value)

    def section(self, name: str, *, required: bool = False) -> Section | None:
        item = self._take(name, required=required)
        if item is None:
            return None
        if not isinstance(item, Map):
            self.error(name, item.line, f"expected a mapping, got {describe(item.value)}")
            return None
        return Section(self.doc, self.key(name), item)

    def string(self, name: str, *, required: bool = False, secret: bool = False) -> str | None:
        item = self._take(name, required=required)
        if item is None:
            return None
        if isinstance(item, Map) or item.text is None:
            got = describe({} if isinstance(item, Map) else item.value)
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
            got = describe(value) if number is None else str(number)
            self.error(name, item.line, f"expected an integer from {low} to {high}, got {got}")
            return None
        return number

    def number(
        self,
        name: str,
        *,
        minimum: float,
        maximum: float,
        minimum_allowed: bool,
        parse: Callable[[str], float | None] | None = None,
    ) -> float | None:
        """A finite number in range; `parse` reads other spellings of a string (durations)."""
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
            if number is None and parse is not None:
                number = parse(value.strip())
        low_ok = number is not None and (number >= minimum if minimum_allowed else number > minimum)
        if number is None or not math.isfinite(number) or not low_ok or number > maximum:
            low = f"at least {minimum:g}" if minimum_allowed else f"greater than {minimum:g}"
            got = describe(value) if number is None else f"{number:g}"
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
        self.error(name, item.line, f"expected true/false (or yes/no, 1/0), got {describe(value)}")
        return None

    def url(self, name: str, schemes: tuple[str, ...], *, required: bool = False) -> str | None:
        text = self.string(name, required=required)
        if text is None:
            return None
        problem = url_problem(text, schemes)
        if problem:
            self.error(name, self.line_of(name), problem)
            return None
        return text

    def passthrough_mapping(self, name: str) -> dict[str, Any] | None:
        item = self._take(name, required=False)
        if item is None:
            return None
        if not isinstance(item, Map):
            self.error(name, item.line, f"expected a mapping, got {describe(item.value)}")
            return None
        plain = plain_value(item)
        assert isinstance(plain, dict)
        return plain

    def globs(self, name: str) -> tuple[str, ...] | None:
        """A list of non-empty strings (a single string is a list of one)."""
        item = self._take(name, required=False)
        if item is None:
            return None
        value = [] if isinstance(item, Map) else item.value
        values = [value] if isinstance(value, str) else value
        if isinstance(item, Map) or not isinstance(values, list) or not values:
            self.error(name, item.line, f"expected a list of strings, got {describe(value)}")
            return None
        bad = [v for v in values if not isinstance(v, str) or not v.strip()]
        if bad:
            self.error(name, item.line, f"expected non-empty strings, got {describe(bad[0])}")
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
        if isinstance(item, Map) or not isinstance(item.value, list):
            got = describe({} if isinstance(item, Map) else item.value)
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


def url_problem(text: str, schemes: tuple[str, ...]) -> str | None:
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


def _syntax_problem(origin: str, number: int, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    """The parser's complaint without its source snippet, which could show a secret."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = f", column {mark.column + 1}" if mark is not None else ""
    what = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
    return ConfigProblem(origin, number, line, "", f"invalid YAML{column}: {what}")


def yaml_documents(
    text: str,
    origin: str,
    env: Mapping[str, str],
    errors: list[ConfigProblem],
    warnings: list[ConfigProblem],
) -> Iterator[tuple[Doc, Tree | None]]:
    """Each non-empty YAML document as a located tree; a syntax error is appended to
    `errors` and ends the stream (the documents before it still count)."""
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
            doc = Doc(origin, number, env, [], warnings)
            tree = tree_from_node(loader, node, node.start_mark.line + 1, doc, "", frozenset())
            yield doc, tree
    finally:
        loader.dispose()
