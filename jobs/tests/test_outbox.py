"""The outbox: claim, commit, send, mark against moto's SQS and a migrated PostgreSQL; the relay."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from functools import partial

import pytest

from jobs import repository
from jobs.outbox import Outbox, Relay
from servicekit import aws
from servicekit.db import Database, DatabaseSettings, connect
from servicekit.settings import RdsSecret
from servicekit.testing import Database as PgDatabase
from servicekit.testing import MotoServer, wait_until


class Fixed:
    def __init__(self, secret: RdsSecret) -> None:
        self.secret = secret

    def get(self) -> RdsSecret:
        return self.secret

    refresh = get


@pytest.fixture
def credentials(migrated_db: PgDatabase) -> Fixed:
    return Fixed(RdsSecret.model_validate(migrated_db.rds_secret()))


@pytest.fixture
def database(credentials: Fixed) -> Iterator[Database]:
    with Database(credentials, DatabaseSettings(pool_min_size=1, pool_size=4)) as opened:
        yield opened


@pytest.fixture
def queue_url(aws_env: MotoServer) -> str:
    return aws.client("sqs").create_queue(QueueName="outbox-jobs")["QueueUrl"]


def received(queue_url: str) -> list[str]:
    """Job ids of every message on the queue (received and deleted)."""
    sqs = aws.client("sqs")
    ids: list[str] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            ids.append(json.loads(message["Body"])["job_id"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return ids


def create(database: Database, count: int) -> list[str]:
    with database.connection() as conn:
        return [
            str(repository.create(conn, owner="test", job_type="echo", payload={"n": n}).job.id)
            for n in range(count)
        ]


def unsent(database: Database) -> int:
    with database.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM jobs WHERE enqueued_at IS NULL").fetchone()
    assert row is not None
    return int(row["n"])


def test_send_pending_sends_in_batches_and_marks_the_jobs(
    database: Database, queue_url: str
) -> None:
    ids = create(database, 23)
    outbox = Outbox(database, queue_url)

    sent = outbox.send_pending(limit=20)
    assert (sent.claimed, len(sent.enqueued), sent.problems) == (20, 20, [])
    assert all(job.enqueued_at is not None for job in sent.enqueued)
    rest = outbox.send_pending(limit=20)
    assert (rest.claimed, len(rest.enqueued)) == (3, 3)

    assert sorted(received(queue_url)) == sorted(ids)
    assert unsent(database) == 0
    assert outbox.send_pending().claimed == 0


def test_a_black_holed_sqs_fails_fast_and_loses_nothing(
    database: Database, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = create(database, 12)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    with socket.create_server(("127.0.0.1", 0)) as hole:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.getsockname()[1]}")
        aws.reset_clients()
        failed = Outbox(database, queue_url).send_pending()
    assert failed.claimed == 12
    assert failed.enqueued == []
    assert "unreachable" in failed.problems[0]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    aws.reset_clients()

    # The claims were given up: the next pass sends every job.
    again = Outbox(database, queue_url).send_pending()
    assert len(again.enqueued) == 12
    assert sorted(received(queue_url)) == sorted(ids)


def test_the_relay_sends_on_notify_and_after_an_outage(
    database: Database,
    credentials: Fixed,
    queue_url: str,
    aws_env: MotoServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A fallback poll far beyond the test: only the NOTIFY can wake the relay in time.
    relay = Relay(
        Outbox(database, queue_url),
        partial(connect, credentials, DatabaseSettings()),
        poll_interval=600,
        max_backoff=1,
    )
    relay.start()
    try:
        wait_until(lambda: _listening(database) > 0, 20, "the relay to LISTEN")
        first = create(database, 3)
        wait_until(lambda: unsent(database) == 0, 20, "the relay to send on NOTIFY", 0.05)
        assert sorted(received(queue_url)) == sorted(first)

        with aws_env.outage(), caplog.at_level(logging.WARNING, logger="jobs.outbox"):
            during = create(database, 5)
            wait_until(lambda: "messages not sent" in caplog.text, 30, "a failed pass")
            assert unsent(database) == 5
        wait_until(lambda: unsent(database) == 0, 30, "the relay to send after the outage")
        assert sorted(received(queue_url)) == sorted(during)
    finally:
        relay.stop()


def test_relays_sharing_a_lead_key_take_turns(
    database: Database, credentials: Fixed, queue_url: str, aws_env: MotoServer
) -> None:
    # An API task's workers: one sends; when it goes, another takes over within a poll.
    relays = [
        Relay(
            Outbox(database, queue_url),
            partial(connect, credentials, DatabaseSettings(), application_name="relay-turns"),
            poll_interval=0.5,
            lead_key=7,
        )
        for _ in range(2)
    ]
    first, second = relays
    first.start()
    try:
        wait_until(lambda: first.leading, 20, "the first relay to lead")
        second.start()
        wait_until(lambda: _sessions(database, "relay-turns") == 2, 20, "the second to connect")
        sent = create(database, 3)
        wait_until(lambda: unsent(database) == 0, 20, "the leader to send", 0.05)
        assert not second.leading
        assert _listening(database) == 1

        first.stop()
        wait_until(lambda: second.leading, 20, "the second relay to take over")
        taken_over = create(database, 2)
        wait_until(lambda: unsent(database) == 0, 20, "the new leader to send", 0.05)
        assert sorted(received(queue_url)) == sorted(sent + taken_over)
    finally:
        for relay in relays:
            relay.stop()


def _sessions(database: Database, application_name: str) -> int:
    with database.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row["n"])


def _listening(database: Database) -> int:
    with database.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'LISTEN jobs_outbox'"
        ).fetchone()
    assert row is not None
    return int(row["n"])
