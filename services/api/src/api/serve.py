"""The service's command, ``api``: what the image runs (``service.toml``'s ``command``).

It becomes the gunicorn master serving :data:`api.main.app` with :mod:`api.gunicorn_conf`, in
this process: PID 1 of the container, so ECS's SIGTERM reaches the master itself (an exec of
``python -m gunicorn`` would too, but starts a second interpreter on the task's 0.5 vCPU before
the first answer). Tune it with the environment (``WEB_CONCURRENCY``, ``PORT``,
``GUNICORN_CMD_ARGS``), never with ``uvicorn --workers``: that does not set TCP_NODELAY here,
and every keep-alive request waits for a delayed ACK (~44 ms).
"""

from __future__ import annotations

import sys

from gunicorn.app.wsgiapp import run

__all__ = ["GUNICORN_ARGS", "main"]

GUNICORN_ARGS = ("--config", "python:api.gunicorn_conf", "api.main:app")


def main() -> None:
    # gunicorn reads its command line from sys.argv; the command itself takes no arguments.
    sys.argv[1:] = GUNICORN_ARGS
    run(prog="api")
