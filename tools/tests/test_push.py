"""``suite push`` and ``suite build``: ECR's control plane through moto, images into a real
registry on loopback (``docker-registry`` with htpasswd holding the password ECR issued)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest

from servicekit import aws
from servicekit.testing.moto import MotoServer
from suite_tools.images import classify_push_error, revision
from suite_tools.testing import BASE_IMAGE, DenyingProxy, LocalRegistry, Run, Workspace, run_suite

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
BASE = f"PYTHON_IMAGE={BASE_IMAGE}"


def _error(run: Run, *, alone: bool = True) -> str:
    """The failure's line: the last on stderr, and the only one when nothing ran before it."""
    assert run.code == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    if alone:
        assert len(lines) == 1, run.stderr
    return lines[-1]


def test_push_builds_pushes_and_pins_by_digest(
    ecr_login: tuple[str, str],
    ecr_registry: LocalRegistry,
    workspace: Workspace,
    engine: docker.DockerClient,
) -> None:
    registry = ecr_registry
    run = run_suite(
        "push", "--app", "t", "--registry", f"http://{registry.host}", "--build-arg", BASE,
        "--tag", "v1.0.0", "--json",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["revision"] == workspace.sha
    assert set(document["images"]) == {"alpha", "beta"}

    # Progress: BuildKit's steps, then compact per-layer push lines.
    assert "RUN --mount=type=cache" in run.stderr
    assert f"push {registry.host}/t/alpha:{workspace.sha}" in run.stderr
    assert " pushed" in run.stderr

    ecr = aws.client("ecr")
    for service, image in document["images"].items():
        repository = f"t/{service}"
        assert image["repository"] == repository
        assert image["tags"] == [workspace.sha, "v1.0.0"]
        assert image["digest"].startswith("sha256:")
        assert image["reference"] == f"{registry.host}/{repository}@{image['digest']}"
        found = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0]
        assert found["imageTagMutability"] == "IMMUTABLE"
        assert found["imageScanningConfiguration"] == {"scanOnPush": True}
        policy = ecr.get_lifecycle_policy(repositoryName=repository)["lifecyclePolicyText"]
        assert {r["selection"]["tagStatus"] for r in json.loads(policy)["rules"]} == {
            "untagged",
            "any",
        }
        # Both tags name the printed digest, and the registry wants credentials.
        for tag in image["tags"]:
            status, headers = registry.get(f"/v2/{repository}/manifests/{tag}", accept=MANIFEST_V2)
            assert (status, headers["Docker-Content-Digest"]) == (200, image["digest"])
        assert registry.get(f"/v2/{repository}/tags/list", auth=False)[0] == 401
    # The only credentials the registry takes are those ECR issues this test.
    assert (registry.username, registry.password) == ecr_login

    # Pull back by the printed digest into an engine that no longer has the image: same image.
    alpha = document["images"]["alpha"]
    built = engine.images.get(f"t/alpha:{workspace.sha}").id
    assert built is not None
    engine.images.remove(built, force=True)
    auth = {"username": registry.username, "password": registry.password}
    repository, _, digest = alpha["reference"].partition("@")
    pulled = engine.images.pull(repository, tag=digest, auth_config=auth)
    assert pulled.id == built
    output = engine.containers.run(alpha["reference"], remove=True).decode()
    assert output == "alpha\nalpha says hello\n"


def test_build_then_push_without_building(
    aws_env: MotoServer,
    ecr_registry: LocalRegistry,
    workspace: Workspace,
    engine: docker.DockerClient,
) -> None:
    built = run_suite("build", "alpha", "--app", "t", "--build-arg", BASE)
    assert built.code == 0, built.stderr
    assert built.stdout.split() == [f"t/alpha:{workspace.sha}"]
    # Outside the build context: the image still is exactly the commit.
    (workspace.root / "README.md").write_text("edited, not committed\n")
    run = run_suite("push", "alpha", "--app", "t", "--registry", ecr_registry.host, "--no-build")
    assert run.code == 0, run.stderr
    assert "build " not in run.stderr
    (reference,) = run.stdout.split()
    image = engine.images.get(f"t/alpha:{workspace.sha}")
    assert reference in image.attrs["RepoDigests"]


def test_uncommitted_changes_in_the_context_refuse_a_push(
    aws_env: MotoServer, workspace: Workspace
) -> None:
    assert revision(workspace.root) == (workspace.sha, [])
    (workspace.root / "README.md").write_text("outside the context\n")
    (workspace.root / "notes.txt").write_text("untracked, outside the context\n")
    assert revision(workspace.root) == (workspace.sha, [])
    (workspace.root / "services" / "beta" / "message.txt").write_text("changed\n")
    assert revision(workspace.root) == (workspace.sha, ["services/beta/message.txt"])

    line = _error(run_suite("push", "alpha"))
    assert "uncommitted changes would reach the images (services/beta/message.txt)" in line


def test_no_docker_engine_is_one_line(
    aws_env: MotoServer, workspace: Workspace, tmp_path: Path
) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    line = _error(run_suite("push", "--app", "t", env=env), alone=False)
    assert line.startswith(f"suite push: no Docker engine reachable at unix://{tmp_path}/")


def test_no_aws_credentials_is_one_line(aws_env: MotoServer, workspace: Workspace) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_ENDPOINT_URL": aws_env.endpoint_url,  # even a found credential goes nowhere real
        "AWS_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    line = _error(run_suite("push", env=env))
    assert line.startswith("suite push: no AWS credentials:")


def test_an_existing_immutable_tag_is_refused_before_building(
    aws_env: MotoServer, workspace: Workspace
) -> None:
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName="t/alpha", imageTagMutability="IMMUTABLE")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": "sha256:" + "0" * 64},
        "layers": [],
    }  # fmt: skip
    ecr.put_image(repositoryName="t/alpha", imageManifest=json.dumps(manifest), imageTag="v1")

    line = _error(run_suite("push", "alpha", "--app", "t", "--tag", "v1"))
    assert line.startswith("suite push: t/alpha:v1 already exists (sha256:")
    assert "immutable" in line


def test_registry_refusing_the_credentials_is_one_line(
    ecr_login: tuple[str, str],
    registry_refusing_ecr: LocalRegistry,
    workspace: Workspace,
    docker_client: docker.DockerClient,  # the engine checks the credentials
) -> None:
    host = registry_refusing_ecr.host
    run = run_suite("push", "alpha", "--app", "t", "--registry", host)
    line = _error(run, alone=False)
    assert line.startswith(f"suite push: registry {host} refused the ECR credentials:")
    assert ecr_login[1] not in run.stderr


def test_push_denied_by_a_repository_policy_is_one_line(
    aws_env: MotoServer,
    ecr_registry: LocalRegistry,
    workspace: Workspace,
    engine: docker.DockerClient,
) -> None:
    proxy = DenyingProxy(ecr_registry.host)
    proxy.start()
    try:
        run = run_suite(
            "push", "alpha", "--app", "t", "--registry", proxy.host, "--build-arg", BASE
        )
    finally:
        proxy.stop()
    line = _error(run, alone=False)
    assert line.startswith(f"suite push: push of {proxy.host}/t/alpha:{workspace.sha} denied:")
    assert "ecr:InitiateLayerUpload" in line


def test_unknown_service_is_one_line(workspace: Workspace) -> None:
    line = _error(run_suite("push", "gamma"))
    assert line == "suite push: unknown service gamma (services/*/service.toml: alpha, beta)"


@pytest.mark.parametrize(
    ("message", "start"),
    [
        # What the engine relays from ECR when the tag appeared between the check and the push.
        (
            "tag invalid: The image tag 'v1' already exists in the 't/alpha' repository and "
            "cannot be overwritten because the repository is immutable.",
            "r/t/alpha:v1 already exists and the repository's tags are immutable",
        ),
        ("denied: Your authorization token has expired. Reauthenticate and try again.",
         "push of r/t/alpha:v1: ECR's authorization token expired"),
        ("denied: User: arn:aws:sts::1:assumed-role/ci/x is not authorized to perform: "
         "ecr:PutImage on resource: arn:aws:ecr:eu-west-1:1:repository/t/alpha",
         "push of r/t/alpha:v1 denied: the repository policy"),
        ("unauthorized: authentication required", "registry r refused the ECR credentials"),
        ("blob upload unknown", "push of r/t/alpha:v1 failed: blob upload unknown"),
    ],
)  # fmt: skip
def test_registry_refusals_are_told_apart(message: str, start: str) -> None:
    error = classify_push_error(message, reference="r/t/alpha:v1", host="r")
    assert str(error).startswith(start)
