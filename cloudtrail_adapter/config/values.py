"""The typed configuration the daemon codes against, and every key's one declaration.

Each field that a document can set is declared here once (`Setting.field`): its kind and
range, its default (the field's), its one-line doc, and whether LimaCharlie's own adapter
reads it (`lc=True`). The parser (`schema.py`) and the README's key table (`reference.py`)
are both made from these declarations. Rules across keys are each class's `problems`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from cloudtrail_adapter.config.keys import (
    Accounts,
    Boolean,
    Choice,
    Directory,
    Dollars,
    Globs,
    Integer,
    Invalid,
    Nested,
    PassList,
    PassMapping,
    Seconds,
    SecretText,
    Setting,
    Text,
    Time,
    Url,
    Uuid,
    matching,
)
from cloudtrail_adapter.config.reader import is_uuid, url_problem
from cloudtrail_adapter.config.shard import Shard, ShardKind
from cloudtrail_adapter.secret import Secret

DEFAULT_API_URL = "https://api.limacharlie.io"
#: Command-line options' defaults (cli.py), here so that the daemon and the monitor share them.
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds in-flight work may take after SIGTERM
DEFAULT_UNREADY_AFTER = 60.0  # seconds LimaCharlie may be unreachable before /readyz says so

MAX_PARALLEL = 256
MAX_INTERVAL = 86400.0
HTTP = ("http", "https")
WS = ("ws", "wss")

_INSTALLATION_KEY_HINT = (
    "not a UUID: adapters authenticate with the installation key's ID (a UUID, shown in the "
    "web app's 'Adapter Key' column), not the full installation key; LimaCharlie will likely "
    "refuse this one"
)


def _not_uuid_hint(text: str) -> str | None:
    return None if is_uuid(text) else _INSTALLATION_KEY_HINT


# --------------------------------------------------------------------------------------------
# LimaCharlie destinations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    oid: str = Setting(
        Uuid(
            "expected the organization ID, a UUID (the value is not shown: it may be a "
            "swapped installation key)"
        ),
        "organisation ID",
        lc=True,
    ).required()
    installation_key: Secret = Setting(
        SecretText(warn=_not_uuid_hint),
        "the installation key's ID (a UUID, the web app's 'Adapter Key' column)",
        lc=True,
    ).required()


def _proxy_url_problem(text: str) -> str | None:
    problem = url_problem(text, ("http",))
    if problem:
        return problem
    if urllib.parse.urlsplit(text).username is not None:
        # As LimaCharlie's client says; and a URL is too often logged to carry a password.
        return "must not contain credentials: give them in proxy.username and proxy.password"
    return None


@dataclass(frozen=True)
class ProxyOptions:
    """An HTTP proxy LimaCharlie traffic goes through: CONNECT for TLS, basic auth.

    The timeouts default to LimaCharlie's client's. `read_write_timeout` bounds the CONNECT
    exchange; aiohttp runs it inside the handshake, so `handshake_timeout` bounds both.
    """

    url: str = Setting(
        Text(_proxy_url_problem, what="`http://` URL"),
        "the proxy, `http://HOST:PORT`",
        lc=True,
    ).required()
    username: str | None = Setting(Text(), "basic-auth user, with `password`", lc=True).field()
    password: Secret | None = Setting(
        SecretText(), "basic-auth password, with `username`", lc=True
    ).field()
    handshake_timeout: float = Setting(
        Seconds(0, 3600, low_allowed=False),
        "seconds to reach LimaCharlie through the proxy: CONNECT, TLS and the upgrade",
        lc=True,
    ).field(45.0)
    connect_timeout: float = Setting(
        Seconds(0, 3600, low_allowed=False), "seconds to open the connection to the proxy", lc=True
    ).field(10.0)
    read_write_timeout: float = Setting(
        Seconds(0, 3600, low_allowed=False),
        "seconds the proxy may take to answer CONNECT (within `handshake_timeout`)",
        lc=True,
    ).field(30.0)

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if ("username" in given) != ("password" in given):
            set_, unset = (
                ("username", "password") if "username" in given else ("password", "username")
            )
            yield Invalid(
                unset,
                f"proxy authentication needs both username and password; {set_} is set",
                at=set_,
            )


_PROXY = Setting(
    Nested(ProxyOptions),
    "send LimaCharlie traffic through this HTTP proxy (else `$HTTPS_PROXY`/`$HTTP_PROXY`, "
    "minus `$NO_PROXY`)",
    lc=True,
)


@dataclass(frozen=True)
class ClientOptions:
    """LimaCharlie's `client_options`: who we are and where USP data goes."""

    identity: Identity = Setting(Nested(Identity), "who we are to LimaCharlie", lc=True).required()
    hostname: str = Setting(
        Text(),
        "sensor hostname shown in LimaCharlie",
        lc=True,
        shown="the machine's hostname",
        fallback=socket.gethostname,
    ).derived()
    platform: str = Setting(Text(), "LimaCharlie platform of the events", lc=True).field("aws")
    sensor_seed_key: str = Setting(
        Text(), "with the OID, decides the sensor ID; keep it stable", lc=True
    ).field("")
    dest_url: str | None = Setting(
        Url(WS),
        "USP endpoint (`wss://…/usp`); when unset, asked of `api_url`",
        lc=True,
        shown="discovered",
    ).field()
    api_url: str = Setting(Url(HTTP), "where the USP endpoint is discovered").field(DEFAULT_API_URL)
    mapping: dict[str, Any] | None = Setting(
        PassMapping(), "passed through in the USP handshake", lc=True
    ).field(compare=False)
    mappings: list[Any] | None = Setting(
        PassList(), "passed through in the USP handshake", lc=True
    ).field(compare=False)
    indexing: list[Any] | None = Setting(
        PassList(), "passed through in the USP handshake", lc=True
    ).field(compare=False)
    proxy: ProxyOptions | None = _PROXY.field()
    architecture: str | None = Setting(
        Text(),
        "USP handshake's architecture",
        lc=True,
        unused="LimaCharlie's adapter replaces it with usp_adapter too, and so do we",
        shown="`usp_adapter`",
    ).field()
    is_compressed: bool | None = Setting(
        Boolean(),
        "whether data frames are compressed",
        lc=True,
        unused="batches always travel gzip-compressed (the p field), whatever it says",
        shown="(always compressed)",
    ).field()
    buffer_options: dict[str, Any] | None = Setting(
        PassMapping(),
        "LimaCharlie's client's ack buffer",
        lc=True,
        unused="it holds no setting LimaCharlie's YAML can set; delivery.max_buffered_bytes and "
        "the USP window bound ours",
    ).field(compare=False)


@dataclass(frozen=True)
class WebhookOptions:
    """Our webhook destination: POST gzip NDJSON to a LimaCharlie webhook adapter.

    `url` is the hook's address without the secret (https://<hooks-domain>/<OID>/<HOOK_NAME>);
    the secret travels in the `lc-secret` header so it never appears in a URL or a log.
    """

    url: str = Setting(
        Url(HTTP), "`https://<hooks-domain>/<OID>/<HOOK_NAME>`, without the secret"
    ).required()
    secret: Secret = Setting(SecretText(), "sent in the `lc-secret` header").required()
    max_in_flight: int = Setting(
        Integer(1, MAX_PARALLEL), "batches posted but not yet acknowledged"
    ).field(4)
    timeout: float = Setting(Seconds(0, 3600, low_allowed=False), "seconds per POST").field(30.0)
    proxy: ProxyOptions | None = _PROXY.field()

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if _url_holds(self.url, self.secret.reveal()):
            yield Invalid(
                "url",
                "contains the webhook secret; give the hook's URL without it "
                "(the secret travels in the lc-secret header)",
            )


def _url_holds(url: str, secret: str) -> bool:
    """Whether the secret is one of the URL's path segments or query values."""
    parts = urllib.parse.urlsplit(url)
    values = [v for _, v in urllib.parse.parse_qsl(parts.query)]
    return secret in parts.path.split("/") or secret in values


# --------------------------------------------------------------------------------------------
# What happens to records on the way
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOptions:
    """How records are packed into batches before either transport."""

    batch_max_records: int = Setting(Integer(1, 100_000), "records per batch").field(5000)
    batch_max_bytes: int = Setting(
        Integer(1024, 64 << 20, unit="bytes"), "uncompressed bytes per batch"
    ).field(8 << 20)
    batch_linger: float = Setting(
        Seconds(0, 60), "seconds a part-filled batch waits for more records"
    ).field(0.5)
    stream_threshold: int = Setting(
        Integer(1024, 1 << 40, unit="bytes"),
        "objects larger than this (compressed) are read in 4 MiB ranges and decoded as a "
        "stream, in bounded memory",
    ).field(32 << 20)
    max_buffered_bytes: int = Setting(
        Integer(1 << 20, 1 << 34, unit="bytes"),
        "objects being decoded and compressed records waiting for the batcher; with the USP "
        "window and the batch size, it bounds memory however slow LimaCharlie is",
    ).field(64 << 20)
    max_inflated_size: int = Setting(
        Integer(1 << 20, 1 << 44, unit="bytes"),
        "objects whose text (decompressed) is larger than this are set aside at once "
        "(`inflated_too_large`) and never retried. CloudTrail writes files of at most tens "
        "of MB of text, so no real one comes near the default, while a decompression bomb "
        "(a few MB of gzip that inflate to gigabytes) costs at most a few seconds of one "
        "core before it is stopped; memory is bounded whatever this is",
    ).field(1 << 30)


@dataclass(frozen=True)
class DedupOptions:
    """eventID de-duplication (dedup.py): on unless switched off; `window` in seconds of
    event time."""

    enabled: bool = Setting(
        Boolean(),
        "drop records whose `eventID` (with `recipientAccountId`) LimaCharlie already "
        "acknowledged or is being sent; `false` ships every record",
    ).field(True)
    window: float = Setting(
        Seconds(60, 7 * 86400), "seconds of event time an eventID is remembered"
    ).field(3600.0)
    max_keys: int = Setting(
        Integer(1000, 100_000_000), "eventIDs remembered at most, about 100 bytes of memory each"
    ).field(1_000_000)


#: The CloudTrail field each string filter looks at, by the filter name's suffix.
FIELD_OF: Final = {
    "event_sources": "eventSource",
    "event_names": "eventName",
    "regions": "awsRegion",
    "accounts": "recipientAccountId",
    "categories": "eventCategory",
}
ErrorsMode = Literal["keep", "drop", "only"]


def _glob_filter(name: str) -> Any:
    """A string filter's key: shell-style globs, matched case sensitively (as CloudTrail's own
    values are) against the field its name's suffix says."""
    include, _, what = name.partition("_")
    field_name = FIELD_OF[what]
    if include == "include":
        doc = f"ship only records whose `{field_name}` matches one of these globs"
    else:
        doc = f"drop records whose `{field_name}` matches one of these globs"
    return Setting(Globs(), doc).field(())


@dataclass(frozen=True)
class RecordFilter:
    """Which records to ship (README, "Shipping less: filters"). A record is kept when it
    passes every filter that is set; a dropped one is counted under the first filter that
    refused it, in field order. The workers apply it as `decoding.filters.Matcher`."""

    include_event_sources: tuple[str, ...] = _glob_filter("include_event_sources")
    exclude_event_sources: tuple[str, ...] = _glob_filter("exclude_event_sources")
    include_event_names: tuple[str, ...] = _glob_filter("include_event_names")
    exclude_event_names: tuple[str, ...] = _glob_filter("exclude_event_names")
    include_regions: tuple[str, ...] = _glob_filter("include_regions")
    exclude_regions: tuple[str, ...] = _glob_filter("exclude_regions")
    include_accounts: tuple[str, ...] = _glob_filter("include_accounts")
    exclude_accounts: tuple[str, ...] = _glob_filter("exclude_accounts")
    include_categories: tuple[str, ...] = _glob_filter("include_categories")
    exclude_categories: tuple[str, ...] = _glob_filter("exclude_categories")
    read_only: bool | None = Setting(
        Boolean(),
        "`true`: only read-only calls; `false`: only calls that change something (a "
        "record without `readOnly` counts as a change)",
        shown="(both)",
    ).field()
    errors: ErrorsMode = Setting(
        Choice(("keep", "drop", "only")),
        "`drop` the calls that failed (`errorCode` set), or keep `only` them",
    ).field("keep")

    @property
    def active(self) -> bool:
        return self != RecordFilter()

    def globs(self) -> tuple[tuple[str, str, bool, tuple[str, ...]], ...]:
        """(filter name, record field, include?, globs) of each string filter that is set."""
        found = []
        for name in FILTERS:
            globs = getattr(self, name)
            if name in ("read_only", "errors") or not globs:
                continue
            mode, _, what = name.partition("_")
            found.append((name, FIELD_OF[what], mode == "include", globs))
        return tuple(found)


#: Every filter key, in the order a dropped record is attributed to one.
FILTERS: Final = tuple(f.name for f in dataclasses.fields(RecordFilter))


# --------------------------------------------------------------------------------------------
# AWS
# --------------------------------------------------------------------------------------------

_ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}"
_ROLE_KEYS = ("external_id", "role_session_name", "role_session_duration")


@dataclass(frozen=True)
class AwsOptions:
    access_key: str | None = Setting(
        Text(), "static access key ID, with `secret_key`", lc=True, shown="AWS credential chain"
    ).field()
    secret_key: Secret | None = Setting(
        SecretText(),
        "static secret access key, with `access_key`",
        lc=True,
        shown="AWS credential chain",
    ).field()
    region: str | None = Setting(
        Text(), "AWS region", lc=True, shown="discovered (s3), from the URL (sqs)"
    ).field()
    endpoint_url: str | None = Setting(
        Url(HTTP),
        "an S3/SQS-compatible endpoint",
        env="AWS_ENDPOINT_URL",
        shown="`$AWS_ENDPOINT_URL`, else AWS",
    ).field()
    role_arn: str | None = Setting(
        matching(_ROLE_ARN, "an IAM role ARN like arn:aws:iam::123456789012:role/NAME"),
        "an IAM role to assume through STS with the credentials above (or the chain), "
        "refreshed before it expires; e.g. one role per account of an organisation",
    ).field()
    external_id: Secret | None = Setting(
        SecretText(), "the role's external ID, when its trust policy asks for one"
    ).field()
    role_session_name: str = Setting(
        matching(r"[\w+=,.@-]{2,64}", "2 to 64 letters, digits or +=,.@_-"),
        "the session name CloudTrail records for our reads",
    ).field("cloudtrail-adapter")
    role_session_duration: int = Setting(
        Integer(900, 43200, unit="seconds"), "seconds per role session, up to the role's maximum"
    ).field(3600)

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if ("access_key" in given) != ("secret_key" in given):
            set_, unset = (
                ("access_key", "secret_key")
                if "access_key" in given
                else ("secret_key", "access_key")
            )
            yield Invalid(
                unset,
                f"{set_} is set but {unset} is not; set both, or neither to use the AWS "
                "credential chain (environment, profile, instance or task role)",
                at=set_,
            )
        if "role_arn" not in given:
            for key in _ROLE_KEYS:
                if key in given:
                    yield Invalid(key, "is only used with role_arn, which is not set")


# --------------------------------------------------------------------------------------------
# Sources; keys several sources share are declared once
# --------------------------------------------------------------------------------------------

PARALLEL_FETCH: Setting[int] = Setting(
    Integer(1, MAX_PARALLEL), "objects fetched and decoded at once", lc=True
)
SINGLE_LOAD: Setting[bool] = Setting(
    Boolean(), "one pass, exit 0 once everything is acknowledged", lc=True
)
POLL_INTERVAL: Setting[float] = Setting(
    Seconds(0, MAX_INTERVAL, low_allowed=False), "seconds between listings"
)
QUARANTINE_AFTER: Setting[int] = Setting(
    Integer(1, 1000), "failed attempts (with backoff) before an object is quarantined"
)
RETRY_BACKOFF: Setting[float] = Setting(
    Seconds(0, MAX_INTERVAL, low_allowed=False),
    "seconds before the first retry of a failed object; doubles per attempt, at most 1 h",
)
MAX_OBJECT_SIZE: Setting[int] = Setting(
    Integer(1024, 1 << 40, unit="bytes"),
    "objects larger than this (compressed) are quarantined unread",
)


def _bucket_problem(bucket: str) -> str | None:
    if "/" in bucket or any(c.isspace() for c in bucket):
        return f"expected a bucket name, got {bucket!r} (put a key prefix in prefix, not here)"
    return None


_LAYOUT_ONLY = (
    "accounts",
    "regions",
    "start_time",
    "end_time",
    "discovery_interval",
    "quiet_interval",
    "shard",
)
#: S3 Standard's price of LIST requests (US East, USD per 1,000), for the listing plan.
LIST_PRICE: Final = 0.005

#: `expected_bucket_owner: none`: send no expected owner (an SQS source's default is one).
NO_OWNER = "none"
_ACCOUNT = re.compile(r"\d{12}")


def _owner_problem(text: str) -> str | None:
    if text == NO_OWNER or _ACCOUNT.fullmatch(text):
        return None
    return f"expected a 12-digit account ID, or {NO_OWNER}"


EXPECTED_BUCKET_OWNER: Setting[str] = Setting(
    Text(_owner_problem, what=f"12-digit account ID, or `{NO_OWNER}`"),
    "the account that must own every bucket read: sent with each GetObject and HeadObject "
    "(`x-amz-expected-bucket-owner`), so S3 refuses to read a bucket another account owns; "
    f"`{NO_OWNER}` sends none",
    shown="s3: none; sqs, sqs-files: the queue's account, from `queue_url`",
)


@dataclass(frozen=True)
class IntegrityOptions:
    """CloudTrail's digest files, checked while the logs ship (README, "Proving the logs
    are AWS's"). Off unless `verify: true`."""

    verify: bool = Setting(
        Boolean(),
        "check CloudTrail's digest files while shipping: each digest's signature and chain, "
        "each log file's SHA-256; report files tampered with, deleted or added (needs "
        "`cloudtrail:ListPublicKeys`)",
    ).field(False)
    report: Literal["log", "limacharlie"] = Setting(
        Choice(("log", "limacharlie")),
        "`log`: each failed check is a warning line and a metric; `limacharlie`: also one "
        "`cloudtrail_integrity` event to the same sensor",
    ).field("log")
    grace: float = Setting(
        Seconds(60, 86400),
        "seconds after a digest's period before a file it names that is not in the bucket "
        "counts as `missing`, and a shipped file no digest names as `unlisted`",
    ).field(900.0)

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if not self.verify:
            for name in ("report", "grace"):
                if name in given:
                    yield Invalid(name, "is only used with verify: true")


@dataclass(frozen=True)
class S3SourceOptions:
    bucket_name: str = Setting(
        Text(_bucket_problem, what="a bucket name"), "the CloudTrail bucket", lc=True
    ).required()
    prefix: str = Setting(Text(), "list only keys under this prefix", lc=True).field("")
    parallel_fetch: int = PARALLEL_FETCH.field(8)
    single_load: bool = SINGLE_LOAD.field(False)
    poll_interval: float = POLL_INTERVAL.field(60.0)
    quiet_interval: float = Setting(
        Seconds(0, MAX_INTERVAL),
        "seconds at most between listings of a stream that has been quiet for long (one "
        "that delivered in the last 10 minutes is listed every `poll_interval`); its next "
        "file waits up to about this plus `poll_interval`",
    ).field(480.0)
    delete_after_ack: bool = Setting(
        Boolean(), "delete an object after LimaCharlie acknowledged all of it"
    ).field(False)
    quarantine_after: int = QUARANTINE_AFTER.field(5)
    retry_backoff: float = RETRY_BACKOFF.field(60.0)
    max_object_size: int = MAX_OBJECT_SIZE.field(1 << 30)
    layout: Literal["auto", "flat"] = Setting(
        Choice(("auto", "flat")),
        "`auto`: where the bucket has CloudTrail's layout under `prefix` "
        "(`AWSLogs/[o-ORG/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/`), list only day folders "
        "(see below); `flat`: list everything under `prefix` every pass",
    ).field("auto")
    accounts: tuple[str, ...] = Setting(
        Accounts(),
        "only these accounts' folders; several daemons can split an organisation's bucket",
        shown="all",
    ).field(())
    regions: tuple[str, ...] = Setting(
        Globs(), "only these regions' folders (`us-*`)", shown="all"
    ).field(())
    start_time: datetime | None = Setting(
        Time(),
        "ship only files from this time on, by the time in their names (UTC unless given); "
        "only those days' folders are listed",
    ).field()
    end_time: datetime | None = Setting(
        Time(), "ship only files before this time, by the time in their names"
    ).field()
    lookback: float = Setting(
        Seconds(0, 90 * 86400),
        "seconds a file may land late: each listing of a stream goes back to the day "
        "folder of this long before its previous listing",
    ).field(86400.0)
    discovery_interval: float = Setting(
        Seconds(0, MAX_INTERVAL),
        "seconds between looks for new accounts, kinds and regions in the layout (0: every "
        "pass); a new account's files are found at most this much later",
    ).field(900.0)
    parallel_list: int = Setting(
        Integer(1, MAX_PARALLEL), "streams (account/kind/region folders) listed at once"
    ).field(8)
    shard: Shard | None = Setting(
        ShardKind(),
        "this replica's share of the streams, of N replicas with the same document "
        '(`"${POD_NAME}/3"`: a StatefulSet pod\'s name ends in its index); README, "Scaling"',
        shown="all streams",
    ).field()
    list_price: float = Setting(
        Dollars(1000.0),
        "USD per 1,000 LIST requests, for the listing plan's monthly estimate "
        "(S3 Standard's list price)",
    ).field(LIST_PRICE)
    cost_warning: float = Setting(
        Dollars(1e9),
        "USD a month of LIST requests above which the listing plan warns and names the "
        "cheaper SQS way (0: never)",
    ).field(50.0)
    integrity: IntegrityOptions = Setting(
        Nested(IntegrityOptions), "checking CloudTrail's digest files"
    ).factory(IntegrityOptions)
    expected_bucket_owner: str | None = EXPECTED_BUCKET_OWNER.field()

    @property
    def bucket_owner(self) -> str | None:
        """The account to send as the bucket's expected owner, if any."""
        given = self.expected_bucket_owner
        return None if given in (None, NO_OWNER) else given

    @property
    def by_layout(self) -> bool:
        """Whether a key only the CloudTrail layout can honour is set."""
        return bool(self.accounts or self.regions or self.start_time or self.end_time or self.shard)

    def wants_account(self, account: str) -> bool:
        return not self.accounts or account in self.accounts

    def wants_region(self, region: str) -> bool:
        return not self.regions or any(fnmatch.fnmatchcase(region, g) for g in self.regions)

    def holds(self, account: str, region: str) -> bool:
        """Whether this replica's `shard` (all of them without one) holds the stream."""
        return self.shard is None or self.shard.holds(account, region)

    def selects(self, account: str, region: str, key: str | None = None) -> bool:
        """Whether this document's accounts, regions, shard and prefix hold a stream (or a
        key of it): the one rule the listing, the source's `will_list` and the integrity
        check's share of a split bucket all follow."""
        return (
            self.wants_account(account)
            and self.wants_region(region)
            and (key is None or key.startswith(self.prefix))
            and self.holds(account, region)
        )

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if self.start_time and self.end_time and self.end_time <= self.start_time:
            yield Invalid("end_time", "must be later than start_time")
        if self.layout == "flat":
            for name in _LAYOUT_ONLY:
                if name in given:
                    yield Invalid(name, "needs layout: auto (the CloudTrail layout)")


def _queue_url_problem(text: str) -> str | None:
    if text.startswith("arn:"):
        return (
            "expected the queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>), "
            "not its ARN"
        )
    return url_problem(text, HTTP)


@dataclass(frozen=True)
class SqsSourceOptions:
    queue_url: str = Setting(
        Text(_queue_url_problem, what="`https://` URL"), "the queue's URL", lc=True
    ).required()
    parallel_fetch: int = PARALLEL_FETCH.field(8)
    single_load: bool = SINGLE_LOAD.field(False)
    wait_time_seconds: int = Setting(Integer(0, 20, unit="seconds"), "long-poll wait").field(20)
    max_messages: int = Setting(Integer(1, 10), "messages per receive").field(10)
    visibility_timeout: int = Setting(
        Integer(1, 43200, unit="seconds"), "seconds a message stays hidden while in work"
    ).field(300)
    max_messages_in_work: int = Setting(
        Integer(1, 10_000),
        "received messages not yet deleted or given up on; receiving waits at this bound",
    ).field(100)
    buckets: tuple[str, ...] = Setting(
        Globs(),
        "the only buckets whose objects are fetched (`org-trail-*`); a message naming any "
        "other is not read, and is left for the queue's dead-letter policy",
        shown="any bucket",
    ).field(())
    expected_bucket_owner: str | None = EXPECTED_BUCKET_OWNER.field()

    @property
    def queue_name(self) -> str:
        """The queue's name, the last part of its URL."""
        return self.queue_url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def queue_account(self) -> str | None:
        """The account in the queue's URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`)."""
        parts = urllib.parse.urlsplit(self.queue_url).path.strip("/").split("/")
        return parts[0] if len(parts) == 2 and _ACCOUNT.fullmatch(parts[0]) else None

    @property
    def bucket_owner(self) -> str | None:
        """The account to send as every bucket's expected owner: the queue's unless the
        document names one, or none."""
        given = self.expected_bucket_owner
        if given is None:
            return self.queue_account
        return None if given == NO_OWNER else given

    def bucket_trusted(self, bucket: str) -> bool:
        """Whether objects of `bucket` may be fetched (`buckets`)."""
        return not self.buckets or any(fnmatch.fnmatchcase(bucket, g) for g in self.buckets)


@dataclass(frozen=True)
class SqsFilesSourceOptions(SqsSourceOptions):
    """LimaCharlie's `sqs-files`: messages name files by paths into their JSON bodies.

    A path is `/`-separated keys; lists on the way are walked, so `Records/s3/object/key`
    finds every record's key. Where the paths find no file, a body that is an S3, SNS or
    EventBridge notification is read as the `sqs` source reads it.
    """

    bucket: str | None = Setting(
        Text(_bucket_problem, what="a bucket name"),
        "the bucket of every message's files (instead of `bucket_path`)",
        lc=True,
    ).field()
    bucket_path: str = Setting(Text(), "where a message body names the bucket", lc=True).field(
        "bucket"
    )
    file_path: str = Setting(Text(), "where a message body names the files", lc=True).field(
        "files/path"
    )
    is_decode_object_key: bool = Setting(
        Boolean(), "URL-decode the keys found (S3 event notifications encode them)", lc=True
    ).field(False)

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if self.bucket is not None and not self.bucket_trusted(self.bucket):
            yield Invalid("bucket", f"{self.bucket!r} is not one of buckets")


@dataclass(frozen=True)
class FileSourceOptions:
    path: Path = Setting(
        Directory(), "a local directory of CloudTrail files (replay, benchmarks)"
    ).required()
    parallel_fetch: int = PARALLEL_FETCH.field(8)
    single_load: bool = SINGLE_LOAD.field(True)
    poll_interval: float = POLL_INTERVAL.field(10.0)
    quarantine_after: int = QUARANTINE_AFTER.field(5)
    retry_backoff: float = RETRY_BACKOFF.field(60.0)
    max_object_size: int = MAX_OBJECT_SIZE.field(1 << 30)


SourceOptions = S3SourceOptions | SqsSourceOptions | FileSourceOptions
SourceKind = Literal["s3", "sqs", "sqs-files", "file"]


# --------------------------------------------------------------------------------------------
# A document
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destinations:
    """The sections every source document may hold beside its own keys."""

    client_options: ClientOptions | None = Setting(
        Nested(ClientOptions), "LimaCharlie USP: who we are and where data goes", lc=True
    ).field()
    webhook: WebhookOptions | None = Setting(
        Nested(WebhookOptions), "a LimaCharlie webhook adapter instead of USP"
    ).field()
    delivery: DeliveryOptions = Setting(Nested(DeliveryOptions), "how records are batched").factory(
        DeliveryOptions
    )
    filter: RecordFilter = Setting(Nested(RecordFilter), "which records to ship").factory(
        RecordFilter
    )
    dedup: DedupOptions = Setting(Nested(DedupOptions), "eventID de-duplication").factory(
        DedupOptions
    )

    def problems(self, given: frozenset[str]) -> Iterator[Invalid]:
        if "client_options" in given and "webhook" in given:
            yield Invalid(
                "webhook",
                "client_options and webhook are both set; a document sends to exactly one "
                "destination (client_options for USP, or webhook)",
            )
        elif "client_options" not in given and "webhook" not in given:
            yield Invalid(
                "client_options",
                "required key is missing: set client_options (LimaCharlie USP) or webhook",
            )


@dataclass(frozen=True)
class CloudOptions:
    """LimaCharlie's `cloud:`: its adapter then fetches its configuration from LimaCharlie."""

    oid: str | None = Setting(Uuid(), "the organisation holding the configuration", lc=True).field()
    conf_guid: str | None = Setting(
        Text(), "the configuration's ID in LimaCharlie", lc=True
    ).field()
    show_config: bool = Setting(Boolean(), "print the fetched configuration", lc=True).field(False)


@dataclass(frozen=True)
class TopLevel:
    """Keys beside the source's own at the top of a document."""

    sensor_type: str | None = Setting(
        Choice(("s3", "sqs", "sqs-files", "file")),
        "which adapter runs; it must name the document's source section",
        lc=True,
        shown="the source section",
    ).field()
    cloud: CloudOptions | None = Setting(
        Nested(CloudOptions),
        "a configuration kept in LimaCharlie",
        lc=True,
        unused="this daemon runs the configuration in this file; it does not fetch one from "
        "LimaCharlie",
    ).field()

    workers: int | None = Setting(
        Integer(1, MAX_PARALLEL),
        "processes that decode and compress, shared by every document (documents may repeat "
        "it, not differ)",
        shown="the CPUs this process may use (affinity, cgroup quota)",
    ).field()
    healthcheck: int | None = Setting(
        Integer(1, 65535, unit="port"),
        "a port for `/healthz`, `/readyz`, `/metrics` on every interface (documents may "
        "repeat it, not differ)",
        lc=True,
        shown="off",
    ).field()


@dataclass(frozen=True)
class SourceConfig:
    """One YAML document: one source and where its records go.

    Exactly one of `client_options` (USP) and `webhook` is set.
    """

    index: int
    kind: SourceKind
    source: SourceOptions
    aws: AwsOptions
    client_options: ClientOptions | None
    webhook: WebhookOptions | None
    delivery: DeliveryOptions = DeliveryOptions()
    healthcheck: int | None = None  # LimaCharlie's top-level `healthcheck: PORT`
    workers: int | None = None  # top-level `workers`: the decoding processes, for all documents
    record_filter: RecordFilter = field(default_factory=RecordFilter)  # `filter:`; keeps all
    dedup: DedupOptions = DedupOptions()

    @property
    def name(self) -> str:
        """A stable, secret-free name for logs: `s3[1]:bucket`, `sqs[2]:queue`, `file[1]:path`."""
        src = self.source
        if isinstance(src, S3SourceOptions):
            what = src.bucket_name
        elif isinstance(src, SqsSourceOptions):
            what = src.queue_name
        else:
            what = str(src.path)
        return f"{self.kind}[{self.index}]:{what}"
