"""Source configs and YAML documents that point the daemon at the emulator (and the stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtrail_adapter.config import (
    AwsOptions,
    ClientOptions,
    DeliveryOptions,
    FileSourceOptions,
    Identity,
    S3SourceOptions,
    SourceConfig,
    SqsSourceOptions,
    WebhookOptions,
)
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from tests.support.stand_in import ACCESS_KEY, REGION, SECRET_KEY

OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
INSTALLATION_KEY = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"
WEBHOOK_SECRET = "webhook-secret-do-not-log-7f3a"
#: The seed documents' AWS keys, as a user writes them; the secret recognisable, as it must
#: never appear in a message or a repr.
SEED_ACCESS_KEY = "AKIAEXAMPLEACCESSKEY"
AWS_SECRET = "aws-secret-SHOULD-NOT-LEAK-7a1f9c"

#: LimaCharlie's two seed documents as YAML text, the way its adapter's users write them.
S3_SEED = f"""\
s3:
  client_options:
    hostname: trail-host
    identity:
      installation_key: {INSTALLATION_KEY}
      oid: {OID}
    platform: aws
    sensor_seed_key: trail-seed
  bucket_name: acme-org-cloudtrail
  secret_key: {AWS_SECRET}
  access_key: {SEED_ACCESS_KEY}
"""

SQS_SEED = f"""\
sqs:
  client_options:
    hostname: trail-host
    identity:
      installation_key: {INSTALLATION_KEY}
      oid: {OID}
    platform: aws
    sensor_seed_key: trail-seed
  region: eu-west-1
  secret_key: {AWS_SECRET}
  access_key: {SEED_ACCESS_KEY}
  queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/cloudtrail
"""


def usp_client_options(lc: LimaCharlieEmulator, hostname: str = "test-host") -> ClientOptions:
    return ClientOptions(
        identity=Identity(OID, Secret(INSTALLATION_KEY)),
        hostname=hostname,
        sensor_seed_key="cloudtrail-tests",
        dest_url=lc.usp_url,
    )


def sqs_config(
    aws_options: AwsOptions, queue_url: str, lc: LimaCharlieEmulator, **source: Any
) -> SourceConfig:
    """An SQS document to the emulator over USP; single-load with short polls by default."""
    defaults: dict[str, Any] = {"single_load": True, "wait_time_seconds": 0}
    return SourceConfig(
        index=1,
        kind="sqs",
        source=SqsSourceOptions(queue_url=queue_url, **(defaults | source)),
        aws=aws_options,
        client_options=usp_client_options(lc),
        webhook=None,
        delivery=DeliveryOptions(batch_max_records=500, batch_linger=0.05),
    )


def s3_config(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    *,
    webhook: bool = False,
    delivery: DeliveryOptions | None = None,
    **source: Any,
) -> SourceConfig:
    """A single-load S3 document to the emulator, over USP or (webhook=True) the webhook."""
    hook = None
    if webhook:
        lc.webhook.register(OID, "cloudtrail", WEBHOOK_SECRET)
        hook = WebhookOptions(url=lc.webhook_url(OID, "cloudtrail"), secret=Secret(WEBHOOK_SECRET))
    return SourceConfig(
        index=1,
        kind="s3",
        source=S3SourceOptions(bucket_name=bucket, **({"single_load": True} | source)),
        aws=aws_options,
        client_options=None if webhook else usp_client_options(lc),
        webhook=hook,
        delivery=delivery or DeliveryOptions(batch_max_records=500, batch_linger=0.05),
    )


def file_config(path: Path, lc: LimaCharlieEmulator, delivery: DeliveryOptions) -> SourceConfig:
    """A file-source document (single-load by default) to the emulator over USP."""
    return SourceConfig(
        index=1,
        kind="file",
        source=FileSourceOptions(path=path),
        aws=AwsOptions(),
        client_options=usp_client_options(lc),
        webhook=None,
        delivery=delivery,
    )


def s3_document(
    endpoint: str, bucket: str, lc: LimaCharlieEmulator, hostname: str, **extra: Any
) -> dict[str, Any]:
    """An `s3:` YAML document, as a daemon child process reads it, to the emulator over USP."""
    client = {
        "hostname": hostname,
        "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
        "platform": "aws",
        "sensor_seed_key": hostname,
        "dest_url": lc.usp_url,
    }
    aws = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION}
    return {
        "s3": {"client_options": client, "bucket_name": bucket, "endpoint_url": endpoint}
        | aws
        | extra
    }
