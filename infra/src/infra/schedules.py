"""The schedules, read from the registry the scheduler spec names (its single source of truth)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from servicekit.spec import ScheduleTrigger

__all__ = ["ScheduledJob", "load_schedules", "run_command"]


class _Registry(Protocol):
    def export(self) -> list[dict[str, object]]: ...


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    expression: str
    """EventBridge ``cron(...)`` or ``rate(...)``; the registry validated it."""
    timezone: str
    timeout_seconds: float
    description: str


def load_schedules(trigger: ScheduleTrigger) -> list[ScheduledJob]:
    """Import ``module:attribute`` and export its jobs; a missing registry names the spec's value.

    Importing declares the jobs (and validates their schedules) without connecting anywhere:
    the registry modules keep AWS and settings out of import time.
    """
    module_name, _, attribute = trigger.registry.partition(":")
    try:
        registry: _Registry = getattr(importlib.import_module(module_name), attribute or "registry")
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"schedule registry {trigger.registry!r} cannot be loaded: {error}"
        ) from error
    return [
        ScheduledJob(
            name=str(entry["name"]),
            expression=str(entry["expression"]),
            timezone=str(entry["timezone"]),
            timeout_seconds=float(str(entry["timeout_seconds"])),
            description=str(entry.get("description", "")),
        )
        for entry in registry.export()
    ]


def run_command(trigger: ScheduleTrigger, job: str) -> list[str]:
    """The container command of one job's scheduled task."""
    return [part.replace("{job}", job) for part in trigger.run_command]
