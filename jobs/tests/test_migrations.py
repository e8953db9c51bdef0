"""Migrations: applied by the explicit command, idempotent, and safe when two run at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from jobs import migrations
from servicekit import aws
from servicekit.testing import Database, MotoServer, wait_until


def _tables(database: Database) -> set[str]:
    with psycopg.connect(database.conninfo()) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {name for (name,) in rows}


def _migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.migrations", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_first_revision_id_is_the_one_later_revisions_build_on() -> None:
    script = ScriptDirectory(str(Path(migrations.__file__).parent))
    first = script.get_revision("0001_jobs")
    assert first is not None
    assert first.down_revision is None


def test_upgrade_applies_once_and_again_is_a_no_op(postgres_db: Database) -> None:
    assert migrations.current(postgres_db.conninfo()) == ()

    migrations.upgrade(postgres_db.conninfo())
    migrations.upgrade(postgres_db.conninfo())

    assert migrations.current(postgres_db.conninfo()) == migrations.heads()
    assert {"jobs", "alembic_version"} <= _tables(postgres_db)


def test_downgrade_to_base_and_back(postgres_db: Database) -> None:
    migrations.upgrade(postgres_db.conninfo())

    migrations.downgrade(postgres_db.conninfo(), "base")
    assert migrations.current(postgres_db.conninfo()) == ()
    assert "jobs" not in _tables(postgres_db)

    migrations.upgrade(postgres_db.conninfo())
    assert "jobs" in _tables(postgres_db)


def test_two_commands_at_once_apply_the_schema_once(postgres_db: Database) -> None:
    conninfo = postgres_db.conninfo()
    # Hold the migrators' lock so both processes are certainly inside the migration at once.
    with psycopg.connect(conninfo, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrations.LOCK_KEY,))
        runs = [_migrate("--conninfo", conninfo, "upgrade") for _ in range(2)]
        try:

            def both_waiting() -> bool:
                assert all(run.poll() is None for run in runs), "a migrator exited early"
                return _lock_waiters(holder) >= 2

            wait_until(both_waiting, 60, "both migrators to wait on the lock")
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.LOCK_KEY,))
            outputs = [run.communicate(timeout=60)[0] for run in runs]
        finally:
            for run in runs:
                run.kill()
                run.wait()

    assert [run.returncode for run in runs] == [0, 0], outputs
    applied = [line for output in outputs for line in output.splitlines() if "-> 0001_jobs" in line]
    assert len(applied) == 1, outputs
    assert migrations.current(conninfo) == migrations.heads()


def _lock_waiters(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    assert row is not None
    return row[0]


def test_command_reads_credentials_from_the_secret(
    aws_env: MotoServer, postgres_db: Database
) -> None:
    aws.client("secretsmanager").create_secret(
        Name="suite/test/db", SecretString=json.dumps(postgres_db.rds_secret())
    )
    env = os.environ | {
        "APP_NAME": "suite",
        "APP_ENV": "test",
        "SERVICE_NAME": "api",
        "DB_SECRET": "suite/test/db",
        **postgres_db.verify_full_env(),
    }

    upgrade = _migrate("upgrade", env=env)
    output = upgrade.communicate(timeout=60)[0]
    assert upgrade.returncode == 0, output
    assert migrations.current(postgres_db.conninfo()) == migrations.heads()
    assert postgres_db.password not in output


@pytest.mark.usefixtures("aws_env")
def test_command_without_credentials_names_what_is_missing() -> None:
    env = {key: value for key, value in os.environ.items() if key != "DB_SECRET"}
    env |= {"APP_NAME": "suite", "APP_ENV": "test", "SERVICE_NAME": "api"}

    run = _migrate("upgrade", env=env)
    output = run.communicate(timeout=60)[0]

    assert run.returncode == 2, output
    assert "DB_SECRET" in output


def test_jobs_from_before_owners_belong_to_legacy(postgres_db: Database) -> None:
    conninfo = postgres_db.conninfo()
    migrations.upgrade(conninfo, "0003_job_effects")
    with psycopg.connect(conninfo) as conn:
        conn.execute("INSERT INTO jobs (type, idempotency_key) VALUES ('echo', 'k')")

    migrations.upgrade(conninfo)

    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT owner FROM jobs").fetchall() == [("legacy",)]
        # New rows must name their owner; keys are unique per owner only.
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("INSERT INTO jobs (type) VALUES ('echo')")
        conn.rollback()
        conn.execute("INSERT INTO jobs (type, owner, idempotency_key) VALUES ('echo', 'a', 'k')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO jobs (type, owner, idempotency_key) VALUES ('echo', 'a', 'k')"
            )
