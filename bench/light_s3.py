"""A light S3 for the organisation row (bench/org.py), in a process of its own.

moto spends 3-4 ms of CPU per ListObjectsV2 on these two cores, which is more than the
daemon's own work and would make a 17,000-stream row both slow and unfair to measure
(the machine is shared). This serves only what the row needs, path-style, from memory,
on aiohttp's low-level server: ListObjectsV2 (prefix, delimiter, start-after,
continuation-token, max-keys), GetObject, HeadObject, HeadBucket and PutObject; no
authentication (the daemon still signs every request, as it would for AWS). It also
remembers, per key, when it landed and when it was first fetched, and counts requests by
kind: the row's latencies and call counts are the stand-in's, not the daemon's word.

`POST /_bench/put` lands keys in bulk ({"keys": [...], "body": base64}), each at the
moment it is stored; `GET /_bench/stats` gives the counts; `POST /_bench/objects`
({"keys": [...]}) gives each key's landing time, first GET and GET count.

Run as `python -m bench.light_s3`; it prints its URL, and serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Final
from urllib.parse import unquote
from xml.sax.saxutils import escape

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

__all__ = ["serve"]

MAX_KEYS: Final = 1000
_XML: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NS: Final = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


@dataclass
class _Object:
    body: bytes
    etag: str
    landed: float  # time.time() when stored
    modified: str  # ISO 8601, as ListObjectsV2 writes LastModified
    first_get: float | None = None
    gets: int = 0


@dataclass
class _Bucket:
    objects: dict[str, _Object] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # sorted

    def put(self, key: str, body: bytes, etag: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))
        if key not in self.objects:
            bisect.insort(self.names, key)
        self.objects[key] = _Object(body, etag, now, stamp)


@dataclass
class _Store:
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def bucket(self, name: str) -> _Bucket:
        return self.buckets.setdefault(name, _Bucket())


def _etag(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _listing(bucket: _Bucket, name: str, query: dict[str, str]) -> str:
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    limit = min(int(query.get("max-keys", MAX_KEYS)), MAX_KEYS)
    token = query.get("continuation-token")
    after = (
        base64.urlsafe_b64decode(token).decode() if token else "K" + query.get("start-after", "")
    )
    names = bucket.names
    at = bisect.bisect_left(names, prefix)
    if after[0] == "F":  # past a whole folder (a common prefix) the last page ended on
        at = max(at, bisect.bisect_left(names, after[1:] + "\U0010ffff"))
    elif after[1:] > prefix:
        at = max(at, bisect.bisect_right(names, after[1:]))
    contents: list[str] = []
    folders: list[str] = []
    last = ""
    truncated = False
    while at < len(names) and names[at].startswith(prefix):
        if len(contents) + len(folders) >= limit:
            truncated = True
            break
        key = names[at]
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            folder = key[: cut + len(delimiter)]
            folders.append(f"<CommonPrefixes><Prefix>{escape(folder)}</Prefix></CommonPrefixes>")
            last = "F" + folder
            at = bisect.bisect_left(names, folder + "\U0010ffff", at)
            continue
        obj = bucket.objects[key]
        contents.append(
            f"<Contents><Key>{escape(key)}</Key><LastModified>{obj.modified}</LastModified>"
            f'<ETag>"{obj.etag}"</ETag><Size>{len(obj.body)}</Size>'
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
        last = "K" + key
        at += 1
    parts = [
        f"{_XML}<ListBucketResult {_NS}><Name>{escape(name)}</Name>",
        f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents) + len(folders)}</KeyCount>",
        f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
    ]
    if delimiter:
        parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
    if truncated:
        next_token = base64.urlsafe_b64encode(last.encode()).decode()
        parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
    parts += contents + folders
    parts.append("</ListBucketResult>")
    return "".join(parts)


def _missing(key: str) -> web.Response:
    body = f"{_XML}<Error><Code>NoSuchKey</Code><Key>{escape(key)}</Key></Error>"
    return web.Response(status=404, text=body, content_type="application/xml")


class _Handler:
    def __init__(self, store: _Store) -> None:
        self._store = store

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_bench/"):
            return await self._bench(request, path[len("/_bench/") :])
        bucket_name, _, raw_key = path.lstrip("/").partition("/")
        key = unquote(raw_key)
        bucket = self._store.bucket(bucket_name)
        method = request.method
        if not key:
            if method == "GET" and request.query.get("list-type") == "2":
                self._store.requests["list"] += 1
                text = _listing(bucket, bucket_name, dict(request.query))
                return web.Response(text=text, content_type="application/xml")
            self._store.requests["other"] += 1
            return web.Response(headers={"x-amz-bucket-region": "us-east-1"})
        if method == "PUT":
            self._store.requests["put"] += 1
            body = await request.read()
            etag = _etag(body)
            bucket.put(key, body, etag)
            return web.Response(headers={"ETag": f'"{etag}"'})
        obj = bucket.objects.get(key)
        kind = "get" if method == "GET" else "head"
        self._store.requests[kind] += 1
        if obj is None:
            return _missing(key)
        headers = {
            "ETag": f'"{obj.etag}"',
            "Last-Modified": formatdate(obj.landed, usegmt=True),
            "Content-Length": str(len(obj.body)),
            "Content-Type": "application/octet-stream",
        }
        if method == "HEAD":
            return web.Response(headers=headers)
        obj.gets += 1
        if obj.first_get is None:
            obj.first_get = time.time()
        return web.Response(body=obj.body, headers=headers)

    async def _bench(self, request: BaseRequest, what: str) -> web.Response:
        if what == "stats":
            return web.Response(body=orjson.dumps(dict(self._store.requests)))
        asked = orjson.loads(await request.read())
        bucket = self._store.bucket(asked["bucket"])
        if what == "put":
            body = base64.b64decode(asked["body"])
            etag = _etag(body)
            for key in asked["keys"]:
                bucket.put(key, body, etag)
            return web.Response(body=orjson.dumps({"landed": len(asked["keys"])}))
        found = {}
        for key in asked["keys"]:
            obj = bucket.objects.get(key)
            if obj is not None:
                found[key] = (obj.landed, obj.first_get, obj.gets)
        return web.Response(body=orjson.dumps(found))


async def serve() -> None:
    server = web.Server(_Handler(_Store()), access_log=None)
    runner = web.ServerRunner(server, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
