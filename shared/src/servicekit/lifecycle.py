"""SIGTERM and SIGINT as a stop event that a service's loops wait on.

ECS stops a task with SIGTERM, then SIGKILL after the container's ``stopTimeout`` (30 s by
default): a service finishes or hands back its in-flight work inside that window. Loops check
:attr:`Lifecycle.stopping` or sleep with :meth:`Lifecycle.wait` so they react at once, then log
:attr:`Lifecycle.reason` on the way out.
"""

from __future__ import annotations

import _thread
import signal
import threading
from dataclasses import dataclass
from types import FrameType

__all__ = ["MAX_STOP_TIMEOUT", "Lifecycle", "ShutdownBudget"]

# ECS's stopTimeout cannot exceed 120 s: a longer grace for in-flight work ends in SIGKILL anyway.
MAX_STOP_TIMEOUT = 120


class Lifecycle:
    """The process's stop event and the signal handlers that set it."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.reason: str | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, returning True as soon as a stop is requested."""
        return self.stop_event.wait(timeout)

    def stop(self, reason: str) -> None:
        """Request a stop from code (a fatal error, the end of a one-shot run)."""
        if self.reason is None:
            self.reason = reason
        self.stop_event.set()

    def check(self) -> None:
        """A readiness check: fails once stopping, so a load balancer stops sending work."""
        if self.stopping:
            raise RuntimeError(f"shutting down ({self.reason})")

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT request a stop; a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            # Ctrl-C twice: the operator does not want to wait for a graceful stop.
            signal.default_int_handler(signum, frame)
        if self.reason is None:
            self.reason = signal.Signals(signum).name
        # The handler runs in the main thread between two bytecodes, possibly while that thread
        # holds the event's lock (it is usually inside stop_event.wait()): Event.set() here could
        # deadlock, from a fresh thread it cannot. Logging is left to the service for the same
        # reason (a reentrant write to stdout fails).
        _thread.start_new_thread(self.stop_event.set, ())


@dataclass(frozen=True)
class ShutdownBudget:
    """How a service spends the ``stop_timeout`` seconds between SIGTERM and SIGKILL.

    The stop timeout is the one figure (the service spec's ``task.stop_timeout``, which ECS and
    compose also get); every step of the shutdown gets a fixed share, and what is left is the
    ``grace`` for running work. Building one whose steps do not fit raises ``ValueError``.
    """

    stop_timeout: float
    settle: float = 3.0
    """Last SQS calls: pending deletes and releases."""
    protection: float = 2.0
    """Releasing ECS task scale-in protection (the agent call's timeout)."""
    close: float = 2.0
    """Closing the database pool and the HTTP server."""
    margin: float = 2.0
    """Logging, thread joins, interpreter exit."""
    min_grace: float = 1.0

    def __post_init__(self) -> None:
        if self.grace < self.min_grace:
            raise ValueError(
                f"stop_timeout {self.stop_timeout:g} s leaves {self.grace:g} s for running work "
                f"after settle {self.settle:g} + protection {self.protection:g} + close "
                f"{self.close:g} + margin {self.margin:g} s; at least {self.min_grace:g} s needed"
            )

    @property
    def grace(self) -> float:
        """Seconds running work gets after SIGTERM before it is abandoned."""
        return self.stop_timeout - self.settle - self.protection - self.close - self.margin
