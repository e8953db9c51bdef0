"""The service's command, ``api``: what the image runs (``service.toml``'s ``command``).

It becomes the gunicorn master (exec: the same process, so PID 1 of the container receives
ECS's SIGTERM itself) serving :data:`api.main.app` with :mod:`api.gunicorn_conf`. Tune it with
the environment (``WEB_CONCURRENCY``, ``PORT``, ``GUNICORN_CMD_ARGS``), never with
``uvicorn --workers``: that does not set TCP_NODELAY here, and every keep-alive request waits
for a delayed ACK (~44 ms).
"""

from __future__ import annotations

import os
import sys

__all__ = ["GUNICORN_ARGS", "main"]

GUNICORN_ARGS = ("--config", "python:api.gunicorn_conf", "api.main:app")


def main() -> None:
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", *GUNICORN_ARGS])  # noqa: S606
