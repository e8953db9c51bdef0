"""The repository's root conftest: the test tiers, and the composed suite's fixtures.

The harness lives in tests/compose_suite.py (on the path through pytest's ``pythonpath``); a
conftest.py of its own in tests/ would be imported as ``tests.conftest``, the name infra/tests'
conftest (a package) already has.

Every test gets the marker of its tier from what it needs (the fixtures it uses, directly or
through other fixtures, and where it lives), so a new test lands in the right tier without
anyone remembering to mark it. A test takes the highest tier of what it needs:

- ``unit``: nothing outside the process (or only short-lived subprocesses of its own);
- ``integration``: a real PostgreSQL cluster and/or moto's HTTP server;
- ``synth``: the CDK app synthesized (node and jsii), or the scaffold's generated copy of
  the repository (synthesized and tested in the background);
- ``compose``: a Docker engine (images built, containers or a compose project run).

``make test-fast`` runs ``-m "unit or integration"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["compose_suite"]

ROOT = Path(__file__).resolve().parent

# Highest first: a test needing several is marked by the first that matches. compose_v2:
# servicekit's check for an engine with Compose v2, which the compose harness's `suite` and every
# other compose project's fixture take; docker_client: the tools' engine. assembly and
# extended_root: infra/tests' synthesized apps; generated: the scaffold's copy of the repository.
TIER_FIXTURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("compose", frozenset({"compose_v2", "docker_client"})),
    ("synth", frozenset({"assembly", "extended_root", "generated"})),
    ("integration", frozenset({"moto_server", "postgres_cluster"})),
)
TIERS = ("unit", "integration", "synth", "compose")
# Tests that build CDK constructs themselves need the jsii runtime (node) all the same.
SYNTH_FOLDER = ROOT / "infra" / "tests"


def tier_of(item: pytest.Item) -> str:
    """The tier an item belongs to: from the fixtures it needs (directly or not), then its path."""
    needs = set(getattr(item, "fixturenames", ()))
    for tier, fixtures in TIER_FIXTURES:
        if needs & fixtures:
            return tier
    return "unit"


# tryfirst: the markers must be there before `-m` deselects by them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in TIERS):
            continue  # marked by hand: inference cannot see what it needs
        tier = tier_of(item)
        if tier in ("unit", "integration") and item.path.is_relative_to(SYNTH_FOLDER):
            tier = "synth"
        item.add_marker(tier)
