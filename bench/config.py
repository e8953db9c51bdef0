"""Configuration benchmark: servicekit beside AWS Lambda Powertools' `parameters`, same run.

1. Cold settings load of 25 parameters under one path: GetParametersByPath calls (counted with
   botocore event hooks) and milliseconds. servicekit's `ServiceSettings.load()` reads the
   service path and the shared path, so Powertools is measured both on the one path (the issue's
   baseline) and on both paths (the same work). "Cold" means no value cache; clients are warm on
   both sides (one untimed load each first).
2. Cached secret read, ns per read: `SecretCache.get` vs Powertools' warm `get_secret`, and
   aws-secretsmanager-caching's `get_secret_string` when that package is installed.

moto runs in this process (ThreadedMotoServer). Rounds alternate between the contenders; the
figures are medians with [min-max] over the rounds. Targets: no more calls than Powertools;
a cached read at most half of Powertools'. Nothing here asserts on a timing. ``--json PATH`` also
writes every figure for ``bench/report.py``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from pydantic import create_model

from servicekit import aws
from servicekit.secrets import SecretCache
from servicekit.settings import ServiceSettings
from servicekit.testing.moto import MotoServer, fake_aws_environment

APP, ENV, SERVICE = "bench", "bench", "api"
REGION = "eu-west-1"
SERVICE_PATH = f"/{APP}/{ENV}/{SERVICE}"
SHARED_PATH = f"/{APP}/{ENV}/shared"
PARAMETERS = 25
SECRET_ID = f"{APP}/{ENV}/api-key"
SECRET_VALUE = "bench-secret-value-0123456789"
LOAD_ROUNDS = 31
READ_ROUNDS = 9

OURS = "servicekit ServiceSettings.load()"
PT_ONE_PATH = "Powertools get_parameters, service path"
PT_SAME_WORK = "Powertools get_parameters, both paths"
SK_READ = "servicekit SecretCache.get"
PT_READ = "Powertools get_secret (warm)"
CACHING_READ = "aws-secretsmanager-caching get_secret_string"
# Stable names for the JSON output.
KEYS = {
    OURS: "servicekit_load",
    PT_ONE_PATH: "powertools_one_path",
    PT_SAME_WORK: "powertools_both_paths",
    SK_READ: "servicekit_read",
    PT_READ: "powertools_read",
    CACHING_READ: "caching_read",
}
# Reads per round, so that each round lasts roughly 30-150 ms whatever the per-read cost.
READS = {SK_READ: 200_000, PT_READ: 20_000, CACHING_READ: 2_000}

BenchSettings = create_model(  # type: ignore[call-overload]
    "BenchSettings",
    __base__=ServiceSettings,
    **{f"p{index:02}": (int, ...) for index in range(PARAMETERS)},
)


def seed() -> None:
    ssm = aws.client("ssm")
    for index in range(PARAMETERS):
        # A few SecureStrings so both sides pay for decryption as a real service would.
        kind: Literal["SecureString", "String"] = "SecureString" if index % 5 == 0 else "String"
        ssm.put_parameter(Name=f"{SERVICE_PATH}/p{index:02}", Value=str(index), Type=kind)
    aws.client("secretsmanager").create_secret(Name=SECRET_ID, SecretString=SECRET_VALUE)


def count_by_path(*clients: Any) -> Counter[str]:
    calls: Counter[str] = Counter()

    def count(params: dict[str, Any], **_: Any) -> None:
        calls[params["Path"].rstrip("/")] += 1

    for client in clients:
        client.meta.events.register("provide-client-params.ssm.GetParametersByPath", count)
    return calls


def measure_load(load: Callable[[], object], calls: Counter[str]) -> tuple[float, Counter[str]]:
    calls.clear()
    start = time.perf_counter()
    load()
    return (time.perf_counter() - start) * 1000, Counter(calls)


def measure_reads(read: Callable[[str], object], reads: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(reads):
        read(SECRET_ID)
    return (time.perf_counter_ns() - start) / reads


def summary(values: list[float], unit: str, digits: int = 1) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} "
        f"[{min(values):.{digits}f}-{max(values):.{digits}f}]"
    )


def calls_text(calls: Counter[str]) -> str:
    parts = [f"{path} {n}" for path, n in sorted(calls.items(), reverse=True)]
    return f"{sum(calls.values())} ({', '.join(parts)})"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def servicekit_load() -> object:
    settings = BenchSettings.load(app_name=APP, app_env=ENV, service_name=SERVICE)
    last = PARAMETERS - 1
    assert settings.model_dump()[f"p{last:02}"] == last, "servicekit loaded nothing"
    return settings


def powertools_one_path() -> object:
    found = parameters.get_parameters(SERVICE_PATH, recursive=True, decrypt=True, force_fetch=True)
    assert len(found) == PARAMETERS, "Powertools did not load the parameters"
    return found


def powertools_both_paths() -> object:
    return [
        parameters.get_parameters(path, recursive=True, decrypt=True, force_fetch=True)
        for path in (SHARED_PATH, SERVICE_PATH)
    ]


def bench_loads() -> tuple[dict[str, list[float]], dict[str, Counter[str]]]:
    """Milliseconds per round and the calls of the last round, by contender."""
    loads = {
        OURS: servicekit_load,
        PT_ONE_PATH: powertools_one_path,
        PT_SAME_WORK: powertools_both_paths,
    }
    for load in loads.values():
        load()  # clients and imports, untimed
    # The settings source asks for the client of its configured region.
    ours = {id(c): c for c in (aws.client("ssm"), aws.client("ssm", REGION))}
    theirs = count_by_path(DEFAULT_PROVIDERS["ssm"].client)
    counters = {OURS: count_by_path(*ours.values()), PT_ONE_PATH: theirs, PT_SAME_WORK: theirs}
    load_ms: dict[str, list[float]] = {name: [] for name in loads}
    load_calls: dict[str, Counter[str]] = {}
    for _ in range(LOAD_ROUNDS):
        for name, load in loads.items():
            elapsed, load_calls[name] = measure_load(load, counters[name])
            load_ms[name].append(elapsed)
    return load_ms, load_calls


def bench_reads() -> tuple[dict[str, list[float]], str]:
    """ns per read for each round, by contender; and why one was skipped, if it was."""
    cache = SecretCache(ttl=300)
    readers: dict[str, Callable[[str], object]] = {
        SK_READ: cache.get,
        PT_READ: functools.partial(parameters.get_secret, max_age=300),
    }
    skipped = ""
    try:
        caching = importlib.import_module("aws_secretsmanager_caching")
        readers[CACHING_READ] = caching.SecretCache(
            client=aws.client("secretsmanager")
        ).get_secret_string
    except ImportError:
        skipped = "skipped: not installed (optional)"
    for read in readers.values():
        assert read(SECRET_ID) == SECRET_VALUE, "a cache returned the wrong value"
    read_ns: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(READ_ROUNDS):
        for name, read in readers.items():
            read_ns[name].append(measure_reads(read, READS[name]))
    return read_ns, skipped


def report(
    load_ms: dict[str, list[float]],
    load_calls: dict[str, Counter[str]],
    read_ns: dict[str, list[float]],
    skipped: str,
) -> None:
    median = {name: statistics.median(values) for name, values in (load_ms | read_ns).items()}
    print(
        f"servicekit config benchmark: Python {platform.python_version()}, moto "
        f"{version('moto')} in-process, Powertools {version('aws-lambda-powertools')}; "
        "medians [min-max]"
    )
    print()
    print(
        f"1. Cold settings load, {PARAMETERS} parameters in {SERVICE_PATH} ({LOAD_ROUNDS} rounds)"
    )
    print(f"   {'':42}{'GetParametersByPath calls':48}time")
    for name, values in load_ms.items():
        print(f"   {name:42}{calls_text(load_calls[name]):48}{summary(values, 'ms')}")
    print()
    print(f"2. Cached secret read ({READ_ROUNDS} rounds)")
    for name, values in read_ns.items():
        print(f"   {name:46}{summary(values, 'ns/read', 0):28}({READS[name]} reads a round)")
    if skipped:
        print(f"   {CACHING_READ:46}{skipped}")
    print()

    ours_path, theirs_path = load_calls[OURS][SERVICE_PATH], load_calls[PT_ONE_PATH][SERVICE_PATH]
    ours_total, theirs_total = (
        sum(load_calls[OURS].values()),
        sum(load_calls[PT_SAME_WORK].values()),
    )
    read_ratio = median[SK_READ] / median[PT_READ]
    print("Ratios and targets")
    print(
        f"   calls on the {PARAMETERS}-parameter path: servicekit {ours_path}, Powertools "
        f"{theirs_path} -> target (<=) {verdict(ours_path <= theirs_path)}"
    )
    print(
        f"   calls for the same work (both paths): servicekit {ours_total}, Powertools "
        f"{theirs_total} -> target (<=) {verdict(ours_total <= theirs_total)}"
    )
    print(
        f"   load time servicekit / Powertools: {median[OURS] / median[PT_SAME_WORK]:.2f}x "
        f"(same work), {median[OURS] / median[PT_ONE_PATH]:.2f}x (Powertools on one path)"
    )
    print(
        f"   cached read servicekit / Powertools: {read_ratio:.3f}x -> target (<= 0.5x) "
        f"{verdict(read_ratio <= 0.5)}"
    )
    if CACHING_READ in median:
        print(
            "   cached read servicekit / aws-secretsmanager-caching: "
            f"{median[SK_READ] / median[CACHING_READ]:.4f}x"
        )


def write_json(
    path: Path,
    load_ms: dict[str, list[float]],
    load_calls: dict[str, Counter[str]],
    read_ns: dict[str, list[float]],
) -> None:
    def figures(values: list[float]) -> dict[str, Any]:
        return {
            "values": values,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }

    document = {
        "parameters": PARAMETERS,
        "load_rounds": LOAD_ROUNDS,
        "read_rounds": READ_ROUNDS,
        "versions": {name: version(name) for name in ("moto", "aws-lambda-powertools")},
        "load_ms": {
            KEYS[name]: figures(values)
            | {
                "label": name,
                "calls": sum(load_calls[name].values()),
                "calls_by_path": dict(load_calls[name]),
            }
            for name, values in load_ms.items()
        },
        "read_ns": {
            KEYS[name]: figures(values) | {"label": name, "reads_per_round": READS[name]}
            for name, values in read_ns.items()
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    server = MotoServer()
    server.start()
    os.environ.update(fake_aws_environment(server.endpoint_url, REGION))
    aws.reset_clients()
    try:
        seed()
        load_ms, load_calls = bench_loads()
        read_ns, skipped = bench_reads()
    finally:
        server.stop()
    report(load_ms, load_calls, read_ns, skipped)
    if args.json:
        write_json(args.json, load_ms, load_calls, read_ns)


if __name__ == "__main__":
    main()
