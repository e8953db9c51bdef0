"""The database's connection budget: every service at its peak against ``max_connections``.

A service's peak is its most tasks at once (the scaling maximum, else the desired count) times
its processes per task times each process's pool size, plus what a deployment adds: the extra
tasks (a rolling deployment runs up to ``max_percent`` of the count, blue/green both colours)
share the same traffic, and the pools open connections on demand, so each extra process adds
its pool's minimum (servicekit's ``pool_min_size``), not a full pool. The sum plus
:data:`MARGIN` must fit the instance's ``max_connections``, or synthesis fails naming every
figure: PostgreSQL refuses connections past it, so a scale-out or a deploy at the peak would
turn into login errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.db import DatabaseSettings
from suite_contract.spec import DeploymentStrategy, ServiceSpec

__all__ = [
    "MARGIN",
    "ConnectionBudgetError",
    "ServiceConnections",
    "check_budget",
    "default_max_connections",
    "peak_connections",
]

# Connections kept free for what is not a service: superuser_reserved_connections (3), RDS's
# own rdsadmin sessions (monitoring, a few), the two rotation functions (1 each), a migration
# task (1) and an operator's psql sessions.
MARGIN = 20
# RDS's default: LEAST({DBInstanceClassMemory/9531392}, 5000).
_BYTES_PER_CONNECTION = 9531392
_MAX_DEFAULT = 5000
# DBInstanceClassMemory is the class's memory less what the OS and RDS's agents keep: measured
# max_connections are 413 on 4 GiB and 856 on 8 GiB, about 92 % and 95 % of the nominal
# figure; 90 % stays below both.
_USABLE_MEMORY = 0.9
_GIB = 1024**3
# Memory per vCPU of the general-purpose (m) and memory-optimised (r) families; the burstable
# (t) classes by size.
_GIB_PER_VCPU = {"m": 4, "r": 8}
_BURSTABLE_GIB = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
_CLASS = re.compile(
    r"^(?:db\.)?(?P<family>[tmr])[0-9]+[a-z]*\.(?P<size>[0-9]*x?large|micro|small|medium)$"
)


class ConnectionBudgetError(ValueError):
    """The services' peak connections do not fit the database; the message has every figure."""


@dataclass(frozen=True)
class ServiceConnections:
    """One service's peak: tasks x processes x pool, plus a deployment's extra tasks' floors."""

    service: str
    tasks: int
    processes: int
    pool_size: int
    deploying: int
    """Tasks a deployment runs beside ``tasks`` (the new or the old ones)."""
    pool_min_size: int

    @property
    def peak(self) -> int:
        return self.processes * (self.tasks * self.pool_size + self.deploying * self.pool_min_size)

    def row(self) -> str:
        return (
            f"{self.service}: {self.tasks} tasks x {self.processes} processes x "
            f"{self.pool_size} pool + {self.deploying} deploying tasks x {self.processes} "
            f"processes x {self.pool_min_size} pool minimum = {self.peak}"
        )


def instance_memory_gib(instance_type: str) -> int:
    """Nominal memory of a db.t*, db.m* or db.r* class (``t4g.large`` -> 8)."""
    match = _CLASS.fullmatch(instance_type)
    if match is None or (match["family"] == "t" and match["size"] not in _BURSTABLE_GIB):
        raise ConnectionBudgetError(
            f"dbInstanceType {instance_type!r}: its memory is not known here (t, m and r "
            "classes are); set dbMaxConnections to the instance's max_connections"
        )
    family, size = match["family"], match["size"]
    if family == "t":
        return _BURSTABLE_GIB[size]
    vcpus = {"large": 2, "xlarge": 4}.get(size) or 4 * int(size.removesuffix("xlarge"))
    return vcpus * _GIB_PER_VCPU[family]


def default_max_connections(instance_type: str) -> int:
    """RDS for PostgreSQL's default ``max_connections`` for the class (a lower bound)."""
    memory = instance_memory_gib(instance_type) * _GIB * _USABLE_MEMORY
    return min(int(memory // _BYTES_PER_CONNECTION), _MAX_DEFAULT)


def peak_connections(spec: ServiceSpec) -> ServiceConnections | None:
    """The service's peak, or None when it holds no database pool."""
    if not spec.uses_database:
        return None
    defaults = DatabaseSettings()
    tasks = spec.scaling.max_count if spec.scaling else spec.task.desired_count
    deployment = spec.deployment
    deploying = (
        tasks
        if deployment.strategy is DeploymentStrategy.BLUE_GREEN
        else tasks * deployment.max_percent // 100 - tasks
    )
    return ServiceConnections(
        service=spec.name,
        tasks=tasks,
        processes=spec.task.processes,
        pool_size=spec.database.pool_size if spec.database else defaults.pool_size,
        deploying=deploying,
        pool_min_size=defaults.pool_min_size,
    )


def check_budget(
    specs: Mapping[str, ServiceSpec],
    *,
    instance_type: str,
    max_connections: int | None,
) -> tuple[list[ServiceConnections], int]:
    """Every service's peak and the database's ``max_connections``; raises when over."""
    rows = [row for spec in specs.values() if (row := peak_connections(spec)) is not None]
    limit = (
        max_connections if max_connections is not None else default_max_connections(instance_type)
    )
    total = sum(row.peak for row in rows) + MARGIN
    if total > limit:
        source = (
            "dbMaxConnections"
            if max_connections is not None
            else f"RDS's default for {instance_type}"
        )
        raise ConnectionBudgetError(
            f"the services' peak database connections ({total}) exceed max_connections "
            f"({limit}, {source}): "
            + "; ".join(row.row() for row in rows)
            + f"; margin {MARGIN}. Lower a pool_size, processes or scaling max_count, or "
            "choose a larger dbInstanceType (or dbMaxConnections)"
        )
    return rows, limit
