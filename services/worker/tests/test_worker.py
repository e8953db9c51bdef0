"""The worker process against moto's HTTP server and a real PostgreSQL.

The worker runs with the container's command (``worker``, from service.toml) in a child process;
each test gets a fresh queue with its dead-letter queue, and a migrated database."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from jobs import migrations, repository
from jobs.types import JOB_TYPES
from servicekit import aws
from servicekit.lifecycle import ShutdownBudget
from servicekit.testing import (
    Database,
    MotoServer,
    PostgresCluster,
    answers_ok,
    create_queue,
    queue_counts,
    send_messages,
    wait_until,
)
from servicekit.testing.moto import free_port
from suite_contract.spec import load_spec
from worker import handlers
from worker.settings import Settings

APP, ENV = "suite", "test"
SECRET_ID = f"{APP}/{ENV}/db"
SERVICE_DIR = Path(__file__).resolve().parents[1]


def container_command() -> list[str]:
    """The container's command from the service spec, its script from this environment."""
    command = load_spec(SERVICE_DIR / "service.toml").command
    return [str(Path(sys.executable).parent / command[0]), *command[1:]]


@dataclass
class WorkerEnv:
    """The queue, its dead-letter queue and the database a worker is pointed at."""

    database: Database
    queue_url: str
    dlq_url: str
    environ: dict[str, str]

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.database.conninfo(), autocommit=True, row_factory=dict_row)

    def create(
        self, job_type: str, payload: dict[str, Any], count: int = 1
    ) -> list[repository.Job]:
        with self.connect() as conn:
            return [
                repository.create(conn, owner="test", job_type=job_type, payload=payload).job
                for _ in range(count)
            ]

    def submit(self, job_type: str, payload: dict[str, Any], count: int = 1) -> list[UUID]:
        """Create jobs and send their messages, as the API does."""
        created = self.create(job_type, payload, count)
        self.send(*map(repository.message_body, created))
        return [job.id for job in created]

    def send(self, *bodies: str) -> None:
        send_messages(self.queue_url, *bodies)

    def statuses(self, ids: list[UUID]) -> dict[str, int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT status, count(*) AS n FROM jobs WHERE id = ANY(%s) GROUP BY status", (ids,)
            ).fetchall()
        return {row["status"]: row["n"] for row in rows}

    def job(self, job_id: UUID) -> repository.Job:
        with self.connect() as conn:
            job = repository.get(conn, job_id)
        assert job is not None
        return job

    def effects(self, ids: list[UUID]) -> dict[UUID, int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT job_id, count(*) AS n FROM job_effects WHERE job_id = ANY(%s) "
                "GROUP BY job_id",
                (ids,),
            ).fetchall()
        return {row["job_id"]: row["n"] for row in rows}

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (or of ``url``)."""
        return queue_counts(url or self.queue_url)

    def dead_letters(self) -> list[str]:
        answer = aws.client("sqs").receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10)
        return [message["Body"] for message in answer.get("Messages", [])]


class WorkerProcess:
    """The worker command in a child process, its output kept in a file."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.port = free_port()
        self.environ = environ | {"PORT": str(self.port)}
        self.log = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                container_command(), env=self.environ, stdout=output, stderr=subprocess.STDOUT
            )
        wait_until(self._healthy, timeout=30, what=f"worker healthy; log:\n{self.output()}")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited {self.process.returncode}:\n{self.output()}")
        return answers_ok(f"{self.url}/health")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=5)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get("/stats").json()
        return stats

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)


@pytest.fixture
def make_env(aws_env: MotoServer, migrated_db: Database) -> Callable[..., WorkerEnv]:
    """A queue (visibility timeout and maxReceiveCount as asked) with its DLQ, and the database."""
    aws.client("secretsmanager").create_secret(
        Name=SECRET_ID, SecretString=json.dumps(migrated_db.rds_secret())
    )

    def make(visibility: int = 2, max_receive: int = 3, **settings: str) -> WorkerEnv:
        queue_url, dlq_url = create_queue("jobs", visibility=visibility, max_receive=max_receive)
        environ = {
            **os.environ,
            "APP_NAME": APP,
            "APP_ENV": ENV,
            "SERVICE_NAME": "worker",
            "DB_SECRET": SECRET_ID,
            "QUEUE_URL": queue_url,
            # Short backoffs keep the tests quick; the long poll keeps its production 20 s.
            "RETRY_BASE_DELAY": "1",
            "RETRY_MAX_DELAY": "1",
            # Leaves 10 s of grace after the shutdown budget's other steps.
            "STOP_TIMEOUT": "19",
            "CONCURRENCY": "4",
            **migrated_db.verify_full_env(),
            **settings,
        }
        return WorkerEnv(migrated_db, queue_url, dlq_url, environ)

    return make


@pytest.fixture
def start_worker() -> Iterator[Callable[[WorkerEnv], WorkerProcess]]:
    """Start workers on an environment; every one still running is killed after the test."""
    started: list[WorkerProcess] = []

    def start(env: WorkerEnv) -> WorkerProcess:
        child = WorkerProcess(env.environ)
        started.append(child)
        return child.start()

    yield start
    for child in started:
        child.stop()


StartWorker = Callable[[WorkerEnv], WorkerProcess]


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the test's own, to stop and start (an outage)."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


def test_sigkill_mid_batch_then_restart_runs_each_effect_once(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=2)
    ids = env.submit("sleep", {"seconds": 0.05}, count=200)
    first = start_worker(env)
    wait_until(lambda: env.statuses(ids).get("succeeded", 0) >= 40, what="40 jobs done")
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert 0 < env.statuses(ids).get("succeeded", 0) < 200, "not killed mid-batch"

    start_worker(env)
    wait_until(lambda: env.statuses(ids) == {"succeeded": 200}, timeout=60, what="all succeeded")
    effects = env.effects(ids)
    assert len(effects) == 200
    assert set(effects.values()) == {1}, "an effect ran more than once"
    wait_until(lambda: env.counts() == (0, 0), what="queue empty")


def test_sigterm_finishes_running_jobs_and_releases_the_rest(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=30, CONCURRENCY="2", MAX_IN_FLIGHT="8")
    ids = env.submit("sleep", {"seconds": 2}, count=8)
    child = start_worker(env)
    wait_until(
        lambda: child.stats()["running"] == 2 and child.stats()["in_flight"] == 8,
        what="two running, six waiting",
    )
    stopped = time.monotonic()
    child.signal(signal.SIGTERM)
    # The six waiting messages are visible at once, not after the 30 s visibility timeout.
    wait_until(lambda: env.counts()[0] == 6, timeout=5, what="six released")
    assert child.wait(timeout=15) == 0
    elapsed = time.monotonic() - stopped
    assert elapsed < 10, f"exit took {elapsed:.1f} s, past the grace period"
    assert env.statuses(ids) == {"succeeded": 2, "queued": 6}
    assert env.counts() == (6, 0)
    assert "worker stopped (SIGTERM)" in child.output()


def test_poison_goes_to_the_dlq_while_neighbours_are_processed(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=30)
    before = env.submit("echo", {"n": 1})
    [named] = env.create("echo", {"n": 2})  # a job whose message arrives mangled
    env.send("not json", json.dumps({"job_id": str(named.id), "type": ["not", "a", "string"]}))
    after = env.submit("echo", {"n": 3})
    start_worker(env)
    wait_until(lambda: env.statuses(before + after) == {"succeeded": 2}, what="neighbours done")
    # With a 30 s visibility timeout a retry would take 30 s: the DLQ gets them at once.
    wait_until(lambda: env.counts(env.dlq_url)[0] == 2, timeout=5, what="poison in the DLQ")
    assert env.job(named.id).status == "dead"
    assert env.job(named.id).error_code == "invalid_message"
    assert "not json" in env.dead_letters()
    wait_until(lambda: env.counts() == (0, 0), what="queue empty")
    assert env.job(before[0]).result == {"echo": {"n": 1}}


def test_a_succeeded_job_is_not_run_again(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env()
    ids = env.submit("echo", {"n": 1})
    child = start_worker(env)
    wait_until(lambda: env.statuses(ids) == {"succeeded": 1})
    env.send(repository.message_body(env.job(ids[0])))  # a duplicate delivery
    wait_until(lambda: child.stats()["processed"] == 2 and env.counts() == (0, 0))
    assert env.job(ids[0]).attempts == 1
    assert env.effects(ids) == {ids[0]: 1}


def test_an_always_failing_job_is_retried_until_its_type_s_max_attempts_then_dead(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=30, max_receive=5)
    ids = env.submit("fail", {"reason": "broken on purpose"})
    child = start_worker(env)
    # Retries are paced by the 1 s backoff, not the 30 s visibility timeout.
    wait_until(lambda: env.job(ids[0]).status == "dead", timeout=20, what="job dead")
    job = env.job(ids[0])
    assert job.attempts == JOB_TYPES["fail"].max_attempts == 3  # not the queue's 5
    assert (job.error_code, job.error) == ("failed_on_purpose", "broken on purpose")
    wait_until(lambda: env.counts() == (0, 0), what="message deleted")
    assert env.counts(env.dlq_url) == (0, 0), "a dead job's message went on to the DLQ"
    assert child.stats()["failed"] == 3
    assert env.effects(ids) == {}


def test_a_non_retryable_failure_is_dead_at_once_with_its_code(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=30, max_receive=5)
    ids = env.submit("fail", {"reason": "bad input", "retryable": False})
    [mangled] = env.submit("sleep", {"seconds": 1})
    # A payload stored before its model changed: it will never validate, so never retried.
    with env.connect() as conn:
        conn.execute('UPDATE jobs SET payload = \'{"seconds": "soon"}\' WHERE id = %s', (mangled,))
    child = start_worker(env)
    wait_until(lambda: env.statuses([*ids, mangled]) == {"dead": 2}, what="both dead")
    failed = env.job(ids[0])
    assert (failed.attempts, failed.error_code, failed.error) == (
        1,
        "failed_on_purpose",
        "bad input",
    )
    invalid = env.job(mangled)
    assert (invalid.attempts, invalid.error_code) == (1, "invalid_payload")
    assert invalid.error == "the payload is not a valid sleep job"
    wait_until(lambda: env.counts() == (0, 0), what="messages deleted")
    assert env.counts(env.dlq_url) == (0, 0)
    assert child.stats()["failed"] == 2


def test_a_long_job_outlives_the_visibility_timeout_without_redelivery(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=1)
    ids = env.submit("sleep", {"seconds": 3})
    child = start_worker(env)
    wait_until(lambda: env.statuses(ids) == {"succeeded": 1}, what="long job done")
    assert env.job(ids[0]).attempts == 1, "delivered twice"
    assert env.effects(ids) == {ids[0]: 1}
    assert child.stats()["processed"] == 1


def test_http_endpoints(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker, aws_env: MotoServer
) -> None:
    env = make_env()
    child = start_worker(env)
    assert child.get("/health").json() == {"status": "ok", "checks": {"consumer": "ok"}}
    ready = child.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "sqs": "ok", "lifecycle": "ok"}
    stats = child.stats()
    assert {"in_flight", "running", "processed", "failed", "poisoned"} <= stats.keys()
    assert child.get("/nope").status_code == 404
    with aws_env.outage():
        wait_until(lambda: child.get("/ready").status_code == 503, what="not ready")
        assert child.get("/ready").json()["checks"]["sqs"] != "ok"
        # Liveness does not depend on SQS: an outage must not get the task restarted.
        assert child.get("/health").status_code == 200
    wait_until(lambda: child.get("/ready").status_code == 200, what="ready again")


def test_invalid_configuration_fails_fast(make_env: Callable[..., WorkerEnv]) -> None:
    env = make_env(CONCURRENCY="0")
    del env.environ["QUEUE_URL"]
    child = WorkerProcess(env.environ)
    with pytest.raises(AssertionError, match="exited 2") as failure:
        child.start()
    child.stop()
    assert "QUEUE_URL" in str(failure.value)
    assert "concurrency" in str(failure.value)


def test_a_stop_timeout_too_short_for_the_shutdown_steps_fails_fast(
    make_env: Callable[..., WorkerEnv],
) -> None:
    child = WorkerProcess(make_env(STOP_TIMEOUT="8").environ)
    with pytest.raises(AssertionError, match="exited 2") as failure:
        child.start()
    child.stop()
    assert "stop_timeout 8 s leaves -1 s for running work" in str(failure.value)


def test_the_shutdown_budget_is_the_service_spec_s_stop_timeout() -> None:
    # The infrastructure passes STOP_TIMEOUT from the spec; the default is the same figure.
    stop_timeout = load_spec(SERVICE_DIR / "service.toml").task.stop_timeout
    assert Settings.model_fields["stop_timeout"].default == stop_timeout
    budget = ShutdownBudget(stop_timeout)
    assert budget.grace + budget.settle + budget.protection + budget.close < stop_timeout


def test_every_job_type_resolves_to_a_worker_handler_within_the_queue_s_attempts() -> None:
    max_receive = load_spec(SERVICE_DIR / "service.toml").trigger.max_receive_count
    for job_type in JOB_TYPES:
        # Imports the handler: a type whose "module:function" names nothing fails here.
        assert callable(job_type.resolve()), job_type.name
        # Past maxReceiveCount SQS moves the message to the DLQ before the type gives up.
        assert job_type.max_attempts <= max_receive, job_type.name
        for error in job_type.permanent_errors():
            assert issubclass(error, Exception)
    assert set(handlers.__all__) == {job_type.resolve().__name__ for job_type in JOB_TYPES}


def test_leases_are_renewed_while_a_job_runs_past_any_fixed_stuck_time(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=2, LEASE_SECONDS="2")
    [job_id] = env.submit("sleep", {"seconds": 6})
    start_worker(env)
    wait_until(lambda: env.job(job_id).status == "running", what="job running")
    with env.connect() as conn:
        # As if it had been running for an hour, far past the old fixed 900 s.
        conn.execute(
            "UPDATE jobs SET updated_at = updated_at - interval '1 hour', "
            "started_at = started_at - interval '1 hour' WHERE id = %s",
            (job_id,),
        )
    leases = set()
    while (job := env.job(job_id)).status == "running":
        leases.add(job.lease_expires_at)
        with env.connect() as conn:
            assert repository.requeue_stuck(conn, max_attempts={}) == [], "a live job requeued"
    assert job.status == "succeeded"
    assert job.attempts == 1
    assert len(leases) >= 3, "the lease was not renewed while the job ran"


def test_a_job_whose_worker_died_is_requeued_once_its_lease_expires(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker
) -> None:
    env = make_env(visibility=30, LEASE_SECONDS="2")
    [job_id] = env.submit("sleep", {"seconds": 60})
    child = start_worker(env)
    wait_until(lambda: env.job(job_id).status == "running", what="job running")
    child.signal(signal.SIGKILL)
    child.wait(timeout=10)

    def requeued() -> list[repository.Job]:
        with env.connect() as conn:
            return repository.requeue_stuck(conn, max_attempts=JOB_TYPES.max_attempts())

    [job] = wait_until(requeued, timeout=10, what="the expired lease requeued")
    assert (job.id, job.status, job.error_code) == (job_id, "queued", "lease_expired")


def test_a_database_outage_pauses_intake_without_burning_attempts(
    make_env: Callable[..., WorkerEnv], start_worker: StartWorker, own_cluster: PostgresCluster
) -> None:
    database = own_cluster.create_database()
    migrations.upgrade(database.conninfo())
    secret_id = f"{SECRET_ID}-outage"
    aws.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps(database.rds_secret())
    )
    env = dataclasses.replace(
        make_env(
            visibility=30,
            max_receive=3,
            DB_SECRET=secret_id,
            DATABASE__POOL_TIMEOUT="1",
            **database.verify_full_env(),
        ),
        database=database,
    )
    child = start_worker(env)
    warm = env.submit("echo", {"n": 0})
    wait_until(lambda: env.statuses(warm) == {"succeeded": 1}, what="first job done")
    jobs = env.create("echo", {"n": 1}, count=3)

    own_cluster.stop()
    # The receiver is inside its long poll: it takes these, and each start() finds the database
    # down. They go back to the queue, uncounted, and the gate holds further receives.
    env.send(*map(repository.message_body, jobs))
    wait_until(lambda: not child.stats()["ready"], what="the consumer's gate closed")
    wait_until(lambda: env.counts() == (3, 0), timeout=20, what="messages back on the queue")
    assert child.get("/ready").status_code == 503
    assert child.get("/health").status_code == 200, "an outage must not get the task restarted"
    stats = child.stats()
    assert (stats["failed"], stats["in_flight"]) == (0, 0)
    assert stats["deferred"] >= 1, "no held message met the outage"

    own_cluster.start()
    ids = [job.id for job in jobs]
    wait_until(lambda: env.statuses(ids) == {"succeeded": 3}, timeout=60, what="resumed")
    assert {env.job(job_id).attempts for job_id in ids} == {1}
    assert child.stats()["failed"] == 0
    assert env.counts(env.dlq_url) == (0, 0)
