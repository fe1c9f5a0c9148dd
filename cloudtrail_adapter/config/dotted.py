"""LimaCharlie's `key=value` form (`lc_adapter s3 bucket_name=... client_options.identity.oid=...`)
as the same located tree a YAML document makes, so one schema reads both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cloudtrail_adapter.config.reader import Doc, Leaf, Map, Tree, join

_INDEXED = re.compile(r"(.+)\[(\d+)\]")


class _Items(dict[int, Any]):
    """`key[N]` items of one list, by index, until the list is complete."""


def tree_from_pairs(
    kind: str, pairs: list[str], doc: Doc, environment: Mapping[str, str] | None = None
) -> Map:
    """LimaCharlie's `key=value` form: dotted keys relative to the source, `key[N]` for a
    list's items (`regions[0]=us-*`, `mappings[0].event_type_path=eventName`). Then the
    `environment`'s entries (already those that name keys) set their keys too, over an
    argument's, as LimaCharlie's adapter reads them after the arguments."""
    root: dict[str, Any] = {}
    for number, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            # The argument is not echoed: a misplaced secret is as likely as a typo.
            doc.error("", None, f"argument {number} is not key=value (e.g. bucket_name=my-trail)")
            continue
        _place(root, parts, value, kind, doc, overwrite=False)
    for name, value in (environment or {}).items():
        _place(root, name.split("."), value, kind, doc, overwrite=True)
    return Map({kind: _tree(root, kind, doc)}, None)


def _place(
    root: dict[str, Any], parts: list[str], value: str, kind: str, doc: Doc, *, overwrite: bool
) -> None:
    node: dict[Any, Any] = root
    path = kind
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        indexed = _INDEXED.fullmatch(part)
        steps: list[Any] = [indexed[1], int(indexed[2])] if indexed else [part]
        for step_number, step in enumerate(steps):
            path = f"{path}[{step}]" if isinstance(step, int) else join(path, step)
            final = last and step_number == len(steps) - 1
            if final:
                if isinstance(node.get(step), dict):
                    doc.error(path, None, "given both as a value and as a section")
                elif step in node and not overwrite:
                    doc.error(path, None, "given more than once")
                else:
                    if step in node:
                        doc.note(
                            path,
                            None,
                            "set in the environment too; the environment's value is used",
                        )
                    node[step] = value
                return
            want_list = step_number == 0 and len(steps) == 2
            child = node.setdefault(step, _Items() if want_list else {})
            if not isinstance(child, dict) or isinstance(child, _Items) != want_list:
                doc.error(path, None, "given both as a value and as a section")
                return
            node = child


def _tree(node: dict[str, Any], path: str, doc: Doc) -> Map:
    items: dict[str, Tree] = {}
    for name, child in node.items():
        child_path = join(path, name)
        if isinstance(child, _Items):
            items[name] = Leaf(_plain_list(child, child_path, doc), None, None, expandable=False)
        elif isinstance(child, dict):
            items[name] = _tree(child, child_path, doc)
        else:
            items[name] = Leaf(child, child, None, expandable=True)
    return Map(items, None)


def _plain_list(items: _Items, path: str, doc: Doc) -> list[Any]:
    missing = [i for i in range(max(items) + 1) if i not in items]
    if missing:
        doc.error(f"{path}[{missing[0]}]", None, "missing: list indexes count from 0, no gaps")
    return [_plain_item(items[i], f"{path}[{i}]", doc) for i in sorted(items)]


def _plain_item(item: Any, path: str, doc: Doc) -> Any:
    if isinstance(item, _Items):
        return _plain_list(item, path, doc)
    if isinstance(item, dict):
        return {k: _plain_item(v, join(path, k), doc) for k, v in item.items()}
    return item
