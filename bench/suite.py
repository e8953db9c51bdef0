"""The composed suite the benchmarks load: ``docker compose up --build --wait``, as a user runs it.

It has its own project name, API port and image tags, so a run never touches a suite a developer
already has up, nor the images the tests build. ``bench/compose.bench.yml`` adds loopback ports
for PostgreSQL and moto only. The other image variables (``PYTHON_IMAGE``, ``POSTGRES_IMAGE``,
``MOTO_IMAGE``) come from the environment like any compose run: where no public registry is
reachable, ``set -a; . .ci/compose.env; set +a`` first.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from servicekit.testing.moto import free_port
from suite_contract.spec import ServiceSpec, load_specs

__all__ = ["ROOT", "SERVICES", "Suite", "docker", "running_suite"]

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("api", "worker", "scheduler")
# Overridable so two checkouts on one machine can bench at once.
PROJECT = os.environ.get("BENCH_PROJECT", "ecs-suite-bench")
FILES = ("docker-compose.yml", "bench/compose.bench.yml")
# Names docker-compose.yml gives the application (APP_NAME, APP_ENV) and its queue.
APP = "suite"
QUEUE_PATH = "/123456789012/suite-development-jobs"


def docker(*args: str, env: dict[str, str] | None = None) -> str:
    """A docker CLI call's stdout; its stderr in the exception when it fails."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


class Suite:
    def __init__(self, project: str = PROJECT) -> None:
        self.project = project
        self.api_port = free_port()
        self.images = {service: f"{project}/{service}:local" for service in SERVICES}
        self.env = os.environ | {
            "COMPOSE_PROJECT_NAME": project,
            "API_PORT": str(self.api_port),
            # One task per service, as the figures before the local fleet were measured (the
            # end-to-end and memory rows are per task); the deploy row replaces these.
            "API_REPLICAS": "1",
            "WORKER_REPLICAS": "1",
            **{f"{service.upper()}_IMAGE": image for service, image in self.images.items()},
        }
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.specs: dict[str, ServiceSpec] = load_specs(ROOT)
        self._addresses: dict[tuple[str, int], str] = {}
        self._tokens: dict[str, str] = {}

    def compose(self, *args: str) -> str:
        files = [argument for name in FILES for argument in ("-f", str(ROOT / name))]
        return docker("compose", "--project-directory", str(ROOT), *files, *args, env=self.env)

    def up(self) -> None:
        self.down()
        started = time.monotonic()
        self.compose("build", "--quiet")
        built = time.monotonic()
        try:
            self.compose("up", "--detach", "--wait", "--wait-timeout", "300")
        except RuntimeError:
            print(self.compose("logs", "--no-color", "--tail", "30")[-6000:], file=sys.stderr)
            self.down()
            raise
        print(
            f"suite {self.project}: images built in {built - started:.0f} s, every service "
            f"healthy {time.monotonic() - built:.1f} s after `up`",
            flush=True,
        )

    def down(self) -> None:
        self._addresses.clear()
        self._tokens.clear()
        # --profile deploy: the api's other colour, when a deploy left it serving.
        self.compose(
            "--profile", "deploy", "down", "--volumes", "--remove-orphans", "--timeout", "10"
        )

    def token(self, principal: str) -> str:
        """A bearer token for ``principal`` from the suite's issuer, as ``make token`` gets one
        (one per principal: an hour's lifetime outlasts any benchmark)."""
        if principal not in self._tokens:
            answer = self.compose(
                "exec", "-T", "issuer", "issuer", "token", "--principal", principal
            )
            self._tokens[principal] = answer.splitlines()[-1]
        return self._tokens[principal]

    def container(self, service: str) -> str:
        """The service's first container (a service may run several: ``--scale``)."""
        return self.compose("ps", "--quiet", service).split()[0]

    def address(self, service: str, port: int) -> str:
        """``127.0.0.1:NNNN``: where the host reaches ``service``'s ``port``."""
        if (service, port) not in self._addresses:
            self._addresses[service, port] = self.compose("port", service, str(port)).strip()
        return self._addresses[service, port]

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    @property
    def database(self) -> str:
        """The suite's database as its superuser, for reading job timestamps."""
        host, port = self.address("postgres", 5432).rsplit(":", 1)
        password = self.env.get("POSTGRES_PASSWORD", "postgres-local-only")
        return f"host={host} port={port} dbname={APP} user=postgres password={password}"

    @property
    def queue_url(self) -> str:
        return f"http://{self.address('moto', 5000)}{QUEUE_PATH}"

    def environment(self, service: str) -> list[str]:
        """The environment compose gave ``service``'s container (KEY=value lines)."""
        inspected = json.loads(docker("inspect", self.container(service)))
        return list(inspected[0]["Config"]["Env"])


@contextlib.contextmanager
def running_suite() -> Iterator[Suite]:
    suite = Suite()
    suite.up()
    try:
        yield suite
    finally:
        suite.down()
