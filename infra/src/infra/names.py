"""Construct ids from service, queue and job names."""

from __future__ import annotations

__all__ = ["pascal"]


def pascal(name: str) -> str:
    """``my-service`` -> ``MyService``: construct ids."""
    return "".join(part.title() for part in name.replace("_", "-").split("-"))
