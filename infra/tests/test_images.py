"""Other publishers' images are pinned by digest, and the pattern that says so refuses a tag."""

from __future__ import annotations

import pytest

from infra.images import OTEL_COLLECTOR_IMAGE, PINNED


def test_the_collector_is_pinned_by_tag_and_digest() -> None:
    assert PINNED.fullmatch(OTEL_COLLECTOR_IMAGE)
    assert OTEL_COLLECTOR_IMAGE.startswith("aws-observability/aws-otel-collector:v")


@pytest.mark.parametrize(
    "reference",
    [
        "aws-observability/aws-otel-collector:v0.48.0",  # a tag alone can move
        "aws-observability/aws-otel-collector:latest@sha256:abc",  # not a whole digest
        f"aws-observability/aws-otel-collector@sha256:{'a' * 64}",  # no release named
        f"aws-observability/aws-otel-collector:v1@sha256:{'A' * 64}",  # digests are lower-case
    ],
)
def test_an_unpinned_reference_does_not_match(reference: str) -> None:
    assert PINNED.fullmatch(reference) is None
