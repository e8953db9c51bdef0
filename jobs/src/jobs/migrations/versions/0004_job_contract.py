"""The job contract: an error code clients can act on, and the running job's lease.

Revision ID: 0004_job_contract
"""

from alembic import op

revision = "0004_job_contract"
down_revision = "0003_job_effects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # error_code: stable and machine-readable ("timeout", "invalid_payload"...); error becomes the
    # short message written for clients (the detail is in the worker's logs).
    # lease_expires_at: the worker renews it while the job runs; requeue-stuck takes only jobs
    # whose lease ran out, however long a live job runs.
    op.execute(
        "ALTER TABLE jobs ADD COLUMN error_code text, ADD COLUMN lease_expires_at timestamptz"
    )
    # Jobs running during the upgrade keep the old rule: stuck 15 minutes after their last change.
    op.execute(
        "UPDATE jobs SET lease_expires_at = updated_at + interval '900 seconds' "
        "WHERE status = 'running'"
    )
    op.execute(
        "CREATE INDEX jobs_lease_expires_at_idx ON jobs (lease_expires_at) WHERE status = 'running'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX jobs_lease_expires_at_idx")
    op.execute("ALTER TABLE jobs DROP COLUMN lease_expires_at, DROP COLUMN error_code")
