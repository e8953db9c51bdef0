"""The repository's root conftest: the composed suite's fixtures for the cross-service tests.

The harness lives in tests/compose_suite.py (on the path through pytest's ``pythonpath``); a
conftest.py of its own in tests/ would be imported as ``tests.conftest``, the name infra/tests'
conftest (a package) already has.
"""

pytest_plugins = ["compose_suite"]
