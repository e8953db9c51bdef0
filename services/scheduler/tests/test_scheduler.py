"""The scheduler as ECS runs it (``python -m scheduler ...`` child processes), against moto's
HTTP server and a real, migrated PostgreSQL."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from jobs import repository
from servicekit import aws
from servicekit.cron import parse
from servicekit.scheduling import InvalidJob, send_firing
from servicekit.testing import Database, MotoServer, answers_ok, wait_until
from servicekit.testing.moto import free_port
from servicekit.testing.sqs import create_queue, queue_counts

TESTS = Path(__file__).resolve().parent
SECRET_ID = "suite/test/db"
SLOT = "2026-03-06T10:00:00Z"
SKIPPED = "skipped: slot already run"


@dataclass
class Scheduler:
    """One ``python -m scheduler`` child process; its output goes to a file."""

    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines (metrics documents included)."""
        text = self.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def messages(self) -> list[str]:
        return [str(line.get("message")) for line in self.lines()]

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)


@dataclass
class Env:
    database: Database
    queue_url: str
    firings_url: str
    environ: dict[str, str]
    tmp: Path
    started: list[Scheduler]

    def start(self, *args: str, **settings: str) -> Scheduler:
        log = self.tmp / f"scheduler-{len(self.started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "scheduler", *args],
                env=self.environ | settings,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        child = Scheduler(process, log)
        self.started.append(child)
        return child

    def run(self, *args: str, **settings: str) -> tuple[int, Scheduler]:
        child = self.start(*args, **settings)
        return child.wait(), child

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database.conninfo(), autocommit=True) as conn:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description is not None else []


@pytest.fixture
def env(aws_env: MotoServer, migrated_db: Database, tmp_path: Path) -> Iterator[Env]:
    aws.client("secretsmanager").create_secret(
        Name=SECRET_ID, SecretString=json.dumps(migrated_db.rds_secret())
    )
    queue_url = aws.client("sqs").create_queue(QueueName="jobs")["QueueUrl"]
    # Longer than the test registry's slowest run takes to report (60 s + 20 s + 30 s).
    firings_url, _ = create_queue("firings", visibility=120)
    environ = os.environ | {
        "APP_NAME": "suite",
        "APP_ENV": "test",
        "SERVICE_NAME": "scheduler",
        "DB_SECRET": SECRET_ID,
        "QUEUE_URL": queue_url,
        "FIRINGS_QUEUE_URL": firings_url,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "SCHEDULER_REGISTRY": "scheduler_test_jobs:registry",
        **migrated_db.verify_full_env(),
    }
    scheduler_env = Env(migrated_db, queue_url, firings_url, environ, tmp_path, [])
    scheduler_env.query("CREATE TABLE ticks (job text, slot timestamptz, pid integer)")
    yield scheduler_env
    for child in scheduler_env.started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(timeout=10)


def healthy(port: int, child: Scheduler) -> bool:
    assert child.process.poll() is None, child.log.read_text()
    return answers_ok(f"http://127.0.0.1:{port}/health")


def runs(env: Env, job: str) -> list[tuple[Any, ...]]:
    return env.query(
        "SELECT slot, status, error FROM schedule_runs WHERE job = %s ORDER BY slot", job
    )


def test_two_serve_processes_run_each_slot_once(env: Env) -> None:
    # An overlapping deployment, locally: both clocks send every slot's firing to the queue.
    ports = [free_port(), free_port()]
    schedulers = [
        env.start(
            "serve",
            SCHEDULER_REGISTRY="scheduler_test_jobs:serving",
            HEALTH_PORT=str(port),
            LOCAL_CLOCK="true",
        )
        for port in ports
    ]
    for port, child in zip(ports, schedulers, strict=True):
        wait_until(partial(healthy, port, child), 45, f"serving on {port}")
    both_up = datetime.now(UTC)

    def slots_since_both_up() -> int:
        return len(env.query("SELECT 1 FROM ticks WHERE slot > %s", both_up))

    wait_until(lambda: slots_since_both_up() >= 5, 45, "five slots with both serving")
    for child in schedulers:
        child.process.send_signal(signal.SIGTERM)
    assert [child.wait() for child in schedulers] == [0, 0]

    ticks = env.query("SELECT slot, count(*) FROM ticks GROUP BY slot HAVING count(*) > 1")
    assert ticks == [], "a slot ran more than once"
    recorded = runs(env, "tick")
    assert [slot for slot, _, _ in recorded] == [
        slot for (slot,) in env.query("SELECT slot FROM ticks ORDER BY slot")
    ]
    assert {status for _, status, _ in recorded} == {"succeeded"}
    # Both fired the same slots: each lost some of them to the other's lock.
    messages = [message for child in schedulers for message in child.messages()]
    assert SKIPPED in messages
    assert all("stopped" in child.messages() for child in schedulers)


def test_firings_run_their_slot_once_on_the_service(env: Env) -> None:
    # As in AWS: no clock of its own; EventBridge Scheduler (here: the test) sends the firings.
    port = free_port()
    child = env.start("serve", HEALTH_PORT=str(port))
    wait_until(partial(healthy, port, child), 45, "serving")
    send_firing(env.firings_url, "tick", datetime(2026, 3, 6, 10, tzinfo=UTC))
    # A duplicate delivery, a few seconds late: the same slot.
    send_firing(env.firings_url, "tick", datetime(2026, 3, 6, 10, 0, 40, tzinfo=UTC))
    send_firing(env.firings_url, "boom", datetime(2026, 3, 6, 10, tzinfo=UTC))
    wait_until(lambda: queue_counts(env.firings_url) == (0, 0), 45, "the firings handled")
    child.process.send_signal(signal.SIGTERM)
    assert child.wait() == 0

    assert env.query("SELECT count(*) FROM ticks") == [(1,)]
    assert runs(env, "tick") == [(datetime(2026, 3, 6, 10, tzinfo=UTC), "succeeded", None)]
    assert runs(env, "boom")[0][1:] == ("failed", "RuntimeError: boom on purpose")
    assert SKIPPED in child.messages()
    failed = [line for line in child.lines() if "ScheduledRuns" in line]
    assert sorted((line["job"], line["status"]) for line in failed) == [
        ("boom", "failed"),
        ("tick", "succeeded"),
    ]


def test_a_run_whose_process_is_killed_is_recorded_failed_by_the_next_task(env: Env) -> None:
    # hang: timeout 5 s; with a 1 s stop grace and margin a live run reports within 7 s.
    dying = {
        "SCHEDULER_REGISTRY": "scheduler_test_jobs:dying",
        "STOP_GRACE": "1",
        "REPORT_MARGIN": "1",
    }
    firings_url, dlq_url = create_queue("firings-dying", visibility=8)
    first = env.start("serve", FIRINGS_QUEUE_URL=firings_url, HEALTH_PORT="0", **dying)
    send_firing(firings_url, "hang", datetime(2026, 3, 6, 10, tzinfo=UTC))
    wait_until(lambda: env.query("SELECT 1 FROM ticks"), 45, "the run started")
    first.process.kill()  # SIGKILL: nothing is recorded, the firing is not deleted
    first.wait()
    assert runs(env, "hang") == [(datetime(2026, 3, 6, 10, tzinfo=UTC), "running", None)]

    # The replacement task gets the firing again once its visibility timeout lapses.
    second = env.start("serve", FIRINGS_QUEUE_URL=firings_url, HEALTH_PORT="0", **dying)
    wait_until(lambda: runs(env, "hang")[0][1] != "running", 60, "the dead run recorded")
    [(_, status, error)] = runs(env, "hang")
    assert status == "failed"
    assert error.startswith("died: no report within 7 s of its start")
    wait_until(lambda: queue_counts(firings_url) == (0, 0), 30, "the firing deleted")
    assert queue_counts(dlq_url) == (0, 0)
    # The EMF document the run-failures alarm counts, from the task that found it dead.
    [metric] = [line for line in second.lines() if "ScheduledRuns" in line]
    assert (metric["job"], metric["status"]) == ("hang", "failed")
    assert env.query("SELECT count(*) FROM ticks") == [(1,)]  # not run again


def test_run_twice_for_one_slot_runs_once(env: Env) -> None:
    # By hand (`scheduler run` in a task): any instant of the slot names it.
    first_code, first = env.run("run", "tick", "--slot", SLOT)
    second_code, second = env.run("run", "tick", "--slot", "2026-03-06T10:00:40Z")

    assert (first_code, second_code) == (0, 0)
    assert "finished: succeeded" in " ".join(first.messages())
    assert SKIPPED in second.messages()
    assert env.query("SELECT count(*) FROM ticks") == [(1,)]
    assert runs(env, "tick") == [(datetime(2026, 3, 6, 10, tzinfo=UTC), "succeeded", None)]


def test_a_failing_job_exits_1_and_is_recorded_failed(env: Env) -> None:
    code, child = env.run("run", "boom", "--slot", SLOT)

    assert code == 1
    [(_, status, error)] = runs(env, "boom")
    assert (status, error) == ("failed", "RuntimeError: boom on purpose")
    lines = [line for line in child.lines() if line.get("status") == "failed"]
    # The log line, and the EMF document CloudWatch turns into the ScheduledRuns metric.
    assert [(line["job"], "ScheduledRuns" in line) for line in lines] == [
        ("boom", False),
        ("boom", True),
    ]


def test_sigterm_stops_a_running_job_and_records_it(env: Env) -> None:
    child = env.start("run", "slow", "--slot", SLOT, STOP_GRACE="10")
    wait_until(lambda: env.query("SELECT 1 FROM ticks"), 45, "the slow job started")
    child.process.send_signal(signal.SIGTERM)

    assert child.wait() == 1
    [(_, status, error)] = runs(env, "slow")
    assert (status, error) == ("interrupted", "the process is stopping")


def test_an_invalid_schedule_fails_at_import_naming_the_job(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    expected = "job 'nightly-report': invalid schedule 'cron(0 3 * * * *)'"
    with pytest.raises(InvalidJob, match=re.escape(expected)):
        importlib.import_module("scheduler_bad_jobs")

    for command in (["schedules"], ["run", "nightly-report"]):
        code, child = env.run(*command, SCHEDULER_REGISTRY="scheduler_bad_jobs:registry")
        assert code == 2
        assert expected in child.log.read_text()
    assert env.query("SELECT count(*) FROM schedule_runs") == [(0,)]


def create_pending_job(env: Env) -> UUID:
    """A job as the API leaves it when its SQS send failed: queued, enqueued_at NULL."""
    with psycopg.connect(env.database.conninfo(), autocommit=True) as conn:
        return repository.create(conn, owner="test", job_type="echo", payload={"n": 1}).job.id


def enqueued_at(env: Env, job_id: UUID) -> datetime | None:
    [(value,)] = env.query("SELECT enqueued_at FROM jobs WHERE id = %s", job_id)
    return value  # type: ignore[no-any-return]


def test_outbox_sweep_sends_a_job_whose_send_failed(env: Env) -> None:
    job_id = create_pending_job(env)
    default = {"SCHEDULER_REGISTRY": "scheduler.jobs:registry", "OUTBOX_MIN_AGE": "0"}

    # SQS refuses (here: no such queue): the sweep fails and the job stays pending.
    missing = env.queue_url.rsplit("/", 1)[0] + "/missing"
    code, _ = env.run("run", "outbox-sweep", "--slot", SLOT, QUEUE_URL=missing, **default)
    assert code == 1
    assert enqueued_at(env, job_id) is None
    assert runs(env, "outbox-sweep")[0][1] == "failed"

    code, child = env.run("run", "outbox-sweep", "--slot", "2026-03-06T10:01:00Z", **default)
    assert code == 0, child.log.read_text()
    assert enqueued_at(env, job_id) is not None
    received = aws.client("sqs").receive_message(
        QueueUrl=env.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    bodies = [json.loads(message["Body"]) for message in received.get("Messages", [])]
    assert bodies == [{"job_id": str(job_id), "type": "echo"}]

    # Sent once: the next sweep finds nothing to send.
    code, again = env.run("run", "outbox-sweep", "--slot", "2026-03-06T10:02:00Z", **default)
    assert code == 0
    assert "outbox sweep: 0 message(s) sent" in again.messages()


def test_requeue_stuck_and_purge_finished(env: Env) -> None:
    stuck, done = create_pending_job(env), create_pending_job(env)
    with psycopg.connect(env.database.conninfo(), autocommit=True) as conn:
        repository.start(conn, stuck, lease=timedelta(minutes=2))
        repository.start(conn, done, lease=timedelta(minutes=2))
        repository.mark_succeeded(conn, done, {"ok": True})
    env.query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", stuck)
    env.query("UPDATE jobs SET finished_at = now() - interval '40 days' WHERE id = %s", done)
    default = {"SCHEDULER_REGISTRY": "scheduler.jobs:registry"}

    # Without --slot the slot is the current one.
    before = datetime.now(UTC)
    assert env.run("run", "requeue-stuck", **default)[0] == 0
    assert env.run("run", "purge-finished", "--slot", SLOT, **default)[0] == 0

    assert env.query("SELECT id, status, enqueued_at FROM jobs") == [(stuck, "queued", None)]
    [(slot, status, _)] = runs(env, "requeue-stuck")
    assert status == "succeeded"
    assert before - timedelta(minutes=5) < slot <= datetime.now(UTC)
    assert slot.timestamp() % 300 == 0


def queue_with_dlq(env: Env) -> tuple[str, str]:
    """A jobs queue with a dead-letter queue (maxReceiveCount 2, visibility 30 s); both URLs."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    queue_url = sqs.create_queue(
        QueueName="jobs-redriven",
        Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive},
    )["QueueUrl"]
    return queue_url, dlq_url


def job_row(env: Env, job_id: UUID) -> tuple[Any, ...]:
    [row] = env.query("SELECT status, attempts, error, enqueued_at FROM jobs WHERE id = %s", job_id)
    return row


def test_resend_lost_sends_again_a_job_whose_message_outlived_the_queue(env: Env) -> None:
    queue_url, _ = queue_with_dlq(env)
    lost, recent = create_pending_job(env), create_pending_job(env)
    with psycopg.connect(env.database.conninfo(), autocommit=True) as conn:
        repository.mark_enqueued(conn, [lost, recent])
    # 30 s visibility x 2 receives + a 60 s retry margin: 2 minutes, so 3 minutes is lost.
    env.query("UPDATE jobs SET updated_at = now() - interval '3 minutes' WHERE id = %s", lost)
    settings = {
        "SCHEDULER_REGISTRY": "scheduler.jobs:registry",
        "QUEUE_URL": queue_url,
        "RETRY_MARGIN": "60",
        "OUTBOX_MIN_AGE": "0",
    }

    code, child = env.run("run", "resend-lost", "--slot", SLOT, **settings)
    assert code == 0, child.log.read_text()
    assert job_row(env, lost) == ("queued", 0, None, None)
    assert job_row(env, recent)[3] is not None

    assert env.run("run", "outbox-sweep", "--slot", SLOT, **settings)[0] == 0
    received = aws.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"])["job_id"] for m in received["Messages"]] == [str(lost)]


def test_dead_letters_mark_their_jobs_dead_and_chosen_ones_are_redriven(env: Env) -> None:
    queue_url, dlq_url = queue_with_dlq(env)
    exhausted, poisoned, other = (create_pending_job(env) for _ in range(3))
    with psycopg.connect(env.database.conninfo(), autocommit=True) as conn:
        for _ in range(2):
            repository.start(conn, exhausted, lease=timedelta(minutes=2))
            repository.mark_failed(conn, exhausted, "ValueError: no")
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"job_id": str(exhausted)}))
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=json.dumps({"job_id": str(poisoned), "extra": 1}),
        MessageAttributes={
            "servicekit.poison_reason": {"DataType": "String", "StringValue": "bad body"}
        },
    )
    sqs.send_message(QueueUrl=dlq_url, MessageBody="not a job")
    settings = {"SCHEDULER_REGISTRY": "scheduler.jobs:registry", "QUEUE_URL": queue_url}

    code, child = env.run("run", "reconcile-dlq", "--slot", SLOT, **settings)
    assert code == 0, child.log.read_text()
    assert job_row(env, exhausted)[:3] == (
        "dead",
        2,
        "exhausted 2 attempt(s): its message went to the dead-letter queue; "
        "last error: ValueError: no",
    )
    assert job_row(env, poisoned)[:3] == ("dead", 0, "poison message: bad body")
    assert job_row(env, other)[0] == "queued"
    # The message naming no job stays for a person to read (hidden for a while after the read).
    left = sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert sum(int(count) for count in left.values()) == 1

    code, usage = env.run("redrive-dead", **settings)
    assert code == 2
    assert "needs --id, --type or --since" in usage.log.read_text()
    code, redrive = env.run("redrive-dead", "--id", str(exhausted), **settings)
    assert code == 0, redrive.log.read_text()
    assert job_row(env, exhausted)[:2] == ("queued", 0)
    assert job_row(env, poisoned)[0] == "dead"


def test_redrive_takes_a_job_whose_dead_letter_is_not_reconciled_yet(env: Env) -> None:
    queue_url, dlq_url = queue_with_dlq(env)
    exhausted = create_pending_job(env)
    with psycopg.connect(env.database.conninfo(), autocommit=True) as conn:
        repository.start(conn, exhausted, lease=timedelta(minutes=2))
        repository.mark_failed(conn, exhausted, "ValueError: no")
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"job_id": str(exhausted)}))
    settings = {"SCHEDULER_REGISTRY": "scheduler.jobs:registry", "QUEUE_URL": queue_url}

    code, redrive = env.run("redrive-dead", "--id", str(exhausted), **settings)

    assert code == 0, redrive.log.read_text()
    assert job_row(env, exhausted)[:2] == ("queued", 0)
    left = sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert sum(int(count) for count in left.values()) == 0


def test_schedules_export_for_the_infrastructure(env: Env) -> None:
    exported = subprocess.run(
        [sys.executable, "-m", "scheduler", "schedules", "--json"],
        env=env.environ | {"SCHEDULER_REGISTRY": "scheduler.jobs:registry"},
        capture_output=True,
        check=True,
        text=True,
    )
    schedules = json.loads(exported.stdout)
    assert [schedule["name"] for schedule in schedules] == [
        "outbox-sweep",
        "purge-finished",
        "reconcile-dlq",
        "requeue-stuck",
        "resend-lost",
    ]
    for schedule in schedules:
        parse(schedule["expression"])
        assert set(schedule) == {"name", "expression", "timezone", "timeout_seconds", "description"}
    assert exported.stderr == ""


def test_slot_argument_needs_a_timezone(env: Env) -> None:
    code, child = env.run("run", "tick", "--slot", "2026-03-06T10:00:00")
    assert code == 2
    assert "has no timezone" in child.log.read_text()
