"""Peak memory per service under the end-to-end load, against the task memory in its spec.

Brings the composed suite up (bench/suite.py), samples each service container's memory ten times
a second while bench/e2e.py's load runs, and prints per service:

- peak RSS: the cgroup's anonymous memory (``total_rss`` on cgroup v1, ``anon`` on v2), the
  largest sample under load. Pages shared between gunicorn's master and workers count once.
- cgroup peak: the kernel's own high-water mark since the container started (v1
  ``memory.max_usage_in_bytes``, v2 ``memory.peak``), page cache included.
- headroom: (task memory - peak RSS) / task memory, the task memory from ``service.toml`` (the
  compose ``mem_limit`` mirrors it). Target: peak RSS under the spec's scaling memory_target
  percent of it (where the service scales on memory; else under the task memory).

Where the host cannot read the containers' cgroups (Docker Desktop, rootless), it falls back to
``docker stats`` samples (about one every two seconds; no kernel peak). Run:
``uv run python bench/memory.py [--rounds N --seconds S --json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import e2e
from suite import SERVICES, Suite, docker, running_suite

MIB = 1024 * 1024
INTERVAL = 0.1
CGROUP = Path("/sys/fs/cgroup")
_UNITS = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "kB": 1000, "MB": 1e6, "GB": 1e9}


def _stat(directory: Path, key: str) -> int:
    for line in (directory / "memory.stat").read_text().splitlines():
        name, value = line.split()
        if name == key:
            return int(value)
    raise KeyError(f"{key} not in {directory}/memory.stat")


class Cgroup:
    """A container's memory cgroup as this host sees it (v1 or v2)."""

    def __init__(self, container: str) -> None:
        pid = docker("inspect", "--format", "{{.State.Pid}}", container).strip()
        paths = dict(
            line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        )
        if "memory" in paths:  # cgroup v1: a memory hierarchy of its own
            self.directory = CGROUP / "memory" / paths["memory"].lstrip("/")
            self.rss_key, self.peak_file = "total_rss", "memory.max_usage_in_bytes"
        else:
            self.directory = CGROUP / paths[""].lstrip("/")
            self.rss_key, self.peak_file = "anon", "memory.peak"
        self.rss()  # fails here, before any load, when the files are out of reach

    def rss(self) -> int:
        return _stat(self.directory, self.rss_key)

    def peak(self) -> int | None:
        peak = self.directory / self.peak_file
        return int(peak.read_text()) if peak.exists() else None


class DockerStats:
    """``docker stats`` for one container: usage without page cache, no kernel peak."""

    def __init__(self, container: str) -> None:
        self.container = container

    def rss(self) -> int:
        usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", self.container)
        found = re.match(r"([\d.]+)\s*([A-Za-z]+)", usage.strip())
        if found is None:
            raise ValueError(f"unreadable docker stats memory: {usage!r}")
        return int(float(found.group(1)) * _UNITS[found.group(2)])

    def peak(self) -> None:
        return None


def _reader(container: str) -> Cgroup | DockerStats:
    try:
        return Cgroup(container)
    except (OSError, KeyError, ValueError):
        return DockerStats(container)


class MemorySampler:
    """Samples every service's memory in a thread while the ``with`` block runs."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.readers = {service: _reader(suite.container(service)) for service in SERVICES}
        self.samples: dict[str, list[int]] = {service: [] for service in SERVICES}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def method(self) -> str:
        kinds = {type(reader).__name__ for reader in self.readers.values()}
        return "cgroup" if kinds == {"Cgroup"} else "docker stats"

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(INTERVAL):
            for service, reader in self.readers.items():
                self.samples[service].append(reader.rss())

    def figures(self) -> dict[str, dict[str, Any]]:
        figures = {}
        for service, reader in self.readers.items():
            spec = self.suite.specs[service]
            peak_rss = max(self.samples[service], default=0) / MIB
            kernel_peak = reader.peak()
            # The scaling policy adds tasks above memory_target percent: the limit to stay under.
            target = (spec.scaling.memory_target if spec.scaling else None) or 100
            figures[service] = {
                "peak_rss_mib": peak_rss,
                "cgroup_peak_mib": None if kernel_peak is None else kernel_peak / MIB,
                "samples": len(self.samples[service]),
                "task_memory_mib": spec.task.memory,
                "headroom_percent": 100 * (1 - peak_rss / spec.task.memory),
                "target_percent": target,
                "met": peak_rss <= spec.task.memory * target / 100,
            }
        return figures


def print_figures(figures: dict[str, dict[str, Any]], method: str) -> None:
    print(f"\nmemory per service under the end-to-end load ({method}, sampled every {INTERVAL} s)")
    print(
        f"{'service':<10} {'peak RSS':>10} {'cgroup peak':>12} {'task memory':>12} "
        f"{'headroom':>9}  target"
    )
    for service, figure in figures.items():
        kernel = figure["cgroup_peak_mib"]
        print(
            f"{service:<10} {figure['peak_rss_mib']:>6.0f} MiB "
            f"{'-' if kernel is None else f'{kernel:.0f} MiB':>12} "
            f"{figure['task_memory_mib']:>8} MiB {figure['headroom_percent']:>8.0f}%  "
            f"peak <= {figure['target_percent']:g}% of task memory: "
            f"{'met' if figure['met'] else 'NOT met'}"
        )


def measure(
    suite: Suite, load: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs ``load`` (the e2e rounds) under the sampler: (load's result, memory figures)."""
    with MemorySampler(suite) as sampler:
        result = load()
    return result, {"method": sampler.method, "services": sampler.figures()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    e2e.add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with running_suite() as suite:
        result, memory = measure(suite, lambda: e2e.measure(suite, args.rounds, args.seconds))
    e2e.print_figures(result)
    print_figures(memory["services"], memory["method"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(memory, indent=2))


if __name__ == "__main__":
    main()
