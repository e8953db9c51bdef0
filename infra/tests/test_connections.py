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
from infra.platform import DB_CONNECTIONS_ALARM_PERCENT
from infra.testing import Assembly
from scheduler.jobs import registry
from servicekit.db import DatabaseSettings
from servicekit.spec import ServiceSpec, find_repository_root, load_specs

ROOT = find_repository_root(Path(__file__).parent)
SPECS = load_specs(ROOT)
SCHEDULES = {"scheduler": len(registry.export())}


def test_each_service_peaks_at_its_most_tasks_through_a_deploy() -> None:
    rows = {name: peak_connections(spec, SCHEDULES.get(name, 0)) for name, spec in SPECS.items()}
    api, worker, scheduler = rows["api"], rows["worker"], rows["scheduler"]
    assert api is not None
    assert worker is not None
    assert scheduler is not None
    # Blue/green runs both colours at the scaling maximum; 2 gunicorn workers of 5 each.
    assert (api.tasks, api.surge, api.processes, api.pool_size, api.peak) == (12, 2, 2, 5, 240)
    # Rolling at max_percent 200; servicekit's default pool.
    default = DatabaseSettings().pool_size
    assert (worker.tasks, worker.surge, worker.pool_size) == (20, 2, default)
    assert worker.peak == 40 * default
    # Every schedule's run at once, never a deployment surge.
    assert (scheduler.tasks, scheduler.surge, scheduler.peak) == (3, 1, 3 * default)


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
        check_budget(SPECS, SCHEDULES, instance_type="t4g.medium", max_connections=None)
    message = str(raised.value)
    assert "exceed max_connections (405, RDS's default for t4g.medium)" in message
    assert "api: 12 tasks x 2 (deployment surge) x 2 processes x 5 pool = 240" in message
    assert "worker: 20 tasks x 2 (deployment surge) x 1 processes x 10 pool = 400" in message
    assert "scheduler: 3 tasks x 1 (deployment surge) x 1 processes x 10 pool = 30" in message
    assert f"margin {MARGIN}" in message


def test_an_explicit_max_connections_wins() -> None:
    rows, limit = check_budget(SPECS, SCHEDULES, instance_type="t4g.micro", max_connections=1000)
    assert limit == 1000
    assert sum(row.peak for row in rows) == 670
    with pytest.raises(ConnectionBudgetError, match=r"\(600, dbMaxConnections\)"):
        check_budget(SPECS, SCHEDULES, instance_type="t4g.xlarge", max_connections=600)


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
    rows, limit = check_budget(SPECS, SCHEDULES, instance_type="t4g.large", max_connections=None)
    lines = readme.splitlines()
    for row in rows:
        [line] = [line for line in lines if line.startswith(f"| {row.service} ")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:] == [
            str(row.tasks),
            f"{row.surge:g}",
            str(row.processes),
            str(row.pool_size),
            str(row.peak),
        ], line
    total = sum(row.peak for row in rows) + MARGIN
    assert f"**{total} / {limit}**" in readme
    assert f"| margin | | | | | {MARGIN} |" in readme
