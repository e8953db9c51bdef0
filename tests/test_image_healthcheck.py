"""image/healthcheck, the containers' health check (Docker's and ECS's), against real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "image" / "healthcheck"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response({"/health": 200, "/ready": 204}.get(self.path, 503))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield httpd.server_address[1]
        httpd.shutdown()
        thread.join()


def check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if key not in ("PORT", "HEALTH_PATH")
    }
    return subprocess.run(
        [str(SCRIPT), *args],
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_a_2xx_from_the_given_port_and_path_is_healthy(server: int) -> None:
    assert check(str(server), "/health").returncode == 0
    assert check(str(server), "/ready").returncode == 0


def test_the_port_and_path_default_to_the_environment(server: int) -> None:
    assert check(PORT=str(server)).returncode == 0  # HEALTH_PATH unset: /health
    done = check(PORT=str(server), HEALTH_PATH="/missing")
    assert (done.returncode, done.stderr.strip()) == (
        1,
        f"unhealthy: http://127.0.0.1:{server}/missing: status 503",
    )


def test_nothing_listening_is_unhealthy_and_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        done = check(str(port))
    assert done.returncode == 1
    assert "no connection" in done.stderr


def test_a_server_that_never_answers_is_unhealthy_within_its_read_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        done = check(str(silent.getsockname()[1]))
    assert done.returncode == 1
    assert "no answer within 2 s" in done.stderr
