"""The example job types' handlers. Their contract (payload model, timeout, attempts) is their
entry in :data:`jobs.types.JOB_TYPES`, which names each handler here as ``"worker.handlers:name"``.

A handler gets its payload validated into its type's model and a :class:`jobs.types.JobRun`
(deadline, cancel event) and returns its result, a JSON object. Handlers do no database writes of
their own: :mod:`worker.processing` records the result and the effect in the transaction that
marks the job succeeded, which is what makes the effect happen exactly once however often the
message is delivered. An exception is a failed attempt: :class:`jobs.types.JobError` says what the
client sees and whether to retry; anything else is ``handler_error``, retried.
"""

from __future__ import annotations

from typing import Any

from jobs.types import EchoPayload, FailPayload, JobError, JobRun, SleepPayload

__all__ = ["echo", "fail", "sleep"]


def echo(payload: EchoPayload, run: JobRun) -> dict[str, Any]:
    """Fast: the result is the payload."""
    return {"echo": payload.model_dump(mode="json")}


def sleep(payload: SleepPayload, run: JobRun) -> dict[str, Any]:
    """Long-running: waits ``seconds`` (stands for slow I/O), giving up at its deadline."""
    run.wait(payload.seconds)
    return {"slept": payload.seconds}


def fail(payload: FailPayload, run: JobRun) -> dict[str, Any]:
    """Always fails: retried until its attempts are spent, or dead at once if not retryable."""
    raise JobError(payload.reason, code="failed_on_purpose", retryable=payload.retryable)
