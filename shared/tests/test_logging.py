"""JSON log lines: fields, per-task context, trace ids, server loggers and secret redaction."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from gunicorn.config import Config as GunicornConfig  # type: ignore[import-untyped]
from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from uvicorn_worker import UvicornWorker

from servicekit.logging import (
    configure_logging,
    log_context,
    logging_config,
    redact,
    register_secret,
)

CONFIGURED = (
    "",
    "py.warnings",
    "gunicorn.error",
    "gunicorn.access",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "botocore",
    "boto3",
    "urllib3",
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the next test."""
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in CONFIGURED
        for logger in [logging.getLogger(name)]
    }
    hooks = (sys.excepthook, threading.excepthook)
    yield
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hooks
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def read_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_line_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="api", env="test", level="debug")
    logging.getLogger("api.jobs").info("created %s jobs", 3)

    (line,) = read_lines(capsys)
    assert list(line)[:6] == ["time", "level", "service", "env", "logger", "message"]
    assert line["level"] == "INFO"
    assert line["service"] == "api"
    assert line["env"] == "test"
    assert line["logger"] == "api.jobs"
    assert line["message"] == "created 3 jobs"
    assert "request_id" not in line
    assert "trace_id" not in line
    assert "exception" not in line
    stamp = str(line["time"])
    assert stamp.endswith("Z")
    when = datetime.fromisoformat(stamp)
    assert when.tzinfo is not None
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)


def test_configuring_twice_still_writes_each_record_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="api", env="test")
    configure_logging(service="api", env="test")
    logging.getLogger("x").warning("once")
    assert [line["message"] for line in read_lines(capsys)] == ["once"]


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="api", env="test", level="WARNING")
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [line["message"] for line in read_lines(capsys)] == ["shown"]


def test_context_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="worker", env="test")
    log = logging.getLogger("worker")
    with log_context(request_id="req-1", job_id="job-1"):
        log.info("outer")
        with log_context(job_id="job-2"):
            log.info("inner", extra={"attempt": 2})
        log.info("outer again", extra={"job_id": "explicit"})
    log.info("outside")

    outer, inner, again, outside = read_lines(capsys)
    assert (outer["request_id"], outer["job_id"]) == ("req-1", "job-1")
    assert (inner["request_id"], inner["job_id"], inner["attempt"]) == ("req-1", "job-2", 2)
    assert again["job_id"] == "explicit"
    assert "request_id" not in outside
    assert "job_id" not in outside


def test_threads_keep_their_own_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="worker", env="test")
    log = logging.getLogger("worker")
    # Both threads are inside their blocks at once, so a shared (non-context) store would mix.
    both_inside = threading.Barrier(2, timeout=10)

    def handle(request_id: str) -> None:
        with log_context(request_id=request_id):
            both_inside.wait()
            log.info(request_id)
            both_inside.wait()

    threads = [threading.Thread(target=handle, args=(f"req-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    lines = read_lines(capsys)
    assert len(lines) == 2
    assert all(line["request_id"] == line["message"] for line in lines)


def test_asyncio_tasks_keep_their_own_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="api", env="test")
    log = logging.getLogger("api")

    async def handle(request_id: str) -> None:
        with log_context(request_id=request_id):
            await asyncio.sleep(0)  # let the other task enter its block
            log.info(request_id)

    async def main() -> None:
        await asyncio.gather(handle("req-a"), handle("req-b"))

    asyncio.run(main())
    lines = read_lines(capsys)
    assert sorted(str(line["message"]) for line in lines) == ["req-a", "req-b"]
    assert all(line["request_id"] == line["message"] for line in lines)


def test_exception_is_one_field_of_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="api", env="test")
    try:
        raise ValueError("bad input")
    except ValueError:
        logging.getLogger("api").exception("request failed")

    output = capsys.readouterr().out
    assert output.count("\n") == 1
    line = json.loads(output)
    assert line["message"] == "request failed"
    assert line["level"] == "ERROR"
    assert str(line["exception"]).startswith("Traceback (most recent call last):")
    assert "ValueError: bad input" in str(line["exception"])


def test_trace_id_comes_from_the_current_span_in_xray_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="api", env="test")
    span = NonRecordingSpan(
        SpanContext(
            trace_id=0x5759E988BD862E3FE1BE46A994272793,
            span_id=0x53995C3F42CD8AD8,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    log = logging.getLogger("api")
    with trace.use_span(span):
        log.info("in span")
        with log_context(trace_id="1-00000000-bound"):
            log.info("bound wins")
    log.info("no span")

    in_span, bound, no_span = read_lines(capsys)
    assert in_span["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert bound["trace_id"] == "1-00000000-bound"
    assert "trace_id" not in no_span


def test_server_loggers_use_the_json_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    # What an in-process uvicorn.Config(log_level="warning") leaves behind (the issuer's test
    # server): the configuration must not inherit it.
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    configure_logging(service="api", env="test")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /health HTTP/1.1" 200')
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )

    access, error = read_lines(capsys)
    assert (access["logger"], access["service"]) == ("uvicorn.access", "api")
    assert (error["logger"], error["service"]) == ("uvicorn.error", "api")
    assert error["message"] == "Started server process [7]"
    assert "color_message" not in error


def test_gunicorn_accepts_the_config_as_logconfig_dict(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = GunicornConfig()
    cfg.set("logconfig_dict", logging_config(service="api", env="test"))
    gunicorn_log = GunicornLogger(cfg)
    gunicorn_log.info("Booting worker with pid: %s", 42)
    logging.getLogger("api").info("from the app")

    boot, app = read_lines(capsys)
    assert boot["logger"] == "gunicorn.error"
    assert boot["message"] == "Booting worker with pid: 42"
    assert (app["logger"], app["service"]) == ("api", "api")


def test_uvicorn_lines_stay_json_under_gunicorns_uvicorn_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = GunicornConfig()
    cfg.set("logconfig_dict", logging_config(service="api", env="test"))
    gunicorn_log = GunicornLogger(cfg)
    # Its constructor, run in gunicorn's master, rewires uvicorn's loggers after logconfig_dict.
    worker = UvicornWorker(0, os.getpid(), [], None, 30, cfg, gunicorn_log)
    worker.tmp.close()
    logging.getLogger("uvicorn.error").error("Application startup failed. Exiting.")

    (line,) = read_lines(capsys)
    assert (line["logger"], line["service"]) == ("uvicorn.error", "api")
    assert line["message"] == "Application startup failed. Exiting."
    # No handler: uvicorn skips its own plain access line (the app writes a JSON one).
    assert not logging.getLogger("uvicorn.access").hasHandlers()


def test_aws_libraries_log_warnings_only_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    credentials = logging.getLogger("botocore.credentials")
    configure_logging(service="worker", env="test", level="debug")
    credentials.info("Found credentials in environment variables.")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
    credentials.warning("a warning still shows")
    configure_logging(service="worker", env="test", levels={"botocore": "debug"})
    credentials.info("shown when asked for")

    assert [line["message"] for line in read_lines(capsys)] == [
        "a warning still shows",
        "shown when asked for",
    ]


def test_a_registered_secret_never_reaches_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "Tr0ub4dor&3-horse-battery"
    awkward = 'quote"and\\backslash-é'
    apostrophe = "it's-a-secret"
    register_secret(secret)
    register_secret(awkward)
    register_secret(apostrophe)
    configure_logging(service="api", env="test")
    log = logging.getLogger("api")

    log.info("connecting with password %s", secret)
    log.info("awkward %s / %r", awkward, awkward)
    log.info("quoted %r", f'say "{apostrophe}"')  # repr escapes its apostrophe: it\'s
    log.info("as a field", extra={"detail": {"nested": [secret]}})
    with log_context(request_id=secret):
        log.info("bound")
    passwords: dict[str, str] = {}
    try:
        try:
            passwords[secret]
        except KeyError as missing:
            raise RuntimeError(f"login failed for password={secret}") from missing
    except RuntimeError:
        log.exception("could not connect")

    output = capsys.readouterr().out
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 6
    for text in (output, *(json.dumps(line, ensure_ascii=False) for line in lines)):
        assert secret not in text
        assert awkward not in text
        assert repr(awkward)[1:-1] not in text
        assert "it\\'s-a-secret" not in text
    assert lines[0]["message"] == "connecting with password ***"
    assert lines[1]["message"] == "awkward *** / '***'"
    assert lines[2]["message"] == "quoted 'say \"***\"'"
    exception = str(lines[5]["exception"])
    assert "KeyError: '***'" in exception
    assert "RuntimeError: login failed for password=***" in exception


def test_short_values_are_not_masked() -> None:
    register_secret("12345")
    assert redact("port 12345") == "port 12345"


UNCAUGHT = """
import sys, threading
from servicekit.logging import configure_logging, register_secret

secret = sys.argv[1]
configure_logging(service="job", env="test")
register_secret(secret)
thread = threading.Thread(target=lambda: 1 / 0, name="helper")
thread.start()
thread.join()
raise RuntimeError(f"could not log in with {secret}")
"""


def test_uncaught_exceptions_become_redacted_json_lines() -> None:
    secret = "uncaught-s3cret-value"
    result = subprocess.run(
        [sys.executable, "-c", UNCAUGHT, secret],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert secret not in result.stdout + result.stderr
    assert result.stderr == ""
    in_thread, in_main = (json.loads(line) for line in result.stdout.splitlines())
    assert in_thread["message"] == "uncaught exception in thread helper"
    assert "ZeroDivisionError" in str(in_thread["exception"])
    assert in_main["level"] == "CRITICAL"
    assert "RuntimeError: could not log in with ***" in str(in_main["exception"])
