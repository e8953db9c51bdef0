"""The shared exceptions: one problem per line, picklable, no surprises in str()."""

from __future__ import annotations

import pickle

from servicekit.errors import ConfigurationError, DependencyUnavailable


def test_configuration_error_lists_every_problem_on_its_own_line() -> None:
    error = ConfigurationError(
        "app_name: missing; looked for environment variable APP_NAME",
        "db_secret: secret 'suite/test/db' is unavailable",
    )

    assert error.problems == [
        "app_name: missing; looked for environment variable APP_NAME",
        "db_secret: secret 'suite/test/db' is unavailable",
    ]
    lines = str(error).splitlines()
    assert lines[0] == "invalid configuration (2 problems):"
    assert lines[1:] == [f"  - {problem}" for problem in error.problems]
    assert str(ConfigurationError("one")).splitlines()[0] == "invalid configuration (1 problem):"


def test_a_problem_spanning_lines_stays_on_one() -> None:
    error = ConfigurationError(
        "403 from ssm:GetParametersByPath: <?xml ...>\n<Error>denied</Error>"
    )
    assert str(error).splitlines()[1:] == [
        "  - 403 from ssm:GetParametersByPath: <?xml ...> <Error>denied</Error>"
    ]


def test_errors_survive_pickling() -> None:
    # Exceptions cross process boundaries (multiprocessing, gunicorn's master reading a worker).
    configuration = pickle.loads(pickle.dumps(ConfigurationError("a", "b")))
    assert configuration.problems == ["a", "b"]
    assert str(configuration) == str(ConfigurationError("a", "b"))

    dependency = pickle.loads(pickle.dumps(DependencyUnavailable("database", "connection refused")))
    assert (dependency.dependency, dependency.reason) == ("database", "connection refused")


def test_dependency_unavailable_names_the_dependency() -> None:
    error = DependencyUnavailable("sqs", "endpoint unreachable")
    assert error.dependency == "sqs"
    assert str(error) == "sqs unavailable: endpoint unreachable"
