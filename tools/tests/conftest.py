"""Fixtures for the delivery tools' tests (helpers in ``suite_tools.testing``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import docker
import docker.errors
import pytest

from servicekit import aws
from servicekit.testing.moto import MotoServer, fake_aws_environment
from suite_tools.testing import BASE_IMAGE, LocalRegistry, Workspace, make_workspace

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A committed throwaway repository shaped like the suite, as the working directory."""
    found = make_workspace(tmp_path / "repo")
    monkeypatch.chdir(found.root)
    return found


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The engine; skips when no engine or no stand-in base image is there."""
    try:
        client = docker.from_env()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine reachable ({error}); .ci/docker-setup starts one")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        pytest.skip(f"base image {BASE_IMAGE} missing; .ci/standin-images builds it")
    yield client
    client.close()


def _ecr_login(ecr: ECRClient) -> tuple[str, str]:
    data = ecr.get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return username, password


@pytest.fixture
def engine(
    docker_client: docker.DockerClient, workspace: Workspace
) -> Iterator[docker.DockerClient]:
    """The engine for one test; the images built from the workspace are removed afterwards
    (each workspace is a new commit, so each run's images are new: they would pile up)."""
    yield docker_client
    label = f"org.opencontainers.image.revision={workspace.sha}"
    for image in docker_client.images.list(filters={"label": label}):
        docker_client.images.remove(image.id or "", force=True)


@pytest.fixture
def ecr_login(aws_env: MotoServer) -> tuple[str, str]:
    """The user and password moto's ECR hands out: what the tool will log in with."""
    return _ecr_login(aws.client("ecr"))


@pytest.fixture(scope="session")
def ecr_registry(
    moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRegistry]:
    """One registry for the session holding the password moto's ECR issues (a fixed one), so
    the base image's big layer is pushed once, not by every test."""
    reason = LocalRegistry.missing()
    if reason:
        pytest.skip(reason)
    environment = fake_aws_environment(moto_server.endpoint_url)
    ecr = boto3.client(
        "ecr",
        endpoint_url=moto_server.endpoint_url,
        region_name=environment["AWS_REGION"],
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
    )
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"), *_ecr_login(ecr))
    registry.start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_refusing_ecr(tmp_path: Path, ecr_login: tuple[str, str]) -> Iterator[LocalRegistry]:
    """A registry whose only user has another password than the one ECR issues."""
    reason = LocalRegistry.missing()
    if reason:
        pytest.skip(reason)
    username, password = ecr_login
    registry = LocalRegistry(tmp_path / "registry", username, "not-" + password)
    registry.start()
    yield registry
    registry.stop()
