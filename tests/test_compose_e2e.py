"""The composed suite, as a user runs it: `docker compose up --build`, jobs through every service.

Needs a Docker engine with Compose v2 (skipped with the reason when there is none; CI installs
one). Image names come from the environment like any `docker compose` run, so CI points them at
local stand-ins (.ci/compose.env) and a laptop uses the public images. The project name and the
API port are this test's own, so it never touches a suite a developer already has up.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing import wait_until
from servicekit.testing.moto import free_port

ROOT = Path(__file__).resolve().parent.parent
# Overridable so two checkouts on one machine can run it at once.
PROJECT = os.environ.get("E2E_PROJECT", "ecs-suite-e2e")
SERVICES = ("api", "worker", "scheduler")


pytestmark = pytest.mark.timeout(900)


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

    def token(self, principal: str) -> str:
        """A bearer token the way a user gets one: ``make -s token`` (its last line)."""
        result = subprocess.run(
            ["make", "-s", "token", f"PRINCIPAL={principal}"],
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


@pytest.fixture(scope="module")
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


def test_a_job_goes_through_every_service(suite: Suite) -> None:
    assert suite.api.get("/health").json() == {"status": "ok"}
    assert suite.api.get("/ready").json() == {"status": "ok"}
    job_id = suite.post_job("echo", {"hello": "ecs"})
    wait_until(
        lambda: suite.statuses([job_id])[job_id] == "succeeded", 60, "the job to succeed", 0.5
    )
    job = suite.api.get(f"/jobs/{job_id}").json()
    assert job["result"] == {"echo": {"hello": "ecs"}}
    assert job["attempts"] == 1


def test_the_api_needs_a_token_from_the_issuer(suite: Suite) -> None:
    anonymous = suite.api.get("/jobs", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    forged = suite.api.get("/jobs", headers={"Authorization": "Bearer e30.e30.c2ln"})
    assert forged.status_code == 401
    reader = {"Authorization": f"Bearer {suite.token('e2e-other')}"}
    assert suite.api.get("/jobs", headers=reader).status_code == 200


def test_the_services_reach_the_database_only_over_tls(suite: Suite) -> None:
    # The services verify the server with verify-full against the local CA (they are ready).
    assert suite.api.get("/ready").status_code == 200
    connections = suite.sql(
        "SELECT count(*) || ' ' || count(*) FILTER (WHERE ssl) FROM pg_stat_ssl "
        "JOIN pg_stat_activity USING (pid) WHERE usename = 'suite_app'"
    )
    total, encrypted = map(int, connections.split())
    assert total > 0
    assert encrypted == total, connections
    # As RDS with rds.force_ssl: a client without TLS is refused.
    refused = suite.sql("SELECT 1", sslmode="disable", check=False)
    assert "no pg_hba.conf entry" in refused, refused
    assert "no encryption" in refused, refused


def test_the_scheduler_records_its_runs(suite: Suite) -> None:
    # The outbox sweep runs every minute in serve mode; its runs land in the history table.
    wait_until(
        lambda: int(suite.sql("SELECT count(*) FROM schedule_runs WHERE status = 'succeeded'")) > 0,
        90,
        "a succeeded scheduler run",
        0.5,
    )


def test_restarting_the_worker_loses_nothing(suite: Suite) -> None:
    ids = [suite.post_job("sleep", {"seconds": 2}) for _ in range(12)]
    ids += [suite.post_job("echo", {"n": n}) for n in range(20)]
    wait_until(lambda: "running" in suite.statuses(ids).values(), 60, "jobs in flight", 0.5)
    suite.compose("restart", "worker")
    wait_until(
        lambda: set(suite.statuses(ids).values()) == {"succeeded"},
        180,
        "every job to succeed",
        0.5,
    )
    effects = suite.sql(
        "SELECT count(*) FROM job_effects WHERE job_id IN ("
        + ",".join(f"'{job_id}'" for job_id in ids)
        + ")"
    )
    assert int(effects) == len(ids), "each job's effect exactly once"


def test_every_service_logs_json(suite: Suite) -> None:
    for service in (*SERVICES, "init"):
        records = suite.logs(service)
        assert records, f"{service} logged nothing"
        for line in records:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{service} logged a line that is not JSON: {line[:200]}")
            # EMF lines carry their own shape; every other line names its service.
            assert "_aws" in record or record.get("service") in (service, "init"), line[:200]
