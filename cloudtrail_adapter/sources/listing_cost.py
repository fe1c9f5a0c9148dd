"""What polling a bucket costs, said where the operator sees it.

AWS bills every S3 request: LIST at `list_price` per 1,000 (S3 Standard: $0.005), GET at a
twelfth of that. A `RequestCounter` on the source's S3 client counts every request sent,
retries included, by kind (`list`, `get`, `head`, `other`); the `ListingPlan` turns each
stream's cadence into calls an hour and dollars a month, and `report` logs it
(`listing_plan`), with a `listing_cost_high` warning above `cost_warning` that names the
cheaper way: S3 event notifications, or the trail's own SNS topic, into an SQS queue.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

import structlog

__all__ = [
    "HOURS_PER_MONTH",
    "REQUEST_KINDS",
    "SQS_PRICE",
    "ListingPlan",
    "RequestCounter",
    "report",
    "sqs_monthly_cost",
]

log = structlog.get_logger("cloudtrail_adapter.sources")

REQUEST_KINDS: Final = ("list", "get", "head", "other")
_KIND_OF: Final = {
    "ListObjectsV2": "list",
    "ListObjects": "list",
    "GetObject": "get",
    "HeadObject": "head",
}
HOURS_PER_MONTH: Final = 730.0
#: SQS standard queues, USD per request (after the free tier): $0.40 per million.
SQS_PRICE: Final = 0.40 / 1e6
#: Files an hour CloudTrail writes to a stream that is busy (one about every 5 minutes),
#: and at most to one that is quiet, for the SQS estimate.
FILES_PER_HOUR_ACTIVE: Final = 12.0
FILES_PER_HOUR_QUIET: Final = 1.0
#: SQS requests per file: its share of a receive, and its delete.
SQS_REQUESTS_PER_FILE: Final = 2.0
#: Empty long polls (20 s) of one consumer, an hour.
SQS_IDLE_RECEIVES_PER_HOUR: Final = 180.0


class RequestCounter:
    """Counts the requests an aiobotocore S3 client sends, by kind; `attach` it once."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter(dict.fromkeys(REQUEST_KINDS, 0))

    def attach(self, client: Any) -> None:
        """Every attempt is a `before-send` event (retries too: AWS bills each)."""
        client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, event_name: str, **_: Any) -> None:
        self.counts[_KIND_OF.get(event_name.rsplit(".", 1)[-1], "other")] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class ListingPlan:
    """This replica's listings at the present cadence, and what they cost."""

    streams: int
    active: int
    list_calls_per_hour: float  # the streams' listings
    discovery_calls_per_hour: float  # discovery, and folders off the layout every pass
    price: float  # USD per 1,000 LIST requests

    @property
    def calls_per_hour(self) -> float:
        return self.list_calls_per_hour + self.discovery_calls_per_hour

    @property
    def monthly_cost(self) -> float:
        return self.calls_per_hour * HOURS_PER_MONTH * self.price / 1000

    def files_per_hour(self) -> float:
        """About as many files as CloudTrail writes to these streams, at most."""
        quiet = self.streams - self.active
        return self.active * FILES_PER_HOUR_ACTIVE + quiet * FILES_PER_HOUR_QUIET


def sqs_monthly_cost(files_per_hour: float) -> float:
    """The SQS requests of one consumer reading notifications of that many files."""
    requests = files_per_hour * SQS_REQUESTS_PER_FILE + SQS_IDLE_RECEIVES_PER_HOUR
    return requests * HOURS_PER_MONTH * SQS_PRICE


def report(plan: ListingPlan, *, bucket: str, shard: str | None, threshold: float) -> None:
    """The `listing_plan` line, and the warning when the plan costs more than `threshold`
    dollars a month (0: never)."""
    cost = round(plan.monthly_cost, 2)
    log.info(
        "listing_plan",
        bucket=bucket,
        shard=shard,
        streams=plan.streams,
        active=plan.active,
        quiet=plan.streams - plan.active,
        list_calls_per_hour=round(plan.calls_per_hour),
        discovery_calls_per_hour=round(plan.discovery_calls_per_hour),
        list_price_per_1000=plan.price,
        monthly_cost_usd=cost,
    )
    if threshold and plan.monthly_cost > threshold:
        sqs = round(sqs_monthly_cost(plan.files_per_hour()), 2)
        log.warning(
            "listing_cost_high",
            bucket=bucket,
            shard=shard,
            monthly_cost_usd=cost,
            cost_warning=threshold,
            sqs_monthly_cost_usd=sqs,
            action=(
                f"S3 event notifications (or the trail's own SNS topic) into an SQS queue, "
                f"read with an `sqs:` document, would cost about ${sqs:,.2f} a month in SQS "
                f"requests instead of ${cost:,.2f} in LIST requests (README, 'Scaling')"
            ),
        )
