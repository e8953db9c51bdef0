"""FastAPI dependencies: the worker's :class:`~api.core.runtime.Runtime`, and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from api.core.runtime import Runtime

__all__ = ["Caller", "CallerDep", "RuntimeDep", "current_caller", "get_runtime"]

# PLACEHOLDER until JWT authentication is wired in: every request acts as this one caller.
LOCAL_CALLER = "local"


def get_runtime(request: Request) -> Runtime:
    """The runtime the lifespan built (ASGI lifespan state, copied into every request)."""
    return cast(Runtime, request.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@dataclass(frozen=True)
class Caller:
    """Who makes the request: owner of the jobs it creates, reader of its own (admin: of all).

    PLACEHOLDER: the authenticated ``api.core.security.Principal`` (same ``subject`` and
    ``is_admin``) replaces this class and :func:`current_caller`; the routes stay as they are.
    """

    subject: str
    is_admin: bool = False


def current_caller() -> Caller:
    """PLACEHOLDER: the one local caller (see :class:`Caller`)."""
    return Caller(subject=LOCAL_CALLER)


CallerDep = Annotated[Caller, Depends(current_caller)]
