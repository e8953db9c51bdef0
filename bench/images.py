"""Image size per service against its base and a naive image; container start to healthy.

1. Sizes (as ``docker images`` shows them: uncompressed, MB = 10^6 bytes): each service's image
   (the repository's Dockerfile, built by ``docker compose build``), its base image
   (``PYTHON_IMAGE``), and bench/naive.Dockerfile's image built in the same run from the same base
   (one stage, ``pip install`` of the service's workspace packages). Target: image <= base + 100.
2. Start to healthy: seconds from ``docker run -d`` to the first 200 from the container's health
   path (polled every 20 ms through a published loopback port). Each service's image runs on the
   composed suite's network with the environment compose gives it, its spec's CPU and memory,
   a read-only root and a /tmp tmpfs; beside it, bench/bare/'s Starlette app (same base, same
   server stack as the API, no configuration to load) started the same way with the same limits.
   Rounds alternate between the two; medians [min-max].

Run: ``uv run python bench/images.py [--rounds N --json PATH]`` (brings the suite up and down).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from suite import ROOT, SERVICES, Suite, docker, running_suite

from servicekit.testing.moto import free_port
from servicekit.testing.polling import answers_ok, wait_until

HERE = Path(__file__).resolve().parent
BASE = os.environ.get("PYTHON_IMAGE", "python:3.12-slim-bookworm")
BARE = "ecs-suite-bench/bare:local"
TARGET_OVER_BASE_MB = 100
MB = 1_000_000
BARE_PACKAGES = ("starlette", "gunicorn", "uvicorn", "uvicorn-worker")


def naive_image(service: str) -> str:
    return f"ecs-suite-bench/naive-{service}:local"


def build_baselines() -> None:
    """The naive image of every service and the bare app's image, built side by side."""
    base = ["--build-arg", f"PYTHON_IMAGE={BASE}"]
    versions = [
        f"--build-arg={name.upper().replace('-', '_')}_VERSION={version(name)}"
        for name in BARE_PACKAGES
    ]
    naive = ["--file", str(HERE / "naive.Dockerfile"), *base]
    builds = {
        naive_image(service): [*naive, "--build-arg", f"SERVICE={service}", str(ROOT)]
        for service in SERVICES
    }
    builds[BARE] = [*base, *versions, str(HERE / "bare")]
    started = time.monotonic()
    running = {
        image: subprocess.Popen(
            ["docker", "build", "--quiet", "--tag", image, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for image, arguments in builds.items()
    }
    for image, process in running.items():
        _, errors = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"building {image} failed:\n{errors[-3000:]}")
    print(f"naive and bare images built in {time.monotonic() - started:.0f} s", flush=True)


def size_mb(image: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image)) / MB


def sizes(suite: Suite) -> dict[str, Any]:
    base = size_mb(BASE)
    figures: dict[str, Any] = {}
    for service in SERVICES:
        image, naive = size_mb(suite.images[service]), size_mb(naive_image(service))
        figures[service] = {
            "image_mb": image,
            "over_base_mb": image - base,
            "naive_mb": naive,
            "naive_over_base_mb": naive - base,
            "image_over_naive": image / naive,
            "met": image - base <= TARGET_OVER_BASE_MB,
        }
    return {"base_image": BASE, "base_mb": base, "bare_mb": size_mb(BARE), "services": figures}


def start_to_healthy(
    image: str,
    suite: Suite,
    service: str,
    environment: list[str],
    command: list[str],
    *,
    service_mounts: bool = True,
) -> float:
    """Seconds from ``docker run -d`` to the first 200 of the container's health path."""
    spec = suite.specs[service]
    port, host_port = spec.port or 8000, free_port()
    # What compose gives the services: the suite's network, read-only root, /tmp on tmpfs.
    options = ["--detach", "--network", suite.network, "--read-only", "--tmpfs", "/tmp"]
    options += ["--cpus", f"{spec.task.cpu / 1024:g}", "--memory", f"{spec.task.memory}m"]
    options += ["--publish", f"127.0.0.1:{host_port}:{port}"]
    options += [argument for line in environment for argument in ("--env", line)]
    if service_mounts:
        # The compose container's volumes (the database CA the services verify PostgreSQL with).
        options += ["--volumes-from", f"{suite.container(service)}:ro"]
    url = f"http://127.0.0.1:{host_port}{spec.health_path or '/health'}"
    started = time.monotonic()
    container = docker("run", *options, image, *command).strip()
    try:
        wait_until(lambda: answers_ok(url), 120, f"{image} to answer 200 on {url}", interval=0.02)
        return time.monotonic() - started
    finally:
        docker("rm", "--force", "--volumes", container)


def startups(suite: Suite, rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for service in SERVICES:
        spec = suite.specs[service]
        environment = suite.environment(service)
        seconds: dict[str, list[float]] = {"service": [], "bare": []}
        for _ in range(rounds):
            seconds["service"].append(
                start_to_healthy(suite.images[service], suite, service, environment, spec.command)
            )
            # gunicorn binds 0.0.0.0:$PORT: the bare app on the service's port, same mapping.
            bare_env = [f"PORT={spec.port}"]
            seconds["bare"].append(
                start_to_healthy(BARE, suite, service, bare_env, [], service_mounts=False)
            )
        figures[service] = {
            name: {
                "seconds": values,
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
            for name, values in seconds.items()
        } | {"cpus": spec.task.cpu / 1024, "memory_mib": spec.task.memory}
        figures[service]["ratio"] = (
            figures[service]["service"]["median"] / (figures[service]["bare"]["median"])
        )
        print(
            f"{service:<10} start to healthy {figures[service]['service']['median']:.2f} s, "
            f"bare Starlette {figures[service]['bare']['median']:.2f} s",
            flush=True,
        )
    return {"rounds": rounds, "services": figures}


def _spread(figure: dict[str, float]) -> str:
    return f"{figure['median']:.2f} [{figure['min']:.2f}-{figure['max']:.2f}]"


def print_figures(size: dict[str, Any], startup: dict[str, Any]) -> None:
    print(
        f"\nimage sizes, MB (base {size['base_image']}: {size['base_mb']:.0f} MB; "
        f"bare Starlette image {size['bare_mb']:.0f} MB)"
    )
    print(f"{'service':<10} {'image':>6} {'over base':>10} {'naive':>6} {'image/naive':>12}  goal")
    for service, figure in size["services"].items():
        print(
            f"{service:<10} {figure['image_mb']:>6.0f} {figure['over_base_mb']:>+10.0f} "
            f"{figure['naive_mb']:>6.0f} {figure['image_over_naive']:>12.2f}  "
            f"<= base + {TARGET_OVER_BASE_MB} MB: {'met' if figure['met'] else 'NOT met'}"
        )
    print(f"\ncontainer start to healthy, s ({startup['rounds']} rounds, medians [min-max])")
    print(f"{'service':<10} {'limits':<16} {'service image':>20} {'bare Starlette':>20}  ratio")
    for service, figure in startup["services"].items():
        limits = f"{figure['cpus']:g} vCPU {figure['memory_mib']} MiB"
        print(
            f"{service:<10} {limits:<16} {_spread(figure['service']):>20} "
            f"{_spread(figure['bare']):>20}  {figure['ratio']:.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    build_baselines()
    with running_suite() as suite:
        startup = startups(suite, args.rounds)
        size = sizes(suite)
    print_figures(size, startup)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sizes": size, "startup": startup}, indent=2))


if __name__ == "__main__":
    main()
