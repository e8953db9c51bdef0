"""Request and response bodies (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.repository import MAX_PAYLOAD_DEPTH, JobPayload

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "JobCreate",
    "JobType",
    "Liveness",
    "Readiness",
    "error_responses",
]


class JobType(StrEnum):
    """The job types the worker has handlers for (``worker.handlers.HANDLERS``, test-checked)."""

    ECHO = "echo"
    SLEEP = "sleep"
    FAIL = "fail"


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: JobType
    payload: JobPayload = Field(
        default_factory=dict,
        description=f"handed to the job's handler as is; JSON nested at most "
        f"{MAX_PAYLOAD_DEPTH} levels, strings without NUL characters",
    )


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """Only the outcome: which dependency fails, and why, is logged, not told to callers."""

    status: Literal["ok", "fail"]


class ErrorDetail(BaseModel):
    field: str = Field(description="where the problem is, e.g. body.payload or query.limit")
    message: str
    type: str


class ErrorBody(BaseModel):
    code: str = Field(examples=["validation_error", "job_not_found", "dependency_unavailable"])
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = Field(description="the X-Request-ID of the request")


class ErrorResponse(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the error shape for ``statuses``."""
    return {status: {"model": ErrorResponse} for status in statuses}
