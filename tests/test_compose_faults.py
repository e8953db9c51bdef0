"""The composed suite under faults done to the real containers: nothing accepted is lost.

One suite is brought up for the module; each scenario breaks something (pause, stop, kill,
restart), checks what must hold while it is broken, repairs it and checks every job it accepted
ends ``succeeded`` with exactly one effect. A fixture brings every service back between
scenarios. Needs Docker with Compose v2 (skipped otherwise), like tests/test_compose_e2e.py.

The worker holds 20 s leases (``LEASE_SECONDS``) so a job can outlive several within the test.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from compose_suite import Suite, running_suite

from servicekit.testing import wait_until

PROJECT = os.environ.get("E2E_PROJECT", "ecs-suite-e2e") + "-faults"
# What every POST /jobs must answer within, whatever AWS does (the requirement).
REQUEST_BOUND = 2.0
LEASE = 20

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def suite(compose_v2: None) -> Iterator[Suite]:
    with running_suite(PROJECT, {"LEASE_SECONDS": str(LEASE)}) as running:
        yield running


@pytest.fixture(autouse=True)
def repaired(suite: Suite) -> Iterator[None]:
    """After each scenario: nothing paused, every service running and healthy again."""
    yield
    suite.compose("unpause", "moto", check=False)
    suite.compose("up", "--detach", "--wait", "--wait-timeout", "120")


@dataclass
class Load:
    """What concurrent clients posting jobs saw."""

    ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        cuts = statistics.quantiles(self.latencies, n=100)
        return (
            f"{len(self.latencies)} POST /jobs: p50 {cuts[49] * 1000:.0f} ms, "
            f"p99 {cuts[98] * 1000:.0f} ms, max {max(self.latencies) * 1000:.0f} ms"
        )


def post_load(suite: Suite, *, clients: int, seconds: float, every: float) -> Load:
    """``clients`` threads, each posting an echo job every ``every`` s for ``seconds``.

    Each request may take at most :data:`REQUEST_BOUND`; a slower answer is an error.
    """
    load = Load()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(number: int) -> None:
        with httpx.Client(
            base_url=suite.url, timeout=REQUEST_BOUND, headers=suite.api.headers
        ) as http:
            while (started := time.monotonic()) < end:
                try:
                    response = http.post("/jobs", json={"type": "echo", "payload": {"c": number}})
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                else:
                    outcome = "" if response.status_code == 201 else response.text[:200]
                with lock:
                    if outcome:
                        load.errors.append(outcome)
                    else:
                        load.ids.append(response.json()["id"])
                        load.latencies.append(time.monotonic() - started)
                time.sleep(max(0.0, started + every - time.monotonic()))  # pacing, not a wait

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


def unsent(suite: Suite, ids: list[str]) -> int:
    return int(
        suite.sql(
            "SELECT count(*) FROM jobs WHERE enqueued_at IS NULL AND id IN ("
            + ",".join(f"'{job_id}'" for job_id in ids)
            + ")"
        )
    )


def test_intake_answers_within_the_bound_while_sqs_is_unreachable(suite: Suite) -> None:
    # Paused: connections are accepted and nothing answers, like a black-holed endpoint.
    suite.compose("pause", "moto")
    try:
        # 32 clients, few enough jobs in all that moto (slow with a backlog) drains them soon.
        load = post_load(suite, clients=32, seconds=60, every=8.0)
        # Everything else answers too, and the jobs wait in the outbox.
        assert suite.api.get("/health", timeout=REQUEST_BOUND).status_code == 200
        assert suite.api.get("/jobs", params={"limit": 5}, timeout=REQUEST_BOUND).is_success
        assert suite.api.get(f"/jobs/{load.ids[0]}", timeout=REQUEST_BOUND).is_success
        assert unsent(suite, load.ids) == len(load.ids)
    finally:
        suite.compose("unpause", "moto")
    print(f"SQS unreachable for 60 s, 32 clients: {load.summary()}")
    assert load.errors == []
    suite.all_succeed_once(load.ids, 240)


def test_jobs_in_flight_survive_the_database_down_for_150_s(suite: Suite) -> None:
    # Depends on the worker pausing while the database is down (its gate), not on this branch.
    ids = [suite.post_job("sleep", {"seconds": 3}) for _ in range(8)]
    ids += [suite.post_job("echo", {"n": n}) for n in range(20)]
    wait_until(lambda: unsent(suite, ids) == 0, 30, "every message sent", 0.5)
    suite.compose("stop", "postgres")
    back_at = time.monotonic() + 150
    try:
        assert suite.api.get("/health").status_code == 200
        refused = suite.api.post("/jobs", json={"type": "echo"}, timeout=30)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "dependency_unavailable"
        time.sleep(max(0.0, back_at - time.monotonic()))  # the outage's length, not a wait
    finally:
        # Started and healthy (pg_isready) before its tables are read: a loaded machine takes
        # seconds to accept connections again.
        suite.compose("up", "--detach", "--wait", "--no-deps", "postgres")
    suite.all_succeed_once(ids, 240)


@pytest.mark.parametrize("signal", ["SIGKILL", "SIGTERM"])
def test_a_worker_killed_under_load_loses_and_repeats_nothing(suite: Suite, signal: str) -> None:
    ids = [suite.post_job("sleep", {"seconds": 2}) for _ in range(12)]
    ids += [suite.post_job("echo", {"n": n}) for n in range(20)]
    wait_until(lambda: "running" in suite.statuses(ids).values(), 60, "jobs in flight", 0.2)
    replicas = len(suite.compose("ps", "--quiet", "worker").stdout.split())
    before = suite.state("worker")
    suite.compose("kill", "-s", signal, "worker")
    # Gone (SIGTERM: after its drain), or already started again by its restart policy.
    wait_until(
        lambda: (
            (now := suite.state("worker"))["StartedAt"] != before["StartedAt"] or not now["Running"]
        ),
        60,
        f"the worker to stop on {signal}",
        0.5,
    )
    # The restart policy brings the signalled workers back and `up` starts any it did not; `up`
    # can race a restart under way (every replica got the signal), so the check is their health.
    suite.compose("up", "--detach", "--no-deps", "worker", check=False)
    wait_until(lambda: suite.healthy("worker") == replicas, 120, "every worker healthy again", 1)
    suite.all_succeed_once(ids, 180)


def test_a_job_outliving_its_lease_runs_once(suite: Suite) -> None:
    # The worker renews the lease of its running job on every heartbeat, so requeue-stuck, which
    # takes only expired leases, leaves a job alone however long it runs.
    job_id = suite.post_job("sleep", {"seconds": LEASE * 2})
    wait_until(lambda: suite.statuses([job_id])[job_id] == "running", 60, "the job running", 0.5)
    wait_until(
        lambda: (
            suite.sql(
                f"SELECT clock_timestamp() - started_at > interval '{LEASE + 5} seconds' "
                f"FROM jobs WHERE id = '{job_id}'"
            )
            == "t"
        ),
        LEASE * 2,
        "the job to run past its first lease",
        1.0,
    )
    # A slot of its own (yesterday's): serve mode's run of the current slot cannot skip it.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    slot = now - timedelta(days=1, minutes=now.minute % 5)
    suite.compose(
        "exec", "-T", "scheduler", "scheduler", "run", "requeue-stuck", "--slot", slot.isoformat()
    )
    suite.all_succeed_once([job_id], 120)
    assert suite.sql(f"SELECT attempts FROM jobs WHERE id = '{job_id}'") == "1", "run once"


def test_the_suite_recovers_from_an_emulator_restart_within_a_minute(suite: Suite) -> None:
    # Messages sent before the restart die with the emulator's memory: hold the worker off so
    # they are still on the queue when it restarts.
    suite.compose("stop", "worker")
    lost = [suite.post_job("echo", {"n": n}) for n in range(10)]
    wait_until(lambda: unsent(suite, lost) == 0, 30, "every message sent", 0.5)
    suite.compose("restart", "moto")
    restarted = time.monotonic()
    # `docker start`, not `compose start`: compose would start the worker's dependencies again,
    # running the init step against an emulator that may not answer yet (moto-reinit's job).
    suite.docker("start", *suite.containers("worker"))
    after = suite.post_job("echo", {"after": "restart"})
    try:
        suite.all_succeed_once([*lost, after], 60 - (time.monotonic() - restarted))
    except AssertionError:
        for service in ("moto-reinit", "worker", "api"):
            print(f"--- {service}", *suite.logs(service)[-15:], sep="\n")
        raise
    print(f"moto restarted: every job succeeded {time.monotonic() - restarted:.1f} s later")
