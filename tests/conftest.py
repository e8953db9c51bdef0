"""The composed suite as a fixture: ``docker compose up --build``, once per test session, shared by
every module that takes ``suite`` (the end-to-end flows, the API's contract). The harness itself
is tests/compose_suite.py (the fault tests bring up a project of their own with it).

Needs a Docker engine with Compose v2 (skipped with the reason when there is none; CI installs
one). Image names come from the environment like any `docker compose` run, so CI points them at
local stand-ins (.ci/compose.env) and a laptop uses the public images. The project name and the
API port are the tests' own, so they never touch a suite a developer already has up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from compose_suite import Suite, running_suite

# Overridable so two checkouts on one machine can run it at once.
PROJECT = os.environ.get("E2E_PROJECT", "ecs-suite-e2e")


@pytest.fixture(scope="session")
def suite(compose_v2: None) -> Iterator[Suite]:
    with running_suite(PROJECT) as running:
        yield running
