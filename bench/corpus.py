"""The bench corpus: one seeded organisation trail whose file sizes span what real trails
hold, from a few records to 50,000 (org_trail draws records per file uniformly from a
range, so the corpus is three trails of different file sizes in one bucket).

Generating records is slow (pure Python, about 15,000 a second), so a corpus is kept in
`bench/.cache/` under its seed and scale, and generated only once.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

from cloudtrail_adapter.emulator.corpus import CorpusFile, org_trail

CACHE = Path(__file__).resolve().parent / ".cache"
FORMAT = 1  # bump when the generator changes what a seed yields


@dataclass(frozen=True)
class Tier:
    """`accounts` x `regions` x `days` x `files_per_day` files of `records` (low, high)."""

    accounts: int
    regions: int
    days: int
    files_per_day: int
    records: tuple[int, int]


#: At scale 1: ~430 files, ~300,000 records, ~530 MB of JSON (~85 MB gzip).
TIERS = (
    Tier(accounts=4, regions=4, days=2, files_per_day=12, records=(1, 200)),  # most files
    Tier(accounts=2, regions=2, days=2, files_per_day=6, records=(500, 5000)),
    Tier(accounts=1, regions=1, days=1, files_per_day=3, records=(40_000, 50_000)),
)


def bench_corpus(seed: int = 42, scale: float = 1.0) -> list[CorpusFile]:
    """The log files (no digests) of the corpus for `seed` at `scale` (file counts scale)."""
    path = CACHE / f"corpus-v{FORMAT}-{seed}-{scale:g}.pickle"
    if path.exists():
        files: list[CorpusFile] = pickle.loads(path.read_bytes())  # noqa: S301 (our own cache)
        return files
    files = []
    for index, tier in enumerate(TIERS):
        files += org_trail(
            seed + index,
            accounts=tier.accounts,
            regions=tier.regions,
            days=tier.days,
            files_per_day=max(1, round(tier.files_per_day * scale)),
            records_per_file=tier.records,
            digests=False,
        )
    CACHE.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(files, protocol=pickle.HIGHEST_PROTOCOL))
    partial.replace(path)
    return files
