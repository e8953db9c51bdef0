"""FastAPI dependencies: the worker's :class:`~api.core.runtime.Runtime` and its parts."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from api.core.runtime import Runtime

__all__ = ["RuntimeDep", "get_runtime"]


def get_runtime(request: Request) -> Runtime:
    """The runtime the lifespan built (ASGI lifespan state, copied into every request)."""
    return cast(Runtime, request.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
