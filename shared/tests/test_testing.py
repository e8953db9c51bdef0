"""The test fixtures themselves: the database really checks passwords."""

import psycopg
import pytest

from servicekit import aws
from servicekit.testing import Database, MotoServer


def test_wrong_password_is_refused(postgres_db: Database) -> None:
    with psycopg.connect(postgres_db.conninfo()) as conn:
        assert conn.execute("select current_user").fetchone() == (postgres_db.username,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_db.conninfo(password="not-the-password"))


def test_aws_env_points_at_moto(aws_env: MotoServer) -> None:
    sqs = aws.client("sqs")
    assert sqs.meta.endpoint_url == aws_env.endpoint_url
    sqs.create_queue(QueueName="fixture-check")
    assert len(sqs.list_queues()["QueueUrls"]) == 1
