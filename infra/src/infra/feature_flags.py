"""cdk.json's feature flags: exactly the set the installed aws-cdk-lib recommends.

``python -m infra.feature_flags`` rewrites them in ``infra/cdk.json`` (keeping the other context
keys); the tests fail when an aws-cdk-lib upgrade recommends a flag cdk.json lacks.
"""

from __future__ import annotations

import json
import sys
import tarfile
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["CDK_JSON", "is_feature_flag", "recommended_flags", "write_flags"]

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def recommended_flags() -> dict[str, Any]:
    """aws-cdk-lib's ``recommended-feature-flags.json`` (what ``cdk init`` writes)."""
    bundle = next(
        entry
        for entry in resources.files("aws_cdk").joinpath("_jsii").iterdir()
        if entry.name.startswith("aws-cdk-lib@") and entry.name.endswith(".tgz")
    )
    with resources.as_file(bundle) as path, tarfile.open(path) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        if member is None:
            raise FileNotFoundError(f"{path} has no recommended-feature-flags.json")
        flags: dict[str, Any] = json.load(member)
    return flags


def is_feature_flag(key: str) -> bool:
    return key.startswith("@aws-cdk")


def write_flags(path: Path = CDK_JSON) -> None:
    document = json.loads(path.read_text())
    context = {k: v for k, v in document.get("context", {}).items() if not is_feature_flag(k)}
    document["context"] = context | dict(sorted(recommended_flags().items()))
    path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    write_flags(Path(sys.argv[1]) if len(sys.argv) > 1 else CDK_JSON)
