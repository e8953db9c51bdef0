"""BuildKit's progress trace, recorded from this engine's ``/build?version=2``, as plain lines."""

from __future__ import annotations

import json
from pathlib import Path

from suite_tools.buildkit import StatusResponse, TraceRenderer, Vertex, VertexLog, decode_status

RECORDED = json.loads((Path(__file__).parent / "data" / "buildkit-trace.json").read_text())


def test_recorded_build_reads_like_plain_progress() -> None:
    lines: list[str] = []
    renderer = TraceRenderer(lines.append)
    for aux in RECORDED["traces"]:
        renderer.feed(decode_status(aux))
    assert lines == [
        "#1 [internal] load remote build context",
        "#1 DONE 0.0s",
        "#2 copy /context /",
        "#2 DONE 0.0s",
        "#3 [internal] load metadata for docker.io/local/python-base:bookworm",
        "#3 DONE 0.0s",
        "#4 [1/2] FROM docker.io/local/python-base:bookworm",
        "#4 CACHED",
        '#5 [2/2] RUN echo "hello from the build" && echo second line',
        "#5 hello from the build",
        "#5 second line",
        "#5 DONE 0.2s",
        "#6 exporting to image",
        "#6 DONE 0.0s",
    ]


def test_output_cut_mid_line_is_shown_in_whole_lines() -> None:
    lines: list[str] = []
    renderer = TraceRenderer(lines.append)
    step = Vertex(digest="sha256:1", name="[1/1] RUN make", started=10.0)
    renderer.feed(StatusResponse([step], [VertexLog("sha256:1", b"compiling fo")]))
    renderer.feed(StatusResponse([], [VertexLog("sha256:1", b"o\nlinking")]))
    failed = Vertex(digest="sha256:1", name=step.name, started=10.0, completed=12.5, error="exit 2")
    renderer.feed(StatusResponse([failed], []))
    assert lines == [
        "#1 [1/1] RUN make",
        "#1 compiling foo",
        "#1 linking",
        "#1 ERROR: exit 2",
    ]
