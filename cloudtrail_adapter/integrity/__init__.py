"""Proving the logs are AWS's: CloudTrail's digest files checked while the logs ship.

`digests` reads and checks one digest (pure); `keys` finds CloudTrail's public keys
(`ListPublicKeys`); `ledger` keeps what a verdict still waits for (SQLite) and decides
verdicts; `checker` runs it beside an S3 source: digests fetched and checked in the
background, log files' hashes taken from the worker processes that already decompressed
them, verdicts logged, counted and (with `report: limacharlie`) sent as events.
"""
