"""The job processor with the consumer in-process (its own job types), against moto and a real
PostgreSQL: timeouts, and what clients see of an unexpected error."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobs import repository
from jobs.types import EchoPayload, JobRun, JobType, JobTypes
from servicekit import aws
from servicekit.consumer import Consumer
from servicekit.db import Database, DatabaseSettings
from servicekit.retry import Backoff
from servicekit.settings import RdsSecret, SecretRef
from servicekit.testing import Database as PgDatabase
from servicekit.testing import MotoServer, create_queue, queue_counts, send_messages, wait_until
from worker.processing import JobProcessor

SECRET_ID = "suite/test/processing-db"
# Handlers are named "module:function". pytest imports this file under its path, which holds a
# "-" in a service generated from this one: the handlers below go by an importable alias.
HANDLERS = "worker_processing_test_handlers"
sys.modules[HANDLERS] = sys.modules[__name__]
RELEASE = threading.Event()


def leaky(payload: EchoPayload, run: JobRun) -> dict[str, Any]:
    raise RuntimeError("could not reach db-7.internal.example:5432 as admin (password: hunter2)")


def cooperative(payload: EchoPayload, run: JobRun) -> dict[str, Any]:
    run.wait(30)
    return {"done": True}


def stubborn(payload: EchoPayload, run: JobRun) -> dict[str, Any]:
    RELEASE.wait(30)  # ignores run.cancelled
    return {"late": True}


TYPES = JobTypes(
    [
        JobType("leaky", EchoPayload, f"{HANDLERS}:leaky", "raises", max_attempts=1),
        JobType("cooperative", EchoPayload, f"{HANDLERS}:cooperative", "waits", timeout=1),
        JobType("stubborn", EchoPayload, f"{HANDLERS}:stubborn", "deaf", timeout=1, max_attempts=2),
    ]
)


@pytest.fixture
def conninfo(aws_env: MotoServer, migrated_db: PgDatabase) -> str:
    aws.client("secretsmanager").create_secret(
        Name=SECRET_ID, SecretString=json.dumps(migrated_db.rds_secret())
    )
    return migrated_db.conninfo()


@contextmanager
def consuming(queue_url: str) -> Iterator[Consumer[repository.JobMessage]]:
    database = Database(
        SecretRef(SECRET_ID, RdsSecret), DatabaseSettings(pool_size=6, pool_timeout=2)
    )
    database.open()
    processor = JobProcessor(database, lease=timedelta(seconds=30), types=TYPES)
    consumer = Consumer(
        queue_url,
        repository.JobMessage,
        processor,
        working=processor.working,
        wait_time_seconds=1,
        retry=Backoff(base=1, cap=1),
        concurrency=4,
    )
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        yield consumer
    finally:
        RELEASE.set()
        stop.set()
        thread.join(timeout=30)
        database.close()


def submit(conninfo: str, queue_url: str, job_type: str) -> Callable[[], repository.Job]:
    """Create a job of ``job_type``, send its message; returns a reader of its row."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        job = repository.create(conn, owner="test", job_type=job_type, payload={}).job
    send_messages(queue_url, repository.message_body(job))

    def read() -> repository.Job:
        with psycopg.connect(conninfo, row_factory=dict_row) as conn:
            found = repository.get(conn, job.id)
        assert found is not None
        return found

    return read


def test_clients_see_a_code_not_the_exception(conninfo: str) -> None:
    queue_url, _ = create_queue("jobs", visibility=30, max_receive=5)
    with consuming(queue_url):
        job = submit(conninfo, queue_url, "leaky")
        wait_until(lambda: job().status == "dead", what="dead after its one attempt")
    assert (job().error_code, job().error) == ("handler_error", "the job failed")
    assert "internal" not in job().model_dump_json()


def test_a_handler_that_honours_its_deadline_times_out(conninfo: str) -> None:
    queue_url, _ = create_queue("jobs", visibility=30, max_receive=5)
    with consuming(queue_url) as consumer:
        job = submit(conninfo, queue_url, "cooperative")
        # run.wait(30) raises at the 1 s deadline: failed "timeout", retried after the backoff.
        wait_until(lambda: job().error_code == "timeout", timeout=10, what="timed out")
        wait_until(lambda: job().attempts >= 2, timeout=10, what="retried")
        assert consumer.stats().running <= 1


def test_a_handler_that_ignores_its_deadline_is_disowned(conninfo: str) -> None:
    RELEASE.clear()
    queue_url, dlq_url = create_queue("jobs", visibility=2, max_receive=5)
    with consuming(queue_url) as consumer:
        job = submit(conninfo, queue_url, "stubborn")
        # Told at the deadline, still running a heartbeat later: its job is marked "timeout" and
        # its message left to SQS, which delivers it again; the second run goes the same way,
        # and with max_attempts spent the job is dead. Both threads are still running.
        wait_until(lambda: job().status == "dead", timeout=20, what="dead after two timeouts")
        assert (job().attempts, job().error_code) == (2, "timeout")
        assert consumer.stats().running == 2, "the stubborn handlers were not left running"
        # The third delivery finds the job dead and is acknowledged.
        wait_until(lambda: queue_counts(queue_url) == (0, 0), timeout=20, what="queue empty")
        RELEASE.set()
        wait_until(lambda: consumer.stats().running == 0, what="the late handlers returned")
    # Their late results were ignored: no effect, still dead.
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM job_effects").fetchone() == (0,)
    assert job().status == "dead"
    assert queue_counts(dlq_url) == (0, 0)
