"""The API's settings: environment and Parameter Store."""

from __future__ import annotations

from typing import Any

from api.core.config import Settings


def test_settings_come_from_the_environment_and_parameter_store(api_env: Any) -> None:
    api_env.set_parameter("max_body_bytes", "2048")
    api_env.set_parameter("database/pool_size", "3")

    settings = Settings.load()

    assert settings.queue_url == api_env.queue_url
    assert settings.db_secret.secret_id == api_env.secret_id
    assert settings.db_secret.get().dbname == api_env.database.dbname
    assert settings.max_body_bytes == 2048
    assert settings.database.pool_size == 3
    assert api_env.database.password not in repr(settings)
