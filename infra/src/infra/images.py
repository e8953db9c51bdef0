"""The images of other publishers that the tasks run, pinned by digest.

A tag can be moved or rebuilt upstream; a digest cannot. Each reference is
``name:tag@sha256:<digest>``: the tag says which release it is, the digest (of the release's
multi-platform index, so x86_64 and arm64 tasks resolve the same pin) is what is pulled. Bump
both parts together; the digest is the first line of ``docker buildx imagetools inspect
public.ecr.aws/<name:tag>``.
"""

from __future__ import annotations

import re

__all__ = ["OTEL_COLLECTOR_IMAGE", "PINNED"]

# The ADOT collector sidecar, through the registry's ECR Public pull-through cache
# (public.ecr.aws/aws-observability/aws-otel-collector).
OTEL_COLLECTOR_IMAGE = (
    "aws-observability/aws-otel-collector:v0.48.0"
    "@sha256:9b28046359054b414f4ba76056ba4e8cffda2d53fbcee06171d7eeecd71326c3"
)

# What a pinned reference looks like: a context override (otelCollectorImage) must match it.
PINNED = re.compile(r"[a-z0-9][a-z0-9./_-]*:[\w][\w.-]{0,127}@sha256:[0-9a-f]{64}")
