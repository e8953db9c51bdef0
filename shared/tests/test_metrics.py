"""EMF documents on stdout, checked against the structure CloudWatch extracts metrics from."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from servicekit.logging import register_secret
from servicekit.metrics import Metrics
from servicekit.settings import ServiceSettings

DIMENSIONS = {"Service": "worker", "Env": "test"}


def documents(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_emit_writes_one_emf_document(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics("Suite/Jobs", DIMENSIONS)
    before = int(time.time() * 1000)
    metrics.emit(
        {"JobsProcessed": 3, "PayloadSize": 2048.0},
        {"PayloadSize": "Bytes"},
        job_id="job-1",
        queue="jobs",
    )
    after = int(time.time() * 1000)

    (document,) = documents(capsys)
    aws = document["_aws"]
    assert isinstance(aws["Timestamp"], int)
    assert before <= aws["Timestamp"] <= after
    (directive,) = aws["CloudWatchMetrics"]
    assert directive["Namespace"] == "Suite/Jobs"
    assert directive["Dimensions"] == [["Service", "Env"]]
    assert directive["Metrics"] == [
        {"Name": "JobsProcessed", "Unit": "None"},
        {"Name": "PayloadSize", "Unit": "Bytes"},
    ]
    # Values, dimension values and properties are top-level members, as EMF requires.
    assert document["JobsProcessed"] == 3
    assert document["PayloadSize"] == 2048.0
    assert (document["Service"], document["Env"]) == ("worker", "test")
    assert (document["job_id"], document["queue"]) == ("job-1", "jobs")


def test_count_and_timing(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics("Suite/Jobs", DIMENSIONS)
    metrics.count("JobsFailed")
    metrics.count("Messages", 10)
    metrics.timing("JobDuration", 0.25, job_id="job-2")

    failed, messages, duration = documents(capsys)
    assert failed["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "JobsFailed", "Unit": "Count"}
    ]
    assert failed["JobsFailed"] == 1
    assert messages["Messages"] == 10
    assert duration["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "JobDuration", "Unit": "Milliseconds"}
    ]
    assert duration["JobDuration"] == pytest.approx(250.0)
    assert duration["job_id"] == "job-2"


@pytest.mark.parametrize("unit", ["Bytes/Second", "Percent", "Count/Second", "Microseconds"])
def test_every_emf_unit_is_accepted(unit: str, capsys: pytest.CaptureFixture[str]) -> None:
    Metrics("Suite", DIMENSIONS).emit({"Value": 1}, {"Value": unit})
    assert documents(capsys)[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] == unit


@pytest.mark.parametrize(
    ("values", "unit", "properties", "error", "match"),
    [
        ({"Latency": 1.0}, {"Latency": "ms"}, {}, ValueError, "'ms' is not a CloudWatch unit"),
        ({"Latency": 1.0}, {"Latency": "milliseconds"}, {}, ValueError, "Milliseconds"),
        ({"Latency": 1.0}, {"Other": "Count"}, {}, ValueError, "not among the values"),
        ({}, None, {}, ValueError, "0 metrics"),
        ({f"M{n}": 1 for n in range(101)}, None, {}, ValueError, "101 metrics"),
        ({"Latency": float("nan")}, None, {}, ValueError, "rejects nan"),
        ({"Latency": float("inf")}, None, {}, ValueError, "rejects inf"),
        ({"Latency": True}, None, {}, TypeError, "not a number"),
        ({"Latency": "12"}, None, {}, TypeError, "not a number"),
        ({"Service": 1}, None, {}, ValueError, "name of a dimension"),
        ({"Latency": 1}, None, {"Latency": "x"}, ValueError, "name of a dimension or property"),
        ({"Latency": 1}, None, {"Env": "prod"}, ValueError, "overwrite a dimension"),
        ({"Latency": 1}, None, {"_aws": {}}, ValueError, "overwrite a dimension or _aws"),
        ({"": 1}, None, {}, ValueError, "metric name ''"),
    ],
)
def test_invalid_documents_are_refused_before_writing(
    values: dict[str, Any],
    unit: dict[str, str] | None,
    properties: dict[str, object],
    error: type[Exception],
    match: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(error, match=match):
        Metrics("Suite", DIMENSIONS).emit(values, unit, **properties)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("namespace", "dimensions", "match"),
    [
        ("", DIMENSIONS, "invalid CloudWatch namespace"),
        ("AWS/ECS", DIMENSIONS, "not starting with AWS/"),
        ("has space", DIMENSIONS, "invalid CloudWatch namespace"),
        ("Suite", {f"D{n}": "x" for n in range(31)}, "31 dimensions"),
        ("Suite", {"Service": ""}, "1-1024 chars"),
    ],
)
def test_invalid_namespace_or_dimensions_fail_at_construction(
    namespace: str, dimensions: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Metrics(namespace, dimensions)


def test_registered_secrets_are_masked_in_properties(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "metrics-secret-value-7"
    register_secret(secret)
    Metrics("Suite", DIMENSIONS).count("LoginFailed", note=f"password {secret} refused")
    output = capsys.readouterr().out
    assert secret not in output
    assert json.loads(output)["note"] == "password *** refused"


def test_a_service_measures_under_its_app_with_its_name_and_env() -> None:
    settings = ServiceSettings.load(
        app_name="suite", app_env="test", service_name="worker", parameter_store_enabled=False
    )
    metrics = Metrics.for_service(settings)
    assert (metrics.namespace, metrics.dimensions) == ("suite", DIMENSIONS)
