"""SecretCache against moto's HTTP server: rotation, version checks, outages, threads."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from servicekit import aws
from servicekit.logging import redact
from servicekit.secrets import SecretCache, SecretUnavailable, default_cache
from servicekit.testing import MotoServer, wait_until

SECRET_ID = "suite/test/api-key"
OLD = "old-value-4f1c9a7e"
NEW = "new-value-8d2b6e31"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class DbSecret(BaseModel):
    host: str
    username: str
    password: SecretStr


@pytest.fixture
def sm(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    # One attempt: an outage should fail at once rather than after botocore's retries.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    client = aws.client("secretsmanager")
    client.create_secret(Name=SECRET_ID, SecretString=OLD)
    return client


@pytest.fixture
def clock() -> Clock:
    return Clock()


def rotate(sm: Any, secret_id: str, value: str) -> None:
    """What a rotation Lambda does: a pending version, then AWSCURRENT moved onto it."""
    stages = sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    old_version = next(v for v, s in stages.items() if "AWSCURRENT" in s)
    new_version = sm.put_secret_value(
        SecretId=secret_id, SecretString=value, VersionStages=["AWSPENDING"]
    )["VersionId"]
    sm.update_secret_version_stage(
        SecretId=secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=new_version,
        RemoveFromVersionId=old_version,
    )


def count_calls(client: Any, operation: str) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        f"before-call.secretsmanager.{operation}", lambda **_: calls.append(operation)
    )
    return calls


def test_rotation_reaches_the_cache_after_the_ttl(sm: Any, clock: Clock) -> None:
    cache = SecretCache(ttl=60, clock=clock)
    assert cache.get(SECRET_ID) == OLD
    rotate(sm, SECRET_ID, NEW)

    clock.advance(50)  # jitter shortens the TTL by at most 10 %: 54 s at the least
    assert cache.get(SECRET_ID) == OLD
    clock.advance(11)
    assert cache.get(SECRET_ID) == NEW


def test_refresh_serves_the_rotated_value_at_once(sm: Any, clock: Clock) -> None:
    cache = SecretCache(ttl=60, clock=clock)
    assert cache.get(SECRET_ID) == OLD
    rotate(sm, SECRET_ID, NEW)
    assert cache.get(SECRET_ID) == OLD

    assert cache.refresh(SECRET_ID) == NEW
    assert cache.get(SECRET_ID) == NEW


def test_a_check_fetches_the_value_only_when_awscurrent_moved(sm: Any, clock: Clock) -> None:
    gets = count_calls(sm, "GetSecretValue")
    describes = count_calls(sm, "DescribeSecret")
    cache = SecretCache(ttl=60, clock=clock)

    assert cache.get(SECRET_ID) == OLD
    assert (len(describes), len(gets)) == (0, 1)
    clock.advance(61)
    assert cache.get(SECRET_ID) == OLD
    assert cache.refresh(SECRET_ID) == OLD
    assert (len(describes), len(gets)) == (2, 1)

    rotate(sm, SECRET_ID, NEW)
    describes.clear()
    assert cache.refresh(SECRET_ID) == NEW
    assert (len(describes), len(gets)) == (1, 2)


def test_outage_serves_the_last_good_value_and_warns(
    sm: Any, clock: Clock, aws_env: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = SecretCache(ttl=60, clock=clock)
    assert cache.get(SECRET_ID) == OLD
    clock.advance(61)

    with aws_env.outage(), caplog.at_level(logging.WARNING, logger="servicekit.cache"):
        assert cache.get(SECRET_ID) == OLD
        assert cache.refresh(SECRET_ID) == OLD

    warnings = [r for r in caplog.records if r.name == "servicekit.cache"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert SECRET_ID in warnings[0].getMessage()
    assert "last good value" in warnings[0].getMessage()
    assert OLD not in caplog.text

    # Back online: the next check (no sooner than the retry delay) sees a rotation again.
    rotate(sm, SECRET_ID, NEW)
    assert cache.get(SECRET_ID) == OLD
    clock.advance(31)
    assert cache.get(SECRET_ID) == NEW


def test_a_secret_never_fetched_is_unavailable_during_an_outage(
    sm: Any, aws_env: MotoServer
) -> None:
    cache = SecretCache()
    with aws_env.outage(), pytest.raises(SecretUnavailable) as caught:
        cache.get(SECRET_ID)

    error = caught.value
    assert error.secret_id == SECRET_ID
    assert SECRET_ID in str(error)
    assert "connect" in error.reason.lower()
    everything = "".join(traceback.format_exception(error)) + repr(error)
    assert OLD not in everything


def test_missing_secret_names_the_id_and_the_aws_error(sm: Any) -> None:
    with pytest.raises(SecretUnavailable, match=r"suite/test/nope.*ResourceNotFoundException"):
        SecretCache().get("suite/test/nope")


def test_model_is_parsed_once_per_version_and_its_secrets_registered(sm: Any, clock: Clock) -> None:
    secret_id = "suite/test/db"
    sm.create_secret(
        Name=secret_id,
        SecretString='{"host": "db", "username": "app", "password": "pw-1-a8f3c2"}',
    )
    cache = SecretCache(ttl=60, clock=clock)

    first = cache.get_model(secret_id, DbSecret)
    assert first.password.get_secret_value() == "pw-1-a8f3c2"
    assert cache.get_model(secret_id, DbSecret) is first
    assert redact("password=pw-1-a8f3c2") == "password=***"

    rotate(sm, secret_id, '{"host": "db", "username": "app", "password": "pw-2-77d0e4"}')
    clock.advance(61)
    second = cache.get_model(secret_id, DbSecret)
    assert second is not first
    assert second.password.get_secret_value() == "pw-2-77d0e4"
    assert redact("pw-2-77d0e4") == "***"


def test_a_secret_that_does_not_fit_the_model_never_shows_its_value(sm: Any) -> None:
    sm.create_secret(Name="suite/test/bad", SecretString='{"host": "db", "pass": "hunter2-xyz"}')
    with pytest.raises(SecretUnavailable) as caught:
        SecretCache().get_model("suite/test/bad", DbSecret)
    assert "username" in str(caught.value)
    everything = "".join(traceback.format_exception(caught.value))
    assert "hunter2-xyz" not in everything


def test_readers_keep_reading_while_one_thread_refreshes(sm: Any, clock: Clock) -> None:
    cache = SecretCache(ttl=60, clock=clock)
    assert cache.get(SECRET_ID) == OLD
    rotate(sm, SECRET_ID, NEW)

    # Hold the refresh inside its DescribeSecret call until the readers are done.
    in_refresh, release = threading.Event(), threading.Event()

    def hold(**_: object) -> None:
        in_refresh.set()
        release.wait(10)

    describes = count_calls(sm, "DescribeSecret")
    sm.meta.events.register("before-call.secretsmanager.DescribeSecret", hold)
    refreshed: list[str] = []
    refresher = threading.Thread(target=lambda: refreshed.append(cache.refresh(SECRET_ID)))
    refresher.start()
    assert in_refresh.wait(10)
    clock.advance(61)  # expired too: readers would check if they could

    seen: list[set[str]] = []

    def read() -> None:
        seen.append({cache.get(SECRET_ID) for _ in range(2000)})

    readers = [threading.Thread(target=read) for _ in range(16)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    assert not any(reader.is_alive() for reader in readers), "a reader waited for the refresh"
    assert seen == [{OLD}] * 16

    release.set()
    refresher.join(10)
    assert refreshed == [NEW]
    assert len(describes) == 1  # the readers never checked, though the entry had expired


@pytest.fixture
def short_time_slices() -> Iterator[None]:
    """moto answers in this process: spinning readers would starve it at the default 5 ms slice."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("short_time_slices")
def test_many_threads_reading_through_a_rotation_always_get_a_valid_value(sm: Any) -> None:
    cache = SecretCache(ttl=0.05)
    assert cache.get(SECRET_ID) == OLD
    valid, invalid = {OLD, NEW}, []
    saw_new = threading.Event()
    gets = count_calls(sm, "GetSecretValue")

    def read() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            value = cache.get(SECRET_ID)
            if value not in valid:
                invalid.append(value)
            if value == NEW:
                saw_new.set()
                return

    readers = [threading.Thread(target=read) for _ in range(12)]
    for reader in readers:
        reader.start()
    rotate(sm, SECRET_ID, NEW)
    wait_until(saw_new.is_set, 10, "a reader to see the new value")
    for reader in readers:
        reader.join(10)
    assert invalid == []
    # One thread fetched the new version; the others were served by the cache.
    assert len(gets) == 1


def test_first_reads_from_many_threads_fetch_once(sm: Any) -> None:
    gets = count_calls(sm, "GetSecretValue")
    cache = SecretCache()
    start = threading.Barrier(8)
    results: list[str] = []

    def read() -> None:
        start.wait(10)
        results.append(cache.get(SECRET_ID))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [OLD] * 8
    assert len(gets) == 1


def test_default_cache_is_one_per_process() -> None:
    assert default_cache() is default_cache()
