"""RefreshingCache with loaders of the test's own: expiry, jitter, outages, fallback, threads.

What the secrets and the flags load through it is tested against moto in their own files.
"""

from __future__ import annotations

import logging
import threading

import pytest

from servicekit.cache import RETRY_AFTER_FAILURE, RefreshingCache, Unavailable
from servicekit.testing import wait_until


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A value source the test controls: its value, whether it answers, and its loads."""

    def __init__(self, value: str = "v1") -> None:
        self.value = value
        self.down = False
        self.loads: list[str | None] = []  # what each load was handed as the previous value
        self.hold: threading.Event | None = None
        self.holding = threading.Event()

    def load(self, key: str, previous: str | None) -> str:
        self.loads.append(previous)
        if self.hold is not None:
            self.holding.set()
            assert self.hold.wait(10), "the test never released the load"
        if self.down:
            raise Unavailable(key, "connection refused")
        return self.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source() -> Source:
    return Source()


def test_a_value_is_loaded_once_per_ttl_and_jitter_only_shortens_it(
    source: Source, clock: Clock
) -> None:
    cache = RefreshingCache(source.load, ttl=60, jitter=0.1, clock=clock)
    assert cache.get("k") == "v1"
    source.value = "v2"
    clock.now += 53.9  # 54 s at the least
    assert cache.get("k") == "v1"
    assert source.loads == [None]
    clock.now += 6.2  # past 60 s: due, whatever the jitter
    assert cache.get("k") == "v2"
    assert source.loads == [None, "v1"]  # the load is handed what it loaded before


def test_keys_are_independent(source: Source, clock: Clock) -> None:
    cache = RefreshingCache(lambda key, _: key.upper(), ttl=60, clock=clock)
    assert (cache.get("a"), cache.get("b")) == ("A", "B")


def test_refresh_loads_at_once(source: Source, clock: Clock) -> None:
    cache = RefreshingCache(source.load, ttl=60, clock=clock)
    assert cache.get("k") == "v1"
    source.value = "v2"
    assert cache.refresh("k") == "v2"
    assert cache.get("k") == "v2"


def test_an_outage_serves_the_last_good_value_warns_and_retries_later(
    source: Source, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RefreshingCache(source.load, ttl=300, jitter=0.1, clock=clock)
    assert cache.get("k") == "v1"
    clock.now += 301
    source.down = True
    with caplog.at_level(logging.WARNING, logger="servicekit.cache"):
        assert cache.get("k") == "v1"
    assert "k could not be loaded; serving the last good value (loaded 301 s ago)" in caplog.text
    assert "connection refused" in caplog.text

    source.down, source.value = False, "v2"
    clock.now += RETRY_AFTER_FAILURE * 0.9 - 0.1  # the retry delay is jittered too
    assert cache.get("k") == "v1"
    clock.now += RETRY_AFTER_FAILURE * 0.1 + 0.2
    assert cache.get("k") == "v2"


def test_a_key_never_loaded_raises_during_an_outage(source: Source, clock: Clock) -> None:
    source.down = True
    cache = RefreshingCache(source.load, ttl=60, clock=clock)
    with pytest.raises(Unavailable, match="k is unavailable: connection refused"):
        cache.get("k")
    source.down = False
    assert cache.get("k") == "v1"  # nothing was stored: the next read tries at once


def test_a_fallback_is_served_while_never_loaded_and_retried_after_the_delay(
    source: Source, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    source.down = True
    cache = RefreshingCache(source.load, ttl=60, fallback=lambda key: f"default {key}", clock=clock)
    with caplog.at_level(logging.WARNING, logger="servicekit.cache"):
        assert cache.get("k") == "default k"
        clock.now += RETRY_AFTER_FAILURE + 1
        assert cache.get("k") == "default k"  # still down: the fallback, not a "last good value"
    assert "last good value" not in caplog.text
    assert caplog.text.count("serving its fallback") == 2

    source.down = False
    clock.now += RETRY_AFTER_FAILURE + 1
    assert cache.get("k") == "v1"


def test_readers_keep_reading_while_one_thread_loads(source: Source, clock: Clock) -> None:
    cache = RefreshingCache(source.load, ttl=60, clock=clock)
    assert cache.get("k") == "v1"
    source.value, source.hold = "v2", threading.Event()
    clock.now += 61
    refreshed: list[str] = []
    loader = threading.Thread(target=lambda: refreshed.append(cache.get("k")))
    loader.start()
    assert source.holding.wait(10)

    seen = [cache.get("k") for _ in range(100)]  # due too, but the load is under way
    assert set(seen) == {"v1"}
    assert len(source.loads) == 2

    source.hold.set()
    loader.join(10)
    assert refreshed == ["v2"]
    assert cache.get("k") == "v2"


def test_first_reads_from_many_threads_load_once(source: Source) -> None:
    cache = RefreshingCache(source.load, ttl=60)
    start = threading.Barrier(8)
    results: list[str] = []

    def read() -> None:
        start.wait(10)
        results.append(cache.get("k"))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["v1"] * 8
    assert source.loads == [None]


def test_in_the_background_a_due_read_returns_at_once_and_later_reads_see_the_load(
    source: Source, clock: Clock
) -> None:
    cache = RefreshingCache(source.load, ttl=60, background=True, clock=clock)
    assert cache.get("k") == "v1"
    source.value, source.hold = "v2", threading.Event()
    clock.now += 61

    assert cache.get("k") == "v1"  # while the load is held, not after it
    assert source.holding.wait(10)
    assert [cache.get("k") for _ in range(10)] == ["v1"] * 10
    assert len(source.loads) == 2  # one load under way, not one per read

    source.hold.set()
    wait_until(lambda: cache.get("k") == "v2", 10, "the background load")


def test_a_bad_ttl_or_jitter_is_refused(source: Source) -> None:
    with pytest.raises(ValueError, match="ttl"):
        RefreshingCache(source.load, ttl=0)
    with pytest.raises(ValueError, match="jitter"):
        RefreshingCache(source.load, ttl=1, jitter=1)
