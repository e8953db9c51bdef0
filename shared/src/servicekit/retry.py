"""The one backoff policy every retry in the suite uses: capped exponential, with jitter.

A retry delay is ``random.uniform(ceiling / 2, ceiling)`` where ``ceiling`` doubles from ``base``
with each attempt up to ``cap`` ("equal jitter"): the delay still grows, and a burst that failed
together (a database blip, a throttled API) does not come back together. Callers differ only in
``base`` and ``cap``, never in the formula.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delays for retry ``attempt`` 1, 2, 3...: ``base`` doubling up to ``cap`` seconds."""

    base: float
    cap: float

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 <= base <= cap (got {self.base}, {self.cap})")

    def ceiling(self, attempt: int) -> float:
        """The longest delay before retry ``attempt`` (1-based)."""
        return min(self.cap, self.base * 2.0 ** max(0, attempt - 1))

    def delay(self, attempt: int) -> float:
        """A jittered delay before retry ``attempt``, between half the ceiling and the ceiling."""
        ceiling = self.ceiling(attempt)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - spreading load, not crypto
