"""The container's command (``api``: gunicorn with :mod:`api.gunicorn_conf`) as a process: logs,
SIGTERM, a streamed oversized body, traces, rotation under load, the database going away."""

from __future__ import annotations

import http.server
import json
import re
import secrets
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import httpx
import psycopg
import pytest

from api import gunicorn_conf
from servicekit import aws
from servicekit.testing import PostgresCluster, wait_until
from suite_contract.spec import ServiceSpec


def test_the_timeouts_fit_the_alb_and_ecs(spec: ServiceSpec) -> None:
    # The ALB closes idle connections after 60 s: the server must not close them first.
    assert gunicorn_conf.keepalive > 60
    # Requests in flight must be done before ECS's SIGKILL.
    assert gunicorn_conf.graceful_timeout < spec.task.stop_timeout
    assert gunicorn_conf.bind == f"0.0.0.0:{spec.port}"


def test_every_line_is_json_and_health_checks_stay_out_of_the_access_log(
    serve: Callable[..., Any],
    api_env: Any,
) -> None:
    server = serve()
    # /ready answered by one worker says nothing of the other: wait for both to have started,
    # so their start-up lines are in the log before SIGTERM (a loaded machine starts them apart).
    wait_until(
        lambda: (
            sum("Application startup complete" in str(line["message"]) for line in server.log())
            == 2
        ),
        30,
        "both workers' startup",
    )
    assert server.get("/health").status_code == 200
    created = server.post("/jobs", json={"type": "echo"}, headers={"X-Request-ID": "r-1"})
    assert created.status_code == 201

    assert server.terminate() == 0
    lines = server.log()  # fails on a line that is not JSON
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    access = [line for line in lines if line["logger"] == "api.access"]
    # The start-up's polls of /ready (one, or more on a loaded machine), then the job; no /health.
    paths = [line["http_path"] for line in access]
    assert paths[-1] == "/jobs"
    assert set(paths[:-1]) == {"/ready"}
    assert access[-1]["request_id"] == "r-1"
    assert access[-1]["http_status"] == 201
    messages = [line["message"] for line in lines]
    assert sum("Application startup complete" in message for message in messages) == 2
    assert any("Booting worker" in message for message in messages)


def _waiting_on_lock(admin_conninfo: str) -> bool:
    with psycopg.connect(admin_conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'api' "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] > 0


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_finishes_the_request_in_flight_and_exits_0(
    serve: Callable[..., Any],
    api_env: Any,
    postgres_cluster: PostgresCluster,
) -> None:
    server = serve()
    admin = postgres_cluster.admin.conninfo(dbname=api_env.database.dbname)
    # A slow request with no test hook in the service: its INSERT waits behind this lock.
    with psycopg.connect(admin) as lock_holder, ThreadPoolExecutor(1) as pool:
        lock_holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        in_flight = pool.submit(server.post, "/jobs", json={"type": "echo"}, timeout=30)
        wait_until(lambda: _waiting_on_lock(admin), 10, "the request to wait on the lock")

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: _refuses_connections(server.port), 10, "the listener to close")
        assert server.process.poll() is None, "gunicorn left with a request in flight"
        lock_holder.rollback()

        assert in_flight.result(timeout=20).status_code == 201
    assert server.process.wait(timeout=25) == 0
    assert time.monotonic() - signalled < 25


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(
    serve: Callable[..., Any],
    api_env: Any,
) -> None:
    server = serve(workers=1)
    chunk = b"x" * 4096
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.setblocking(False)
        answer = b""
        # 1 MiB offered, 64 KiB allowed: the answer must come long before the end.
        while sent < 1024 * 1024 and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                answer = sock.recv(65536)
            except BlockingIOError:
                # Paced like a slow client: wait up to 5 ms for the answer before sending more,
                # returning as soon as it arrives.
                select.select([sock], [], [], 0.005)
            except OSError:
                break
        sock.setblocking(True)
        answer = _whole_response(sock, answer)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"content_too_large"' in answer
    assert sent < 256 * 1024


def _whole_response(sock: socket.socket, received: bytes) -> bytes:
    """Read on until the head and Content-Length bytes of body are in (they may come apart)."""
    while True:
        head, separator, body = received.partition(b"\r\n\r\n")
        if separator:
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length is None or len(body) >= int(length.group(1)):
                return received
        try:
            more = sock.recv(65536)
        except OSError:
            return received
        if not more:
            return received
        received += more


def _logins_since(admin_conninfo: str, since: float) -> int:
    """The API's open connections to the database that logged in after ``since`` (epoch s)."""
    with psycopg.connect(admin_conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'api' "
            "AND datname = current_database() AND backend_start > to_timestamp(%s)",
            (since,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_password_rotation_under_load_fails_no_request(
    serve: Callable[..., Any],
    api_env: Any,
    postgres_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Connections retire after 1 s, so logins keep happening all through the rotation.
    monkeypatch.setenv("DATABASE__MAX_LIFETIME", "1")
    server = serve()
    admin = postgres_cluster.admin.conninfo(dbname=api_env.database.dbname)
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def post_jobs() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
            while not stop.is_set():
                try:
                    outcome: int | str = client.post("/jobs", json={"type": "echo"}).status_code
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with lock:
                    statuses[outcome] += 1

    clients = [threading.Thread(target=post_jobs) for _ in range(6)]
    for thread in clients:
        thread.start()
    try:
        wait_until(lambda: statuses.total() >= 50, 30, "load before the rotation")
        rotated_at = _rotate(api_env, postgres_cluster)
        before = statuses.total()

        def relogged() -> bool:
            return _logins_since(admin, rotated_at) > 0 and statuses.total() >= before + 100

        # Connections opened before keep working (PostgreSQL checks a password at login only).
        wait_until(relogged, 30, "logins with the new password, under load")
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    assert set(statuses) == {201}, statuses
    # The old password was refused and the secret read again: the rotation was really seen.
    assert any("refused the login" in str(line["message"]) for line in server.log())
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(api_env.database.conninfo())


def _rotate(api_env: Any, cluster: PostgresCluster) -> float:
    """Single-user rotation as the RDS rotation function does it: pending, ALTER ROLE, current."""
    manager = aws.client("secretsmanager")
    password = secrets.token_urlsafe(18)
    value = api_env.database.rds_secret() | {"password": password}
    pending = manager.put_secret_value(
        SecretId=api_env.secret_id, SecretString=json.dumps(value), VersionStages=["AWSPENDING"]
    )["VersionId"]
    stages = manager.describe_secret(SecretId=api_env.secret_id)["VersionIdsToStages"]
    current = next(version for version, names in stages.items() if "AWSCURRENT" in names)
    rotated_at = time.time()
    cluster.execute(f"ALTER ROLE {api_env.database.username} PASSWORD '{password}'")
    manager.update_secret_version_stage(
        SecretId=api_env.secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=pending,
        RemoveFromVersionId=current,
    )
    return rotated_at


def test_a_database_outage_is_503_until_it_recovers_by_itself(
    serve: Callable[..., Any],
    prepare_api: Callable[..., Any],
) -> None:
    cluster = PostgresCluster()
    cluster.start()
    try:
        prepare_api(cluster.create_database())
        server = serve()
        assert server.post("/jobs", json={"type": "echo"}).status_code == 201

        cluster.stop()
        assert server.get("/health").status_code == 200
        wait_until(lambda: server.answers("/ready", 503), 20, "/ready 503")
        assert server.get("/ready").json() == {"status": "fail"}
        wait_until(
            lambda: any(
                "readiness check database failing" in str(line["message"]) for line in server.log()
            ),
            10,
            "the failing check logged",
        )
        refused = server.post("/jobs", json={"type": "echo"}, timeout=30)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "dependency_unavailable"
        assert server.get("/health").status_code == 200

        cluster.start()
        wait_until(lambda: server.answers("/ready", 200), 30, "/ready 200 again")
        # /ready reached one of the two workers; the other's pool may still be between
        # reconnection attempts (psycopg_pool backs off), and answers 503 until it is back.
        wait_until(
            lambda: server.post("/jobs", json={"type": "echo"}).status_code == 201,
            30,
            "POST /jobs 201 again",
        )
    finally:
        cluster.destroy()


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps the bodies it receives."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_albs_trace_continues_in_spans_logs_and_the_response(
    serve: Callable[..., Any],
    api_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("TRACING_ENABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    root = "1-5759e988-bd862e3fe1be46a994272793"
    try:
        server = serve(workers=1)
        response = server.post(
            "/jobs",
            json={"type": "echo"},
            headers={"X-Amzn-Trace-Id": f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1"},
        )
        assert response.status_code == 201
        assert response.headers["x-amzn-trace-id"] == f"Root={root}"
        assert server.terminate() == 0  # the lifespan's shutdown flushes the spans
    finally:
        collector.shutdown()

    trace_id = bytes.fromhex(root.removeprefix("1-").replace("-", ""))
    request_id = response.headers["x-request-id"].encode()
    spans = [body for body in _Collector.bodies if trace_id in body]
    assert spans, "no span of the ALB's trace"
    assert any(request_id in body for body in spans), "the request id is not on the span"
    logged = [
        line for line in server.log() if line.get("request_id") == response.headers["x-request-id"]
    ]
    assert logged
    assert all(line["trace_id"] == root for line in logged)
