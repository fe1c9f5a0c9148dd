"""The state database: which objects LimaCharlie fully acknowledged, per source scope, and
the eventIDs it acknowledged within the de-duplication window (dedup.py).

SQLite in WAL mode, one transaction per commit. `synchronous=NORMAL` survives a process
kill (the WAL is in the OS's hands once a commit returns); at worst a power loss forgets
the last few checkpoints, which re-sends those objects: a duplicate, never a loss.

The state is private whatever the umask: it holds the bytes of records set aside, which are
audit data. The directory is made 0700 and the databases 0600 (SQLite gives their WAL and
shm the database's mode); a directory that exists and lets others in is only warned about,
since its mode may be someone's choice.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cloudtrail_adapter.decoding.values import Unreadable
from cloudtrail_adapter.errors import Backoff

log = structlog.get_logger("cloudtrail_adapter.state")

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
CREATE TABLE IF NOT EXISTS failures (
    scope        TEXT    NOT NULL,
    bucket       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    error        TEXT    NOT NULL,
    first_failed REAL    NOT NULL,
    last_failed  REAL    NOT NULL,
    retry_at     REAL    NOT NULL,
    quarantined  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decode_attempts (
    scope        TEXT    NOT NULL,
    bucket       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    running      INTEGER NOT NULL,
    deaths       INTEGER NOT NULL,
    PRIMARY KEY (scope, bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trail_cursors (
    scope        TEXT    NOT NULL,
    bucket       TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    day          TEXT    NOT NULL,
    PRIMARY KEY (scope, bucket, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shard_marks (
    scope        TEXT    NOT NULL,
    bucket       TEXT    NOT NULL,
    shard        TEXT    NOT NULL,
    before       TEXT    NOT NULL,
    since        REAL    NOT NULL,
    PRIMARY KEY (scope, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivered_keys (
    scope        TEXT    NOT NULL,
    newest       INTEGER NOT NULL,
    entries      BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS delivered_keys_by_age ON delivered_keys (scope, newest);
CREATE TABLE IF NOT EXISTS unreadable_records (
    scope        TEXT    NOT NULL,
    ref          TEXT    NOT NULL,
    idx          INTEGER NOT NULL,
    start        INTEGER NOT NULL,
    end          INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    excerpt      BLOB    NOT NULL,
    raw          BLOB    NOT NULL,
    found_at     REAL    NOT NULL,
    PRIMARY KEY (scope, ref, idx)
) WITHOUT ROWID;
"""
MAX_BACKOFF = 3600.0
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
#: Group or others may read or write: the state directory is then warned about.
_OPEN_BITS = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH
_SIDE_FILES = ("-wal", "-shm", "-journal")
#: A key in a day folder, below its stream: `YYYY/MM/DD/...`.
DAY_FOLDER_GLOB = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*"


@dataclass(frozen=True)
class Failure:
    """An object that failed: how often, why, and when it may be tried again."""

    scope: str
    bucket: str
    key: str
    attempts: int
    reason: str
    error: str
    first_failed: float
    last_failed: float
    retry_at: float
    quarantined: bool


@dataclass(frozen=True)
class UnreadableRecord:
    """A part of a damaged object that was no record on its own, set aside (salvage.py):
    where it was (`ref`: s3://bucket/key, a file's path, an SQS message), its index in
    `Records`, its byte range in the decompressed object, why, and its bytes (up to a cap)."""

    scope: str
    ref: str
    index: int
    start: int
    end: int
    reason: str
    excerpt: bytes
    raw: bytes
    found_at: float

    def __repr__(self) -> str:
        return f"UnreadableRecord({self.ref!r}, index={self.index}, reason={self.reason!r})"


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A SQLite file as the daemon keeps them: WAL, `synchronous=NORMAL` (a process kill
    loses nothing committed), a busy timeout, autocommit outside explicit transactions,
    usable from the threads the event loop hands work to; `schema` applied. The directory
    and the files are private (see above)."""
    private_dir(path.parent)
    _private_files(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    return db


def private_dir(path: Path) -> bool:
    """Makes `path` (and missing parents) with mode 0700 whatever the umask; True if it was
    made here, False if it existed (its mode is then left as it is)."""
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True)
    except FileExistsError:
        return False
    path.chmod(PRIVATE_DIR)  # mkdir's mode went through the umask
    return True


def warn_if_open(path: Path) -> None:
    """A state directory others may read or write gets a warning (once, at start)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & _OPEN_BITS:
        log.warning(
            "state_dir_not_private",
            path=str(path),
            mode=f"{mode:04o}",
            action=f"chmod 700 {path} (systemd: StateDirectoryMode=0700): it holds audit data",
        )


def _private_files(path: Path) -> None:
    """The database 0600, created so before SQLite opens it; an older one, and its WAL and
    shm, tightened to it (SQLite creates the WAL and shm with the database's own mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for made in (path, *(path.with_name(path.name + side) for side in _SIDE_FILES)):
        try:
            if stat.S_IMODE(made.stat().st_mode) != PRIVATE_FILE:
                made.chmod(PRIVATE_FILE)
        except FileNotFoundError:
            continue
        except PermissionError:  # not ours to change: readable and writable is enough
            log.warning("state_file_not_private", path=str(made), action=f"chmod 600 {made}")


class StateError(Exception):
    """The state database cannot be opened or written; names the path."""


class StateStore:
    """The database, opened and closed by its one owner: the daemon for a run (`serve`), or
    the `quarantine` command. A source never holds it: it is given its own part,
    `scoped(scope)`, and each of its stages only the narrow view it uses (`Checkpoints`,
    `DeliveredKeys`). Every call is one short transaction (well under a ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if not private_dir(path.parent):
                warn_if_open(path.parent)
            self._db = open_database(path, SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state database {path}: {exc}") from exc

    @classmethod
    def in_dir(cls, state_dir: Path) -> StateStore:
        return cls(state_dir / "state.db")

    def scoped(self, scope: str) -> SourceState:
        """One source's part: what it may read and write, and nothing of another scope's."""
        return SourceState(self._db, scope, self.path.parent)

    def failures(self, *, quarantined_only: bool = False) -> list[Failure]:
        query = "SELECT * FROM failures"
        if quarantined_only:
            query += " WHERE quarantined=1"
        rows = self._db.execute(query + " ORDER BY scope, bucket, key")
        return [_failure(row) for row in rows]

    def release_quarantine(self, keys: list[str] | None = None) -> int:
        """Forgets quarantined objects (all, or those keys) so the next pass tries them again,
        and the deaths of their decoding with them."""
        rows = self._db.execute(
            "SELECT scope, bucket, key FROM failures WHERE quarantined=1"
        ).fetchall()
        if keys is not None:
            wanted = set(keys)
            rows = [row for row in rows if row[2] in wanted]
        where = "WHERE scope=? AND bucket=? AND key=?"
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"DELETE FROM failures {where}", rows)  # noqa: S608
            self._db.executemany(f"DELETE FROM decode_attempts {where}", rows)  # noqa: S608
        return len(rows)

    def unreadable_records(self, ref: str | None = None) -> list[UnreadableRecord]:
        """Every part set aside (or those of one `ref`), by where they were."""
        query, args = "SELECT * FROM unreadable_records", tuple[str, ...]()
        if ref is not None:
            query, args = query + " WHERE ref=?", (ref,)
        rows = self._db.execute(query + " ORDER BY ref, idx, scope", args)
        return [UnreadableRecord(*row) for row in rows]

    def close(self) -> None:
        self._db.close()


class SourceState:
    """One source's part of the database, by its scope (its LimaCharlie destination): the
    views its source and its de-duplication are given."""

    __slots__ = ("_db", "_scope", "directory")

    def __init__(self, db: sqlite3.Connection, scope: str, directory: Path) -> None:
        self._db = db
        self._scope = scope
        #: the state directory: a store of the source's own that is not in this database
        #: (the integrity check's integrity.db) goes beside it, partitioned by `scope`
        self.directory = directory

    @property
    def scope(self) -> str:
        """The part's name (its LimaCharlie destination), for such a store's rows."""
        return self._scope

    def checkpoints(self, container: str) -> Checkpoints:
        """The source's objects in `container`: a bucket, or a directory's absolute path."""
        return Checkpoints(self._db, self._scope, container)

    def delivered_keys(self) -> DeliveredKeys:
        return DeliveredKeys(self._db, self._scope)

    def set_aside(self, ref: str, parts: Iterable[Unreadable]) -> None:
        """Keeps a damaged object's unreadable parts, in one transaction, before the object
        can commit: its good records are acknowledged, and these are what remains of it.
        Set aside again (a retry), they replace themselves."""
        now = time.time()
        rows = [
            (self._scope, ref, p.index, p.start, p.end, p.reason, p.excerpt, p.raw, now)
            for p in parts
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO unreadable_records VALUES (?,?,?,?,?,?,?,?,?)", rows
            )


class Checkpoints:
    """What a polling source keeps of one bucket (or directory): the objects committed, the
    ones that failed and when they may be tried again, the decoding calls begun and not
    ended or ended by a worker's death (`begin_decode`), and each CloudTrail stream's
    cursor."""

    __slots__ = ("_container", "_db", "_scope")

    def __init__(self, db: sqlite3.Connection, scope: str, container: str) -> None:
        self._db = db
        self._scope = scope
        self._container = container

    def committed(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` were already committed (asked in chunks to stay under SQLite limits)."""
        wanted = list(keys)
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key FROM s3_checkpoints WHERE scope=? AND bucket=? AND key IN ({marks})",  # noqa: S608
                (self._scope, self._container, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def commit(self, key: str, *, etag: str, size: int) -> None:
        """The checkpoint, and the end of any failure record, in one transaction."""
        where = (self._scope, self._container, key)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO s3_checkpoints VALUES (?,?,?,?,?,?)",
                (*where, etag, size, time.time()),
            )
            self._db.execute("DELETE FROM failures WHERE scope=? AND bucket=? AND key=?", where)
            self._db.execute(
                "DELETE FROM decode_attempts WHERE scope=? AND bucket=? AND key=?", where
            )

    def begin_decode(self, key: str) -> int:
        """Before a decoding call on `key`: marks it running, and says how many earlier
        calls died. One still marked running began in a process that died in it (this one
        ends every call it begins), so it counts as a death now."""
        where = (self._scope, self._container, key)
        with self._db:
            self._db.execute("BEGIN")
            row = self._db.execute(
                "SELECT running, deaths FROM decode_attempts WHERE scope=? AND bucket=? AND key=?",
                where,
            ).fetchone()
            deaths = int(row[0]) + int(row[1]) if row else 0
            self._db.execute(
                "INSERT OR REPLACE INTO decode_attempts VALUES (?,?,?,1,?)", (*where, deaths)
            )
        return deaths

    def end_decode(self, key: str, *, died: bool) -> int:
        """After a decoding call on `key` (`died`: its worker died in it): how many died."""
        where = (self._scope, self._container, key)
        with self._db:
            self._db.execute("BEGIN")
            row = self._db.execute(
                "SELECT deaths FROM decode_attempts WHERE scope=? AND bucket=? AND key=?", where
            ).fetchone()
            deaths = (int(row[0]) if row else 0) + died
            if deaths:
                self._db.execute(
                    "INSERT OR REPLACE INTO decode_attempts VALUES (?,?,?,0,?)", (*where, deaths)
                )
            else:
                self._db.execute(
                    "DELETE FROM decode_attempts WHERE scope=? AND bucket=? AND key=?", where
                )
        return deaths

    def record_failure(
        self,
        key: str,
        *,
        reason: str,
        error: str,
        quarantine_after: int,
        backoff: float,
        now: float | None = None,
    ) -> Failure:
        """One more failed attempt: retry after an exponential backoff, or quarantine the
        object once it failed `quarantine_after` times."""
        at = time.time() if now is None else now
        scope, bucket = self._scope, self._container
        row = self._db.execute(
            "SELECT attempts, first_failed FROM failures WHERE scope=? AND bucket=? AND key=?",
            (scope, bucket, key),
        ).fetchone()
        attempts, first = (row[0] + 1, row[1]) if row else (1, at)
        quarantined = attempts >= quarantine_after
        retry_at = at + Backoff(backoff, MAX_BACKOFF).delay(attempts)
        failure = Failure(
            scope, bucket, key, attempts, reason, error, first, at, retry_at, quarantined
        )
        self._db.execute(
            "INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?,?,?,?,?,?)",
            (scope, bucket, key, attempts, reason, error, first, at, retry_at, int(quarantined)),
        )
        return failure

    def blocked(self, now: float | None = None) -> set[str]:
        """Keys not to offer now: quarantined, or still backing off after a failure."""
        at = time.time() if now is None else now
        rows = self._db.execute(
            "SELECT key FROM failures WHERE scope=? AND bucket=? AND (quarantined=1 OR retry_at>?)",
            (self._scope, self._container, at),
        )
        return {row[0] for row in rows}

    def quarantined(self) -> set[str]:
        """Keys quarantined: not offered again until released (`blocked` includes them)."""
        rows = self._db.execute(
            "SELECT key FROM failures WHERE scope=? AND bucket=? AND quarantined=1",
            (self._scope, self._container),
        )
        return {row[0] for row in rows}

    def cursor(self, stream: str) -> str | None:
        """The first day (YYYY-MM-DD) of a CloudTrail stream with anything not committed."""
        row = self._db.execute(
            "SELECT day FROM trail_cursors WHERE scope=? AND bucket=? AND stream=?",
            (self._scope, self._container, stream),
        ).fetchone()
        return None if row is None else str(row[0])

    def move_cursor(self, stream: str, day: str, prune_below: str) -> None:
        """The stream's cursor, and the end of its checkpoints in day folders below
        `prune_below`: they are never listed again. Keys off the layout (`stream/2024/1/`)
        keep theirs: a walk of the stream may list them again."""
        scope, bucket = self._scope, self._container
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO trail_cursors VALUES (?,?,?,?)",
                (scope, bucket, stream, day),
            )
            self._db.execute(
                "DELETE FROM s3_checkpoints WHERE scope=? AND bucket=? AND key>=? AND key<? "
                "AND substr(key, ?) GLOB ?",
                (scope, bucket, stream, prune_below, len(stream) + 1, DAY_FOLDER_GLOB),
            )

    def cursors(self) -> dict[str, str]:
        """Every stream's cursor: stream prefix -> day."""
        rows = self._db.execute(
            "SELECT stream, day FROM trail_cursors WHERE scope=? AND bucket=?",
            (self._scope, self._container),
        )
        return {str(stream): str(day) for stream, day in rows}

    def forget_stream(self, stream: str) -> None:
        """A stream handed to another replica: its cursor and its day folders' checkpoints
        go (keys off the layout keep theirs, as in `move_cursor`)."""
        scope, bucket = self._scope, self._container
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM trail_cursors WHERE scope=? AND bucket=? AND stream=?",
                (scope, bucket, stream),
            )
            self._db.execute(
                "DELETE FROM s3_checkpoints WHERE scope=? AND bucket=? AND key>=? AND key<? "
                "AND substr(key, ?) GLOB ?",
                (scope, bucket, stream, stream + "\U0010ffff", len(stream) + 1, DAY_FOLDER_GLOB),
            )

    def shard_mark(self) -> tuple[str, str, float] | None:
        """The shard this bucket was last listed as, the one before it, and since when."""
        row = self._db.execute(
            "SELECT shard, before, since FROM shard_marks WHERE scope=? AND bucket=?",
            (self._scope, self._container),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), float(row[2]))

    def mark_shard(self, shard: str, before: str, since: float) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO shard_marks VALUES (?,?,?,?,?)",
                (self._scope, self._container, shard, before, since),
            )


class DeliveredKeys:
    """The eventIDs LimaCharlie acknowledged for one scope (dedup.py), stored in rows of one
    acknowledged batch each."""

    __slots__ = ("_db", "_scope")

    def __init__(self, db: sqlite3.Connection, scope: str) -> None:
        self._db = db
        self._scope = scope

    def save(self, newest: int, entries: bytes) -> None:
        """One acknowledged batch's keys; `newest` is its latest event minute, by which the
        row is pruned."""
        self._db.execute(
            "INSERT INTO delivered_keys VALUES (?,?,?)", (self._scope, newest, entries)
        )

    def read(self, window: int) -> tuple[int, Iterator[bytes]]:
        """The newest event minute stored, and the rows within `window` minutes of it,
        newest first."""
        row = self._db.execute(
            "SELECT MAX(newest) FROM delivered_keys WHERE scope=?", (self._scope,)
        ).fetchone()
        newest = int(row[0] or 0)
        rows = self._db.execute(
            "SELECT entries FROM delivered_keys WHERE scope=? AND newest>=? ORDER BY newest DESC",
            (self._scope, newest - window),
        )
        return newest, (bytes(r[0]) for r in rows)

    def prune(self, before: int) -> None:
        self._db.execute(
            "DELETE FROM delivered_keys WHERE scope=? AND newest<?", (self._scope, before)
        )


def _failure(row: tuple[Any, ...]) -> Failure:
    """A `failures` row: its columns are Failure's fields, in order (SQLite gives TEXT as
    str, INTEGER as int and REAL as float; `quarantined` is stored as 0 or 1)."""
    scope, bucket, key, attempts, reason, error, first, last, retry_at, quarantined = row
    flag = bool(quarantined)
    return Failure(scope, bucket, key, attempts, reason, error, first, last, retry_at, flag)
