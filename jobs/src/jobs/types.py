"""The job contract: every job type, once, from intake to handler (like arq's ``func()``).

One :class:`JobType` entry says everything the services must agree on about a type:

- ``name``: what clients put in ``type``;
- ``payload``: the pydantic model of its ``payload``. The API validates every request against it
  (422 naming the field) and publishes it in OpenAPI as a discriminated union on ``type``
  (:meth:`JobTypes.request_model`); the worker validates the stored payload again before the run;
- ``handler``: ``"module:function"``, imported only by the worker when it first runs the type,
  so the API's image needs none of the worker's code or dependencies;
- ``timeout``: seconds a run may take (see :class:`JobRun`);
- ``max_attempts``: runs before the job is ``dead`` (at most the queue's maxReceiveCount);
- ``non_retryable``: ``"module:Exception"`` classes that make a failure final at once (besides
  :class:`JobError` with ``retryable=False`` and a payload that no longer validates);
- ``demo``: accepted in development only, unless the API's ``demo_job_types`` setting says so;
- ``example``: a valid payload (OpenAPI's example, and the registry's tests).

Adding a job type is one entry in :data:`JOB_TYPES` (and its handler in the worker).

What a client sees of a failure is :class:`Failure`: a stable ``code`` and a short message
written for clients. Exception text from inside a handler stays in the worker's logs.
"""

from __future__ import annotations

import functools
import operator
import pkgutil
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    RootModel,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError

from jobs.repository import NUL_FREE_PATTERN, NulFreeStr, StorableJson, storable_payload

__all__ = [
    "JOB_TYPES",
    "Failure",
    "Handler",
    "JobError",
    "JobRun",
    "JobTimeout",
    "JobType",
    "JobTypes",
]

Handler = Callable[[Any, "JobRun"], Mapping[str, Any]]
"""``handler(payload, run) -> result``: payload as its type's model, result a JSON object."""

MAX_PUBLIC_MESSAGE = 200


class JobError(Exception):
    """A handler's failure meant for clients: ``code`` and ``message`` are stored on the job.

    Write ``message`` for the job's owner: no host names, no data of other jobs, no secrets.
    ``retryable=False`` makes the job ``dead`` at once.
    """

    code = "job_failed"
    retryable = True

    def __init__(
        self, message: str, *, code: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class JobTimeout(JobError):
    """The run passed its type's timeout (:meth:`JobRun.check`, :meth:`JobRun.wait` raise it)."""

    code = "timeout"


@dataclass(frozen=True)
class Failure:
    """A failed run as the job keeps it: what clients see, and whether to try again."""

    code: str
    message: str
    retryable: bool

    @property
    def public_message(self) -> str:
        return " ".join(self.message.split())[:MAX_PUBLIC_MESSAGE]


@dataclass
class JobRun:
    """What a handler gets besides its payload: which job and attempt, and its deadline.

    A thread cannot be killed, so the timeout is cooperative: a handler waits with
    :meth:`wait` (or polls :attr:`cancelled` / :meth:`check`) and stops when told. One that does
    not is disowned at the deadline (its job marked timed out, its message left to SQS) while
    its thread runs on, holding a concurrency slot until it returns.
    """

    job_id: UUID
    attempt: int
    timeout: float
    deadline: float = field(init=False)
    """``time.monotonic()`` at which the run is over."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set at the deadline (and only then): stop and return, or raise."""

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def check(self) -> None:
        """Raise :class:`JobTimeout` once the deadline has passed."""
        if self.expired or self.cancelled.is_set():
            self._time_out()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise :class:`JobTimeout` when the deadline comes first."""
        remaining = self.remaining()
        if self.cancelled.wait(min(seconds, remaining)) or seconds > remaining:
            self._time_out()

    def _time_out(self) -> None:
        self.cancelled.set()
        raise JobTimeout(f"the job ran past its {self.timeout:g} s timeout")


@dataclass(frozen=True)
class JobType:
    """One job type: see the module docstring for each field."""

    name: str
    payload: type[BaseModel]
    handler: str
    description: str
    timeout: float = 60.0
    max_attempts: int = 5
    non_retryable: tuple[str, ...] = ()
    demo: bool = False
    example: dict[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_attempts < 1:
            raise ValueError(f"job type {self.name!r}: timeout and max_attempts must be positive")

    def resolve(self) -> Handler:
        """The handler function (imported now: only the worker calls this)."""
        return cast(Handler, pkgutil.resolve_name(self.handler))

    def permanent_errors(self) -> tuple[type[BaseException], ...]:
        return tuple(pkgutil.resolve_name(name) for name in self.non_retryable)

    def failure(self, error: BaseException) -> Failure:
        """How ``error`` from a run of this type is recorded (code, public message, retry)."""
        if isinstance(error, JobError):
            return Failure(error.code, error.message, error.retryable)
        if isinstance(error, ValidationError):
            # The stored payload no longer fits the type (the model changed): it never will.
            return Failure("invalid_payload", f"the payload is not a valid {self.name} job", False)
        if isinstance(error, self.permanent_errors()):
            return Failure("job_failed", "the job failed and cannot succeed on a retry", False)
        return Failure("handler_error", "the job failed", True)


def _storable(payload: BaseModel) -> BaseModel:
    storable_payload(payload.model_dump())
    return payload


def _takes_nothing(model: type[BaseModel]) -> bool:
    return not any(info.is_required() for info in model.model_fields.values())


class JobTypes:
    """The registry: job types by name, and the request model the API builds from them."""

    def __init__(self, types: Iterable[JobType]) -> None:
        self._types = {job_type.name: job_type for job_type in types}

    def __getitem__(self, name: str) -> JobType:
        return self._types[name]

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __iter__(self) -> Iterator[JobType]:
        return iter(self._types.values())

    def max_attempts(self) -> dict[str, int]:
        """Each type's ``max_attempts``, by name (for ``repository.requeue_stuck``)."""
        return {t.name: t.max_attempts for t in self}

    def names(self, *, demo: bool = True) -> list[str]:
        """Every type's name; without the demo types when ``demo`` is False."""
        return [t.name for t in self if demo or not t.demo]

    @cached_property
    def request_model(self) -> type[RootModel[Any]]:
        """``JobCreate``: ``{"type", "payload"}``, a union discriminated by ``type``.

        Validation errors name fields as the request has them (``payload.seconds``, ``type``),
        without the union's tag that pydantic puts in front.
        """
        variants = [self._request_variant(t) for t in self]
        union: Any = (
            Annotated[functools.reduce(operator.or_, variants), Field(discriminator="type")]
            if len(variants) > 1
            else variants[0]
        )
        names = ", ".join(repr(name) for name in self._types)

        class JobCreate(RootModel[union]):
            """A job to run: its ``type`` and that type's ``payload``."""

            @model_validator(mode="wrap")
            @classmethod
            def _locations_as_sent(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
                try:
                    return handler(data)
                except ValidationError as error:
                    raise ValidationError.from_exception_data(
                        error.title, [_as_sent(problem, names) for problem in error.errors()]
                    ) from None

        return JobCreate

    def _request_variant(self, job_type: JobType) -> type[BaseModel]:
        payload_field: Any = Annotated[job_type.payload, AfterValidator(_storable)]
        tag: Any = Literal[job_type.name]
        default = (
            Field(default_factory=job_type.payload) if _takes_nothing(job_type.payload) else ...
        )
        model: type[BaseModel] = create_model(
            # Named after the type, not its payload model: two types may share a model.
            "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", job_type.name))
            + "Job",
            __config__=ConfigDict(
                extra="forbid",
                json_schema_extra={
                    "examples": [{"type": job_type.name, "payload": dict(job_type.example)}]
                },
            ),
            __doc__=job_type.description,
            type=(tag, ...),
            payload=(payload_field, default),
        )
        return model


def _as_sent(problem: Any, names: str) -> InitErrorDetails:
    location = tuple(problem["loc"])
    if problem["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = problem.get("ctx", {}).get("tag")
        message = (
            f"unknown job type {tag!r}; known: {{known}}"
            if tag is not None
            else "a job needs a type, one of {known}"
        )
        return {
            "type": PydanticCustomError("unknown_job_type", message, {"known": names}),
            "loc": ("type",),
            "input": problem["input"],
        }
    details: InitErrorDetails = {
        "type": problem["type"],
        "loc": location[1:],  # the union's tag
        "input": problem["input"],
    }
    if "ctx" in problem:
        details["ctx"] = problem["ctx"]
    return details


# -- the example application's job types ---------------------------------------------------------


class EchoPayload(BaseModel):
    """Any JSON object (nested at most 32 levels, no NUL characters): the result is the payload."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The schema states what jsonb stores (no NUL in keys or strings), so a client generated
        # from it, or a checker, never sends a payload only the database would refuse. Only
        # described: storable_payload validates (iteratively, with the depth limit).
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        target["additionalProperties"] = handler(TypeAdapter(StorableJson).core_schema)
        target["propertyNames"] = {"pattern": NUL_FREE_PATTERN}
        return schema


class SleepPayload(BaseModel):
    # Strict: what the schema calls a number or a boolean is one (no "1" or 0 for true).
    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(ge=0, le=3600, description="how long the job waits")


class FailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: NulFreeStr = Field(default="the fail job type always fails", max_length=200)
    retryable: bool = Field(
        default=True, description="false: the job is dead after its first attempt"
    )


JOB_TYPES = JobTypes(
    [
        JobType(
            name="echo",
            payload=EchoPayload,
            handler="worker.handlers:echo",
            description="Fast: the result is the payload.",
            timeout=10,
            example={"hello": "ecs"},
        ),
        JobType(
            name="sleep",
            payload=SleepPayload,
            handler="worker.handlers:sleep",
            description="Long-running: waits `seconds` (stands for slow I/O; outlives the "
            "visibility timeout, renews its lease). Development only unless enabled.",
            # A job's own limit, not the queue's or the scheduler's: its lease, renewed while
            # it runs, is what tells a live job from one whose worker died.
            timeout=3630,
            demo=True,
            example={"seconds": 5},
        ),
        JobType(
            name="fail",
            payload=FailPayload,
            handler="worker.handlers:fail",
            description="Always fails: shows retries, the `dead` status and error codes. "
            "Development only unless enabled.",
            timeout=10,
            max_attempts=3,
            demo=True,
            example={"reason": "shows a failure", "retryable": False},
        ),
    ]
)
"""Every job type of the example application."""
