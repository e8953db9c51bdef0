"""Tracing exported for real: OTLP/HTTP to a local collector, botocore calls to moto."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.util._once import Once

from servicekit import aws
from servicekit.testing import MotoServer, wait_until
from servicekit.tracing import (
    configure_tracing,
    current_trace_id,
    shutdown_tracing,
    tracer,
    traces_endpoint,
)

ALB_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


class Collector:
    """A minimal OTLP/HTTP receiver: keeps every decoded POST to /v1/traces."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    received.append(ExportTraceServiceRequest.FromString(body))
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        """Every received span with its resource's string attributes."""
        found: list[tuple[dict[str, str], Span]] = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                resource = {
                    attribute.key: attribute.value.string_value
                    for attribute in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def wait_for_spans(
        self, count: int, timeout: float = 15.0
    ) -> list[tuple[dict[str, str], Span]]:
        def enough() -> list[tuple[dict[str, str], Span]]:
            spans = self.spans()
            return spans if len(spans) >= count else []

        return wait_until(enough, timeout, f"{count} span(s) at the collector")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.close()


def reset_tracing() -> None:
    shutdown_tracing()
    # What opentelemetry-test-utils' reset_trace_globals does: the global provider is set-once.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture(autouse=True)
def fresh_tracing() -> Iterator[None]:
    """Each test starts and ends without a tracer provider, whatever ran before it."""
    saved_propagator = propagate.get_global_textmap()
    reset_tracing()
    yield
    reset_tracing()
    propagate.set_global_textmap(saved_propagator)


def xray_form(trace_id: bytes) -> str:
    digits = trace_id.hex()
    return f"1-{digits[:8]}-{digits[8:]}"


def botocore_instrumented() -> bool:
    instrumentor = BotocoreInstrumentor()  # type: ignore[no-untyped-call]
    return bool(instrumentor.is_instrumented_by_opentelemetry)


def attributes(span: Span) -> dict[str, str]:
    return {attribute.key: attribute.value.string_value for attribute in span.attributes}


def test_spans_and_botocore_calls_reach_the_collector_with_xray_ids(
    aws_env: MotoServer, collector: Collector
) -> None:
    configure_tracing(service="tracing-test", enabled=True, endpoint=collector.endpoint)
    sqs = aws.client("sqs")
    sent_headers: list[str] = []

    def record_header(request: Any, **_: Any) -> None:
        value = request.headers["X-Amzn-Trace-Id"]  # bytes once botocore prepared the request
        sent_headers.append(value.decode() if isinstance(value, bytes) else value)

    sqs.meta.events.register("before-send.sqs.*", record_header)

    with tracer("test").start_as_current_span("handle-job"):
        in_span = current_trace_id()
        sqs.create_queue(QueueName="traced")
    assert current_trace_id() is None
    shutdown_tracing()  # flushes the batch

    spans = collector.wait_for_spans(2)
    by_name = {span.name: (resource, span) for resource, span in spans}
    resource, outer = by_name["handle-job"]
    _, call = by_name["SQS.CreateQueue"]
    assert resource["service.name"] == "tracing-test"
    assert attributes(call)["rpc.system"] == "aws-api"
    assert attributes(call)["rpc.method"] == "CreateQueue"
    assert call.trace_id == outer.trace_id
    assert call.parent_span_id == outer.span_id

    # X-Ray requires the first 32 bits of a trace id to be its start time in epoch seconds.
    started = int(outer.trace_id.hex()[:8], 16)
    assert abs(started - time.time()) < 300
    assert in_span == xray_form(outer.trace_id)
    # The call carried the trace to AWS (SQS keeps it as the message's AWSTraceHeader).
    assert len(sent_headers) == 1
    assert sent_headers[0].startswith(f"Root={in_span};Parent={call.span_id.hex()};")


def test_an_alb_trace_header_continues_the_trace(collector: Collector) -> None:
    configure_tracing(service="api", enabled=True, endpoint=collector.endpoint)
    context = propagate.extract({"X-Amzn-Trace-Id": ALB_HEADER})
    outgoing: dict[str, str] = {}
    with tracer("test").start_as_current_span("GET /jobs", context=context):
        assert current_trace_id() == "1-5759e988-bd862e3fe1be46a994272793"
        propagate.inject(outgoing)
    shutdown_tracing()

    assert outgoing["X-Amzn-Trace-Id"].startswith("Root=1-5759e988-bd862e3fe1be46a994272793;")
    ((_, span),) = collector.wait_for_spans(1)
    assert xray_form(span.trace_id) == "1-5759e988-bd862e3fe1be46a994272793"
    assert span.parent_span_id.hex() == "53995c3f42cd8ad8"


def test_disabled_tracing_changes_nothing(collector: Collector) -> None:
    propagator = propagate.get_global_textmap()
    configure_tracing(service="api", enabled=False, endpoint=collector.endpoint)

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert propagate.get_global_textmap() is propagator
    assert not botocore_instrumented()
    with tracer("test").start_as_current_span("ignored") as span:
        assert not span.is_recording()
        assert current_trace_id() is None


def test_configuring_twice_keeps_the_first_setup(collector: Collector) -> None:
    configure_tracing(service="api", enabled=True, endpoint=collector.endpoint)
    provider = trace.get_tracer_provider()
    configure_tracing(service="api", enabled=True, endpoint="http://127.0.0.1:1")
    assert trace.get_tracer_provider() is provider
    assert botocore_instrumented()


def test_shutdown_removes_the_botocore_instrumentation(collector: Collector) -> None:
    configure_tracing(service="api", enabled=True, endpoint=collector.endpoint)
    shutdown_tracing()
    assert not botocore_instrumented()
    shutdown_tracing()  # a second call is harmless


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://localhost:4318", "http://localhost:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
    ],
)
def test_traces_endpoint(base: str, url: str) -> None:
    assert traces_endpoint(base) == url


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ImportError, match=r"servicekit\[tracing\]"):
        configure_tracing(service="api", enabled=True, endpoint=None)
    configure_tracing(service="api", enabled=False, endpoint=None)  # disabled needs nothing

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(ImportError, match=r"servicekit\[tracing\]"):
        tracer("test")
    assert current_trace_id() is None


def test_importing_starts_nothing() -> None:
    """What a gunicorn master imports before forking must hold no thread, socket or OTel state."""
    script = (
        "import sys, threading\n"
        "import servicekit.health, servicekit.lifecycle, servicekit.logging\n"
        "import servicekit.metrics, servicekit.tracing\n"
        "print(threading.active_count(), any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["1", "False"]


CONFIGURED_BEFORE_FORK = """
import logging, os, sys
from servicekit.tracing import configure_tracing

logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(process)d %(message)s")
configure_tracing(service="api", enabled=True, endpoint="http://127.0.0.1:9")
configure_tracing(service="api", enabled=True, endpoint="http://127.0.0.1:9")
child = os.fork()
if child == 0:
    configure_tracing(service="api", enabled=True, endpoint="http://127.0.0.1:9")
    sys.stdout.flush()
    os._exit(0)
os.waitpid(child, 0)
print(os.getpid(), "parent done")
"""


def test_configuring_before_fork_is_reported_in_the_child() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CONFIGURED_BEFORE_FORK],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    warning, done = result.stdout.splitlines()
    parent = done.split()[0]
    assert not warning.startswith(parent)
    assert f"configured in process {parent} before this one forked" in warning
    assert warning.endswith("configure tracing after fork instead")
