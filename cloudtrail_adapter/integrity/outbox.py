"""Integrity events for LimaCharlie (`report: limacharlie`), kept in the integrity database
until LimaCharlie acknowledged them, so a restart never loses one (ledger.py's connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence


class Outbox:
    __slots__ = ("_bucket", "_db", "_scope")

    def __init__(self, db: sqlite3.Connection, scope: str, bucket: str) -> None:
        self._db = db
        self._scope = scope
        self._bucket = bucket

    def queue(self, events: Iterable[tuple[str, str, bytes]]) -> None:
        """(account, region, event) each."""
        rows = [(self._scope, self._bucket, *e) for e in events]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO outbox (scope, bucket, account, region, event) VALUES (?,?,?,?,?)",
                rows,
            )

    def pending(self, exclude: set[int], limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` events not yet acknowledged, oldest first, but those in `exclude`
        (being sent)."""
        rows = self._db.execute(
            "SELECT id, event FROM outbox WHERE scope=? AND bucket=? "
            "AND mine(account, region, NULL) ORDER BY id LIMIT ?",
            (self._scope, self._bucket, limit + len(exclude)),
        ).fetchall()
        return [(int(i), bytes(e)) for i, e in rows if int(i) not in exclude][:limit]

    def sent(self, ids: Sequence[int]) -> None:
        """Acknowledged by LimaCharlie: forgotten."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    def waiting(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE scope=? AND bucket=? "
            "AND mine(account, region, NULL)",
            (self._scope, self._bucket),
        ).fetchone()
        return int(row[0])
