"""The repository and the services the commands act on (``services/*/service.toml``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from suite_contract.spec import ServiceSpec, find_repository_root, load_specs
from suite_tools.errors import CommandError

__all__ = ["repository_root", "select_specs"]


def repository_root(root: Path | None = None) -> Path:
    try:
        return find_repository_root(root)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from error


def select_specs(root: Path, names: Sequence[str]) -> dict[str, ServiceSpec]:
    """The named services' specs in the order given, or every service when none is named."""
    try:
        known = load_specs(root)
    except (OSError, ValueError) as error:
        raise CommandError(" ".join(str(error).split())) from error
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CommandError(
            f"unknown service {', '.join(unknown)} (services/*/service.toml: "
            f"{', '.join(known) or 'none'})"
        )
    if not names:
        return known
    return {name: known[name] for name in dict.fromkeys(names)}
