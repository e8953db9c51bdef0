"""CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout.

CloudWatch Logs extracts the metrics from each EMF log event the ``awslogs`` driver ships, so a
metric costs one stdout write: no PutMetricData call, no client, no batching thread, nothing
lost when a task is killed between flushes. Each document also carries its properties (a job
id, a queue name) as plain fields, searchable in Logs Insights beside the numbers.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Self

from servicekit.logging import redact

if TYPE_CHECKING:
    from servicekit.settings import ServiceSettings

__all__ = ["UNITS", "Metrics"]

UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)

# CloudWatch's limits: past them the document is dropped server-side, silently.
_NAMESPACE = re.compile(r"[0-9A-Za-z.\-_/#:]{1,255}")
_MAX_DIMENSIONS = 30
_MAX_METRICS = 100
_MAX_NAME = 1024

# Lines from several threads must not interleave mid-document.
_write_lock = threading.Lock()


class Metrics:
    """EMF emitter for one namespace and one fixed set of dimensions (e.g. Service, Env)."""

    def __init__(self, namespace: str, dimensions: Mapping[str, str]) -> None:
        if not _NAMESPACE.fullmatch(namespace) or namespace.startswith("AWS/"):
            raise ValueError(
                f"invalid CloudWatch namespace {namespace!r}: 1-255 of [0-9A-Za-z.-_/#:], "
                "not starting with AWS/"
            )
        if len(dimensions) > _MAX_DIMENSIONS:
            raise ValueError(f"{len(dimensions)} dimensions: CloudWatch allows {_MAX_DIMENSIONS}")
        for key, value in dimensions.items():
            if not (0 < len(key) <= _MAX_NAME and 0 < len(value) <= _MAX_NAME):
                raise ValueError(f"dimension {key!r}={value!r}: name and value need 1-1024 chars")
        self.namespace = namespace
        self.dimensions = dict(dimensions)

    @classmethod
    def for_service(cls, settings: ServiceSettings) -> Self:
        """The app's namespace (``APP_NAME``), dimensions ``Service`` and ``Env``."""
        return cls(settings.app_name, {"Service": settings.service_name, "Env": settings.app_env})

    def emit(
        self,
        values: Mapping[str, float],
        unit: Mapping[str, str] | None = None,
        **properties: object,
    ) -> None:
        """Write one EMF document with ``values`` (unit "None" unless given per name)."""
        units = unit or {}
        self._validate(values, units, properties)
        document: dict[str, object] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [list(self.dimensions)],
                        "Metrics": [
                            {"Name": name, "Unit": units.get(name, "None")} for name in values
                        ],
                    }
                ],
            },
            **properties,
            **self.dimensions,
            **values,
        }
        line = redact(json.dumps(document, default=str)) + "\n"
        with _write_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def count(self, name: str, n: int = 1, **properties: object) -> None:
        """Add ``n`` to a Count metric."""
        self.emit({name: n}, {name: "Count"}, **properties)

    def timing(self, name: str, seconds: float, **properties: object) -> None:
        """Record a duration measured in seconds (as Milliseconds, CloudWatch's usual unit)."""
        self.emit({name: seconds * 1000.0}, {name: "Milliseconds"}, **properties)

    def _validate(
        self,
        values: Mapping[str, float],
        units: Mapping[str, str],
        properties: Mapping[str, object],
    ) -> None:
        if not 0 < len(values) <= _MAX_METRICS:
            raise ValueError(f"{len(values)} metrics: one document holds 1-{_MAX_METRICS}")
        for name, value in values.items():
            if not 0 < len(name) <= _MAX_NAME:
                raise ValueError(f"metric name {name!r}: 1-{_MAX_NAME} characters")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"metric {name!r}: value {value!r} is not a number")
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r}: CloudWatch rejects {value}")
            if name in self.dimensions or name in properties:
                raise ValueError(f"metric {name!r} has the name of a dimension or property")
        for name, unit_name in units.items():
            if name not in values:
                raise ValueError(f"unit given for {name!r}, which is not among the values")
            if unit_name not in UNITS:
                raise ValueError(
                    f"metric {name!r}: unit {unit_name!r} is not a CloudWatch unit "
                    f"({', '.join(sorted(UNITS))})"
                )
        for key in properties:
            if key == "_aws" or key in self.dimensions:
                raise ValueError(f"property {key!r} would overwrite a dimension or _aws")
