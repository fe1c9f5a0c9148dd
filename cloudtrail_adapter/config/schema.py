"""What an adapter document holds: one source kind at the top, its keys, the destination
sections beside them. Every key is read from its declaration in `values.py`; the rules here
are only those that join the declared parts into one `SourceConfig`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cloudtrail_adapter.config.dotted import tree_from_pairs
from cloudtrail_adapter.config.keys import (
    Declared,
    Nested,
    PassList,
    PassMapping,
    build,
    declared,
    read_declared,
)
from cloudtrail_adapter.config.reader import (
    ConfigError,
    ConfigProblem,
    Doc,
    Map,
    Section,
    Tree,
    describe,
    yaml_documents,
)
from cloudtrail_adapter.config.values import (
    AwsOptions,
    Destinations,
    FileSourceOptions,
    S3SourceOptions,
    SourceConfig,
    SourceKind,
    SqsFilesSourceOptions,
    SqsSourceOptions,
    TopLevel,
)

SOURCE_KINDS: tuple[SourceKind, ...] = ("s3", "sqs", "sqs-files", "file")
COMMAND_LINE = "command line"

#: Each kind's own keys: its source class, and AWS's where it reads AWS.
SOURCE_CLASSES: dict[SourceKind, tuple[type, ...]] = {
    "s3": (S3SourceOptions, AwsOptions),
    "sqs": (SqsSourceOptions, AwsOptions),
    "sqs-files": (SqsFilesSourceOptions, AwsOptions),
    "file": (FileSourceOptions,),
}


def _source(doc: Doc, kind: SourceKind, sec: Section) -> SourceConfig | None:
    before = len(doc.errors)
    source_cls, *aws_cls = SOURCE_CLASSES[kind]
    source_values = read_declared(sec, source_cls)
    aws_values = read_declared(sec, AwsOptions) if aws_cls else {}
    destination_values = read_declared(sec, Destinations)
    sec.finish()
    source = build(sec, source_cls, source_values, before)
    aws = build(sec, AwsOptions, aws_values, before) if aws_cls else AwsOptions()
    destinations = build(sec, Destinations, destination_values, before)
    if len(doc.errors) > before or source is None or aws is None or destinations is None:
        return None
    if isinstance(source, SqsSourceOptions) and aws.region is None:
        aws = dataclasses.replace(aws, region=queue_region(source.queue_url))
    return SourceConfig(
        index=doc.number or 1,
        kind=kind,
        source=source,
        aws=aws,
        client_options=destinations.client_options,
        webhook=destinations.webhook,
        delivery=destinations.delivery,
        record_filter=destinations.filter,
        dedup=destinations.dedup,
    )


_EXPECTED = "s3, sqs, sqs-files or file"


def _document(doc: Doc, tree: Tree, expect_kind: SourceKind | None) -> SourceConfig | None:
    if not isinstance(tree, Map):
        doc.error("", tree.line, f"expected a mapping with one top-level key: {_EXPECTED}")
        return None
    _unknown_top_level_keys(doc, tree)
    before = len(doc.errors)
    top = Section(doc, "", tree)
    top_level = build(top, TopLevel, read_declared(top, TopLevel), before)
    kind = _kind(doc, tree, top_level)
    if kind is None:
        return None
    item = tree.items[kind]
    if expect_kind is not None and kind != expect_kind:
        doc.error(kind, item.line, f"a {kind} source, but the command is `{expect_kind}`")
    if not isinstance(item, Map):
        doc.error(kind, item.line, f"expected a mapping, got {describe(item.value)}")
        return None
    config = _source(doc, kind, Section(doc, kind, item))
    if config is None or top_level is None or len(doc.errors) != before:
        return None
    return dataclasses.replace(config, healthcheck=top_level.healthcheck, workers=top_level.workers)


def _unknown_top_level_keys(doc: Doc, tree: Map) -> None:
    top_keys = {d.name for d in declared(TopLevel)}
    for name, item in tree.items.items():
        if name not in SOURCE_KINDS and name not in top_keys:
            close: list[str] = [k for k in SOURCE_KINDS if name.lower().startswith(k)]
            close = close or difflib.get_close_matches(name, SOURCE_KINDS, n=1, cutoff=0.5)
            hint = f"did you mean {close[-1]}?" if close else f"expected {_EXPECTED}"
            doc.error(name, item.line, f"unknown key; {hint}")


def _kind(doc: Doc, tree: Map, top_level: TopLevel | None) -> SourceKind | None:
    """The document's source section: the only one, or the one `sensor_type` names (as
    LimaCharlie's adapter runs only that one, the others are noted as unused)."""
    kinds: list[SourceKind] = [k for k in SOURCE_KINDS if k in tree.items]
    chosen = top_level.sensor_type if top_level is not None else None
    if chosen is not None:
        if chosen not in kinds:
            line = tree.items["sensor_type"].line
            doc.error(
                "sensor_type", line, f"names {chosen}, but the document has no {chosen}: section"
            )
            return None
        for other in kinds:
            if other != chosen:
                doc.note(other, tree.items[other].line, f"not used: sensor_type is {chosen}")
        return chosen
    if not kinds:
        if top_level is not None and top_level.cloud is not None:
            doc.error(
                "cloud",
                tree.items["cloud"].line,
                "this document only names a configuration kept in LimaCharlie, which this "
                f"daemon does not fetch; put the adapter's configuration ({_EXPECTED}) here",
            )
        else:
            doc.error("", tree.line, f"no source: expected one top-level key {_EXPECTED}")
        return None
    if len(kinds) > 1:
        doc.error(
            "",
            tree.line,
            f"one document holds one source, found {' and '.join(kinds)}; "
            "separate documents with --- (or name the one to run in sensor_type)",
        )
        return None
    return kinds[0]


_SQS_HOST = re.compile(
    r"(?:sqs\.(?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?"
)


def queue_region(queue_url: str) -> str | None:
    """The region in an AWS SQS queue URL's host name, if it is one."""
    host = urllib.parse.urlsplit(queue_url).hostname or ""
    match = _SQS_HOST.fullmatch(host)
    return (match.group("a") or match.group("b")) if match else None


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
    for doc, tree in yaml_documents(text, origin, env, errors, found):
        config = _document(doc, tree, expect_kind) if tree is not None else None
        if config is not None and not doc.errors:
            sources.append(config)
        errors.extend(sorted(doc.errors, key=lambda p: p.line or 0))
    if not sources and not errors:
        errors.append(
            ConfigProblem(
                origin, None, None, "", "no source documents (expected s3:, sqs: or file:)"
            )
        )
    errors.extend(_process_wide_conflicts(origin, sources))
    if warnings is not None:
        warnings.extend(found)
    if errors:
        raise ConfigError(errors)
    return sources


def _process_wide_conflicts(origin: str, sources: list[SourceConfig]) -> list[ConfigProblem]:
    """One process serves one health endpoint and runs one worker pool: documents may
    repeat `healthcheck` and `workers`, not differ."""
    problems = []
    for key in ("healthcheck", "workers"):
        given = [(s.index, getattr(s, key)) for s in sources if getattr(s, key)]
        if len({value for _, value in given}) > 1:
            shown = ", ".join(f"{index}: {value}" for index, value in given)
            message = f"documents give different values ({shown}); one process has one"
            problems.append(ConfigProblem(origin, None, None, key, message))
    return problems


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
    source; values are strings, converted per field. Environment entries named like a key
    (`client_options.identity.installation_key=...`) set it too, as in LimaCharlie's."""
    doc = Doc(COMMAND_LINE, None, env, [], [])
    tree = tree_from_pairs(kind, pairs, doc, _environment_keys(kind, env))
    config = _document(doc, tree, None)
    if warnings is not None:
        warnings.extend(doc.warnings)
    if doc.errors:
        raise ConfigError(doc.errors)
    assert config is not None
    return [config]


# --------------------------------------------------------------------------------------------
# The declarations, walked: for the README's key table and for tests
# --------------------------------------------------------------------------------------------


def document_keys(kind: SourceKind) -> Iterator[tuple[str, Declared, tuple[str, ...]]]:
    """Every key a `kind` document accepts, as (dotted path, declaration, enclosing optional
    sections): top-level keys, the source's keys, then each section's."""
    for key in declared(TopLevel):
        yield key.name, key, ()
    for cls in SOURCE_CLASSES[kind]:
        yield from _section_keys(cls, "", ())
    yield from _section_keys(Destinations, "", ())


def _section_keys(
    cls: Any, prefix: str, within: tuple[str, ...]
) -> Iterator[tuple[str, Declared, tuple[str, ...]]]:
    for key in declared(cls):
        path = prefix + key.name
        kind = key.setting.kind
        if isinstance(kind, Nested):
            inner = within if key.required else (*within, path)
            yield from _section_keys(kind.cls, path + ".", inner)
        else:
            yield path, key, within


_INDEX = re.compile(r"\[\d+\]")


def _environment_keys(kind: SourceKind, env: Mapping[str, str]) -> dict[str, str]:
    """The environment's entries whose names are keys of a `kind` document (list indexes and
    the inside of passed-through sections allowed); the rest of the environment is not ours."""
    keys = known_keys(kind)
    passed = tuple(
        f"{path}."
        for path, key, _ in document_keys(kind)
        if isinstance(key.setting.kind, PassMapping | PassList)
    )
    return {
        name: value
        for name, value in env.items()
        if _INDEX.sub("", name) in keys or _INDEX.sub("", name).startswith(passed)
    }


def known_keys(kind: SourceKind) -> set[str]:
    """Every dotted key a `kind` document accepts (top-level keys as they are)."""
    return {path for path, _, _ in document_keys(kind)}
