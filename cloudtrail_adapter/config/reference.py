"""The README's "Every key" table, written from the declarations in `values.py`.

`python -m cloudtrail_adapter.config.reference README.md` (`make docs`) rewrites the table
between its markers; a test fails while the README and the declarations differ.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudtrail_adapter.config.keys import Declared, Integer, declared, size
from cloudtrail_adapter.config.schema import SOURCE_KINDS, document_keys
from cloudtrail_adapter.config.values import TopLevel
from cloudtrail_adapter.secret import Secret

BEGIN = "<!-- keys: made by `make docs` from cloudtrail_adapter/config/values.py -->"
END = "<!-- /keys -->"
HEADER = "| key | in | default | accepts | meaning | LimaCharlie's |\n|---|---|---|---|---|---|"


@dataclass
class _Row:
    path: str
    key: Declared
    within: tuple[str, ...]
    defaults: dict[str, str] = field(default_factory=dict)  # by document kind


def _shown(key: Declared, within: tuple[str, ...]) -> str:
    if key.setting.shown is not None:
        return key.setting.shown
    if key.required:
        return f"required with `{within[-1]}`" if within else "required"
    shown = _value(key.default)
    if isinstance(key.setting.kind, Integer) and key.setting.kind.unit == "bytes":
        shown += f" ({size(key.default)})"
    return shown


def _value(value: Any) -> str:
    if value is None or value == ():
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float | int):
        return str(value)
    if isinstance(value, Secret | datetime):
        return "(none)"
    raise TypeError(f"no README form for {type(value).__name__}")


def _rows() -> list[_Row]:
    rows: dict[str, _Row] = {}
    for kind in SOURCE_KINDS:
        for path, key, within in document_keys(kind):
            row = rows.setdefault(path, _Row(path, key, within))
            assert row.key.setting == key.setting, f"{path} is declared twice, differently"
            row.defaults[kind] = _shown(key, within)
    return list(rows.values())


def _documents(row: _Row) -> str:
    if row.path in {d.name for d in declared(TopLevel)}:
        return "top level"
    kinds = list(row.defaults)
    return "all" if len(kinds) == len(SOURCE_KINDS) else ", ".join(kinds)


def _default(row: _Row) -> str:
    first, *others = row.defaults.items()
    odd = [f"{kind}: {shown}" for kind, shown in others if shown != first[1]]
    return first[1] + (f" ({'; '.join(odd)})" if odd else "")


def _line(row: _Row) -> str:
    setting = row.key.setting
    cells = [
        f"`{row.path}`",
        _documents(row),
        _default(row),
        setting.kind.accepts(),
        setting.doc,
        "yes" if setting.lc else "",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table() -> str:
    """The whole generated block, markers included."""
    lines = [BEGIN, HEADER, *(_line(r) for r in _rows()), END]
    return "\n".join(lines)


def rewrite(readme: str) -> str:
    """`readme` with its key table replaced by the one the declarations make."""
    head, found, rest = readme.partition(BEGIN)
    if not found or END not in rest:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    return head + table() + rest.split(END, 1)[1]


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "README.md")
    path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
