"""``suite new-service``: one service of each kind generated into a copy of the working tree,
whose own tests pass there, that lint, compose and the infra accept; bad names refused with
nothing written.

The copy is the working tree as it is (uncommitted changes included) without environments and
caches; it gets its own ``uv sync``. The three generated test suites and the CDK synthesis run
as child processes side by side. The Docker test (``-k docker``) builds the three images and
brings them up healthy in compose; it skips, saying why, without an engine.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from servicekit.testing.moto import free_port
from suite_contract.spec import QueueTrigger, ScheduleTrigger, find_repository_root, load_specs
from suite_tools.cli import main
from suite_tools.scaffold import Renamer, new_service

ROOT = find_repository_root(Path(__file__).parent)
KINDS = {"api": "orders-api", "worker": "email-worker", "scheduler": "nightly-reports"}
NAMES = tuple(KINDS.values())
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
    "cdk.out", ".new-service-*",
)  # fmt: skip
PYTEST = ("pytest", "-q", "-p", "no:cacheprovider")
# Three more services than the examples need more database connections than the default instance
# has (the connection budget refuses them at synth): a larger class, as the budget's error says.
SYNTH = (
    "import sys; from pathlib import Path; from infra.testing import synthesize; "
    "synthesize(Path(sys.argv[1]), root=Path.cwd(), context={'dbInstanceType': 'r7g.large'})"
)


def copy_tree(target: Path) -> Path:
    shutil.copytree(ROOT, target, ignore=NOT_COPIED, symlinks=True)
    return target


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file below ``root`` with its content's digest."""
    return {
        str(path.relative_to(root)): "dir"
        if path.is_dir()
        else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
    }


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed")
    return found


class Child:
    """``uv run COMMAND`` in the copy, with the copy's environment (not this one's); output and
    errors go to a file, so a long run never stalls on a full pipe."""

    def __init__(self, root: Path, *command: str) -> None:
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
            and not key.startswith("PYTEST_")
        }
        environment["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
        self._output = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by finish()
        self._result: tuple[int, str] | None = None
        self.process = subprocess.Popen(
            [uv(), "run", "--frozen", "--no-sync", *command],
            cwd=root,
            env=environment,
            text=True,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Its exit status and output (killed first if it has not exited within ``timeout``)."""
        if self._result is None:
            try:
                code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
            with self._output:
                self._output.seek(0)
                self._result = code, self._output.read()
        return self._result


@dataclass
class Generated:
    root: Path
    compose_before: str
    summaries: dict[str, list[str]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """A copy with one service of each kind, its lock updated by the command, synced."""
    root = copy_tree(tmp_path_factory.mktemp("scaffold") / "repo")
    compose_before = (root / "docker-compose.yml").read_text()
    summaries = {
        kind: new_service(name, example=kind, root=root).summary() for kind, name in KINDS.items()
    }
    # --locked: fails if the command left uv.lock without the new members.
    sync = subprocess.run(
        [uv(), "sync", "--all-packages", "--locked", "--quiet"],
        cwd=root,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert sync.returncode == 0, sync.stderr
    return Generated(root, compose_before, summaries)


class OneAtATime:
    """The generated services' test runs, one after another: three process-level test suites at
    once on two cores starve each other's timing-sensitive tests (worker start-up, SIGTERM
    windows). The first starts at once; each later one when the one before it has finished."""

    def __init__(self, root: Path, names: tuple[str, ...]) -> None:
        self._root = root
        self._names = names
        self._children: dict[str, Child] = {names[0]: Child(root, *PYTEST, f"services/{names[0]}")}

    def finish(self, name: str, timeout: float) -> tuple[int, str]:
        for earlier in self._names[: self._names.index(name) + 1]:
            if earlier not in self._children:
                self._children[earlier] = Child(self._root, *PYTEST, f"services/{earlier}")
            result = self._children[earlier].finish(timeout=timeout)
        return result

    def stop(self) -> None:
        for child in self._children.values():
            child.finish(timeout=0)


@dataclass
class Background:
    """The generated services' test runs (one at a time) and the synthesis, beside the tests."""

    runs: OneAtATime
    synth: Child
    outdir: Path


@pytest.fixture(scope="module")
def background(
    generated: Generated, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Background]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    runs = OneAtATime(generated.root, tuple(NAMES))
    synth = Child(generated.root, "python", "-c", SYNTH, str(outdir))
    yield Background(runs, synth, outdir)
    runs.stop()
    synth.finish(timeout=0)


# -- generation -------------------------------------------------------------------------------


# Started by the first test, so the long runs overlap with everything up to their own tests.
@pytest.mark.usefixtures("background")
@pytest.mark.parametrize("kind", KINDS)
def test_the_example_is_copied_with_its_names_rewritten(generated: Generated, kind: str) -> None:
    name = KINDS[kind]
    package = name.replace("-", "_")
    folder = generated.root / "services" / name
    assert (folder / "src" / package / "__init__.py").is_file()
    assert not (folder / "src" / kind).exists()
    assert generated.summaries[kind][0].startswith(f"created services/{name}/ from {kind}")
    spec = load_specs(generated.root)[name]
    assert spec.command[0] == name  # the console script, named after the service
    pyproject = (folder / "pyproject.toml").read_text()
    assert f'name = "{name}"' in pyproject
    assert f'packages = ["src/{package}"]' in pyproject
    # No module of the example is imported any more, and no file is named after it.
    for path in folder.rglob("*.py"):
        text = path.read_text()
        assert f"from {kind}." not in text, path
        assert f"import {kind}\n" not in text, path
        assert kind not in path.relative_to(folder).parts, path
    example = load_specs(generated.root)[kind]
    assert spec.task == example.task
    assert spec.port == example.port


def test_a_consumer_gets_a_queue_of_its_own(generated: Generated) -> None:
    specs = load_specs(generated.root)
    queues = {name: specs[name].trigger for name in ("worker", "email-worker")}
    assert all(isinstance(trigger, QueueTrigger) for trigger in queues.values())
    assert {name: getattr(trigger, "queue", None) for name, trigger in queues.items()} == {
        "worker": "jobs",
        "email-worker": "email-worker",
    }


def test_a_scheduled_service_gets_its_registry_and_firings_queue(generated: Generated) -> None:
    trigger = load_specs(generated.root)["nightly-reports"].trigger
    assert isinstance(trigger, ScheduleTrigger)
    assert trigger.registry == "nightly_reports.jobs:registry"
    compose = yaml.safe_load((generated.root / "docker-compose.yml").read_text())
    environment = compose["services"]["nightly-reports"]["environment"]
    assert environment["FIRINGS_QUEUE_URL"].endswith("/suite-development-nightly-reports-firings")
    assert environment["LOCAL_CLOCK"] == "true"


def test_compose_gets_a_block_per_service_and_keeps_every_other_line(generated: Generated) -> None:
    after = (generated.root / "docker-compose.yml").read_text()
    changes = [
        line for line in difflib.ndiff(generated.compose_before.splitlines(), after.splitlines())
        if line[:1] in "+-?"
    ]  # fmt: skip
    assert not [line for line in changes if not line.startswith("+ ")], changes
    for name in NAMES:
        assert f"+   {name}:" in changes
    # The new api behind a load balancer of its own, as the example's, on a host port of its
    # own (the API's keeps 8000); its other colour for deploys; replicas from the spec's count.
    services = yaml.safe_load(after)["services"]
    assert "ports" not in services["orders-api"]
    assert services["orders-api"]["deploy"] == {"replicas": "${ORDERS_API_REPLICAS:-2}"}
    lb = services["orders-api-lb"]
    assert lb["ports"][0] == "${BIND_ADDRESS:-127.0.0.1}:${ORDERS_API_PORT:-8001}:8000"
    assert (lb["environment"]["BLUE_HOST"], lb["environment"]["GREEN_HOST"]) == (
        "orders-api",
        "orders-api-green",
    )
    assert services["orders-api-green"]["extends"] == "orders-api"
    assert services["email-worker"]["deploy"] == {"replicas": "${EMAIL_WORKER_REPLICAS:-2}"}
    assert (
        '+     environment: {<<: *app, SERVICE_NAME: "email-worker", PORT: "8080", HEALTH_PATH: '
        '"/health", QUEUE_URL: "http://moto:5000/123456789012/suite-development-email-worker"}'
    ) in changes
    code, output = Child(generated.root, *PYTEST, "tests/test_compose_spec.py").finish()
    assert code == 0, output


def test_the_generated_code_passes_the_repositorys_lint(generated: Generated) -> None:
    folders = [f"services/{name}" for name in NAMES]
    for command in (["ruff", "check", *folders], ["ruff", "format", "--check", *folders]):
        code, output = Child(generated.root, *command).finish()
        assert code == 0, output


# -- refusals ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("refusals") / "repo")


def refused(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line ``suite new-service ARGS`` fails with, having written nothing."""
    before = snapshot(root)
    assert main(["new-service", *args]) == 1
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("suite new-service: "), stderr
    assert snapshot(root) == before
    return lines[0]


# Each refused name with (part of) the line that says why.
REFUSALS = {
    "Billing": "'Billing' is not a valid service name: a DNS label",
    "9lives": "'9lives' is not a valid service name",
    "bad_name": "'bad_name' is not a valid service name",
    "double--hyphen": "'double--hyphen' is not a valid service name",
    "ends-": "'ends-' is not a valid service name",
    "a" * 33: "is 33 characters long: at most 32",
    "class": "'class' is a Python keyword",
    "worker": "services/worker already exists",
    "servicekit": "'servicekit' is taken: it is the workspace member shared/",
    "suite-tools": "'suite-tools' is taken: it is the workspace member tools/",
    "infra": "'infra' is taken: it is the workspace member infra/",
    "json": "'json' would shadow the standard library's module json",
    "yaml": "'yaml' is taken: it is the import name of PyYAML",
    "suite": "'suite' is taken: it is a command of suite-tools",
    "shared": "'shared' is taken: Parameter Store's /{app}/{env}/shared/",
    "postgres": "'postgres' is taken: docker-compose.yml has a service of that name",
    "python": "'python' is taken: docker-compose.yml already uses $PYTHON_IMAGE",
}


@pytest.mark.parametrize("name", REFUSALS, ids=lambda name: name if len(name) < 33 else "33 chars")
def test_a_bad_name_is_refused_with_its_reason(
    pristine: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.chdir(pristine)
    assert REFUSALS[name] in refused(pristine, capsys, name, "--from", "worker")


def test_an_unknown_example_is_refused(
    pristine: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pristine)
    assert "no example 'nope' (services: " in refused(pristine, capsys, "fine", "--from", "nope")


def test_a_consumer_named_after_a_queue_in_use_is_refused(
    pristine: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pristine)
    # "jobs", the example's queue, is also a workspace member: the worker consumes "tasks" here.
    spec = pristine / "services" / "worker" / "service.toml"
    spec.write_text(spec.read_text().replace('queue = "jobs"', 'queue = "tasks"'))
    line = refused(pristine, capsys, "tasks", "--from", "worker")
    assert "'tasks' is taken: a queue of that name exists" in line


def test_a_failed_lock_takes_the_new_folder_back(
    pristine: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pristine)
    monkeypatch.setenv("UV", shutil.which("false") or "false")
    line = refused(pristine, capsys, "fine", "--from", "worker")
    assert "`uv lock` failed, nothing was added" in line


def test_a_compose_file_without_the_services_anchors_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_tree(tmp_path / "repo")
    compose = root / "docker-compose.yml"
    compose.write_text(
        compose.read_text().replace("&app", "&application").replace("*app", "*application")
    )
    monkeypatch.chdir(root)
    line = refused(root, capsys, "fine", "--from", "worker", "--no-lock")
    assert "docker-compose.yml would not parse with the new block" in line


# -- the renaming rules -----------------------------------------------------------------------


def test_module_references_get_the_package_and_the_rest_the_service_name() -> None:
    source = """\"\"\"The scheduler (``scheduler`` or ``python -m scheduler``).\"\"\"

from scheduler.cli import main

REGISTRY = "scheduler.jobs:registry"
ARGS = [sys.executable, "-m", "scheduler", "run"]
logger = logging.getLogger("scheduler")
PATH = f"/{APP}/{ENV}/scheduler/flags"
SLOT = "<aws.scheduler.scheduled-time>"
other.scheduler = scheduler_test_jobs
"""
    renamed = Renamer("scheduler", "nightly-reports", width=100).python(
        source, {"scheduler_test_jobs": "nightly_reports_test_jobs"}
    )
    assert renamed == (
        '"""The nightly-reports (``nightly-reports`` or ``python -m nightly_reports``)."""\n'
        "\n"
        "from nightly_reports.cli import main\n"
        "\n"
        'REGISTRY = "nightly_reports.jobs:registry"\n'
        'ARGS = [sys.executable, "-m", "nightly_reports", "run"]\n'
        'logger = logging.getLogger("nightly-reports")\n'
        'PATH = f"/{APP}/{ENV}/nightly-reports/flags"\n'
        'SLOT = "<aws.scheduler.scheduled-time>"\n'
        "other.scheduler = nightly_reports_test_jobs\n"
    )


def test_a_name_bound_by_import_is_renamed_where_it_is_used() -> None:
    renamed = Renamer("api", "orders-api").python("import api.main\n\napp = api.main.app\n", {})
    assert renamed == "import orders_api.main\n\napp = orders_api.main.app\n"


def test_an_example_using_its_name_as_an_identifier_is_refused() -> None:
    # "email-worker = ..." would not parse: the examples keep the name out of their code.
    with pytest.raises(SyntaxError):
        Renamer("worker", "email-worker").python("worker = start()\n", {})


def test_prose_that_grows_past_the_line_length_is_wrapped_into_its_paragraph() -> None:
    source = (
        "def f() -> None:\n"
        '    """The worker needs the worker queue, and the worker\n'
        "    pool.\n"
        "\n"
        "    - the worker list item\n"
        '    """\n'
    )
    renamed = Renamer("worker", "email-worker", width=50).python(source, {})
    assert renamed == (
        "def f() -> None:\n"
        '    """The email-worker needs the email-worker\n'
        "    queue, and the email-worker pool.\n"
        "\n"
        "    - the email-worker list item\n"
        '    """\n'
    )


# -- images and compose -----------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_docker_images_build_and_start_healthy_in_compose(
    compose_v2: None, generated: Generated
) -> None:
    """The generated services and what they depend on (init, PostgreSQL, moto) in a project of
    their own, every image built under a name of its own (a developer's ``ecs-suite/*:local``
    stay as they are); base images come from the environment (.ci/compose.env in CI)."""
    project = f"scaffold-{secrets.token_hex(4)}"
    port = free_port()
    services = yaml.safe_load((generated.root / "docker-compose.yml").read_text())["services"]
    images = {
        match.group(1): f"{project}/{service}:test"
        for service, definition in services.items()
        if "build" in definition and (match := re.match(r"\$\{(\w+):-", definition["image"]))
    }
    environment = os.environ | images | {
        "COMPOSE_PROJECT_NAME": project, "API_PORT": str(free_port()), "ORDERS_API_PORT": str(port),
        # One task each: enough to show they start; the fleet is tests/test_compose_deploy.py's.
        "ORDERS_API_REPLICAS": "1", "EMAIL_WORKER_REPLICAS": "1",
    }  # fmt: skip

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=generated.root,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )

    try:
        # Builds what the services and their dependencies need, and starts those.
        up = compose(
            "up", "--build", "--detach", "--wait", "--wait-timeout", "300", *NAMES, "orders-api-lb"
        )  # fmt: skip
        logs = compose("logs", "--no-color", "--tail", "40").stdout
        assert up.returncode == 0, f"{up.stderr[-4000:]}\n{logs[-6000:]}"
        states = {
            entry["Service"]: entry["Health"]
            for line in compose("ps", "--format", "json").stdout.splitlines()
            for entry in [json.loads(line)]
        }
        assert {name: states.get(name) for name in NAMES} == dict.fromkeys(NAMES, "healthy")
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.json() == {"status": "ok"}
        # The init step made the new consumer's queue from its spec, like the jobs queue.
        assert "/123456789012/suite-development-email-worker" in compose("logs", "init").stdout
    finally:
        compose("--profile", "deploy", "down", "--volumes", "--remove-orphans", "--timeout", "10")
        subprocess.run(
            ["docker", "image", "rm", "--force", *images.values()],
            capture_output=True,
            check=False,
        )


# -- the generated services' own tests and the infra ------------------------------------------


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NAMES)
def test_the_generated_services_own_tests_pass(background: Background, name: str) -> None:
    code, output = background.runs.finish(name, timeout=600)
    assert code == 0, output[-6000:]
    assert " passed" in output.splitlines()[-1], output[-2000:]


@pytest.mark.timeout(900)
def test_the_infra_builds_each_new_service_from_its_spec(
    background: Background, generated: Generated
) -> None:
    # Here, not at the top: importing the CDK starts its node runtime, which this file's unit
    # tests (collected by the fast tier) have no use for.
    from infra.testing import Assembly, container  # noqa: PLC0415

    code, output = background.synth.finish(timeout=800)
    assert code == 0, output[-4000:]
    outdir = background.outdir
    assembly = Assembly(
        outdir=outdir,
        report=json.loads((outdir / "validation-report.json").read_text()),
        templates={
            path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in outdir.glob("*.template.json")
        },
    )
    assert all(plugin["conclusion"] == "success" for plugin in assembly.report["pluginReports"])
    specs = load_specs(generated.root)
    for name in NAMES:
        assembly.template(name).has_resource_properties(
            "AWS::ECS::TaskDefinition", {"Family": f"suite-dev-{name}"}
        )
        app = container(assembly, name, "app")
        assert app["Command"] == specs[name].command
        assert {"Name": "SERVICE_NAME", "Value": name} in app["Environment"]
    platform = assembly.template("platform")
    for queue in ("suite-dev-email-worker", "suite-dev-email-worker-dlq"):
        platform.has_resource_properties("AWS::SQS::Queue", {"QueueName": queue})
    platform.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {"Name": "suite-dev-orders-api", "Scheme": "internet-facing"},
    )
    schedules = assembly.resources("nightly-reports", "AWS::Scheduler::Schedule").values()
    assert schedules
    # Each schedule sends its firing to the new service's own firings queue.
    firings = assembly.resources("nightly-reports", "AWS::SQS::Queue")
    [queue_id] = [
        key
        for key, queue in firings.items()
        if queue["Properties"].get("QueueName") == "suite-dev-nightly-reports-firings"
    ]
    for schedule in schedules:
        target = schedule["Properties"]["Target"]
        assert json.loads(target["Input"]) == {
            "job": schedule["Properties"]["Name"],
            "slot": "<aws.scheduler.scheduled-time>",
        }
        assert target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
