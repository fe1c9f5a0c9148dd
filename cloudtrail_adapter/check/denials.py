"""AWS's answers to `check`'s calls, read for a person: a refusal names the IAM action and
the ARN it must be allowed on; bad credentials, a missing credential chain and an
unreachable endpoint each say so instead.

Every call `check` makes is one it chose, so the action and resource of a refusal are
known before the call: the caller passes them, and nothing is parsed out of AWS's message.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from cloudtrail_adapter.check.steps import Step
from cloudtrail_adapter.errors import aws_error_code

__all__ = [
    "AWS_ERRORS",
    "aws_failure",
    "bucket_arn",
    "described",
    "is_refusal",
    "object_arn",
    "partition",
    "principal_of",
]

#: What a botocore call raises when AWS (or the way to it) says no.
AWS_ERRORS = (ClientError, BotoCoreError)

#: Codes that mean "these credentials may not do this" (HeadBucket/HeadObject have no body:
#: their refusal is the bare status).
REFUSALS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "KMS.AccessDeniedException",
        "403",
        "Forbidden",
        "AuthorizationError",
        "UnauthorizedOperation",
    }
)
_CREDENTIALS = {
    "InvalidClientTokenId": "AWS does not know this access key ID",
    "InvalidAccessKeyId": "AWS does not know this access key ID",
    "UnrecognizedClientException": "AWS does not know this access key ID",
    "SignatureDoesNotMatch": "the secret key does not match the access key ID",
    "ExpiredToken": "the session token has expired",
    "ExpiredTokenException": "the session token has expired",
    "InvalidToken": "the session token is not valid",
}
_CREDENTIALS_FIX = (
    "check access_key and secret_key (or the credentials the AWS chain finds: environment, "
    "profile, instance or task role)"
)
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


def partition(region: str | None) -> str:
    """The ARN partition of a region: GovCloud and China have their own."""
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    if region and region.startswith("cn-"):
        return "aws-cn"
    return "aws"


def bucket_arn(bucket: str, region: str | None) -> str:
    return f"arn:{partition(region)}:s3:::{bucket}"


def object_arn(bucket: str, key: str, region: str | None) -> str:
    return f"{bucket_arn(bucket, region)}/{key}"


def principal_of(caller_arn: str) -> str:
    """The identity a policy is attached to: an assumed role's session is its role
    (`arn:aws:sts::A:assumed-role/R/S` is `arn:aws:iam::A:role/R`)."""
    head, sep, rest = caller_arn.partition(":assumed-role/")
    if not sep:
        return caller_arn
    arn_partition, _, account = head.removeprefix("arn:").partition(":sts::")
    return f"arn:{arn_partition}:iam::{account}:role/{rest.split('/', 1)[0]}"


def is_refusal(exc: BaseException) -> bool:
    return aws_error_code(exc) in REFUSALS


def described(exc: BaseException) -> str:
    """`CODE: message` of an AWS error, else the exception's own words."""
    code = aws_error_code(exc)
    if code is not None:
        response = getattr(exc, "response", {})
        message = _one_line(str(response.get("Error", {}).get("Message") or ""))
        return f"{code}: {message}" if message and message != code else code
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: str, limit: int = 300) -> str:
    """A message as one line of a step, cut where it runs on."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[: limit - 3]}..."


def aws_failure(
    source: str,
    name: str,
    tried: str,
    exc: BaseException,
    *,
    action: str,
    resource: str,
    grantee: str,
    fix: str | None = None,
) -> Step:
    """The failed step for an AWS error: a refusal needs `action` on `resource` (for
    `grantee`, by `fix` when the policy to change is not the grantee's own)."""
    said = described(exc)
    if is_refusal(exc):
        return Step(
            source,
            name,
            "failed",
            tried,
            f"refused ({said})",
            action=action,
            resource=resource,
            fix=fix or f"allow it for {grantee}",
        )
    code = aws_error_code(exc)
    if code in _CREDENTIALS:
        return Step(
            source, name, "failed", tried, f"{_CREDENTIALS[code]} ({said})", fix=_CREDENTIALS_FIX
        )
    if isinstance(exc, NoCredentialsError):
        return Step(source, name, "failed", tried, "no AWS credentials found", fix=_CREDENTIALS_FIX)
    if isinstance(exc, _UNREACHABLE):
        return Step(
            source,
            name,
            "failed",
            tried,
            f"AWS unreachable ({said})",
            fix="check the network, a proxy ($HTTPS_PROXY), endpoint_url and region",
        )
    return Step(source, name, "failed", tried, said)
