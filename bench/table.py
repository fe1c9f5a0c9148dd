"""One row of `make bench`'s table, and the table itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """A measured run: `records` of `raw_bytes` (uncompressed) in `seconds`.

    `peak_rss_mb` is the peak resident memory of whatever the row measures (the daemon's
    processes, the naive script), None when the row is not a program of ours; `cpu_seconds`
    their user + system CPU, which a shared machine cannot hide as it hides speed.
    `note` holds what only that row has (latencies, a share of a ceiling).
    """

    name: str
    records: int
    raw_bytes: int
    seconds: float
    peak_rss_mb: float | None = None
    note: str = ""
    cpu_seconds: float | None = None  # user + system of the program's processes

    @property
    def cpu_us_per_record(self) -> float | None:
        if self.cpu_seconds is None or not self.records:
            return None
        return self.cpu_seconds / self.records * 1e6

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.raw_bytes / self.seconds / 1e6


HEADER = (
    f"{'row':<50}{'records/s':>12}{'MB/s':>9}{'seconds':>9}{'CPU us/rec':>11}{'RSS MB':>8}  note"
)


def render(rows: Sequence[Row]) -> str:
    lines = [HEADER]
    for row in rows:
        rss = "-" if row.peak_rss_mb is None else f"{row.peak_rss_mb:.0f}"
        cpu = row.cpu_us_per_record
        per = "-" if cpu is None else f"{cpu:.2f}"
        lines.append(
            f"{row.name:<50}{row.rate:>12,.0f}{row.mb_per_s:>9.1f}{row.seconds:>9.2f}"
            f"{per:>11}{rss:>8}  {row.note}".rstrip()
        )
    return "\n".join(lines)
