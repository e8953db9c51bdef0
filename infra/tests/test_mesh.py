"""The service network: one security group per service, admitting only its load balancer and its
callers; a caller is told where its callee answers (Cloud Map's name, the internal ALB)."""

from __future__ import annotations

from typing import Any

from infra.testing import Assembly, container


def _group(reference: dict[str, Any]) -> str:
    return str(reference["Fn::GetAtt"][0])


def _ingress(assembly: Assembly) -> dict[str, set[tuple[str, int]]]:
    """Per security group of the platform: (source group or CIDR, port) of every ingress rule."""
    rules: dict[str, set[tuple[str, int]]] = {}
    groups = assembly.resources("platform", "AWS::EC2::SecurityGroup")
    for name, group in groups.items():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            source = rule.get("CidrIp") or _group(rule["SourceSecurityGroupId"])
            rules.setdefault(name, set()).add((source, rule["FromPort"]))
    for rule in assembly.resources("platform", "AWS::EC2::SecurityGroupIngress").values():
        properties = rule["Properties"]
        rules.setdefault(_group(properties["GroupId"]), set()).add(
            (_group(properties["SourceSecurityGroupId"]), properties["FromPort"])
        )
    return rules


def _named(assembly: Assembly, prefix: str) -> str:
    [name] = [
        name
        for name in assembly.resources("platform", "AWS::EC2::SecurityGroup")
        if name.startswith(prefix)
    ]
    return name


def test_each_task_admits_only_its_load_balancer_and_its_callers(assembly: Assembly) -> None:
    ingress = _ingress(assembly)
    api, worker, scheduler = (
        _named(assembly, f"Tasks{name}Sg") for name in ("Api", "Worker", "Scheduler")
    )
    api_alb, worker_alb, db = (
        _named(assembly, f"{name}Sg") for name in ("AlbApi", "AlbWorker", "Db")
    )
    assert ingress.get(api) == {(api_alb, 8000)}
    assert ingress.get(worker) == {(worker_alb, 8080), (api, 8080)}
    assert scheduler not in ingress  # nothing calls the scheduler
    assert ingress[worker_alb] == {(api, 8080)}  # only the caller, not every service
    rotation = _named(assembly, "RotationSg")
    assert ingress[db] == {(api, 5432), (worker, 5432), (scheduler, 5432), (rotation, 5432)}
    assert not assembly.resources("platform", "AWS::EC2::SecurityGroup").keys() & {"ServicesSg"}


def test_each_service_runs_with_its_own_group_only(assembly: Assembly) -> None:
    for service in ("api", "worker"):
        [ecs_service] = assembly.resources(service, "AWS::ECS::Service").values()
        groups = ecs_service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"][
            "SecurityGroups"
        ]
        assert len(groups) == 1
        assert f"Tasks{service.capitalize()}Sg" in str(groups[0])


def test_the_caller_is_told_where_the_callee_answers(assembly: Assembly) -> None:
    environment = {e["Name"]: e["Value"] for e in container(assembly, "api", "app")["Environment"]}
    assert environment["WORKER__DISCOVERY_NAME"] == "worker.dev.suite.internal"
    alb_url = environment["WORKER__ALB_URL"]
    assert alb_url["Fn::Join"][1][0] == "http://"
    assert "AlbWorker" in str(alb_url)
    assert alb_url["Fn::Join"][1][-1] == ":8080"
    worker = {e["Name"] for e in container(assembly, "worker", "app")["Environment"]}
    assert not any(name.endswith("__DISCOVERY_NAME") for name in worker)
    # The name is Cloud Map's multivalue A record of the worker service.
    assembly.template("worker").has_resource_properties(
        "AWS::ServiceDiscovery::Service",
        {
            "Name": "worker",
            "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 10}], "RoutingPolicy": "MULTIVALUE"},
        },
    )
