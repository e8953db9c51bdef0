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
    original = botocore.loaders.JSONFileLoader.load_file

    def reading(self: botocore.loaders.JSONFileLoader, path: str) -> Any:
        read.append(path)
        return original(self, path)

    aws.load_models("ssm", "sqs")
    aws.reset_clients()  # as gunicorn's post_fork does in each worker
    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", reading)
    try:
        aws.client("sqs")
        aws.client("ssm").get_paginator("get_parameters_by_path")
        # No JSON file read at all: the models, the endpoint rules and endpoints.json, the
        # paginators.
        assert read == []
        # The control: a loader of its own reads them (the list would see it).
        botocore.loaders.create_loader().load_service_model("sqs", "service-2")
        assert [path for path in read if "/sqs/" in path]
    finally:
        aws.reset_clients()
