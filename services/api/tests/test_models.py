"""The request bodies against what the rest of the suite expects of them."""

from __future__ import annotations

from api.models import JobType
from worker.handlers import HANDLERS


def test_the_api_accepts_exactly_the_job_types_the_worker_handles() -> None:
    # The API's image holds no worker code, so it keeps its own list: this keeps the two equal.
    # One the worker lacks would be accepted, then retried until it is dead.
    assert {job_type.value for job_type in JobType} == set(HANDLERS)
