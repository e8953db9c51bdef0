"""BuildKit's progress, as the Engine API streams it, turned into plain lines.

A BuildKit build through the Engine API (``/build?version=2``) reports progress as
``{"id": "moby.buildkit.trace", "aux": "<base64>"}`` messages whose payload is a protobuf
``moby.buildkit.v1.StatusResponse``. Only a handful of its fields are shown, so they are read
here with a few lines of wire-format decoding instead of a generated protobuf module::

    StatusResponse { repeated Vertex vertexes = 1; repeated VertexLog logs = 3; }
    Vertex         { string digest = 1; string name = 3; bool cached = 4;
                     Timestamp started = 5; Timestamp completed = 6; string error = 7; }
    VertexLog      { string vertex = 1; bytes msg = 4; }
    Timestamp      { int64 seconds = 1; int32 nanos = 2; }

The lines read like ``docker build --progress=plain``: ``#3 [build 4/8] RUN ...``, the step's
output prefixed with its number, then ``#3 DONE 4.2s`` or ``#3 CACHED``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["StatusResponse", "TraceRenderer", "Vertex", "VertexLog", "decode_status"]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message; integers for varints, bytes otherwise."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _timestamp(data: bytes) -> float:
    parts = {number: value for number, value in _fields(data) if isinstance(value, int)}
    return parts.get(1, 0) + parts.get(2, 0) / 1e9


@dataclass
class Vertex:
    digest: str = ""
    name: str = ""
    cached: bool = False
    started: float | None = None
    completed: float | None = None
    error: str = ""


@dataclass
class VertexLog:
    vertex: str = ""
    message: bytes = b""


@dataclass
class StatusResponse:
    vertexes: list[Vertex] = field(default_factory=list)
    logs: list[VertexLog] = field(default_factory=list)


def _vertex(data: bytes) -> Vertex:
    vertex = Vertex()
    for number, value in _fields(data):
        if number == 4:
            vertex.cached = bool(value)
        elif isinstance(value, bytes):
            if number == 1:
                vertex.digest = value.decode()
            elif number == 3:
                vertex.name = value.decode(errors="replace")
            elif number == 5:
                vertex.started = _timestamp(value)
            elif number == 6:
                vertex.completed = _timestamp(value)
            elif number == 7:
                vertex.error = value.decode(errors="replace")
    return vertex


def _log(data: bytes) -> VertexLog:
    log = VertexLog()
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            log.vertex = value.decode()
        elif number == 4 and isinstance(value, bytes):
            log.message = value
    return log


def decode_status(aux: str) -> StatusResponse:
    """One ``moby.buildkit.trace`` payload (base64 protobuf)."""
    status = StatusResponse()
    for number, value in _fields(base64.b64decode(aux)):
        if number == 1 and isinstance(value, bytes):
            status.vertexes.append(_vertex(value))
        elif number == 3 and isinstance(value, bytes):
            status.logs.append(_log(value))
    return status


class TraceRenderer:
    """Turns successive status updates into plain progress lines, each step once."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._numbers: dict[str, int] = {}
        self._finished: set[str] = set()
        self._partial: dict[str, bytes] = {}

    def _number(self, vertex: Vertex) -> int:
        number = self._numbers.get(vertex.digest)
        if number is None:
            number = self._numbers[vertex.digest] = len(self._numbers) + 1
            self._write(f"#{number} {vertex.name}")
        return number

    def feed(self, status: StatusResponse) -> None:
        for vertex in status.vertexes:
            if vertex.digest not in self._finished and (vertex.started or vertex.cached):
                self._number(vertex)
        for log in status.logs:
            self._log(log)
        for vertex in status.vertexes:
            if vertex.digest not in self._finished and (vertex.started or vertex.cached):
                self._vertex(vertex)

    def _log(self, log: VertexLog) -> None:
        # A log chunk may end mid-line: hold the tail until its newline arrives.
        text = self._partial.pop(log.vertex, b"") + log.message
        *lines, tail = text.split(b"\n")
        if tail:
            self._partial[log.vertex] = tail
        for line in lines:
            self._line(log.vertex, line)

    def _vertex(self, vertex: Vertex) -> None:
        number = self._number(vertex)
        if vertex.cached:
            self._write(f"#{number} CACHED")
        elif vertex.error or vertex.completed is not None:
            tail = self._partial.pop(vertex.digest, b"")
            if tail:  # output whose last line had no newline
                self._line(vertex.digest, tail)
            if vertex.error:
                self._write(f"#{number} ERROR: {vertex.error}")
            else:
                took = (vertex.completed or 0.0) - (vertex.started or vertex.completed or 0.0)
                self._write(f"#{number} DONE {took:.1f}s")
        else:
            return
        self._finished.add(vertex.digest)

    def _line(self, digest: str, line: bytes) -> None:
        self._write(f"#{self._numbers.get(digest, 0)} {line.decode(errors='replace').rstrip()}")
