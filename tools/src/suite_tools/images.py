"""Build the services' images and push them to ECR, so deployments pin them by digest.

One root ``Dockerfile`` builds every service (``--build-arg SERVICE=<name>``). Images are built
by the engine's BuildKit through the Engine API (the Dockerfile uses ``RUN --mount``, which the
classic builder behind docker-py's ``build()`` refuses), tagged with the full git commit SHA and
an optional release tag, and pushed to ``{registry}/{app}/{service}``.

ECR is both the control plane (authorization token, repositories, the immutable-tag check) and,
unless ``--registry`` names another endpoint, the registry pushed to. The override exists for a
registry that takes ECR's credentials but is not ECR's endpoint: a local registry in the tests, a
proxy, or a VPC endpoint's DNS name.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests
from botocore.exceptions import BotoCoreError, ClientError
from docker.utils.json_stream import json_stream

from servicekit import aws
from suite_contract.ecr import LIFECYCLE_POLICY, repository_name
from suite_tools.buildkit import TraceRenderer, decode_status
from suite_tools.context import Ignore, context_tar
from suite_tools.errors import CommandError, aws_error
from suite_tools.specs import repository_root, select_specs

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

__all__ = [
    "PushedImage",
    "Registry",
    "build",
    "classify_push_error",
    "document",
    "push",
    "revision",
]

Write = Callable[[str], None]

_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")  # one ECR repository path component
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # the OCI distribution spec's tag


@dataclass(frozen=True)
class Registry:
    """Where images are pushed, and the credentials ECR issued for it."""

    host: str
    username: str
    password: str = field(repr=False)

    @property
    def auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.host}


@dataclass(frozen=True)
class PushedImage:
    service: str
    registry: str
    repository: str
    tags: tuple[str, ...]
    digest: str

    @property
    def reference(self) -> str:
        """``registry/repository@sha256:...``: what a task definition should name."""
        return f"{self.registry}/{self.repository}@{self.digest}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tags": list(self.tags),
            "digest": self.digest,
            "reference": self.reference,
        }


# -- the revision ------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    git = shutil.which("git")
    if git is None:
        raise CommandError("git is not installed: images are tagged with the commit")
    try:
        done = subprocess.run(  # noqa: S603 - git, with our own arguments
            [git, *args], cwd=root, capture_output=True, text=True, check=True
        )
    except subprocess.CalledProcessError as error:
        reason = error.stderr.strip().splitlines()[-1] if error.stderr.strip() else error
        raise CommandError(f"git {args[0]} failed in {root}: {reason}") from error
    return done.stdout


def _changed_paths(status: str) -> Iterable[str]:
    """Paths of ``git status --porcelain=v1 -z`` (both sides of a rename)."""
    entries = iter(status.split("\0"))
    for entry in entries:
        if not entry:
            continue
        yield entry[3:]
        if entry[0] in "RC":
            yield next(entries, "")


def revision(root: Path) -> tuple[str, list[str]]:
    """The commit checked out, and the uncommitted changes that would reach the image.

    Only paths inside the build context count: an edited README does not make the image
    differ from the commit, an edited module or an untracked one under ``src/`` does.
    """
    sha = _git(root, "rev-parse", "--verify", "HEAD").strip()
    ignore = Ignore.read(root)
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    dirty = sorted({path for path in _changed_paths(status) if path and not ignore.excluded(path)})
    return sha, dirty


# -- the engine --------------------------------------------------------------------------------


def _engine() -> docker.DockerClient:
    try:
        return docker.from_env()
    except docker.errors.DockerException as error:
        where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
        raise CommandError(
            f"no Docker engine reachable at {where}: start dockerd or set DOCKER_HOST ({error})"
        ) from error


@contextmanager
def _engine_calls() -> Iterator[None]:
    """The engine or a registry failing mid-way (a dropped connection, a refused call)."""
    try:
        yield
    except docker.errors.APIError as error:
        raise CommandError(f"Docker engine: {' '.join(str(error.explanation).split())}") from error
    except (docker.errors.DockerException, requests.RequestException) as error:
        raise CommandError(f"Docker engine: {' '.join(str(error).split())}") from error


def _messages(response: requests.Response) -> Iterator[dict[str, Any]]:
    """The engine's stream of JSON objects (progress, results, errors)."""
    for message in json_stream(response.iter_content(chunk_size=None, decode_unicode=True)):
        if isinstance(message, dict):
            yield message


def _errors(message: Mapping[str, Any]) -> str | None:
    if "errorDetail" not in message and "error" not in message:
        return None
    detail = message.get("errorDetail") or {}
    text = str(detail.get("message") or message.get("error") or "unknown error")
    return " ".join(text.split())


def _build_one(
    api: docker.APIClient,
    root: Path,
    service: str,
    reference: str,
    *,
    sha: str,
    build_args: Mapping[str, str],
    write: Write,
) -> str:
    """Build one service's image with BuildKit; returns the image ID."""
    write(f"build {reference}")
    params = {
        "t": reference,
        "version": "2",  # BuildKit
        "rm": "1",
        "dockerfile": "Dockerfile",
        "buildargs": json.dumps({**build_args, "SERVICE": service}),
        "labels": json.dumps(
            {"org.opencontainers.image.revision": sha, "org.opencontainers.image.title": service}
        ),
    }
    # docker-py's build() has no BuildKit switch; its session posts to the same endpoint.
    url = f"{api.base_url}/v{api.api_version}/build"
    renderer = TraceRenderer(write)
    image_id = None
    with context_tar(root) as archive:
        response = api.post(
            url,
            params=params,
            data=archive,
            headers={"Content-Type": "application/x-tar"},
            stream=True,
            timeout=None,
        )
        if response.status_code >= 400:
            raise CommandError(f"build of {service} refused by the engine: {response.text.strip()}")
        for message in _messages(response):
            error = _errors(message)
            if error:
                raise CommandError(f"build of {service} failed: {error}")
            if message.get("id") == "moby.buildkit.trace":
                renderer.feed(decode_status(message["aux"]))
            elif message.get("id") == "moby.image.id":
                image_id = message["aux"]["ID"]
            elif message.get("stream", "").strip():
                write(message["stream"].strip())
    if image_id is None:
        raise CommandError(f"build of {service} ended without an image")
    return str(image_id)


def classify_push_error(message: str, *, reference: str, host: str) -> CommandError:
    """The one line for a push the registry refused."""
    lowered = message.lower()
    if "already exists" in lowered and ("immutable" in lowered or "tag invalid" in lowered):
        return CommandError(
            f"{reference} already exists and the repository's tags are immutable: push another "
            f"commit or release tag ({message})"
        )
    if "token has expired" in lowered:
        return CommandError(f"push of {reference}: ECR's authorization token expired, run again")
    if lowered.startswith("denied") or "not authorized to perform" in lowered:
        return CommandError(
            f"push of {reference} denied: the repository policy or the role's ECR permissions "
            f"(ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload, "
            f"ecr:PutImage) do not allow it ({message})"
        )
    if "unauthorized" in lowered or "authentication required" in lowered:
        return CommandError(f"registry {host} refused the ECR credentials: {message}")
    return CommandError(f"push of {reference} failed: {message}")


def _size(octets: int) -> str:
    return f"{octets / 1e6:.1f} MB" if octets >= 1e5 else f"{octets / 1e3:.1f} kB"


class _PushProgress:
    """Compact per-layer lines from the push stream: state changes and quarters of big layers."""

    _QUIET = frozenset({"Preparing", "Waiting"})
    _BIG = 10 * 1024 * 1024

    def __init__(self, write: Write) -> None:
        self._write = write
        self._states: dict[str, str] = {}
        self._quarters: dict[str, int] = {}
        self.digest: str | None = None

    def feed(self, message: Mapping[str, Any]) -> str | None:
        """Show one message; returns the registry's error text, if it is one."""
        error = _errors(message)
        if error:
            return error
        aux = message.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            self.digest = str(aux["Digest"])
            return None
        status, layer = message.get("status", ""), message.get("id")
        if not layer:
            if status.startswith("The push refers to"):
                self._write(status)
            return None
        if status in self._QUIET:
            return None
        detail = message.get("progressDetail") or {}
        total, current = detail.get("total") or 0, detail.get("current") or 0
        if status != self._states.get(layer):
            self._states[layer] = status
            size = f" {_size(total)}" if status == "Pushing" and total else ""
            self._write(f"  {layer} {status.lower()}{size}")
        elif status == "Pushing" and total >= self._BIG:
            quarter = min(current * 4 // total, 3)
            if quarter > self._quarters.get(layer, 0):
                self._quarters[layer] = quarter
                self._write(f"  {layer} {quarter * 25}%")
        return None


def _push_one(
    api: docker.APIClient,
    *,
    image_id: str,
    registry: Registry,
    repository: str,
    tag: str,
    write: Write,
) -> str:
    target = f"{registry.host}/{repository}"
    reference = f"{target}:{tag}"
    write(f"push {reference}")
    api.tag(image_id, target, tag)
    progress = _PushProgress(write)
    for message in api.push(target, tag=tag, stream=True, decode=True, auth_config=registry.auth):
        error = progress.feed(message)
        if error:
            raise classify_push_error(error, reference=reference, host=registry.host)
    if progress.digest is None:
        raise CommandError(f"push of {reference} ended without a digest")
    write(f"  digest {progress.digest}")
    return progress.digest


def _login(api: docker.APIClient, registry: Registry) -> None:
    """Let the engine check the credentials: a refusal here is the credentials, not the push."""
    try:
        api.login(
            username=registry.username,
            password=registry.password,
            registry=registry.host,
            reauth=True,
        )
    except docker.errors.APIError as error:
        raise CommandError(
            f"registry {registry.host} refused the ECR credentials: "
            f"{' '.join(str(error.explanation).split())}"
        ) from error


def _local_image(
    client: docker.DockerClient,
    root: Path,
    *,
    app: str,
    service: str,
    sha: str,
    build_image: bool,
    build_args: Mapping[str, str],
    write: Write,
) -> str:
    """The ID of the image to push: built now, or the one ``suite build`` left."""
    local = f"{repository_name(app, service)}:{sha}"
    if build_image:
        return _build_one(
            client.api, root, service, local, sha=sha, build_args=build_args, write=write
        )
    try:
        return str(client.images.get(local).id)
    except docker.errors.ImageNotFound as error:
        raise CommandError(
            f"no local image {local}: run `suite build` first or drop --no-build"
        ) from error


# -- ECR ---------------------------------------------------------------------------------------


def _aws_error(error: ClientError | BotoCoreError, resource: str | None = None) -> CommandError:
    return aws_error(error, service="ecr", resource=resource)


def _host(url: str) -> str:
    host = re.sub(r"^[a-z]+://", "", url.strip()).rstrip("/")
    if not host or "/" in host:
        raise CommandError(f"registry {url!r} is not a host[:port] or scheme://host[:port]")
    return host


def _registry(ecr: ECRClient, override: str | None) -> Registry:
    try:
        data = ecr.get_authorization_token()["authorizationData"][0]
    except (ClientError, BotoCoreError) as error:
        raise _aws_error(error) from error
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return Registry(_host(override or data["proxyEndpoint"]), username, password)


def _ensure_repository(ecr: ECRClient, name: str, write: Write) -> bool:
    """Create the repository when missing; True when its tags are immutable."""
    try:
        found = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise _aws_error(error, name) from error
    except BotoCoreError as error:
        raise _aws_error(error, name) from error
    else:
        if found.get("imageTagMutability", "MUTABLE").startswith("MUTABLE"):
            write(f"warning: {name} has mutable tags; deployments still pin digests")
            return False
        return True
    try:
        ecr.create_repository(
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            imageTagMutability="IMMUTABLE",
            encryptionConfiguration={"encryptionType": "KMS"},
        )
        ecr.put_lifecycle_policy(
            repositoryName=name, lifecyclePolicyText=json.dumps(LIFECYCLE_POLICY)
        )
    except ClientError as error:
        # Another push created it meanwhile: fine, it was created with the same settings.
        if error.response.get("Error", {}).get("Code") != "RepositoryAlreadyExistsException":
            raise _aws_error(error, name) from error
    except BotoCoreError as error:
        raise _aws_error(error, name) from error
    write(f"created repository {name} (scan on push, immutable tags, lifecycle policy)")
    return True


def _refuse_taken_tags(ecr: ECRClient, repository: str, tags: Sequence[str]) -> None:
    """An immutable tag already pushed: say so now rather than after a build and a push."""
    try:
        found = ecr.batch_get_image(
            repositoryName=repository, imageIds=[{"imageTag": tag} for tag in tags]
        )["images"]
    except (ClientError, BotoCoreError) as error:
        raise _aws_error(error, repository) from error
    for image in found:
        image_id = image.get("imageId", {})
        raise CommandError(
            f"{repository}:{image_id.get('imageTag')} already exists "
            f"({image_id.get('imageDigest')}) and the repository's tags are immutable: "
            "push another commit or release tag"
        )


# -- the commands ------------------------------------------------------------------------------


def _check_app(app: str) -> str:
    if not _NAME.fullmatch(app):
        raise CommandError(f"app name {app!r}: lower-case letters, digits and . _ - only")
    return app


def build(
    services: Sequence[str],
    *,
    app: str,
    build_args: Mapping[str, str],
    root: Path | None = None,
    write: Write,
) -> dict[str, str]:
    """Build the images locally as ``{app}/{service}:{sha}`` (``{sha}-dirty`` from a dirty tree).

    Returns the local references by service.
    """
    root = repository_root(root)
    app = _check_app(app)
    names = list(select_specs(root, services))
    sha, dirty = revision(root)
    tag = f"{sha}-dirty" if dirty else sha
    built = {}
    with _engine_calls():
        api = _engine().api
        for service in names:
            reference = f"{repository_name(app, service)}:{tag}"
            _build_one(api, root, service, reference, sha=sha, build_args=build_args, write=write)
            built[service] = reference
    return built


def push(
    services: Sequence[str],
    *,
    app: str,
    release: str | None = None,
    registry: str | None = None,
    build_images: bool = True,
    build_args: Mapping[str, str],
    root: Path | None = None,
    write: Write,
) -> list[PushedImage]:
    """Build (unless told not to), then push every service's image; returns what was pushed.

    Everything that can fail without a build is checked first: the tree, the credentials,
    the repositories and the tags.
    """
    root = repository_root(root)
    app = _check_app(app)
    names = list(select_specs(root, services))
    sha, dirty = revision(root)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise CommandError(
            f"uncommitted changes would reach the images ({shown}): commit them, so the tag "
            f"{sha[:12]} names what is inside"
        )
    if release is not None and not _TAG.fullmatch(release):
        raise CommandError(f"release tag {release!r}: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    tags = tuple(dict.fromkeys(tag for tag in (sha, release) if tag))

    ecr: ECRClient = aws.client("ecr")
    target = _registry(ecr, registry)
    for service in names:
        repository = repository_name(app, service)
        if _ensure_repository(ecr, repository, write):
            _refuse_taken_tags(ecr, repository, tags)

    with _engine_calls():
        client = _engine()
        api = client.api
        _login(api, target)
        images = {
            service: _local_image(
                client,
                root,
                app=app,
                service=service,
                sha=sha,
                build_image=build_images,
                build_args=build_args,
                write=write,
            )
            for service in names
        }
        pushed = []
        for service in names:
            repository = repository_name(app, service)
            digests = {
                _push_one(
                    api,
                    image_id=images[service],
                    registry=target,
                    repository=repository,
                    tag=tag,
                    write=write,
                )
                for tag in tags
            }
            if len(digests) != 1:
                raise CommandError(f"{repository}: its tags got different digests {digests}")
            pushed.append(PushedImage(service, target.host, repository, tags, digests.pop()))
    return pushed


def document(pushed: Sequence[PushedImage]) -> dict[str, Any]:
    """What ``push --json`` prints: ``images.<service>.digest`` is what a deployment pins."""
    return {
        "revision": pushed[0].tags[0] if pushed else None,
        "images": {image.service: image.as_dict() for image in pushed},
    }
