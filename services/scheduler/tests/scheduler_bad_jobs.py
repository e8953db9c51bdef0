"""A registry with an invalid schedule: importing it must fail, naming the job."""

from __future__ import annotations

from scheduler.jobs import Resources
from servicekit.scheduling import JobContext, JobRegistry

registry: JobRegistry[Resources] = JobRegistry()


# Both day fields given: EventBridge wants '?' in one of them (moto would accept it).
@registry.job("nightly-report", schedule="cron(0 3 * * * *)", timeout=60)
def nightly_report(context: JobContext[Resources]) -> None:
    """Never registered."""
