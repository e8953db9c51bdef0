"""The composed suite as a fixture: ``docker compose up --build``, once per test session, shared by
every module that takes ``suite`` (the end-to-end flows, the API's contract).

Needs a Docker engine with Compose v2 (skipped with the reason when there is none; CI installs
one). Image names come from the environment like any `docker compose` run, so CI points them at
local stand-ins (.ci/compose.env) and a laptop uses the public images. The project name and the
API port are the tests' own, so they never touch a suite a developer already has up.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing.moto import free_port

ROOT = Path(__file__).resolve().parent.parent
# Overridable so two checkouts on one machine can run it at once.
PROJECT = os.environ.get("E2E_PROJECT", "ecs-suite-e2e")


class Suite:
    def __init__(self) -> None:
        self.port = free_port()
        self.env = os.environ | {"COMPOSE_PROJECT_NAME": PROJECT, "API_PORT": str(self.port)}
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
        )

    def sql(self, query: str, sslmode: str = "prefer", check: bool = True) -> str:
        password = self.env.get("POSTGRES_PASSWORD", "postgres-local-only")
        result = self.compose(
            "exec", "-T", "-e", f"PGPASSWORD={password}", "-e", f"PGSSLMODE={sslmode}", "postgres",
            "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "suite", "-tAc", query,
            check=check,
        )  # fmt: skip
        return (result.stdout + result.stderr).strip()

    def logs(self, service: str) -> list[str]:
        """What the service's container wrote, exactly (compose's own log view adds escapes)."""
        container = self.compose("ps", "--all", "--quiet", service).stdout.split()
        assert container, f"no {service} container"
        result = subprocess.run(
            ["docker", "logs", container[0]], capture_output=True, text=True, check=True
        )
        return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]

    def token(self, principal: str, scopes: str | None = None) -> str:
        """A bearer token the way a user gets one: ``make -s token`` (its last line); ``scopes``
        as ``SCOPES`` takes them (None: the Makefile's default, read and write)."""
        overrides = [] if scopes is None else [f"SCOPES={scopes}"]
        result = subprocess.run(
            ["make", "-s", "token", f"PRINCIPAL={principal}", *overrides],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.splitlines()[-1]

    def post_job(self, job_type: str, payload: dict[str, Any]) -> str:
        response = self.api.post("/jobs", json={"type": job_type, "payload": payload})
        assert response.status_code in (201, 202), response.text
        return str(response.json()["id"])

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return {job_id: self.api.get(f"/jobs/{job_id}").json()["status"] for job_id in ids}


@pytest.fixture(scope="session")
def suite(compose_v2: None) -> Iterator[Suite]:
    suite = Suite()
    suite.compose("down", "--volumes", "--remove-orphans", check=False)
    started = time.monotonic()
    up = suite.compose("up", "--build", "--detach", "--wait", "--wait-timeout", "300", check=False)
    if up.returncode != 0:
        logs = suite.compose("logs", "--no-color", "--tail", "50", check=False).stdout
        suite.compose("down", "--volumes", "--remove-orphans", check=False)
        pytest.fail(f"docker compose up failed:\n{up.stderr[-4000:]}\n{logs[-6000:]}")
    print(f"compose up to all healthy: {time.monotonic() - started:.1f} s")
    try:
        suite.api.headers["Authorization"] = f"Bearer {suite.token('e2e')}"
        yield suite
    finally:
        suite.api.close()
        suite.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
