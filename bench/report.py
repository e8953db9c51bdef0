"""``make bench``: every benchmark of the suite in one run, then BENCHMARKS.md and its figures.

The parts run one after another, never two at once (they share the machine's cores). Budget,
measured on 2 busy cores: about 9 minutes, 10 when every image is rebuilt, 12 at most:

- config: bench/config.py, moto in-process (~10 s);
- worker: bench/worker.py, 3 rounds x 3 s x 5 variants, then the concurrency sweep (~90 s);
- api: bench/api.py, 3 rounds x 5 s x 5 wrk runs, plus its PostgreSQL and servers (~100 s);
- suite: the naive and bare images (bench/images.py) and the compose images built (5-130 s),
  the suite up (~20 s), 3 end-to-end rounds under the memory sampler (~60 s), 3 rounds of start
  to healthy (~45 s), a deploy under load and the same window without one (bench/deploy.py,
  ~150 s), the suite down (~10 s).

Raw figures and each script's output go to bench/out/ (ignored by git); BENCHMARKS.md (repository
root) and bench/figures/*.png are written from them. ``--render`` writes those again from
bench/out/ without measuring. The figures need matplotlib (without it they are left out).
Docker's image variables come from the environment, as for any compose run: where no public
registry is reachable, ``set -a; . .ci/compose.env; set +a`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import deploy
import e2e
import images
import memory
from suite import ROOT, docker, running_suite

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FIGURES = HERE / "figures"
REPORT = ROOT / "BENCHMARKS.md"

WORKER_ARGS = ("--rounds", "3", "--seconds", "3", "--sweep", "1,2,4,8,16,32")
API_ARGS = ("--duration", "5", "--rounds", "3")
SUITE_ROUNDS, E2E_SECONDS = 3, 6.0
COMMANDS = {
    "API": f"uv run python bench/api.py {' '.join(API_ARGS)}",
    "End to end": f"uv run python bench/e2e.py --rounds {SUITE_ROUNDS} --seconds {E2E_SECONDS:g}",
    "Worker": f"uv run python bench/worker.py {' '.join(WORKER_ARGS)}",
    "Config": "uv run python bench/config.py",
    "Memory": f"uv run python bench/memory.py --rounds {SUITE_ROUNDS} --seconds {E2E_SECONDS:g}",
    "Images": f"uv run python bench/images.py --rounds {SUITE_ROUNDS}",
    "Deploy": "uv run python bench/deploy.py",
}
# The part of the run that measured each area.
PART_OF = {
    "API": "api",
    "End to end": "suite",
    "Worker": "worker",
    "Config": "config",
    "Memory": "suite",
    "Images": "suite",
    "Deploy": "suite",
}


UNREACHABLE = "POST /jobs, SQS unreachable"  # bench/api.py's name of the run


# bench/api.py prints one such line per wrk run:
# "round 1  api POST /jobs    94 req/s  p50 520.25 ms  p99 1060.00 ms  errors 0".
class Row(NamedTuple):
    area: str
    measure: str
    result: str
    baseline: str = ""
    ratio: str = ""
    target: str = "-"


# Measuring


def run_script(name: str, *arguments: str) -> str:
    """A benchmark script in its own process: its output shown as it comes, kept, returned."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / f"{name}.py"), *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout or ():
        print(line, end="", flush=True)
        lines.append(line)
    output = "".join(lines)
    (OUT / f"{name}.log").write_text(output)
    if process.wait() != 0:
        raise RuntimeError(f"bench/{name}.py exited with status {process.returncode}")
    return output


def save(name: str, document: object) -> None:
    (OUT / f"{name}.json").write_text(json.dumps(document, indent=2))


def config_part() -> None:
    run_script("config", "--json", str(OUT / "config.json"))


def worker_part() -> None:
    run_script("worker", *WORKER_ARGS, "--json", str(OUT / "worker.json"))


def api_part() -> None:
    run_script("api", *API_ARGS, "--json", str(OUT / "api.json"))


def suite_part() -> None:
    images.build_baselines()
    with running_suite() as suite:
        result, memory_figures = memory.measure(
            suite, lambda: e2e.measure(suite, SUITE_ROUNDS, E2E_SECONDS)
        )
        save("e2e", result)
        save("memory", memory_figures)
        startup = images.startups(suite, SUITE_ROUNDS)
        size = images.sizes(suite)
        # Last: it replaces the suite's containers.
        deployed = deploy.measure(suite)
    save("images", {"sizes": size, "startup": startup})
    save("deploy", deployed)
    e2e.print_figures(result)
    memory.print_figures(memory_figures["services"], memory_figures["method"])
    images.print_figures(size, startup)
    deploy.print_figures(deployed)


PARTS: dict[str, Callable[[], None]] = {
    "config": config_part,
    "worker": worker_part,
    "api": api_part,
    "suite": suite_part,
}


def machine() -> dict[str, str]:
    def first(path: str, key: str) -> str:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return "unknown"
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")

    memory_kib = first("/proc/meminfo", "MemTotal").split()[0]
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        [*git, "status", "--porcelain"], capture_output=True, text=True, check=False
    )
    return {
        "cores": str(os.cpu_count()),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory": f"{int(memory_kib) / 1024**2:.1f} GiB" if memory_kib.isdigit() else "unknown",
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "docker": docker("version", "--format", "{{.Server.Version}}").strip(),
        "commit": commit.stdout.strip() + (" with uncommitted changes" if dirty.stdout else ""),
        "images": ", ".join(
            f"{name}={os.environ.get(name, '(compose default)')}"
            for name in ("PYTHON_IMAGE", "POSTGRES_IMAGE", "MOTO_IMAGE")
        ),
    }


def measure_all() -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    run: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    run["machine"] = machine()
    run["parts"] = {}
    started = time.monotonic()
    for name, part in PARTS.items():
        print(f"\n=== {name} ===", flush=True)
        begun = time.monotonic()
        error = None
        try:
            part()
        except Exception as failure:  # a failed part must not lose the other parts' figures
            traceback.print_exc()
            error = f"{type(failure).__name__}: {failure}"
        run["parts"][name] = {"seconds": time.monotonic() - begun, "error": error}
    run["seconds"] = time.monotonic() - started
    save("run", run)
    return run


# Rendering


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spread(figure: Mapping[str, float], digits: int = 0) -> str:
    median, low, high = figure["median"], figure["min"], figure["max"]
    return f"{median:,.{digits}f} [{low:,.{digits}f}-{high:,.{digits}f}]"


def verdict(met: bool) -> str:
    return "**met**" if met else "**NOT met**"


def load(name: str) -> Any:
    return json.loads((OUT / f"{name}.json").read_text())


def api_rows() -> list[Row]:
    runs = load("api")["runs"]

    def figure(server: str, path: str, key: str) -> dict[str, float]:
        return stats([r[key] for r in runs if r["server"] == server and r["path"] == path])

    def latency(server: str, path: str) -> str:
        return " / ".join(spread(figure(server, path, key), 1) for key in ("p50", "p99"))

    def ratio(path: str, key: str) -> float:
        return figure("api", path, key)["median"] / figure("bare", path, key)["median"]

    health, jobs = ratio("GET /health", "rps"), ratio("POST /jobs", "rps")
    tail = (
        figure("api", "POST /jobs", "p99")["median"] / figure("api", "POST /jobs", "p50")["median"]
    )
    outage_p99 = figure("api", UNREACHABLE, "p99")["median"]
    rows = [
        Row(
            "API",
            "`GET /health` requests/s",
            spread(figure("api", "GET /health", "rps")),
            f"bare Starlette {spread(figure('bare', 'GET /health', 'rps'))}",
            f"{health:.2f}x",
            f">= 0.8x bare: {verdict(health >= 0.8)}",
        ),
        Row(
            "API",
            "`GET /health` p50 / p99, ms",
            latency("api", "GET /health"),
            f"bare Starlette {latency('bare', 'GET /health')}",
            f"p50 {ratio('GET /health', 'p50'):.2f}x, p99 {ratio('GET /health', 'p99'):.2f}x",
        ),
        Row(
            "API",
            "`POST /jobs` requests/s (PostgreSQL insert; the outbox relay sends to SQS)",
            spread(figure("api", "POST /jobs", "rps")),
            f"bare Starlette JSON echo, no I/O {spread(figure('bare', 'POST /jobs', 'rps'))}",
            f"{jobs:.3f}x",
        ),
        Row(
            "API",
            "`POST /jobs` p50 / p99, ms",
            latency("api", "POST /jobs"),
            f"bare Starlette {latency('bare', 'POST /jobs')}",
            f"p99 = {tail:.1f}x p50",
            f"p99 < 5x p50: {verdict(tail < 5)}",
        ),
        Row(
            "API",
            "`POST /jobs` p50 / p99, ms, SQS unreachable (black-holed)",
            latency("api", UNREACHABLE),
            f"SQS up, same rounds {latency('api', 'POST /jobs')}",
            f"p99 {outage_p99 / figure('api', 'POST /jobs', 'p99')['median']:.2f}x SQS up",
            f"p99 < 2,000 ms: {verdict(outage_p99 < 2000)}",
        ),
    ]
    # Authentication's cost: the same app with the token check taken out (bench/unauthenticated.py).
    for path in ("GET /jobs/{id}", "POST /jobs"):
        cost = figure("api", path, "rps")["median"] / figure("noauth", path, "rps")["median"]
        rows.append(
            Row(
                "API",
                f"`{path}` requests/s, bearer token verified",
                spread(figure("api", path, "rps")),
                f"authentication taken out {spread(figure('noauth', path, 'rps'))}",
                f"{cost:.2f}x",
                f">= 0.9x (verification under 10%): {verdict(cost >= 0.9)}",
            )
        )
    errors = sum(r["errors"] for r in runs if r["server"] == "api")
    if errors:
        rows.append(Row("API", "failed requests (non-2xx, socket errors)", f"{errors:.0f}"))
    return rows


def e2e_rows() -> list[Row]:
    result = load("e2e")
    summary, ratios = result["summary"], result["ratios"]
    return [
        Row(
            "End to end",
            f"jobs/s, `POST /jobs` to `succeeded` ({result['clients']} clients, at most "
            f"{result['outstanding']} jobs outstanding)",
            spread(summary["jobs_per_second"], 1),
            "`POST /jobs` alone, same suite and clients: "
            f"{spread(summary['post_only_per_second'], 1)} req/s",
            f"{ratios['e2e_over_post_only']:.2f}x",
        ),
        Row(
            "End to end",
            "latency p50 / p90 / p99, ms",
            " / ".join(spread(summary[f"latency_p{p}"]) for p in (50, 90, 99)),
            f"the `POST /jobs` request itself, p50 {spread(summary['post_p50'])}",
            f"p50 = {ratios['e2e_p50_over_post_p50']:.1f}x",
        ),
        Row(
            "End to end",
            f"latency p50 / p90 / p99 at a steady {result['rate']:g} jobs/s (paced), ms",
            " / ".join(spread(summary[f"paced_p{p}"]) for p in (50, 90, 99)),
            "p50 per stage: "
            + "; ".join(
                f"{stage.replace('_', ' ')} {spread(summary[f'paced_{stage}_p50'])}"
                for stage in e2e.STAGES
            ),
            "-",
            "p50 <= 121, p99 <= 215 (before the outbox relay): "
            + verdict(
                summary["paced_p50"]["median"] <= 121 and summary["paced_p99"]["median"] <= 215
            ),
        ),
        Row(
            "End to end",
            "latency max, ms; queue backlog max; failed requests; jobs not succeeded",
            f"{spread(summary['latency_max'])}; {result['backlog_max']}; {result['errors']}; "
            f"{result['not_succeeded']}",
        ),
    ]


def worker_rows() -> list[Row]:
    result = load("worker")
    variants = result["variants"]

    def median(key: str) -> float:
        return float(variants[key]["median"])

    a_ceiling = median("consumer_noop") / median("ceiling")
    b_ceiling = median("consumer_io") / median("ceiling")
    b_naive = median("consumer_io") / median("naive_io")
    held = "; ".join(
        f"{key}: {variants[key]['backlog_visible_median']:.0f} / "
        f"{variants[key]['backlog_visible_max']} / {variants[key]['outstanding_max']}"
        for key in ("naive_io", "ceiling", "consumer_noop", "consumer_io")
    )
    rows = [
        Row(
            "Worker",
            f"(a) consumer, no-op handler, msg/s ({result['concurrency']} handler threads)",
            spread(variants["consumer_noop"]),
            f"ceiling {spread(variants['ceiling'])}; naive loop {spread(variants['naive_noop'])}",
            f"{a_ceiling:.2f}x ceiling; "
            f"{median('consumer_noop') / median('naive_noop'):.1f}x naive",
            f">= 0.8x ceiling: {verdict(a_ceiling >= 0.8)}",
        ),
        Row(
            "Worker",
            f"(b) consumer, {result['handler_io_ms']:g} ms I/O handler, msg/s",
            spread(variants["consumer_io"]),
            f"naive loop {spread(variants['naive_io'])}; ceiling {spread(variants['ceiling'])}",
            f"{b_naive:.1f}x naive; {b_ceiling:.2f}x ceiling",
            f">= 5x naive: {verdict(b_naive >= 5)}; >= 0.8x ceiling: {verdict(b_ceiling >= 0.8)}",
        ),
        Row(
            "Worker",
            "backlog held: visible median / max / outstanding max",
            held,
            f"limit {result['backlog_limit']}",
        ),
    ]
    if result["sweep"]:
        rows.append(
            Row(
                "Worker",
                f"(b) msg/s by handler threads ({len(result['sweep'][0]['rates'])} round)",
                ", ".join(f"{p['concurrency']}: {p['median']:.0f}" for p in result["sweep"]),
                "ideal: threads x 50/s, up to the ceiling",
            )
        )
    return rows


def config_rows() -> list[Row]:
    result = load("config")
    loads, reads = result["load_ms"], result["read_ns"]
    ours, same, one = (
        loads["servicekit_load"],
        loads["powertools_both_paths"],
        loads["powertools_one_path"],
    )
    paths = " + ".join(
        f"{n} {path.rsplit('/', 1)[-1]}" for path, n in ours["calls_by_path"].items()
    )
    read_ratio = reads["servicekit_read"]["median"] / reads["powertools_read"]["median"]
    return [
        Row(
            "Config",
            f"cold settings load, {result['parameters']} parameters: GetParametersByPath calls",
            f"{ours['calls']} ({paths})",
            f"Powertools: {same['calls']} for the same two paths, {one['calls']} for the "
            "service path alone",
            target=f"<= Powertools: {verdict(ours['calls'] <= same['calls'])}",
        ),
        Row(
            "Config",
            "cold settings load, ms",
            spread(ours, 1),
            f"Powertools, same two paths {spread(same, 1)}; service path alone {spread(one, 1)}",
            f"{ours['median'] / same['median']:.2f}x",
        ),
        Row(
            "Config",
            "cached secret read, ns/read",
            spread(reads["servicekit_read"]),
            f"Powertools warm `get_secret` {spread(reads['powertools_read'])}",
            f"{read_ratio:.3f}x",
            f"<= 0.5x Powertools: {verdict(read_ratio <= 0.5)}",
        ),
    ]


def memory_rows() -> list[Row]:
    rows = []
    for service, figure in load("memory")["services"].items():
        kernel = figure["cgroup_peak_mib"]
        rows.append(
            Row(
                "Memory",
                f"{service}: peak RSS under the end-to-end load, all rounds",
                f"{figure['peak_rss_mib']:.0f} MiB"
                + ("" if kernel is None else f" (cgroup peak {kernel:.0f} MiB)"),
                f"task memory {figure['task_memory_mib']} MiB (service.toml)",
                f"{figure['headroom_percent']:.0f}% headroom",
                f"<= {figure['target_percent']:g}% of task memory: {verdict(figure['met'])}",
            )
        )
    return rows


def images_rows() -> list[Row]:
    result = load("images")
    sizes, startup = result["sizes"], result["startup"]["services"]
    rows = []
    for service, size in sizes["services"].items():
        start = startup[service]
        rows += [
            Row(
                "Images",
                f"{service}: image size, MB",
                f"{size['image_mb']:.0f}",
                f"base {sizes['base_mb']:.0f} (+{size['over_base_mb']:.0f}); naive single-stage "
                f"{size['naive_mb']:.0f} (+{size['naive_over_base_mb']:.0f})",
                f"{size['image_over_naive']:.2f}x naive",
                f"<= base + {images.TARGET_OVER_BASE_MB} MB: {verdict(size['met'])}",
            ),
            Row(
                "Images",
                f"{service}: container start to healthy, s ({start['cpus']:g} vCPU)",
                spread(start["service"], 2),
                f"bare Starlette started the same way {spread(start['bare'], 2)}",
                f"{start['ratio']:.1f}x",
            ),
        ]
    return rows


def deploy_rows() -> list[Row]:
    result = load("deploy")
    during, quiet = result["deploy"], result["quiet"]

    def figures(window: Mapping[str, float]) -> str:
        return (
            f"{window['requests']:.0f} requests, {window['failed']:.0f} failed, "
            f"p99 {window['p99_ms']:.0f} ms"
        )

    return [
        Row(
            "Deploy",
            f"requests during `suite deploy --local` (api blue/green, worker rolling; "
            f"{result['deploy_seconds']:.0f} s, {result['clients']} clients, a job posted and "
            f"read every {result['pace_seconds']:g} s each)",
            figures(during),
            f"the same window without a deploy: {figures(quiet)}",
            f"p99 {during['p99_ms'] / quiet['p99_ms']:.2f}x",
            f"0 failed: {verdict(during['failed'] == 0)}",
        )
    ]


SECTIONS: dict[str, Callable[[], list[Row]]] = {
    "API": api_rows,
    "End to end": e2e_rows,
    "Worker": worker_rows,
    "Config": config_rows,
    "Memory": memory_rows,
    "Images": images_rows,
    "Deploy": deploy_rows,
}


def draw_figures() -> list[str]:
    """The PNGs that could be drawn, as Markdown image lines (a note when matplotlib is absent)."""
    try:
        import plots  # noqa: PLC0415  (matplotlib is optional)
    except ImportError as error:
        return [f"Figures not drawn: {error} (install the `bench` dependency group)."]
    drawn = []
    figures: dict[str, tuple[str, Callable[[Path], None]]] = {
        "api-latency.png": (
            "API latency",
            lambda path: plots.api_latency(load("api")["runs"], path),
        ),
        "e2e-latency.png": (
            "End-to-end latency",
            lambda path: plots.e2e_latency(
                [v for r in load("e2e")["rounds_detail"] for v in r["latencies_ms"]],
                load("e2e")["summary"]["post_p50"]["median"],
                path,
            ),
        ),
        "worker-concurrency.png": (
            "Worker throughput against concurrency",
            lambda path: plots.worker_concurrency(load("worker"), path),
        ),
    }
    for name, (title, draw) in figures.items():
        try:
            draw(FIGURES / name)
        except (OSError, KeyError, ValueError) as error:
            drawn.append(f"{title}: not drawn ({type(error).__name__}: {error}).")
            continue
        drawn.append(f"![{title}]({(FIGURES / name).relative_to(ROOT)})")
    return drawn


def render(run: dict[str, Any]) -> str:
    parts, host = run["parts"], run["machine"]
    rows: list[Row] = []
    for area, section in SECTIONS.items():
        error = parts.get(PART_OF[area], {}).get("error")
        if error:
            rows.append(Row(area, "not measured", f"the {PART_OF[area]} part failed: {error}"))
            continue
        try:
            rows += section()
        except (OSError, KeyError, ValueError) as failure:
            rows.append(Row(area, "not measured", f"{type(failure).__name__}: {failure}"))
    minutes, seconds = divmod(round(run["seconds"]), 60)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`uv run python bench/report.py`) on {run['date']} at "
        f"commit {host['commit']}; the whole run took **{minutes} min {seconds} s**. "
        "Run it again rather than edit this file.",
        "",
        f"**Machine**: {host['cores']} cores ({host['cpu']}), {host['memory']} memory, "
        f"{host['system']}, Python {host['python']}, Docker {host['docker']}. AWS is emulated "
        f"by moto; images: {host['images']}.",
        "",
        "Every figure is the median over the rounds of this run, with [min-max] beside it, and "
        "every baseline was measured in the same run (alternating with its figure where the "
        "script allows). Two shared cores are noisy: read the ratios before the absolute "
        "figures. Nothing here fails on a timing; the last column says whether each target is met.",
        "",
        "| Area | Measure | Result | Baseline (same run) | Ratio | Target |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows),
        "",
        "## Reproducing a row",
        "",
        "Each area's script on its own (bench/e2e.py, memory.py and images.py bring their own "
        "composed suite up and down; `set -a; . .ci/compose.env; set +a` first where no public "
        "registry is reachable):",
        "",
        "| Area | Command | Part of this run |",
        "|---|---|---|",
        *(
            f"| {area} | `{command}` | {PART_OF[area]}, "
            f"{parts.get(PART_OF[area], {}).get('seconds', 0):.0f} s |"
            for area, command in COMMANDS.items()
        ),
        "",
        "## Figures",
        "",
        "\n\n".join(draw_figures()),
        "",
        "## Notes",
        "",
        *NOTES,
    ]
    return "\n".join(lines) + "\n"


NOTES = [
    "- API: bench/api.py serves the API with its production gunicorn settings and a bare "
    "Starlette app under the same server and worker count, loads each with wrk in turn on the "
    "same cores, and alternates them within each round.",
    "- End to end: the composed suite as `docker compose up` runs it, each service with its "
    "spec's CPU and memory (one API task of 0.5 vCPU, one worker task of 1 vCPU); the latency "
    "runs from the client's send to the job's `finished_at` in PostgreSQL. The outstanding-job "
    "bound keeps moto's queue small (its ReceiveMessage slows with the backlog).",
    "- Worker: moto in its own process; producers keep the backlog under the limit during every "
    "measurement, as the row shows.",
    "- Memory: peak of the cgroup's anonymous memory (RSS, shared pages once) sampled ten times "
    "a second under the end-to-end load; the cgroup peak includes page cache and start-up.",
    "- Images: sizes as `docker images` reports them (uncompressed, MB = 10^6 bytes). The naive "
    "image keeps pip's download cache in a BuildKit cache mount, not in the image, so it is, if "
    "anything, smaller than a real naive image. Start to healthy is `docker run -d` to the first "
    "200 from the health path, polled every 20 ms.",
    "- Deploy: bench/deploy.py in the same suite (one task per service, as for the rows above): "
    "the clients run through `suite deploy --local --no-build` of the api and the worker, then "
    "as long again without a deploy; a failed request is a connection error, a timeout or any "
    "answer but 200/201.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--render", action="store_true", help="write BENCHMARKS.md from bench/out/ only"
    )
    args = parser.parse_args()
    run = load("run") if args.render else measure_all()
    REPORT.write_text(render(run))
    minutes, seconds = divmod(round(run["seconds"]), 60)
    print(f"\nwrote {REPORT.relative_to(ROOT)} (the run took {minutes} min {seconds} s)")
    failed = [name for name, part in run["parts"].items() if part["error"]]
    if failed:
        print(f"parts that failed: {', '.join(failed)} (see above and bench/out/)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
