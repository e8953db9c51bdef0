"""The job types' registry: one entry gives the request model, the handler and the failure rules."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.types import EchoPayload, JobError, JobRun, JobTimeout, JobType, JobTypes


class ResizePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(gt=0)


class Unrecoverable(Exception):
    pass


def resize(payload: ResizePayload, run: JobRun) -> dict[str, Any]:
    return {"width": payload.width}


REGISTRY = JobTypes(
    [
        JobType("echo", EchoPayload, "worker.handlers:echo", "echo"),
        JobType("echo-again", EchoPayload, "worker.handlers:echo", "the same payload model"),
        JobType(
            "resize",
            ResizePayload,
            f"{__name__}:resize",
            "resizes",
            non_retryable=(f"{__name__}:Unrecoverable",),
            example={"width": 3},
        ),
    ]
)


def test_one_entry_is_a_request_variant_and_a_handler() -> None:
    model = REGISTRY.request_model
    request = model.model_validate({"type": "resize", "payload": {"width": 3}}).root
    assert isinstance(request.payload, ResizePayload)
    assert REGISTRY["resize"].resolve()(request.payload, JobRun(uuid4(), 1, 5)) == {"width": 3}

    schema = model.model_json_schema()
    assert schema["discriminator"]["mapping"] == {
        "echo": "#/$defs/EchoJob",
        "echo-again": "#/$defs/EchoAgainJob",
        "resize": "#/$defs/ResizeJob",
    }
    resize_job = schema["$defs"]["ResizeJob"]
    assert resize_job["examples"] == [{"type": "resize", "payload": {"width": 3}}]
    assert schema["$defs"]["ResizePayload"]["properties"]["width"]["exclusiveMinimum"] == 0


def test_errors_name_the_field_as_sent() -> None:
    with pytest.raises(ValidationError) as refused:
        REGISTRY.request_model.model_validate({"type": "resize", "payload": {"width": 0}})
    assert [problem["loc"] for problem in refused.value.errors()] == [("payload", "width")]
    with pytest.raises(ValidationError) as unknown:
        REGISTRY.request_model.model_validate({"type": "crop"})
    [problem] = unknown.value.errors()
    assert (problem["loc"], problem["type"]) == (("type",), "unknown_job_type")
    assert problem["msg"] == "unknown job type 'crop'; known: 'echo', 'echo-again', 'resize'"


def test_failures_are_classified_with_public_messages() -> None:
    resize_type = REGISTRY["resize"]
    own = resize_type.failure(JobError("the image is too large", code="too_large", retryable=False))
    assert (own.code, own.public_message, own.retryable) == (
        "too_large",
        "the image is too large",
        False,
    )
    permanent = resize_type.failure(Unrecoverable("secret detail"))
    assert (permanent.code, permanent.retryable) == ("job_failed", False)
    other = resize_type.failure(OSError("connect to 10.0.0.7 refused"))
    assert (other.code, other.message, other.retryable) == ("handler_error", "the job failed", True)
    try:
        ResizePayload.model_validate({"width": "wide"})
    except ValidationError as error:
        stale = resize_type.failure(error)
    assert (stale.code, stale.retryable) == ("invalid_payload", False)
    assert len(resize_type.failure(JobError("x" * 1000)).public_message) == 200


def test_a_run_times_out_at_its_deadline() -> None:
    run = JobRun(uuid4(), 1, timeout=0.2)
    run.wait(0.01)  # well within the deadline
    started = time.monotonic()
    with pytest.raises(JobTimeout, match=r"0\.2 s timeout"):
        run.wait(30)
    assert time.monotonic() - started < 5, "waited past the deadline"
    assert run.cancelled.is_set()
    with pytest.raises(JobTimeout):
        run.check()
