"""The API with authentication taken out, for bench/api.py's "auth off" rows only.

Served by gunicorn as ``bench.unauthenticated:app``: the same app, middleware and routes, with
the bearer-token dependency replaced by a coroutine handing back a fixed caller (no header
parsing, no verification, no threadpool hop), so the difference to the real API is everything
authentication costs. A module of its own: bench/api.py, run as a script, hides the ``api``
package.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.core.middleware import HealthCheck
from api.core.security import ADMIN, Principal
from api.deps import authenticate
from api.main import create_app

_CALLER = Principal(subject="bench", scopes=frozenset({ADMIN}))


async def _fixed_caller() -> Principal:
    return _CALLER


def _unauthenticated() -> HealthCheck:
    app = create_app()
    assert isinstance(app.app, FastAPI)
    app.app.dependency_overrides[authenticate] = _fixed_caller
    return app


app = _unauthenticated()
