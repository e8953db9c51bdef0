"""The example job types. A handler turns a job's payload into its result (a JSON object).

Handlers do no database writes of their own: :mod:`worker.processing` records the result and the
effect in the transaction that marks the job succeeded, which is what makes the effect happen
exactly once however often the message is delivered. A handler that raises is retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["HANDLERS", "Handler", "JobFailed"]

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]


class JobFailed(Exception):
    """The job's work failed (retried until the queue's maxReceiveCount)."""


def echo(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Fast: the result is the payload."""
    return {"echo": dict(payload)}


class SleepPayload(BaseModel):
    # 15 minutes: past that a job belongs in a batch system, not behind an SQS message.
    seconds: float = Field(ge=0, le=900)


def sleep(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Long-running: waits ``seconds`` (stands for slow I/O; outlives the visibility timeout)."""
    seconds = SleepPayload.model_validate(payload).seconds
    time.sleep(seconds)
    return {"slept": seconds}


def fail(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Always fails: shows retries, the dead-letter queue and the `dead` status."""
    raise JobFailed(str(payload.get("reason", "the fail job type always fails")))


HANDLERS: Mapping[str, Handler] = {"echo": echo, "sleep": sleep, "fail": fail}
