"""The scheduling runtime against a migrated real PostgreSQL (and moto's SQS for the firings):
registry, run, stop, dead runs, serve."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from servicekit import aws
from servicekit.consumer import POISON_REASON_ATTRIBUTE, Consumer
from servicekit.errors import ConfigurationError, DependencyUnavailable
from servicekit.health import HealthRegistry
from servicekit.scheduling import (
    Firing,
    InvalidJob,
    InvalidRegistry,
    JobContext,
    JobRegistry,
    Outcome,
    Runner,
    RunStatus,
    RunStore,
    load_registry,
    send_firing,
    serve,
)
from servicekit.testing import Database, MotoServer, wait_until
from servicekit.testing.moto import free_port
from servicekit.testing.sqs import create_queue, queue_counts

SLOT = datetime(2026, 3, 6, 10, 0, tzinfo=UTC)


class Connections:
    """One short-lived connection per use: the runtime needs nothing more than this."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.conninfo) as conn:
            yield conn


class Calls:
    """The deps the test jobs get: records (job, slot) of every call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, datetime]] = []

    def record(self, context: JobContext[Calls]) -> None:
        with self.lock:
            self.seen.append((context.job, context.slot))


Registry = JobRegistry[Calls]


@pytest.fixture
def store(migrated_db: Database) -> RunStore:
    return RunStore(Connections(migrated_db.conninfo()))


@pytest.fixture
def calls() -> Calls:
    return Calls()


def runner(registry: Registry, store: RunStore, calls: Calls, **options: Any) -> Runner[Calls]:
    options.setdefault("stop", threading.Event())
    return Runner(registry, store, calls, **options)


def single(function: Callable[[JobContext[Calls]], None], timeout: float = 30.0) -> Registry:
    registry = Registry()
    registry.add("job", function, schedule="rate(1 minute)", timeout=timeout)
    return registry


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


# -- registry ---------------------------------------------------------------------------------


def test_invalid_schedule_fails_at_declaration_naming_the_job() -> None:
    registry = Registry()
    with pytest.raises(InvalidJob) as raised:

        @registry.job("nightly-report", schedule="cron(0 3 * * * *)", timeout=60)
        def nightly_report(context: JobContext[Calls]) -> None: ...

    assert str(raised.value) == (
        "job 'nightly-report': invalid schedule 'cron(0 3 * * * *)': "
        "exactly one of day-of-month and day-of-week must be '?'"
    )
    assert len(registry) == 0


@pytest.mark.parametrize(
    ("name", "options", "problem"),
    [
        ("bad name", {}, "a name is 1-64 of"),
        ("job", {"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ("job", {"timeout": 0}, "timeout must be positive"),
        ("job", {"schedule": "rate(10 seconds)"}, "unit 'seconds' is not one of"),
    ],
)
def test_registry_refuses(name: str, options: dict[str, Any], problem: str, calls: Calls) -> None:
    arguments: dict[str, Any] = {"schedule": "rate(1 minute)", "timeout": 10} | options
    with pytest.raises(InvalidJob, match=problem):
        Registry().add(name, calls.record, **arguments)


def test_registry_refuses_a_name_twice(calls: Calls) -> None:
    registry = Registry()
    registry.add("job", calls.record, schedule="rate(1 minute)", timeout=10)
    with pytest.raises(InvalidJob, match="registered twice"):
        registry.add("job", calls.record, schedule="rate(5 minutes)", timeout=10)


def test_a_registry_is_loaded_by_its_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "declared_jobs.py").write_text(
        "from servicekit.scheduling import JobRegistry\n"
        "registry = JobRegistry()\n"
        "jobs = JobRegistry()\n"
        "jobs.add('sweep', print, schedule='rate(1 hour)', timeout=5)\n"
        "other = 'not a registry'\n"
    )
    (tmp_path / "bad_jobs.py").write_text(
        "from servicekit.scheduling import JobRegistry\n"
        "JobRegistry().add('sweep', print, schedule='every hour', timeout=5)\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    assert len(load_registry("declared_jobs")) == 0  # the attribute is `registry` when left out
    assert [job.name for job in load_registry("declared_jobs:jobs")] == ["sweep"]
    with pytest.raises(
        InvalidRegistry, match=r"registry declared_jobs:other is a str, not a JobRegistry"
    ):
        load_registry("declared_jobs:other")
    with pytest.raises(
        InvalidRegistry, match=r"registry declared_jobs:gone cannot be loaded: .*gone"
    ):
        load_registry("declared_jobs:gone")
    with pytest.raises(InvalidRegistry, match=r"registry absent cannot be loaded: .*absent"):
        load_registry("absent")
    with pytest.raises(InvalidRegistry, match=r"registry bad_jobs: job 'sweep': invalid schedule"):
        load_registry("bad_jobs")


def test_export_is_what_the_infrastructure_needs() -> None:
    registry = Registry()

    @registry.job("report", schedule="cron(0 6 ? * MON *)", timeout=300, timezone="Europe/Paris")
    def report(context: JobContext[Calls]) -> None:
        """Mail the weekly report.

        More detail that the export leaves out.
        """

    registry.add("sweep", lambda context: None, schedule="rate(1 minute)", timeout=50)
    assert registry.export() == [
        {
            "name": "report",
            "expression": "cron(0 6 ? * MON *)",
            "timezone": "Europe/Paris",
            "timeout_seconds": 300.0,
            "description": "Mail the weekly report.",
        },
        {
            "name": "sweep",
            "expression": "rate(1 minute)",
            "timezone": "UTC",
            "timeout_seconds": 50.0,
            "description": "",
        },
    ]
    with pytest.raises(ValueError, match="for tests"):
        JobRegistry[Calls](allow_second_rates=True).export()


# -- run ----------------------------------------------------------------------------------------


def test_one_run_per_slot(store: RunStore, calls: Calls) -> None:
    registry = single(calls.record)
    first = runner(registry, store, calls, host="first")
    second = runner(registry, store, calls, host="second")

    # Any instant inside the slot names it: a trigger a few seconds late, a retry, or serve.
    assert first.run("job", at=SLOT + timedelta(seconds=3)) is Outcome.SUCCEEDED
    assert second.run("job", at=SLOT + timedelta(seconds=59)) is Outcome.SKIPPED
    assert first.run("job", at=SLOT) is Outcome.SKIPPED
    assert second.run("job", at=SLOT + timedelta(minutes=1)) is Outcome.SUCCEEDED

    assert calls.seen == [("job", SLOT), ("job", SLOT + timedelta(minutes=1))]
    history = store.runs("job")
    assert [(run.slot, run.status, run.host) for run in history] == [
        (SLOT + timedelta(minutes=1), RunStatus.SUCCEEDED, "second"),
        (SLOT, RunStatus.SUCCEEDED, "first"),
    ]
    assert all(run.finished_at is not None and run.error is None for run in history)
    assert Outcome.SKIPPED.exit_code == 0


def test_concurrent_runs_of_one_slot_run_once(store: RunStore, calls: Calls) -> None:
    registry = single(calls.record)
    runners = [runner(registry, store, calls, host=f"host-{n}") for n in range(8)]
    started = [in_thread(partial(each.run, "job", SLOT)) for each in runners]
    for thread, _ in started:
        thread.join(timeout=30)
    outcomes = sorted(result[0] for _, result in started)
    assert outcomes == [Outcome.SKIPPED] * 7 + [Outcome.SUCCEEDED]
    assert calls.seen == [("job", SLOT)]


def test_a_job_that_raises_is_recorded_as_failed(store: RunStore, calls: Calls) -> None:
    def boom(context: JobContext[Calls]) -> None:
        raise RuntimeError("boom on purpose")

    outcome = runner(single(boom), store, calls).run("job", at=SLOT)

    assert outcome is Outcome.FAILED
    assert outcome.exit_code == 1
    [run] = store.runs("job")
    assert (run.status, run.error) == (RunStatus.FAILED, "RuntimeError: boom on purpose")


def test_timeout_cancels_a_cooperative_job(store: RunStore, calls: Calls) -> None:
    def patient(context: JobContext[Calls]) -> None:
        while not context.wait(0.02):
            pass
        context.check()

    outcome = runner(single(patient, timeout=0.3), store, calls).run("job", at=SLOT)

    assert outcome is Outcome.TIMED_OUT
    [run] = store.runs("job")
    assert (run.status, run.error) == (RunStatus.TIMED_OUT, "timed out after 0.3 s")


def test_a_job_ignoring_its_cancellation_is_abandoned_but_recorded(
    store: RunStore, calls: Calls
) -> None:
    release = threading.Event()

    def stubborn(context: JobContext[Calls]) -> None:
        release.wait(60)

    try:
        outcome = runner(single(stubborn, timeout=0.2), store, calls, stop_grace=0.2).run(
            "job", SLOT
        )
    finally:
        release.set()
    assert outcome is Outcome.TIMED_OUT
    [run] = store.runs("job")
    assert run.error == "timed out after 0.2 s; still running 0.2 s later, abandoned"
    assert run.finished_at is not None


def stopped_while_running(
    store: RunStore, calls: Calls, job: Callable[[JobContext[Calls], threading.Event], None]
) -> Outcome:
    """Run ``job`` and set the stop event (what SIGTERM does) once it has started."""
    started = threading.Event()
    stop = threading.Event()
    registry = single(lambda context: job(context, started))
    thread, result = in_thread(lambda: runner(registry, store, calls, stop=stop).run("job", SLOT))
    assert started.wait(30)
    stop.set()
    thread.join(timeout=30)
    outcome: Outcome = result[0]
    return outcome


def test_stop_lets_a_running_job_finish(store: RunStore, calls: Calls) -> None:
    def finishes(context: JobContext[Calls], started: threading.Event) -> None:
        started.set()
        context.wait(30)  # returns at the stop; the job then completes its work
        calls.record(context)

    assert stopped_while_running(store, calls, finishes) is Outcome.SUCCEEDED
    assert calls.seen == [("job", SLOT)]
    assert store.runs("job")[0].status is RunStatus.SUCCEEDED


def test_stop_interrupts_a_job_between_units_of_work(store: RunStore, calls: Calls) -> None:
    def checks(context: JobContext[Calls], started: threading.Event) -> None:
        started.set()
        while True:
            context.check()
            context.wait(0.02)

    assert stopped_while_running(store, calls, checks) is Outcome.INTERRUPTED
    [run] = store.runs("job")
    assert (run.status, run.error) == (RunStatus.INTERRUPTED, "the process is stopping")


def test_a_stopping_process_starts_nothing(store: RunStore, calls: Calls) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(DependencyUnavailable, match="the process is stopping"):
        runner(single(calls.record), store, calls, stop=stop).run("job", SLOT)
    # Not claimed: the firing goes back to the queue, and this slot may still run.
    assert store.runs() == []
    assert calls.seen == []


def test_purge_keeps_recent_and_running_runs(store: RunStore) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    finished, running, recent = (
        store.claim("a", old, "h"),
        store.claim("b", old, "h"),
        store.claim("a", datetime.now(UTC), "h"),
    )
    assert finished is not None
    assert running is not None
    assert recent is not None
    store.finish(finished, RunStatus.SUCCEEDED, None)
    store.finish(recent, RunStatus.FAILED, "x")

    assert store.purge(timedelta(days=30)) == 1
    assert sorted(run.id for run in store.runs()) == sorted([running, recent])


# -- dead runs ----------------------------------------------------------------------------------


def test_a_run_that_never_reported_is_recorded_failed_by_the_next_attempt(
    store: RunStore, calls: Calls
) -> None:
    # timeout 2 + stop grace 1 + margin 1: a live run has reported within 4 s of its start.
    registry = single(calls.record, timeout=2)
    later = runner(registry, store, calls, host="later", stop_grace=1, report_margin=1)
    # A process claimed the slot and was killed: the run stays running.
    store.claim("job", SLOT, "killed:1")

    # Redelivered while it could still be alive: skipped, and left alone.
    assert later.run("job", SLOT) is Outcome.SKIPPED
    assert store.runs("job")[0].status is RunStatus.RUNNING

    wait_until(lambda: later.run("job", SLOT) is Outcome.FAILED, 30, "the dead run recorded")
    [run] = store.runs("job")
    assert (run.status, run.host) == (RunStatus.FAILED, "killed:1")
    assert str(run.error).startswith("died: no report within 4 s")
    assert calls.seen == []  # the slot is not run again: the next slot runs as usual
    assert later.run("job", SLOT) is Outcome.SKIPPED


def test_the_firings_queue_must_outlast_the_longest_run(store: RunStore, calls: Calls) -> None:
    each = runner(single(calls.record, timeout=50), store, calls, stop_grace=20, report_margin=30)
    each.check_visibility_timeout(100)
    with pytest.raises(ConfigurationError, match=r"\(99 s\) is shorter than .* \(100 s"):
        each.check_visibility_timeout(99)


def test_a_firing_names_a_registered_job_and_a_slot_with_a_timezone(
    store: RunStore, calls: Calls
) -> None:
    model = runner(single(calls.record), store, calls).firing_model()
    assert model.model_validate_json('{"job": "job", "slot": "2026-03-06T10:00:40Z"}').slot == (
        SLOT + timedelta(seconds=40)
    )
    for body, problem in (
        ('{"job": "nope", "slot": "2026-03-06T10:00:00Z"}', "no job named 'nope'"),
        ('{"job": "job", "slot": "2026-03-06T10:00:00"}', "timezone"),
        ('{"job": "job"}', "slot"),
    ):
        with pytest.raises(ValueError, match=problem):
            model.model_validate_json(body)
    assert Firing.of("job", SLOT).model_dump_json() == (
        '{"job":"job","slot":"2026-03-06T10:00:00Z"}'
    )


# -- serve --------------------------------------------------------------------------------------


@contextmanager
def serving(
    each: Runner[Calls], queue_url: str, *, health_port: int | None = None, clock: bool = False
) -> Iterator[None]:
    """``serve`` on a thread with a firings consumer, stopped (and joined) on exit."""
    firings = Consumer(
        queue_url, each.firing_model(), each.handle, concurrency=2, wait_time_seconds=1
    )
    thread, _ = in_thread(
        partial(serve, each, firings, health=HealthRegistry(), health_port=health_port, clock=clock)
    )
    try:
        yield
    finally:
        each.stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_two_serving_schedulers_run_each_slot_once(
    aws_env: MotoServer, store: RunStore, calls: Calls
) -> None:
    registry = JobRegistry[Calls](allow_second_rates=True)
    registry.add("tick", calls.record, schedule="rate(1 second)", timeout=5)
    queue_url, _ = create_queue("firings", visibility=10)
    port = free_port()
    options = {"stop_grace": 1, "report_margin": 1}
    # Both clocks fire every slot: each slot's two firings, on either consumer, run once.
    with (
        serving(
            runner(registry, store, calls, host="one", **options),
            queue_url,
            health_port=port,
            clock=True,
        ),
        serving(runner(registry, store, calls, host="two", **options), queue_url, clock=True),
    ):
        wait_until(lambda: len(store.runs("tick")) >= 4, 30, "four slots run")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert json.load(response) == {
                "status": "ok",
                "checks": {"firings": "ok", "clock": "ok"},
            }

    slots = [slot for _, slot in calls.seen]
    assert len(slots) == len(set(slots)), f"a slot ran twice: {sorted(slots)}"
    recorded = store.runs("tick", limit=1000)
    assert sorted(run.slot for run in recorded) == sorted(slots)
    assert {run.status for run in recorded} == {RunStatus.SUCCEEDED}
    # Slots are whole seconds, one apart, from the epoch.
    assert all(slot.microsecond == 0 for slot in slots)


def test_a_firing_sent_by_hand_runs_and_a_bad_one_is_dead_lettered(
    aws_env: MotoServer, store: RunStore, calls: Calls
) -> None:
    queue_url, dlq_url = create_queue("firings", visibility=120)
    send_firing(queue_url, "job", SLOT + timedelta(seconds=12))
    aws.client("sqs").send_message(
        QueueUrl=queue_url, MessageBody='{"job": "nope", "slot": "2026-03-06T10:00:00Z"}'
    )
    with serving(runner(single(calls.record), store, calls, stop_grace=1), queue_url):
        wait_until(lambda: queue_counts(queue_url) == (0, 0), 30, "both firings settled")

    assert calls.seen == [("job", SLOT)]
    assert [run.status for run in store.runs("job")] == [RunStatus.SUCCEEDED]
    [poison] = aws.client("sqs").receive_message(
        QueueUrl=dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    reason = poison["MessageAttributes"][POISON_REASON_ATTRIBUTE]["StringValue"]
    assert "no job named 'nope' (registered: job)" in reason
