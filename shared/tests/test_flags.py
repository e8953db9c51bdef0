"""FeatureFlags against moto's Parameter Store: layout, typing, TTL, outages."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, Field

from servicekit import aws
from servicekit.flags import BUDGET, FeatureFlags
from servicekit.testing import MotoServer, wait_until

SHARED = "/suite/test/shared/flags"
SERVICE = "/suite/test/api/flags"


class Flags(BaseModel):
    new_checkout: bool = False
    batch_size: int = Field(default=10, ge=1)
    sample_rate: float = 0.5
    regions: list[str] = ["eu-west-1"]
    tiers: list[str] = []
    banner: str = "hello"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ssm(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return aws.client("ssm")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def put(ssm: Any, name: str, value: str, kind: str = "String") -> None:
    ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)


def flags_for(clock: Clock, ttl: float = 30.0) -> FeatureFlags[Flags]:
    return FeatureFlags(Flags, app="suite", env="test", service="api", ttl=ttl, clock=clock)


def test_missing_flags_take_their_declared_defaults(ssm: Any, clock: Clock) -> None:
    assert flags_for(clock).get() == Flags()


def test_values_are_typed_and_the_service_overrides_shared(ssm: Any, clock: Clock) -> None:
    put(ssm, f"{SHARED}/New-Checkout", "true")
    put(ssm, f"{SHARED}/batch_size", "20")
    put(ssm, f"{SERVICE}/batch_size", "30")
    put(ssm, f"{SHARED}/sample_rate", "0.25", "SecureString")
    put(ssm, f"{SERVICE}/regions", '["us-east-1", "eu-west-1"]')
    put(ssm, f"{SERVICE}/tiers", "gold,silver", "StringList")
    put(ssm, f"{SERVICE}/not_a_flag", "ignored")
    put(ssm, "/suite/test/worker/flags/banner", "another service's")
    put(ssm, "/suite/test/api/banner", "a setting, not a flag")

    assert flags_for(clock).get() == Flags(
        new_checkout=True,
        batch_size=30,
        sample_rate=0.25,
        regions=["us-east-1", "eu-west-1"],
        tiers=["gold", "silver"],
    )


def test_every_page_of_both_paths_is_read(ssm: Any, clock: Clock) -> None:
    for index in range(14):
        put(ssm, f"{SERVICE}/unrelated_{index:02}", "x")
    put(ssm, f"{SERVICE}/zz", "x")
    put(ssm, f"{SERVICE}/banner", "from the last page")
    calls: list[str] = []
    aws.client("ssm", budget=BUDGET).meta.events.register(
        "before-call.ssm.GetParametersByPath", lambda **_: calls.append("call")
    )

    assert flags_for(clock).get().banner == "from the last page"
    assert len(calls) == 3  # 16 service parameters: two pages; the empty shared path: one


def test_a_changed_flag_is_seen_after_the_ttl(ssm: Any, clock: Clock) -> None:
    put(ssm, f"{SERVICE}/new_checkout", "false")
    put(ssm, f"{SERVICE}/batch_size", "5")
    flags = flags_for(clock, ttl=30)
    assert flags.get().new_checkout is False

    put(ssm, f"{SERVICE}/new_checkout", "true")
    ssm.delete_parameter(Name=f"{SERVICE}/batch_size")
    clock.now += 20  # jitter shortens the TTL by at most 10 %: 27 s at the least
    assert flags.get().new_checkout is False
    clock.now += 11
    # The expired flags are served while the background read runs; then the new ones.
    refreshed(flags, lambda found: found == Flags(new_checkout=True))  # batch_size: the default


def test_an_invalid_value_keeps_the_previous_one_and_warns(
    ssm: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    put(ssm, f"{SERVICE}/batch_size", "0")  # below the field's minimum
    put(ssm, f"{SERVICE}/sample_rate", "0.75")
    flags = flags_for(clock)
    with caplog.at_level(logging.WARNING, logger="servicekit.flags"):
        assert flags.get() == Flags(sample_rate=0.75)
    assert f"{SERVICE}/batch_size" in caplog.text

    put(ssm, f"{SERVICE}/batch_size", "25")
    clock.now += 31
    refreshed(flags, lambda found: found.batch_size == 25)
    put(ssm, f"{SERVICE}/batch_size", "lots")
    clock.now += 31
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="servicekit.flags"):
        flags.get()
        wait_until(
            lambda: "lots" not in caplog.text and "batch_size" in caplog.text, 10, "a warning"
        )
    assert flags.get() == Flags(batch_size=25, sample_rate=0.75)


def test_an_outage_serves_the_last_known_good_flags_and_warns(
    ssm: Any, clock: Clock, aws_env: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    put(ssm, f"{SERVICE}/new_checkout", "true")
    flags = flags_for(clock)
    assert flags.get().new_checkout is True

    clock.now += 31
    with aws_env.outage(), caplog.at_level(logging.WARNING, logger="servicekit.cache"):
        assert flags.get().new_checkout is True
        wait_until(lambda: "last good value" in caplog.text, 20, "the outage's warning")
    assert flags.get().new_checkout is True

    # Back online: read again after the retry delay.
    put(ssm, f"{SERVICE}/new_checkout", "false")
    clock.now += 31
    refreshed(flags, lambda found: found.new_checkout is False)


def test_flags_never_read_fall_back_to_defaults_during_an_outage(
    ssm: Any, clock: Clock, aws_env: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    put(ssm, f"{SERVICE}/new_checkout", "true")
    flags = flags_for(clock)
    with aws_env.outage(), caplog.at_level(logging.WARNING, logger="servicekit.cache"):
        assert flags.get() == Flags()
    assert "fallback" in caplog.text
    clock.now += 31
    refreshed(flags, lambda found: found.new_checkout is True)


def test_a_refresh_never_holds_the_caller_while_parameter_store_hangs(
    ssm: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(ssm, f"{SERVICE}/new_checkout", "true")
    flags = flags_for(clock)
    assert flags.get().new_checkout is True
    # An endpoint that accepts connections and never answers: what a paused emulator or a
    # black-holed network path looks like to botocore.
    with socket.create_server(("127.0.0.1", 0)) as hole:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.getsockname()[1]}")
        aws.reset_clients()
        clock.now += 31
        started = time.monotonic()
        for _ in range(100):
            assert flags.get().new_checkout is True
        # Not one read's wait: the re-read runs beside the callers.
        assert time.monotonic() - started < BUDGET.read_timeout


def refreshed(flags: FeatureFlags[Flags], seen: Callable[[Flags], bool]) -> None:
    """Until the background re-read an expired ``get`` started brings what ``seen`` wants."""
    wait_until(lambda: seen(flags.get()), 10, "the flags' background re-read")


def test_every_flag_needs_a_default() -> None:
    class Undeclared(BaseModel):
        enabled: bool

    with pytest.raises(TypeError, match="enabled"):
        FeatureFlags(Undeclared, app="suite", env="test", service="api")
