"""``suite status --local``: the compose suite (``make up``) rather than an AWS environment.

Containers and their health from ``docker compose ps``; the jobs queue and its DLQ from the
moto container; each job's last run from PostgreSQL's ``schedule_runs``. moto and PostgreSQL
publish no host port: they are reached on the container's address on the compose network
(``docker inspect``), which the host can route to. Whatever cannot be reached is skipped with
a note, and the rest is still shown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from suite_contract.spec import EnvironmentNames, QueueTrigger, ServiceSpec
from suite_tools.deployed import instant
from suite_tools.errors import CommandError

__all__ = ["GREEN", "LOCAL_APP", "LOCAL_ENV", "collect", "docker_binary", "render"]

# docker-compose.yml's x-app and x-aws blocks: APP_NAME, APP_ENV, AWS_REGION.
LOCAL_APP, LOCAL_ENV, LOCAL_REGION = "suite", "development", "eu-west-1"
MOTO_PORT = 5000
# The compose service of a blue/green service's other colour: {name}-green (docker-compose.yml).
GREEN = "-green"
TIMEOUT = 3


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise CommandError("docker is not installed (the local suite runs in compose)")
    return found


def _docker(*args: str) -> str:
    done = subprocess.run(  # noqa: S603 - docker, our own arguments
        [docker_binary(), *args], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise CommandError(f"docker {' '.join(args[:2])}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def _containers() -> list[dict[str, Any]]:
    text = _docker("compose", "ps", "--all", "--format", "json").strip()
    if not text:
        return []
    if text.startswith("["):  # Compose before 2.21 printed one array
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _address(container: str) -> str | None:
    found = _docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container
    ).split()
    return found[0] if found else None


def collect(specs: Mapping[str, ServiceSpec]) -> dict[str, Any]:
    containers = _containers()
    if not containers:
        project = os.environ.get("COMPOSE_PROJECT_NAME", "ecs-suite")
        raise CommandError(
            f"no compose project {project} running here (make up; COMPOSE_PROJECT_NAME names "
            "another)"
        )
    by_service = {str(item.get("Service")): item for item in containers}
    names = EnvironmentNames(LOCAL_APP, LOCAL_ENV)
    notes: list[str] = []
    services: dict[str, Any] = {}
    for name, spec in specs.items():
        # Every replica, of either colour (a blue/green deploy leaves {name}-green serving).
        fleet = [item for item in containers if item.get("Service") in (name, name + GREEN)]
        running = [item for item in fleet if item.get("State") == "running"]
        sick = [item for item in running if (item.get("Health") or None) not in (None, "healthy")]
        shown = sick or running or fleet
        status: dict[str, Any] = {
            "kind": spec.trigger.kind,
            "state": "running" if running else (fleet[0].get("State") if fleet else "missing"),
            "health": (shown[0].get("Health") or None) if shown else None,
            "detail": "; ".join(f"{item.get('Name')}: {item.get('Status')}" for item in fleet)
            or None,
            "containers": len(running),
        }
        problems = []
        if status["state"] != "running":
            problems.append(f"container {status['state']}")
        elif status["health"] not in (None, "healthy"):
            problems.extend(f"container {item.get('Name')} {item.get('Health')}" for item in sick)
        if isinstance(spec.trigger, QueueTrigger):
            status["queue"] = _queue(by_service.get("moto"), names, spec.trigger.queue, notes)
            if status["queue"] and status["queue"]["deadLetters"]:
                problems.append(f"{status['queue']['deadLetters']} dead letters")
        if spec.trigger.kind == "schedule":
            status["jobs"] = _runs(by_service.get("postgres"), notes)
            problems.extend(
                f"job {job['job']} last run {job['status']}"
                for job in status["jobs"] or []
                if job["status"] not in ("succeeded", "running")
            )
        status["problems"] = problems
        status["healthy"] = not problems
        services[name] = status
    return {
        "app": LOCAL_APP,
        "env": LOCAL_ENV,
        "local": True,
        "healthy": all(item["healthy"] for item in services.values()),
        "services": services,
        "notes": notes,
    }


def _queue(
    moto: Mapping[str, Any] | None, names: EnvironmentNames, queue: str, notes: list[str]
) -> dict[str, Any] | None:
    address = _address(str(moto["Name"])) if moto else None
    if address is None:
        notes.append("queue skipped: no moto container")
        return None
    sqs = boto3.client(
        "sqs",
        endpoint_url=f"http://{address}:{MOTO_PORT}",
        region_name=LOCAL_REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto's, as compose sets it
        config=Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"max_attempts": 1}),
    )

    def counts(name: str) -> dict[str, str]:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {str(key): value for key, value in attributes.items()}

    try:
        main, dead = counts(names.queue(queue)), counts(names.dead_letter_queue(queue))
    except (ClientError, BotoCoreError) as error:
        notes.append(f"queue skipped: {str(error).splitlines()[0]}")
        return None
    return {
        "name": names.queue(queue),
        "visible": int(main.get("ApproximateNumberOfMessages", 0)),
        "inFlight": int(main.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "oldestAgeSeconds": None,
        "deadLetters": int(dead.get("ApproximateNumberOfMessages", 0)),
    }


def _runs(postgres: Mapping[str, Any] | None, notes: list[str]) -> list[dict[str, Any]] | None:
    address = _address(str(postgres["Name"])) if postgres else None
    if address is None:
        notes.append("schedule runs skipped: no postgres container")
        return None
    try:
        with psycopg.connect(
            host=address,
            dbname=LOCAL_APP,
            user="postgres",
            password=os.environ.get("POSTGRES_PASSWORD", "postgres-local-only"),
            connect_timeout=TIMEOUT,
        ) as connection:
            rows = connection.execute(
                "SELECT DISTINCT ON (job) job, slot, status, finished_at, error"
                " FROM schedule_runs ORDER BY job, slot DESC"
            ).fetchall()
    except psycopg.Error as error:
        notes.append(f"schedule runs skipped: {str(error).strip().splitlines()[0]}")
        return None
    return [
        {
            "job": job,
            "slot": instant(slot),
            "status": status,
            "finished": instant(finished),
            "error": error,
        }
        for job, slot, status, finished, error in rows
    ]


def render(document: Mapping[str, Any]) -> list[str]:
    lines = [f"local compose suite: {'healthy' if document['healthy'] else 'UNHEALTHY'}"]
    for name, status in document["services"].items():
        lines.append("")
        lines.append(f"{name} ({status['kind']}): " + ("ok" if status["healthy"] else "UNHEALTHY"))
        lines.extend(f"  ! {problem}" for problem in status["problems"])
        lines.append(f"  {'container':<12} {status['state']} {status['detail'] or ''}".rstrip())
        queue = status.get("queue")
        if queue:
            lines.append(
                f"  {'queue':<12} {queue['name']}: {queue['visible']} visible  "
                f"{queue['inFlight']} in flight  dlq {queue['deadLetters']}"
            )
        lines.extend(
            f"  {'job':<12} {job['job']:<24} last {job['slot']} {job['status']}"
            for job in status.get("jobs") or []
        )
    lines.extend(f"note: {note}" for note in document["notes"])
    return lines
