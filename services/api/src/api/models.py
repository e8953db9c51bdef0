"""Request and response bodies (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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
    """The job types the worker has handlers for."""

    ECHO = "echo"
    SLEEP = "sleep"
    FAIL = "fail"


MAX_PAYLOAD_DEPTH = 32


def storable_json(payload: dict[str, Any]) -> dict[str, Any]:
    """Refuse what JSON parsing lets through but PostgreSQL's jsonb does not store.

    NUL characters, unpaired surrogates (``"\\ud800"``), NaN and infinite numbers, and very deep
    nesting: each would fail the INSERT (a 500); here it is a 422 naming ``body.payload``.
    Iterative, so a deep payload cannot exhaust the interpreter's stack.
    """
    pending: list[tuple[Any, int]] = [(payload, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")
        if isinstance(value, dict):
            pending.extend((key, depth + 1) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise ValueError("a string holds a NUL character (\\u0000)")
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise ValueError("a string holds an unpaired surrogate") from None
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a number is not finite (NaN or infinity)")
    return payload


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: JobType
    payload: Annotated[dict[str, Any], AfterValidator(storable_json)] = Field(
        default_factory=dict,
        description=f"handed to the job's handler as is; JSON nested at most "
        f"{MAX_PAYLOAD_DEPTH} levels, strings without NUL characters",
    )


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "fail"]
    checks: dict[str, str] = Field(
        description='each check\'s result: "ok" or why it failed', examples=[{"database": "ok"}]
    )


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
