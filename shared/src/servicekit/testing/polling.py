"""Waiting for a condition with a deadline: the tests' replacement for sleeps."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

__all__ = ["answers_ok", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 20.0, what: str = "", interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def answers_ok(url: str, timeout: float = 1.0) -> bool:
    """``url`` answers 200 now; a server still starting (refused, reset, an error status) does
    not. The predicate for ``wait_until`` when something comes up on HTTP."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - test URLs
            return bool(response.status == 200)
    except OSError:  # URLError, HTTPError, refused, reset, timed out
        return False
