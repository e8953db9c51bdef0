"""A service's start-up and shut-down, in a real child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SERVICE = """
import logging, sys
from servicekit.process import run_service
from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    answer: int


def main(process):
    settings = process.load(Settings)
    stopping = process.lifecycle.stopping
    logging.getLogger("svc").info("answer %d, stopping: %s", settings.answer, stopping)
    return settings.answer


sys.exit(run_service("svc", main))
"""


def run(**environ: str) -> tuple[int, list[dict[str, object]]]:
    base = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME")}
    env = base | {"APP_NAME": "suite", "PARAMETER_STORE_ENABLED": "false"} | environ
    done = subprocess.run(
        [sys.executable, "-c", SERVICE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.stderr == ""
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_the_body_runs_with_logging_as_its_settings_say() -> None:
    code, lines = run(SERVICE_NAME="billing", APP_ENV="test", ANSWER="3")

    assert code == 3
    (line,) = lines
    assert (line["service"], line["env"], line["logger"]) == ("billing", "test", "svc")
    assert line["message"] == "answer 3, stopping: False"


def test_invalid_settings_exit_2_with_every_problem_in_one_json_line() -> None:
    code, lines = run(APP_ENV="test", ANSWER="many")

    assert code == 2
    (line,) = lines
    # Named from the environment (SERVICE_NAME is missing: the service's own name stands in).
    assert (line["level"], line["service"], line["env"], line["logger"]) == (
        "CRITICAL",
        "svc",
        "test",
        "svc",
    )
    message = str(line["message"])
    assert "service_name: missing; looked for environment variable SERVICE_NAME" in message
    assert "answer: Input should be a valid integer" in message
