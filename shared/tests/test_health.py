"""Health checks: separate kinds, per-check deadlines, short secret-free reasons."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from servicekit.health import HealthRegistry, HealthReport, HealthServer
from servicekit.lifecycle import Lifecycle
from servicekit.logging import register_secret
from servicekit.testing import wait_until


def passing() -> None:
    pass


def refused() -> None:
    raise ConnectionRefusedError("connection refused by db:5432")


@pytest.fixture
def hung() -> Iterator[threading.Event]:
    """Set to release the checks that block on it (a dependency that never answers)."""
    release = threading.Event()
    yield release
    release.set()


def test_all_passing_is_ok() -> None:
    registry = HealthRegistry()
    registry.add_readiness("database", passing)
    registry.add_readiness("queue", passing)

    report = registry.readiness()
    assert report == HealthReport(ok=True, checks={"database": "ok", "queue": "ok"})
    assert report.as_dict() == {"status": "ok", "checks": {"database": "ok", "queue": "ok"}}


def test_no_checks_is_ok() -> None:
    assert HealthRegistry().liveness().ok


def test_a_failure_names_the_check_and_the_reason() -> None:
    registry = HealthRegistry()
    registry.add_readiness("database", refused)
    registry.add_readiness("queue", passing)

    report = registry.readiness()
    assert not report.ok
    assert report.checks == {
        "database": "ConnectionRefusedError: connection refused by db:5432",
        "queue": "ok",
    }
    assert report.as_dict()["status"] == "fail"


def test_liveness_and_readiness_are_separate() -> None:
    registry = HealthRegistry()
    registry.add_liveness("loop", passing)
    registry.add_readiness("database", refused)
    registry.add_readiness("loop", passing)  # the same name in the other kind is fine

    assert registry.liveness() == HealthReport(ok=True, checks={"loop": "ok"})
    assert not registry.readiness().ok
    with pytest.raises(ValueError, match="readiness check 'database' is already registered"):
        registry.add_readiness("database", passing)


def test_a_hung_check_times_out_without_holding_the_others(hung: threading.Event) -> None:
    calls: list[int] = []

    def stuck() -> None:
        calls.append(1)
        hung.wait()

    registry = HealthRegistry(timeout=5.0)
    registry.add_readiness("database", stuck, timeout=0.2)
    registry.add_readiness("queue", passing)

    started = time.monotonic()
    report = registry.readiness()
    # Bounded by the check's deadline, far below anything a hang would take.
    assert time.monotonic() - started < 4.0
    assert report.checks == {"database": "timed out after 0.2s", "queue": "ok"}

    # Still stuck: the next probe waits on the same call rather than starting another.
    assert registry.readiness().checks["database"] == "timed out after 0.2s"
    assert calls == [1]

    hung.set()
    deadline = time.monotonic() + 10
    while not (report := registry.readiness()).ok:
        assert time.monotonic() < deadline, report
    assert report.checks["database"] == "ok"


def test_reasons_are_short_single_lines_without_secrets() -> None:
    secret = "health-check-s3cret"
    register_secret(secret)

    def leaky() -> None:
        raise RuntimeError(f"password authentication failed: {secret}\nDETAIL: {secret}")

    def verbose() -> None:
        raise ValueError("x" * 500)

    def exits() -> None:
        raise SystemExit(3)

    registry = HealthRegistry()
    registry.add_readiness("leaky", leaky)
    registry.add_readiness("verbose", verbose)
    registry.add_readiness("exits", exits)
    checks = registry.readiness().checks

    assert checks["leaky"] == "RuntimeError: password authentication failed: ***"
    assert len(checks["verbose"]) == 200
    assert checks["verbose"].endswith("...")
    assert checks["exits"] == "RuntimeError: check raised SystemExit"
    assert all("Traceback" not in reason and "\n" not in reason for reason in checks.values())


def test_transitions_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    healthy = threading.Event()

    def flaky() -> None:
        if not healthy.is_set():
            raise ConnectionError("timeout")

    registry = HealthRegistry()
    registry.add_readiness("database", flaky)
    with caplog.at_level("INFO", logger="servicekit.health"):
        registry.readiness()
        registry.readiness()
        healthy.set()
        registry.readiness()
        registry.readiness()

    assert [record.getMessage() for record in caplog.records] == [
        "readiness check database failing: ConnectionError: timeout",
        "readiness check database recovered",
    ]


def test_a_stopping_lifecycle_fails_readiness() -> None:
    lifecycle = Lifecycle()
    registry = HealthRegistry()
    registry.add_readiness("lifecycle", lifecycle.check)
    assert registry.readiness().ok

    lifecycle.stop("SIGTERM")
    assert registry.readiness().checks == {"lifecycle": "RuntimeError: shutting down (SIGTERM)"}


def test_the_server_answers_reports_and_extra_routes_as_json() -> None:
    registry = HealthRegistry()
    registry.add_liveness("loop", passing)
    registry.add_readiness("database", refused)
    server = HealthServer(
        registry, 0, routes={"/stats": lambda: {"processed": 3}}, host="127.0.0.1"
    )
    try:
        # One keep-alive connection for every request, as the ALB's health checker uses it.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        answers = {}
        for path in ("/health", "/ready?verbose=1", "/stats", "/nope"):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.getheader("Content-Type") == "application/json"
            assert response.getheader("Cache-Control") == "no-store"
            answers[path] = (response.status, json.loads(response.read()))
        connection.close()
    finally:
        server.close()

    assert answers == {
        "/health": (200, {"status": "ok", "checks": {"loop": "ok"}}),
        "/ready?verbose=1": (
            503,
            {
                "status": "fail",
                "checks": {"database": "ConnectionRefusedError: connection refused by db:5432"},
            },
        ),
        "/stats": (200, {"processed": 3}),
        "/nope": (404, {"error": "not_found"}),
    }
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_a_client_hanging_up_mid_request_is_not_printed_to_stderr(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Every line a service writes must be JSON; socketserver prints a traceback of its own.
    server = HealthServer(HealthRegistry(), 0, host="127.0.0.1")
    caplog.set_level(logging.DEBUG, logger="servicekit.health")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            # SO_LINGER 0: close() resets the connection, so the server's read fails.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sendall(b"GET /health HTTP/1.1\r\n")
        wait_until(lambda: "hung up" in caplog.text, 5, "the hang-up logged")
    finally:
        server.close()
    assert capfd.readouterr().err == ""
