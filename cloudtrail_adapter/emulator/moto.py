"""A local S3/SQS/STS: moto in server mode on 127.0.0.1, reached over real HTTP."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.server import ThreadedMotoServer
from moto.sqs.models import SQSBackend

# moto accepts any credentials; these only have to be well-formed.
ACCESS_KEY = "AKIAMOTOEXAMPLE00000"
SECRET_KEY = "moto-secret-key-not-a-real-one"  # noqa: S105 (moto takes any)
REGION = "us-east-1"
POLL_STEP = 0.02


def _atomic_receive(receive: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """moto checks a message's visibility and marks it received without a lock, while its
    server answers each request on its own thread: two consumers polling at once can both
    take one message. Real SQS hands a message to one receiver per visibility period, and
    the scale-out tests depend on that, so the stand-in takes messages under one lock and
    does its long-poll waiting outside it."""
    lock = threading.Lock()

    @functools.wraps(receive)
    def receive_message(
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with lock:
                got = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(POLL_STEP)

    return receive_message


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Yields the endpoint URL of a fresh moto server on a free loopback port."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    if not hasattr(SQSBackend.receive_message, "__wrapped__"):
        SQSBackend.receive_message = _atomic_receive(SQSBackend.receive_message)  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
