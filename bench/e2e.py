"""End to end through the composed suite: jobs/s from ``POST /jobs`` to ``succeeded``, and latency.

Brings the suite up with ``docker compose up --build --wait`` (bench/suite.py: its own project,
port and image tags; every service with its spec's CPU and memory, so one API task of 0.5 vCPU
and one worker task of 1 vCPU), then, in every round:

1. baseline, ``POST /jobs`` alone: CLIENTS threads post ``echo`` jobs back to back; the API's
   acceptance rate in the same suite (the worker consumes meanwhile). Then the queue drains.
2. end to end: the same clients, but no more than OUTSTANDING jobs posted and not yet
   ``succeeded`` (moto's SQS slows as its backlog grows, see bench/worker.py), so the figure is
   the rate the whole path sustains with a small, steady backlog (its maximum is printed).
   Throughput: jobs whose ``finished_at`` falls in the measured window, per second. Latency: a
   job's ``finished_at`` (PostgreSQL's clock, the same kernel clock as this process) minus the
   moment its client sent ``POST /jobs``, for the jobs sent in the window.

3. paced: the same clients post at a fixed RATE jobs/s (an open loop: each send has its due
   time), below what the suite sustains, so the latency is the path's own and not the queueing
   that a closed loop adds as the suite gets faster (more jobs in flight at once, Little's law).
   RATE (60 jobs/s) is just below the end-to-end throughput before the outbox relay (67 jobs/s,
   `make bench` of 2026-11-26 at f7e35fc), so both paths sustain it. Where the time goes is
   read from the jobs' own timestamps: committed to sent (``created_at`` to ``enqueued_at``,
   the relay), sent to started (SQS and the worker's receive), started to finished (the handler
   and the update).

Ratios: end-to-end jobs/s over the POST-alone requests/s (1.0: the API is the bottleneck, the
queue and the worker keep up) and end-to-end p50 over the POST's own p50. Figures are medians over
the rounds, [min-max] beside them. Run: ``uv run python bench/e2e.py [--rounds N --seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from suite import Suite, running_suite

from servicekit import aws
from servicekit.testing.moto import fake_aws_environment
from servicekit.testing.polling import wait_until

CLIENTS = 8
OUTSTANDING = 24
RATE = 60.0
WARMUP = 2.0
DRAIN_TIMEOUT = 120.0
PERCENTILES = (50, 90, 99)
LATENCY_KEYS = (*(f"p{p}" for p in PERCENTILES), "max")
STAGES = ("committed_to_sent", "sent_to_started", "started_to_finished")


@dataclass
class Phase:
    """What one load phase sent: job id -> client send time (epoch s), and each POST's latency."""

    sent: dict[str, float] = field(default_factory=dict)
    post_ms: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    backlog: list[int] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)
    finished: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


class Load:
    """CLIENTS threads posting jobs; with ``limit``, at most that many posted and not finished;
    with ``rate``, one job every 1/rate s (each client takes the next due time)."""

    def __init__(
        self, suite: Suite, clients: int, limit: int | None, rate: float | None = None
    ) -> None:
        self.suite = suite
        # Asked for before the phase: `docker compose exec` starts a Python process in the
        # issuer, which on this machine's two cores would weigh on the measured window.
        self.headers = {"Authorization": f"Bearer {suite.token('bench')}"}
        self.clients = clients
        self.limit = limit
        self.rate = rate
        self.due = 0.0
        self.phase = Phase()
        self.reserved = 0
        self.succeeded = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, warmup: float, seconds: float) -> Phase:
        # Wall-clock times: they are compared with PostgreSQL's timestamps (the same clock).
        since = time.time()
        self.due = time.perf_counter()
        threads = [threading.Thread(target=self._post) for _ in range(self.clients)]
        threads.append(threading.Thread(target=self._watch, args=(since,)))
        for thread in threads:
            thread.start()
        self.stop.wait(warmup)
        start = time.time()
        self.stop.wait(seconds)
        self.phase.window = (start, time.time())
        self.stop.set()
        for thread in threads:
            thread.join()
        return self.phase

    def _room(self) -> bool:
        if self.rate is not None:
            with self.lock:
                due, self.due = self.due, self.due + 1 / self.rate
            self.stop.wait(max(0.0, due - time.perf_counter()))
            return not self.stop.is_set()
        with self.lock:
            if self.limit is not None and self.reserved - self.succeeded >= self.limit:
                return False
            self.reserved += 1
            return True

    def _post(self) -> None:
        with httpx.Client(base_url=self.suite.api_url, headers=self.headers, timeout=30) as client:
            while not self.stop.is_set():
                if not self._room():
                    self.stop.wait(0.002)
                    continue
                sent, began = time.time(), time.perf_counter()
                answer = client.post("/jobs", json={"type": "echo", "payload": {"at": sent}})
                elapsed = (time.perf_counter() - began) * 1000
                with self.lock:
                    if answer.status_code in (201, 202):
                        job_id = answer.json()["id"]
                        self.phase.sent[job_id] = sent
                        self.phase.post_ms[job_id] = elapsed
                    else:
                        self.phase.errors += 1
                        self.reserved -= 1

    def _watch(self, since: float) -> None:
        """The succeeded count every 50 ms (for the limit), the queue's backlog every 0.5 s."""
        sqs, queue_url = aws.client("sqs"), self.suite.queue_url
        with psycopg.connect(self.suite.database, autocommit=True) as conn:
            ticks = 0
            while not self.stop.wait(0.05):
                row = conn.execute(
                    "SELECT count(*) FROM jobs WHERE status = 'succeeded' "
                    "AND created_at >= to_timestamp(%s)",
                    (since,),
                ).fetchone()
                with self.lock:
                    self.succeeded = row[0] if row else 0
                ticks += 1
                if ticks % 10 == 0:
                    attributes = sqs.get_queue_attributes(
                        QueueUrl=queue_url,
                        AttributeNames=["ApproximateNumberOfMessages"],
                    )["Attributes"]
                    self.phase.backlog.append(int(attributes["ApproximateNumberOfMessages"]))


def settle(suite: Suite, phase: Phase) -> None:
    """Waits until every job the phase sent has finished; reads when each did."""
    ids = list(phase.sent)
    with psycopg.connect(suite.database, autocommit=True) as conn:

        def finished() -> list[tuple[str, str, float]]:
            rows = conn.execute(
                "SELECT id::text, status, extract(epoch FROM finished_at)::float8 FROM jobs "
                "WHERE id = ANY(%s::uuid[]) AND finished_at IS NOT NULL",
                (ids,),
            ).fetchall()
            return rows if len(rows) == len(ids) else []

        rows = wait_until(finished, DRAIN_TIMEOUT, "every job posted to finish", interval=0.2)
    phase.finished = {job_id: at for job_id, status, at in rows if status == "succeeded"}
    phase.failed = len(rows) - len(phase.finished)
    measured = in_window(phase)
    with psycopg.connect(suite.database, autocommit=True) as conn:
        spans = conn.execute(
            "SELECT extract(epoch FROM enqueued_at - created_at) * 1000,"
            " extract(epoch FROM started_at - enqueued_at) * 1000,"
            " extract(epoch FROM finished_at - started_at) * 1000"
            " FROM jobs WHERE id = ANY(%s::uuid[]) AND status = 'succeeded'",
            (measured,),
        ).fetchall()
    if len(spans) > 1:
        phase.stages = {
            stage: percentiles([float(row[index]) for row in spans])
            for index, stage in enumerate(STAGES)
        }


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}": cuts[p - 1] for p in PERCENTILES} | {"max": max(values)}


def in_window(phase: Phase) -> list[str]:
    """The jobs the phase sent inside its measured window (after the warm-up)."""
    start, end = phase.window
    return [job_id for job_id, sent in phase.sent.items() if start <= sent <= end]


def latencies(phase: Phase) -> list[float]:
    """Client send to ``finished_at``, ms, for the window's succeeded jobs."""
    return [
        (phase.finished[job_id] - phase.sent[job_id]) * 1000
        for job_id in in_window(phase)
        if job_id in phase.finished
    ]


def round_figures(baseline: Phase, loaded: Phase, paced: Phase) -> dict[str, Any]:
    start, end = loaded.window
    finished = [at for at in loaded.finished.values() if start <= at <= end]
    measured = [job_id for job_id in in_window(loaded) if job_id in loaded.finished]
    loaded_ms = latencies(loaded)
    accepted = in_window(baseline)
    return {
        "jobs_per_second": len(finished) / (end - start),
        "latency_ms": percentiles(loaded_ms),
        "latencies_ms": [round(value, 1) for value in loaded_ms],
        "paced_ms": percentiles(latencies(paced)),
        "paced_stages_ms": paced.stages,
        "post_ms": percentiles([loaded.post_ms[job_id] for job_id in measured]),
        "backlog_max": max(loaded.backlog, default=0),
        "post_only_per_second": len(accepted) / (baseline.window[1] - baseline.window[0]),
        "post_only_ms": percentiles([baseline.post_ms[job_id] for job_id in accepted]),
        "post_only_backlog_max": max(baseline.backlog, default=0),
        "errors": loaded.errors + baseline.errors + paced.errors,
        "not_succeeded": loaded.failed + baseline.failed + paced.failed,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(
    suite: Suite,
    rounds: int,
    seconds: float,
    clients: int = CLIENTS,
    outstanding: int = OUTSTANDING,
    rate: float = RATE,
) -> dict[str, Any]:
    os.environ.update(fake_aws_environment(f"http://{suite.address('moto', 5000)}"))
    aws.reset_clients()
    results = []
    for number in range(1, rounds + 1):
        baseline = Load(suite, clients, None).run(1.0, seconds)
        settle(suite, baseline)
        loaded = Load(suite, clients, outstanding).run(WARMUP, seconds)
        settle(suite, loaded)
        paced = Load(suite, clients, None, rate).run(WARMUP, seconds)
        settle(suite, paced)
        figures = round_figures(baseline, loaded, paced)
        results.append(figures)
        print(
            f"round {number}: end to end {figures['jobs_per_second']:6.1f} jobs/s, "
            f"p50 {figures['latency_ms']['p50']:6.1f} ms, p99 {figures['latency_ms']['p99']:6.1f}"
            f" ms, backlog max {figures['backlog_max']}; POST alone "
            f"{figures['post_only_per_second']:6.1f} req/s; at {rate:g} jobs/s p50 "
            f"{figures['paced_ms']['p50']:6.1f} ms, p99 {figures['paced_ms']['p99']:6.1f} ms",
            flush=True,
        )
    summary = {
        "jobs_per_second": spread([r["jobs_per_second"] for r in results]),
        "post_only_per_second": spread([r["post_only_per_second"] for r in results]),
        **{f"latency_{p}": spread([r["latency_ms"][p] for r in results]) for p in LATENCY_KEYS},
        **{f"post_{p}": spread([r["post_ms"][p] for r in results]) for p in LATENCY_KEYS},
        **{f"post_only_{p}": spread([r["post_only_ms"][p] for r in results]) for p in LATENCY_KEYS},
        **{f"paced_{p}": spread([r["paced_ms"][p] for r in results]) for p in LATENCY_KEYS},
        **{
            f"paced_{stage}_{p}": spread([r["paced_stages_ms"][stage][p] for r in results])
            for stage in STAGES
            for p in ("p50", "p99")
        },
    }
    return {
        "rounds": rounds,
        "seconds": seconds,
        "clients": clients,
        "outstanding": outstanding,
        "rate": rate,
        "summary": summary,
        "ratios": {
            "e2e_over_post_only": summary["jobs_per_second"]["median"]
            / summary["post_only_per_second"]["median"],
            "e2e_p50_over_post_p50": summary["latency_p50"]["median"]
            / summary["post_p50"]["median"],
        },
        "backlog_max": max(figures["backlog_max"] for figures in results),
        "errors": sum(figures["errors"] for figures in results),
        "not_succeeded": sum(figures["not_succeeded"] for figures in results),
        "rounds_detail": results,
    }


def _fmt(figure: dict[str, float], digits: int = 1) -> str:
    return f"{figure['median']:.{digits}f} [{figure['min']:.{digits}f}-{figure['max']:.{digits}f}]"


def print_figures(result: dict[str, Any]) -> None:
    summary = result["summary"]
    print(
        f"\nend to end, {result['clients']} clients, at most {result['outstanding']} jobs "
        f"outstanding, {result['rounds']} rounds x {result['seconds']:g} s; medians [min-max]"
    )
    print(f"  jobs/s, POST /jobs to succeeded     {_fmt(summary['jobs_per_second'])}")
    for p in ("p50", "p90", "p99"):
        print(f"  latency {p}, ms                    {_fmt(summary[f'latency_{p}'])}")
    print(f"  latency max, ms                    {_fmt(summary['latency_max'])}")
    post = f"{_fmt(summary['post_p50'])} / {_fmt(summary['post_p99'])}"
    print(f"  POST /jobs itself p50 / p99, ms    {post}")
    print(f"  baseline: POST /jobs alone, req/s  {_fmt(summary['post_only_per_second'])}")
    paced = " / ".join(_fmt(summary[f"paced_{p}"]) for p in ("p50", "p90", "p99"))
    print(f"  at {result['rate']:g} jobs/s: latency p50 / p90 / p99, ms  {paced}")
    for p in ("p50", "p99"):
        stages = "; ".join(
            f"{stage.replace('_', ' ')} {_fmt(summary[f'paced_{stage}_{p}'])}" for stage in STAGES
        )
        print(f"  at {result['rate']:g} jobs/s, {p} per stage, ms: {stages}")
    print(
        f"  end-to-end / POST-alone rate {result['ratios']['e2e_over_post_only']:.2f}; "
        f"end-to-end p50 / POST p50 {result['ratios']['e2e_p50_over_post_p50']:.1f}x; "
        f"queue backlog max {result['backlog_max']}; errors {result['errors']}; "
        f"jobs not succeeded {result['not_succeeded']}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured per phase")
    parser.add_argument("--rate", type=float, default=RATE, help="jobs/s of the paced phase")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with running_suite() as suite:
        result = measure(suite, args.rounds, args.seconds, rate=args.rate)
    print_figures(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
