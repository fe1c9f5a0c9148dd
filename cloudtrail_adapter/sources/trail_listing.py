"""What a CloudTrail bucket holds, for as few ListObjectsV2 calls as its contents allow.

*Discovery* finds the streams (`AWSLogs/[o-ORG/]ACCOUNT/KIND/REGION/`) with one delimiter
listing per folder on the way down: the prefix (one or two levels above `AWSLogs/`, to find
what lies beside it), `AWSLogs/`, each organisation, then per account its kinds and per kind
its regions: 2 + orgs + accounts x (1 + kinds) with an empty prefix. A stream's *plan*
names the day folders one listing of it covers. Where its first day is known (a cursor, a
window's start) the plan is a *span*, listed in one ListObjectsV2 sequence from that day's
folder on (`StartAfter`), a call per 1,000 keys however many days it covers; where it is
not (a stream listed for the first time, with no window), the `YYYY/`, `MM/` and `DD/`
folders that exist are walked, so a sparse ten-year stream costs what it holds.

Nothing under the prefix vanishes: what does not fit the layout on the way down (an account
folder that is not 12 digits, `2024/1/`, a stray key at any level) is kept in `OffLayout` to
be listed whole and shipped, and what the configuration leaves out (other accounts and
regions, digests, other services' folders) is named in `passed_over` with its reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from cloudtrail_adapter.sources.polling import Listed
from cloudtrail_adapter.sources.trail_layout import (
    DIGEST_FOLDER,
    LOG_FOLDER,
    Stream,
    day_of,
    days,
    is_account,
    is_org,
    logs_root,
)

__all__ = ["Layout", "Level", "OffLayout", "StreamPlan", "discover", "plan_stream"]


@dataclass(frozen=True, slots=True)
class Level:
    """One delimiter listing: the folders (whole prefixes, ending in `/`) and the keys
    right under a prefix."""

    folders: list[str]
    keys: list[Listed]


LevelLister = Callable[[str], Awaitable[Level]]
Wanted = Callable[[str], bool]


@dataclass
class OffLayout:
    """What does not fit the layout: folders to list whole, keys to offer as found."""

    folders: list[str] = field(default_factory=list)
    keys: list[Listed] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.folders or self.keys)

    def where(self) -> list[str]:
        return self.folders + [k.key for k in self.keys]


@dataclass
class Layout:
    streams: list[Stream] = field(default_factory=list)
    off: OffLayout = field(default_factory=OffLayout)
    #: reason -> folders that are not listed: `account_not_selected`, `region_not_selected`,
    #: `digest`, `not_cloudtrail` (another service's logs, e.g. `elasticloadbalancing/`),
    #: `other_replica` (another replica's share, with `shard`)
    passed_over: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class StreamPlan:
    stream: Stream
    days: list[date]
    off: OffLayout
    walked: bool  # found by the folders that exist (False: a span, listed in one sequence)
    resumed: bool  # the stream had a cursor

    @property
    def first(self) -> date | None:
        return self.days[0] if self.days else None


class _Walk:
    """Discovery's bookkeeping: the part of the tree under the configured prefix."""

    def __init__(self, prefix: str) -> None:
        self.root, self.inside = logs_root(prefix)
        self.found = Layout()

    def fits(self, folder: str) -> bool:
        """On the way to the prefix, or under it."""
        return folder.startswith(self.inside) or self.inside.startswith(folder)

    def off(self, folder: str) -> None:
        if self.fits(folder):  # a folder above the prefix is listed from the prefix down
            self.found.off.folders.append(max(folder, self.inside, key=len))

    def loose(self, level: Level) -> None:
        self.found.off.keys += [k for k in level.keys if k.key.startswith(self.inside)]

    def passed(self, reason: str, folder: str) -> None:
        self.found.passed_over.setdefault(reason, []).append(folder)


async def discover(
    level: LevelLister,
    prefix: str,
    account_wanted: Wanted,
    region_wanted: Wanted,
    *,
    digests: bool = False,
    holds: Callable[[str, str], bool] = lambda account, region: True,
) -> Layout | None:
    """The streams under `prefix`, or None where there is no `AWSLogs/` under it or the
    prefix reaches inside one stream (the prefix is then listed whole). Digest folders are
    streams too with `digests` (the integrity check reads them), else passed over. `holds`
    (account, region): whether this replica's shard takes the stream."""
    walk = _Walk(prefix)
    if not walk.inside and not await _down_to_root(level, prefix, walk):
        return None
    top = await level(walk.root)
    if not top.folders and not top.keys:
        return None
    walk.loose(top)
    accounts: list[str] = []
    for folder in filter(walk.fits, top.folders):
        name = folder[len(walk.root) : -1]
        if is_org(name):
            org = await level(folder)
            walk.loose(org)
            for sub in filter(walk.fits, org.folders):
                (accounts.append if is_account(sub[len(folder) : -1]) else walk.off)(sub)
        elif is_account(name):
            accounts.append(folder)
        else:
            walk.off(folder)
    for folder in accounts:
        wanted = _Wanted(account_wanted, region_wanted, holds)
        await _account(level, folder, walk, wanted, digests)
    if any(len(walk.inside) > len(s.prefix) for s in walk.found.streams):
        return None
    return walk.found


async def _down_to_root(level: LevelLister, prefix: str, walk: _Walk) -> bool:
    """From a prefix above `AWSLogs/` to it: whatever else is under the prefix is off the
    layout. False when the prefix holds no `AWSLogs/`."""
    here = prefix
    while here != walk.root:
        found = await level(here)
        walk.found.off.keys += found.keys
        below = [f for f in found.folders if walk.root.startswith(f)]
        walk.found.off.folders += [f for f in found.folders if f not in below]
        if not below:
            return False
        here = below[0]
    return True


@dataclass(frozen=True)
class _Wanted:
    account: Wanted
    region: Wanted
    holds: Callable[[str, str], bool]


async def _account(
    level: LevelLister, folder: str, walk: _Walk, wanted: _Wanted, digests: bool
) -> None:
    account = folder.rsplit("/", 2)[-2]
    if not wanted.account(account):
        walk.passed("account_not_selected", folder)
        return
    kinds = await level(folder)
    walk.loose(kinds)
    for kind_folder in filter(walk.fits, kinds.folders):
        kind = kind_folder[len(folder) : -1]
        if kind == DIGEST_FOLDER and not digests:
            walk.passed("digest", kind_folder)
        elif not kind.startswith(LOG_FOLDER):
            walk.passed("not_cloudtrail", kind_folder)
        else:
            regions = await level(kind_folder)
            walk.loose(regions)
            for sub in filter(walk.fits, regions.folders):
                region = sub[len(kind_folder) : -1]
                if not wanted.region(region):
                    walk.passed("region_not_selected", sub)
                elif not wanted.holds(account, region):
                    walk.passed("other_replica", sub)
                else:
                    walk.found.streams.append(Stream(sub, account, kind, region))


async def plan_stream(
    level: LevelLister,
    stream: Stream,
    first: date | None,
    last: date,
    *,
    resumed: bool,
) -> StreamPlan:
    """The day folders of `stream` from `first` to `last`: a span of the calendar's days,
    or where `first` is None (its beginning), the folders that exist, walked."""
    if first is not None:
        return StreamPlan(stream, list(days(first, last)), OffLayout(), False, resumed)
    plan = StreamPlan(stream, [], OffLayout(), True, resumed)
    await _walk_dates(level, stream.prefix, (), first or date.min, last, plan)
    return plan


async def _walk_dates(
    level: LevelLister, folder: str, parts: tuple[str, ...], lo: date, hi: date, plan: StreamPlan
) -> None:
    """One level of `YYYY/MM/DD/` under a stream, descending only into periods that
    overlap `lo`..`hi`."""
    found = await level(folder)
    plan.off.keys += found.keys
    for sub in sorted(found.folders):
        named = (*parts, sub[len(folder) : -1])
        start = day_of(named)
        if start is None:
            plan.off.folders.append(sub)
        elif start <= hi and _period_end(named, start) >= lo:
            if len(named) == 3:
                plan.days.append(start)
            else:
                await _walk_dates(level, sub, named, lo, hi, plan)


def _period_end(parts: tuple[str, ...], start: date) -> date:
    if len(parts) == 1:
        return date(start.year, 12, 31)
    if len(parts) == 2:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return start
