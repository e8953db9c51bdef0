"""Alembic's environment: runs the versions on the command's connection, one migrator at a time.

Only :mod:`jobs.migrations` runs this (it passes the connection in ``config.attributes``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from jobs.migrations import LOCK_KEY

config = context.config
connection: Connection | None = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations with `jobs-migrate` (offline --sql is not supported)")

# A session-level advisory lock: a second migrator waits here until the first is done, then finds
# the schema at its target and does nothing. The server releases it if this process dies.
connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
try:
    # Set after the advisory wait, so it bounds only DDL stuck behind busy application
    # transactions (which would otherwise queue every query behind the migration).
    connection.execute(
        text("SELECT set_config('lock_timeout', :value, false)"),
        {"value": config.attributes["lock_timeout"]},
    )
    connection.commit()
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
finally:
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
    connection.commit()
