"""OpenTelemetry tracing for AWS X-Ray, behind the ``servicekit[tracing]`` extra.

Spans get X-Ray-shaped trace ids (the first 32 bits are the start time, which X-Ray requires),
the X-Ray propagator is the global one (an ALB's ``X-Amzn-Trace-Id`` continues the trace, and
botocore calls carry it onward, e.g. into an SQS message's ``AWSTraceHeader``), and spans are
batched to an OTLP/HTTP collector (the ADOT or CloudWatch agent sidecar) which forwards to X-Ray.
``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` are honoured by the SDK as usual.

Fork: the batch processor owns a thread and the exporter a connection pool, neither of which
survives ``fork`` cleanly. Configure in each process that exports: under gunicorn in the worker
(``post_fork`` hook or the app's lifespan start-up), never in the master or at import, and call
:func:`shutdown_tracing` on the way out (``worker_exit`` or lifespan shut-down) to flush.

Importing this module imports no OpenTelemetry package.
"""

# OpenTelemetry is an optional extra: it is imported inside the functions that need it.
# ruff: noqa: PLC0415

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from servicekit.settings import ServiceSettings

__all__ = [
    "configure_tracing",
    "configure_tracing_from",
    "current_trace_id",
    "shutdown_tracing",
    "tracer",
    "traces_endpoint",
]

_MISSING_EXTRA = (
    "tracing needs OpenTelemetry, which servicekit installs as an extra: "
    "depend on `servicekit[tracing]` (pip install 'servicekit[tracing]')"
)


@dataclass(frozen=True)
class _Tracing:
    provider: TracerProvider
    botocore: BotocoreInstrumentor
    pid: int


_log = logging.getLogger(__name__)
_lock = threading.Lock()
_active: _Tracing | None = None


@contextmanager
def _needs_extra() -> Iterator[None]:
    try:
        yield
    except ImportError as error:
        raise ImportError(_MISSING_EXTRA) from error


def traces_endpoint(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base address (``http://localhost:4318``)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def configure_tracing(*, service: str, enabled: bool, endpoint: str | None) -> None:
    """Export spans of this process to the collector at ``endpoint``; nothing when disabled.

    ``endpoint`` is the collector's base address; ``None`` leaves it to the exporter
    (``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318``). Idempotent. Once per
    process: OpenTelemetry's global provider can be set only once, so after
    :func:`shutdown_tracing` the process does not trace again.
    """
    global _active
    if not enabled:
        return
    with _needs_extra():
        from opentelemetry import propagate, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
        from opentelemetry.propagators.aws import AwsXRayPropagator
        from opentelemetry.sdk.extension.aws.resource.ecs import AwsEcsResourceDetector
        from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
        from opentelemetry.sdk.resources import Resource, get_aggregated_resources
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    with _lock:
        if _active is not None:
            if _active.pid != os.getpid():
                _log.warning(
                    "tracing was configured in process %d before this one forked from it: its "
                    "exporter's connections are shared; configure tracing after fork instead",
                    _active.pid,
                )
            return
        # On ECS the detector adds the task, cluster and log group (X-Ray links traces to the
        # logs through it); elsewhere it finds no metadata endpoint and adds nothing.
        resource = get_aggregated_resources(
            [AwsEcsResourceDetector()], initial_resource=Resource.create({"service.name": service})
        )
        provider = TracerProvider(resource=resource, id_generator=AwsXRayIdGenerator())
        exporter = OTLPSpanExporter(endpoint=traces_endpoint(endpoint) if endpoint else None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        propagate.set_global_textmap(AwsXRayPropagator())
        botocore = BotocoreInstrumentor()  # type: ignore[no-untyped-call]
        botocore.instrument(tracer_provider=provider)
        _active = _Tracing(provider, botocore, os.getpid())


def configure_tracing_from(settings: ServiceSettings) -> None:
    """:func:`configure_tracing` as ``tracing_enabled`` and ``otel_exporter_otlp_endpoint`` say."""
    configure_tracing(
        service=settings.service_name,
        enabled=settings.tracing_enabled,
        endpoint=settings.otel_exporter_otlp_endpoint,
    )


def shutdown_tracing() -> None:
    """Flush buffered spans to the collector and stop exporting (no-op when not configured)."""
    global _active
    with _lock:
        if _active is None:
            return
        _active.botocore.uninstrument()
        _active.provider.shutdown()
        _active = None


def tracer(name: str) -> Tracer:
    """A tracer from the global provider; safe to call before :func:`configure_tracing`."""
    with _needs_extra():
        from opentelemetry import trace
    return trace.get_tracer(name)


def current_trace_id() -> str | None:
    """The current span's trace id in X-Ray form (``1-5759e988-bd86...``), or None."""
    # A span can only be current if something imported OpenTelemetry, so a process without the
    # extra (or without tracing) pays one dict lookup per log line, not a failed import.
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:
        return None
    span_context = otel_trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    digits = f"{span_context.trace_id:032x}"
    return f"1-{digits[:8]}-{digits[8:]}"
