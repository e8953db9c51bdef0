"""The job_effects table: what the example worker's handlers write.

Revision ID: 0003_job_effects
"""

from alembic import op

revision = "0003_job_effects"
down_revision = "0002_schedule_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written in the transaction that marks the job succeeded, so a job's effect exists exactly
    # once or not at all. Deliberately no UNIQUE (job_id): a double effect must be countable,
    # which is how the worker's crash tests prove exactly-once.
    op.execute(
        """
        CREATE TABLE job_effects (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            type text NOT NULL,
            result jsonb,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """
    )
    op.execute("CREATE INDEX job_effects_job_id_idx ON job_effects (job_id)")


def downgrade() -> None:
    op.execute("DROP TABLE job_effects")
