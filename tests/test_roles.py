"""Roles: a source reads through a role assumed with STS (moto), with its external ID and
session name, and refreshes the role's credentials before they expire: the stand-in
refuses expired ones, as AWS does."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from moto.sts.models import AssumedRole, sts_backends

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, ConfigError, SourceConfig, parse_documents
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from tests.support.configs import s3_config
from tests.support.corpus import PREFIX, records
from tests.support.process import stop_daemon
from tests.support.stand_in import STAND_IN, put_objects
from tests.support.watch import LogWatch, eventually, watch_logs

ROLE_ACCOUNT = "222233334444"
ROLE_ARN = f"arn:aws:iam::{ROLE_ACCOUNT}:role/cloudtrail-reader"
EXTERNAL_ID = "ext-4b1d"


def assumed(session_name: str) -> list[AssumedRole]:
    """The sessions moto handed out for our role under that name, oldest first."""
    roles = sts_backends[ROLE_ACCOUNT]["aws"].assumed_roles
    return [r for r in roles if r.session_name == session_name]


def with_role(options: AwsOptions, session_name: str) -> AwsOptions:
    return dataclasses.replace(
        options, role_arn=ROLE_ARN, external_id=Secret(EXTERNAL_ID), role_session_name=session_name
    )


@pytest.fixture
def short_sessions() -> Iterator[None]:
    """Role sessions of 4 s from the stand-in's STS (AWS's shortest is 900 s)."""
    STAND_IN.role_session_seconds = 4
    try:
        yield
    finally:
        STAND_IN.role_session_seconds = None


@asynccontextmanager
async def daemon(cfg: SourceConfig, state_dir: Path) -> AsyncIterator[None]:
    task = asyncio.create_task(serve([cfg], state_dir))
    try:
        yield
    finally:
        stop_daemon()
        assert await asyncio.wait_for(task, 30) == 0


async def test_a_source_reads_through_the_role_it_assumes(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await put_objects(aws_options, bucket, {f"{PREFIX}r.json.gz": log_file(records(20, 31))})
    cfg = s3_config(with_role(aws_options, f"role-{bucket}"), bucket, lc)

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0

    assert len(lc.store.events) == 20
    (session,) = assumed(f"role-{bucket}")
    assert session.external_id == EXTERNAL_ID
    assert session.role_arn == ROLE_ARN
    assert logs.named("role_assumed")[0]["role_arn"] == ROLE_ARN
    assert not any(EXTERNAL_ID in str(entry) for entry in logs.entries)


@pytest.mark.usefixtures("short_sessions")
async def test_the_stand_in_refuses_an_expired_role_session(aws_options: AwsOptions) -> None:
    """What the refresh test relies on: moto alone would take expired keys forever."""
    async with aws.client("sts", aws_options) as sts:
        answer = await sts.assume_role(
            RoleArn=ROLE_ARN, RoleSessionName="expiring", DurationSeconds=900
        )
    keys = answer["Credentials"]
    session = (keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"])
    refusals: list[ClientError] = []

    async def refused() -> bool:
        if (error := await refusal(aws_options, *session)) is not None:
            refusals.append(error)
        return bool(refusals)

    await eventually(refused)  # once the session ran out: nothing announces it
    # botocore's S3 parser does not read moto's generic error document: only the status
    assert refusals[0].response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.usefixtures("short_sessions")
async def test_role_credentials_are_refreshed_and_the_source_keeps_working_past_expiry(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    name = f"short-{bucket}"
    cfg = s3_config(
        with_role(aws_options, name),
        bucket,
        lc,
        single_load=False,
        poll_interval=0.2,
        layout="flat",  # the second file lands in a days-old folder
    )
    await put_objects(aws_options, bucket, {f"{PREFIX}1.json.gz": log_file(records(10, 41))})
    with watch_logs() as logs:
        async with daemon(cfg, state_dir):
            await lc.store.wait_for(10, timeout=20)
            first = assumed(name)[0]
            keys = (first.access_key_id, first.secret_access_key, first.session_token)

            async def expired() -> bool:
                return await refusal(aws_options, *keys) is not None

            await eventually(expired)  # the stand-in refuses the first session's keys now
            await put_objects(
                aws_options, bucket, {f"{PREFIX}2.json.gz": log_file(records(10, 42))}
            )
            await lc.store.wait_for(20, timeout=20)
    assert len(lc.store.events) == 20
    assert len(assumed(name)) >= 2  # assumed again, before the first session ran out
    assert not _failures(logs)


def _failures(logs: LogWatch) -> list[dict[str, object]]:
    return [e for e in logs.entries if e["event"] in ("source_failed", "object_failed")]


async def refusal(
    aws_options: AwsOptions, access_key: str, secret_key: str, token: str
) -> ClientError | None:
    """How the stand-in answers a request made with a role session's keys: None if it
    served it."""
    keys = AwsOptions(access_key, Secret(secret_key), "us-east-1", aws_options.endpoint_url)
    async with aws.source_session(keys).create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=aws_options.endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
    ) as s3:
        try:
            await s3.list_buckets()
        except ClientError as refused:
            return refused
    return None


ROLE_DOC = """
sqs:
  queue_url: https://sqs.eu-west-1.amazonaws.com/111122223333/trail
  client_options:
    identity: {oid: 6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a, installation_key: k}
"""


def test_role_keys_parse_and_mistakes_are_named() -> None:
    text = ROLE_DOC + f"  role_arn: {ROLE_ARN}\n  external_id: {EXTERNAL_ID}\n"
    (cfg,) = parse_documents(text + "  role_session_duration: 1800\n", {}, "c.yaml")
    assert cfg.aws.role_arn == ROLE_ARN and cfg.aws.role_session_duration == 1800
    assert cfg.aws.external_id == Secret(EXTERNAL_ID) and EXTERNAL_ID not in repr(cfg)

    bad = ROLE_DOC + "  role_arn: arn:aws:iam::12:user/x\n  role_session_duration: 60\n"
    with pytest.raises(ConfigError) as caught:
        parse_documents(bad, {}, "c.yaml")
    text = str(caught.value)
    assert "sqs.role_arn: expected an IAM role ARN" in text
    assert "sqs.role_session_duration: expected an integer from 900" in text

    with pytest.raises(ConfigError) as caught:
        parse_documents(ROLE_DOC + "  external_id: x\n", {}, "c.yaml")
    assert "sqs.external_id: is only used with role_arn, which is not set" in str(caught.value)
