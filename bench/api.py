"""HTTP benchmark of the API: the production gunicorn config beside a bare Starlette app.

Both run under the API's gunicorn settings (``api.gunicorn_conf``: uvicorn workers, the same
worker count), the API with the container's own command (``api``, from ``service.toml``).
``wrk`` (Debian's package) loads each in turn, alternating within every round, at the same
threads and connections:

- ``GET /health``: the API answers it in a pure ASGI layer in front of FastAPI; the bare app
  with a Starlette route. Target: the API at least 0.8 of the bare app's requests/s.
- ``POST /jobs``: the API validates the body and commits the job to PostgreSQL (its outbox relay
  sends the SQS message to moto, in this process, off the request path); the bare app parses the
  JSON and answers 201 (the framework's floor, no I/O). Target: the API's p99 under 5x its p50.
- ``POST /jobs, SQS unreachable``: the same against the API alone while its AWS endpoint is
  black-holed (:class:`Valve`: connections accepted, nothing answered, as with a paused moto).
  Target: p99 within 2 s, and the latency beside the same round's SQS-up run.
- authentication: ``POST /jobs`` and ``GET /jobs/{id}`` with a bearer token (``api``) beside the
  same app with authentication taken out (``noauth``, bench/unauthenticated.py), same run. The
  token comes from the local issuer (in this process); the API verifies it on every request
  (signature and claims), the issuer's keys fetched once. Target: auth on at least 0.9 of auth
  off's requests/s.

moto's SendMessage slows down as a queue fills, so a thread drains the queue during the POST
runs to keep the backlog small. Figures are medians over the rounds, [min-max] beside them.
Nothing here asserts on a timing. Run: ``uv run python bench/api.py [--duration S --rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from issuer import Issuer, IssuerConfig, serving
from jobs import migrations
from servicekit import aws
from servicekit.testing import MotoServer, PostgresCluster, answers_ok, wait_until
from servicekit.testing.moto import fake_aws_environment, free_port
from suite_contract.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DIR = ROOT / "services" / "api"
APP, ENV = "bench", "bench"
WORKERS = 2
JOB = {"type": "echo", "payload": {"n": 1}}
# The API's gunicorn settings (api.serve.GUNICORN_ARGS). Not imported: run as a script, this file
# is the module `api` and hides the service's package of that name.
GUNICORN_CONFIG = "python:api.gunicorn_conf"
UNREACHABLE = "POST /jobs, SQS unreachable"


async def _bare_health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _bare_create(request: Request) -> JSONResponse:
    return JSONResponse(await request.json(), status_code=201)


# The baseline, served by gunicorn in its own process as ``bench.api:bare_app``.
bare_app = Starlette(
    routes=[Route("/health", _bare_health), Route("/jobs", _bare_create, methods=["POST"])]
)


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _find(pattern: str, out: str) -> tuple[str, ...]:
    found = re.search(pattern, out)
    if found is None:
        raise ValueError(f"no {pattern!r} in wrk's output:\n{out}")
    return found.groups()


def _ms(out: str, percentile: int) -> float:
    number, unit = _find(rf"{percentile}%\s+([\d.]+)([a-z]+)", out)
    return float(number) * _UNITS[unit]


def wrk(url: str, *, duration: int, threads: int, connections: int, script: Path | None) -> Run:
    # A long timeout: a slow answer belongs in the latency figures, not in the error count.
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-T30s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return Run(
        requests_per_second=float(_find(r"Requests/sec:\s+([\d.]+)", out)[0]),
        p50_ms=_ms(out, 50),
        p99_ms=_ms(out, 99),
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(map(int, sockets.groups())) if sockets else 0),
    )


class Server:
    """``command`` (a gunicorn master) run from the repository root, on ``port``."""

    def __init__(self, command: list[str], port: int, environ: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,  # so that gunicorn's workers can import bench.api
            env=os.environ | environ | {"PORT": str(port), "WEB_CONCURRENCY": str(WORKERS)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait(self, path: str, timeout: float = 60.0) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url}: the server exited ({self.process.returncode})")
            return answers_ok(self.url + path, timeout=2)

        wait_until(up, timeout, f"{self.url}{path} to answer 200", interval=0.1)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Valve:
    """A TCP relay to ``target``; closed, it black-holes: connections accepted, bytes held.

    Between the API and moto, so "SQS unreachable" is a real network fault (read timeouts, not
    refused connections) and moto keeps its state. Open again, held bytes flow on.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = threading.Event()
        self.open.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target) as upstream:
            selector = selectors.DefaultSelector()
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while True:
                self.open.wait()
                for key, _ in selector.select(timeout=0.5):
                    self.open.wait()  # closed meanwhile: hold what arrived
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)

    def close(self) -> None:
        self.listener.close()


@contextlib.contextmanager
def black_holed(valve: Valve) -> Iterator[None]:
    valve.open.clear()
    try:
        yield
    finally:
        valve.open.set()


@contextlib.contextmanager
def draining(queue_url: str) -> Iterator[None]:
    """Delete the queue's messages as they arrive, so moto's SendMessage stays fast."""
    sqs = aws.client("sqs")
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if messages:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(messages)
                    ],
                )

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def backing_services(stack: contextlib.ExitStack) -> tuple[dict[str, str], str, Issuer, Valve]:
    """moto, PostgreSQL with the jobs schema, the token issuer; the API's environment, its queue
    URL, the issuer, and the valve between the API and moto."""
    port = free_port()
    issuer = stack.enter_context(
        serving(Issuer(IssuerConfig(url=f"http://127.0.0.1:{port}")), port)
    )
    moto = MotoServer()
    moto.start()
    stack.callback(moto.stop)
    environ = fake_aws_environment(moto.endpoint_url)
    os.environ.update(environ)
    valve = Valve(("127.0.0.1", moto.port))
    stack.callback(valve.close)
    cluster = PostgresCluster()
    stack.callback(cluster.destroy)
    cluster.start()
    database = cluster.create_database()
    migrations.upgrade(database.conninfo())
    secret_id = f"{APP}/{ENV}/db"
    aws.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps(database.rds_secret())
    )
    queue_url = aws.client("sqs").create_queue(QueueName="jobs")["QueueUrl"]
    environ |= {
        "APP_NAME": APP,
        "APP_ENV": ENV,
        "SERVICE_NAME": "api",
        "DB_SECRET": secret_id,
        "QUEUE_URL": queue_url,
        "AUTH__ISSUER": issuer.config.url,
        "AUTH__AUDIENCES": json.dumps([issuer.config.client_id]),
        **database.verify_full_env(),
        # The API reaches moto through the valve only (the drain thread, directly).
        "AWS_ENDPOINT_URL": valve.url,
    }
    return environ, queue_url, issuer, valve


def summary(runs: list[Run]) -> dict[str, Any]:
    def spread(values: list[float]) -> tuple[float, float, float]:
        return statistics.median(values), min(values), max(values)

    return {
        "rps": spread([run.requests_per_second for run in runs]),
        "p50": spread([run.p50_ms for run in runs]),
        "p99": spread([run.p99_ms for run in runs]),
        "errors": sum(run.errors for run in runs),
    }


def _fmt(figure: tuple[float, float, float], digits: int) -> str:
    median, low, high = figure
    return f"{median:>9.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def record(
    runs: dict[tuple[str, str], list[Run]], round_number: int, name: str, path: str, run: Run
) -> None:
    runs.setdefault((name, path), []).append(run)
    print(
        f"round {round_number} {name:>4} {path:<29} "
        f"{run.requests_per_second:>9.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
        f"p99 {run.p99_ms:7.2f} ms  errors {run.errors}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write every wrk run here (bench/report.py)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/api.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        environ, queue_url, issuer, valve = backing_services(stack)
        # Every request carries the token; the noauth app never looks at it.
        authorization = f"Bearer {issuer.mint('bench', ['jobs:read', 'jobs:write'])}"
        post = Path(scratch) / "post.lua"
        post.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "{authorization}"\n'
            f"wrk.body = {json.dumps(json.dumps(JOB))}\n"
        )
        get = Path(scratch) / "get.lua"
        get.write_text(f'wrk.headers["Authorization"] = "{authorization}"\n')
        gunicorn = [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG]
        servers = {
            "bare": Server([*gunicorn, "bench.api:bare_app"], free_port(), environ),
            "api": Server(load_spec(SERVICE_DIR / "service.toml").command, free_port(), environ),
            "noauth": Server([*gunicorn, "bench.unauthenticated:app"], free_port(), environ),
        }
        for server in servers.values():
            stack.callback(server.stop)
        servers["bare"].wait("/health")
        servers["api"].wait("/ready")
        servers["noauth"].wait("/ready")
        job = httpx.post(
            servers["api"].url + "/jobs", json=JOB, headers={"Authorization": authorization}
        )
        job.raise_for_status()
        # What each path is loaded with, and which servers answer it (bare has no /jobs/{id}).
        plan = (
            ("GET /health", "/health", None, ("bare", "api")),
            ("POST /jobs", "/jobs", post, ("bare", "api", "noauth")),
            ("GET /jobs/{id}", f"/jobs/{job.json()['id']}", get, ("api", "noauth")),
        )

        runs: dict[tuple[str, str], list[Run]] = {}
        load = {"threads": args.threads, "connections": args.connections}
        for round_number in range(1, args.rounds + 1):
            for path, target, script, names in plan:
                for name in names:
                    server = servers[name]
                    url = server.url + target
                    with draining(queue_url):
                        run = wrk(url, duration=args.duration, script=script, **load)
                    record(runs, round_number, name, path, run)
            # The API alone while SQS does not answer, right after the same round's SQS-up run.
            url = servers["api"].url + "/jobs"
            with black_holed(valve):
                run = wrk(url, duration=args.duration, script=post, **load)
            record(runs, round_number, "api", UNREACHABLE, run)

    setting = (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {WORKERS} gunicorn workers (uvicorn_worker.UvicornWorker), "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"{args.rounds} rounds"
    )
    print(f"\n{setting}; medians [min-max]\n")
    if args.json:
        document = {
            "setting": setting,
            "runs": [
                {
                    "round": number,
                    "server": name,
                    "path": path,
                    "rps": run.requests_per_second,
                    "p50": run.p50_ms,
                    "p99": run.p99_ms,
                    "errors": run.errors,
                }
                for (name, path), series in runs.items()
                for number, run in enumerate(series, start=1)
            ],
        }
        args.json.write_text(json.dumps(document, indent=2))
    print(f"{'':4} {'':29} {'req/s':>22} {'p50 ms':>22} {'p99 ms':>22}  errors")
    figures = {key: summary(value) for key, value in runs.items()}
    for (name, path), figure in figures.items():
        print(
            f"{name:>4} {path:<29} {_fmt(figure['rps'], 0):>22} {_fmt(figure['p50'], 2):>22} "
            f"{_fmt(figure['p99'], 2):>22}  {figure['errors']}"
        )

    health = figures[("api", "GET /health")]["rps"][0] / figures[("bare", "GET /health")]["rps"][0]
    jobs = figures[("api", "POST /jobs")]
    floor = figures[("bare", "POST /jobs")]
    print(
        f"\nGET /health  api / bare requests/s: {health:.2f}  (target >= 0.80)\n"
        f"POST /jobs   api p99 / p50: {jobs['p99'][0] / jobs['p50'][0]:.2f}  (target < 5)\n"
        f"POST /jobs   api / bare requests/s: {jobs['rps'][0] / floor['rps'][0]:.3f}  "
        "(bare: no database, no SQS)\n"
        f"POST /jobs   api p99 with SQS unreachable: {figures[('api', UNREACHABLE)]['p99'][0]:.1f}"
        f" ms (target < 2000; SQS up: {jobs['p99'][0]:.1f} ms)"
    )
    for path in ("POST /jobs", "GET /jobs/{id}"):
        ratio = figures[("api", path)]["rps"][0] / figures[("noauth", path)]["rps"][0]
        print(f"{path:<14} auth on / auth off requests/s: {ratio:.3f}  (target >= 0.90)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
