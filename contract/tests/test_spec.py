"""The service specs: the seed's figures, and clear errors for a bad spec."""

from pathlib import Path

import pytest

from suite_contract.spec import (
    BlueGreenController,
    CapacityProvider,
    DeploymentStrategy,
    Exposure,
    ServiceSpec,
    find_repository_root,
    load_spec,
    load_specs,
)

ROOT = find_repository_root(Path(__file__).parent)


def test_the_seed_figures() -> None:
    specs = load_specs(ROOT)
    figures = {
        name: (s.task.desired_count, s.task.cpu, s.task.memory, s.exposure, s.trigger.kind)
        for name, s in specs.items()
    }
    assert figures == {
        "api": (3, 512, 1024, Exposure.EXTERNAL, "http"),
        "worker": (2, 1024, 2048, Exposure.INTERNAL, "sqs"),
        "scheduler": (1, 256, 512, Exposure.NONE, "schedule"),
    }
    assert specs["api"].health_path == "/health"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("memory = 4096\n", "does not fit cpu 256"),
        ("cpu = 300\n", "is not a Fargate size"),
        ("bogus = 1\n", "bogus"),
    ],
)
def test_a_bad_spec_names_the_file_and_the_problem(
    tmp_path: Path, change: str, message: str
) -> None:
    text = (ROOT / "services/scheduler/service.toml").read_text()
    key = change.split(" = ", maxsplit=1)[0]
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
    index = lines.index("[task]") + 1
    lines.insert(index, change.rstrip())
    path = tmp_path / "service.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message) as raised:
        load_spec(path)
    assert str(path) in str(raised.value)


def test_the_infra_sections_of_the_three_services() -> None:
    specs = load_specs(ROOT)
    api, worker, scheduler = specs["api"], specs["worker"], specs["scheduler"]
    assert api.scaling is not None
    assert (api.scaling.min_count, api.scaling.max_count) == (3, 12)
    assert api.scaling.requests_per_task is not None
    assert [(c.provider, c.base) for c in api.capacity] == [
        (CapacityProvider.FARGATE, 2),
        (CapacityProvider.FARGATE_SPOT, 0),
    ]
    assert api.deployment.strategy is DeploymentStrategy.BLUE_GREEN
    assert api.deployment.controller is BlueGreenController.CODEDEPLOY
    assert worker.scaling is not None
    assert worker.scaling.backlog_per_task == 120  # 60 s at 2 messages per second
    assert worker.deployment.strategy is DeploymentStrategy.ROLLING
    assert scheduler.scaling is None
    assert all(spec.fargate for spec in specs.values())


_API = {
    "name": "svc",
    "command": ["svc"],
    "port": 8000,
    "health_path": "/health",
    "exposure": "internal",
    "task": {"cpu": 256, "memory": 512, "desired_count": 2},
    "trigger": {"kind": "http"},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"capacity": [{"provider": "FARGATE"}, {"provider": "EC2", "weight": 1}]},
            "mixes Fargate and EC2",
        ),
        (
            {
                "capacity": [
                    {"provider": "FARGATE", "base": 1},
                    {"provider": "FARGATE_SPOT", "base": 1},
                ]
            },
            "only one provider may have a base",
        ),
        ({"capacity": [{"provider": "FARGATE", "weight": 0}]}, "weight above 0"),
        ({"capacity": [{"provider": "FARGATE"}, {"provider": "FARGATE"}]}, "twice"),
        ({"scaling": {"min_count": 3, "max_count": 5}}, "outside scaling 3..5"),
        ({"scaling": {"min_count": 5, "max_count": 3}}, "above max_count"),
        (
            {
                "scaling": {
                    "min_count": 1,
                    "max_count": 3,
                    "acceptable_latency_seconds": 60,
                    "messages_per_second_per_task": 2,
                }
            },
            "needs an sqs trigger",
        ),
        (
            {"scaling": {"min_count": 1, "max_count": 3, "acceptable_latency_seconds": 60}},
            "go together",
        ),
        (
            {"exposure": "none", "deployment": {"strategy": "blue_green"}},
            "blue_green needs a load balancer",
        ),
        ({"deployment": {"codedeploy_config": "Linear"}}, "codedeploy_config"),
    ],
)
def test_infra_sections_refuse_what_ecs_would(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceSpec.model_validate(_API | change)


def test_a_scheduled_service_is_a_service_that_deploys_like_any() -> None:
    spec = _API | {
        "exposure": "none",
        "trigger": {"kind": "schedule", "registry": "x:registry"},
        "deployment": {"strategy": "rolling", "min_healthy_percent": 50},
    }
    assert ServiceSpec.model_validate(spec).deployment.min_healthy_percent == 50
    with pytest.raises(ValueError, match="run_command"):
        ServiceSpec.model_validate(spec | {"trigger": spec["trigger"] | {"run_command": ["x"]}})


def test_the_api_declares_its_edge_auth_and_pool() -> None:
    api = load_specs(ROOT)["api"]
    assert api.task.processes == 2
    assert api.database is not None
    assert api.database.pool_size == 5
    assert api.edge.max_body_bytes == 64 * 1024
    assert "/docs" in api.edge.private_paths
    assert api.auth is not None
    assert set(api.auth.scopes) == {"jobs:read", "jobs:write", "jobs:admin"}
    assert api.auth.clients == {"machine": ["jobs:read", "jobs:write"]}
    assert api.uses_database


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"exposure": "external", "auth": {"scopes": {"a": "x"}, "clients": {"c": ["b"]}}},
            r"auth client 'c' asks for undeclared scopes \['b'\]",
        ),
        ({"auth": {"scopes": {"a": "x"}}}, "needs exposure 'external'"),
        ({"edge": {"rate_window_seconds": 90}}, "rate_window_seconds"),
        ({"edge": {"requests_per_caller": 5}}, "requests_per_caller"),
        ({"database": {"pool_size": 0}}, "pool_size"),
        ({"task": {"cpu": 256, "memory": 512, "desired_count": 1, "processes": 0}}, "processes"),
    ],
)
def test_edge_auth_and_database_sections_refuse_what_aws_would(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceSpec.model_validate(_API | change)


def test_the_load_balancer_section_mirrors_the_alb_and_refuses_a_timeout_past_the_interval() -> (
    None
):
    balancing = load_specs(ROOT)["api"].load_balancer
    assert (
        balancing.health_interval_seconds,
        balancing.health_timeout_seconds,
        balancing.healthy_threshold,
        balancing.unhealthy_threshold,
        balancing.deregistration_delay_seconds,
        balancing.idle_timeout_seconds,
    ) == (15, 5, 2, 3, 30, 60)
    spec = load_specs(ROOT)["api"].model_dump(mode="json", exclude_none=True)
    spec["load_balancer"] = {"health_interval_seconds": 5, "health_timeout_seconds": 5}
    with pytest.raises(ValueError, match="health_timeout_seconds must be shorter"):
        ServiceSpec.model_validate(spec)
