"""The one error type the commands raise for a failure the user can act on."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from servicekit import aws

__all__ = ["CommandError", "aws_error"]


class CommandError(Exception):
    """A failure worth one line on stderr and a non-zero exit, never a traceback.

    The message says what failed and, where it is not obvious, what to do about it. It never
    contains a credential.
    """


def aws_error(
    error: ClientError | BotoCoreError, *, service: str, resource: str | None = None
) -> CommandError:
    """An AWS failure as one line: missing credentials or region say how to provide them; a
    refusal names the IAM action and the resource (``servicekit.aws.describe_error``)."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return CommandError(
            "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run where a role provides them (CI: the OIDC role)"
        )
    if isinstance(error, NoRegionError):
        return CommandError("no AWS region: set AWS_REGION (or a region in the AWS profile)")
    return CommandError(aws.describe_error(error, service=service, resource=resource))
