"""gunicorn's settings for the API (``--config python:api.gunicorn_conf``, see :mod:`api.serve`).

A module of the package rather than a file beside it, so the image, which holds the installed
package only, has it too. Read by the master, before any worker exists: only the environment is
consulted here. The master imports the app (``preload_app``) but runs nothing of it: settings
(env + Parameter Store + secrets), database pools and AWS clients are made in each worker after
fork, by the app's lifespan, so no connection or lock crosses the fork.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from servicekit import aws
from servicekit.logging import logging_config

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "uvicorn_worker.UvicornWorker"
# 2 x vCPU + 1 for the task's 0.5 vCPU (512 CPU units); the task definition sets
# WEB_CONCURRENCY for other sizes. Each worker is one event loop plus a thread pool for the
# blocking database and AWS calls.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# The master imports the app once and the workers inherit it through fork, instead of each
# worker importing FastAPI, pydantic, boto3 and psycopg itself: on the task's 0.5 vCPU that halves
# the start-up's import work (about 1 s of CPU a worker). Safe because importing api.main builds
# nothing (no client, pool, thread or socket: tests/test_main.py checks it); all of that is made
# by the lifespan, in each worker after fork.
preload_app = True
# Longer than the ALB's 60 s idle timeout, so the ALB always closes an idle connection first;
# the other way round it may send a request on a connection the worker is closing (a 502).
keepalive = 75
# ECS sends SIGTERM, waits stopTimeout (30 s), then SIGKILL: requests in flight get 25 s.
graceful_timeout = 25
# Tasks accept traffic only from the ALB's security group, whose node addresses change: trust
# X-Forwarded-For/-Proto from any peer so request.client and the scheme are the real ones.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")
# The app writes its own JSON access line (with request id, trace id and latency; health checks
# left out); gunicorn's would be a second, plain one.
accesslog = None
# Every line of the master and the workers as JSON on stdout (servicekit's formatter, uvicorn's
# own lines included: see servicekit.logging on UvicornWorker); the workers inherit it through
# fork. The app's lifespan then sets the level from its settings.
logconfig_dict = logging_config(
    service=os.environ.get("SERVICE_NAME", "api"),
    env=os.environ.get("APP_ENV", "development"),
    level=os.environ.get("LOG_LEVEL", "INFO"),
)
proc_name = "api"
# gunicorn >= 25.1 opens a control socket for `gunicornc` under $HOME by default: nothing in a
# task uses it, the image's user has no home, and two servers on one host would share the path.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """In the master, before any fork: the AWS models every worker's runtime needs (Parameter
    Store and Secrets Manager for settings and flags, SQS for the relay), parsed once; and the
    modules each worker would otherwise import after fork: uvicorn's event loop and HTTP parser
    (``loop="auto"``, ``http="auto"``) and anyio's asyncio backend (imported by the lifespan's
    first ``run_in_threadpool``): about 65 ms of CPU, once instead of in each worker."""
    aws.load_models("ssm", "secretsmanager", "sqs")
    for module in ("uvloop", "uvicorn.protocols.http.httptools_impl", "anyio._backends._asyncio"):
        importlib.import_module(module)


def post_fork(server: Any, worker: Any) -> None:
    """Per worker: no AWS client from the master."""
    aws.reset_clients()
