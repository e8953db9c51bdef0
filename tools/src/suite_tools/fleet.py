"""``suite deploy --local``: the compose suite's services replaced the way ECS deploys them.

Each service is rebuilt (``docker compose build``) and rolled out as its spec's ``[deployment]``
says:

- blue/green (the api): the other colour's fleet (compose service ``{name}-green`` or ``{name}``)
  is started with the new image, as many tasks as serve now; its load balancer (``{name}-lb``,
  HAProxy) must find every one healthy by its own checks, as the green target group must; then
  the production route moves to it (the runtime API's ``set map``), the old colour's targets
  drain (``state drain``) until they have nothing in flight or the deregistration delay is over,
  and the old fleet is stopped (SIGTERM; gunicorn finishes what it has) and removed.
- rolling (the worker): new tasks are started while the count stays within ``max_percent`` of
  the desired count, and old ones stopped (SIGTERM: the worker stops taking messages and drains)
  while the healthy count stays at or above ``min_healthy_percent``.

If the new tasks never become healthy, or one exits, they are removed, the image tag is pointed
back at the running image and the command fails with the reason: the old fleet never stopped
serving (ECS's circuit breaker, CodeDeploy's rollback).
"""

from __future__ import annotations

import math
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import docker
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from suite_contract.spec import DeploymentStrategy, ServiceSpec
from suite_tools.errors import CommandError
from suite_tools.local import GREEN, docker_binary

__all__ = ["Balancer", "deploy"]

# Where HAProxy's runtime API listens in the load balancer's container (compose/haproxy).
RUNTIME_API_PORT = 9999
LIVE_MAP = "/usr/local/etc/haproxy/live.map"
# ECS's health_check_grace_period for served services (infra): how long new tasks may take to
# start before their failing checks count.
START_GRACE = 60.0
POLL = 1.0

Progress = Callable[[str], None]


def _compose(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(  # noqa: S603 - docker, our own arguments
        [docker_binary(), "compose", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(
            f"docker compose {' '.join(args[:2])}: {done.stderr.strip()[-1500:] or 'failed'}"
        )
    return done.stdout


class Balancer:
    """A load balancer's HAProxy runtime API: one command per connection, as socat would."""

    def __init__(self, service: str, timeout: float = 5.0) -> None:
        published = _compose("port", service, str(RUNTIME_API_PORT)).strip()
        if not published:
            raise CommandError(f"{service} publishes no runtime API (port {RUNTIME_API_PORT})")
        host, port = published.rsplit(":", 1)
        self.address, self.timeout = (host, int(port)), timeout

    def command(self, line: str) -> str:
        try:
            with socket.create_connection(self.address, timeout=self.timeout) as connection:
                connection.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := connection.recv(65536):
                    chunks.append(chunk)
        except OSError as error:
            raise CommandError(
                f"load balancer's runtime API {line.split(maxsplit=1)[0]!r}: {error}"
            ) from error
        return b"".join(chunks).decode()

    def servers(self, backend: str, *, empty: bool = False) -> list[dict[str, str]]:
        """The backend's targets (``show stat``'s CSV rows); with ``empty``, the slots of
        ``server-template`` no container fills too."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return [
            row
            for row in rows
            if row["pxname"] == backend
            and row["svname"] not in ("FRONTEND", "BACKEND")
            and (empty or row.get("addr"))
        ]

    def ready(self, backend: str) -> None:
        """Every slot of the backend back in service (the previous deploy drained them)."""
        for row in self.servers(backend, empty=True):
            self.command(f"set server {backend}/{row['svname']} state ready")

    def live(self) -> str:
        for line in self.command(f"show map {LIVE_MAP}").splitlines():
            _, key, value = [*line.split(), "", "", ""][:3]
            if key == "live":
                return value
        raise CommandError(f"the load balancer's {LIVE_MAP} names no live colour")

    def route(self, colour: str) -> None:
        answer = self.command(f"set map {LIVE_MAP} live {colour}").strip()
        if answer:
            raise CommandError(f"the load balancer refused the traffic shift: {answer}")

    def drain(self, backend: str, server: str) -> None:
        self.command(f"set server {backend}/{server} state drain")


@dataclass
class Fleet:
    """One compose service's running containers, as ECS sees a service's tasks."""

    service: str
    client: docker.DockerClient
    project: str

    def containers(self, *, every: bool = False) -> list[Container]:
        labels = [
            f"com.docker.compose.project={self.project}",
            f"com.docker.compose.service={self.service}",
        ]
        found = self.client.containers.list(all=every, filters={"label": labels})
        return sorted(
            found, key=lambda item: int(item.labels["com.docker.compose.container-number"])
        )

    def running_and_stopped(self) -> tuple[list[Container], list[Container]]:
        """The service's containers: those running, and those that exited or keep restarting."""
        every = self.containers(every=True)
        running = [container for container in every if container.status == "running"]
        return running, [container for container in every if container.status != "running"]

    def scale(self, count: int) -> None:
        """At least ``count`` containers: new ones from the image the tag names now."""
        _compose(
            "up",
            "--detach",
            "--no-deps",
            "--no-recreate",
            "--scale",
            f"{self.service}={count}",
            self.service,
        )

    def stop(self, containers: Sequence[Container], timeout: int) -> None:
        """SIGTERM to all at once, SIGKILL after ``timeout`` (ECS's stopTimeout); then removed."""
        if not containers:
            return
        ids = [str(container.id) for container in containers]
        for command in (["stop", "--time", str(timeout), *ids], ["rm", *ids]):
            done = subprocess.run(  # noqa: S603 - docker, our own arguments
                [docker_binary(), *command],
                capture_output=True,
                text=True,
                timeout=timeout + 60,
                check=False,
            )
            if done.returncode != 0:
                raise CommandError(f"docker {command[0]}: {done.stderr.strip()[-1000:]}")


def _health(container: Container) -> tuple[str, str]:
    """healthy, starting or failed, and why: a task that exits, restarts or fails its health
    check has failed (ECS's circuit breaker counts it)."""
    try:
        container.reload()
    except NotFound:
        return "failed", "removed"
    state, restarts = container.attrs["State"], container.attrs.get("RestartCount", 0)
    if not state["Running"]:
        return "failed", f"exited with status {state.get('ExitCode')}"
    if state.get("Restarting") or restarts:
        return "failed", f"restarted {restarts} time(s): it exits"
    health = state.get("Health") or {"Status": "healthy"}
    if health["Status"] == "unhealthy":
        last = (health.get("Log") or [{}])[-1]
        output = " ".join(str(last.get("Output", "")).split())[-200:]
        return "failed", f"failed its health check ({output or 'no output'})"
    return str(health["Status"]), ""


def _wait(what: str, ready: Callable[[], str | None], deadline: float) -> None:
    """Poll ``ready`` (None: done; else what is awaited) until done, failed or the deadline."""
    while True:
        waiting = ready()
        if waiting is None:
            return
        if waiting.startswith("failed") or time.monotonic() > deadline:
            raise CommandError(f"{what} never became healthy: {waiting}")
        time.sleep(POLL)


def _tasks_healthy(containers: Sequence[Container]) -> str | None:
    states = {str(container.name): _health(container) for container in containers}
    failed = [f"{name} {why}" for name, (state, why) in states.items() if state == "failed"]
    if failed:
        return "failed: " + "; ".join(failed)
    starting = [name for name, (state, _) in states.items() if state != "healthy"]
    return f"{', '.join(starting)} starting" if starting else None


def _nothing_running(service: str, project: str) -> str:
    return (
        f"no {service} container is running in compose project {project} (make up; "
        "COMPOSE_PROJECT_NAME names another)"
    )


def _image_of(containers: Sequence[Container]) -> str:
    return str(containers[0].attrs["Image"])


def _restore_tag(client: docker.DockerClient, containers: Sequence[Container], tag: str) -> None:
    """Point the service's image tag back at what the old fleet runs (the previous revision)."""
    repository, _, name = tag.rpartition(":")
    client.images.get(_image_of(containers)).tag(repository, name)


def blue_green(
    spec: ServiceSpec, client: docker.DockerClient, project: str, progress: Progress
) -> None:
    colours = {
        "blue": Fleet(spec.name, client, project),
        "green": Fleet(spec.name + GREEN, client, project),
    }
    running = {colour: fleet.containers() for colour, fleet in colours.items()}
    serving = [colour for colour, containers in running.items() if containers]
    if not serving:
        raise CommandError(_nothing_running(spec.name, project))
    balancer = Balancer(f"{spec.name}-lb")
    old = serving[0] if len(serving) == 1 else balancer.live()
    new = "green" if old == "blue" else "blue"
    # A task of the old fleet that died counts, as in ECS's desired count: the new fleet is whole.
    count = len(colours[old].containers(every=True))
    tag = str(running[old][0].attrs["Config"]["Image"])
    balancing, stop_timeout = spec.load_balancer, spec.task.stop_timeout
    # Leftovers of an earlier deploy: the new colour starts empty, its targets undrained.
    colours[new].stop(colours[new].containers(every=True), stop_timeout)
    balancer.ready(new)

    progress(
        f"{spec.name}: blue/green, {count} tasks: starting the {new} fleet ({colours[new].service})"
    )
    colours[new].scale(count)
    started = colours[new].containers()
    checks = balancing.health_interval_seconds * (balancing.healthy_threshold + 1)
    deadline = time.monotonic() + START_GRACE + checks

    def in_service() -> str | None:
        waiting = _tasks_healthy(started)
        if waiting is not None:
            return waiting
        up = [
            row
            for row in balancer.servers(new)
            if row["status"] == "UP" and "L7OK" in row["check_status"]
        ]
        return (
            None
            if len(up) >= count
            else f"{len(up)}/{count} targets passing the load balancer's checks"
        )

    try:
        _wait(f"the {new} fleet of {spec.name}", in_service, deadline)
    except CommandError as error:
        progress(
            f"{spec.name}: rolling back: {error}; the {new} fleet is removed, the {old} one "
            "keeps serving"
        )
        colours[new].stop(colours[new].containers(every=True), stop_timeout)
        _restore_tag(client, running[old], tag)
        raise CommandError(f"{spec.name} rolled back: {error}") from error
    progress(
        f"{spec.name}: {count} {new} targets healthy; production traffic shifted {old} -> {new}"
    )
    balancer.route(new)

    targets = balancer.servers(old)
    for row in targets:
        balancer.drain(old, row["svname"])
    delay = balancing.deregistration_delay_seconds
    progress(f"{spec.name}: draining the {old} targets (deregistration delay {delay} s)")
    drain_start = time.monotonic()
    # As an ALB: a draining target is let go early once nothing is in flight on it; never before
    # a poll interval, so a request routed just before the shift is counted by then.
    time.sleep(min(POLL, delay))
    while (in_flight := sum(int(row["scur"] or 0) for row in balancer.servers(old))) and (
        time.monotonic() < drain_start + delay
    ):
        time.sleep(POLL)
    progress(
        f"{spec.name}: drained after {time.monotonic() - drain_start:.1f} s ({in_flight} requests "
        f"still in flight); stopping the {old} fleet (SIGTERM; {stop_timeout} s to finish)"
    )
    colours[old].stop(colours[old].containers(every=True), stop_timeout)
    progress(f"{spec.name}: deployed; {count} tasks of {_image_of(started)[:19]} serve ({new})")


def rolling(
    spec: ServiceSpec, client: docker.DockerClient, project: str, progress: Progress
) -> None:
    fleet = Fleet(spec.name, client, project)
    old, stopped = fleet.running_and_stopped()
    if not old:
        raise CommandError(_nothing_running(spec.name, project))
    tag = str(old[0].attrs["Config"]["Image"])
    # A task that died (`docker kill` is a manual stop: no restart) still counts, as ECS's desired
    # count does: the new revision replaces it. Removed first, or `up --scale` would restart it
    # from the old image and count it as new.
    desired = len(old) + len(stopped)
    deployment, stop_timeout = spec.deployment, spec.task.stop_timeout
    if stopped:
        progress(f"{spec.name}: replacing {len(stopped)} stopped task(s) too")
        fleet.stop(stopped, stop_timeout)
    floor = math.ceil(desired * deployment.min_healthy_percent / 100)
    ceiling = max(desired, desired * deployment.max_percent // 100)
    progress(
        f"{spec.name}: rolling, {desired} tasks: at least {floor} healthy, at most {ceiling} "
        "running"
    )
    old_ids = {container.id for container in old}
    new: list[Container] = []
    while old:
        room = min(ceiling - len(old) - len(new), desired - len(new))
        if room > 0:
            progress(f"{spec.name}: starting {room} new task(s)")
            fleet.scale(len(old) + len(new) + room)
            new = [item for item in fleet.containers() if item.id not in old_ids]
            deadline = time.monotonic() + START_GRACE
            try:
                _wait(f"the new {spec.name} tasks", partial(_tasks_healthy, list(new)), deadline)
            except CommandError as error:
                progress(f"{spec.name}: rolling back: {error}")
                fleet.stop(new, stop_timeout)
                _restore_tag(client, old, tag)
                fleet.scale(desired)
                raise CommandError(f"{spec.name} rolled back: {error}") from error
        stoppable = min(len(old), len(old) + len(new) - floor)
        if stoppable <= 0:
            raise CommandError(
                f"{spec.name}: min_healthy_percent {deployment.min_healthy_percent} and "
                f"max_percent {deployment.max_percent} leave no room to replace a task"
            )
        progress(f"{spec.name}: stopping {stoppable} old task(s) (SIGTERM: they drain first)")
        fleet.stop(old[:stoppable], stop_timeout)
        old = old[stoppable:]
    progress(f"{spec.name}: deployed; {len(new)} tasks of {_image_of(new)[:19]} run")


STRATEGIES = {DeploymentStrategy.BLUE_GREEN: blue_green, DeploymentStrategy.ROLLING: rolling}


def deploy(
    specs: Mapping[str, ServiceSpec], project: str, *, build: bool, progress: Progress
) -> None:
    """Build (unless told not to) and roll out each service, one after another."""
    if build:
        progress(f"building {', '.join(specs)}")
        _compose("build", "--quiet", *specs)
    try:
        client = docker.from_env(timeout=60)
    except DockerException as error:
        raise CommandError(f"no Docker engine: {error}") from error
    try:
        for spec in specs.values():
            STRATEGIES[spec.deployment.strategy](spec, client, project, progress)
    finally:
        client.close()
