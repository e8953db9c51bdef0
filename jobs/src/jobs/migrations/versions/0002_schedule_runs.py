"""The schedule_runs table: one row per (job, slot), the slot lock and the run history.

Revision ID: 0002_schedule_runs
"""

from alembic import op

revision = "0002_schedule_runs"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The unique (job, slot) is the lock servicekit.scheduling takes: whoever inserts the row runs
    # the job for that slot. Status is text with a CHECK, as in jobs, so it can change in place.
    op.execute(
        """
        CREATE TABLE schedule_runs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job text NOT NULL CHECK (length(job) BETWEEN 1 AND 64),
            slot timestamptz NOT NULL,
            status text NOT NULL DEFAULT 'running' CONSTRAINT schedule_runs_status_check
                CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
            started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at timestamptz,
            error text,
            host text NOT NULL,
            CONSTRAINT schedule_runs_job_slot_key UNIQUE (job, slot)
        )
        """
    )
    # History newest first across jobs, and the purge of old slots.
    op.execute("CREATE INDEX schedule_runs_slot_idx ON schedule_runs (slot)")


def downgrade() -> None:
    op.execute("DROP TABLE schedule_runs")
