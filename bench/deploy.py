"""Requests during a deploy: the api's clients while `suite deploy --local` replaces both fleets.

In the composed suite (bench/suite.py), CLIENTS clients post a job and read it back, each once
every PACE s (servicekit.testing.traffic), for the whole of a deploy of the api (blue/green
behind its load balancer) and the worker (rolling), images as built; then the same clients for a
window of the same length without a deploy. Figures: requests, failed requests (connection
errors, 5xx), p99 of each; the ratio is the deploy window's p99 over the quiet one's. Run:
``uv run python bench/deploy.py`` (its own suite up and down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from suite import FILES, ROOT, Suite, running_suite

from servicekit.testing.traffic import Traffic

CLIENTS = 32
PACE = 2.0


def _traffic(suite: Suite, headers: dict[str, str]) -> Traffic:
    return Traffic(suite.api_url, headers, clients=CLIENTS, pace=PACE)


def measure(suite: Suite) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {suite.token('bench-deploy')}"}
    # The deploy's docker compose calls see the files and names the bench's suite was made with.
    env = suite.env | {"COMPOSE_FILE": os.pathsep.join(str(ROOT / name) for name in FILES)}
    with _traffic(suite, headers) as during:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "suite_tools", "deploy", "--local", "--no-build"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        seconds = time.monotonic() - started
    print(done.stderr, end="", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"suite deploy --local failed: {done.stderr.strip()[-1000:]}")
    with _traffic(suite, headers) as quiet:
        time.sleep(seconds)  # the same window's length, without a deploy: not a wait
    return {
        "clients": CLIENTS,
        "pace_seconds": PACE,
        "deploy_seconds": seconds,
        "deploy": during.figures(),
        "quiet": quiet.figures(),
        "failures": during.failures[:20] + quiet.failures[:20],
    }


def print_figures(result: dict[str, Any]) -> None:
    for window in ("deploy", "quiet"):
        figure = result[window]
        print(
            f"{window:<7} {result['deploy_seconds']:.0f} s, {result['clients']} clients: "
            f"{figure['requests']:.0f} requests, {figure['failed']:.0f} failed, "
            f"p50 {figure['p50_ms']:.0f} ms, p99 {figure['p99_ms']:.0f} ms"
        )


def main() -> int:
    with running_suite() as suite:
        result = measure(suite)
    print_figures(result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
