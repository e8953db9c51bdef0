"""The one error type the commands raise for a failure the user can act on."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """A failure worth one line on stderr and a non-zero exit, never a traceback.

    The message says what failed and, where it is not obvious, what to do about it. It never
    contains a credential.
    """
