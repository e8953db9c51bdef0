"""Real components for tests: moto's HTTP server and throwaway PostgreSQL clusters.

Installed as a pytest plugin (``pytest11`` entry point), so every service's tests, and services
generated from the examples, get the same fixtures: ``moto_server``, ``aws_env``,
``postgres_cluster``, ``postgres_db`` and ``migrated_db``; and ``wait_until`` for polling.
Nothing here mocks AWS or the database.
"""

from servicekit.testing.moto import MotoServer
from servicekit.testing.polling import wait_until
from servicekit.testing.postgres import Database, PostgresCluster

__all__ = ["Database", "MotoServer", "PostgresCluster", "wait_until"]
