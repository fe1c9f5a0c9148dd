"""Small draws for the corpus: every random choice goes through the `random.Random` passed in,
so that a seed always gives the same corpus."""

from __future__ import annotations

import base64
import hashlib
import random
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from uuid import UUID

import orjson

from cloudtrail_adapter.emulator.corpus_names import BUCKETS, ROLES

Json = dict[str, Any]

_ALNUM: Final = string.ascii_letters + string.digits
_UPPER_ALNUM: Final = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class Ctx:
    """What an API template draws from: the rng, and who acts where and when."""

    rng: random.Random
    account: str
    region: str
    when: datetime
    identity: Json
    actor_arn: str


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_date(when: datetime) -> str:
    """The `Mar 5, 2024, 1:02:03 PM` form IAM and STS use in responseElements."""
    hour = when.hour % 12 or 12
    return f"{when:%b} {when.day}, {when.year}, {hour}:{when:%M:%S %p}"


def uuid(rng: random.Random) -> str:
    return str(UUID(int=rng.getrandbits(128), version=4))


def hex_digits(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_ALNUM, k=n))


def upper(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_UPPER_ALNUM, k=n))


def key_id(rng: random.Random, prefix: str) -> str:
    return prefix + upper(rng, 16)


@lru_cache(maxsize=4096)
def stable_id(prefix: str, account: str, name: str) -> str:
    """The same principal always has the same ID, as in AWS (no rng: not a random choice)."""
    digest = hashlib.sha256(f"{account}/{name}".encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:17]


def ec2_id(rng: random.Random, kind: str) -> str:
    return f"{kind}-{hex_digits(rng, 17)}"


def kms_arn(ctx: Ctx) -> str:
    return f"arn:aws:kms:{ctx.region}:{ctx.account}:key/{uuid(ctx.rng)}"


def public_ip(rng: random.Random) -> str:
    first = rng.choice((3, 18, 34, 52, 54, 81, 91, 185, 203))
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def policy(rng: random.Random, account: str, statements: int) -> Json:
    actions = ("s3:GetObject", "s3:PutObject", "kms:Decrypt", "dynamodb:Query", "sqs:SendMessage")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": f"Stmt{rng.randint(10**12, 10**13)}",
                "Effect": rng.choice(("Allow", "Allow", "Deny")),
                "Principal": {"AWS": f"arn:aws:iam::{account}:role/{rng.choice(ROLES)}"},
                "Action": sorted(rng.sample(actions, rng.randint(1, 3))),
                "Resource": [
                    f"arn:aws:s3:::{rng.choice(BUCKETS)}/tenants/{uuid(rng)}/*",
                    f"arn:aws:s3:::{rng.choice(BUCKETS)}",
                ],
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}},
            }
            for _ in range(statements)
        ],
    }


def policy_text(rng: random.Random, account: str, statements: int) -> str:
    """IAM logs inline policies as a pretty-printed string: escaped newlines inside JSON."""
    return orjson.dumps(policy(rng, account, statements), option=orjson.OPT_INDENT_2).decode()
