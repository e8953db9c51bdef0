"""The compose init step: what Terraform-less local AWS and the database need before the services.

Run once per ``docker compose up`` (the ``init`` service, in the scheduler image): creates the
jobs queue and its dead-letter queue with the redrive policy from the worker's spec, each
scheduled service's firings queue and its dead-letter queue (the figures the infra gives them,
from its job registry, read from the service's folder under ``/specs``), the
Parameter Store parameters and feature flags, the application's database role and the Secrets
Manager secret holding its credentials (RDS format), then applies the migrations. Every step is
idempotent, so ``up`` twice works and keeps the data. Its connections verify the server's TLS as
the services do (``DATABASE__SSLMODE``, ``DATABASE__SSLROOTCERT``).

``--watch SECONDS`` (the ``moto-reinit`` service) then keeps going: moto holds everything in
memory, so a restart of the emulator loses every queue, parameter, secret and message. Every
SECONDS it checks that a parameter of the init step still exists; when it is gone, it applies
the init step again and puts the jobs whose messages were lost (sent, not finished) back in the
outbox, so the suite recovers by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from psycopg.conninfo import make_conninfo

from jobs import repository
from jobs.migrations import upgrade
from servicekit import aws
from servicekit.logging import configure_logging
from servicekit.scheduling import FiringsQueue, JobRegistry, load_registry
from suite_contract.spec import (
    EnvironmentNames,
    QueueTrigger,
    ScheduleTrigger,
    ServiceSpec,
    load_specs,
)

APP = os.environ["APP_NAME"]
ENV = os.environ["APP_ENV"]
NAMES = EnvironmentNames(APP, ENV)
SPECS_ROOT = Path(os.environ.get("SPECS_ROOT", "/specs"))

# Local defaults of what Parameter Store holds in AWS (infra/ creates the same names there).
SENTINEL = f"/{APP}/{ENV}/shared/log_level"  # gone: the emulator lost its state
PARAMETERS = {
    SENTINEL: "INFO",
    f"/{APP}/{ENV}/api/flags/accept_jobs": "true",
}
RESEND_BATCH = 1000
# Touched on every check: moto-reinit's health check reads it (the container's own tmpfs).
HEARTBEAT = Path("/tmp/watching")  # noqa: S108
# A check answers in a few seconds even while moto is paused, so the heartbeat stays fresh.
CHECK_BUDGET = aws.Budget(connect_timeout=1.0, read_timeout=2.0, max_attempts=1)

log = logging.getLogger("bootstrap")


def queues() -> dict[str, str]:
    """Create each queue a spec consumes, with its DLQ; returns the queue URLs by name."""
    urls = {}
    for spec in load_specs(SPECS_ROOT).values():
        trigger = spec.trigger
        if isinstance(trigger, QueueTrigger):
            name = NAMES.queue(trigger.queue)
            urls[name] = _queue(name, trigger.visibility_timeout, trigger.max_receive_count)
        elif isinstance(trigger, ScheduleTrigger):
            name = NAMES.firings_queue(spec.name)
            firings = FiringsQueue.for_jobs(
                (job.timeout for job in _registry(spec, trigger)), spec.task.stop_timeout
            )
            urls[name] = _queue(name, firings.visibility_timeout, firings.max_receive_count)
    return urls


def _queue(name: str, visibility_timeout: int, max_receive_count: int) -> str:
    """Queue ``name`` and its ``-dlq``, with the redrive policy; its URL."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
    attributes = {
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps(redrive),
    }
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    # create_queue refuses different attributes for an existing queue: set them separately.
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _registry(spec: ServiceSpec, trigger: ScheduleTrigger) -> JobRegistry[object]:
    """The scheduled service's job registry, imported from its folder (declaring, no I/O)."""
    sys.path.insert(0, str(SPECS_ROOT / "services" / spec.name / "src"))
    return load_registry(trigger.registry)


def parameters() -> None:
    ssm = aws.client("ssm")
    for name, value in PARAMETERS.items():
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)


def database() -> str:
    """The application role and database, and the secret that holds its credentials."""
    host, port = os.environ["POSTGRES_HOST"], int(os.environ.get("POSTGRES_PORT", "5432"))
    role, dbname = f"{APP}_app", APP
    password = os.environ["APP_DB_PASSWORD"]
    tls = {
        "sslmode": os.environ["DATABASE__SSLMODE"],
        "sslrootcert": os.environ["DATABASE__SSLROOTCERT"],
    }
    admin = psycopg.connect(
        host=host,
        port=port,
        user="postgres",
        password=os.environ["POSTGRES_PASSWORD"],
        dbname="postgres",
        autocommit=True,
        **tls,
    )
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
        admin.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                verb, sql.Identifier(role), sql.Literal(password)
            )
        )
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
    secret = json.dumps(
        {
            "engine": "postgres",
            "host": host,
            "port": port,
            "username": role,
            "password": password,
            "dbname": dbname,
        }
    )
    secret_id = os.environ["DB_SECRET"]
    client = aws.client("secretsmanager")
    try:
        client.create_secret(Name=secret_id, SecretString=secret)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=secret_id, SecretString=secret)
    return make_conninfo(host=host, port=port, dbname=dbname, user=role, password=password, **tls)


def bootstrap() -> str:
    """Every step, in order; the application's conninfo."""
    urls = queues()
    parameters()
    conninfo = database()
    upgrade(conninfo)
    log.info("bootstrap done: queues %s", ", ".join(urls.values()))
    return conninfo


def emulator_lost_its_state() -> bool:
    """The sentinel parameter is gone (False while the emulator does not answer at all)."""
    try:
        aws.client("ssm", budget=CHECK_BUDGET).get_parameter(Name=SENTINEL)
    except ClientError as error:
        return error.response.get("Error", {}).get("Code") == "ParameterNotFound"
    except BotoCoreError:
        return False
    return False


def resend_lost_messages(conninfo: str) -> int:
    """Every job sent but not finished back to the outbox: its message died with the emulator."""
    resent = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            batch = repository.resend_lost(conn, older_than=timedelta(0), limit=RESEND_BATCH)
            resent += len(batch)
            if len(batch) < RESEND_BATCH:
                return resent


def apply(*, lost: bool) -> str:
    """The init step; when the emulator had ``lost`` its state, the lost messages' jobs resent.

    Also at start-up: ``docker compose up`` of a project whose database volume survived starts a
    fresh moto, whose queues hold none of the messages the jobs table says were sent.
    """
    conninfo = bootstrap()
    if lost:
        resent = resend_lost_messages(conninfo)
        log.info("%d job(s) whose message was lost are back in the outbox", resent)
    return conninfo


def watch(interval: float) -> None:
    while True:
        HEARTBEAT.touch()
        time.sleep(interval)
        if emulator_lost_its_state():
            log.warning("the AWS emulator lost its state (restarted?): applying the init again")
            try:
                apply(lost=True)
            except (BotoCoreError, ClientError, psycopg.Error) as error:
                log.warning("init not applied yet, retrying: %s", error)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--watch", type=float, metavar="SECONDS", help="then re-apply whenever moto restarted"
    )
    args = parser.parse_args(argv)
    configure_logging(service="init", env=ENV)
    # A moto without the init's parameter but a database with jobs: a fresh emulator.
    apply(lost=emulator_lost_its_state())
    if args.watch:
        watch(args.watch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
