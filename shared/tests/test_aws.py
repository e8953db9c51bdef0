"""servicekit.aws: the shared clients and the models every session shares."""

from __future__ import annotations

from typing import Any

import botocore.loaders
import pytest

from servicekit import aws


def test_models_parsed_before_a_reset_are_not_parsed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    read: list[str] = []
    original = botocore.loaders.Loader.load_data_with_path

    def reading(self: botocore.loaders.Loader, name: str) -> Any:
        read.append(name)
        return original(self, name)

    aws.load_models("sqs")
    aws.reset_clients()  # as gunicorn's post_fork does in each worker
    monkeypatch.setattr(botocore.loaders.Loader, "load_data_with_path", reading)
    try:
        aws.client("sqs")
        assert not [name for name in read if name.startswith("sqs/")]
        # The control: a loader of its own parses them (the count would see it).
        botocore.loaders.create_loader().load_service_model("sqs", "service-2")
        assert [name for name in read if name.startswith("sqs/")]
    finally:
        aws.reset_clients()
