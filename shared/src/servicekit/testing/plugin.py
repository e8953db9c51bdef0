"""pytest fixtures over real components (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from servicekit import aws
from servicekit.testing.moto import MotoServer, fake_aws_environment
from servicekit.testing.postgres import Database, PostgresCluster


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto HTTP server for the session; ``aws`` resets it before each test."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """moto, empty, and this process's environment (so child processes too) pointed at it."""
    if not moto_server.running:
        moto_server.start()
    moto_server.reset()
    for key, value in fake_aws_environment(moto_server.endpoint_url).items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    yield moto_server
    aws.reset_clients()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A scram-sha-256 PostgreSQL cluster shared by the session."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_db(postgres_cluster: PostgresCluster) -> Iterator[Database]:
    """An empty database with its own owner role and password, dropped after the test."""
    database = postgres_cluster.create_database()
    yield database
    postgres_cluster.drop_database(database)


@pytest.fixture(scope="session")
def compose_v2() -> None:
    """Skips, saying why, unless a Docker engine and Compose v2 answer (CI installs both)."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client")
    for command in (["docker", "info"], ["docker", "compose", "version"]):
        if subprocess.run(command, capture_output=True, check=False).returncode != 0:  # noqa: S603
            pytest.skip(
                f"`{' '.join(command)}` failed: no Docker engine reachable or no Compose v2"
            )
