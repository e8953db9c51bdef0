"""The request bodies against the job types' registry (the one list of job types)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from api.models import JobCreate
from jobs.types import JOB_TYPES


def test_every_registered_type_is_accepted_with_its_payload_model() -> None:
    for job_type in JOB_TYPES:
        request = JobCreate.model_validate({"type": job_type.name, "payload": job_type.example})
        assert request.root.type == job_type.name
        assert isinstance(request.root.payload, job_type.payload)


def test_an_unregistered_type_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError) as refused:
        JobCreate.model_validate({"type": "nope"})
    [problem] = refused.value.errors()
    assert problem["loc"] == ("type",)
    assert problem["type"] == "unknown_job_type"
    assert all(repr(name) in problem["msg"] for name in JOB_TYPES.names())


def test_payload_models_are_pydantic_models() -> None:
    assert all(issubclass(job_type.payload, BaseModel) for job_type in JOB_TYPES)
