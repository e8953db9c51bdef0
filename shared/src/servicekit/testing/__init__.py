"""Real components for tests: moto's HTTP server and throwaway PostgreSQL clusters.

Installed as a pytest plugin (``pytest11`` entry point), so every service's tests, and services
generated from the examples, get the same fixtures: ``moto_server``, ``aws_env``,
``postgres_cluster`` and ``postgres_db`` (the jobs package adds ``migrated_db``); ``wait_until``
for polling (and ``answers_ok``, a URL answering 200); and SQS helpers (``create_queue`` with its
DLQ, ``send_messages``, ``queue_counts``).
Nothing here mocks AWS or the database.
"""

from servicekit.testing.moto import MotoServer
from servicekit.testing.polling import answers_ok, wait_until
from servicekit.testing.postgres import Database, PostgresCluster, ServerTls, make_server_tls
from servicekit.testing.sqs import create_queue, queue_counts, send_messages

__all__ = [
    "Database",
    "MotoServer",
    "PostgresCluster",
    "ServerTls",
    "answers_ok",
    "create_queue",
    "make_server_tls",
    "queue_counts",
    "send_messages",
    "wait_until",
]
