"""The composed suite as a test harness: bring it up, talk to it, break it, read what it wrote.

A pytest plugin (registered by the repository's root conftest.py): ``suite`` is one bring-up per
test session, shared by every module that takes it (the end-to-end flows, the API's contract);
the fault tests bring up a project of their own with :func:`running_suite`. Needs a Docker
engine with Compose v2 (``compose_v2`` skips with the reason when there is none).

Image names come from the environment like any `docker compose` run (CI points them at local
stand-ins, .ci/compose.env). The project name (``project``, overridable through an environment
variable so two checkouts can run at once) and the API port are the harness's own, so it never
touches a suite a developer already has up.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing import wait_until
from servicekit.testing.moto import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("api", "worker", "scheduler")


class Suite:
    """One compose project: ``compose`` runs docker compose in it, ``api`` talks to its API."""

    def __init__(self, project: str, settings: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = os.environ | {"COMPOSE_PROJECT_NAME": project, "API_PORT": str(self.port)}
        self.env |= settings or {}
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = httpx.Client(base_url=self.url, timeout=10)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.docker("compose", *args, check=check)

    def containers(self, service: str, *, stopped: bool = True) -> list[str]:
        """The ids of the service's containers (it may run several), ``stopped`` ones too."""
        found = self.compose("ps", *(["--all"] if stopped else []), "--quiet", service)
        return found.stdout.split()

    def container(self, service: str) -> str:
        """The service's first container, a stopped one too."""
        found = self.containers(service)
        if not found:
            pytest.fail(f"no {service} container")
        return found[0]

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker`` (``compose`` included: compose's views add escapes, and ``compose start``
        starts a service's dependencies too), in the project's directory and environment."""
        done = subprocess.run(
            ["docker", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            # What docker said is the whole diagnosis: CalledProcessError would not show it.
            pytest.fail(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done

    def sql(self, query: str, sslmode: str = "prefer", check: bool = True) -> str:
        password = self.env.get("POSTGRES_PASSWORD", "postgres-local-only")
        result = self.compose(
            "exec", "-T", "-e", f"PGPASSWORD={password}", "-e", f"PGSSLMODE={sslmode}", "postgres",
            "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "suite", "-tAc", query,
            check=check,
        )  # fmt: skip
        return (result.stdout + result.stderr).strip()

    def token(self, principal: str, scopes: str | None = None) -> str:
        """A bearer token the way a user gets one: ``make -s token`` (its last line)."""
        arguments = [f"PRINCIPAL={principal}"] + ([f"SCOPES={scopes}"] if scopes else [])
        result = subprocess.run(
            ["make", "-s", "token", *arguments],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.splitlines()[-1]

    def logs(self, service: str) -> list[str]:
        """What the service's container wrote, exactly (compose's own log view adds escapes)."""
        result = self.docker("logs", self.container(service))
        return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]

    def state(self, service: str) -> dict[str, Any]:
        """The service's container state as ``docker inspect`` has it (Running, StartedAt...)."""
        result = self.docker("inspect", "--format", "{{json .State}}", self.container(service))
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def healthy(self, service: str) -> int:
        """How many of the service's containers (it may run several) Docker reports healthy."""
        containers = self.containers(service, stopped=False)
        if not containers:
            return 0
        result = self.docker(
            "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            *containers, check=False,
        )  # fmt: skip
        return result.stdout.split().count("healthy")

    def post_job(self, job_type: str, payload: dict[str, Any]) -> str:
        response = self.api.post("/jobs", json={"type": job_type, "payload": payload})
        assert response.status_code in (201, 202), response.text
        return str(response.json()["id"])

    def statuses(self, ids: list[str]) -> dict[str, str]:
        """Each job's status, read in one query (fast enough to poll hundreds of jobs)."""
        if not ids:
            return {}
        rows = self.sql(
            "SELECT id, status FROM jobs WHERE id IN (" + ",".join(f"'{i}'" for i in ids) + ")"
        )
        found = dict(line.split("|", 1) for line in rows.splitlines() if line)
        return {job_id: found.get(job_id, "missing") for job_id in ids}

    def effects(self, ids: list[str]) -> dict[str, int]:
        """How many job_effects rows each job has (1 for every succeeded job: exactly once)."""
        rows = self.sql(
            "SELECT job_id, count(*) FROM job_effects WHERE job_id IN ("
            + ",".join(f"'{job_id}'" for job_id in ids)
            + ") GROUP BY job_id"
        )
        found = {job_id: int(n) for job_id, n in (line.split("|") for line in rows.splitlines())}
        return {job_id: found.get(job_id, 0) for job_id in ids}

    def all_succeed_once(self, ids: list[str], timeout: float) -> None:
        """Every job ends succeeded, each with exactly one effect."""

        def pending() -> dict[str, str]:
            return {i: s for i, s in self.statuses(ids).items() if s != "succeeded"}

        wait_until(lambda: not pending(), timeout, f"{len(ids)} jobs to succeed", 1.0)
        effects = self.effects(ids)
        assert {job_id: n for job_id, n in effects.items() if n != 1} == {}, "one effect per job"

    def down(self) -> None:
        # --profile deploy: the api's other colour, when a deploy left it serving.
        self.compose(
            "--profile", "deploy", "down", "--volumes", "--remove-orphans", "--timeout", "10",
            check=False,
        )  # fmt: skip


@contextmanager
def running_suite(project: str, settings: Mapping[str, str] | None = None) -> Iterator[Suite]:
    """`docker compose up --build --wait` of a fresh project; down (with its volumes) after."""
    suite = Suite(project, settings)
    suite.down()
    started = time.monotonic()
    up = suite.compose("up", "--build", "--detach", "--wait", "--wait-timeout", "300", check=False)
    if up.returncode != 0:
        logs = suite.compose("logs", "--no-color", "--tail", "50", check=False).stdout
        suite.down()
        pytest.fail(f"docker compose up failed:\n{up.stderr[-4000:]}\n{logs[-6000:]}")
    print(f"compose up to all healthy: {time.monotonic() - started:.1f} s")
    try:
        suite.api.headers["Authorization"] = f"Bearer {suite.token(project)}"
        yield suite
    finally:
        suite.api.close()
        suite.down()


@pytest.fixture(scope="session")
def suite(compose_v2: None) -> Iterator[Suite]:
    # Overridable so two checkouts on one machine can run it at once.
    with running_suite(os.environ.get("E2E_PROJECT", "ecs-suite-e2e")) as running:
        yield running
