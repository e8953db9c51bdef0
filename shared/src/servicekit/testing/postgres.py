"""Throwaway PostgreSQL clusters with password (scram-sha-256) authentication and TLS.

A trust-auth server accepts any password, so a credential-rotation test against one proves
nothing: every cluster here is initialised with ``--auth=scram-sha-256`` and listens on loopback
TCP only. It serves TLS with a certificate for 127.0.0.1 from a CA made for it
(:attr:`Database.sslrootcert`), so a service under test can verify the server with
``sslmode=verify-full`` as it does in AWS; plain ``conninfo()`` keeps libpq's default sslmode.
The machine's PostgreSQL binaries and ``openssl`` are used (``PG_BINDIR`` overrides the search);
as root, the server runs as the ``postgres`` user because initdb refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
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

__all__ = ["Database", "PostgresCluster", "ServerTls", "find_bindir", "make_server_tls"]


@dataclass(frozen=True)
class Database:
    """A database and the role that owns it: everything a client needs to connect."""

    host: str
    port: int
    dbname: str
    username: str
    password: str
    # The CA file that verifies the server's certificate (sslmode=verify-full).
    sslrootcert: str | None = None

    def conninfo(self, **overrides: str) -> str:
        params = {
            "host": self.host,
            "port": str(self.port),
            "dbname": self.dbname,
            "user": self.username,
            "password": self.password,
        } | overrides
        return " ".join(f"{key}={value}" for key, value in params.items())

    def verify_full_env(self) -> dict[str, str]:
        """A service's environment to verify this server as in AWS (DatabaseServiceSettings)."""
        return {"DATABASE__SSLMODE": "verify-full", "DATABASE__SSLROOTCERT": str(self.sslrootcert)}

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


@dataclass(frozen=True)
class ServerTls:
    """A CA and a server certificate it signed, with the server's key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_server_tls(directory: Path, host: str) -> ServerTls:
    """A new CA in ``directory`` and a certificate for ``host`` (an IP address or a DNS name).

    The CA's key is deleted once the certificate is signed: nothing else can be issued from it.
    """
    tls = ServerTls(directory / "ca.pem", directory / "server.crt", directory / "server.key")
    ca_key = directory / "ca.key"
    try:
        ipaddress.ip_address(host)
        name = f"IP:{host}"
    except ValueError:
        name = f"DNS:{host}"

    def new_certificate(key: Path, cert: Path, subject: str, *extra: str) -> None:
        subprocess.run(  # noqa: S603 - fixed arguments
            [
                *("openssl", "req", "-x509", "-new", "-nodes", "-days", "2"),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
                *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={subject}", *extra),
            ],
            check=True,
            capture_output=True,
        )

    try:
        new_certificate(
            ca_key,
            tls.ca_file,
            "test CA",
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        )
        new_certificate(
            tls.key_file,
            tls.cert_file,
            host,
            *("-addext", f"subjectAltName={name}", "-addext", "basicConstraints=CA:FALSE"),
            *("-CA", str(tls.ca_file), "-CAkey", str(ca_key)),
        )
    finally:
        ca_key.unlink(missing_ok=True)
    return tls


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
        self.tls = make_server_tls(self._root, self.host)
        # PostgreSQL refuses a key file that others can read.
        self.tls.key_file.chmod(0o600)
        self._chown(self.tls.key_file)

    @property
    def admin(self) -> Database:
        return self._database("postgres", self.superuser, self.superuser_password)

    def _database(self, dbname: str, username: str, password: str) -> Database:
        ca_file = str(self.tls.ca_file)
        return Database(self.host, self.port, dbname, username, password, sslrootcert=ca_file)

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
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            f"-c ssl=on -c ssl_cert_file={self.tls.cert_file} -c ssl_key_file={self.tls.key_file}"
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
        return self._database(name, f"{name}_owner", password)

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
