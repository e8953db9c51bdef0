"""The jobs repository against a migrated real PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from jobs import repository
from jobs.repository import JobStatus
from servicekit.db import Database, DatabaseSettings
from servicekit.settings import RdsSecret
from servicekit.testing import Database as PgDatabase
from servicekit.testing import wait_until

Conn = psycopg.Connection[Any]
LEASE = timedelta(minutes=2)

OWNER = "alice"


@pytest.fixture
def conninfo(migrated_db: PgDatabase) -> str:
    return migrated_db.conninfo()


@pytest.fixture
def conn(conninfo: str) -> Iterator[Conn]:
    """Autocommit: each repository call is its own transaction unless a test opens one."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        yield connection


def new_job(conn: Conn, **payload: Any) -> repository.Job:
    return repository.create(conn, owner=OWNER, job_type="echo", payload=payload).job


def backdate(conn: Conn, job_id: UUID, column: str, by: timedelta) -> None:
    conn.execute(
        f"UPDATE jobs SET {column} = {column} - %s WHERE id = %s",
        (by, job_id),
    )


def wait_until_blocked(conninfo: str, timeout: float = 30.0) -> None:
    """Until some session of this database waits for a row lock."""
    with psycopg.connect(conninfo, autocommit=True) as watcher:
        wait_until(
            lambda: watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone(),
            timeout,
            "a session waiting for the lock",
        )


def test_create_and_get(conn: Conn) -> None:
    created = repository.create(
        conn, owner=OWNER, job_type="echo", payload={"text": "hi", "n": [1, 2]}
    )

    assert created.created
    job = created.job
    assert (job.status, job.attempts, job.payload) == (
        JobStatus.QUEUED,
        0,
        {"text": "hi", "n": [1, 2]},
    )
    assert job.enqueued_at is None
    assert job.owner == OWNER
    assert repository.get(conn, job.id) == job
    assert repository.get(conn, uuid4()) is None
    # Without a key, the same request is a new job each time.
    assert new_job(conn, text="hi").id != new_job(conn, text="hi").id


def test_idempotency_key_returns_the_existing_job(conn: Conn) -> None:
    first = repository.create(
        conn, owner=OWNER, job_type="echo", payload={"n": (1, 2)}, idempotency_key="k-1"
    )
    again = repository.create(
        conn, owner=OWNER, job_type="echo", payload={"n": [1, 2]}, idempotency_key="k-1"
    )

    assert first.created
    assert not again.created
    assert again.job == first.job
    with pytest.raises(repository.IdempotencyKeyReused, match=str(first.job.id)):
        repository.create(
            conn, owner=OWNER, job_type="echo", payload={"n": [3]}, idempotency_key="k-1"
        )
    with pytest.raises(repository.IdempotencyKeyReused):
        repository.create(
            conn, owner=OWNER, job_type="other", payload={"n": [1, 2]}, idempotency_key="k-1"
        )


def test_idempotency_keys_are_per_owner(conn: Conn) -> None:
    alice = repository.create(conn, owner="alice", job_type="echo", payload={}, idempotency_key="k")
    # Bob's key is his own: not a replay of Alice's job, and not a reuse conflict either.
    bob = repository.create(conn, owner="bob", job_type="other", payload={}, idempotency_key="k")

    assert alice.created
    assert bob.created
    assert alice.job.id != bob.job.id
    assert (alice.job.owner, bob.job.owner) == ("alice", "bob")
    again = repository.create(conn, owner="bob", job_type="other", payload={}, idempotency_key="k")
    assert (again.created, again.job) == (False, bob.job)


def test_each_owner_reads_and_lists_only_its_own_jobs_and_an_admin_all(conn: Conn) -> None:
    alices = [repository.create(conn, owner="alice", job_type="echo", payload={}).job]
    bobs = [
        repository.create(conn, owner="bob", job_type="echo", payload={"n": n}).job for n in (1, 2)
    ]
    alices.append(repository.create(conn, owner="alice", job_type="echo", payload={}).job)

    assert repository.get(conn, alices[0].id, owner="alice") == alices[0]
    assert repository.get(conn, alices[0].id, owner="bob") is None
    assert repository.get(conn, bobs[0].id, owner="alice") is None
    assert repository.get(conn, bobs[0].id) == bobs[0]  # admin: no owner

    def listed(**filters: Any) -> list[UUID]:
        return [job.id for job in repository.list_jobs(conn, **filters).items]

    assert listed(owner="alice") == [job.id for job in reversed(alices)]
    assert listed(owner="bob") == [job.id for job in reversed(bobs)]
    assert listed(owner="carol") == []
    assert set(listed()) == {job.id for job in alices + bobs}
    # Pages of one owner never reach into another's jobs.
    first = repository.list_jobs(conn, owner="bob", limit=1)
    rest = repository.list_jobs(conn, owner="bob", limit=1, cursor=first.next_cursor)
    assert [job.id for job in first.items + rest.items] == [job.id for job in reversed(bobs)]
    assert rest.next_cursor is None
    repository.start(conn, alices[0].id, lease=LEASE)
    assert listed(owner="bob", status=JobStatus.RUNNING) == []
    assert listed(owner="alice", status=JobStatus.RUNNING) == [alices[0].id]


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"a": "nul \x00"}, "NUL character"),
        ({"nul \x00 key": 1}, "NUL character"),
        ({"a": ["\ud800 alone"]}, "unpaired surrogate"),
        ({"a": (1, float("nan"))}, "not finite"),
        ({"a": float("-inf")}, "not finite"),
        ({"a": nested(40)}, "nested deeper than 32 levels"),
    ],
)
def test_a_payload_jsonb_cannot_store_is_refused_before_the_insert(
    conn: Conn, payload: dict[str, Any], problem: str
) -> None:
    with pytest.raises(repository.InvalidPayload, match=problem) as raised:
        repository.create(conn, owner=OWNER, job_type="echo", payload=payload)
    assert isinstance(raised.value, ValueError)
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    # The deepest payload allowed is stored.
    assert new_job(conn, a=nested(32)).payload == {"a": nested(32)}


def test_the_message_body_names_the_job(conn: Conn) -> None:
    job = new_job(conn, n=1)
    body = repository.message_body(job)

    assert json.loads(body) == {"job_id": str(job.id), "type": "echo"}
    assert repository.JobMessage.model_validate_json(body) == repository.JobMessage(
        job_id=job.id, type="echo"
    )
    # A body the model refuses (poison) may still name its job.
    assert (
        repository.JobMessage.job_id_in(json.dumps({"job_id": str(job.id), "type": []})) == job.id
    )
    assert repository.JobMessage.job_id_in("not json") is None
    assert repository.JobMessage.job_id_in('{"job_id": "nope"}') is None


def test_idempotency_key_race(postgres_db: PgDatabase, conninfo: str) -> None:
    secret = RdsSecret.model_validate(postgres_db.rds_secret())
    owners = ("alice", "bob")
    contenders = 8
    barrier = threading.Barrier(contenders)
    results: list[repository.Created] = []
    errors: list[BaseException] = []

    class Fixed:
        def get(self) -> RdsSecret:
            return secret

        refresh = get

    settings = DatabaseSettings(pool_min_size=contenders, pool_size=contenders)
    with Database(Fixed(), settings) as database:

        def contend(owner: str) -> None:
            try:
                with database.connection() as connection:
                    barrier.wait(timeout=30)
                    results.append(
                        repository.create(
                            connection,
                            owner=owner,
                            job_type="echo",
                            payload={"n": 1},
                            idempotency_key="race",
                        )
                    )
            except BaseException as error:
                errors.append(error)

        threads = [
            threading.Thread(target=contend, args=(owners[n % len(owners)],))
            for n in range(contenders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert errors == []
    assert len(results) == contenders
    # One job per owner: each owner's contenders all got it, and exactly one created it.
    for owner in owners:
        mine = [result for result in results if result.job.owner == owner]
        assert len(mine) == contenders // len(owners)
        assert len({result.job.id for result in mine}) == 1
        assert sum(result.created for result in mine) == 1
    with psycopg.connect(conninfo) as check:
        assert check.execute("SELECT count(*) FROM jobs").fetchone() == (len(owners),)


def test_cursor_pagination(conn: Conn) -> None:
    # Jobs made in one transaction share created_at: the id breaks the tie.
    with conn.transaction():
        for n in range(13):
            new_job(conn, n=n)
    for n in range(13, 23):
        new_job(conn, n=n)
    latest = repository.list_jobs(conn, limit=4).items
    for job in latest:
        repository.start(conn, job.id, lease=LEASE)
    everything = sorted(
        repository.list_jobs(conn, limit=100).items,
        key=lambda job: (job.created_at, job.id),
        reverse=True,
    )

    seen: list[repository.Job] = []
    cursor: str | None = None
    while True:
        page = repository.list_jobs(conn, limit=5, cursor=cursor)
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [job.id for job in seen] == [job.id for job in everything]
    assert len(everything) == 23

    first = repository.list_jobs(conn, status=JobStatus.RUNNING, limit=3)
    rest = repository.list_jobs(conn, status=JobStatus.RUNNING, limit=3, cursor=first.next_cursor)
    assert {job.id for job in first.items + rest.items} == {job.id for job in latest}
    assert rest.next_cursor is None

    assert re.fullmatch(repository.CURSOR_PATTERN, first.next_cursor or "")
    # Every string of the form is a position: the oldest and the newest possible ones.
    assert repository.list_jobs(conn, cursor="0" * 48).items == []
    after_all = repository.list_jobs(conn, cursor="9" * 16 + "f" * 32, limit=100)
    assert [job.id for job in after_all.items] == [job.id for job in everything]
    for cursor in ("not-a-cursor", "0" * 47, "0" * 16 + "F" * 32):
        with pytest.raises(repository.InvalidCursor):
            repository.list_jobs(conn, cursor=cursor)
    with pytest.raises(ValueError, match="limit"):
        repository.list_jobs(conn, limit=0)


def test_worker_lifecycle(conn: Conn) -> None:
    job = new_job(conn)

    started = repository.start(conn, job.id, lease=LEASE)
    assert started is not None
    assert (started.status, started.attempts) == (JobStatus.RUNNING, 1)
    assert started.started_at is not None
    assert started.enqueued_at is not None
    assert started.lease_expires_at is not None
    assert started.lease_expires_at > started.started_at + LEASE - timedelta(seconds=5)

    failed = repository.mark_failed(conn, job.id, "boom " * 2000, code="handler_error")
    assert failed is not None
    assert (failed.status, failed.error_code) == (JobStatus.FAILED, "handler_error")
    assert failed.error is not None
    assert len(failed.error) == repository.MAX_ERROR_LENGTH
    assert failed.lease_expires_at is None
    assert repository.mark_failed(conn, job.id, "not running any more") is None

    again = repository.start(conn, job.id, lease=LEASE)
    assert again is not None
    assert again.attempts == 2
    done = repository.mark_succeeded(conn, job.id, {"answer": 42})
    assert (done.status, done.result, done.error) == (JobStatus.SUCCEEDED, {"answer": 42}, None)
    assert (done.error_code, done.lease_expires_at) == (None, None)
    assert done.finished_at is not None

    # A redelivered message for a finished job: acknowledged without running it again.
    assert repository.start(conn, job.id, lease=LEASE) is None
    assert repository.mark_dead(conn, job.id, "too late") is None
    with pytest.raises(repository.JobAlreadyFinished, match="already succeeded"):
        repository.mark_succeeded(conn, job.id)
    with pytest.raises(repository.JobAlreadyFinished, match="does not exist") as missing:
        repository.mark_succeeded(conn, uuid4())
    assert missing.value.status is None
    assert repository.start(conn, uuid4(), lease=LEASE) is None


def test_mark_dead(conn: Conn) -> None:
    job = new_job(conn)
    repository.start(conn, job.id, lease=LEASE)
    repository.mark_failed(conn, job.id, "first error", code="timeout")

    dead = repository.mark_dead(conn, job.id)

    assert dead is not None
    assert (dead.status, dead.error, dead.error_code) == (JobStatus.DEAD, "first error", "timeout")
    assert dead.finished_at is not None
    assert repository.start(conn, job.id, lease=LEASE) is None


def test_duplicate_delivery_commits_the_handler_effect_once(conn: Conn, conninfo: str) -> None:
    conn.execute("CREATE TABLE effects (job_id uuid NOT NULL)")
    job = new_job(conn)
    repository.start(conn, job.id, lease=LEASE)
    outcome: list[BaseException | repository.Job] = []

    def handle(connection: Conn) -> repository.Job:
        connection.execute("INSERT INTO effects VALUES (%s)", (job.id,))
        return repository.mark_succeeded(connection, job.id, {"done": True})

    def duplicate() -> None:
        try:
            with psycopg.connect(conninfo) as connection:
                outcome.append(handle(connection))
        except BaseException as error:
            outcome.append(error)

    with psycopg.connect(conninfo) as first:
        handle(first)
        second = threading.Thread(target=duplicate)
        second.start()
        wait_until_blocked(conninfo)  # the duplicate waits for the first's row lock
        first.commit()
    second.join(timeout=30)

    assert len(outcome) == 1
    assert isinstance(outcome[0], repository.JobAlreadyFinished)
    assert conn.execute("SELECT count(*) FROM effects").fetchone() == (1,)


def test_claims_keep_concurrent_senders_apart_without_a_lock_held(
    conn: Conn, conninfo: str
) -> None:
    job, other_job = new_job(conn, n=1), new_job(conn, n=2)
    claim = timedelta(seconds=30)

    # The sweep's age filter leaves fresh jobs to the relays.
    assert repository.claim_unsent(conn, claim_for=claim, older_than=timedelta(hours=1)) == []

    claimed = repository.claim_unsent(conn, claim_for=claim, limit=1)  # committed (autocommit)
    assert [message.job_id for message in claimed] == [job.id]
    assert claimed[0].type == "echo"
    # Another sender gets the rest, and no row stays locked while the first one sends.
    with psycopg.connect(conninfo) as other:
        assert [m.job_id for m in repository.claim_unsent(other, claim_for=claim)] == [other_job.id]
    assert repository.claim_unsent(conn, claim_for=claim) == []

    marked = repository.mark_enqueued(conn, [job.id])
    assert [found.id for found in marked] == [job.id]
    assert marked[0].enqueued_at is not None
    assert repository.mark_enqueued(conn, [job.id]) == []  # once only

    # A failed send gives its claim up: the next pass takes the job again.
    assert repository.release_claims(conn, [other_job.id]) == 1
    assert [m.job_id for m in repository.claim_unsent(conn, claim_for=claim)] == [other_job.id]


def test_a_claim_that_runs_out_frees_the_job(conn: Conn) -> None:
    job = new_job(conn)
    assert repository.claim_unsent(conn, claim_for=timedelta(seconds=30))
    backdate(conn, job.id, "send_claimed_until", timedelta(minutes=1))  # the sender died
    assert [m.job_id for m in repository.claim_unsent(conn, claim_for=timedelta(0))] == [job.id]


def test_every_job_that_needs_a_message_notifies_the_relays(conn: Conn, conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute("LISTEN jobs_outbox")

        def notified() -> int:
            return sum(1 for _ in listener.notifies(timeout=0.5))

        job = new_job(conn)
        assert notified() == 1
        repository.mark_enqueued(conn, [job.id])
        repository.start(conn, job.id, lease=LEASE)
        assert notified() == 0
        backdate(conn, job.id, "lease_expires_at", timedelta(hours=2))
        repository.requeue_stuck(conn, max_attempts={"echo": 5})
        assert notified() == 1


def test_resend_lost_puts_jobs_whose_message_is_gone_back_in_the_outbox(conn: Conn) -> None:
    lost, lost_retry, recent, unsent, running = (new_job(conn, n=n) for n in range(5))
    repository.mark_enqueued(conn, [lost.id, lost_retry.id, recent.id, running.id])
    repository.start(conn, lost_retry.id, lease=LEASE)
    repository.mark_failed(conn, lost_retry.id, "boom")
    repository.start(conn, running.id, lease=LEASE)
    for job in (lost, lost_retry, unsent, running):
        backdate(conn, job.id, "updated_at", timedelta(hours=2))

    resent = repository.resend_lost(conn, older_than=timedelta(hours=1))

    assert {job.id for job in resent} == {lost.id, lost_retry.id}
    assert all(job.status == JobStatus.QUEUED and job.enqueued_at is None for job in resent)
    claimed = repository.claim_unsent(conn, claim_for=timedelta(seconds=30))
    assert {m.job_id for m in claimed} == {lost.id, lost_retry.id, unsent.id}


def test_redrive_dead_puts_chosen_dead_jobs_back(conn: Conn) -> None:
    chosen, other_type, alive = new_job(conn, n=1), new_job(conn, n=2), new_job(conn, n=3)
    conn.execute("UPDATE jobs SET type = 'sleep' WHERE id = %s", (other_type.id,))
    for job in (chosen, other_type):
        repository.start(conn, job.id, lease=LEASE)
        repository.mark_dead(conn, job.id, "exhausted 5 attempts")

    with pytest.raises(ValueError, match="needs job ids"):
        repository.redrive_dead(conn)
    by_type = repository.redrive_dead(conn, job_type="echo")
    assert [job.id for job in by_type] == [chosen.id]
    again = by_type[0]
    assert (again.status, again.attempts, again.enqueued_at, again.finished_at) == (
        JobStatus.QUEUED,
        0,
        None,
        None,
    )
    assert again.error == "exhausted 5 attempts"  # why it died, until it runs again
    # Only dead jobs move: ids of live ones are ignored.
    redriven = repository.redrive_dead(conn, job_ids=[other_type.id, alive.id])
    assert [job.id for job in redriven] == [other_type.id]


def test_leases_are_renewed_in_one_statement(conn: Conn) -> None:
    running, other, finished = (new_job(conn, n=n) for n in range(3))
    for job in (running, other, finished):
        repository.start(conn, job.id, lease=timedelta(seconds=1))
    repository.mark_succeeded(conn, finished.id)

    renewed = repository.renew_leases(
        conn, [running.id, other.id, finished.id, uuid4()], lease=timedelta(hours=1)
    )

    assert renewed == {running.id, other.id}
    for job_id in renewed:
        job = repository.get(conn, job_id)
        assert job is not None
        assert job.lease_expires_at is not None
        assert job.lease_expires_at > job.updated_at + timedelta(minutes=59)
    assert repository.renew_leases(conn, [], lease=LEASE) == set()


def test_requeue_stuck_takes_only_expired_leases(conn: Conn, conninfo: str) -> None:
    expired, exhausted, busy, long_running = (new_job(conn, n=n) for n in range(4))
    for job in (expired, exhausted, busy, long_running):
        repository.start(conn, job.id, lease=LEASE)
    repository.start(conn, exhausted.id, lease=LEASE)
    for job in (expired, exhausted, busy):
        backdate(conn, job.id, "lease_expires_at", timedelta(hours=2))
    # Running for a day, far past any fixed "stuck after", but its lease is renewed: alive.
    backdate(conn, long_running.id, "updated_at", timedelta(days=1))
    backdate(conn, long_running.id, "started_at", timedelta(days=1))

    with psycopg.connect(conninfo) as worker:
        # A live worker's transaction holds the row: the job is being worked on, not stuck.
        worker.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (busy.id,))
        changed = repository.requeue_stuck(conn, max_attempts={"echo": 2})

    by_id = {job.id: job for job in changed}
    assert set(by_id) == {expired.id, exhausted.id}
    assert by_id[expired.id].status == JobStatus.QUEUED
    assert by_id[expired.id].enqueued_at is None
    assert by_id[expired.id].lease_expires_at is None
    assert by_id[exhausted.id].status == JobStatus.DEAD
    assert by_id[exhausted.id].error_code == "lease_expired"
    assert by_id[exhausted.id].error == "its worker stopped on each of 2 attempts"
    # The outbox sends the requeued job again.
    pending = repository.claim_unsent(conn, claim_for=timedelta(seconds=30))
    assert [message.job_id for message in pending] == [expired.id]


def test_purge_finished(conn: Conn) -> None:
    old_done, old_dead, recent_done, old_queued = (new_job(conn, n=n) for n in range(4))
    for job in (old_done, recent_done):
        repository.start(conn, job.id, lease=LEASE)
        repository.mark_succeeded(conn, job.id)
    repository.mark_dead(conn, old_dead.id, "poison")
    for job in (old_done, old_dead):
        backdate(conn, job.id, "finished_at", timedelta(days=40))
    backdate(conn, old_queued.id, "created_at", timedelta(days=40))

    assert repository.purge_finished(conn, older_than=timedelta(days=30), limit=1) == 1
    assert repository.purge_finished(conn, older_than=timedelta(days=30)) == 1

    remaining = {job.id for job in repository.list_jobs(conn).items}
    assert remaining == {recent_done.id, old_queued.id}


def test_job_serialises_for_the_api(conn: Conn) -> None:
    job = new_job(conn, text="hi")
    dumped = job.model_dump(mode="json")
    assert dumped["status"] == "queued"
    assert dumped["id"] == str(job.id)
    assert repository.Job.model_validate(dumped) == job
