"""Alarms to the environment's topic, and one dashboard per environment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.testing import Assembly


def _alarms(assembly: Assembly, stack: str) -> dict[str, dict[str, Any]]:
    return {
        alarm["Properties"]["AlarmName"]: alarm["Properties"]
        for alarm in assembly.resources(stack, "AWS::CloudWatch::Alarm").values()
    }


def _topic_alarm(alarm: dict[str, Any]) -> bool:
    return "Alarms" in json.dumps(alarm["AlarmActions"])


def test_database_cpu_storage_and_connections(assembly: Assembly) -> None:
    alarms = _alarms(assembly, "platform")
    cpu, storage = alarms["suite-dev-db-cpu"], alarms["suite-dev-db-free-storage"]
    assert (cpu["MetricName"], cpu["Threshold"]) == ("CPUUtilization", 80)
    assert (storage["MetricName"], storage["ComparisonOperator"]) == (
        "FreeStorageSpace",
        "LessThanThreshold",
    )
    assert storage["Threshold"] == 2 * 1024**3
    assert "suite-dev-db-connections" in alarms
    assert all(_topic_alarm(alarm) for alarm in alarms.values())


def test_api_p99_latency_from_the_load_balancer(assembly: Assembly) -> None:
    p99 = _alarms(assembly, "api")["suite-dev-api-p99-latency"]
    assert (p99["MetricName"], p99["ExtendedStatistic"], p99["Threshold"]) == (
        "TargetResponseTime",
        "p99",
        1,
    )
    assert "suite-dev-worker-p99-latency" not in _alarms(assembly, "worker")


@pytest.mark.parametrize("service", ["api", "worker"])
def test_running_tasks_below_desired(assembly: Assembly, service: str) -> None:
    alarm = _alarms(assembly, service)[f"suite-dev-{service}-below-desired"]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    assert queries["desired"]["MetricStat"]["Metric"]["MetricName"] == "DesiredTaskCount"
    assert queries["running"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    assert (
        "desired" in queries[next(i for i in queries if "Expression" in queries[i])]["Expression"]
    )
    assert _topic_alarm(alarm)


def test_waf_blocked_requests_spike(assembly: Assembly) -> None:
    alarm = _alarms(assembly, "platform")["suite-dev-api-waf-blocked"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/WAFV2", "BlockedRequests")
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert dimensions["WebACL"] == "suite-dev-api-web"
    # More blocked in one rate window than one address may send in it (the spec's [edge]).
    assert (alarm["Threshold"], alarm["Period"]) == (2000, 300)


def test_image_scan_findings_reach_the_topic(assembly: Assembly) -> None:
    [rule] = [
        rule["Properties"]
        for rule in assembly.resources("platform", "AWS::Events::Rule").values()
        if rule["Properties"]["EventPattern"].get("source") == ["aws.ecr"]
    ]
    pattern = rule["EventPattern"]
    assert pattern["detail-type"] == ["ECR Image Scan"]
    assert pattern["detail"]["repository-name"] == [{"prefix": "suite/"}]
    severities = {next(iter(c["finding-severity-counts"])) for c in pattern["detail"]["$or"]}
    assert severities == {"HIGH", "CRITICAL"}
    assert "Alarms" in json.dumps(rule["Targets"])


def test_one_dashboard_shows_the_environment(assembly: Assembly) -> None:
    [dashboard] = assembly.resources("platform", "AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "suite-dev"
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in (
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "TargetResponseTime",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "RunningTaskCount",
        "CapacityProviderReservation",
        "CPUUtilization",
        "DatabaseConnections",
        "FreeStorageSpace",
        "BlockedRequests",
    ):
        assert metric in body, metric
    for title in ("api: latency", "queue jobs: dead letters", "running tasks per service"):
        assert title in body, title
