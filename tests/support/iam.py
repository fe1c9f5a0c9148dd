"""IAM enforced by the stand-in: a user with exactly the policy a test gives, and moto's
checks switched on (over its own HTTP API) while the test runs, so a refusal is a real 403
from the server to a real IAM user, not a patched client.

While the checks are on, only IAM users' keys are accepted: set up everything first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.secret import Secret

__all__ = ["IamUser", "allowing", "iam_user", "set_auth"]


async def set_auth(endpoint: str, after_actions: str) -> None:
    """moto's IAM checks: on after that many actions ("0": now), or off ("inf")."""
    async with aiohttp.ClientSession() as http:
        answer = await http.post(f"{endpoint}/moto-api/reset-auth", data=after_actions)
        answer.raise_for_status()


def allowing(*actions: str, resource: str = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), "Resource": resource}


@dataclass
class IamUser:
    """`options` are the user's keys; `allow` changes the user's policy (checks off
    meanwhile: the stand-in's own keys are not an IAM user's)."""

    admin: AwsOptions
    name: str
    arn: str
    options: AwsOptions

    async def allow(self, *statements: dict[str, Any]) -> None:
        endpoint = self.admin.endpoint_url
        assert endpoint
        await set_auth(endpoint, "inf")
        try:
            await _put_policy(self.admin, self.name, statements)
        finally:
            await set_auth(endpoint, "0")


@asynccontextmanager
async def iam_user(admin: AwsOptions, *statements: dict[str, Any]) -> AsyncIterator[IamUser]:
    """A new user whose only policy is `statements`, with moto's IAM checks on until exit."""
    name = f"reader-{uuid.uuid4().hex[:8]}"
    async with aws.client("iam", admin) as iam:
        made = await iam.create_user(UserName=name)
        key = (await iam.create_access_key(UserName=name))["AccessKey"]
    await _put_policy(admin, name, statements)
    endpoint = admin.endpoint_url
    assert endpoint
    options = AwsOptions(key["AccessKeyId"], Secret(key["SecretAccessKey"]), admin.region, endpoint)
    await set_auth(endpoint, "0")
    try:
        yield IamUser(admin, name, str(made["User"]["Arn"]), options)
    finally:
        await set_auth(endpoint, "inf")


async def _put_policy(admin: AwsOptions, name: str, statements: tuple[dict[str, Any], ...]) -> None:
    document = orjson.dumps({"Version": "2012-10-17", "Statement": list(statements)}).decode()
    async with aws.client("iam", admin) as iam:
        await iam.put_user_policy(UserName=name, PolicyName="trail", PolicyDocument=document)
