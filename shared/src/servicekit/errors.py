"""The exceptions every service shares: bad configuration at start-up, a dependency that is down.

Neither ever carries a secret value: callers put names, paths and ids in them, never values.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "DependencyUnavailable"]


class ConfigurationError(Exception):
    """Start-up configuration is missing or invalid; the service must not start.

    Each problem names the setting and where it was looked for (environment variable, SSM
    parameter paths, secret id), so one failed start shows everything there is to fix.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        # One line each, even when an AWS error message brings its own line breaks.
        self.problems = [" ".join(problem.split()) for problem in problems]

    def __str__(self) -> str:
        count = len(self.problems)
        header = f"invalid configuration ({count} problem{'s' if count != 1 else ''}):"
        return "\n".join([header, *(f"  - {problem}" for problem in self.problems)])


class DependencyUnavailable(Exception):
    """A dependency (``"database"``, ``"sqs"``, ...) cannot be reached right now; retry later."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(dependency, reason)
        self.dependency = dependency
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.dependency} unavailable: {self.reason}"
