"""Concurrent clients of a jobs API (the api, or a service made from it): what they saw.

Each client posts an ``echo`` job and reads it back, once every ``pace`` seconds, until the
traffic is stopped (``with Traffic(...)``: started on entry, stopped and joined on exit). A request
fails when it raises (connection refused or reset, timeout) or answers other than 200/201. The
compose deploy test (tests/test_compose_deploy.py) and the deploy benchmark (bench/deploy.py)
both measure a deploy with it. httpx comes from the caller's environment (tests, bench).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from servicekit.testing.polling import wait_until

__all__ = ["Traffic"]


class Traffic:
    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        clients: int = 32,
        pace: float = 4.0,
        timeout: float = 30.0,
    ) -> None:
        self.url, self.headers, self.clients = url, dict(headers), clients
        self.pace, self.timeout = pace, timeout
        self.ids: list[str] = []
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _request(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON, or None when the request failed (and is counted)."""
        started = time.monotonic()
        body, failure = None, None
        try:
            response = http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            failure = f"{method} {path}: {type(error).__name__}: {error}"
        else:
            if response.status_code in (200, 201):
                body = response.json()
            else:
                failure = f"{method} {path}: {response.status_code} {response.text[:200]}"
        with self._lock:
            self.latencies.append(time.monotonic() - started)
            if failure:
                self.failures.append(failure)
        return body

    def _client(self, number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout, headers=self.headers) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                job = self._request(
                    http, "POST", "/jobs", json={"type": "echo", "payload": {"client": number}}
                )
                if job is not None:
                    with self._lock:
                        self.ids.append(str(job["id"]))
                    self._request(http, "GET", f"/jobs/{job['id']}")
                # Pacing (not a wait for anything): one round per client every `pace` s.
                self._stop.wait(max(0.0, started + self.pace - time.monotonic()))

    def __enter__(self) -> Traffic:
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def answered(self, count: int, timeout: float = 60.0) -> None:
        """Returns once ``count`` more requests than now have been answered (or failed)."""
        with self._lock:
            target = len(self.latencies) + count
        wait_until(
            lambda: len(self.latencies) >= target, timeout, f"{count} more requests answered", 0.2
        )

    def figures(self) -> dict[str, float]:
        """requests, failed, p50 and p99 (ms) of what was sent."""
        cuts = (
            statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [0.0] * 99
        )
        return {
            "requests": len(self.latencies),
            "failed": len(self.failures),
            "p50_ms": cuts[49] * 1000,
            "p99_ms": cuts[98] * 1000,
        }

    def summary(self) -> str:
        figures = self.figures()
        return (
            f"{figures['requests']:.0f} requests, {figures['failed']:.0f} failed, "
            f"p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms"
        )
