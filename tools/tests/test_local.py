"""``suite status --local``, ``suite logs --local`` and ``suite deploy --local``'s refusals against
a real compose project (the deploys themselves: tests/test_compose_deploy.py).

A small project of this test's own (``COMPOSE_FILE``, ``COMPOSE_PROJECT_NAME``) stands in for
``make up``: the stand-in moto and PostgreSQL images (``.ci/standin-images``) with the queues
and the migrated ``schedule_runs`` the init step makes, and worker and scheduler containers
writing servicekit-shaped JSON lines. Skipped without an engine or the stand-in images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import psycopg
import pytest

from servicekit.testing import wait_until
from suite_tools.testing import run_suite

IMAGES = ("local/python-base:bookworm", "local/moto:standin", "local/postgres:standin")
PASSWORD = "postgres-local-only"
LINE = {
    "time": "2026-12-02T10:00:00.000Z",
    "level": "WARNING",
    "service": "worker",
    "message": "slow handler",
    "job_id": "j-7",
}
SLEEPER = "import json, sys, time; print(sys.argv[1], flush=True); time.sleep(3600)"
COMPOSE = f"""\
services:
  moto:
    image: local/moto:standin
  postgres:
    image: local/postgres:standin
    environment: {{POSTGRES_PASSWORD: {PASSWORD}}}
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres", "-h", "127.0.0.1"]
      interval: 1s
      retries: 60
  worker:
    image: local/python-base:bookworm
    command: ["python3", "-c", "{SLEEPER}", {json.dumps(json.dumps(LINE))}]
    stop_signal: SIGKILL
  scheduler:
    image: local/python-base:bookworm
    command: ["python3", "-c", "{SLEEPER}", "scheduler up"]
    stop_signal: SIGKILL
"""


@dataclass(frozen=True)
class Project:
    environment: dict[str, str]

    def address(self, service: str) -> str:
        name = _compose(self.environment, "ps", "-q", service).strip()
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        found = subprocess.run(
            [_docker(), "inspect", "-f", template, name],
            capture_output=True,
            text=True,
            check=True,
        )
        return found.stdout.strip()


def _docker() -> str:
    found = shutil.which("docker")
    assert found is not None
    return found


def _compose(environment: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [_docker(), "compose", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def project(compose_v2: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    for image in IMAGES:
        found = subprocess.run(
            [_docker(), "image", "inspect", image], capture_output=True, check=False
        )
        if found.returncode != 0:
            pytest.skip(f"{image} missing (.ci/standin-images builds it) or no engine")
    folder = tmp_path_factory.mktemp("compose")
    (folder / "compose.yml").write_text(COMPOSE)
    environment = dict(
        os.environ,
        COMPOSE_FILE=str(folder / "compose.yml"),
        COMPOSE_PROJECT_NAME=f"daytwo-local-{os.getpid()}",
    )
    _compose(environment, "up", "-d", "--wait")
    try:
        yield Project(environment)
    finally:
        _compose(environment, "down", "-v", "--timeout", "1")


def _prepare(project: Project) -> None:
    """What compose's init step leaves: the queues, the database, the migrations; a run."""
    sqs = boto3.client(
        "sqs",
        endpoint_url=f"http://{project.address('moto')}:5000",
        region_name="eu-west-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    wait_until(lambda: sqs.list_queues() is not None, timeout=30, what="moto to answer")
    queue = sqs.create_queue(QueueName="suite-development-jobs")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="suite-development-jobs-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody='{"job_id": "j-1"}')
    sqs.send_message(QueueUrl=dlq, MessageBody='{"job_id": "j-0"}')
    host = project.address("postgres")
    with psycopg.connect(host=host, user="postgres", password=PASSWORD, autocommit=True) as admin:
        admin.execute("CREATE DATABASE suite")
    conninfo = f"host={host} dbname=suite user=postgres password={PASSWORD}"
    from jobs import migrations  # noqa: PLC0415 - the schema the scheduler's runs live in

    migrations.upgrade(conninfo)
    with psycopg.connect(conninfo) as connection:
        connection.execute(
            "INSERT INTO schedule_runs (job, slot, status, finished_at, host) VALUES"
            " ('outbox-sweep', '2026-12-02T10:00:00Z', 'succeeded', now(), 'local'),"
            " ('outbox-sweep', '2026-12-02T10:01:00Z', 'failed', now(), 'local')"
        )


def test_status_local_reads_the_containers_the_queue_and_the_runs(project: Project) -> None:
    _prepare(project)

    run = run_suite("status", "--local", "worker", "scheduler", "--json", env=project.environment)

    assert run.code == 2, run.stderr
    document = json.loads(run.stdout)
    worker, scheduler = document["services"]["worker"], document["services"]["scheduler"]
    assert worker["state"] == "running"
    assert worker["queue"] == {
        "name": "suite-development-jobs",
        "visible": 1,
        "inFlight": 0,
        "oldestAgeSeconds": None,
        "deadLetters": 1,
    }
    assert worker["problems"] == ["1 dead letters"]
    assert scheduler["jobs"] == [
        {
            "job": "outbox-sweep",
            "slot": "2026-12-02T10:01:00Z",
            "status": "failed",
            "finished": scheduler["jobs"][0]["finished"],
            "error": None,
        }
    ]
    assert scheduler["problems"] == ["job outbox-sweep last run failed"]
    assert document["notes"] == []

    table = run_suite("status", "--local", env=project.environment)
    assert table.code == 2
    assert "api (http): UNHEALTHY\n  ! container missing\n" in table.stdout
    assert "queue        suite-development-jobs: 1 visible  0 in flight  dlq 1" in table.stdout


def test_logs_local_renders_the_containers_output(project: Project) -> None:
    run = run_suite("logs", "worker", "--local", env=project.environment)
    assert run.code == 0, run.stderr
    assert run.stdout == "2026-12-02T10:00:00.000Z WARNING job=j-7 slow handler\n"
    raw = run_suite("logs", "worker", "--local", "--json", env=project.environment)
    assert json.loads(raw.stdout) == LINE


def test_deploy_is_local_only_and_names_a_missing_project() -> None:
    remote = run_suite("deploy", "api")
    assert remote.code == 1
    assert remote.stderr == (
        "suite deploy: only --local (the compose suite); AWS deploys are `suite release`\n"
    )
    if (
        shutil.which("docker") is None
        or subprocess.run([_docker(), "info"], capture_output=True, check=False).returncode
    ):
        pytest.skip("no Docker engine")
    environment = dict(os.environ, COMPOSE_PROJECT_NAME="deploy-nothing-runs-here")
    missing = run_suite("deploy", "--local", "--no-build", env=environment)
    assert missing.code == 1
    assert missing.stderr == (
        "suite deploy: no api container is running in compose project deploy-nothing-runs-here "
        "(make up; COMPOSE_PROJECT_NAME names another)\n"
    )
