"""``suite logs``: a service's CloudWatch log group (or its compose container's output), its
JSON lines rendered for people.

``--follow`` uses CloudWatch Logs Live Tail (StartLiveTail: pushed within a second, no polling
cost) and falls back to polling FilterLogEvents where Live Tail is not served: an endpoint
override (an emulator) or a denied ``logs:StartLiveTail``. Live Tail sessions end after three
hours; a new one is started.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from servicekit import aws
from suite_tools.deployed import Deployed, call, error_code, instant, pages
from suite_tools.errors import CommandError, aws_error
from suite_tools.local import docker_binary

__all__ = [
    "Event",
    "LogQuery",
    "compose_logs",
    "filtered",
    "parse_since",
    "print_events",
    "render",
    "stream",
]

Write = Callable[[str], None]

POLL_SECONDS = 2.0
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Compose 2.26 can put an erase sequence before a line even when stdout is not a terminal.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_since(text: str) -> datetime:
    """``10m``, ``2h``, ``1d`` ago, or an ISO-8601 time with an offset."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = match.groups()
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (10m, 2h, 1d) nor an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone (e.g. 2026-03-10T12:00:00Z)")
    return moment


@dataclass(frozen=True)
class Event:
    timestamp: int
    """epoch milliseconds"""
    message: str
    id: str = ""


@dataclass(frozen=True)
class LogQuery:
    """What to show: the window's start, and the text and trace id every line must carry."""

    since: datetime
    text: str | None = None
    trace: str | None = None

    def pattern(self) -> str:
        """CloudWatch's filter: one quoted term (the trace id, else the text); the other is
        checked here, so the server never sees a pattern it could read differently."""
        term = self.trace or self.text
        return f'"{term.replace(chr(34), "")}"' if term else ""

    def keeps(self, message: str) -> bool:
        if self.text and self.text not in message:
            return False
        if self.trace:
            line = _json(message)
            return self.trace in str(line.get("trace_id", "")) if line else self.trace in message
        return True


def _json(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        line = json.loads(message)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None


def render(event: Event) -> str:
    """``time LEVEL [job=..] [trace=..] message`` for a JSON line, else the line as it is."""
    line = _json(event.message)
    if line is None:
        return f"{instant(event.timestamp)} {event.message.rstrip()}"
    parts = [str(line.get("time") or instant(event.timestamp)), f"{line.get('level', '-'):<7}"]
    for key, label in (("job_id", "job"), ("job", "job"), ("trace_id", "trace")):
        if line.get(key) and not (label == "job" and any(p.startswith("job=") for p in parts)):
            parts.append(f"{label}={line[key]}")
    message = line.get("message")
    if message is None and "_aws" in line:  # an EMF metrics line: show its values
        message = "metrics " + " ".join(
            f"{key}={value}" for key, value in line.items() if key != "_aws"
        )
    parts.append(str(message))
    text = " ".join(parts)
    if line.get("exception"):
        text += "\n" + str(line["exception"]).rstrip()
    return text


# -- CloudWatch Logs ----------------------------------------------------------------------


def stream(deployed: Deployed, query: LogQuery, *, follow: bool, write: Write) -> Iterator[Event]:
    """The window's events, oldest first; then, with ``follow``, new ones until interrupted."""
    name, _ = deployed.only()
    group = deployed.names.log_group(name)
    last = int(query.since.timestamp() * 1000)
    seen: set[str] = set()
    for event in filtered(group, query, last):
        last = max(last, event.timestamp)
        seen.add(event.id)
        yield event
    if not follow:
        return
    tail = _live_tail(group, query, write)
    if tail is not None:
        yield from tail
        return
    while True:
        time.sleep(POLL_SECONDS)
        fresh = [event for event in filtered(group, query, last) if event.id not in seen]
        for event in fresh:
            if event.timestamp > last:
                last, seen = event.timestamp, set()
            seen.add(event.id)
            yield event


def filtered(group: str, query: LogQuery, start: int) -> Iterator[Event]:
    """The group's events from ``start`` (epoch ms) that ``query`` keeps, oldest first."""
    options: dict[str, Any] = {"logGroupName": group, "startTime": start}
    if query.pattern():
        options["filterPattern"] = query.pattern()
    try:
        for page in pages("logs", group, aws.client("logs"), "filter_log_events", **options):
            for item in page.get("events", []):
                if query.keeps(item["message"]):
                    yield Event(item["timestamp"], item["message"], item.get("eventId", ""))
    except CommandError as error:
        if isinstance(error.__cause__, ClientError) and (
            error_code(error.__cause__) == "ResourceNotFoundException"
        ):
            raise _no_group(group) from error
        raise


def _live_tail(group: str, query: LogQuery, write: Write) -> Iterator[Event] | None:
    """Live Tail's events, or None (and a note) where it is not served."""
    logs = aws.client("logs")
    arn = _group_arn(group)
    options: dict[str, Any] = {"logGroupIdentifiers": [arn]}
    if query.pattern():
        options["logEventFilterPattern"] = query.pattern()
    try:
        first = logs.start_live_tail(**options)
        events = iter(first["responseStream"])
        next(events, None)  # sessionStart
    except (ClientError, BotoCoreError) as error:
        if isinstance(error, ClientError) and error_code(error) == "ResourceNotFoundException":
            raise aws_error(error, service="logs", resource=group) from error
        write(f"live tail unavailable ({_first_line(error)}); polling every {POLL_SECONDS:g} s")
        return None
    return _tail_sessions(logs, options, events, query)


def _tail_sessions(
    logs: Any, options: dict[str, Any], events: Iterator[Any], query: LogQuery
) -> Iterator[Event]:
    while True:
        for item in events:
            for result in item.get("sessionUpdate", {}).get("sessionResults", []):
                if query.keeps(result["message"]):
                    yield Event(result["timestamp"], result["message"])
        # The session ended (three hours at most): start the next one.
        events = iter(call("logs", None, logs.start_live_tail, **options)["responseStream"])


def _group_arn(group: str) -> str:
    found = call(
        "logs",
        group,
        aws.client("logs").describe_log_groups,
        logGroupNamePrefix=group,
    )["logGroups"]
    for item in found:
        if item["logGroupName"] == group:
            # Live Tail wants the ARN without describe_log_groups' trailing ":*".
            return str(item["arn"]).removesuffix(":*")
    raise _no_group(group)


def _no_group(group: str) -> CommandError:
    return CommandError(f"no log group {group}: deploy the service's stack, or check --app/--env")


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


# -- docker compose -----------------------------------------------------------------------


def compose_logs(service: str, query: LogQuery, *, follow: bool) -> Iterable[Event]:
    """The compose container's output (``docker compose logs``) as events."""
    command = [docker_binary(), "compose", "logs", "--no-color", "--no-log-prefix", "--timestamps"]
    command += ["--since", query.since.astimezone(UTC).isoformat()]
    if follow:
        command.append("--follow")
    process = subprocess.Popen(  # noqa: S603 - docker, our own arguments
        [*command, service], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            stamp, _, message = _ANSI.sub("", raw).rstrip("\n").partition(" ")
            if not query.keeps(message):
                continue
            try:
                moment = datetime.fromisoformat(stamp)
            except ValueError:
                moment, message = datetime.now(UTC), f"{stamp} {message}"
            yield Event(int(moment.timestamp() * 1000), message)
    finally:
        if process.poll() is None:
            process.terminate()
        _, stderr = process.communicate()
    if process.returncode not in (0, -15):
        raise CommandError(f"docker compose logs {service}: {stderr.strip() or 'failed'}")


def print_events(events: Iterable[Event], *, raw: bool) -> None:
    for event in events:
        print(event.message if raw else render(event), flush=True)
