"""One cache for values a task reads from AWS and must see change without a restart.

The secret cache (:mod:`servicekit.secrets`) and the feature flags (:mod:`servicekit.flags`)
share it, as Powertools' parameter providers share ``BaseProvider``; each brings only its
``load``. A cached read is a dict lookup and a clock compare: no lock, no copy, no logging.

- Each entry is loaded again after ``ttl`` seconds, shortened by up to ``jitter`` of it so tasks
  that started together do not all call AWS together. ``load(key, previous)`` gets the value it
  loaded last time (``None`` the first time), so it can check for a change before fetching.
- One thread loads a key at a time; meanwhile the others serve the value held. With
  ``background`` the thread that finds an entry expired does not wait either: the load runs in
  a thread of its own and later reads see its result. The first read of a key always waits.
- When a load raises :class:`Unavailable` (AWS unreachable, throttled, denied) the last good
  value is served, a warning says so, and the next load is tried after ``min(ttl, 30 s)``. A key
  never loaded raises, or serves ``fallback(key)`` (retried likewise) when one is given.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["RETRY_AFTER_FAILURE", "RefreshingCache", "Unavailable"]

V = TypeVar("V")

# A failed load costs its caller the connect timeouts and retries, so during an outage the last
# good value is served this long before AWS is tried again.
RETRY_AFTER_FAILURE = 30.0

_log = logging.getLogger(__name__)


class Unavailable(Exception):
    """A load could not reach its source. ``reason`` says why; it never holds a value."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} is unavailable: {reason}")
        self.reason = reason


class _Entry(Generic[V]):
    """One value as last loaded. Replaced whole on every load, so readers need no lock."""

    __slots__ = ("expires", "value", "verified")

    def __init__(self, value: V, *, verified: float | None, expires: float) -> None:
        self.value = value
        self.verified = verified  # None: the fallback, never loaded
        self.expires = expires


class RefreshingCache(Generic[V]):
    """Values by key, each loaded by ``load`` and loaded again after a jittered ``ttl``.

    ``clock`` (a monotonic clock in seconds) is injectable so tests can move time.
    """

    def __init__(
        self,
        load: Callable[[str, V | None], V],
        *,
        ttl: float,
        jitter: float = 0.1,
        background: bool = False,
        fallback: Callable[[str], V] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or not 0 <= jitter < 1:
            raise ValueError("ttl must be positive and jitter in [0, 1)")
        self._loader = load
        self._ttl = ttl
        self._jitter = jitter
        self._background = background
        self._fallback = fallback
        self._clock = clock
        self._entries: dict[str, _Entry[V]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, key: str) -> V:
        """The value of ``key``, loaded again first (or beside, with ``background``) once due."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires > self._clock():
            return entry.value
        if entry is None:
            return self._load_once(key, None, wait=True).value
        if self._background:
            self._load_in_background(key, entry)
            return entry.value
        return self._load_once(key, entry, wait=False).value

    def refresh(self, key: str) -> V:
        """Load ``key`` now, whatever its TTL (after a caller saw the value fail), and return it."""
        return self._load_once(key, self._entries.get(key), wait=True).value

    def _lock_for(self, key: str) -> threading.Lock:
        lock = self._locks.get(key)
        if lock is None:
            with self._locks_guard:
                lock = self._locks.setdefault(key, threading.Lock())
        return lock

    def _load_once(self, key: str, seen: _Entry[V] | None, *, wait: bool) -> _Entry[V]:
        """Load ``key`` unless another thread is at it (without ``wait``: ``seen`` is served)."""
        lock = self._lock_for(key)
        if not lock.acquire(blocking=wait):
            assert seen is not None, "only a cached entry may be served without waiting"
            return seen
        try:
            return self._load_locked(key, seen)
        finally:
            lock.release()

    def _load_in_background(self, key: str, seen: _Entry[V]) -> None:
        lock = self._lock_for(key)
        if not lock.acquire(blocking=False):
            return  # a load is under way

        def run() -> None:
            try:
                self._load_locked(key, seen)
            finally:
                lock.release()

        try:
            threading.Thread(target=run, name=f"refresh {key}", daemon=True).start()
        except BaseException:
            lock.release()
            raise

    def _load_locked(self, key: str, seen: _Entry[V] | None) -> _Entry[V]:
        current = self._entries.get(key)
        if current is not None and current is not seen:
            return current  # another thread loaded it while this one waited for the lock
        entry = self._load(key, current)
        self._entries[key] = entry
        return entry

    def _load(self, key: str, current: _Entry[V] | None) -> _Entry[V]:
        now = self._clock()
        try:
            value = self._loader(key, None if current is None else current.value)
        except Unavailable as error:
            retry = now + self._jittered(min(self._ttl, RETRY_AFTER_FAILURE))
            if current is not None and current.verified is not None:
                _log.warning(
                    "%s could not be loaded; serving the last good value (loaded %.0f s ago): %s",
                    key,
                    now - current.verified,
                    error.reason,
                )
                return _Entry(current.value, verified=current.verified, expires=retry)
            if self._fallback is None:
                raise
            _log.warning("%s could not be loaded; serving its fallback: %s", key, error.reason)
            return _Entry(self._fallback(key), verified=None, expires=retry)
        return _Entry(value, verified=now, expires=now + self._jittered(self._ttl))

    def _jittered(self, seconds: float) -> float:
        # Jitter only shortens: `ttl` stays the upper bound on how stale a value can be.
        return seconds * (1 - self._jitter * random.random())  # noqa: S311 - spread, not crypto
