"""Schema migrations (alembic), behind the jobs package's ``migrations`` extra.

They run only through this explicit command, never at a service's start: a one-off ECS task (the
scheduler's task definition, the maintenance service whose image carries the extra, with a
command override) before a deployment, or compose's init step. The api and worker images leave
alembic and SQLAlchemy out: they never migrate, and it keeps their images about 35 MB smaller.

    jobs-migrate upgrade               # credentials from DB_SECRET, read as the services do
    jobs-migrate --conninfo "host=... dbname=... user=... password=..." upgrade
    python -m jobs.migrations current

Without ``--conninfo`` the command loads :class:`MigrationSettings` like a service loads its
settings (``APP_NAME``, ``APP_ENV``, ``SERVICE_NAME``, ``DB_SECRET``; TLS from ``database.*``).
Two copies at once are safe: ``env.py`` takes a PostgreSQL advisory lock first, so the second
waits, then finds the schema at its target and does nothing.

SQLAlchemy is only alembic's connection layer here; versions are raw SQL in ``op.execute``. To add
one: ``versions/NNNN_name.py`` with ``revision = "NNNN_name"`` and ``down_revision`` the previous
revision's id.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

try:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection, create_engine
    from sqlalchemy.pool import NullPool
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "jobs.migrations needs alembic and SQLAlchemy: install `jobs[migrations]` "
        "(the scheduler image has it; run migrations there)"
    ) from error

from servicekit import db
from servicekit.errors import ConfigurationError
from servicekit.logging import configure_logging

__all__ = [
    "LOCK_KEY",
    "Connect",
    "MigrationSettings",
    "current",
    "downgrade",
    "heads",
    "main",
    "upgrade",
]

# The pg_advisory_lock key every migrator takes: fixed, and unlikely to clash with another use.
LOCK_KEY = 7_240_193_886_311_457
DEFAULT_LOCK_TIMEOUT = "10s"

# A libpq connection string, or a function returning a new psycopg connection (tuple rows).
Connect = str | Callable[[], psycopg.Connection[Any]]

_log = logging.getLogger(__name__)


class MigrationSettings(db.DatabaseServiceSettings):
    """What the command reads when no connection string is given (TLS refused as a service's)."""

    # A migration may rewrite a table or build an index for minutes: no statement limit (lock
    # waits are bounded by --lock-timeout).
    database: db.DatabaseSettings = db.DatabaseSettings(statement_timeout_ms=0)


def _config(
    connection: Connection | None = None, lock_timeout: str = DEFAULT_LOCK_TIMEOUT
) -> Config:
    config = Config(attributes={"connection": connection, "lock_timeout": lock_timeout})
    config.set_main_option("script_location", str(Path(__file__).resolve().parent))
    config.set_main_option("path_separator", "os")
    return config


@contextmanager
def _connection(connect: Connect) -> Iterator[Connection]:
    if isinstance(connect, str):
        conninfo = connect

        def connect_now() -> psycopg.Connection[Any]:
            return psycopg.connect(conninfo)
    else:
        connect_now = connect
    engine = create_engine("postgresql+psycopg://", creator=connect_now, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def upgrade(
    connect: Connect, revision: str = "head", *, lock_timeout: str = DEFAULT_LOCK_TIMEOUT
) -> None:
    """Apply the versions up to ``revision`` (a no-op when the schema is there already)."""
    with _connection(connect) as connection:
        command.upgrade(_config(connection, lock_timeout), revision)


def downgrade(connect: Connect, revision: str, *, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> None:
    """Revert to ``revision`` (``base``: nothing left)."""
    with _connection(connect) as connection:
        command.downgrade(_config(connection, lock_timeout), revision)


def current(connect: Connect) -> tuple[str, ...]:
    """The revisions the database is at (empty before the first upgrade)."""
    with _connection(connect) as connection:
        return tuple(MigrationContext.configure(connection).get_current_heads())


def heads() -> tuple[str, ...]:
    """The newest revisions shipped in this package."""
    return tuple(ScriptDirectory.from_config(_config()).get_heads())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs-migrate",
        description="Apply or inspect the database schema (run as an explicit step, never at "
        "service start). Credentials: the DB_SECRET secret, read as the services read it.",
    )
    parser.add_argument(
        "--conninfo",
        help="a libpq connection string to use instead of DB_SECRET (tests, local runs); "
        "PG* environment variables fill in what it leaves out",
    )
    parser.add_argument(
        "--lock-timeout",
        default=DEFAULT_LOCK_TIMEOUT,
        help="give up a DDL statement that waits this long for a table lock (default %(default)s)",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("upgrade", help="apply versions up to REVISION (default head)")
    up.add_argument("revision", nargs="?", default="head")
    down = actions.add_parser("downgrade", help="revert to REVISION (base: drop everything)")
    down.add_argument("revision")
    actions.add_parser("current", help="print the revisions the database is at")
    return parser


def _connect_from_settings() -> Callable[[], psycopg.Connection[Any]]:
    settings = MigrationSettings.load()

    def connect_now() -> psycopg.Connection[Any]:
        return db.connect(settings.db_secret, settings.database, application_name="jobs-migrate")

    return connect_now


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jobs-migrate`` command: 0 done, 1 failed, 2 configuration missing or invalid."""
    args = _parser().parse_args(argv)
    configure_logging(
        service=os.environ.get("SERVICE_NAME", "migrate"),
        env=os.environ.get("APP_ENV", "development"),
    )
    try:
        connect: Connect = args.conninfo if args.conninfo is not None else _connect_from_settings()
    except ConfigurationError as error:
        _log.error("cannot migrate: %s", error)
        return 2
    try:
        if args.action == "upgrade":
            upgrade(connect, args.revision, lock_timeout=args.lock_timeout)
        elif args.action == "downgrade":
            downgrade(connect, args.revision, lock_timeout=args.lock_timeout)
        else:
            print("\n".join(current(connect)) or "(none)")
    except Exception:
        _log.exception("migration %s failed", args.action)
        return 1
    return 0
