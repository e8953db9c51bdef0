"""Serving an :class:`~issuer.app.Issuer` on a thread: the API's tests and benchmark run it so."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from issuer.app import Issuer

__all__ = ["serving"]

_START_TIMEOUT = 10.0


@contextmanager
def serving(issuer: Issuer, port: int, host: str = "127.0.0.1") -> Iterator[Issuer]:
    """Serve ``issuer`` on ``host:port`` until the block ends (its ``config.url`` should match)."""
    server = uvicorn.Server(
        uvicorn.Config(issuer.app(), host=host, port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="issuer", daemon=True)
    thread.start()
    try:
        if not _wait(lambda: server.started or not thread.is_alive(), _START_TIMEOUT):
            raise RuntimeError(f"the issuer did not start on {host}:{port}")
        if not server.started:
            raise RuntimeError(f"the issuer could not listen on {host}:{port}")
        yield issuer
    finally:
        server.should_exit = True
        thread.join(_START_TIMEOUT)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    # uvicorn has no start event to wait on; this package does not depend on servicekit's poll.
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
