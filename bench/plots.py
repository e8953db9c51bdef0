"""The figures BENCHMARKS.md links, drawn with matplotlib from the benchmarks' own figures.

- API latency: p50 and p99 of ``GET /health`` and ``POST /jobs``, the API beside the bare
  Starlette app (bench/api.py; the bars are medians over the rounds, the whiskers min-max).
- End-to-end latency: the distribution of ``POST /jobs`` to ``succeeded`` (bench/e2e.py), every
  job of every round, as a cumulative curve.
- Worker throughput against the consumer's handler concurrency, 20 ms handler (bench/worker.py
  ``--sweep``), with the naive loop, the emulator's ceiling and the concurrency/20 ms ideal.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

SIZE = (6.4, 3.4)
DPI = 100


def _save(figure: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def api_latency(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """``runs``: one per wrk run, with server ("api", "bare"), path, p50 and p99 in ms."""
    endpoints = list(dict.fromkeys(run["path"] for run in runs))
    figure, axes = plt.subplots(1, len(endpoints), figsize=SIZE, squeeze=False)
    for axis, endpoint in zip(axes[0], endpoints, strict=True):
        for offset, server in ((-0.2, "bare"), (0.2, "api")):
            mine = [run for run in runs if run["path"] == endpoint and run["server"] == server]
            for position, key in enumerate(("p50", "p99")):
                values = [run[key] for run in mine]
                middle = statistics.median(values)
                axis.bar(
                    position + offset,
                    middle,
                    width=0.38,
                    color="tab:gray" if server == "bare" else "tab:blue",
                    yerr=[[middle - min(values)], [max(values) - middle]],
                    capsize=3,
                    label=(server if server == "api" else "bare Starlette")
                    if position == 0
                    else None,
                )
        axis.set_xticks([0, 1], ["p50", "p99"])
        axis.set_yscale("log")
        axis.set_ylabel("ms")
        axis.set_title(endpoint)
        axis.legend(fontsize="small")
    figure.suptitle("API latency (wrk, same server and worker count)", fontsize="medium")
    _save(figure, path)


def e2e_latency(latencies_ms: Sequence[float], post_p50_ms: float, path: Path) -> None:
    values = sorted(latencies_ms)
    figure, axis = plt.subplots(figsize=SIZE)
    axis.plot(values, [(index + 1) / len(values) for index in range(len(values))])
    for share in (0.5, 0.9, 0.99):
        axis.axhline(share, color="tab:gray", linewidth=0.5)
    axis.axvline(
        post_p50_ms, color="tab:orange", linestyle="--", label="the POST /jobs request, p50"
    )
    axis.set_xlim(left=0)
    axis.set_xlabel("POST /jobs to succeeded, ms")
    axis.set_ylabel("share of jobs")
    axis.set_title(f"End-to-end latency through the composed suite ({len(values)} jobs)")
    axis.legend(fontsize="small", loc="lower right")
    _save(figure, path)


def worker_concurrency(worker: dict[str, Any], path: Path) -> None:
    """``worker``: bench/worker.py's JSON (its ``sweep`` and ``variants``)."""
    levels = [point["concurrency"] for point in worker["sweep"]]
    medians = [point["median"] for point in worker["sweep"]]
    errors = [
        [point["median"] - point["min"] for point in worker["sweep"]],
        [point["max"] - point["median"] for point in worker["sweep"]],
    ]
    variants = worker["variants"]
    figure, axis = plt.subplots(figsize=SIZE)
    axis.errorbar(levels, medians, yerr=errors, marker="o", capsize=3, label="consumer, 20 ms")
    ideal = [level * 1000 / worker["handler_io_ms"] for level in levels]
    axis.plot(levels, ideal, linestyle=":", color="tab:gray", label="concurrency / 20 ms")
    ceiling = variants["ceiling"]
    axis.axhline(ceiling["median"], color="tab:green", label="ceiling (no handler), min-max")
    axis.axhspan(ceiling["min"], ceiling["max"], color="tab:green", alpha=0.15)
    axis.axhline(variants["naive_io"]["median"], color="tab:red", label="naive loop, 20 ms")
    axis.set_xscale("log", base=2)
    axis.set_xticks(levels, [str(level) for level in levels])
    axis.set_ylim(0, max([*medians, ceiling["max"]]) * 1.3)
    axis.set_xlabel("handler threads")
    axis.set_ylabel("messages/s")
    axis.set_title(f"Worker throughput, backlog held under {worker['backlog_limit']} (moto)")
    axis.legend(fontsize="small", loc="upper left")
    _save(figure, path)
