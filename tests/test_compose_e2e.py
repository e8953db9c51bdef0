"""The composed suite, as a user runs it: `docker compose up --build`, jobs through every service.

The suite is brought up once for every module that uses it (``suite``, tests/compose_suite.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from servicekit.testing import wait_until

if TYPE_CHECKING:
    from compose_suite import Suite

SERVICES = ("api", "worker", "scheduler")

pytestmark = pytest.mark.timeout(900)


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


def test_the_scheduler_runs_the_firings_of_its_queue(suite: Suite) -> None:
    # A firing sent by hand (as `suite run` does in AWS) for a slot no clock fires any more: the
    # scheduler's consumer takes it from the firings queue and the run is recorded.
    suite.compose(
        "exec",
        "-T",
        "scheduler",
        "python3",
        "-c",
        "import os; from datetime import datetime; from servicekit.scheduling import send_firing; "
        "send_firing(os.environ['FIRINGS_QUEUE_URL'], 'requeue-stuck', "
        "datetime.fromisoformat('2026-01-01T00:05:10+00:00'))",
    )
    wait_until(
        lambda: (
            suite.sql(
                "SELECT status FROM schedule_runs WHERE job = 'requeue-stuck' "
                "AND slot = '2026-01-01T00:05:00Z'"
            )
            == "succeeded"
        ),
        60,
        "the sent firing's run to succeed",
        0.5,
    )
    # The local clock sends the same firings on schedule: the outbox sweep's every minute.
    wait_until(
        lambda: (
            int(
                suite.sql(
                    "SELECT count(*) FROM schedule_runs WHERE job = 'outbox-sweep' "
                    "AND status = 'succeeded'"
                )
            )
            > 0
        ),
        90,
        "a succeeded run the clock fired",
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


def test_the_api_sees_every_worker_task_and_the_fleet(suite: Suite) -> None:
    admin = {"Authorization": f"Bearer {suite.token('e2e-ops', 'jobs:admin')}"}
    assert suite.api.get("/ops/workers").status_code == 403  # read and write are not admin
    # --no-deps: the one-shot init has exited, and --wait would count that against the command.
    scale = ("up", "--detach", "--wait", "--no-deps", "--no-recreate", "--scale")
    running = len(suite.compose("ps", "--quiet", "worker").stdout.split())
    scaled = suite.compose(*scale, f"worker={running + 1}", "worker", check=False)
    assert scaled.returncode == 0, scaled.stderr
    try:

        def every_task() -> bool:
            fleet = suite.api.get("/ops/workers", headers=admin).json()
            return [task["status"] for task in fleet["tasks"]] == ["ok"] * (running + 1)

        wait_until(every_task, 60, "every worker task in the alias's answer", 0.5)
        fleet = suite.api.get("/ops/workers", headers=admin).json()
        assert fleet["discovery_name"] == "worker.development.suite.internal"
        assert fleet["ready"] == "ok"
        addresses = [task["address"] for task in fleet["tasks"]]
        assert len(set(addresses)) == running + 1
        assert all(task["stats"]["ready"] is True for task in fleet["tasks"])
    finally:
        suite.compose(*scale, f"worker={running}", "worker")
