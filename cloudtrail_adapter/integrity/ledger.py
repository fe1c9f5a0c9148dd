"""What a verdict still waits for, and the verdicts: SQLite, one file beside the state database.

Kept, per source (scope and bucket), only while a verdict needs it:

- *files*: log files shipped whose digest has not named them yet (key, SHA-256 of the
  uncompressed content, the delivery time its name gives), until a digest names them
  (`valid`/`hash_mismatch`), the digests around their time say they are not theirs
  (`unlisted`), or no digest can come for them any more (unverified);
- *expected*: files a valid digest names that were not shipped yet, until they are
  (`valid`/`hash_mismatch`) or the digest's period plus `grace` has passed and they are
  not in the bucket (`missing`);
- a file judged either way stays a day as a tombstone: a file read again (a decoding
  failure retried, a restart before its checkpoint) is never judged twice, and a late one
  is still matched, never taken for a forged one;
- *digests*: each digest checked (so none is checked twice), with its signature and hash
  for the next one's chain; *gaps*: periods no valid digest speaks for (a missing or
  invalid digest, a restarted chain), whose files cannot be checked;
- *outbox*: events for LimaCharlie (`report: limacharlie`) not yet acknowledged.

It is on disk because a restart is routine: hashes held only in memory would leave the
files shipped in the hour before every restart unverifiable (they are never read twice),
and checked digests forgotten would be checked, and reported, again. Pruning spares
whatever an object still in work may need (a backfill's objects are old), and
`max_files` bounds the files waiting, oldest evicted first (counted).

Everything here is synchronous and short; the checker asks the bucket what this cannot
know (does a key exist) and passes the answers in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cloudtrail_adapter.errors import AdapterError
from cloudtrail_adapter.integrity.digests import (
    HASH_ALGORITHM,
    DigestName,
    Opened,
)
from cloudtrail_adapter.integrity.judging import (
    HOUR,
    MARGIN,
    file_verdict,
    judge_file,
    span,
)
from cloudtrail_adapter.integrity.outbox import Outbox
from cloudtrail_adapter.integrity.tables import TABLES
from cloudtrail_adapter.integrity.verdicts import Verdict
from cloudtrail_adapter.sources.trail_layout import LOG_KINDS, place
from cloudtrail_adapter.state import open_database

__all__ = ["Found", "Ledger", "LedgerError", "Mine"]

Mine = Callable[[str, str, "str | None"], bool]


class LedgerError(AdapterError):
    """The integrity database cannot be opened; names the path. The source is restarted
    with backoff (a full disk or a permission can be fixed meanwhile)."""

    reason = "integrity_unavailable"


@dataclass
class Found:
    """What a step decided: verdicts, and files that cannot be checked, by reason."""

    verdicts: list[Verdict] = field(default_factory=list)
    unverified: Counter[str] = field(default_factory=Counter)

    def add(self, other: Found) -> Found:
        self.verdicts += other.verdicts
        self.unverified.update(other.unverified)
        return self


@dataclass(frozen=True, slots=True)
class _Digest:
    key: str
    series: str
    account: str
    region: str
    start: float
    end: float
    verdict: str
    signature: str | None
    sha256: str | None
    prev_bucket: str | None
    prev_key: str | None
    prev_signature: str | None
    prev_sha256: str | None


_DIGEST_COLUMNS: Final = (
    "key, series, account, region, start, end, verdict, signature, sha256, prev_bucket, "
    "prev_key, prev_signature, prev_sha256"
)


class Ledger:
    """One source's integrity state, in `path` (shared by every source of a daemon)."""

    def __init__(
        self, path: Path, scope: str, bucket: str, *, grace: float, mine: Mine | None = None
    ) -> None:
        """`mine(account, region, key)`: whether a row is this source's to judge (documents
        that split one bucket by accounts or regions share a scope; `key` None for rows
        that have none)."""
        self.path = path
        self._scope = scope
        self._bucket = bucket
        self._grace = grace
        chosen = mine or (lambda account, region, key: True)
        try:
            self._db = open_database(path, TABLES)
            self._db.create_function(
                "mine", 3, lambda a, r, k: int(chosen(a, r, k)), deterministic=True
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open integrity database {path}: {exc}") from exc
        self.outbox = Outbox(self._db, scope, bucket)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            self._db.execute("BEGIN")
            yield self._db

    def _rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, (self._scope, self._bucket, *args)).fetchall()

    def _count(self, table: str) -> int:
        row = self._rows(f"SELECT COUNT(*) FROM {table} WHERE scope=? AND bucket=?")  # noqa: S608
        return int(row[0][0])

    # -------------------------------------------------------------------------------------
    # Log files

    def shipped(self, key: str, sha256: str | None, note: str = "") -> Found:
        """A log file was shipped (its hash from the worker), or could not be read (`sha256`
        None, `note` says why): checked against the digests that named it, else kept until
        one does."""
        where = place(key)
        if where is None or where.kind not in LOG_KINDS:
            return Found()  # off CloudTrail's layout: no digest can name it
        with self._write() as db:
            found = self._match(db, key, sha256, note)
            if found is not None:
                return found
            judged = db.execute(
                "SELECT 1 FROM files WHERE scope=? AND bucket=? AND key=? AND judged=1",
                (self._scope, self._bucket, key),
            ).fetchone()
            if judged is None:
                lo, hi = span(key, where.folder)
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                    (
                        self._scope,
                        self._bucket,
                        key,
                        where.account,
                        where.region,
                        where.kind,
                        lo,
                        hi,
                        sha256,
                        note,
                    ),
                )
        return Found()

    def _match(
        self, db: sqlite3.Connection, key: str, sha256: str | None, note: str
    ) -> Found | None:
        """Verdicts for a file digests named: None when none did, nothing new when it was
        judged already."""
        rows = db.execute(
            "SELECT digest_key, account, region, sha256, state FROM expected "
            "WHERE scope=? AND bucket=? AND key=?",
            (self._scope, self._bucket, key),
        ).fetchall()
        if not rows:
            return None
        db.execute(
            "UPDATE expected SET state='matched' WHERE scope=? AND bucket=? AND key=?",
            (self._scope, self._bucket, key),
        )
        found = Found()
        for digest_key, account, region, expected, state in rows:
            if state == "matched":
                continue
            found.verdicts.append(
                file_verdict(
                    key, str(digest_key), str(account), str(region), str(expected), sha256, note
                )
            )
        return found

    def waiting_files(self) -> int:
        row = self._rows(
            "SELECT COUNT(*) FROM files WHERE scope=? AND bucket=? AND judged=0 "
            "AND mine(account, region, key)"
        )
        return int(row[0][0])

    # -------------------------------------------------------------------------------------
    # Digests

    def known(self, keys: Sequence[str]) -> set[str]:
        """Which of these digests were checked already."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._rows(
                f"SELECT key FROM digests WHERE scope=? AND bucket=? AND key IN ({marks})",  # noqa: S608
                *chunk,
            )
            found.update(str(row[0]) for row in rows)
        return found

    def invalid_digest(
        self, key: str, name: DigestName, verdict: str, reason: str, period: tuple[float, float]
    ) -> Found:
        """`bad_signature` or `unknown_key`: its period is a gap, its files unchecked."""
        start, end = period
        where = name.place
        with self._write() as db:
            db.execute(
                f"INSERT OR REPLACE INTO digests ({_DIGEST_COLUMNS}, scope, bucket, chain) "  # noqa: S608
                "VALUES (?,?,?,?,?,?,?,NULL,NULL,NULL,NULL,NULL,NULL,?,?,'skipped')",
                (
                    key,
                    name.series,
                    where.account,
                    where.region,
                    start,
                    end,
                    verdict,
                    self._scope,
                    self._bucket,
                ),
            )
            self._gap(db, where.account, where.region, start, end, verdict)
        verdict_ = Verdict(
            verdict,
            "digest",
            where.account,
            where.region,
            key,
            reason,
            period_start=start,
            period_end=end,
        )
        return Found([verdict_])

    def valid_digest(self, key: str, name: DigestName, opened: Opened, signature: str) -> Found:
        """A digest AWS signed: the files it names are checked now if shipped, else expected
        until `grace` after its period; its chain is judged later, in order."""
        doc = opened.document
        where = name.place
        found = Found()  # the digest's own verdict waits for its chain (judge_chains)
        due = opened.end + self._grace
        with self._write() as db:
            db.execute(
                f"INSERT OR REPLACE INTO digests ({_DIGEST_COLUMNS}, scope, bucket, chain) "  # noqa: S608
                "VALUES (?,?,?,?,?,?,'valid',?,?,?,?,?,?,?,?,NULL)",
                (
                    key,
                    name.series,
                    where.account,
                    where.region,
                    opened.start,
                    opened.end,
                    signature,
                    opened.sha256,
                    doc.previousDigestS3Bucket,
                    doc.previousDigestS3Object,
                    doc.previousDigestSignature,
                    doc.previousDigestHashValue,
                    self._scope,
                    self._bucket,
                ),
            )
            for entry in doc.logFiles:
                log_key = entry.s3Object
                if not log_key or entry.s3Bucket != self._bucket:
                    found.unverified["other_bucket"] += 1
                    continue
                if entry.hashAlgorithm != HASH_ALGORITHM or not entry.hashValue:
                    found.unverified["hash_algorithm"] += 1
                    continue
                shipped = db.execute(
                    "SELECT sha256, note FROM files WHERE scope=? AND bucket=? AND key=?",
                    (self._scope, self._bucket, log_key),
                ).fetchone()
                state = "waiting"
                if shipped is not None:  # a file judged already is judged again, now named
                    db.execute(
                        "UPDATE files SET judged=1 WHERE scope=? AND bucket=? AND key=?",
                        (self._scope, self._bucket, log_key),
                    )
                    sha = None if shipped[0] is None else str(shipped[0])
                    found.verdicts.append(
                        file_verdict(
                            log_key,
                            key,
                            where.account,
                            where.region,
                            entry.hashValue.lower(),
                            sha,
                            str(shipped[1]),
                        )
                    )
                    state = "matched"
                db.execute(
                    "INSERT OR REPLACE INTO expected VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        self._scope,
                        self._bucket,
                        log_key,
                        key,
                        where.account,
                        where.region,
                        entry.hashValue.lower(),
                        due,
                        state,
                    ),
                )
        return found

    def _gap(
        self, db: sqlite3.Connection, account: str, region: str, start: float, end: float, why: str
    ) -> None:
        db.execute(
            "INSERT INTO gaps VALUES (?,?,?,?,?,?,?)",
            (self._scope, self._bucket, account, region, start, end, why),
        )

    def _digest(self, key: str) -> _Digest | None:
        row = self._db.execute(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE scope=? AND bucket=? AND key=?",  # noqa: S608
            (self._scope, self._bucket, key),
        ).fetchone()
        return None if row is None else _Digest(*row)

    # -------------------------------------------------------------------------------------
    # Chains

    def chain_questions(self) -> list[str]:
        """Digests that valid digests name as their predecessor and that were never
        checked here: the checker asks the bucket whether they exist."""
        rows = self._rows(
            "SELECT DISTINCT d.prev_key FROM digests d WHERE d.scope=? AND d.bucket=? "
            "AND d.verdict='valid' AND d.chain IS NULL AND d.prev_key IS NOT NULL "
            "AND d.prev_bucket=? AND mine(d.account, d.region, d.key) AND NOT EXISTS "
            "(SELECT 1 FROM digests p WHERE p.scope=d.scope AND p.bucket=d.bucket "
            "AND p.key=d.prev_key)",
            self._bucket,
        )
        return [str(row[0]) for row in rows]

    def judge_chains(self, exists: Mapping[str, bool]) -> Found:
        """Each valid digest's link to its predecessor, oldest first: the digest's verdict
        (`valid`, or `chain_break`), and `missing_digest` for a predecessor that is not in
        the bucket. `exists` answers `chain_questions`; a predecessor it does not answer
        waits for the next settle."""
        found = Found()
        rows = self._rows(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE scope=? AND bucket=? "  # noqa: S608
            "AND verdict='valid' AND chain IS NULL AND mine(account, region, key) ORDER BY end"
        )
        for row in rows:
            digest = _Digest(*row)
            judged = self._link(digest, exists)
            if judged is None:
                continue
            chain, verdicts, gap = judged
            with self._write() as db:
                db.execute(
                    "UPDATE digests SET chain=? WHERE scope=? AND bucket=? AND key=?",
                    (chain, self._scope, self._bucket, digest.key),
                )
                if gap is not None:
                    self._gap(db, digest.account, digest.region, *gap)
            found.verdicts += verdicts
        return found

    def _link(
        self, digest: _Digest, exists: Mapping[str, bool]
    ) -> tuple[str, list[Verdict], tuple[float, float, str] | None] | None:
        """(how it links, the verdicts, a period no digest speaks for), or None: not yet."""
        valid = Verdict(
            "valid",
            "digest",
            digest.account,
            digest.region,
            digest.key,
            period_start=digest.start,
            period_end=digest.end,
        )
        if digest.prev_key is None:
            before = self._before(digest)
            if before is None:
                return "start", [valid], None  # the first of its chain here
            reason = (
                f"the chain starts again: no link to {before.key} (log file validation, or "
                "logging, was turned off and on)"
            )
            broken = dataclasses.replace(valid, verdict="chain_break", reason=reason)
            return "restart", [broken], (before.end, digest.start, "chain_break")
        if digest.prev_bucket != self._bucket:
            return "anchor", [valid], None  # its predecessor is in another bucket
        previous = self._digest(digest.prev_key)
        if previous is None:
            if digest.prev_key not in exists:
                return None
            if exists[digest.prev_key]:
                return "anchor", [valid], None  # before what was listed: taken as it is
            before = self._before(digest)
            start = before.end if before is not None else digest.start - HOUR
            reason = f"{digest.key} names it as the digest before it; it is not in the bucket"
            missing = Verdict(
                "missing_digest",
                "digest",
                digest.account,
                digest.region,
                digest.prev_key,
                reason,
                digest_key=digest.key,
                period_start=start,
                period_end=digest.start,
            )
            return "missing", [valid, missing], (start, digest.start, "missing_digest")
        if previous.verdict != "valid":
            return "skipped", [valid], None  # the predecessor's own verdict says it all
        differs = []
        if digest.prev_signature != previous.signature:
            differs.append("previousDigestSignature")
        if (digest.prev_sha256 or "").lower() != previous.sha256:
            differs.append("previousDigestHashValue")
        if not differs:
            return "linked", [valid], None
        reason = f"{' and '.join(differs)} do not match {previous.key}"
        broken = dataclasses.replace(
            valid, verdict="chain_break", reason=reason, digest_key=previous.key
        )
        return "broken", [broken], None

    def _before(self, digest: _Digest) -> _Digest | None:
        """The latest digest of the same chain that ended before this one began."""
        row = self._db.execute(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE scope=? AND bucket=? AND series=? "  # noqa: S608
            "AND key<>? AND end<=? ORDER BY end DESC LIMIT 1",
            (self._scope, self._bucket, digest.series, digest.key, digest.start + MARGIN),
        ).fetchone()
        return None if row is None else _Digest(*row)

    # -------------------------------------------------------------------------------------
    # Expected files whose time is up

    def due(self, now: float) -> list[str]:
        """Files valid digests name that were not shipped by `grace` after the period."""
        rows = self._rows(
            "SELECT DISTINCT key FROM expected WHERE scope=? AND bucket=? AND state='waiting' "
            "AND due<=? AND mine(account, region, key)",
            now,
        )
        return [str(row[0]) for row in rows]

    def judge_due(self, facts: Mapping[str, str]) -> Found:
        """`facts[key]` is `missing`, a reason it cannot be checked, or absent (not yet)."""
        found = Found()
        for key, fact in facts.items():
            rows = self._rows(
                "SELECT digest_key, account, region, sha256 FROM expected WHERE scope=? "
                "AND bucket=? AND key=? AND state='waiting'",
                key,
            )
            state = "missing" if fact == "missing" else "unverified"
            with self._write() as db:
                db.execute(
                    "UPDATE expected SET state=? WHERE scope=? AND bucket=? AND key=?",
                    (state, self._scope, self._bucket, key),
                )
            for digest_key, account, region, expected in rows:
                if fact == "missing":
                    found.verdicts.append(
                        Verdict(
                            "missing",
                            "log_file",
                            str(account),
                            str(region),
                            key,
                            "named by the digest; not in the bucket",
                            digest_key=str(digest_key),
                            expected_sha256=str(expected),
                        )
                    )
                else:
                    found.unverified[fact] += 1
        return found

    # -------------------------------------------------------------------------------------
    # Shipped files no digest named

    def judge_files(self, now: float, hold: Iterable[tuple[str, str]] = ()) -> Found:
        """Files waiting for a digest: `unlisted` once valid digests cover their time and
        `grace` has passed; unchecked when their time is a gap, or when no digest came long
        after it (streams in `hold` had digests not read yet: they wait)."""
        held = set(hold)
        found = Found()
        rows = self._rows(
            "SELECT key, account, region, kind, lo, hi, sha256 FROM files "
            "WHERE scope=? AND bucket=? AND judged=0 AND mine(account, region, key) "
            "ORDER BY account, region, lo"
        )
        by_stream: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for row in rows:
            by_stream.setdefault((str(row[1]), str(row[2])), []).append(row)
        for (account, region), files in by_stream.items():
            lo = min(float(f[4]) for f in files)
            hi = max(float(f[5]) for f in files)
            covers = self._intervals(account, region, lo, hi)
            gaps = self._gaps(account, region, lo, hi)
            for key, _, _, kind, f_lo, f_hi, sha in files:
                outcome = judge_file(
                    str(key),
                    account,
                    region,
                    str(kind),
                    float(f_lo),
                    float(f_hi),
                    None if sha is None else str(sha),
                    covers,
                    gaps,
                    now,
                    self._grace,
                    (account, region) in held,
                )
                if outcome is None:
                    continue
                with self._write() as db:
                    db.execute(
                        "UPDATE files SET judged=1 WHERE scope=? AND bucket=? AND key=?",
                        (self._scope, self._bucket, key),
                    )
                if isinstance(outcome, Verdict):
                    found.verdicts.append(outcome)
                else:
                    found.unverified[outcome] += 1
        return found

    def _intervals(
        self, account: str, region: str, lo: float, hi: float
    ) -> list[tuple[float, float, str]]:
        rows = self._rows(
            "SELECT start, end, key FROM digests WHERE scope=? AND bucket=? AND account=? "
            "AND region=? AND verdict='valid' AND end>=? AND start<=? "
            "AND mine(account, region, key) ORDER BY start",
            account,
            region,
            lo - HOUR,
            hi + HOUR,
        )
        return [(float(s), float(e), str(k)) for s, e, k in rows]

    def _gaps(
        self, account: str, region: str, lo: float, hi: float
    ) -> list[tuple[float, float, str]]:
        rows = self._rows(
            "SELECT start, end, reason FROM gaps WHERE scope=? AND bucket=? AND account=? "
            "AND region=? AND end>=? AND start<=?",
            account,
            region,
            lo,
            hi,
        )
        return [(float(s), float(e), str(r)) for s, e, r in rows]

    def evict(self, max_files: int) -> Found:
        """Past `max_files` waiting, the oldest are given up on (`evicted`)."""
        over = self.waiting_files() - max_files
        if over <= 0:
            return Found()
        with self._write() as db:
            db.execute(
                "UPDATE files SET judged=1 WHERE scope=? AND bucket=? AND key IN (SELECT key "
                "FROM files WHERE scope=? AND bucket=? AND judged=0 AND mine(account, region, key) "
                "ORDER BY lo LIMIT ?)",
                (self._scope, self._bucket, self._scope, self._bucket, over),
            )
        return Found(unverified=Counter({"evicted": over}))

    # -------------------------------------------------------------------------------------
    # Pruning

    def prune(self, before: float, judged_before: float) -> None:
        """What no verdict can need any more: digests, expectations and gaps of periods that
        ended before `before` (each chain's latest digest stays, for the next link), and
        files judged, and expectations matched, before `judged_before`."""
        with self._write() as db:
            db.execute(
                "DELETE FROM files WHERE scope=? AND bucket=? AND judged=1 AND hi<? "
                "AND mine(account, region, key)",
                (self._scope, self._bucket, judged_before),
            )
            db.execute(
                "DELETE FROM expected WHERE scope=? AND bucket=? AND state='matched' AND due<? "
                "AND mine(account, region, key)",
                (self._scope, self._bucket, judged_before),
            )
            db.execute(
                "DELETE FROM digests WHERE scope=? AND bucket=? AND end<? AND chain IS NOT NULL "
                "AND mine(account, region, key) AND end < (SELECT MAX(d.end) FROM digests d "
                "WHERE d.scope=digests.scope AND d.bucket=digests.bucket AND "
                "d.series=digests.series)",
                (self._scope, self._bucket, before),
            )
            db.execute(
                "DELETE FROM expected WHERE scope=? AND bucket=? AND due<? "
                "AND mine(account, region, key)",
                (self._scope, self._bucket, before),
            )
            db.execute(
                "DELETE FROM gaps WHERE scope=? AND bucket=? AND end<? "
                "AND mine(account, region, NULL)",
                (self._scope, self._bucket, before),
            )

    def counts(self) -> dict[str, int]:
        """Rows held, by table (for tests and the settle log line)."""
        return {t: self._count(t) for t in ("files", "digests", "expected", "gaps", "outbox")}
