"""The example application's jobs domain, shared by the api, the worker and the scheduler.

- :mod:`jobs.repository`: every read and write of the ``jobs`` table, and the SQS message body.
- :mod:`jobs.migrations`: the schema (alembic), run only by the explicit ``jobs-migrate`` command
  (behind the ``migrations`` extra, which only the scheduler's image carries).

``servicekit`` is the platform library any service needs; what is specific to this application's
jobs lives here, so a team templating its own service replaces this package, not servicekit.
"""
