"""JSON log lines on stdout, one object per line, with registered secrets masked.

CloudWatch Logs (the ``awslogs`` driver) turns each stdout line into one event, so a multi-line
traceback printed the usual way becomes dozens of unrelated events; here it is one field of one
line. Fields: ``time`` (ISO-8601 UTC), ``level``, ``service``, ``env``, ``logger``, ``message``,
then whatever :func:`log_context` bound (``request_id``, ``job_id``, ...) and ``extra=`` added,
``trace_id`` (bound, or the current OpenTelemetry span's in X-Ray form) and ``exception``.

:func:`register_secret` masks a value in every later line, tracebacks included: the whole line is
redacted after it is built, so no field can carry the value past the mask.

Under gunicorn pass :func:`logging_config` as ``logconfig_dict`` so its and uvicorn's loggers use
the same formatter in the master and every worker. The UvicornWorker caveat: its constructor,
run in the master after ``logconfig_dict`` is applied, gives ``uvicorn.error`` the handlers of
``gunicorn.error`` and turns its propagation off. Were ``gunicorn.error`` only propagating to the
root's handler, ``uvicorn.error`` (a failed start-up included) would have nowhere to write; so
the error loggers of both servers hold the JSON handler themselves and do not propagate, and the
copy is the JSON handler. The access loggers hold none and propagate: UvicornWorker gives
``uvicorn.access`` the handlers of ``gunicorn.access`` (none) and stops its propagation too, and
uvicorn writes its plain access line only when that logger has a handler: the app writes its own.

botocore, boto3 and urllib3 log at WARNING and up (:data:`QUIET_LOGGERS`): their INFO lines
("Found credentials in environment variables") are chatter at every start. ``levels=`` overrides
a logger's level, e.g. ``{"botocore": "DEBUG"}``.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any

from servicekit.tracing import current_trace_id

__all__ = [
    "MIN_SECRET_LENGTH",
    "QUIET_LOGGERS",
    "JsonFormatter",
    "configure_logging",
    "log_context",
    "logging_config",
    "redact",
    "register_secret",
]

MASK = "***"
# Shorter values ("admin", "5432", "true") would mask ordinary words all over the logs.
MIN_SECRET_LENGTH = 6

# The servers' own loggers; without this they keep plain-text handlers (or none). The error
# loggers write through the JSON handler themselves, the others propagate to the root's (see the
# module docstring for why UvicornWorker needs it that way).
_SERVER_ERROR_LOGGERS = ("gunicorn.error", "uvicorn.error")
_SERVER_PROPAGATING_LOGGERS = ("gunicorn.access", "uvicorn", "uvicorn.access")

QUIET_LOGGERS: Mapping[str, str] = MappingProxyType(
    {"botocore": "WARNING", "boto3": "WARNING", "urllib3": "WARNING"}
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``. uvicorn adds
# ``color_message`` (the message again, with terminal colour codes) to its own records.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)

_EMPTY: Mapping[str, object] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar("servicekit_log_context")

_secrets_lock = threading.Lock()
_secret_forms: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None

_log = logging.getLogger(__name__)


def register_secret(value: str) -> None:
    """Mask ``value`` in every later log line (ignored below MIN_SECRET_LENGTH characters)."""
    global _secret_pattern
    if len(value) < MIN_SECRET_LENGTH:
        return
    # The value can reach a line as itself or inside a repr (exception args, KeyError), which
    # doubles backslashes and escapes apostrophes when the string also holds a double quote (the
    # repr of value + '" is that form, ending in \'"'); the line JSON-escapes all of these.
    reprs = {repr(value)[1:-1], repr(f"{value}'\"")[1:-4]}
    plain = {value, *reprs}
    forms = plain | {json.dumps(form)[1:-1] for form in plain}
    with _secrets_lock:
        if forms <= _secret_forms:
            return
        _secret_forms.update(forms)
        # Longest first so a secret containing another is masked whole.
        ordered = sorted(_secret_forms, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(map(re.escape, ordered)))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _secret_pattern  # replaced whole under the lock, so read without it
    return text if pattern is None else pattern.sub(MASK, text)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every line logged in this block (this thread or asyncio task only)."""
    token = _context.set({**_context.get(_EMPTY), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object, secrets masked."""

    def __init__(self, *, service: str, env: str) -> None:
        super().__init__()
        self.service = service
        self.env = env

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "env": self.env,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                line.setdefault(key, value)
        for key, value in _context.get(_EMPTY).items():
            line.setdefault(key, value)
        if "trace_id" not in line:
            trace_id = current_trace_id()
            if trace_id is not None:
                line["trace_id"] = trace_id
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(line, default=str))


def logging_config(
    *, service: str, env: str, level: str = "INFO", levels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A ``dictConfig`` dict for JSON lines on stdout; also gunicorn's ``logconfig_dict``.

    ``levels`` sets loggers' own levels, over :data:`QUIET_LOGGERS`.
    """
    # Configuring a logger drops its handlers; propagating sends its records to the root's. The
    # level is set too (NOTSET: the root's), or one a server set before stays (an in-process
    # uvicorn.Config(log_level="warning") leaves uvicorn.error and uvicorn.access at WARNING).
    loggers: dict[str, dict[str, Any]] = {
        name: {"handlers": handlers, "propagate": not handlers, "level": "NOTSET"}
        for names, handlers in (
            (_SERVER_PROPAGATING_LOGGERS, []),
            (_SERVER_ERROR_LOGGERS, ["stdout"]),
        )
        for name in names
    }
    for name, logger_level in {**QUIET_LOGGERS, **(levels or {})}.items():
        loggers.setdefault(name, {})["level"] = logger_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service, "env": env}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": loggers,
    }


def configure_logging(
    *, service: str, env: str, level: str = "INFO", levels: Mapping[str, str] | None = None
) -> None:
    """Send every log record, warning and uncaught exception as a JSON line to stdout."""
    logging.config.dictConfig(logging_config(service=service, env=env, level=level, levels=levels))
    logging.captureWarnings(True)
    # The default hooks print the traceback raw to stderr: unredacted and one event per line.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    _log.critical("uncaught exception", exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "unknown"
    _log.critical(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
