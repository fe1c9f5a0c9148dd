"""A bucket's region is found in GovCloud too, as LimaCharlie's adapter finds it: when the
commercial partition refuses our (GovCloud) credentials, HeadBucket is asked in
us-gov-west-1. The stand-in is a real HTTP server answering by the region each request was
signed for, the one thing that differs between the two partitions' endpoints here."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.secret import Secret

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/s3/")


class Partitions:
    """HeadBucket per signing region: `answers[region]` is (status, code, bucket region)."""

    def __init__(self, answers: dict[str, tuple[int, str, str | None]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def head(self, request: web.Request) -> web.Response:
        scope = _SCOPE.search(request.headers.get("Authorization", ""))
        region = scope[1] if scope else "?"
        self.asked.append(region)
        status, code, located = self.answers.get(region, (403, "InvalidAccessKeyId", None))
        headers = {"x-amz-bucket-region": located} if located else {}
        return web.Response(status=status, headers=headers | {"x-amz-error-code": code})


@pytest.fixture
async def partitions() -> AsyncIterator[tuple[Partitions, str]]:
    stand_in = Partitions({})
    app = web.Application()
    app.router.add_route("HEAD", "/{bucket}", stand_in.head)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield stand_in, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def options(endpoint: str) -> AwsOptions:
    return AwsOptions("AKIAGOVEXAMPLE", Secret("secret"), None, endpoint)


async def test_a_govcloud_bucket_is_found_after_the_commercial_partition_refuses_us(
    partitions: tuple[Partitions, str],
) -> None:
    stand_in, endpoint = partitions
    stand_in.answers = {
        "us-east-1": (403, "InvalidAccessKeyId", None),
        "us-gov-west-1": (200, "", "us-gov-east-1"),
    }
    assert await aws.bucket_region(options(endpoint), "gov-trail") == "us-gov-east-1"
    assert stand_in.asked[0] == "us-east-1" and stand_in.asked[-1] == "us-gov-west-1"


async def test_a_commercial_answer_needs_no_second_question(
    partitions: tuple[Partitions, str],
) -> None:
    stand_in, endpoint = partitions
    stand_in.answers = {"us-east-1": (403, "AccessDenied", "eu-west-1")}  # 403 with the header
    assert await aws.bucket_region(options(endpoint), "trail") == "eu-west-1"
    assert set(stand_in.asked) == {"us-east-1"}


async def test_no_such_bucket_is_not_asked_of_govcloud(partitions: tuple[Partitions, str]) -> None:
    stand_in, endpoint = partitions
    stand_in.answers = {"us-east-1": (404, "NoSuchBucket", None)}
    with pytest.raises(ClientError):
        await aws.bucket_region(options(endpoint), "missing")
    assert set(stand_in.asked) == {"us-east-1"}


async def test_refused_in_both_partitions_raises(partitions: tuple[Partitions, str]) -> None:
    stand_in, endpoint = partitions
    with pytest.raises(ClientError):
        await aws.bucket_region(options(endpoint), "nowhere")
    assert set(stand_in.asked) == {"us-east-1", "us-gov-west-1"}
