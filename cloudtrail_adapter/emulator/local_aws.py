"""A local S3 for the demo: moto's own server, unchanged, on 127.0.0.1, reached over HTTP.

Only the demo uses it, and only with the `demo` extra installed (moto in server mode); the
tests' stand-in (tests/support/stand_in.py) adds to it what they need of AWS.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from moto.server import ThreadedMotoServer

# moto accepts any credentials; these only have to be well-formed.
ACCESS_KEY = "AKIAMOTOEXAMPLE00000"
SECRET_KEY = "moto-secret-key-not-a-real-one"  # noqa: S105 (moto takes any)
REGION = "us-east-1"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Yields the endpoint URL of a fresh moto server on a free loopback port."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
