"""What can end a source's run, each with the word logs and metrics give it; the one place
an AWS error's code is read; and the one backoff policy every retry follows.

Every error that ends a source's run is met the same way: the source is restarted with
backoff (daemon.supervise) and shown down meanwhile (`source_up 0`, `/readyz`, the
CloudTrailAdapterSourceDown alert). Even a refusal that retrying cannot fix by itself (a
wrong installation key, a policy without a permission) is fixed outside the daemon, in
LimaCharlie or IAM, and the next restart then succeeds without anyone restarting us."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "AdapterError",
    "AwsRefusedUs",
    "Backoff",
    "FatalSinkError",
    "LayoutMissing",
    "QueueUnavailable",
    "aws_error_code",
    "aws_refused_us",
    "failure_reason",
    "is_cut_short",
]

#: How the process ends: done (or stopped cleanly), a source failed, or it could not start
#: (bad arguments or configuration, as argparse does).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Doubling stops here: 2**64 times any initial delay is past every maximum.
_MAX_DOUBLINGS = 64


class AdapterError(Exception):
    """An error of ours. `reason` is the stable word logs and metrics use for it. Its
    message names what is wrong and never holds a secret."""

    reason: ClassVar[str] = "error"


class FatalSinkError(AdapterError):
    """LimaCharlie refused us (bad OID or key, hook not found): the sink does not retry it,
    the source's restart does, once someone fixed it."""

    reason = "limacharlie_refused"


class QueueUnavailable(AdapterError):
    """The queue cannot be read (missing, or our credentials are refused); names the queue.
    Worth a restart with backoff: a policy or a queue can be fixed while we wait."""

    reason = "queue_unavailable"


class LayoutMissing(AdapterError):
    """accounts/regions/start_time/end_time were set, but the bucket has no CloudTrail
    layout under the prefix (yet: a new trail writes its first files within minutes)."""

    reason = "layout_missing"


class AwsRefusedUs(AdapterError):
    """AWS refused who we are (expired or unknown keys, a wrong secret) or when we asked (our
    clock is off): every request of the source would be refused alike, so it is the
    source's failure, said once, never one object's after another's. `reason` is AWS's
    code. Assumed roles' credentials refresh by themselves (aws.py): an ExpiredToken here
    means static session keys, or a refresh that failed."""

    reason = "aws_refused_us"


class ExpiredToken(AwsRefusedUs):
    reason = "ExpiredToken"


class InvalidAccessKeyId(AwsRefusedUs):
    reason = "InvalidAccessKeyId"


class SignatureDoesNotMatch(AwsRefusedUs):
    reason = "SignatureDoesNotMatch"


class RequestTimeTooSkewed(AwsRefusedUs):
    reason = "RequestTimeTooSkewed"


_REFUSALS: dict[str, type[AwsRefusedUs]] = {
    kind.reason: kind
    for kind in (ExpiredToken, InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed)
}
_HINTS = {
    "ExpiredToken": "the session token expired: renew the credentials",
    "InvalidAccessKeyId": "AWS does not know this access key: check access_key",
    "SignatureDoesNotMatch": "the signature does not match: check secret_key",
}


def aws_refused_us(exc: BaseException) -> AwsRefusedUs | None:
    """The source's failure that `exc` (a botocore ClientError) means, if it is one; for a
    skewed clock, the message says by how much (AWS's time, else its Date header)."""
    code = aws_error_code(exc)
    kind = _REFUSALS.get(code or "")
    if kind is None:
        return None
    if kind is RequestTimeTooSkewed:
        return kind(f"RequestTimeTooSkewed: {_skew(getattr(exc, 'response', {}))}")
    return kind(f"{code}: {_HINTS[str(code)]}")


def _skew(response: Any) -> str:
    offset = _clock_offset(response)
    if offset is None:
        told = "this host's clock is off"
    else:
        way = "behind" if offset > 0 else "ahead of"
        told = f"this host's clock is {abs(offset):.0f} s {way} AWS's"
    return f"{told}; AWS refuses requests more than 15 minutes off: set the clock right (NTP)"


def _clock_offset(response: Any) -> float | None:
    """AWS's time minus ours, in seconds, from the refusal (ServerTime, else Date)."""
    if not isinstance(response, dict):
        return None
    now = datetime.now(UTC)
    server = response.get("Error", {}).get("ServerTime")
    try:
        if server:
            then = datetime.fromisoformat(str(server).replace("Z", "+00:00"))
        else:
            date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            if not date:
                return None
            then = parsedate_to_datetime(str(date))
    except (ValueError, TypeError):
        return None
    return (then - now).total_seconds()


def aws_error_code(exc: BaseException) -> str | None:
    """AWS's error code (NoSuchKey, AccessDenied, ...) of a botocore ClientError, else None."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None


#: What a read cut short raises, by class name (aiohttp's, botocore's, asyncio's and the
#: builtins'), so that telling one needs neither aiohttp nor botocore imported here.
_CUT_SHORT = frozenset(
    {
        "ClientPayloadError",  # aiohttp: the body ended before its Content-Length
        "ServerDisconnectedError",
        "ClientOSError",
        "IncompleteReadError",  # asyncio's and botocore's
        "ResponseStreamingError",  # botocore: the body broke off while read
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ConnectionResetError",
        "TimeoutError",
    }
)


def is_cut_short(exc: BaseException) -> bool:
    """Whether `exc` is a read that broke off (a reset, a short body, a read timeout), which
    asking again at once may well mend: never an answer S3 gave (a ClientError)."""
    if aws_error_code(exc) is not None:
        return False
    return any(cls.__name__ in _CUT_SHORT for cls in type(exc).__mro__)


def failure_reason(exc: BaseException) -> str:
    """The word logs and metrics give a failure: ours, AWS's code, or the exception's type."""
    if isinstance(exc, AdapterError):
        return exc.reason
    return aws_error_code(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: `initial` seconds before the first retry, doubling up to
    `maximum`, plus up to `jitter` times that at random, so that many clients that failed
    together do not retry together."""

    initial: float
    maximum: float
    jitter: float = 0.0

    def delay(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1 is the first retry)."""
        doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
        base = min(self.maximum, self.initial * (1 << doublings))
        return base * (1 + random.uniform(0, self.jitter)) if self.jitter else base

    def tenacity_wait(self) -> Callable[[Any], float]:
        """The same policy as a tenacity `wait=` (its RetryCallState numbers attempts from 1)."""
        return lambda state: self.delay(int(state.attempt_number))
