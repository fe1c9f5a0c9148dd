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
