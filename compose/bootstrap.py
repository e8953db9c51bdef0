"""The compose init step: what Terraform-less local AWS and the database need before the services.

Run once per ``docker compose up`` (the ``init`` service, in the api image): creates the jobs
queue and its dead-letter queue with the redrive policy from the worker's spec, the Parameter
Store parameters and feature flags, the application's database role and the Secrets Manager
secret holding its credentials (RDS format), then applies the migrations. Every step is
idempotent, so ``up`` twice works and keeps the data. Its connections verify the server's TLS as
the services do (``DATABASE__SSLMODE``, ``DATABASE__SSLROOTCERT``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from jobs.migrations import upgrade
from servicekit import aws
from servicekit.logging import configure_logging
from servicekit.spec import QueueTrigger, load_specs

APP = os.environ["APP_NAME"]
ENV = os.environ["APP_ENV"]

# Local defaults of what Parameter Store holds in AWS (infra/ creates the same names there).
PARAMETERS = {
    f"/{APP}/{ENV}/shared/log_level": "INFO",
    f"/{APP}/{ENV}/api/flags/accept_jobs": "true",
}


def queues() -> dict[str, str]:
    """Create each queue a spec consumes, with its DLQ; returns the queue URLs by name."""
    sqs = aws.client("sqs")
    urls = {}
    for spec in load_specs(Path(os.environ.get("SPECS_ROOT", "/specs"))).values():
        if not isinstance(spec.trigger, QueueTrigger):
            continue
        name = f"{APP}-{ENV}-{spec.trigger.queue}"
        dlq_url = sqs.create_queue(
            QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"}
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": spec.trigger.max_receive_count,
        }
        attributes = {
            "VisibilityTimeout": str(spec.trigger.visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        }
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        # create_queue refuses different attributes for an existing queue: set them separately.
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        urls[name] = url
    return urls


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


def main() -> int:
    configure_logging(service="init", env=ENV)
    urls = queues()
    parameters()
    upgrade(database())
    logging.getLogger("bootstrap").info("bootstrap done: queues %s", ", ".join(urls.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
