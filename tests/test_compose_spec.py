"""docker-compose.yml agrees with the service specs (services/*/service.toml).

Compose is written by hand for readability; this test is what keeps it from drifting: every
spec'd service is in compose with the spec's command, CPU, memory, stop grace period, port,
health path and task count, external services are published through a load balancer set up
like their target group, internal ones answer on their Cloud Map name, and a scheduled service
consumes the firings queue its own clock feeds.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from api import gunicorn_conf
from suite_contract.spec import EnvironmentNames, Exposure, ScheduleTrigger, ServiceSpec, load_specs

ROOT = Path(__file__).resolve().parent.parent
SPECS = load_specs(ROOT)
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _extended(services: dict[str, Any]) -> dict[str, Any]:
    """Each service as compose runs it: ``extends: NAME`` is NAME's keys under its own."""
    return {
        name: services[service["extends"]] | service if "extends" in service else service
        for name, service in services.items()
    }


SERVICES: dict[str, Any] = _extended(COMPOSE["services"])
# Replicas per service on a laptop's two cores, unless {NAME}_REPLICAS says otherwise.
LAPTOP_REPLICAS = 2


def seconds(value: str) -> int:
    assert value.endswith("s"), f"stop_grace_period {value!r} should be in seconds"
    return int(value[:-1])


@pytest.fixture(params=sorted(SPECS), ids=str)
def spec(request: pytest.FixtureRequest) -> ServiceSpec:
    return SPECS[request.param]


def test_every_spec_has_a_compose_service(spec: ServiceSpec) -> None:
    assert spec.name in SERVICES, f"docker-compose.yml lacks the service {spec.name!r}"


def test_resources_and_shutdown_mirror_the_spec(spec: ServiceSpec) -> None:
    service = SERVICES[spec.name]
    assert float(service["cpus"]) == spec.task.cpu / 1024
    assert service["mem_limit"] == f"{spec.task.memory}m"
    assert seconds(service["stop_grace_period"]) == spec.task.stop_timeout


def test_image_build_command_and_health(spec: ServiceSpec) -> None:
    service = SERVICES[spec.name]
    assert service["build"]["args"]["SERVICE"] == spec.name
    assert service.get("command", [spec.name]) == spec.command
    environment = service["environment"]
    assert environment["SERVICE_NAME"] == spec.name
    if spec.port is not None:
        assert int(environment["PORT"]) == spec.port
        assert environment["HEALTH_PATH"] == spec.health_path


def test_scheduled_services_run_the_firings_their_own_clock_sends(spec: ServiceSpec) -> None:
    environment = SERVICES[spec.name]["environment"]
    if not isinstance(spec.trigger, ScheduleTrigger):
        assert "FIRINGS_QUEUE_URL" not in environment
        return
    # The queue compose/bootstrap.py creates (the infra's name for it); EventBridge Scheduler's
    # part, the clock, is APScheduler in the process.
    names = EnvironmentNames(environment["APP_NAME"], environment["APP_ENV"])
    queue_url = environment["FIRINGS_QUEUE_URL"]
    assert queue_url.startswith(environment["AWS_ENDPOINT_URL"])
    assert queue_url.rsplit("/", 1)[1] == names.firings_queue(spec.name)
    assert environment["LOCAL_CLOCK"] == "true"


def test_no_service_is_published_but_through_its_load_balancer(spec: ServiceSpec) -> None:
    assert SERVICES[spec.name].get("ports", []) == []
    if spec.exposure is Exposure.EXTERNAL:
        published = SERVICES[f"{spec.name}-lb"]["ports"][0]
        assert published.rsplit(":", 1)[-1] == str(spec.port)


def test_replicas_are_the_spec_count_capped_for_a_laptop(spec: ServiceSpec) -> None:
    """``{NAME}_REPLICAS`` overrides; without it the spec's count, at most two (2 cores)."""
    replicas = SERVICES[spec.name].get("deploy", {}).get("replicas", 1)
    count = min(spec.task.desired_count, LAPTOP_REPLICAS)
    if spec.task.desired_count > 1:
        variable = spec.name.upper().replace("-", "_") + "_REPLICAS"
        assert replicas == f"${{{variable}:-{count}}}"
    else:
        assert replicas == count


@pytest.mark.parametrize(
    "spec",
    [spec for spec in SPECS.values() if spec.exposure is Exposure.EXTERNAL],
    ids=lambda spec: spec.name,
)
def test_the_load_balancer_mirrors_the_target_group(spec: ServiceSpec) -> None:
    lb = SERVICES[f"{spec.name}-lb"]
    assert lb["environment"] == spec.local_load_balancer()
    assert seconds(lb["stop_grace_period"]) == spec.task.stop_timeout
    # The green colour is the same service under the name the green backend resolves.
    green = COMPOSE["services"][f"{spec.name}-green"]
    assert green["extends"] == spec.name
    assert green["profiles"] == ["deploy"]


def test_the_servers_keep_connections_alive_longer_than_the_load_balancer() -> None:
    assert gunicorn_conf.keepalive > SPECS["api"].load_balancer.idle_timeout_seconds
    # What is in flight when the drain ends gets the rest of the stop timeout.
    assert gunicorn_conf.graceful_timeout < SPECS["api"].task.stop_timeout


@pytest.mark.parametrize(
    "spec",
    [spec for spec in SPECS.values() if spec.exposure is Exposure.INTERNAL],
    ids=lambda spec: spec.name,
)
def test_internal_services_answer_on_their_cloud_map_name(spec: ServiceSpec) -> None:
    environment = SERVICES[spec.name]["environment"]
    name = f"{spec.name}.{environment['APP_ENV']}.{environment['APP_NAME']}.internal"
    assert name in SERVICES[spec.name]["networks"]["default"]["aliases"]


@pytest.mark.parametrize(
    "spec", [spec for spec in SPECS.values() if spec.calls], ids=lambda spec: spec.name
)
def test_callers_are_told_their_callees_names(spec: ServiceSpec) -> None:
    environment = SERVICES[spec.name]["environment"]
    for callee in spec.calls:
        aliases = SERVICES[callee]["networks"]["default"]["aliases"]
        variable = callee.upper().replace("-", "_")
        assert environment[f"{variable}__DISCOVERY_NAME"] in aliases
        assert environment[f"{variable}__ALB_URL"] == (
            f"http://{environment[f'{variable}__DISCOVERY_NAME']}:{SPECS[callee].port}"
        )


def test_services_run_hardened() -> None:
    for name in SPECS:
        service = SERVICES[name]
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name


def test_nothing_but_the_api_is_published_by_default() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    external = {f"{name}-lb" for name, spec in SPECS.items() if spec.exposure is Exposure.EXTERNAL}
    observability = {
        name for name, service in SERVICES.items() if "observability" in service.get("profiles", [])
    }
    assert published - observability == external


def test_every_image_is_overridable() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        assert image.startswith("${"), f"{name}: image {image!r} is fixed"
        assert ":-" in image, f"{name}: image {image!r} has no default"


def test_every_container_drops_every_capability_and_cannot_gain_privileges() -> None:
    for name, service in SERVICES.items():
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
    # Only the two that start as root get anything back, and only what their entrypoints use.
    added = {name: service["cap_add"] for name, service in SERVICES.items() if "cap_add" in service}
    assert set(added) == {"db-tls", "postgres"}
    assert "SYS_ADMIN" not in added["postgres"]
    assert "NET_ADMIN" not in added["postgres"]


def test_published_ports_bind_to_loopback_by_default() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            # The load balancer's runtime API: loopback always, on a port Docker picks.
            loopback = ("${BIND_ADDRESS:-127.0.0.1}:", "127.0.0.1::")
            assert port.startswith(loopback), f"{name}: {port}"
