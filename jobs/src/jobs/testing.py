"""pytest fixtures of the jobs domain (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

import pytest

from servicekit.testing import Database


@pytest.fixture
def migrated_db(postgres_db: Database) -> Database:
    """``postgres_db`` (servicekit's fixture) with the jobs schema's migrations applied."""
    from jobs import migrations  # noqa: PLC0415 - needs the jobs package's migrations extra

    migrations.upgrade(postgres_db.conninfo())
    return postgres_db
