"""The pool against a real scram PostgreSQL: rotation without a redeploy, outages, TLS options."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from servicekit import aws
from servicekit.db import Database, DatabaseServiceSettings, DatabaseSettings, open_database
from servicekit.errors import ConfigurationError, DependencyUnavailable
from servicekit.secrets import SecretCache
from servicekit.settings import RdsSecret, SecretRef
from servicekit.testing import Database as PgDatabase
from servicekit.testing import MotoServer, PostgresCluster, make_server_tls, wait_until

SMALL_POOL = DatabaseSettings(pool_min_size=3, pool_size=3, pool_timeout=5)


@dataclass
class FixedCredentials:
    """Credentials that never change: for tests about the database, not the secret."""

    secret: RdsSecret

    def get(self) -> RdsSecret:
        return self.secret

    def refresh(self) -> RdsSecret:
        return self.secret


@dataclass
class CachedCredentials:
    """A provider over its own SecretCache, so a test chooses the TTL."""

    cache: SecretCache
    secret_id: str

    def get(self) -> RdsSecret:
        return self.cache.get_model(self.secret_id, RdsSecret)

    def refresh(self) -> RdsSecret:
        self.cache.refresh(self.secret_id)
        return self.get()


def ready(database: Database) -> bool:
    try:
        database.check()
    except DependencyUnavailable:
        return False
    return True


def unavailable(database: Database, reason: str, timeout: float = 30.0) -> DependencyUnavailable:
    """Poll check() until it fails saying ``reason`` (a first failure may still be a timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            database.check()
        except DependencyUnavailable as error:
            if reason in error.reason:
                return error
        assert time.monotonic() < deadline, f"check() never failed with {reason!r}"


def create_secret(secret: dict[str, str | int]) -> str:
    secret_id = f"suite/test/db-{secrets.token_hex(4)}"
    aws.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps(secret))
    return secret_id


def rotate_secret(secret_id: str, secret: dict[str, str | int]) -> None:
    """What a rotation function does to the secret: AWSPENDING, then AWSCURRENT moves to it."""
    client = aws.client("secretsmanager")
    stages = client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    old = next(version for version, names in stages.items() if "AWSCURRENT" in names)
    new = client.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps(secret), VersionStages=["AWSPENDING"]
    )["VersionId"]
    client.update_secret_version_stage(
        SecretId=secret_id, VersionStage="AWSCURRENT", MoveToVersionId=new, RemoveFromVersionId=old
    )


class Load:
    """Threads running one query per transaction through the pool, counting every failure."""

    def __init__(self, database: Database, threads: int = 4) -> None:
        self.database = database
        self.done = 0
        self.failures: list[BaseException] = []
        self.users: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.database.connection() as conn:
                    row = conn.execute("SELECT current_user AS name").fetchone()
            except Exception as error:
                with self._lock:
                    self.failures.append(error)
            else:
                with self._lock:
                    self.done += 1
                    self.users.add(row["name"] if row else "")

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=30)


def backends(cluster: PostgresCluster, name: str) -> list[tuple[str, datetime]]:
    """(user, backend start) of every connection the pool called ``name`` has open."""
    with psycopg.connect(cluster.admin.conninfo()) as conn:
        rows = conn.execute(
            "SELECT usename, backend_start FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    return [(user, started) for user, started in rows]


def server_now(cluster: PostgresCluster) -> datetime:
    with psycopg.connect(cluster.admin.conninfo()) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def test_connection_commits_or_rolls_back(postgres_db: PgDatabase) -> None:
    secret = RdsSecret.model_validate(postgres_db.rds_secret())
    with Database(FixedCredentials(secret), SMALL_POOL) as database:
        database.check()
        with database.connection() as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('kept')")

        def failing_handler() -> None:
            with database.connection() as conn:
                conn.execute("INSERT INTO notes VALUES ('dropped')")
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError):
            failing_handler()
        with database.connection() as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [{"body": "kept"}]


def test_single_user_rotation_needs_no_redeploy(
    aws_env: MotoServer,
    postgres_cluster: PostgresCluster,
    postgres_db: PgDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_id = create_secret(postgres_db.rds_secret())
    name = f"rotation-{secrets.token_hex(3)}"
    # The services' own provider: the process-wide cache, whose TTL (5 min) outlasts this test,
    # so the new password can only come from the refresh after the refused login.
    database = Database(SecretRef(secret_id, RdsSecret), SMALL_POOL, name=name)
    with database, Load(database).running() as load:
        wait_until(lambda: load.done > 50, what="load before the rotation")

        new_password = secrets.token_urlsafe(18)
        postgres_cluster.execute(f"ALTER ROLE {postgres_db.username} PASSWORD '{new_password}'")
        rotate_secret(secret_id, postgres_db.rds_secret() | {"password": new_password})
        rotated_at = server_now(postgres_cluster)
        served_before = load.done
        # The connections opened with the old password keep working: force new logins.
        database.pool.drain()

        def all_new() -> bool:
            opened = backends(postgres_cluster, name)
            return len(opened) == 3 and all(started > rotated_at for _, started in opened)

        wait_until(all_new, what="every connection to log in again")
        wait_until(lambda: load.done > served_before + 50, what="load after the rotation")

    assert load.failures == []
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_db.conninfo())  # the old password: refused now
    assert any("refused the login" in record.message for record in caplog.records)
    assert new_password not in caplog.text


def test_alternating_users_rotation_moves_to_the_other_user(
    aws_env: MotoServer, postgres_cluster: PostgresCluster, postgres_db: PgDatabase
) -> None:
    clone = f"{postgres_db.username}_clone"
    clone_password = secrets.token_urlsafe(18)
    # What the alternating-users rotation creates: a second login role with the same rights.
    postgres_cluster.execute(
        f"CREATE ROLE {clone} LOGIN PASSWORD '{clone_password}' IN ROLE {postgres_db.username}"
    )
    secret_id = create_secret(postgres_db.rds_secret())
    name = f"alternating-{secrets.token_hex(3)}"
    credentials = CachedCredentials(SecretCache(ttl=1.0, jitter=0.0), secret_id)
    database = Database(credentials, SMALL_POOL, name=name)
    try:
        with database, Load(database).running() as load:
            wait_until(lambda: load.done > 50, what="load before the rotation")
            rotate_secret(
                secret_id,
                postgres_db.rds_secret() | {"username": clone, "password": clone_password},
            )
            # The previous user keeps its password until the next rotation, so nothing is refused:
            # new logins move to the clone once the cache's TTL passed (here 1 s).
            wait_until(lambda: credentials.get().username == clone, what="the cache to move on")
            database.pool.drain()
            wait_until(
                lambda: {user for user, _ in backends(postgres_cluster, name)} == {clone},
                what="every connection to belong to the new user",
            )
            served_before = load.done
            wait_until(lambda: load.done > served_before + 50, what="load after the rotation")
    finally:
        postgres_cluster.execute(f"DROP ROLE IF EXISTS {clone}")

    assert load.failures == []
    assert load.users == {postgres_db.username, clone}


def test_database_down_then_back() -> None:
    cluster = PostgresCluster()
    cluster.start()
    try:
        secret = RdsSecret.model_validate(cluster.create_database().rds_secret())
        settings = DatabaseSettings(
            pool_min_size=2, pool_size=2, pool_timeout=1, connect_timeout=2, reconnect_timeout=2
        )
        with Database(FixedCredentials(secret), settings) as database:
            wait_until(lambda: ready(database), what="the pool to connect")

            # A connection in use when the server goes away.
            def query_during_shutdown() -> None:
                with database.connection() as conn:
                    cluster.stop()
                    conn.execute("SELECT 1")

            with pytest.raises(DependencyUnavailable, match="connection lost"):
                query_during_shutdown()

            started = time.monotonic()
            with pytest.raises(DependencyUnavailable) as raised:
                database.check()
            assert time.monotonic() - started < 5
            assert raised.value.dependency == "database"
            assert "Connection refused" in raised.value.reason

            # An outage longer than reconnect_timeout: the pool stops retrying and gives its
            # slots back; the next request has to start connecting again.
            wait_until(
                lambda: database.pool.get_stats()["pool_size"] == 0,
                what="the pool to give up reconnecting",
            )
            cluster.start()
            wait_until(lambda: ready(database), what="the pool to recover by itself")
    finally:
        cluster.destroy()


def test_credentials_unreadable_then_readable(aws_env: MotoServer, postgres_db: PgDatabase) -> None:
    secret_id = create_secret(postgres_db.rds_secret())
    settings = DatabaseSettings(pool_min_size=1, pool_size=1, pool_timeout=2)
    with Database(SecretRef(secret_id, RdsSecret), settings) as database:
        with aws_env.outage():
            unavailable(database, "credentials unavailable")
        wait_until(lambda: ready(database), what="the pool to recover by itself")


def test_every_connection_logs_in_with_server_side_timeouts(postgres_db: PgDatabase) -> None:
    secret = RdsSecret.model_validate(postgres_db.rds_secret())
    limits = "statement_timeout, lock_timeout, idle_in_transaction_session_timeout"
    query = "SELECT " + ", ".join(
        f"current_setting('{name}') AS {name}" for name in limits.split(", ")
    )
    with Database(FixedCredentials(secret)) as database, database.connection() as conn:
        assert conn.execute(query).fetchone() == {
            "statement_timeout": "30s",
            "lock_timeout": "5s",
            "idle_in_transaction_session_timeout": "1min",
        }
    settings = DatabaseSettings(statement_timeout_ms=200, lock_timeout_ms=0)
    with Database(FixedCredentials(secret), settings) as database:
        with database.connection() as conn:
            row = conn.execute(query).fetchone()
            assert row is not None
            assert (row["statement_timeout"], row["lock_timeout"]) == ("200ms", "0")
        # The server enforces it: a statement past the limit is cancelled, the pool goes on.
        with pytest.raises(psycopg.errors.QueryCanceled), database.connection() as conn:
            conn.execute("SELECT pg_sleep(5)")
        assert ready(database)


def verify_full(ca_file: str | Path | None) -> DatabaseSettings:
    return DatabaseSettings(
        pool_min_size=1,
        pool_size=1,
        pool_timeout=2,
        sslmode="verify-full",
        sslrootcert=str(ca_file),
    )


def test_verify_full_connects_through_the_pool_over_tls(postgres_db: PgDatabase) -> None:
    secret = RdsSecret.model_validate(postgres_db.rds_secret())
    with (
        Database(FixedCredentials(secret), verify_full(postgres_db.sslrootcert)) as database,
        database.connection() as conn,
    ):
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row.fetchone() == {"ssl": True}


def test_verify_full_refuses_a_server_certificate_from_another_ca(
    postgres_db: PgDatabase, tmp_path: Path
) -> None:
    secret = RdsSecret.model_validate(postgres_db.rds_secret())
    other_ca = make_server_tls(tmp_path, "127.0.0.1").ca_file
    with Database(FixedCredentials(secret), verify_full(other_ca)) as database:
        unavailable(database, "certificate verify failed")


def test_verify_full_refuses_a_server_certificate_for_another_host_name(
    postgres_db: PgDatabase,
) -> None:
    # The same server under a name its certificate (issued for 127.0.0.1) does not carry.
    secret = RdsSecret.model_validate(postgres_db.rds_secret() | {"host": "localhost"})
    with Database(FixedCredentials(secret), verify_full(postgres_db.sslrootcert)) as database:
        unavailable(database, 'does not match host name "localhost"')


def test_no_secret_in_errors(postgres_db: PgDatabase, caplog: pytest.LogCaptureFixture) -> None:
    secret = RdsSecret.model_validate(postgres_db.rds_secret() | {"password": "wrong-Pa55"})
    settings = DatabaseSettings(pool_min_size=1, pool_size=1, pool_timeout=2)
    with Database(FixedCredentials(secret), settings) as database:
        error = unavailable(database, "password authentication failed")
    assert "wrong-Pa55" not in str(error)
    assert "wrong-Pa55" not in caplog.text


def test_a_service_with_a_database_opens_it_from_its_settings(
    aws_env: MotoServer, postgres_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_SECRET", create_secret(postgres_db.rds_secret()))
    monkeypatch.setenv("DATABASE__POOL_SIZE", "2")
    for key, value in postgres_db.verify_full_env().items():
        monkeypatch.setenv(key, value)
    settings = DatabaseServiceSettings.load(
        app_name="suite", app_env="test", service_name="billing", parameter_store_enabled=False
    )
    assert settings.database == DatabaseSettings(
        pool_size=2, sslmode="verify-full", sslrootcert=postgres_db.sslrootcert
    )

    database = open_database(settings)
    try:
        with database.connection() as conn:
            row = conn.execute(
                "SELECT current_user AS name, current_setting('application_name') AS app"
            ).fetchone()
    finally:
        database.close()
    assert row == {"name": postgres_db.username, "app": "billing"}


def load_service_settings(env: str) -> DatabaseServiceSettings:
    return DatabaseServiceSettings.load(
        app_name="suite", app_env=env, service_name="billing", parameter_store_enabled=False
    )


def test_outside_development_a_database_without_verified_tls_stops_start_up(
    aws_env: MotoServer, postgres_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_SECRET", create_secret(postgres_db.rds_secret()))
    monkeypatch.delenv("DATABASE__SSLMODE", raising=False)
    monkeypatch.delenv("DATABASE__SSLROOTCERT", raising=False)

    with pytest.raises(ConfigurationError) as refused:
        load_service_settings("production")
    assert refused.value.problems == [
        "database.sslmode: 'prefer' is refused outside development, where the server's "
        "certificate and host name must be verified: set verify-full in environment variable "
        "DATABASE__SSLMODE (from field default)",
        "database.sslrootcert: missing outside development, where verify-full needs the CA "
        "bundle that signed the server's certificate; looked for environment variable "
        "DATABASE__SSLROOTCERT",
    ]

    monkeypatch.setenv("DATABASE__SSLMODE", "require")
    monkeypatch.setenv("DATABASE__SSLROOTCERT", str(postgres_db.sslrootcert))
    with pytest.raises(ConfigurationError, match="from environment variable DATABASE__SSLMODE"):
        load_service_settings("production")

    # Development accepts any mode (compose verifies anyway), but not a CA file that is not there.
    assert load_service_settings("development").database.sslmode == "require"
    monkeypatch.setenv("DATABASE__SSLROOTCERT", "/nowhere/ca.pem")
    with pytest.raises(ConfigurationError) as missing:
        load_service_settings("development")
    assert missing.value.problems == [
        "database.sslrootcert: no CA file at '/nowhere/ca.pem' "
        "(from environment variable DATABASE__SSLROOTCERT)"
    ]
