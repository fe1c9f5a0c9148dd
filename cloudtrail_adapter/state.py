"""The state database: which objects LimaCharlie fully acknowledged, per source scope.

SQLite in WAL mode, one transaction per commit. `synchronous=NORMAL` survives a process
kill (the WAL is in the OS's hands once a commit returns); at worst a power loss forgets
the last few checkpoints, which re-sends those objects: a duplicate, never a loss.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS s3_checkpoints (
    scope        TEXT    NOT NULL,
    bucket       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    etag         TEXT    NOT NULL DEFAULT '',
    size         INTEGER NOT NULL DEFAULT 0,
    committed_at REAL    NOT NULL,
    PRIMARY KEY (scope, bucket, key)
) WITHOUT ROWID;
"""


class StateError(Exception):
    """The state database cannot be opened or written; names the path."""


class StateStore:
    """A small synchronous facade: every call is one short transaction (well under a ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state database {path}: {exc}") from exc

    @classmethod
    def in_dir(cls, state_dir: Path) -> StateStore:
        return cls(state_dir / "state.db")

    def committed_keys(self, scope: str, bucket: str, keys: Iterable[str]) -> set[str]:
        """Which of `keys` were already committed (asked in chunks to stay under SQLite limits)."""
        wanted = list(keys)
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key FROM s3_checkpoints WHERE scope=? AND bucket=? AND key IN ({marks})",  # noqa: S608
                (scope, bucket, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def commit_object(self, scope: str, bucket: str, key: str, *, etag: str, size: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO s3_checkpoints VALUES (?,?,?,?,?,?)",
            (scope, bucket, key, etag, size, time.time()),
        )

    def count_committed(self, scope: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM s3_checkpoints WHERE scope=?", (scope,))
        return int(row.fetchone()[0])

    def close(self) -> None:
        self._db.close()
