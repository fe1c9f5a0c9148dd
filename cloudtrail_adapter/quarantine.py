"""`cloudtrail-adapter quarantine`: what was given up on, and getting it back.

Two kinds: objects that kept failing (whole; `retry` offers them again) and the parts of
damaged objects that were no record on their own (salvage.py; their objects committed, so
these are what remains: `show` them, `export` their bytes to repair and ship them by hand).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from cloudtrail_adapter.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from cloudtrail_adapter.state import (
    PRIVATE_FILE,
    StateError,
    StateStore,
    UnreadableRecord,
    private_dir,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run(action: str, keys: list[str], state_dir: Path, to: Path | None) -> int:
    if action == "export" and to is None:
        print("export needs --to DIR", file=sys.stderr)
        return EXIT_USAGE
    if not (state_dir / "state.db").exists():
        print(f"no state database in {state_dir} (see --state-dir)", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = StateStore.in_dir(state_dir)
    except StateError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    try:
        if action == "list":
            _list(store)
        elif action == "retry":
            released = store.release_quarantine(keys or None)
            print(f"{released} released; the next pass fetches them again", file=sys.stderr)
        else:
            parts = _records(store, keys)
            if action == "show":
                _show(parts)
            else:
                assert to is not None
                _export(parts, to)
    finally:
        store.close()
    return EXIT_OK


def _list(store: StateStore) -> None:
    objects = store.failures(quarantined_only=True)
    for f in objects:
        print(f"{f.bucket}\t{f.key}\t{f.attempts} attempts\t{f.reason}: {f.error}")
    parts = store.unreadable_records()
    for p in parts:
        print(f"{p.ref}\t{_where(p)}\t{p.reason}\tnear {p.excerpt!r}")
    print(
        f"{len(objects)} objects quarantined, {len(parts)} unreadable records set aside",
        file=sys.stderr,
    )


def _records(store: StateStore, refs: list[str]) -> list[UnreadableRecord]:
    if not refs:
        return store.unreadable_records()
    return [p for ref in refs for p in store.unreadable_records(ref)]


def _where(part: UnreadableRecord) -> str:
    return f"Records[{part.index}] bytes {part.start}-{part.end}"


def _show(parts: list[UnreadableRecord]) -> None:
    for p in parts:
        kept = f"{len(p.raw)} of {p.end - p.start} bytes kept"
        print(f"== {p.ref} {_where(p)}: {p.reason} ({kept})")
        print(f"near: {p.excerpt!r}")
        print(p.raw.decode("utf-8", "backslashreplace"))
    print(f"{len(parts)} unreadable records", file=sys.stderr)


def _export(parts: list[UnreadableRecord], to: Path) -> None:
    """One file per part, its bytes exactly as they were in the decompressed object. They
    are audit data, so private whatever the umask: files 0600, and a directory made 0700."""
    private_dir(to)
    for p in parts:
        name = f"{_UNSAFE.sub('_', p.ref).strip('_')[-150:]}.{p.index}.json"
        path = to / name
        _write_private(path, p.raw)
        print(path)
    print(f"{len(parts)} written to {to}", file=sys.stderr)


def _write_private(path: Path, data: bytes) -> None:
    """Written 0600, even over a file that was there (whose mode O_CREAT would keep); never
    through a symbolic link planted in its place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, PRIVATE_FILE)
        out.write(data)
