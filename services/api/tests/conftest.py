"""Fixtures of the API's tests: moto (secret, queue, parameters), a migrated PostgreSQL database,
the local token issuer (``issuer``, real HTTP), the app in-process (``client``, sending a token
with ``jobs:read`` and ``jobs:write``) and the container's command as a process (``serve``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from issuer import Issuer, IssuerConfig, serving
from jobs import migrations
from servicekit import aws
from servicekit.testing import Database, MotoServer, wait_until
from servicekit.testing.moto import free_port
from suite_contract.spec import ServiceSpec, load_spec

SERVICE_DIR = Path(__file__).resolve().parents[1]
APP, ENV = "suite", "test"
CLIENT_ID = "jobs-test-client"
READ_WRITE = ("jobs:read", "jobs:write")


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """The local issuer on a loopback port: JWKS, tokens, rotation (``issuer.rotate()``)."""
    port = free_port()
    config = IssuerConfig(url=f"http://127.0.0.1:{port}", client_id=CLIENT_ID)
    with serving(Issuer(config), port) as running:
        yield running


def bearer_header(
    issuer: Issuer, principal: str = "alice", scopes: Sequence[str] = READ_WRITE
) -> dict[str, str]:
    """An ``Authorization`` header with a token the issuer signed."""
    return {"Authorization": f"Bearer {issuer.mint(principal, list(scopes))}"}


@pytest.fixture
def bearer(issuer: Issuer) -> Callable[..., dict[str, str]]:
    """``bearer(principal="alice", scopes=("jobs:read", "jobs:write"))``: a header with a token."""
    return lambda principal="alice", scopes=READ_WRITE: bearer_header(issuer, principal, scopes)


def load_service_spec() -> ServiceSpec:
    """``service.toml``: the only place the container's command is written."""
    return load_spec(SERVICE_DIR / "service.toml")


@pytest.fixture
def spec() -> ServiceSpec:
    return load_service_spec()


@dataclass
class ApiEnv:
    """What the API is pointed at, and the environment it reads."""

    database: Database
    secret_id: str
    queue_url: str

    def set_parameter(self, name: str, value: str) -> None:
        """A parameter under the API's Parameter Store path (``flags/accept_jobs``...)."""
        aws.client("ssm").put_parameter(
            Name=f"/{APP}/{ENV}/api/{name}", Value=value, Type="String", Overwrite=True
        )

    def queued_messages(self) -> list[dict[str, str]]:
        """Every message body on the queue (received and deleted)."""
        sqs = aws.client("sqs")
        bodies: list[dict[str, str]] = []
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


def prepare(database: Database, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> ApiEnv:
    """Migrate ``database``, put its secret and a queue in moto, and set the API's environment."""
    migrations.upgrade(database.conninfo())
    # One id per database: the process-wide secret cache outlives a test's moto state.
    secret_id = f"{APP}/{ENV}/db/{database.dbname}"
    aws.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps(database.rds_secret())
    )
    queue_url = aws.client("sqs").create_queue(QueueName="jobs")["QueueUrl"]
    environ = {
        "APP_NAME": APP,
        "APP_ENV": ENV,
        "SERVICE_NAME": "api",
        "DB_SECRET": secret_id,
        "QUEUE_URL": queue_url,
        # A test with the database down should not wait the production 5 s per request.
        "DATABASE__POOL_TIMEOUT": "2",
        "FLAGS_TTL_SECONDS": "0.2",
        "AUTH__ISSUER": issuer.config.url,
        "AUTH__AUDIENCES": json.dumps([CLIENT_ID]),
        "DOCS_ENABLED": "true",
        **database.verify_full_env(),
    }
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return ApiEnv(database, secret_id, queue_url)


@pytest.fixture
def api_env(
    aws_env: MotoServer, postgres_db: Database, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> ApiEnv:
    return prepare(postgres_db, issuer, monkeypatch)


@pytest.fixture
def prepare_api(
    aws_env: MotoServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Database], ApiEnv]:
    """``prepare`` for a database of the test's own (e.g. on a cluster it stops)."""
    return lambda database: prepare(database, issuer, monkeypatch)


@pytest.fixture
def client(api_env: ApiEnv, issuer: Issuer) -> Iterator[TestClient]:
    """The app in-process, its lifespan run (settings loaded, pool open), sending a token."""
    with TestClient(create_app(), headers=bearer_header(issuer)) as test_client:
        yield test_client


class Server:
    """The container's command (``api``: gunicorn with ``api.gunicorn_conf``) as a child."""

    def __init__(
        self, headers: dict[str, str], workers: int = 2, wrapper: Sequence[str] = ()
    ) -> None:
        self.headers = headers  # every request's: a bearer token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        # This process's environment, which api_env or prepare_api pointed at moto and the database.
        env = os.environ | {"PORT": str(self.port), "WEB_CONCURRENCY": str(workers)}
        self.process = subprocess.Popen(
            [*wrapper, *load_service_spec().command],
            cwd=tempfile.gettempdir(),  # as in the image (WORKDIR /tmp): nothing read from cwd
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group: uvicorn workers outlive a killed master, the group does not.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> list[dict[str, object]]:
        """The JSON lines written so far (a non-JSON line fails the test)."""
        return [json.loads(line) for line in list(self.lines) if line]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=10)

    def post(self, path: str, *, timeout: float = 10, **kwargs: Any) -> httpx.Response:
        headers = self.headers | kwargs.pop("headers", {})
        return httpx.post(self.url + path, headers=headers, timeout=timeout, **kwargs)

    def answers(self, path: str, status: int) -> bool:
        try:
            return self.get(path).status_code == status
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError("gunicorn exited:\n" + "\n".join(self.lines))
            return self.answers("/ready", 200)

        wait_until(ready, timeout, "/ready 200")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=5)


@pytest.fixture
def serve(issuer: Issuer) -> Iterator[Callable[..., Server]]:
    """``serve(workers=2, wrapper=())``: the container's command (after ``wrapper``'s, which
    executes it), ready; killed after the test if still up."""
    started: list[Server] = []

    def start(workers: int = 2, wrapper: Sequence[str] = ()) -> Server:
        server = Server(bearer_header(issuer), workers, wrapper)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.kill()
