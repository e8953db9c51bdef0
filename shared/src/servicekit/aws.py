"""The one place that makes AWS clients.

Every client of the suite comes from :func:`client`: one shared botocore session, adaptive retries,
explicit timeouts, and ``AWS_ENDPOINT_URL`` honoured (botocore reads it itself, so local runs
against moto and production differ only in the environment). Clients are thread-safe and are
created once per (service, region, budget) and shared. botocore's session, not boto3's: boto3 adds
resources and S3 transfers that nothing here uses, and about 20 ms of imports to every process.

The default budget is sized for the slowest caller (an SQS long poll holds a request 20 s). A
caller with a tighter deadline asks for its own :class:`Budget`: an API relay sending messages,
a feature-flag refresh. With a black-holed endpoint a call costs at most about
``max_attempts x (connect_timeout + read_timeout)`` plus the retries' backoff.

Nothing here calls AWS: creating a client is local work. Call :func:`reset_clients` in a child
process after ``fork`` (gunicorn's ``post_fork``) so no connection pool crosses the fork. The
services' JSON models outlive the reset: every session shares one botocore loader, which a
pre-forking server fills once in its master (:func:`load_models`) for all its workers.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, DataNotFoundError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient

__all__ = [
    "ACCESS_DENIED_CODES",
    "Budget",
    "check_queue",
    "client",
    "client_config",
    "describe_error",
    "load_models",
    "reset_clients",
]

ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)

_lock = threading.Lock()
_session: botocore.session.Session | None = None
_clients: dict[tuple[str, str | None, Budget | None], Any] = {}
# Parsing a service's model and endpoint rules is most of a client's creation (about 40 ms of
# CPU each, doubled on a task's 0.5 vCPU): the loader caches them, and being pure data it is
# shared by every session, so a session made after reset_clients finds them parsed.
_loader = botocore.loaders.create_loader()


@dataclass(frozen=True)
class Budget:
    """Timeouts (seconds) and attempts of a client for callers with a deadline of their own."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int


def client_config(
    *,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_attempts: int | None = None,
    max_pool_connections: int | None = None,
) -> Config:
    """The botocore configuration every client uses.

    Defaults come from the environment (``AWS_CONNECT_TIMEOUT``, ``AWS_READ_TIMEOUT``,
    ``AWS_MAX_ATTEMPTS``, ``AWS_MAX_POOL_CONNECTIONS``) so a task definition can tune them without
    code. Adaptive retry mode adds client-side rate limiting on throttling, which matters when
    dozens of tasks start together and all read Parameter Store at once.
    """
    return Config(
        connect_timeout=connect_timeout or float(os.environ.get("AWS_CONNECT_TIMEOUT", "2")),
        # SQS long polls hold a request open for 20 s: the read timeout must outlast it.
        read_timeout=read_timeout or float(os.environ.get("AWS_READ_TIMEOUT", "25")),
        retries={
            "mode": "adaptive",
            "max_attempts": max_attempts or int(os.environ.get("AWS_MAX_ATTEMPTS", "4")),
        },
        max_pool_connections=max_pool_connections
        or int(os.environ.get("AWS_MAX_POOL_CONNECTIONS", "32")),
    )


@overload
def client(
    service: Literal["ssm"], region: str | None = None, *, budget: Budget | None = None
) -> SSMClient: ...
@overload
def client(
    service: Literal["secretsmanager"], region: str | None = None, *, budget: Budget | None = None
) -> SecretsManagerClient: ...
@overload
def client(
    service: Literal["sqs"], region: str | None = None, *, budget: Budget | None = None
) -> SQSClient: ...
@overload
def client(service: str, region: str | None = None, *, budget: Budget | None = None) -> Any: ...
def client(service: str, region: str | None = None, *, budget: Budget | None = None) -> Any:
    """Return the shared client for ``service`` (created on first use), with ``budget`` if given.

    Without a budget the client has :func:`client_config`'s defaults (the environment's).
    """
    # Key by the region botocore would resolve, so client("ssm") and client("ssm", "eu-west-1")
    # are one client when AWS_REGION is eu-west-1.
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    key = (service, region, budget)
    found = _clients.get(key)
    if found is not None:
        return found
    global _session
    with _lock:
        found = _clients.get(key)
        if found is None:
            if _session is None:
                _session = botocore.session.get_session()
                _session.register_component("data_loader", _loader)
            # Sessions are not thread-safe; clients are, so create them under the lock.
            config = client_config(
                connect_timeout=budget.connect_timeout if budget else None,
                read_timeout=budget.read_timeout if budget else None,
                max_attempts=budget.max_attempts if budget else None,
            )
            found = _session.create_client(service, region_name=region, config=config)
            _clients[key] = found
        return found


def load_models(*services: str) -> None:
    """Parse these services' models now: no client, no credentials, no network.

    gunicorn's master calls it before forking, so its workers start with them parsed instead of
    each parsing them at once on the task's shared CPU.
    """
    for service in services:
        for kind in ("service-2", "endpoint-rule-set-1"):
            # As botocore's client creator asks: the loader's cache keys on the call's form.
            _loader.load_service_model(service, kind, api_version=None)
        # As get_paginator asks (the version positional): Parameter Store's path reader pages, and
        # finding the file lists every service's folder.
        with contextlib.suppress(DataNotFoundError):  # a service without paginators
            version = _loader.determine_latest_version(service, "service-2")
            _loader.load_service_model(service, "paginators-1", version)
    _loader.load_data("partitions")
    _loader.load_data("sdk-default-configuration")
    # Every session's legacy endpoint resolver reads endpoints.json: about 1 MB of JSON, 25 ms of
    # CPU that each worker spent again after fork.
    _loader.load_data_with_path("endpoints")


def reset_clients() -> None:
    """Forget every client and the session (after fork, or between tests)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None


def check_queue(queue_url: str) -> None:
    """A readiness check: the SQS queue answers (one GetQueueAttributes call)."""
    client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])


def describe_error(
    error: ClientError | BotoCoreError, *, service: str, resource: str | None = None
) -> str:
    """One line naming what AWS refused: the error code, the IAM action, and the resource.

    AccessDenied names the action (``ssm:GetParametersByPath``) and the resource so the fix, a
    statement in the task role, is obvious from the log line alone. ``service`` is the IAM
    prefix: botocore's errors do not carry it. A BotoCoreError (endpoint unreachable, timeout,
    no credentials) never reached AWS and says so.
    """
    target = f" on {resource}" if resource else ""
    if not isinstance(error, ClientError):
        return f"{service}{target} unreachable: {error}"
    detail = error.response.get("Error", {})
    code = detail.get("Code", "Unknown")
    message = detail.get("Message", "")
    action = f"{service}:{error.operation_name}"
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # Some endpoints (and moto with IAM enforced) answer a denial with a bare 403 body.
    if code in ACCESS_DENIED_CODES or status == 403:
        return f"AccessDenied: not allowed to call {action}{target} ({message})"
    return f"{code} from {action}{target}: {message}"
