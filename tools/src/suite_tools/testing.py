"""Real components for the tools' tests: a throwaway workspace, a local registry, ``suite`` runs.

The registry is Debian's ``docker-registry`` (the CNCF distribution registry) on a loopback
port with htpasswd auth, so pushes go through real registry authentication; the Docker engine
treats 127.0.0.0/8 registries as insecure (plain HTTP) by default.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, TextIO

from servicekit import aws
from servicekit.testing.moto import free_port
from servicekit.testing.polling import wait_until
from suite_contract.spec import EnvironmentNames
from suite_tools.cli import main

__all__ = [
    "BASE_IMAGE",
    "BlueGreenService",
    "DenyingProxy",
    "DeployedSuite",
    "LocalRegistry",
    "Run",
    "Workspace",
    "make_workspace",
    "moto_state",
    "run_suite",
]

BASE_IMAGE = os.environ.get("SUITE_TEST_BASE_IMAGE", "local/python-base:bookworm")

# One root Dockerfile for every service, like the suite's, but tiny: it needs BuildKit
# (RUN --mount) as the real one does, and the image says which service it is.
DOCKERFILE = """\
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ARG SERVICE
COPY services/${SERVICE}/message.txt /srv/message.txt
RUN --mount=type=cache,target=/root/.cache echo "${SERVICE}" >/srv/name
CMD ["cat", "/srv/name", "/srv/message.txt"]
"""

DOCKERIGNORE = """\
**
!services/*/message.txt
"""

SERVICE_TOML = """\
name = "{name}"
command = ["{name}"]

[task]
cpu = 256
memory = 512
desired_count = 1

[trigger]
kind = "http"
"""


@dataclass(frozen=True)
class Workspace:
    root: Path
    sha: str


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - git, with our own arguments
        [_binary("git"), "-c", "user.name=tests", "-c", "user.email=tests@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def make_workspace(root: Path, services: tuple[str, ...] = ("alpha", "beta")) -> Workspace:
    """A committed repository shaped like the suite (its own git repository, in ``root``)."""
    (root / "services").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "throwaway"\nversion = "0"\n')
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / ".dockerignore").write_text(DOCKERIGNORE)
    (root / "README.md").write_text("not in the images\n")
    for name in services:
        folder = root / "services" / name
        folder.mkdir()
        (folder / "service.toml").write_text(SERVICE_TOML.format(name=name))
        (folder / "message.txt").write_text(f"{name} says hello\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "throwaway")
    return Workspace(root, _git(root, "rev-parse", "HEAD"))


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1 with one htpasswd user."""

    def __init__(self, folder: Path, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.host = f"127.0.0.1:{free_port()}"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        """Why the registry cannot run here, or None."""
        if shutil.which("docker-registry") and shutil.which("htpasswd"):
            return None
        return "docker-registry or htpasswd missing (tools/tests/setup.sh installs them)"

    def start(self) -> None:
        folder = self._folder
        folder.mkdir(parents=True, exist_ok=True)
        # bcrypt is the only scheme the registry accepts; -i: the password never is an argument.
        subprocess.run(  # noqa: S603 - htpasswd, with our own arguments
            [_binary("htpasswd"), "-B", "-i", "-c", str(folder / "htpasswd"), self.username],
            input=self.password.encode(),
            check=True,
            capture_output=True,
        )
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: '{folder / 'data'}'}}}}\n"
            f"http: {{addr: '{self.host}', secret: {secrets.token_hex(16)}}}\n"
            f"auth: {{htpasswd: {{realm: tests, path: '{folder / 'htpasswd'}'}}}}\n"
        )
        log = folder / "registry.log"
        with log.open("wb") as sink:
            self._process = subprocess.Popen(  # noqa: S603 - the registry, our own config
                [_binary("docker-registry"), "serve", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        process = self._process

        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
            return bool(self.get("/v2/", auth=False)[0])  # any status: 401 is expected

        wait_until(answering, 15, f"docker-registry to answer on {self.host}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def get(self, path: str, *, auth: bool = True, accept: str = "") -> tuple[int, dict[str, str]]:
        """(status, headers) of a GET; status 0 while nothing listens."""
        request = urllib.request.Request(f"http://{self.host}{path}")
        if auth:
            request.add_header("Authorization", _basic(self.username, self.password))
        if accept:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers)
        except OSError:
            return 0, {}


class DenyingProxy:
    """A registry front that reads like ECR under a repository policy denying pushes.

    Reads (the engine's login check, blob existence checks) pass through to the registry; the
    first write, the upload that ``ecr:InitiateLayerUpload`` authorizes, gets ECR's answer to a
    denied action: 403 with a DENIED error naming the action and the repository.
    """

    def __init__(self, upstream: str) -> None:
        handler = _denying_handler(upstream)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


DENIED_BODY = (
    b'{"errors":[{"code":"DENIED","message":"User: arn:aws:sts::123456789012:assumed-role/'
    b"ci/push is not authorized to perform: ecr:InitiateLayerUpload on resource: "
    b"arn:aws:ecr:eu-west-1:123456789012:repository/t/alpha with an explicit deny in a "
    b'resource-based policy"}]}'
)


def _denying_handler(upstream: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            connection = http.client.HTTPConnection(upstream, timeout=10)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection.request(self.command, self.path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            connection.close()

        def _deny(self) -> None:
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(DENIED_BODY)))
            self.end_headers()
            self.wfile.write(DENIED_BODY)

        do_GET = do_HEAD = _relay
        do_POST = do_PUT = do_PATCH = _deny

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


class _ThisThread(io.StringIO):
    """Collects what the calling thread writes; other threads' writes (the in-process moto
    server's) go on to where they went before."""

    def __init__(self, elsewhere: TextIO) -> None:
        super().__init__()
        self.thread, self.elsewhere = threading.current_thread(), elsewhere

    def write(self, text: str) -> int:
        if threading.current_thread() is self.thread:
            return super().write(text)
        return self.elsewhere.write(text)


def run_suite(*args: str, env: Mapping[str, str] | None = None) -> Run:
    """``suite ARGS`` with ``env`` as its whole environment: exit code, stdout and stderr.

    In this process, through the same ``main`` as the console script (a child interpreter per
    call was most of the tools' test time): argparse's usage errors are exit code 2 as in a
    shell; an exception ``main`` does not turn into a one-line error fails the test with its
    traceback, where a user would have seen one.
    """
    stdout, stderr = _ThisThread(sys.stdout), _ThisThread(sys.stderr)
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(saved if env is None else env)
    aws.reset_clients()  # clients are cached per process: built again from this environment
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()
    return Run(code, stdout.getvalue(), stderr.getvalue())


class BlueGreenService:
    """What the infra leaves in an account for a CodeDeploy blue/green service, in moto: a
    cluster, a task definition family, a CODE_DEPLOY service behind a target group, and the
    CodeDeploy application and deployment group named ``{app}-{env}-{service}``.

    moto records deployments but never runs them; ``shift`` and ``finish`` play CodeDeploy's
    part (moto runs in this process, so its backend is reachable): the service runs the
    deployed revision once traffic has shifted, and the deployment ends with a status.
    """

    CONTAINER, PORT = "app", 8000

    def __init__(self, name: str = "api", *, prefix: str = "suite-dev") -> None:
        self.name, self.group, self.cluster = name, f"{prefix}-{name}", prefix
        self.ecs = aws.client("ecs")
        self.codedeploy = aws.client("codedeploy")
        ec2 = aws.client("ec2")
        self.vpc = vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        self.security_group = ec2.create_security_group(
            GroupName=self.group, Description=self.group, VpcId=vpc
        )["GroupId"]
        self.ecs.create_cluster(
            clusterName=self.cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"]
        )
        self.target_group = aws.client("elbv2").create_target_group(
            Name=f"{self.group}-blue"[:32],
            Protocol="HTTP",
            Port=self.PORT,
            VpcId=vpc,
            TargetType="ip",
        )["TargetGroups"][0]["TargetGroupArn"]
        first = self.register("bootstrap")
        self.ecs.create_service(
            cluster=self.cluster,
            serviceName=name,
            taskDefinition=first,
            desiredCount=3,
            deploymentController={"type": "CODE_DEPLOY"},
            loadBalancers=[
                {
                    "targetGroupArn": self.target_group,
                    "containerName": self.CONTAINER,
                    "containerPort": self.PORT,
                }
            ],
            platformVersion="LATEST",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [self.subnet],
                    "securityGroups": [self.security_group],
                    "assignPublicIp": "DISABLED",
                }
            },
        )
        self.codedeploy.create_application(applicationName=self.group, computePlatform="ECS")
        self.codedeploy.create_deployment_group(
            applicationName=self.group,
            deploymentGroupName=self.group,
            serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
            deploymentConfigName="CodeDeployDefault.ECSCanary10Percent5Minutes",
            ecsServices=[{"serviceName": name, "clusterName": self.cluster}],
            deploymentStyle={
                "deploymentType": "BLUE_GREEN",
                "deploymentOption": "WITH_TRAFFIC_CONTROL",
            },
        )

    def register(self, image_digest: str) -> str:
        """A new revision of the family, as ``cdk deploy`` registers one for a new digest."""
        registered = self.ecs.register_task_definition(
            family=self.group,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="512",
            memory="1024",
            containerDefinitions=[
                {
                    "name": self.CONTAINER,
                    "image": f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/suite/{self.name}"
                    f"@{image_digest}",
                    "portMappings": [{"containerPort": self.PORT}],
                }
            ],
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def running(self) -> str:
        found = self.ecs.describe_services(cluster=self.cluster, services=[self.name])
        return str(found["services"][0]["taskDefinition"])

    def deployments(self) -> list[dict[str, Any]]:
        ids = self.codedeploy.list_deployments(
            applicationName=self.group, deploymentGroupName=self.group
        )["deployments"]
        return [self.codedeploy.get_deployment(deploymentId=i)["deploymentInfo"] for i in ids]

    def appspec(self, deployment: dict[str, Any]) -> dict[str, Any]:
        return dict(json.loads(deployment["revision"]["appSpecContent"]["content"]))

    def shift(self, deployment_id: str) -> None:
        """The traffic has moved: the deployment's revision runs, the old one bakes."""
        self._deployment(deployment_id).status = "InProgress"
        target = self.appspec(
            self.codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        )
        properties = target["Resources"][0]["TargetService"]["Properties"]
        self.ecs.update_service(
            cluster=self.cluster, service=self.name, taskDefinition=properties["TaskDefinition"]
        )

    def finish(self, deployment_id: str, status: str) -> None:
        """The deployment ends with ``status``; one that succeeded has shifted the traffic."""
        if status == "Succeeded":
            self.shift(deployment_id)
        self._deployment(deployment_id).status = status

    def _deployment(self, deployment_id: str) -> Any:
        from moto.backends import get_backend  # noqa: PLC0415 - only where moto is in-process

        backend = get_backend("codedeploy")["123456789012"][os.environ["AWS_REGION"]]
        return backend.deployments[deployment_id]


def _fix_moto_task_networking() -> None:
    """moto 5.2's RunTask with awsvpc networking reads ``private_dns_name`` from a network
    interface that sets it only in some branches (AttributeError, a 500): give it a default,
    so tasks start with the network configuration the infra's services pass."""
    from moto.ec2.models.elastic_network_interfaces import (  # noqa: PLC0415
        NetworkInterface,
    )

    if not hasattr(NetworkInterface, "private_dns_name"):
        NetworkInterface.private_dns_name = ""


def _services_on_fargate(cluster: str) -> None:
    """moto 5.2 keeps no capacity provider strategy on a service and calls it launch type EC2,
    whose RunTask needs container instances: say FARGATE, which the strategies here mean, so a
    one-off task of a service's settings starts as on ECS."""
    from moto.backends import get_backend  # noqa: PLC0415 - only where moto is in-process

    backend = get_backend("ecs")["123456789012"][os.environ["AWS_REGION"]]
    for service in backend.services.values():
        if service.cluster_name == cluster:
            service.launch_type = "FARGATE"


def moto_state(model: str, *, manual: bool) -> None:
    """moto's state manager: ``manual`` holds ``model`` (e.g. ``ecs::task``) in its state
    until told otherwise; else each describe advances it."""
    transition = (
        {"progression": "manual", "times": 1_000_000} if manual else {"progression": "immediate"}
    )
    body = json.dumps({"model_name": model, "transition": transition}).encode()
    request = urllib.request.Request(  # noqa: S310 - moto on loopback
        f"{os.environ['AWS_ENDPOINT_URL']}/moto-api/state-manager/set-transition",
        data=body,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


class DeployedSuite:
    """What the infra leaves in an account for the repository's three specs, in moto.

    The api is a :class:`BlueGreenService`; the worker a rolling service on the Fargate
    providers with its queue and DLQ (redrive policy as the platform sets it); the scheduler a
    rolling service of one task with its firings queue and DLQ, an EventBridge Scheduler group
    with one schedule per job whose target is the one the infra writes (the firings queue, the
    firing with the scheduled-time placeholder, the schedules' DLQ); a log group per service.
    Names are the infra's (``suite_contract.spec.EnvironmentNames``).
    """

    JOBS: ClassVar[dict[str, str]] = {
        "outbox-sweep": "rate(1 minute)",
        "purge-finished": "cron(0 3 * * ? *)",
    }

    def __init__(self, prefix: str = "suite-dev") -> None:
        _fix_moto_task_networking()
        self.prefix = prefix
        app, env = prefix.split("-", 1)
        self.api = BlueGreenService("api", prefix=prefix)
        self.ecs, self.cluster = self.api.ecs, self.api.cluster
        self.logs = aws.client("logs")
        self.sqs = aws.client("sqs")
        self.network = {
            "awsvpcConfiguration": {
                "subnets": [self.api.subnet],
                "securityGroups": [self.api.security_group],
                "assignPublicIp": "DISABLED",
            }
        }
        # Running as it should: moto reports a new service's tasks as pending until told.
        self.ecs.update_service(cluster=self.cluster, service="api", desiredCount=3)
        self.worker_revisions = [self.register("worker"), self.register("worker")]
        self.ecs.create_service(
            cluster=self.cluster,
            serviceName="worker",
            taskDefinition=self.worker_revisions[-1],
            desiredCount=2,
            capacityProviderStrategy=[
                {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                {"capacityProvider": "FARGATE_SPOT", "weight": 3},
            ],
            networkConfiguration=self.network,
        )
        self.ecs.update_service(cluster=self.cluster, service="worker", desiredCount=2)
        dlq = self.sqs.create_queue(QueueName=f"{prefix}-jobs-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.queue = self.sqs.create_queue(
            QueueName=f"{prefix}-jobs",
            Attributes={
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}
                )
            },
        )["QueueUrl"]
        self.dlq = dlq
        names = EnvironmentNames(app, env)
        self.firings, self.firings_dlq = (
            self.sqs.create_queue(QueueName=name)["QueueUrl"]
            for name in (
                names.firings_queue("scheduler"),
                f"{names.firings_queue('scheduler')}-dlq",
            )
        )
        schedules_dlq = self.sqs.create_queue(
            QueueName=names.schedules_dead_letter_queue("scheduler")
        )["QueueUrl"]
        arns = {
            url: self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            for url in (self.firings, schedules_dlq)
        }
        self.ecs.create_service(
            cluster=self.cluster,
            serviceName="scheduler",
            taskDefinition=self.register("scheduler"),
            desiredCount=1,
            capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}],
            networkConfiguration=self.network,
        )
        self.ecs.update_service(cluster=self.cluster, service="scheduler", desiredCount=1)
        _services_on_fargate(self.cluster)
        scheduler = aws.client("scheduler")
        group = names.resource("scheduler")
        scheduler.create_schedule_group(Name=group)
        for job, expression in self.JOBS.items():
            scheduler.create_schedule(
                Name=job,
                GroupName=group,
                ScheduleExpression=expression,
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                Target={
                    "Arn": arns[self.firings],
                    "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
                    "Input": json.dumps({"job": job, "slot": "<aws.scheduler.scheduled-time>"}),
                    "DeadLetterConfig": {"Arn": arns[schedules_dlq]},
                    "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 900},
                },
            )
        for service in ("api", "worker", "scheduler"):
            self.logs.create_log_group(logGroupName=f"/{app}/{env}/{service}")
            self.logs.create_log_stream(
                logGroupName=f"/{app}/{env}/{service}", logStreamName=f"{service}/app/1"
            )

    def register(self, service: str) -> str:
        """A revision of ``{prefix}-{service}`` (moto needs a container memory to run it)."""
        registered = self.ecs.register_task_definition(
            family=f"{self.prefix}-{service}",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[{"name": "app", "image": f"suite/{service}", "memory": 512}],
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def log(self, service: str, *lines: str | dict[str, Any]) -> None:
        """Lines in the service's log group, as the awslogs driver writes them (now)."""
        app, env = self.prefix.split("-", 1)
        now = int(time.time() * 1000)
        self.logs.put_log_events(
            logGroupName=f"/{app}/{env}/{service}",
            logStreamName=f"{service}/app/1",
            logEvents=[
                {"timestamp": now, "message": line if isinstance(line, str) else json.dumps(line)}
                for line in lines
            ],
        )

    def run_worker_task(self, provider: str) -> str:
        started = self.ecs.run_task(
            cluster=self.cluster,
            taskDefinition=self.worker_revisions[-1],
            capacityProviderStrategy=[{"capacityProvider": provider, "weight": 1}],
            networkConfiguration=self.network,
            group="service:worker",
        )
        return str(started["tasks"][0]["taskArn"])

    def worker_service(self) -> dict[str, Any]:
        found = self.ecs.describe_services(cluster=self.cluster, services=["worker"])
        return dict(found["services"][0])
