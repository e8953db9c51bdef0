"""The jobs table: one row per job with its status, attempts, result or error, and outbox marker.

Revision ID: 0001_jobs
"""

from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # status is text with a CHECK, not an enum type: a CHECK can be replaced in one transactional
    # migration, while enum values can be neither removed nor renamed.
    op.execute(
        """
        CREATE TABLE jobs (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            type text NOT NULL CHECK (length(type) BETWEEN 1 AND 100),
            payload jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
            status text NOT NULL DEFAULT 'queued' CONSTRAINT jobs_status_check
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
            attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            idempotency_key text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
            result jsonb,
            error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            enqueued_at timestamptz
        )
        """
    )
    op.execute("COMMENT ON COLUMN jobs.enqueued_at IS 'NULL until the SQS message was sent'")
    # GET /jobs newest first, with and without a status filter (keyset pagination).
    op.execute("CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC)")
    op.execute("CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC)")
    # The sweeps read small partial indexes instead of the whole table.
    op.execute(
        "CREATE INDEX jobs_outbox_idx ON jobs (updated_at) "
        "WHERE status = 'queued' AND enqueued_at IS NULL"
    )
    op.execute("CREATE INDEX jobs_running_idx ON jobs (updated_at) WHERE status = 'running'")
    op.execute(
        "CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status IN ('succeeded', 'dead')"
    )


def downgrade() -> None:
    op.execute("DROP TABLE jobs")
