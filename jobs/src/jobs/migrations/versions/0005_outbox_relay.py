"""The outbox relay: a claim lease on unsent jobs, a NOTIFY when one appears, and the sweeps' index.

Revision ID: 0005_outbox_relay
"""

from alembic import op

revision = "0005_outbox_relay"
down_revision = "0004_job_contract"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A relay claims unsent jobs by setting this and committing BEFORE it calls SQS, so no row
    # lock is held across the network call; a relay that dies mid-send leaves a claim that
    # simply runs out, and another relay sends the job then.
    op.execute("ALTER TABLE jobs ADD COLUMN send_claimed_until timestamptz")
    op.execute(
        "COMMENT ON COLUMN jobs.send_claimed_until IS "
        "'a relay is sending this job''s message until then (NULL: nobody)'"
    )
    # Every way a job comes to need a message (created, requeued, redriven) wakes the relays
    # that LISTEN on jobs_outbox. Identical notifications of one transaction are folded into one.
    op.execute(
        """
        CREATE FUNCTION jobs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('jobs_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_outbox_notify AFTER INSERT OR UPDATE OF status, enqueued_at ON jobs
        FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.enqueued_at IS NULL)
        EXECUTE FUNCTION jobs_outbox_notify()
        """
    )
    # The lost-message sweep: jobs sent but not finished, by when they last changed.
    op.execute(
        "CREATE INDEX jobs_in_flight_idx ON jobs (updated_at) "
        "WHERE status IN ('queued', 'failed') AND enqueued_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX jobs_in_flight_idx")
    op.execute("DROP TRIGGER jobs_outbox_notify ON jobs")
    op.execute("DROP FUNCTION jobs_outbox_notify()")
    op.execute("ALTER TABLE jobs DROP COLUMN send_claimed_until")
