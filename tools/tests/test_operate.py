"""The day-two commands besides status (logs, run, exec, rollback, jobs dead, cost), each run as
a child process against resources created in moto."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servicekit import aws
from servicekit.consumer import POISON_REASON_ATTRIBUTE
from servicekit.testing import wait_until
from servicekit.testing.moto import MotoServer
from servicekit.testing.sqs import queue_counts
from suite_tools import cost
from suite_tools.release import create_deployment
from suite_tools.session import plugin_arguments
from suite_tools.testing import DeployedSuite, moto_state, run_suite

TRACE = "1-67890abc-0123456789abcdef01234567"


@pytest.fixture
def suite(aws_env: MotoServer) -> DeployedSuite:
    moto_state("ecs::task", manual=True)
    return DeployedSuite()


class Background:
    """``suite ARGS`` left running, its output read line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suite_tools", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def result(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stdout, stderr


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


# -- logs ---------------------------------------------------------------------------------


def _line(message: str, **fields: object) -> dict[str, object]:
    return {
        "time": "2026-12-02T10:00:00.000Z",
        "level": "INFO",
        "service": "worker",
        "logger": "worker",
        "message": message,
        **fields,
    }


def test_logs_are_rendered_for_people_and_passed_through_with_json(
    suite: DeployedSuite,
) -> None:
    suite.log(
        "worker",
        _line("job done", job_id="j-1", trace_id=TRACE),
        _line("other job", job_id="j-2", trace_id="1-00000000-ffffffffffffffffffffffff"),
        "a plain line",
    )

    run = run_suite("logs", "worker", "--since", "5m")

    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"2026-12-02T10:00:00.000Z INFO    job=j-1 trace={TRACE} job done"
    assert lines[1].endswith("other job")
    assert lines[2].endswith("Z a plain line")

    raw = run_suite("logs", "worker", "--json", "--trace", TRACE)
    assert raw.code == 0, raw.stderr
    assert [json.loads(line) for line in raw.stdout.splitlines()] == [
        _line("job done", job_id="j-1", trace_id=TRACE)
    ]
    filtered = run_suite("logs", "worker", "--filter", "plain")
    assert filtered.stdout.splitlines()[0].endswith("a plain line")
    assert len(filtered.stdout.splitlines()) == 1


def test_logs_follow_polls_where_live_tail_is_not_served(
    suite: DeployedSuite, background: list[Background]
) -> None:
    """moto serves StartLiveTail's request but botocore sends it to a ``stream-`` host name
    an endpoint override does not have: the fallback to FilterLogEvents is what runs here."""
    suite.log("api", _line("before"))
    run = Background("logs", "api", "--follow")
    background.append(run)
    assert run.line().endswith("before\n")
    suite.log("api", _line("after", trace_id=TRACE))
    assert run.line().endswith(f"trace={TRACE} after\n")
    run.process.terminate()
    _, _, stderr = run.result()
    assert "live tail unavailable (" in stderr
    assert "polling every 2 s" in stderr


def test_logs_of_an_environment_without_the_log_group(aws_env: MotoServer) -> None:
    run = run_suite("logs", "worker", "--env", "staging")
    assert run.code == 1
    assert run.stderr == (
        "suite logs: no log group /suite/staging/worker: deploy the service's stack, or check "
        "--app/--env\n"
    )


def test_logs_refuse_a_bad_since(aws_env: MotoServer) -> None:
    run = run_suite("logs", "worker", "--since", "yesterday")
    assert run.code == 2
    assert "'yesterday' is neither a duration (10m, 2h, 1d) nor an ISO-8601 time" in run.stderr


# -- run ----------------------------------------------------------------------------------


def _firing(suite: DeployedSuite) -> dict[str, str]:
    """The one firing on the scheduler's firings queue."""
    [message] = aws.client("sqs").receive_message(QueueUrl=suite.firings)["Messages"]
    body: dict[str, str] = json.loads(message["Body"])
    return body


def _run_line(job: str, slot: datetime, message: str, **fields: object) -> dict[str, object]:
    """A line of the scheduler's log about one run (the runtime's log context: job, slot)."""
    return {"level": "INFO", "message": message, "job": job, "slot": slot.isoformat(), **fields}


def test_run_sends_the_firing_its_schedule_sends_and_reports_the_outcome(
    suite: DeployedSuite, background: list[Background]
) -> None:
    run = Background("run", "outbox-sweep", "--wait", "--poll", "0.05", "--json")
    background.append(run)
    wait_until(lambda: sum(queue_counts(suite.firings)), timeout=30, what="the firing")
    firing = _firing(suite)
    # The schedule's own input, the placeholder filled with now.
    assert set(firing) == {"job", "slot"}
    assert firing["job"] == "outbox-sweep"
    sent = datetime.fromisoformat(firing["slot"])
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 60
    slot = sent.replace(second=0, microsecond=0)  # rate(1 minute): the minute it falls in

    # What the scheduler writes while it runs it; only the run's last line ends the wait.
    suite.log(
        "scheduler",
        _run_line("outbox-sweep", slot - timedelta(minutes=1), "finished: succeeded in 0.1 s"),
        _run_line("outbox-sweep", slot, "started"),
        _run_line(
            "outbox-sweep",
            slot,
            "finished: failed in 0.2 s (OutboxSendFailed: 1 send(s) failed)",
            status="failed",
        ),
    )
    code, stdout, stderr = run.result()

    assert code == 1, stderr
    document = json.loads(stdout)
    assert document["job"] == "outbox-sweep"
    assert document["slot"] == slot.isoformat().replace("+00:00", "Z")
    assert (document["status"], document["exitCode"]) == ("failed", 1)
    assert document["error"] == "failed in 0.2 s (OutboxSendFailed: 1 send(s) failed)"
    assert f"outbox-sweep: firing {document['messageId']} sent for slot " in stderr


def test_run_of_a_slot_already_run_waits_for_the_skip_and_exits_0(
    suite: DeployedSuite, background: list[Background]
) -> None:
    run = Background("run", "purge-finished", "--wait", "--poll", "0.05")
    background.append(run)
    wait_until(lambda: sum(queue_counts(suite.firings)), timeout=30, what="the firing")
    assert _firing(suite)["job"] == "purge-finished"
    # cron(0 3 * * ? *): the run's slot is the latest 03:00 UTC.
    now = datetime.now(UTC)
    slot = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if slot > now:
        slot -= timedelta(days=1)
    suite.log("scheduler", _run_line("purge-finished", slot, "skipped: slot already run"))

    code, stdout, stderr = run.result()
    assert code == 0, stderr
    job, _, slot_text, status, exit_code = stdout.split()
    assert (job, slot_text, status, exit_code) == (
        "purge-finished",
        slot.isoformat().replace("+00:00", "Z"),
        "skipped",
        "0",
    )


def test_run_without_wait_returns_once_sent(suite: DeployedSuite) -> None:
    run = run_suite("run", "purge-finished")
    assert run.code == 0, run.stderr
    job, message_id, _, status, exit_code = run.stdout.split()
    assert (job, status, exit_code) == ("purge-finished", "SENT", "-")
    assert queue_counts(suite.firings) == (1, 0)
    assert message_id


def test_run_of_an_unknown_job_names_the_jobs(suite: DeployedSuite) -> None:
    run = run_suite("run", "sweep")
    assert run.code == 1
    assert run.stderr == (
        "suite run: no job sweep in schedule group suite-dev-scheduler (jobs: outbox-sweep, "
        "purge-finished)\n"
    )


# -- exec ---------------------------------------------------------------------------------


def _path_without_plugin() -> str:
    return os.pathsep.join(
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if not (Path(folder) / "session-manager-plugin").exists()
    )


def test_exec_without_the_plugin_says_how_to_install_it(suite: DeployedSuite) -> None:
    run = run_suite("exec", "worker", env=dict(os.environ, PATH=_path_without_plugin()))
    assert run.code == 1
    assert run.stderr.startswith(
        "suite exec: session-manager-plugin is not installed (ECS Exec's terminal goes through "
        "it): see https://docs.aws.amazon.com/systems-manager/latest/userguide/"
        "session-manager-working-with-install-plugin.html"
    )
    assert len(run.stderr.splitlines()) == 1


def test_exec_into_a_task_without_ecs_exec_names_the_infra_setting(
    suite: DeployedSuite, tmp_path: Path
) -> None:
    """The boundary: moto starts tasks without ECS Exec and implements no ExecuteCommand, so
    the session itself is not played here; the plugin found on PATH is never reached."""
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/bin/sh\necho reached >&2\nexit 9\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    suite.run_worker_task("FARGATE")
    environment = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    run = run_suite("exec", "worker", "--", "ls", "-l", env=environment)

    assert run.code == 1
    assert run.stderr == (
        "suite exec: ECS Exec is not enabled on worker's tasks: the infra must set "
        "enableExecuteCommand on the service (tools/README.md, `suite exec`), then new tasks "
        "accept it\n"
    )


def test_exec_without_a_running_task(suite: DeployedSuite, tmp_path: Path) -> None:
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/bin/sh\nexit 9\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    environment = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    run = run_suite("exec", "worker", env=environment)
    assert run.code == 1
    assert run.stderr == "suite exec: worker has no running task in cluster suite-dev\n"


def test_the_plugin_gets_the_aws_clis_arguments() -> None:
    session = {"sessionId": "s-1", "streamUrl": "wss://x", "tokenValue": "t"}
    assert plugin_arguments(
        session,
        region="eu-west-1",
        profile="ops",
        target="ecs:suite-dev_abc_123-456",
        endpoint="https://ecs.eu-west-1.amazonaws.com",
    ) == [
        "session-manager-plugin",
        json.dumps(session),
        "eu-west-1",
        "StartSession",
        "ops",
        '{"Target": "ecs:suite-dev_abc_123-456"}',
        "https://ecs.eu-west-1.amazonaws.com",
    ]


# -- rollback -----------------------------------------------------------------------------


def test_rollback_of_a_rolling_service_asks_then_updates_to_the_previous_revision(
    suite: DeployedSuite,
) -> None:
    first, second = suite.worker_revisions

    refused = run_suite("rollback", "worker")
    assert refused.code == 1
    assert refused.stderr == (
        "will worker: suite-dev-worker:2 -> suite-dev-worker:1 (UpdateService)\n"
        "suite rollback: not confirmed: stdin is not a terminal; pass --yes to go ahead\n"
    )
    assert suite.worker_service()["taskDefinition"] == second

    run = run_suite("rollback", "worker", "--yes", "--json")
    assert run.code == 0, run.stderr
    assert suite.worker_service()["taskDefinition"] == first
    document = json.loads(run.stdout)
    assert document["action"] == "update-service"
    assert (document["running"], document["target"]) == (second, first)

    again = run_suite("rollback", "worker", "--yes")
    assert again.code == 1
    assert again.stderr.endswith(
        "suite rollback: no ACTIVE revision of suite-dev-worker before 1: nothing to roll back to\n"
    )


def test_rollback_of_a_codedeploy_service_deploys_the_previous_revision(
    suite: DeployedSuite,
) -> None:
    api = suite.api
    previous = api.running()
    current = api.register(f"sha256:{'c' * 64}")
    service = aws.client("ecs").describe_services(cluster="suite-dev", services=["api"])
    deployment = create_deployment(
        aws.client("codedeploy"), api.group, service["services"][0], current, previous
    )
    api.finish(deployment, "Succeeded")

    run = run_suite("rollback", "api", "--yes", "--json")

    assert run.code == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["action"] == "deploy-previous"
    assert (document["running"], document["target"]) == (current, previous)
    started = [d for d in api.deployments() if d["deploymentId"] == document["deploymentId"]]
    properties = api.appspec(started[0])["Resources"][0]["TargetService"]["Properties"]
    assert properties["TaskDefinition"] == previous


def test_rollback_during_a_codedeploy_deployment_stops_it(suite: DeployedSuite) -> None:
    """The boundary: moto implements no StopDeployment, so the plan is what is checked and the
    call's refusal is one line naming the action."""
    api = suite.api
    target = api.register(f"sha256:{'d' * 64}")
    service = aws.client("ecs").describe_services(cluster="suite-dev", services=["api"])
    deployment = create_deployment(
        aws.client("codedeploy"), api.group, service["services"][0], target, api.running()
    )

    run = run_suite("rollback", "api", "--yes")

    assert run.stderr.splitlines()[0] == (
        f"will api: stop CodeDeploy deployment {deployment} with rollback (traffic goes back "
        "to suite-dev-api:1)"
    )
    assert run.code == 1
    assert run.stderr.splitlines()[1].startswith(
        f"suite rollback: 500 from codedeploy:StopDeployment on {deployment}"
    )


def test_dead_jobs_are_listed_and_stay_in_the_dlq(suite: DeployedSuite) -> None:
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=suite.dlq, MessageBody='{"job_id": "j-1", "type": "echo"}')
    sqs.send_message(
        QueueUrl=suite.dlq,
        MessageBody='{"type": 5}',
        MessageAttributes={
            POISON_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": "job_id: Field required"}
        },
    )

    run = run_suite("jobs", "dead", "--json")

    assert run.code == 0, run.stderr
    letters = json.loads(run.stdout)["deadLetterQueues"]["suite-dev-jobs-dlq"]
    by_job = {item["jobId"]: item for item in letters}
    assert set(by_job) == {"j-1", None}
    assert by_job["j-1"]["reason"] == "retries exhausted"
    assert by_job["j-1"]["queue"] == "suite-dev-jobs"
    assert by_job[None]["reason"] == "poison: job_id: Field required"
    visible = sqs.get_queue_attributes(
        QueueUrl=suite.dlq, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert visible == "2"  # listing released them at once

    table = run_suite("jobs", "dead")
    assert table.stdout.splitlines()[0] == "suite-dev-jobs-dlq: 2 dead"
    assert "job j-1" in table.stdout


def test_redrive_puts_the_chosen_jobs_back_on_their_queue(suite: DeployedSuite) -> None:
    sqs = aws.client("sqs")
    for job in ("j-1", "j-2"):
        sqs.send_message(
            QueueUrl=suite.dlq,
            MessageBody=json.dumps({"job_id": job, "type": "echo"}),
            MessageAttributes={"traceparent": {"DataType": "String", "StringValue": "00-ab"}},
        )

    refused = run_suite("jobs", "dead", "--redrive", "j-9")
    assert refused.code == 1
    assert refused.stderr == "suite jobs: not in a dead-letter queue: j-9\n"

    run = run_suite("jobs", "dead", "--redrive", "j-2", "--json")

    assert run.code == 0, run.stderr
    assert [item["jobId"] for item in json.loads(run.stdout)["redriven"]] == ["j-2"]
    back = sqs.receive_message(
        QueueUrl=suite.queue, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )["Messages"]
    assert [json.loads(m["Body"])["job_id"] for m in back] == ["j-2"]
    assert back[0]["MessageAttributes"]["traceparent"]["StringValue"] == "00-ab"
    left = sqs.receive_message(QueueUrl=suite.dlq, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["job_id"] for m in left] == ["j-1"]


# -- cost ---------------------------------------------------------------------------------


def test_cost_from_the_specs_and_the_dated_table(aws_env: MotoServer) -> None:
    run = run_suite("cost", "--region", "eu-west-1", "--json")

    assert run.code == 0, run.stderr
    document = json.loads(run.stdout)
    table = json.loads((Path(cost.__file__).parent / "data" / "prices.json").read_text())
    assert document["prices"]["date"] == table["date"]
    fargate = table["regions"]["eu-west-1"]["fargate"]
    spot = table["regions"]["eu-west-1"]["fargate_spot"]
    api = document["services"]["api"]
    # api: 3 tasks of 0.5 vCPU / 1 GiB; 2 on FARGATE (base), the third split 1:1 with Spot.
    assert api["tasks"] == {"min": 3, "desired": 3, "max": 12}
    assert api["placedAtDesired"] == {"FARGATE": 2.5, "FARGATE_SPOT": 0.5}
    hour = 0.5 * fargate["vcpu_hour"] + 1 * fargate["gb_hour"]
    spot_hour = 0.5 * spot["vcpu_hour"] + 1 * spot["gb_hour"]
    assert api["monthly"]["desired"] == round((2.5 * hour + 0.5 * spot_hour) * 730, 2)
    # The scheduler: one always-on task of 0.25 vCPU / 0.5 GiB on regular Fargate.
    scheduler = document["services"]["scheduler"]
    assert scheduler["tasks"] == {"min": 1, "desired": 1, "max": 1}
    scheduler_hour = 0.25 * fargate["vcpu_hour"] + 0.5 * fargate["gb_hour"]
    assert scheduler["monthly"]["desired"] == round(scheduler_hour * 730, 2)
    totals = document["totalIfAllOn"]
    assert totals["FARGATE_SPOT"] < totals["FARGATE"]
    assert totals["EC2_SPOT"] < totals["EC2"]

    text = run_suite("cost", "--region", "eu-west-1")
    assert text.stdout.splitlines()[0] == (
        "Monthly compute cost, eu-west-1, USD, 730 h/month; prices: table dated "
        f"{table['date']} (EC2: m7i.large)"
    )
    assert "FARGATE_SPOT" in text.stdout.splitlines()[-3]


def test_cost_live_falls_back_to_the_table_when_the_price_list_does_not_answer(
    aws_env: MotoServer,
) -> None:
    """moto has no Price List API: the command says so and prices from the table."""
    run = run_suite("cost", "--region", "eu-west-1", "--live", "--json")
    assert run.code == 0, run.stderr
    assert "Price List API not used (" in run.stderr
    assert json.loads(run.stdout)["prices"]["source"] == "table"


def test_cost_of_a_region_without_prices(aws_env: MotoServer) -> None:
    run = run_suite("cost", "--region", "sa-east-1")
    assert run.code == 1
    assert run.stderr == (
        "suite cost: no prices for sa-east-1 in suite_tools/data/prices.json (regions: "
        "us-east-1, eu-west-1, eu-central-1); add them, or use --region\n"
    )
