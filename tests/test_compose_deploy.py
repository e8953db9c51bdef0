"""Deploys of the composed suite under load lose nothing: `make deploy-local` as ECS would do it.

32 clients post jobs and read them back for the whole of a deploy of both services (the api
blue/green behind its load balancer, the worker rolling); then no request failed (a connection
error or a 5xx), every accepted job succeeded with exactly one effect, and both fleets are new.
A second deploy, of an api image that fails its health check, rolls back: the command fails with
the reason, the old fleet never stopped serving, and the image tag names the running image again.
A deploy after a task died (killed, not restarted) replaces it too: the count is the service's.
Needs Docker with Compose v2 (skipped otherwise), like tests/test_compose_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from compose_suite import ROOT, Suite, running_suite

from servicekit.testing.traffic import Traffic

PROJECT = os.environ.get("E2E_PROJECT", "ecs-suite-e2e") + "-deploy"
CLIENTS = 32
# Each client posts a job and reads it back every PACE s: about 16 requests/s in all, few
# enough jobs that moto (slow with a backlog) keeps up.
PACE = 4.0

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def suite(compose_v2: None) -> Iterator[Suite]:
    with running_suite(PROJECT) as running:
        yield running


def traffic(suite: Suite) -> Traffic:
    return Traffic(suite.url, suite.api.headers, clients=CLIENTS, pace=PACE)


def containers(suite: Suite, *services: str) -> set[str]:
    return {
        line
        for service in services
        for line in suite.compose("ps", "--quiet", service).stdout.split()
    }


def deploy(suite: Suite, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "deploy-local", *arguments],
        cwd=ROOT,
        env=suite.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=400,
    )


def test_a_deploy_of_both_services_under_load_fails_no_request_and_loses_no_job(
    suite: Suite,
) -> None:
    apis, workers = containers(suite, "api", "api-green"), containers(suite, "worker")
    with traffic(suite) as load:
        load.answered(2 * CLIENTS)  # load under way before the deploy starts
        started = time.monotonic()
        done = deploy(suite)
        took = time.monotonic() - started
        load.answered(2 * CLIENTS)  # and through the new fleets after it ends
    print(done.stderr)
    print(f"deploy of api and worker in {took:.0f} s under {CLIENTS} clients: {load.summary()}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert load.failures == []
    # Both fleets are entirely new, the api's in the other colour.
    assert containers(suite, "api", "api-green").isdisjoint(apis)
    assert len(containers(suite, "api", "api-green")) == len(apis)
    assert containers(suite, "worker").isdisjoint(workers)
    assert len(containers(suite, "worker")) == len(workers)
    suite.all_succeed_once(load.ids, 240)


def test_an_api_failing_its_health_check_is_rolled_back_while_the_old_fleet_serves(
    suite: Suite,
) -> None:
    image = suite.env.get("API_IMAGE", "ecs-suite/api:local")
    serving = containers(suite, "api", "api-green")
    running_image = subprocess.run(
        ["docker", "inspect", "--format", "{{.Image}}", *serving],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    # The same image answering 404 on /health: it starts, and never passes a check.
    broken = "FROM " + image + '\nCMD ["python3", "-m", "http.server", "8000"]\n'
    subprocess.run(
        ["docker", "build", "--quiet", "--tag", image, "-"], input=broken, text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    with traffic(suite) as load:
        done = deploy(suite, "SERVICES=api", "DEPLOY_FLAGS=--no-build")
    print(done.stderr)
    print(f"failed deploy of api under {CLIENTS} clients: {load.summary()}")
    assert done.returncode != 0
    assert "api rolled back" in done.stderr
    assert "never became healthy" in done.stderr
    assert load.failures == []
    assert containers(suite, "api", "api-green") == serving
    assert suite.api.get("/health").status_code == 200
    tagged = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert tagged == running_image, "the tag names the running image again"
    suite.all_succeed_once(load.ids, 240)


def test_a_deploy_replaces_a_task_that_died_and_keeps_the_count(suite: Suite) -> None:
    workers = containers(suite, "worker")
    # `docker kill` is a manual stop: Docker does not restart the container (ECS would replace
    # the task), so the service runs one task short until the deploy.
    subprocess.run(["docker", "kill", sorted(workers)[0]], check=True, capture_output=True)
    done = deploy(suite, "SERVICES=worker", "DEPLOY_FLAGS=--no-build")
    print(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replacing 1 stopped task(s)" in done.stderr
    now = containers(suite, "worker")
    assert len(now) == len(workers)
    assert now.isdisjoint(workers)
    every = set(suite.compose("ps", "--all", "--quiet", "worker").stdout.split())
    assert every == now, "the dead task is gone, not left behind"
