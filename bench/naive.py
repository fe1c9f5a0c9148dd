"""The script a user would write instead of the daemon: the bench's "naive" row.

Single-threaded and obvious: list the bucket with boto3, GetObject each object,
`gzip.decompress`, `json.loads`, one `json.dumps` per record, and POST newline-delimited
batches of 500 records to a LimaCharlie webhook with `requests`. No checkpoint, no retry,
no acknowledgement tracking: only the work, so its speed is a fair "what you would get".

Run by the bench as a child process (so its CPU and memory are its own):

    python -m bench.naive --endpoint URL --bucket B --webhook URL

AWS credentials come from the usual environment variables, the webhook secret from
`LC_WEBHOOK_SECRET` (never on the command line). Prints one JSON line at the end:
`{"records": N, "objects": M, "seconds": S}` (seconds from the first listing to the last
answered POST, interpreter start-up and imports excluded).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import requests

BATCH = 500


def keys(s3: Any, bucket: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            yield str(item["Key"])


def post(session: Any, url: str, lines: list[str]) -> None:
    answer = session.post(
        url, data="\n".join(lines).encode(), headers={"Content-Type": "application/x-ndjson"}
    )
    answer.raise_for_status()


def ship(endpoint: str, bucket: str, webhook: str, secret: str) -> tuple[int, int]:
    """Every record of every object in the bucket to the webhook: (records, objects)."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    session = requests.Session()
    session.headers["lc-secret"] = secret
    pending: list[str] = []
    records = objects = 0
    for key in keys(s3, bucket):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        document = json.loads(gzip.decompress(body))
        objects += 1
        for record in document.get("Records", []):  # digest files have none
            pending.append(json.dumps(record))
            if len(pending) == BATCH:
                post(session, webhook, pending)
                records += len(pending)
                pending = []
    if pending:
        post(session, webhook, pending)
        records += len(pending)
    return records, objects


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive")
    parser.add_argument("--endpoint", required=True, help="S3 endpoint URL")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--webhook", required=True, help="webhook URL, without the secret")
    args = parser.parse_args()
    secret = os.environ.get("LC_WEBHOOK_SECRET", "")
    started = time.perf_counter()
    records, objects = ship(args.endpoint, args.bucket, args.webhook, secret)
    seconds = time.perf_counter() - started
    print(json.dumps({"records": records, "objects": objects, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
