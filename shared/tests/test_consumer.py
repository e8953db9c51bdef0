"""The SQS consumer runtime against moto's HTTP server, in-process."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import BaseModel

from servicekit import aws
from servicekit.consumer import (
    POISON_REASON_ATTRIBUTE,
    Consumer,
    Delivery,
    GiveUp,
    Poison,
    TaskProtection,
)
from servicekit.errors import ConfigurationError, DependencyUnavailable
from servicekit.metrics import Metrics
from servicekit.retry import Backoff
from servicekit.testing import MotoServer, create_queue, queue_counts, send_messages, wait_until


class Task(BaseModel):
    n: int


def receive_all(url: str, wait: int = 0) -> list[Any]:
    sqs = aws.client("sqs")
    answer = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=wait
    )
    return list(answer.get("Messages", []))


@contextmanager
def running(consumer: Consumer[Any]) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def consumer(
    url: str, handler: Callable[[Delivery[Task]], object], **options: Any
) -> Consumer[Task]:
    options = {"wait_time_seconds": 1, "retry": Backoff(base=1, cap=1)} | options
    return Consumer(url, Task, handler, **options)


def test_processes_and_deletes_in_batches(aws_env: MotoServer) -> None:
    url, _ = create_queue("work")
    seen: list[int] = []
    lock = threading.Lock()

    def handle(delivery: Delivery[Task]) -> None:
        with lock:
            seen.append(delivery.body.n)

    calls: list[int] = []
    sqs = aws.client("sqs")

    def count_deletes(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["Entries"]))

    sqs.meta.events.register("provide-client-params.sqs.DeleteMessageBatch", count_deletes)
    try:
        work = consumer(url, handle, concurrency=4, receivers=2)
        with running(work):
            send_messages(url, *(json.dumps({"n": n}) for n in range(40)))
            wait_until(lambda: work.stats().processed >= 40 and queue_counts(url) == (0, 0))
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.DeleteMessageBatch", count_deletes)
    # At least once, as SQS promises: moto, too, can hand one message to both receivers when
    # their ReceiveMessage calls overlap (seen under load), and each copy is then deleted.
    assert sorted(set(seen)) == list(range(40))
    assert sum(calls) == len(seen) == work.stats().processed
    assert len(calls) < len(seen), "deletes were not batched"
    assert work.stats().failed == 0


def test_poison_goes_to_the_dlq_at_once(aws_env: MotoServer) -> None:
    url, dlq_url = create_queue("work", visibility=30)
    seen: list[int] = []
    poisoned: list[Poison] = []
    work = consumer(url, lambda d: seen.append(d.body.n), on_poison=poisoned.append)
    with running(work):
        send_messages(url, '{"n": 1}', '{"n": "not a number"}', "not json", '{"n": 2}')
        # With a 30 s visibility timeout, a retry would take 30 s: these arrive at once.
        wait_until(lambda: queue_counts(dlq_url)[0] == 2 and sorted(seen) == [1, 2])
        wait_until(lambda: queue_counts(url) == (0, 0))
    dead = receive_all(dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(['{"n": "not a number"}', "not json"])
    reasons = {
        m["Body"]: m["MessageAttributes"][POISON_REASON_ATTRIBUTE]["StringValue"] for m in dead
    }
    assert reasons['{"n": "not a number"}'].startswith("n: ")
    assert sorted(p.body for p in poisoned) == sorted(m["Body"] for m in dead)
    assert work.stats().poisoned == 2


def test_failing_handler_is_retried_then_redriven(aws_env: MotoServer) -> None:
    url, dlq_url = create_queue("work", visibility=30, max_receive=3)
    attempts: list[tuple[int, bool]] = []

    def fail(delivery: Delivery[Task]) -> None:
        attempts.append((delivery.receive_count, delivery.last_attempt))
        raise RuntimeError("always fails")

    work = consumer(url, fail)
    with running(work):
        send_messages(url, '{"n": 1}')
        wait_until(lambda: queue_counts(dlq_url)[0] == 1, timeout=20)
    # The backoff (1 s here), not the 30 s visibility timeout, paced the retries.
    assert attempts == [(1, False), (2, False), (3, True)]
    assert work.stats().failed == 3
    assert queue_counts(url) == (0, 0)


def test_give_up_deletes_the_message_without_retries(aws_env: MotoServer) -> None:
    url, dlq_url = create_queue("work", visibility=30, max_receive=3)
    attempts: list[int] = []

    def hopeless(delivery: Delivery[Task]) -> None:
        attempts.append(delivery.receive_count)
        raise GiveUp("retrying cannot help")

    work = consumer(url, hopeless)
    with running(work):
        send_messages(url, '{"n": 1}')
        wait_until(lambda: work.stats().failed == 1 and queue_counts(url) == (0, 0))
    assert attempts == [1]
    assert queue_counts(dlq_url) == (0, 0)


def test_while_not_ready_nothing_is_received(aws_env: MotoServer) -> None:
    url, dlq_url = create_queue("work", visibility=30, max_receive=2)
    up = threading.Event()
    seen: list[int] = []
    work = consumer(url, lambda d: seen.append(d.receive_count), ready=up.is_set)
    with running(work):
        wait_until(lambda: not work.stats().ready, what="gate closed")
        send_messages(url, '{"n": 1}')
        # For three seconds (three gate polls) the message stays on the queue, untouched.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert queue_counts(url) == (1, 0)
        assert seen == []
        up.set()
        wait_until(lambda: work.stats().processed == 1, what="processed after recovery")
    assert seen == [1], "the closed gate cost a receive"
    assert work.stats().failed == 0
    assert queue_counts(dlq_url) == (0, 0)


def test_a_deferred_message_goes_back_without_a_backoff(aws_env: MotoServer) -> None:
    url, _ = create_queue("work", visibility=30, max_receive=5)
    calls: list[int] = []

    def flaky(delivery: Delivery[Task]) -> None:
        calls.append(delivery.receive_count)
        if len(calls) == 1:
            raise DependencyUnavailable("database", "blip")

    # A failure would wait the 30 s backoff: a deferral comes back after defer_delay.
    work = consumer(url, flaky, defer_delay=0, retry=Backoff(base=30, cap=30))
    with running(work):
        send_messages(url, '{"n": 1}')
        wait_until(lambda: work.stats().processed == 1, timeout=10)
    assert calls == [1, 2]
    stats = work.stats()
    assert (stats.failed, stats.deferred) == (0, 1)


def test_the_working_hook_renews_and_gives_up(aws_env: MotoServer) -> None:
    url, _ = create_queue("work", visibility=2, max_receive=5)
    release = threading.Event()
    asked: list[set[int]] = []
    calls: list[int] = []

    def slow(delivery: Delivery[Task]) -> None:
        calls.append(delivery.body.n)
        release.wait(timeout=30)

    def working(deliveries: list[Delivery[Task]]) -> list[str]:
        asked.append({d.body.n for d in deliveries})
        # Message 2's first delivery is past its (pretend) timeout: disowned.
        return [d.message_id for d in deliveries if (d.body.n, d.receive_count) != (2, 1)]

    work = consumer(url, slow, working=working, concurrency=3)
    with running(work):
        send_messages(url, '{"n": 1}', '{"n": 2}')
        # Not extended any more, message 2 is delivered again while its first handler still runs.
        wait_until(lambda: sorted(calls) == [1, 2, 2], timeout=15, what="2 redelivered")
        assert {1, 2} in asked
        release.set()
        wait_until(lambda: work.stats().processed == 2 and queue_counts(url) == (0, 0))
    # The disowned handler's return made no SQS call and counts as failed; the redelivery did it.
    stats = work.stats()
    assert (stats.processed, stats.failed, stats.in_flight) == (2, 1, 0)


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(base=1, cap=8)
    assert [backoff.ceiling(n) for n in range(1, 6)] == [1, 2, 4, 8, 8]
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(2 <= delay <= 4 for delay in delays)
    assert len(set(delays)) > 1, "no jitter"
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(base=2, cap=1)


def test_heartbeat_keeps_a_long_handler_invisible(aws_env: MotoServer) -> None:
    url, _ = create_queue("work", visibility=2)
    release = threading.Event()
    calls: list[int] = []

    def slow(delivery: Delivery[Task]) -> None:
        calls.append(delivery.receive_count)
        release.wait(timeout=30)

    work = consumer(url, slow)
    with running(work):
        send_messages(url, '{"n": 1}')
        wait_until(lambda: calls)
        # A competing consumer polls for two and a half visibility timeouts: it sees nothing.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert receive_all(url, wait=1) == []  # a 1 s long poll paces the loop
        release.set()
        wait_until(lambda: queue_counts(url) == (0, 0))
    assert calls == [1]


def test_stop_releases_waiting_messages_and_finishes_running_ones(aws_env: MotoServer) -> None:
    url, _ = create_queue("work", visibility=30)
    release = threading.Event()
    started: list[int] = []

    def slow(delivery: Delivery[Task]) -> None:
        started.append(delivery.body.n)
        release.wait(timeout=30)

    work = consumer(url, slow, concurrency=2, max_in_flight=6, grace_period=30)
    stop = threading.Event()
    thread = threading.Thread(target=work.run, args=(stop,))
    thread.start()
    send_messages(url, *(json.dumps({"n": n}) for n in range(6)))
    wait_until(lambda: len(started) == 2 and work.stats().in_flight == 6)
    stop.set()
    # The four waiting messages are visible again at once, not after 30 s.
    wait_until(lambda: queue_counts(url) == (4, 2))
    assert thread.is_alive(), "run() returned while handlers were running"
    release.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert queue_counts(url) == (4, 0)
    assert len(started) == 2
    assert work.stats().processed == 2


def test_grace_period_bounds_the_drain(aws_env: MotoServer) -> None:
    url, _ = create_queue("work")
    release = threading.Event()
    work = consumer(url, lambda d: release.wait(timeout=30), grace_period=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=work.run, args=(stop,))
    thread.start()
    send_messages(url, '{"n": 1}')
    wait_until(lambda: work.stats().running == 1)
    stopped = time.monotonic()
    stop.set()
    thread.join(timeout=10)
    assert time.monotonic() - stopped < 3
    release.set()


def test_a_queue_without_dead_letter_queue_is_refused(aws_env: MotoServer) -> None:
    url, _ = create_queue("work", max_receive=None)
    with pytest.raises(ConfigurationError, match="RedrivePolicy"):
        consumer(url, lambda d: None).run(threading.Event())


def test_failed_delete_entries_are_reported(
    aws_env: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = create_queue("work")
    sqs = aws.client("sqs")

    # The queue is purged under the handler: its receipt handle is no longer valid.
    work = consumer(url, lambda d: sqs.purge_queue(QueueUrl=url))
    with caplog.at_level(logging.WARNING, logger="servicekit.consumer"), running(work):
        send_messages(url, '{"n": 1}')
        wait_until(lambda: "delete refused" in caplog.text)
    assert "ReceiptHandleIsInvalid" in caplog.text


def test_metrics(aws_env: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = create_queue("work")
    work = consumer(url, lambda d: None, metrics=Metrics("Test", {"Service": "worker"}))
    with running(work):
        send_messages(url, '{"n": 1}')
        wait_until(lambda: work.stats().processed == 1)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    emitted = next(d for d in documents if "Processed" in d)
    names = {m["Name"]: m["Unit"] for m in emitted["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {
        "Processed": "Count",
        "HandlerLatency": "Milliseconds",
        "MessageAge": "Milliseconds",
    }
    assert emitted["MessageAge"] >= 0


class _Agent(BaseHTTPRequestHandler):
    """The ECS agent's task-protection endpoint, as documented."""

    requests: list[dict[str, Any]]

    def do_PUT(self) -> None:
        assert self.path == "/task-protection/v1/state"
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)
        answer = {"protection": {"ProtectionEnabled": body["ProtectionEnabled"], "TaskArn": "t"}}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def agent() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Agent", (_Agent,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_task_protection_held_while_busy(aws_env: MotoServer) -> None:
    url, _ = create_queue("work")
    release = threading.Event()
    with agent() as (agent_uri, requests):
        protection = TaskProtection.from_environment(
            {"ECS_AGENT_URI": agent_uri}, expires_in_minutes=5, release_after=0.2
        )
        assert protection is not None
        work = consumer(url, lambda d: release.wait(timeout=30), protection=protection)
        with running(work):
            assert requests == []  # idle: nothing to protect
            send_messages(url, '{"n": 1}')
            wait_until(lambda: requests)
            assert requests == [{"ProtectionEnabled": True, "ExpiresInMinutes": 5}]
            release.set()
            wait_until(lambda: len(requests) == 2)
            assert requests[1] == {"ProtectionEnabled": False}
    assert TaskProtection.from_environment({}) is None
