"""PostgreSQL for the services: a psycopg 3 pool whose logins follow the secret's rotation.

ECS injects a secret into a task's environment once, at start, so a rotated database password
would need a redeploy. Here every NEW connection reads the RDS-format secret through its provider
(``SecretRef[RdsSecret]``: a cached read, checked against Secrets Manager after a TTL) and, when the
server refuses the login, forces one check of the secret and logs in again. That covers both RDS
rotation strategies:

- single user: same username, new password. Right after ``ALTER ROLE ... PASSWORD`` the cached
  password is refused; the forced check finds the new AWSCURRENT and the retry logs in.
- alternating users: AWSCURRENT switches to the other user, while the previous one keeps working
  until the rotation after next; new connections move to the new user at the next check.

Connections already open are not affected by a rotation: PostgreSQL checks a password only when a
connection logs in. They are replaced when they reach ``max_lifetime``. With single-user rotation
there is a window (the rotation function changes the password, then moves AWSCURRENT) in which new
logins fail even after a refresh; the pool retries in the background while the open connections
serve. Alternating users has no such window.

When the database cannot be reached, :class:`Database` raises
``DependencyUnavailable("database", reason)`` within ``pool_timeout`` (the API answers 503), and
the pool reconnects by itself once the server is back. Create a :class:`Database` after ``fork``
(in the app factory or gunicorn's ``post_fork``): a pool's threads and sockets must not cross it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, model_validator

from servicekit.errors import DependencyUnavailable
from servicekit.settings import RdsSecret, SecretRef, ServiceSettings

if TYPE_CHECKING:
    from servicekit.settings import _Lookup

__all__ = [
    "CredentialsProvider",
    "Database",
    "DatabaseServiceSettings",
    "DatabaseSettings",
    "connect",
    "open_database",
]

_log = logging.getLogger(__name__)

C = TypeVar("C")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# 28P01 invalid_password, 28000 invalid_authorization_specification.
_LOGIN_REFUSED_STATES = frozenset({"28P01", "28000"})


class CredentialsProvider(Protocol):
    """Where logins come from: ``servicekit.settings.SecretRef[RdsSecret]`` is one."""

    def get(self) -> RdsSecret: ...

    def refresh(self) -> RdsSecret: ...


class DatabaseSettings(BaseModel):
    """Pool and TLS options. A service nests it as ``database`` (SSM ``.../database/pool_size``).

    Outside development :class:`DatabaseServiceSettings` refuses to start without
    ``sslmode="verify-full"`` and ``sslrootcert``: in AWS the RDS CA bundle baked into the image
    (``/etc/ssl/certs/rds-global-bundle.pem``), in docker compose the local CA the init step makes.
    ``sslrootcert="system"`` means the operating system's trusted CAs (libpq 16+).
    """

    model_config = ConfigDict(frozen=True)

    sslmode: SslMode = "prefer"
    sslrootcert: str | None = None
    pool_min_size: int = Field(default=1, ge=0)
    pool_size: int = Field(default=10, ge=1)
    # How long a caller waits for a connection before DependencyUnavailable.
    pool_timeout: float = Field(default=5.0, gt=0)
    connect_timeout: int = Field(default=5, ge=1)
    # psycopg_pool retries a failed connection with doubling delays until this many seconds have
    # passed, then gives the slot back and a later request starts again from a 1 s delay. Kept
    # short so the retry delay, and so the time to notice that the database is back, stays short.
    reconnect_timeout: float = Field(default=10.0, gt=0)
    max_lifetime: float = Field(default=1800.0, gt=0)
    max_idle: float = Field(default=300.0, gt=0)
    # One round trip per checkout, so a connection the server dropped is never handed out.
    check_on_checkout: bool = True
    # Server-side limits, sent with the login (libpq ``options``: no extra round trip). A query,
    # a lock wait or an abandoned transaction cannot hold a connection, a lock or a request
    # past these; 0 turns one off (e.g. for migrations building an index).
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    lock_timeout_ms: int = Field(default=5_000, ge=0)
    idle_in_transaction_session_timeout_ms: int = Field(default=60_000, ge=0)
    application_name: str | None = None

    def server_options(self) -> str:
        """The ``-c name=value`` settings every connection logs in with."""
        limits = {
            "statement_timeout": self.statement_timeout_ms,
            "lock_timeout": self.lock_timeout_ms,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_session_timeout_ms,
        }
        return " ".join(f"-c {name}={value}" for name, value in limits.items())

    @model_validator(mode="after")
    def _sizes(self) -> Self:
        if self.pool_min_size > self.pool_size:
            raise ValueError("pool_min_size must not exceed pool_size")
        return self


def _login_refused(error: psycopg.OperationalError) -> bool:
    # libpq reports no SQLSTATE for a failed login, so any refusal after a password was sent counts
    # too (even "database does not exist"): a needless re-read of the secret costs one
    # DescribeSecret, while matching the server's message would break with a localised server.
    pgconn = error.pgconn
    return error.sqlstate in _LOGIN_REFUSED_STATES or (pgconn is not None and pgconn.used_password)


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).splitlines()), type(error).__name__)


class _Login:
    """Connection parameters read from the secret for each login, re-read once when refused."""

    def __init__(
        self, credentials: CredentialsProvider, settings: DatabaseSettings, application_name: str
    ) -> None:
        self._credentials = credentials
        self._settings = settings
        self._application_name = application_name
        # Why the latest login failed (None after a success): the reason DependencyUnavailable
        # gives. libpq's messages name host, port and user, never the password.
        self.last_error: str | None = None

    def connect(self, open_connection: Callable[[dict[str, Any]], C]) -> C:
        try:
            return self._attempt(open_connection, self._credentials.get)
        except psycopg.OperationalError as error:
            if not _login_refused(error):
                raise
        _log.warning("the database refused the login; checking the secret again and retrying once")
        return self._attempt(open_connection, self._credentials.refresh)

    def _attempt(
        self, open_connection: Callable[[dict[str, Any]], C], read: Callable[[], RdsSecret]
    ) -> C:
        try:
            try:
                secret = read()
            except Exception as error:
                # The pool retries only psycopg errors: anything else would lose the slot for good.
                raise psycopg.OperationalError(
                    f"database credentials unavailable: {_first_line(error)}"
                ) from error
            connection = open_connection(self._params(secret))
        except psycopg.OperationalError as error:
            self.last_error = _first_line(error)
            raise
        self.last_error = None
        return connection

    def _params(self, secret: RdsSecret) -> dict[str, Any]:
        settings = self._settings
        params: dict[str, Any] = {
            "host": secret.host,
            "port": secret.port,
            "dbname": secret.dbname,
            "user": secret.username,
            "password": secret.password.get_secret_value(),
            "sslmode": settings.sslmode,
            "connect_timeout": settings.connect_timeout,
            "application_name": self._application_name,
            "options": settings.server_options(),
        }
        if settings.sslrootcert:
            params["sslrootcert"] = settings.sslrootcert
        return params


def _pooled_connection_class(login: _Login) -> type[psycopg.Connection[DictRow]]:
    """A connection class whose ``connect`` (what the pool calls) logs in through ``login``."""

    class PooledConnection(psycopg.Connection[DictRow]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            base = super().connect
            # The pool's own arguments (row_factory, a connect_timeout) win over the secret's.
            return login.connect(lambda params: base(conninfo, **(params | kwargs)))

    return PooledConnection


def connect(
    credentials: CredentialsProvider,
    settings: DatabaseSettings | None = None,
    *,
    application_name: str = "servicekit",
) -> psycopg.Connection[psycopg.rows.TupleRow]:
    """One connection outside any pool (migrations), logging in like the pool does."""
    login = _Login(credentials, settings or DatabaseSettings(), application_name)
    return login.connect(lambda params: psycopg.Connection.connect(**params))


class Database:
    """A connection pool over the database the secret names. Rows come back as dicts.

    ``with database.connection() as conn:`` commits on success and rolls back on an exception;
    raises ``DependencyUnavailable("database", reason)`` when no connection can be had within
    ``pool_timeout`` or the connection is lost mid-use.
    """

    def __init__(
        self,
        credentials: CredentialsProvider,
        settings: DatabaseSettings | None = None,
        *,
        name: str = "servicekit",
    ) -> None:
        self.settings = settings or DatabaseSettings()
        self._login = _Login(credentials, self.settings, self.settings.application_name or name)
        self._pool = ConnectionPool(
            connection_class=_pooled_connection_class(self._login),
            kwargs={"row_factory": dict_row},
            min_size=self.settings.pool_min_size,
            max_size=self.settings.pool_size,
            open=False,
            name=name,
            timeout=self.settings.pool_timeout,
            max_lifetime=self.settings.max_lifetime,
            max_idle=self.settings.max_idle,
            reconnect_timeout=self.settings.reconnect_timeout,
            check=ConnectionPool.check_connection if self.settings.check_on_checkout else None,
        )

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[DictRow]]:
        """The psycopg_pool pool itself (statistics, ``drain()`` to replace every connection)."""
        return self._pool

    def open(self) -> None:
        """Start the pool without waiting: a service starts even while the database is down."""
        self._pool.open(wait=False)

    def close(self, timeout: float = 5.0) -> None:
        self._pool.close(timeout)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection from the pool for one transaction (``timeout`` overrides pool_timeout)."""
        waited = self.settings.pool_timeout if timeout is None else timeout
        try:
            conn = self._pool.getconn(waited)
        except PoolTimeout as error:
            raise DependencyUnavailable("database", self._timeout_reason(waited)) from error
        try:
            with conn:
                yield conn
        except psycopg.OperationalError as error:
            if conn.broken:
                raise DependencyUnavailable(
                    "database", f"connection lost: {_first_line(error)}"
                ) from error
            raise
        finally:
            self._pool.putconn(conn)

    def check(self, timeout: float | None = None) -> None:
        """Readiness: one query; raises ``DependencyUnavailable`` saying why not."""
        with self.connection(timeout) as conn:
            conn.execute("SELECT 1")

    def answers(self) -> bool:
        """:meth:`check` as a yes/no: a consumer's ``ready`` gate (take messages only while
        the database can record their outcome)."""
        try:
            self.check()
        except DependencyUnavailable:
            return False
        return True

    def _timeout_reason(self, waited: float) -> str:
        reason = f"no connection within {waited:g} s"
        cause = self._login.last_error
        if cause is not None:
            return f"{reason}: {cause}"
        return f"{reason}: all {self.settings.pool_size} in use"


class DatabaseServiceSettings(ServiceSettings):
    """The settings of a service with a database: the secret's id and the pool's options.

    A service that wants other pool defaults redeclares ``database`` with its own default.
    """

    db_secret: SecretRef[RdsSecret] = Field(
        description="Secrets Manager id of the RDS-format database secret (DB_SECRET)"
    )
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings,
        description="pool and TLS options (DATABASE__POOL_SIZE, SSM .../database/pool_size)",
    )

    def _problems(self, lookup: _Lookup) -> list[str]:
        return super()._problems(lookup) + self._tls_problems(lookup)

    def _tls_problems(self, lookup: _Lookup) -> list[str]:
        """Outside development the server's certificate and name are verified, as in AWS."""
        tls = self.database
        mode, root = ("database", "sslmode"), ("database", "sslrootcert")
        ca_file = tls.sslrootcert
        if ca_file not in (None, "system") and not Path(str(ca_file)).is_file():
            # libpq would say so only at the first connection, after the service reported ready.
            return [f"database.sslrootcert: no CA file at {ca_file!r} (from {lookup.origin(root)})"]
        if self.is_development:
            return []
        problems = []
        if tls.sslmode != "verify-full":
            problems.append(
                f"database.sslmode: {tls.sslmode!r} is refused outside development, where the "
                "server's certificate and host name must be verified: set verify-full in "
                f"{' or '.join(lookup.places(mode))} (from {lookup.origin(mode)})"
            )
        if tls.sslrootcert is None:
            problems.append(
                "database.sslrootcert: missing outside development, where verify-full needs the "
                f"CA bundle that signed the server's certificate; looked for "
                f"{', '.join(lookup.places(root))}"
            )
        return problems


def open_database(settings: DatabaseServiceSettings) -> Database:
    """The service's pool, started; it does not wait for the database (down: readiness says so)."""
    database = Database(settings.db_secret, settings.database, name=settings.service_name)
    database.open()
    return database
