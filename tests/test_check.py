"""`cloudtrail-adapter check` against the AWS stand-in with IAM enforced and the LimaCharlie
emulator: every step passing, each one failing as a user meets it (the exact IAM action,
resource ARN and what to change), and nothing changed by it, twice."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.check import check_steps
from cloudtrail_adapter.check.steps import Step, exit_code
from cloudtrail_adapter.config import (
    AwsOptions,
    IntegrityOptions,
    S3SourceOptions,
    SourceConfig,
    SqsFilesSourceOptions,
)
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from tests.support.configs import s3_config, sqs_config
from tests.support.iam import allowing, iam_user
from tests.support.stand_in import STAND_IN, put_objects

ACCOUNTS = ("111122223333", "444455556666")
REGIONS = ("eu-west-1", "us-east-1")
DAYS = (datetime(2026, 11, 28, 10, tzinfo=UTC), datetime(2026, 11, 30, 10, tzinfo=UTC))
LATEST = datetime(2026, 12, 1, 9, 55, tzinfo=UTC)  # one stream's newest file


def key_of(account: str, region: str, when: datetime, kind: str = "CloudTrail") -> str:
    return (
        f"AWSLogs/{account}/{kind}/{region}/{when:%Y/%m/%d}/"
        f"{account}_{kind}_{region}_{when:%Y%m%dT%H%MZ}_a1b2c3d4e5f6g7h8.json.gz"
    )


NEWEST = key_of(ACCOUNTS[1], REGIONS[1], LATEST)


def trail_objects() -> dict[str, bytes]:
    """Two accounts, two regions, two days each; one stream has a later day."""
    rng = random.Random(30)
    objects: dict[str, bytes] = {}
    for account in ACCOUNTS:
        for region in REGIONS:
            for when in DAYS:
                record = cloudtrail_record(rng, account=account, region=region, when=when)
                objects[key_of(account, region, when)] = log_file([record])
    objects[NEWEST] = log_file(
        [cloudtrail_record(rng, account=ACCOUNTS[1], region=REGIONS[1], when=LATEST)]
    )
    return objects


@pytest.fixture
async def trail(aws_options: AwsOptions, bucket: str) -> str:
    await put_objects(aws_options, bucket, trail_objects())
    return bucket


async def checked(cfg: SourceConfig, state: Path) -> tuple[int, list[Step]]:
    steps = [step async for step in check_steps([cfg], state, {})]
    return exit_code(steps), steps


def step(steps: list[Step], name: str) -> Step:
    (found,) = [s for s in steps if s.name == name]
    return found


def made(path: Path) -> bool:
    """Whether anything is at `path` (a local stat: nothing to wait for)."""
    return path.exists()


def statuses(steps: list[Step]) -> dict[str, str]:
    return {f"{s.source} {s.name}": s.status for s in steps}


async def bucket_state(options: AwsOptions, bucket: str) -> list[tuple[str, str]]:
    async with aws.client("s3", options) as s3:
        page = await s3.list_objects_v2(Bucket=bucket)
    return [(c["Key"], c["ETag"]) for c in page.get("Contents", ())]


# -- S3 --------------------------------------------------------------------------------------


async def test_every_step_of_an_s3_document_passes_and_says_what_it_found(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    code, steps = await checked(s3_config(aws_options, trail, lc), state_dir)

    assert code == 0, [s.line() for s in steps]
    assert [s.name for s in steps] == [
        "state",
        "identity",
        "region",
        "list",
        "get_object",
        "route",
        "connect",
        "tls",
        "handshake",
    ]
    assert {s.status for s in steps} == {"passed", "skipped"}  # tls: the emulator is ws://
    assert "(account 123456789012), from static keys" in step(steps, "identity").result
    assert step(steps, "region").result.startswith("us-east-1")
    listed = step(steps, "list").result
    assert "2 accounts (111122223333, 444455556666)" in listed
    assert "2 regions (eu-west-1, us-east-1)" in listed
    assert "days 2026-11-28 to 2026-12-01" in listed
    read = step(steps, "get_object")
    assert NEWEST in read.tried
    assert "gzip" in read.result
    assert "accepted the OID and the installation key" in step(steps, "handshake").result
    assert lc.usp.connections == 1
    assert lc.usp.messages_received == 0
    assert lc.store.events == []
    assert not made(state_dir)


async def test_a_policy_without_get_object_names_the_action_and_the_object_then_passes(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with iam_user(aws_options, allowing("s3:ListBucket")) as user:
        code, steps = await checked(s3_config(user.options, trail, lc), state_dir)

        assert code == 1
        failed = [s for s in steps if s.failed]
        assert [s.name for s in failed] == ["get_object"]
        (read,) = failed
        assert read.action == "s3:GetObject"
        assert read.resource == f"arn:aws:s3:::{trail}/{NEWEST}"
        assert read.fix == f"allow it for {user.arn}"
        assert step(steps, "region").status == "passed"  # HeadBucket is s3:ListBucket's
        line = read.line()
        assert "s3:GetObject" in line and f"arn:aws:s3:::{trail}/{NEWEST}" in line

        await user.allow(allowing("s3:ListBucket", "s3:GetObject"))
        code, steps = await checked(s3_config(user.options, trail, lc), state_dir)
        assert code == 0, [s.line() for s in steps if s.failed]


async def test_a_policy_without_list_bucket_names_it_on_the_bucket(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with iam_user(aws_options, allowing("s3:GetObject")) as user:
        code, steps = await checked(s3_config(user.options, trail, lc), state_dir)

    assert code == 1
    listing = step(steps, "list")  # the region is configured: HeadBucket's refusal warns
    assert (listing.status, listing.action, listing.resource) == (
        "failed",
        "s3:ListBucket",
        f"arn:aws:s3:::{trail}",
    )
    assert step(steps, "region").status == "warning"
    assert step(steps, "get_object").status == "skipped"


async def test_without_a_region_a_refused_head_bucket_is_named_and_the_rest_skipped(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with iam_user(aws_options, allowing("s3:GetObject")) as user:
        options = dataclasses.replace(user.options, region=None)
        code, steps = await checked(s3_config(options, trail, lc), state_dir)

    region = step(steps, "region")
    assert (region.status, region.action, region.resource) == (
        "failed",
        "s3:ListBucket",
        f"arn:aws:s3:::{trail}",
    )
    assert step(steps, "list").status == "skipped"
    assert code == 1


async def test_a_bucket_that_does_not_exist_is_named(
    aws_options: AwsOptions, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    options = dataclasses.replace(aws_options, region=None)
    code, steps = await checked(s3_config(options, "no-such-trail-bucket", lc), state_dir)

    region = step(steps, "region")
    assert region.status == "failed"
    assert "no bucket named no-such-trail-bucket" in region.result
    assert region.fix == "check bucket_name"
    assert code == 1


async def test_bad_credentials_fail_at_who_we_are_and_skip_the_rest(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with iam_user(aws_options, allowing("s3:*")) as user:
        wrong = dataclasses.replace(user.options, secret_key=Secret("not-the-secret-key"))
        code, steps = await checked(s3_config(wrong, trail, lc), state_dir)

    identity = step(steps, "identity")
    assert identity.status == "failed"
    assert "the secret key does not match the access key ID" in identity.result
    assert {step(steps, n).status for n in ("region", "list", "get_object")} == {"skipped"}
    assert step(steps, "handshake").status == "passed"  # LimaCharlie is checked all the same
    assert code == 1


async def test_an_sse_kms_trail_is_said_to_be_and_decrypt_proven(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    key_arn = "arn:aws:kms:us-east-1:111122223333:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    rng = random.Random(1)
    body = log_file([cloudtrail_record(rng, account=ACCOUNTS[0], region=REGIONS[1], when=LATEST)])
    async with aws.client("s3", aws_options) as s3:
        await s3.put_object(
            Bucket=bucket,
            Key=key_of(ACCOUNTS[0], REGIONS[1], LATEST),
            Body=body,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=key_arn,
        )
    code, steps = await checked(s3_config(aws_options, bucket, lc), state_dir)

    assert code == 0
    assert f"SSE-KMS with {key_arn}: kms:Decrypt proven" in step(steps, "get_object").result


async def test_a_bucket_without_the_layout_is_listed_flat_unless_the_layout_is_needed(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    rng = random.Random(2)
    body = log_file([cloudtrail_record(rng, account=ACCOUNTS[0], region=REGIONS[0], when=LATEST)])
    await put_objects(aws_options, bucket, {"exports/one.json.gz": body})

    code, steps = await checked(s3_config(aws_options, bucket, lc), state_dir)
    assert code == 0
    assert "no CloudTrail layout" in step(steps, "list").tried
    assert "exports/one.json.gz" in step(steps, "get_object").tried

    code, steps = await checked(
        s3_config(aws_options, bucket, lc, accounts=(ACCOUNTS[0],)), state_dir
    )
    listing = step(steps, "list")
    assert listing.status == "failed"
    assert "no CloudTrail layout (AWSLogs/...)" in listing.result
    assert code == 1


@pytest.fixture
def public_key_calls() -> Iterator[list[tuple[str, float | None, float | None]]]:
    """The stand-in's ListPublicKeys calls during the test (left empty for the next)."""
    try:
        yield STAND_IN.public_key_calls
    finally:
        STAND_IN.public_key_calls.clear()


async def test_list_public_keys_is_named_when_integrity_verify_lacks_it(
    aws_options: AwsOptions,
    trail: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    public_key_calls: list[tuple[str, float | None, float | None]],
) -> None:
    digest = key_of(ACCOUNTS[0], REGIONS[0], DAYS[1], kind="CloudTrail-Digest")
    await put_objects(aws_options, trail, {digest: b"{}"})
    verify = IntegrityOptions(verify=True)
    async with iam_user(aws_options, allowing("s3:ListBucket", "s3:GetObject")) as user:
        code, steps = await checked(s3_config(user.options, trail, lc, integrity=verify), state_dir)
        keys = step(steps, "public_keys")
        assert (keys.status, keys.action, keys.resource) == (
            "failed",
            "cloudtrail:ListPublicKeys",
            "*",
        )
        assert "eu-west-1" in keys.tried
        assert code == 1

        await user.allow(allowing("s3:ListBucket", "s3:GetObject", "cloudtrail:ListPublicKeys"))
        code, steps = await checked(s3_config(user.options, trail, lc, integrity=verify), state_dir)
    assert step(steps, "public_keys").status == "passed"
    assert [region for region, _, _ in public_key_calls] == ["eu-west-1"]  # the digests' region
    assert code == 0


async def test_the_role_assumed_is_shown_with_its_expiry(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    role_arn = "arn:aws:iam::222233334444:role/cloudtrail-reader"
    options = dataclasses.replace(aws_options, role_arn=role_arn, role_session_name="checking")
    code, steps = await checked(s3_config(options, trail, lc), state_dir)

    role = step(steps, "role")
    assert role.status == "passed"
    assert role_arn in role.tried
    assert "assumed-role/cloudtrail-reader/checking" in role.result
    assert "session expires" in role.result
    assert code == 0


async def test_a_role_the_credentials_may_not_assume_is_named_with_its_arn(
    aws_options: AwsOptions, trail: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    role_arn = "arn:aws:iam::222233334444:role/cloudtrail-reader"
    async with iam_user(aws_options, allowing("s3:*")) as user:
        options = dataclasses.replace(user.options, role_arn=role_arn)
        code, steps = await checked(s3_config(options, trail, lc), state_dir)

    assert step(steps, "identity").status == "passed"
    role = step(steps, "role")
    assert (role.status, role.action, role.resource) == ("failed", "sts:AssumeRole", role_arn)
    assert f"the role's trust policy must allow {user.arn}" in (role.fix or "")
    assert {step(steps, n).status for n in ("region", "list", "get_object")} == {"skipped"}
    assert code == 1


# -- SQS -------------------------------------------------------------------------------------


async def test_a_region_other_than_the_queue_url_s_is_named(
    aws_options: AwsOptions, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/trail"
    code, steps = await checked(sqs_config(aws_options, url, lc), state_dir)

    queue = step(steps, "queue")
    assert queue.status == "failed"
    assert queue.result == "region: us-east-1 is set, but the queue's URL is in eu-west-1"
    assert queue.fix == "leave region out (it is taken from queue_url) or set it to eu-west-1"
    assert step(steps, "receive").status == "skipped"
    assert code == 1


SQS_ACTIONS = (
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
)


async def receive_counts(options: AwsOptions, queue_url: str) -> list[str]:
    """Receives every message once (the test's own receive), with its receive count."""
    async with aws.client("sqs", options) as sqs:
        got = await sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )
    return [m["Attributes"]["ApproximateReceiveCount"] for m in got.get("Messages", ())]


async def queue_numbers(options: AwsOptions, queue_url: str) -> dict[str, Any]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    async with aws.client("sqs", options) as sqs:
        answer = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return dict(answer["Attributes"])


@pytest.mark.parametrize("missing", SQS_ACTIONS[1:])
async def test_a_missing_sqs_permission_is_named_and_no_message_is_received(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path, missing: str
) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        await sqs.send_message(QueueUrl=queue, MessageBody='{"Records": []}')
        arn = (await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
    allowed = [a for a in SQS_ACTIONS if a != missing]
    async with iam_user(aws_options, allowing(*allowed)) as user:
        code, steps = await checked(sqs_config(user.options, queue, lc), state_dir)

    failed = [s for s in steps if s.failed]
    assert [(s.action, s.resource) for s in failed] == [(missing, arn)]
    assert failed[0].result.startswith(
        f"refused (AccessDenied: User: {user.arn} is not authorized to perform: {missing}"
    )
    assert failed[0].fix == f"allow it for {user.arn}"
    assert code == 1
    assert await queue_numbers(aws_options, queue) == {
        "ApproximateNumberOfMessages": "1",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    assert await receive_counts(aws_options, queue) == ["1"]  # this receive is its first


async def test_every_step_of_an_sqs_document_passes_or_says_why_it_cannot(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        await sqs.send_message(QueueUrl=queue, MessageBody='{"Records": []}')
    async with iam_user(aws_options, allowing(*SQS_ACTIONS)) as user:
        code, steps = await checked(sqs_config(user.options, queue, lc), state_dir)

    assert code == 0, [s.line() for s in steps if s.failed]
    assert [s.name for s in steps][:8] == [
        "state",
        "identity",
        "queue",
        "dead_letter",
        "receive",
        "delete",
        "change_visibility",
        "buckets",
    ]
    assert "1 waiting, 0 in flight" in step(steps, "queue").result
    assert "the queue's 30 s, ours 300 s" in step(steps, "queue").result
    assert step(steps, "dead_letter").status == "warning"
    assert step(steps, "receive").status == "unproven"
    assert step(steps, "delete").status == "passed"
    assert step(steps, "change_visibility").status == "passed"
    assert step(steps, "buckets").status == "unproven"
    account = queue.rstrip("/").rsplit("/", 2)[-2]
    assert f"expected to be owned by account {account}" in step(steps, "buckets").result
    assert await receive_counts(aws_options, queue) == ["1"]
    assert lc.store.events == []


async def test_a_dead_letter_queue_is_named(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        dlq = (await sqs.create_queue(QueueName=f"{queue.rsplit('/', 1)[1]}-dlq"))["QueueUrl"]
        dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        redrive = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "5"}}'
        await sqs.set_queue_attributes(QueueUrl=queue, Attributes={"RedrivePolicy": redrive})
    code, steps = await checked(sqs_config(aws_options, queue, lc), state_dir)

    dead = step(steps, "dead_letter")
    assert dead.status == "passed"
    assert dead.result == f"{dlq_arn}, after 5 receives"
    assert code == 0


async def test_a_queue_that_does_not_exist_is_named(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    gone = queue + "-gone"
    code, steps = await checked(sqs_config(aws_options, gone, lc), state_dir)

    assert step(steps, "queue").status == "failed"
    assert "no such queue" in step(steps, "queue").result
    assert step(steps, "delete").status == "skipped"
    assert code == 1


async def test_an_sqs_files_bucket_is_named(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    cfg = sqs_config(aws_options, queue, lc)
    files = SqsFilesSourceOptions(queue_url=queue, bucket="acme-trail")
    _, steps = await checked(dataclasses.replace(cfg, kind="sqs-files", source=files), state_dir)

    assert "every file is read from s3://acme-trail" in step(steps, "buckets").result


# -- it changes nothing ----------------------------------------------------------------------


async def test_checking_twice_changes_nothing_and_gives_the_same_answer(
    aws_options: AwsOptions, trail: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        await sqs.send_message(QueueUrl=queue, MessageBody='{"Records": []}')
    deleting = S3SourceOptions(bucket_name=trail, delete_after_ack=True)
    s3_cfg = dataclasses.replace(s3_config(aws_options, trail, lc), source=deleting)
    sqs_cfg = dataclasses.replace(sqs_config(aws_options, queue, lc), index=2)
    objects, numbers = (
        await bucket_state(aws_options, trail),
        await queue_numbers(aws_options, queue),
    )

    answers = []
    for _ in range(2):
        steps = [s async for s in check_steps([s3_cfg, sqs_cfg], state_dir, {})]
        answers.append(statuses(steps))
        assert await bucket_state(aws_options, trail) == objects
        assert await queue_numbers(aws_options, queue) == numbers
        assert not made(state_dir)

    assert answers[0] == answers[1]
    assert "failed" not in answers[0].values()
    assert lc.usp.messages_received == 0 and lc.store.events == []
    assert await receive_counts(aws_options, queue) == ["1"]
