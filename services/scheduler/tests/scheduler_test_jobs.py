"""Registries for the scheduler's process tests, picked with SCHEDULER_REGISTRY.

``serving`` fires every second (EventBridge's finest rate is a minute, too slow for a test), so it
allows second rates and refuses to export. ``dying`` has one job that never returns and a short
timeout, so a run whose process is killed is told from a live one in seconds. Every job writes
to the test's ``ticks`` table.
"""

from __future__ import annotations

import os

from scheduler.jobs import Resources
from servicekit.scheduling import JobContext, JobRegistry

serving: JobRegistry[Resources] = JobRegistry(allow_second_rates=True)
registry: JobRegistry[Resources] = JobRegistry()
dying: JobRegistry[Resources] = JobRegistry()


def _tick(context: JobContext[Resources]) -> None:
    with context.deps.database.connection() as conn:
        conn.execute(
            "INSERT INTO ticks (job, slot, pid) VALUES (%s, %s, %s)",
            (context.job, context.slot, os.getpid()),
        )


serving.add("tick", _tick, schedule="rate(1 second)", timeout=5)
registry.add("tick", _tick, schedule="rate(1 minute)", timeout=5)


@registry.job("boom", schedule="rate(1 minute)", timeout=5)
def boom(context: JobContext[Resources]) -> None:
    """Always fails."""
    raise RuntimeError("boom on purpose")


@registry.job("slow", schedule="rate(1 minute)", timeout=60)
def slow(context: JobContext[Resources]) -> None:
    """Ticks, then works in small steps until it is told to stop."""
    _tick(context)
    while True:
        context.check()
        context.wait(0.05)


@dying.job("hang", schedule="rate(1 minute)", timeout=5)
def hang(context: JobContext[Resources]) -> None:
    """Ticks, then waits past its timeout (its process is killed before it is abandoned)."""
    _tick(context)
    context.wait(600)
