"""The database of the API: servicekit's pool, logging in with the rotating RDS secret."""

from __future__ import annotations

from api.core.config import Settings
from servicekit.db import Database

__all__ = ["open_database"]


def open_database(settings: Settings) -> Database:
    """A started pool; it does not wait for the database (down at start: /ready says so)."""
    database = Database(settings.db_secret, settings.database, name=settings.service_name)
    database.open()
    return database
