"""The integrity database's tables (ledger.py reads and writes them)."""

from __future__ import annotations

from typing import Final

TABLES: Final = """
CREATE TABLE IF NOT EXISTS files (
    scope   TEXT NOT NULL,
    bucket  TEXT NOT NULL,
    key     TEXT NOT NULL,
    account TEXT NOT NULL,
    region  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    lo      REAL NOT NULL,
    hi      REAL NOT NULL,
    sha256  TEXT,
    note    TEXT NOT NULL DEFAULT '',
    judged  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_time ON files (scope, bucket, judged, lo);
CREATE TABLE IF NOT EXISTS digests (
    scope          TEXT NOT NULL,
    bucket         TEXT NOT NULL,
    key            TEXT NOT NULL,
    series         TEXT NOT NULL,
    account        TEXT NOT NULL,
    region         TEXT NOT NULL,
    start          REAL NOT NULL,
    end            REAL NOT NULL,
    verdict        TEXT NOT NULL,
    signature      TEXT,
    sha256         TEXT,
    prev_bucket    TEXT,
    prev_key       TEXT,
    prev_signature TEXT,
    prev_sha256    TEXT,
    chain          TEXT,
    PRIMARY KEY (scope, bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS digests_by_series ON digests (scope, bucket, series, end);
CREATE INDEX IF NOT EXISTS digests_by_stream ON digests (scope, bucket, account, region, end);
CREATE TABLE IF NOT EXISTS expected (
    scope      TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    digest_key TEXT NOT NULL,
    account    TEXT NOT NULL,
    region     TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    due        REAL NOT NULL,
    state      TEXT NOT NULL DEFAULT 'waiting',
    PRIMARY KEY (scope, bucket, key, digest_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expected_by_due ON expected (scope, bucket, state, due);
CREATE TABLE IF NOT EXISTS gaps (
    scope   TEXT NOT NULL,
    bucket  TEXT NOT NULL,
    account TEXT NOT NULL,
    region  TEXT NOT NULL,
    start   REAL NOT NULL,
    end     REAL NOT NULL,
    reason  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_by_stream ON gaps (scope, bucket, account, region, end);
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    scope   TEXT NOT NULL,
    bucket  TEXT NOT NULL,
    account TEXT NOT NULL,
    region  TEXT NOT NULL,
    event   BLOB NOT NULL
);
"""
