"""Throwaway PostgreSQL clusters with password (scram-sha-256) authentication.

A trust-auth server accepts any password, so a credential-rotation test against one proves
nothing: every cluster here is initialised with ``--auth=scram-sha-256`` and listens on loopback
TCP only. The machine's PostgreSQL binaries are used (``PG_BINDIR`` overrides the search); as
root, the server runs as the ``postgres`` user because initdb refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from servicekit.testing.moto import free_port

__all__ = ["Database", "PostgresCluster", "find_bindir"]


@dataclass(frozen=True)
class Database:
    """A database and the role that owns it: everything a client needs to connect."""

    host: str
    port: int
    dbname: str
    username: str
    password: str

    def conninfo(self, **overrides: str) -> str:
        params = {
            "host": self.host,
            "port": str(self.port),
            "dbname": self.dbname,
            "user": self.username,
            "password": self.password,
        } | overrides
        return " ".join(f"{key}={value}" for key, value in params.items())

    def rds_secret(self) -> dict[str, str | int]:
        """The JSON shape RDS keeps in Secrets Manager for this database."""
        return {
            "engine": "postgres",
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "dbname": self.dbname,
        }


def find_bindir() -> Path:
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not versions:
        raise RuntimeError(
            "no PostgreSQL server binaries found (initdb): install Debian's `postgresql` "
            "package or set PG_BINDIR"
        )
    return Path(versions[-1]).parent


class PostgresCluster:
    """One ``initdb``-ed cluster in a temporary directory, on a free loopback port."""

    superuser = "postgres"

    def __init__(self, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.superuser_password = secrets.token_urlsafe(16)
        self._root = Path(tempfile.mkdtemp(prefix="servicekit-pg-"))
        self.datadir = self._root / "data"
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None
        self._initdb()

    @property
    def admin(self) -> Database:
        return Database(self.host, self.port, "postgres", self.superuser, self.superuser_password)

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - our own binaries and arguments
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user=self._run_as,
            cwd=self._root,
        )

    def _initdb(self) -> None:
        self._root.chmod(0o755)
        self._chown(self._root)
        pwfile = self._root / "pwfile"
        pwfile.write_text(self.superuser_password)
        self._chown(pwfile)
        self._run(
            "initdb",
            "--pgdata",
            str(self.datadir),
            "--username",
            self.superuser,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-instructions",
        )
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={self.host} "
            f"-c unix_socket_directories={self._root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.datadir),
            "--wait",
            "--log",
            str(self._root / "server.log"),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "stop", "--pgdata", str(self.datadir), "--wait", "-m", mode)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    def execute(self, *statements: str, dbname: str = "postgres") -> None:
        """Run statements as the superuser, each in autocommit (so CREATE DATABASE works)."""
        import psycopg  # noqa: PLC0415 - the plugin loads without servicekit's db extra

        admin = self.admin
        with psycopg.connect(admin.conninfo(dbname=dbname), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def create_database(self, name: str | None = None) -> Database:
        """A new database owned by a new login role with a random password."""
        name = name or f"db_{secrets.token_hex(6)}"
        password = secrets.token_urlsafe(18)
        self.execute(
            f"CREATE ROLE {name}_owner LOGIN PASSWORD '{password}'",
            f"CREATE DATABASE {name} OWNER {name}_owner",
        )
        return Database(self.host, self.port, name, f"{name}_owner", password)

    def drop_database(self, database: Database) -> None:
        self.execute(
            f"DROP DATABASE IF EXISTS {database.dbname} WITH (FORCE)",
            f"DROP ROLE IF EXISTS {database.username}",
        )

    def wait_until_accepting(self, timeout: float = 30.0) -> None:
        import psycopg  # noqa: PLC0415 - the plugin loads without servicekit's db extra

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin.conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
