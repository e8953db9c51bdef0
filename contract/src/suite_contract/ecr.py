"""How the services' images are kept in ECR: the repository names and their lifecycle rules.

The infra's registry stack declares the repositories with these (``infra/src/infra/registry.py``)
and ``suite push`` creates one it finds missing with the same (``suite_tools.images``), so a
repository the tool created first is adopted by the stack without drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LIFECYCLE_POLICY", "repository_name"]

# Deployments pin digests, so an image still running must never expire: 50 images reach back
# further than any rollback.
LIFECYCLE_POLICY: Mapping[str, Any] = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "untagged layers of failed or superseded pushes",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 7,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "keep the last 50 images: rollbacks reach far enough back",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 50},
            "action": {"type": "expire"},
        },
    ]
}


def repository_name(app: str, service: str) -> str:
    """``{app}/{service}``: the service's ECR repository, one for every environment, so an image
    is promoted from one environment to the next by its digest and never rebuilt."""
    return f"{app}/{service}"
