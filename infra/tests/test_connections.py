"""The connection budget: every service's peak against the database's max_connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.connections import (
    MARGIN,
    ConnectionBudgetError,
    check_budget,
    default_max_connections,
    peak_connections,
)
from infra.database import DB_CONNECTIONS_ALARM_PERCENT
from infra.testing import Assembly
from servicekit.db import DatabaseSettings
from suite_contract.spec import ServiceSpec, find_repository_root, load_specs

ROOT = find_repository_root(Path(__file__).parent)
SPECS = load_specs(ROOT)


def test_each_service_peaks_at_its_most_tasks_through_a_deploy() -> None:
    rows = {name: peak_connections(spec) for name, spec in SPECS.items()}
    api, worker, scheduler = rows["api"], rows["worker"], rows["scheduler"]
    assert api is not None
    assert worker is not None
    assert scheduler is not None
    defaults = DatabaseSettings()
    # The scaling maximum, 2 gunicorn workers of 5; blue/green's other colour at pool minimum.
    assert (api.tasks, api.processes, api.pool_size, api.deploying) == (12, 2, 5, 12)
    assert api.peak == 12 * 2 * 5 + 12 * 2 * defaults.pool_min_size
    # Rolling at max_percent 200: as many again while deploying; servicekit's default pool.
    assert (worker.tasks, worker.pool_size, worker.deploying) == (20, defaults.pool_size, 20)
    assert worker.peak == 20 * defaults.pool_size + 20 * defaults.pool_min_size
    # One always-on task, rolling: its replacement starts beside it (at pool minimum).
    assert (scheduler.tasks, scheduler.deploying) == (1, 1)
    assert scheduler.peak == defaults.pool_size + defaults.pool_min_size


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    # Measured defaults: 413 on a 4 GiB class and 856 on an 8 GiB one; these stay below.
    [("t4g.medium", 405), ("db.t4g.large", 811), ("m7g.large", 811), ("r7g.xlarge", 3244)],
)
def test_rds_default_max_connections(instance_type: str, expected: int) -> None:
    assert default_max_connections(instance_type) == expected


def test_the_default_formula_stops_at_5000() -> None:
    assert default_max_connections("r7g.16xlarge") == 5000


def test_an_unknown_class_asks_for_the_figure() -> None:
    with pytest.raises(ConnectionBudgetError, match="dbMaxConnections"):
        default_max_connections("x2g.large")


def test_over_budget_names_every_figure() -> None:
    with pytest.raises(ConnectionBudgetError) as raised:
        check_budget(SPECS, instance_type="t4g.small", max_connections=None)
    message = str(raised.value)
    peak = 144 + 220 + 11 + MARGIN
    assert f"({peak}) exceed max_connections (202, RDS's default for t4g.small)" in message
    assert (
        "api: 12 tasks x 2 processes x 5 pool + 12 deploying tasks x 2 processes x 1 pool "
        "minimum = 144" in message
    )
    assert (
        "worker: 20 tasks x 1 processes x 10 pool + 20 deploying tasks x 1 processes x 1 pool "
        "minimum = 220" in message
    )
    assert (
        "scheduler: 1 tasks x 1 processes x 10 pool + 1 deploying tasks x 1 processes x 1 pool "
        "minimum = 11" in message
    )
    assert f"margin {MARGIN}" in message


def test_an_explicit_max_connections_wins() -> None:
    rows, limit = check_budget(SPECS, instance_type="t4g.micro", max_connections=1000)
    assert limit == 1000
    assert sum(row.peak for row in rows) == 144 + 220 + 11
    with pytest.raises(ConnectionBudgetError, match=r"\(390, dbMaxConnections\)"):
        check_budget(SPECS, instance_type="t4g.xlarge", max_connections=390)


def test_a_service_without_the_database_counts_nothing() -> None:
    spec = ServiceSpec.model_validate(
        {
            "name": "static",
            "command": ["static"],
            "task": {"cpu": 256, "memory": 512, "desired_count": 2},
            "trigger": {"kind": "http"},
        }
    )
    assert peak_connections(spec) is None


@pytest.mark.parametrize("variant", ["assembly", "extended"])
def test_the_connections_alarm_watches_the_budgets_limit(
    variant: str, request: pytest.FixtureRequest
) -> None:
    assembly: Assembly = request.getfixturevalue(variant)
    [alarm] = [
        a["Properties"]
        for a in assembly.resources("platform", "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmName") == "suite-dev-db-connections"
    ]
    limit = default_max_connections("t4g.large")
    assert alarm["MetricName"] == "DatabaseConnections"
    assert alarm["Namespace"] == "AWS/RDS"
    assert alarm["Threshold"] == limit * DB_CONNECTIONS_ALARM_PERCENT // 100
    [action] = alarm["AlarmActions"]
    [topic] = assembly.resources("platform", "AWS::SNS::Topic")
    assert action == {"Ref": topic}


def test_the_readme_shows_the_budget() -> None:
    readme = (ROOT / "infra/README.md").read_text()
    rows, limit = check_budget(SPECS, instance_type="t4g.large", max_connections=None)
    lines = readme.splitlines()
    for row in rows:
        [line] = [line for line in lines if line.startswith(f"| {row.service} ")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:] == [
            str(row.tasks),
            str(row.processes),
            str(row.pool_size),
            f"{row.deploying} x {row.pool_min_size}",
            str(row.peak),
        ], line
    total = sum(row.peak for row in rows) + MARGIN
    assert f"**{total} / {limit}**" in readme
    assert f"| margin | | | | | {MARGIN} |" in readme
