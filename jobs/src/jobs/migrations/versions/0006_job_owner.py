"""Job ownership: each job belongs to the caller that created it.

Revision ID: 0006_job_owner

Rows created before this revision get the owner ``'legacy'``: no caller authenticates with that
subject, so only an admin (who reads every owner's jobs) sees them.
"""

from alembic import op

revision = "0006_job_owner"
down_revision = "0005_outbox_relay"
branch_labels = None
depends_on = None

LEGACY_OWNER = "legacy"


def upgrade() -> None:
    # A constant default fills the existing rows without rewriting the table (PostgreSQL 11+);
    # dropping it afterwards makes every new row name its owner.
    op.execute(
        "ALTER TABLE jobs ADD COLUMN owner text NOT NULL "
        f"DEFAULT '{LEGACY_OWNER}' CHECK (length(owner) BETWEEN 1 AND 255)"
    )
    op.execute("ALTER TABLE jobs ALTER COLUMN owner DROP DEFAULT")
    # Idempotency keys are each caller's own: two callers may pick the same key. The unique
    # constraint is also what makes create()'s INSERT ... ON CONFLICT race safe.
    op.execute("ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key")
    op.execute(
        "ALTER TABLE jobs ADD CONSTRAINT jobs_owner_idempotency_key_key "
        "UNIQUE (owner, idempotency_key)"
    )
    # GET /jobs for one caller, newest first (keyset pagination).
    op.execute("CREATE INDEX jobs_owner_created_idx ON jobs (owner, created_at DESC, id DESC)")


def downgrade() -> None:
    # Fails with a unique violation if two owners used the same key: decide which job keeps it.
    op.execute("DROP INDEX jobs_owner_created_idx")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT jobs_owner_idempotency_key_key")
    op.execute("ALTER TABLE jobs ADD CONSTRAINT jobs_idempotency_key_key UNIQUE (idempotency_key)")
    op.execute("ALTER TABLE jobs DROP COLUMN owner")
