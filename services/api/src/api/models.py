"""Request and response bodies (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, Field, RootModel

from jobs.types import JOB_TYPES

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "JobCreate",
    "Liveness",
    "Readiness",
    "error_responses",
]


if TYPE_CHECKING:
    JobCreate: TypeAlias = RootModel[Any]
else:
    # Built from the job types' registry: a union discriminated by ``type``, each member with its
    # type's payload model, so OpenAPI documents every payload and intake validates it.
    JobCreate = JOB_TYPES.request_model


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
