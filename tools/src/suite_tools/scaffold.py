"""``suite new-service NAME --from EXAMPLE``: a new service folder made from one of the examples.

It copies the live example rather than a template kept beside it (a copier template would be a
second copy of each example to keep in step by hand). Every file's text gets the example's name
as a word replaced: by the package (``my_service``) where it names a module, by the service name
(``my-service``) elsewhere; the examples use neither as an identifier of their own, so code,
strings and prose take the same rule (a Python file that would not parse is refused). The spec
gets a queue of its own for a consumer and every default that names the example written out.
Nothing is half-written: the folder is assembled beside ``services/`` and renamed into place,
then ``uv lock``, then docker-compose.yml (a rendered block inserted as text, parsed before it
is written); a failure takes everything back. tools/README.md gives the reasons.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from suite_contract.spec import (
    EnvironmentNames,
    Exposure,
    QueueTrigger,
    ScheduleTrigger,
    ServiceSpec,
    find_repository_root,
    load_spec,
    load_specs,
)
from suite_tools.errors import CommandError

__all__ = ["NewService", "Renamer", "check_name", "new_service"]

COMPOSE_FILE = "docker-compose.yml"

# Names the suite already gives a meaning of its own.
RESERVED = {
    "shared": "Parameter Store's /{app}/{env}/shared/ holds the settings every service shares",
    "network": "the infra's {app}-{env}-network stack has that name",
    "platform": "the infra's {app}-{env}-platform stack has that name",
    "service": "the image's entry point /app/.venv/bin/service has that name",
}

# What the example folder may hold that is not part of it: caches, build output, local settings.
_NOT_COPIED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
    ".venv", "build", "dist", "*.egg-info", ".env", ".env.*",
)  # fmt: skip

# Before a word, these make it a module: ``from x``, ``import x``, ``python -m x``, ``"-m", "x"``.
_MODULE_BEFORE = re.compile(r"(?:(?:^|\s)(?:from|import)\s+|-m\s+|-m[\"'],\s*[\"'])\Z")
_MODULE_AFTER = re.compile(r"[.:][A-Za-z_]")
# Replicas on a laptop: a spec's task count above this is capped (docker-compose.yml's examples).
LAPTOP_REPLICAS = 2
_PORT_DEFAULT = re.compile(r"(?:\$\{\w+:-(\d+)\}|(\d+)):\d+$")


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@dataclass(frozen=True)
class Renamer:
    """Rewrites the example's names (``old``) to the new service's (``new``); prose lines that
    grow past ``width`` (the repository's ruff line-length) are wrapped."""

    old: str
    new: str
    width: int = 88

    @property
    def old_package(self) -> str:
        return self.old.replace("-", "_")

    @property
    def new_package(self) -> str:
        return self.new.replace("-", "_")

    def path(self, relative: PurePosixPath) -> PurePosixPath:
        """Folders named after the example, and ``_``-separated words of module file names."""
        parts = []
        for part in relative.parts:
            stem, dot, suffix = part.partition(".")
            words = [self.new_package if w == self.old_package else w for w in stem.split("_")]
            parts.append("_".join(words) + dot + suffix)
        return PurePosixPath(*parts)

    def text(self, text: str, modules: dict[str, str]) -> str:
        """A file's words (code, strings and prose alike: the examples use neither name as an
        identifier of their own); ``modules`` maps renamed module names (old -> new)."""
        words = sorted({self.old, self.old_package, *modules}, key=len, reverse=True)
        pattern = re.compile(r"(?<![\w.\-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w\-])")

        def replace(match: re.Match[str]) -> str:
            word = match.group()
            if word in modules:
                return modules[word]
            before = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
            module = (
                _MODULE_AFTER.match(text, match.end()) is not None
                or before.endswith("src/")
                or _MODULE_BEFORE.search(before) is not None
            )
            return self.new_package if module else self.new

        return pattern.sub(replace, text)

    def python(self, source: str, modules: dict[str, str]) -> str:
        """A Python file's words, its prose lines that grew wrapped; the result must parse."""
        renamed = self.text(source, modules)
        # A name used as an identifier would now be a hyphenated word (or a clash): refused.
        ast.parse(renamed)
        return _reflow(renamed, self.width)


def _apply(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    out, last = [], 0
    for start, end, replacement in sorted(edits):
        out.append(text[last:start])
        out.append(replacement)
        last = end
    out.append(text[last:])
    return "".join(out)


def _docstring_lines(source: str) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


_PROSE_INDENT = re.compile(r"[ \t]*(?:#+ ?)?")
# Lines that start a paragraph of their own: blank, list items, fields, directives, doctests,
# the docstring's closing quotes.
_OWN_PARAGRAPH = re.compile(r"$|[-*+] |:|\.\. |>>>|\d+\. |\"\"\"|'''")


def _reflow(source: str, width: int) -> str:
    """Comment and docstring lines longer than ``width`` wrapped at a space, the words pushed
    into the paragraph's next line."""
    docstrings = _docstring_lines(source)
    out: list[str] = []
    carry, carry_indent = "", ""
    for number, original in enumerate(source.split("\n"), 1):
        line = original
        prose = line.lstrip().startswith("#") or number in docstrings
        indent = match.group() if prose and (match := _PROSE_INDENT.match(line)) else ""
        if carry:
            if prose and indent == carry_indent and not _OWN_PARAGRAPH.match(line[len(indent) :]):
                line = f"{indent}{carry} {line[len(indent) :]}"
            else:
                out.append(carry_indent + carry)
            carry = ""
        cut = line.rfind(" ", len(indent) + 1, width + 1) if prose and len(line) > width else -1
        if cut > len(indent) and line[len(indent) : cut].strip():
            # A list item's next lines sit under its text.
            bullet = line[len(indent) : len(indent) + 2] in ("- ", "* ")
            carry_indent = indent + ("  " if bullet else "")
            carry = line[cut + 1 :].strip()
            line = line[:cut].rstrip()
        out.append(line)
    if carry:
        out.append(carry_indent + carry)
    return "\n".join(out)


# -- names ------------------------------------------------------------------------------------


def _name_rule() -> tuple[re.Pattern[str], int]:
    """The spec's own rule for a service name (``ServiceSpec.name``): pattern and length."""
    field = ServiceSpec.model_fields["name"]
    pattern = next(m.pattern for m in field.metadata if getattr(m, "pattern", None))
    length = next(m.max_length for m in field.metadata if getattr(m, "max_length", None))
    return re.compile(pattern), length


def _workspace_names(root: Path) -> dict[str, str]:
    """Distribution and import names of the workspace's members -> the member's folder."""
    manifest = tomllib.loads((root / "pyproject.toml").read_text())
    members = manifest.get("tool", {}).get("uv", {}).get("workspace", {}).get("members", [])
    names = {_normalize(manifest["project"]["name"]): "the workspace root"}
    for pattern in members:
        for folder in sorted(root.glob(pattern)):
            if not (folder / "pyproject.toml").is_file():
                continue
            where = f"the workspace member {folder.relative_to(root)}/"
            project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
            names[_normalize(project.get("name", folder.name))] = where
            for package in (folder / "src").glob("*/__init__.py"):
                names[_normalize(package.parent.name)] = where
    return names


def _installed_names() -> dict[str, str]:
    """Import names, distribution names and commands of the environment -> what has them."""
    names: dict[str, str] = {}
    for module, distributions in metadata.packages_distributions().items():
        names.setdefault(_normalize(module), f"the import name of {distributions[0]}")
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        names.setdefault(_normalize(name), f"the installed distribution {name}")
        for entry in distribution.entry_points.select(group="console_scripts"):
            names.setdefault(_normalize(entry.name), f"a command of {name}")
    return names


def check_name(name: str, root: Path) -> None:
    """Refuse a name that is not a DNS label (so also not an identifier) or is already taken."""
    pattern, length = _name_rule()
    if len(name) > length:
        raise CommandError(f"{name!r} is {len(name)} characters long: at most {length}")
    if not pattern.fullmatch(name):
        raise CommandError(
            f"{name!r} is not a valid service name: a DNS label of lower-case letters, digits "
            "and single hyphens, starting with a letter (its package replaces - with _)"
        )
    package = name.replace("-", "_")
    if keyword.iskeyword(package):
        raise CommandError(f"{name!r} is a Python keyword: its package could not be imported")
    if (root / "services" / name).exists():
        raise CommandError(f"services/{name} already exists")
    if name in RESERVED:
        raise CommandError(f"{name!r} is taken: {RESERVED[name]}")
    if package in sys.stdlib_module_names:
        raise CommandError(f"{name!r} would shadow the standard library's module {package}")
    taken = _installed_names() | _workspace_names(root)
    for normalized in (_normalize(name), _normalize(package)):
        if normalized in taken:
            raise CommandError(f"{name!r} is taken: it is {taken[normalized]}")


# -- the folder -------------------------------------------------------------------------------


def _copy(source: Path, target: Path, renamer: Renamer) -> None:
    """The example's files under ``target`` with renamed paths and contents."""
    staging = target.with_name(target.name + ".copy")
    shutil.copytree(source, staging, ignore=_NOT_COPIED)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    relatives = {p: PurePosixPath(p.relative_to(staging).as_posix()) for p in files}
    modules = {
        old.stem: new.stem
        for old, new in ((r, renamer.path(r)) for r in relatives.values())
        if old.suffix == ".py" and old.stem != new.stem
    }
    for path, relative in relatives.items():
        destination = target / renamer.path(relative)
        destination.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        try:
            text = data.decode()
        except UnicodeDecodeError:
            destination.write_bytes(data)
        else:
            try:
                renamed = (
                    renamer.python(text, modules)
                    if path.suffix == ".py"
                    else renamer.text(text, modules)
                )
            except SyntaxError as error:
                raise CommandError(
                    f"{relative} does not parse once renamed (an identifier named "
                    f"{renamer.old_package}?): {error}"
                ) from error
            destination.write_text(renamed)
        shutil.copymode(path, destination)
    shutil.rmtree(staging)


def _spec(folder: Path, renamer: Renamer, queues: set[str]) -> ServiceSpec:
    """The renamed spec, with a queue of its own and no default that names the example."""
    path = folder / "service.toml"
    text = path.read_text()
    spec = _load(path)
    if isinstance(spec.trigger, QueueTrigger):
        if renamer.new in queues or f"{renamer.new}-dlq" in queues:
            raise CommandError(f"{renamer.new!r} is taken: a queue of that name exists")
        # One line to change, and the spec read back says it was the trigger's.
        text, count = re.subn(r"(?m)^queue\s*=.*$", f"queue = {json.dumps(renamer.new)}", text)
        path.write_text(text)
        spec = _load(path)
        if count != 1 or getattr(spec.trigger, "queue", None) != renamer.new:
            raise CommandError("the example's service.toml has no single `queue = ...` line")
    leftover = re.compile(rf"(?<![\w.\-]){re.escape(renamer.old)}(?![\w\-])")
    fields = [
        key
        for key, value in spec.model_dump(mode="json").items()
        if leftover.search(json.dumps(value))
    ]
    if fields:
        raise CommandError(
            f"the new spec's {', '.join(fields)} still names {renamer.old!r} (a default in "
            "suite_contract.spec this command does not rename)"
        )
    return spec


def _load(path: Path) -> ServiceSpec:
    try:
        return load_spec(path)
    except (ValueError, ValidationError) as error:
        raise CommandError(f"the renamed spec is not valid: {error}") from error


def _check_folder(folder: Path, renamer: Renamer, spec: ServiceSpec) -> None:
    """What the image and the workspace rely on, and no import of the example left."""
    if spec.name != renamer.new:
        raise CommandError(f"the renamed spec is named {spec.name!r}, not {renamer.new!r}")
    project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
    if _normalize(project.get("name", "")) != _normalize(renamer.new):
        raise CommandError(f"the renamed pyproject.toml names {project.get('name')!r}")
    if renamer.new not in project.get("scripts", {}):
        # The Dockerfile links /app/.venv/bin/service to the console script named SERVICE.
        raise CommandError(f"the renamed pyproject.toml has no console script {renamer.new!r}")
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n.split(".")[0] == renamer.old_package for n in names):
                raise CommandError(
                    f"{path.relative_to(folder)} still imports {renamer.old_package} after renaming"
                )


# -- docker-compose.yml -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Compose:
    text: str
    document: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> _Compose:
        if not path.is_file():
            raise CommandError(f"no {path.name} in {path.parent}")
        text = path.read_text()
        try:
            return cls(text, yaml.safe_load(text))
        except yaml.YAMLError as error:
            raise CommandError(f"{path.name} is not valid YAML: {_one_line(error)}") from error

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.document.get("services") or {}
        return services

    def check_free(self, name: str) -> None:
        """Refuse a name compose already uses, as a service or in a variable it would get."""
        if name in self.services:
            raise CommandError(f"{name!r} is taken: {COMPOSE_FILE} has a service of that name")
        for suffix in ("IMAGE", "PORT"):
            variable = f"{_variable(name)}_{suffix}"
            if re.search(rf"\b{variable}\b", self.text):
                raise CommandError(f"{name!r} is taken: {COMPOSE_FILE} already uses ${variable}")

    def published_ports(self) -> set[int]:
        """Host ports published by default (``${VAR:-8000}:8000`` counts 8000)."""
        found = set()
        for service in self.services.values():
            for port in service.get("ports", []):
                match = _PORT_DEFAULT.search(str(port))
                if match:
                    found.add(int(match.group(1) or match.group(2)))
        return found

    def with_block(self, block: str, after: str) -> str:
        """The text with ``block`` inserted after the service ``after``'s block."""
        lines = self.text.splitlines(keepends=True)
        heading = f"  {after}:"
        starts = [i for i, line in enumerate(lines) if line.rstrip() == heading]
        if len(starts) != 1:
            raise CommandError(
                f"{COMPOSE_FILE}: no line {heading.strip()!r} to add a service after"
            )
        # The block: its deeper-indented lines; a comment at the services' indent leads into the
        # next one, and so do blank lines.
        end = starts[0] + 1
        while end < len(lines) and (not lines[end].strip() or lines[end].startswith("   ")):
            end += 1
        while not lines[end - 1].strip():
            end -= 1
        last = lines[end - 1] if lines[end - 1].endswith("\n") else lines[end - 1] + "\n"
        return "".join([*lines[: end - 1], last, "\n", block, *lines[end:]])


def _one_line(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"{error.problem} (line {error.problem_mark.line + 1})"
    return " ".join(str(error).split())


def _render(
    spec: ServiceSpec,
    example: dict[str, Any],
    old: str,
    host_port: int | None,
    example_lb: dict[str, Any],
) -> str:
    """The compose block of ``spec``, with the anchors the examples use (the parity test's
    figures: command, CPU, memory, grace period, port, health path, replicas, alias), and for
    an external service its load balancer, published on ``host_port``."""
    name = spec.name
    variable = _variable(name)
    image = re.fullmatch(r"\$\{\w+:-(?P<repository>.+)/[^/:]+:(?P<tag>[^}]+)\}", example["image"])
    if image is None:
        raise CommandError(f"{COMPOSE_FILE}: {old}'s image {example['image']!r} is not ${{VAR:-…}}")
    inherited: dict[str, Any] = example["environment"]
    environment = {"SERVICE_NAME": name}
    if spec.port is not None:
        environment |= {"PORT": str(spec.port), "HEALTH_PATH": str(spec.health_path)}
    wanted = dict(spec.config.environment)
    if spec.config.queues or isinstance(spec.trigger, QueueTrigger):
        if "QUEUE_URL" not in inherited:
            raise CommandError(f"{COMPOSE_FILE}: {old} has no QUEUE_URL to derive queue URLs")
        base = str(inherited["QUEUE_URL"]).rsplit("/", 1)[0]
        prefix = f"{inherited['APP_NAME']}-{inherited['APP_ENV']}"
        queues = dict(spec.config.queues)
        if isinstance(spec.trigger, QueueTrigger):
            queues.setdefault("QUEUE_URL", spec.trigger.queue)
        wanted |= {key: f"{base}/{prefix}-{queue}" for key, queue in queues.items()}
    environment |= {k: v for k, v in wanted.items() if inherited.get(k) != v}
    if isinstance(spec.trigger, ScheduleTrigger):
        # Its own firings queue (compose's init creates it), fed by its own clock.
        if "FIRINGS_QUEUE_URL" not in inherited:
            raise CommandError(f"{COMPOSE_FILE}: {old} has no FIRINGS_QUEUE_URL to derive from")
        names = EnvironmentNames(str(inherited["APP_NAME"]), str(inherited["APP_ENV"]))
        base = str(inherited["FIRINGS_QUEUE_URL"]).rsplit("/", 1)[0]
        environment |= {
            "FIRINGS_QUEUE_URL": f"{base}/{names.firings_queue(name)}",
            "LOCAL_CLOCK": "true",
        }
    # The spec's calls (copied from the example): the callee's addresses as the example has them.
    for callee in spec.calls:
        prefix = f"{_variable(callee)}__"
        environment |= {k: v for k, v in inherited.items() if k.startswith(prefix)}
    lines = [
        f"  {name}:",
        "    <<: *service",
        f"    image: ${{{variable}_IMAGE:-{image['repository']}/{name}:{image['tag']}}}",
        f"    build: {{<<: *build, args: {{<<: *build-args, SERVICE: {name}}}}}",
    ]
    if spec.command != [name]:
        lines.append(f"    command: {json.dumps(spec.command)}")
    # JSON's strings and lists are YAML's too, and never read as anything but themselves.
    pairs = ", ".join(f"{key}: {json.dumps(value)}" for key, value in environment.items())
    lines.append(f"    environment: {{<<: *app, {pairs}}}")
    if spec.task.desired_count > 1:
        # The spec's count, capped for a laptop's cores as the examples are (the parity test).
        replicas = min(spec.task.desired_count, LAPTOP_REPLICAS)
        lines.append(f'    deploy: {{replicas: "${{{variable}_REPLICAS:-{replicas}}}"}}')
    lines += [
        f"    cpus: {spec.task.cpu / 1024:g}",
        f"    mem_limit: {spec.task.memory}m",
        f"    stop_grace_period: {spec.task.stop_timeout}s",
    ]
    if spec.exposure is Exposure.INTERNAL:
        alias = f"{name}.{inherited['APP_ENV']}.{inherited['APP_NAME']}.internal"
        lines += [
            "    networks:",
            "      default:",
            "        # The Cloud Map name the other services use in AWS.",
            f"        aliases: [{alias}]",
        ]
    block = "\n".join(lines) + "\n"
    if host_port is not None:
        block += "\n" + _load_balancer_blocks(spec, example_lb, host_port)
    return block


def _load_balancer_blocks(spec: ServiceSpec, example_lb: dict[str, Any], host_port: int) -> str:
    """An external service's other colour and its load balancer, as the example's: the same
    proxy and config, set from this service's spec, published on ``host_port``."""
    name = spec.name
    lb = dict(example_lb)
    lb["depends_on"] = {name: {"condition": "service_healthy"}}
    lb["environment"] = spec.local_load_balancer()
    published = f"${{BIND_ADDRESS:-127.0.0.1}}:${{{_variable(name)}_PORT:-{host_port}}}:{spec.port}"
    # The first port is the service's; the rest (the runtime API on loopback) as the example's.
    lb["ports"] = [published, *example_lb.get("ports", [])[1:]]
    lb["stop_grace_period"] = f"{spec.task.stop_timeout}s"
    services = {
        f"{name}-green": {"extends": name, "profiles": ["deploy"], "deploy": {"replicas": 0}},
        f"{name}-lb": lb,
    }
    return "\n".join(
        "".join(
            f"  {line}\n"
            for line in yaml.safe_dump(
                {key: value}, sort_keys=False, default_flow_style=None, width=1000
            ).splitlines()
        )
        for key, value in services.items()
    )


def _variable(name: str) -> str:
    """The prefix of a service's compose variables: ``my-service`` -> ``MY_SERVICE``."""
    return name.upper().replace("-", "_")


def _compose_text(
    compose: _Compose, spec: ServiceSpec, example: str, existing: list[str]
) -> tuple[str, int | None]:
    """The new docker-compose.yml text, parsed back to check it adds exactly the service."""
    if example not in compose.services:
        raise CommandError(f"{COMPOSE_FILE} has no service {example!r} to follow")
    host_port = None
    example_lb: dict[str, Any] = {}
    if spec.exposure is Exposure.EXTERNAL and spec.port is not None:
        used = compose.published_ports()
        host_port = next(p for p in range(spec.port, 65536) if p not in used)
        example_lb = compose.services.get(f"{example}-lb") or next(
            (service for name, service in compose.services.items() if name.endswith("-lb")), {}
        )
        if not example_lb:
            raise CommandError(f"{COMPOSE_FILE} has no load balancer (NAME-lb) to follow")
    block = _render(spec, compose.services[example], example, host_port, example_lb)
    after = [name for name in compose.services if name in existing][-1]
    text = compose.with_block(block, after)
    try:
        services = yaml.safe_load(text)["services"]
    except yaml.YAMLError as error:
        raise CommandError(
            f"{COMPOSE_FILE} would not parse with the new block: {_one_line(error)}"
        ) from error
    added = services.pop(spec.name, None)
    if host_port is not None:
        services.pop(f"{spec.name}-green", None)
        services.pop(f"{spec.name}-lb", None)
    if services != compose.services or not added:
        raise CommandError(f"{COMPOSE_FILE}: the new block would change other services")
    # Only resolved anchors give these, and the example's hardening with them.
    for key in ("read_only", "tmpfs", "depends_on"):
        if added.get(key) != compose.services[example].get(key):
            raise CommandError(f"{COMPOSE_FILE}: the new block's {key} differs from {example}'s")
    if added["environment"].get("APP_NAME") is None or added["build"].get("context") is None:
        raise CommandError(f"{COMPOSE_FILE} lacks the anchors (&app, &build) the services use")
    return text, host_port


# -- the command ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewService:
    name: str
    package: str
    example: str
    folder: Path
    spec: ServiceSpec
    host_port: int | None
    locked: bool
    formatted: bool

    def summary(self) -> list[str]:
        spec = self.spec
        facts = [f"package {self.package}", f"command {' '.join(spec.command)}"]
        if spec.port is not None:
            facts.append(f"port {spec.port}")
        if isinstance(spec.trigger, QueueTrigger):
            facts.append(f"queue {spec.trigger.queue}")
        compose = f"added {self.name} to {COMPOSE_FILE}"
        if self.host_port is not None:
            compose += f", published on host port {self.host_port} (${_variable(self.name)}_PORT)"
        return [
            f"created services/{self.name}/ from {self.example}: {', '.join(facts)}",
            compose,
            "updated uv.lock" if self.locked else "uv.lock not updated: run `uv lock`",
            "sorted imports and formatted with ruff"
            if self.formatted
            else "ruff is not installed here: run `make fmt`",
            f"next: uv sync --all-packages && uv run pytest services/{self.name}",
        ]


def _uv() -> str | None:
    # `uv run` exports UV: the very uv that runs us.
    return os.environ.get("UV") or shutil.which("uv")


def _run(command: list[str], root: Path, what: str) -> None:
    # Make's UV_FROZEN (or UV_LOCKED) would forbid the very update asked for.
    environment = {k: v for k, v in os.environ.items() if k not in ("UV_FROZEN", "UV_LOCKED")}
    done = subprocess.run(  # noqa: S603 - uv or ruff, with our own arguments
        command, cwd=root, env=environment, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        output = done.stderr + done.stdout
        lines = [line for line in output.splitlines() if line.strip()] or ["(no output)"]
        raise CommandError(f"`{what}` failed, nothing was added: {lines[-1].strip()}")


def _tidy(folder: Path, root: Path) -> bool:
    """Imports sorted again (the package's name changed its place) and code lines that grew
    formatted, with the repository's ruff settings; False when ruff is not installed."""
    if importlib.util.find_spec("ruff") is None:
        return False
    # No cache: a .ruff_cache left in the repository would be the command writing elsewhere.
    ruff = [sys.executable, "-m", "ruff"]
    quiet = ("--quiet", "--no-cache")
    _run([*ruff, "check", "--fix", "--select", "I", *quiet, str(folder)], root, "ruff check")
    _run([*ruff, "format", *quiet, str(folder)], root, "ruff format")
    width = _line_length(root)
    split = False
    for path in folder.rglob("*.py"):
        source = path.read_text()
        if (shorter := _split_strings(source, width)) != source:
            path.write_text(shorter)
            split = True
    if split:  # ruff lays the two halves out
        _run([*ruff, "format", *quiet, str(folder)], root, "ruff format")
    return True


def _split_strings(source: str, width: int) -> str:
    """Plain one-line strings inside brackets that cross ``width``, cut at a space into two
    adjacent literals (what a longer name can do to a message)."""
    lines = io.StringIO(source).readlines()
    edits = []
    depth = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif (
            token.type == tokenize.STRING
            and depth > 0
            and token.start[0] == token.end[0]
            and token.end[1] > width
            and token.string[0] in "\"'"
            and not token.string.startswith(('"""', "'''"))
        ):
            quote, body = token.string[0], token.string[1:-1]
            cut = body.rfind(" ", 1, width - token.start[1] - 2)
            if cut > 0 and not body[:cut].endswith("\\"):
                row, column = token.start
                start = sum(len(line) for line in lines[: row - 1]) + column
                halves = f"{quote}{body[: cut + 1]}{quote} {quote}{body[cut + 1 :]}{quote}"
                edits.append((start, start + len(token.string), halves))
    return _apply(source, edits)


def _line_length(root: Path) -> int:
    manifest = tomllib.loads((root / "pyproject.toml").read_text())
    return int(manifest.get("tool", {}).get("ruff", {}).get("line-length", 88))


def _taken_queues(specs: dict[str, ServiceSpec]) -> set[str]:
    """Every queue a spec consumes or sends to, and their dead-letter queues."""
    queues: set[str] = set()
    for spec in specs.values():
        queues.update(spec.config.queues.values())
        if isinstance(spec.trigger, QueueTrigger):
            queues.add(spec.trigger.queue)
    return queues | {f"{queue}-dlq" for queue in queues}


def new_service(
    name: str,
    *,
    example: str,
    root: Path | None = None,
    lock: bool = True,
) -> NewService:
    """``services/<name>/`` from ``services/<example>/``, added to uv.lock and compose."""
    root = (root or find_repository_root()).resolve()
    specs = load_specs(root)
    if example not in specs:
        raise CommandError(f"no example {example!r} (services: {', '.join(specs)})")
    check_name(name, root)
    compose = _Compose.read(root / COMPOSE_FILE)
    compose.check_free(name)
    renamer = Renamer(example, name, width=_line_length(root))
    uv = _uv() if lock else None
    target = root / "services" / name
    lockfile = root / "uv.lock"
    saved_lock = lockfile.read_bytes() if lockfile.is_file() else None
    scratch = Path(tempfile.mkdtemp(prefix=".new-service-", dir=root))
    moved = False
    try:
        staged = scratch / name
        _copy(root / "services" / example, staged, renamer)
        spec = _spec(staged, renamer, _taken_queues(specs))
        _check_folder(staged, renamer, spec)
        text, host_port = _compose_text(compose, spec, example, list(specs))
        staged.rename(target)  # the same file system: atomic
        moved = True
        # In place: ruff tells the repository's own packages by their folders.
        formatted = _tidy(target, root)
        if uv is not None:
            _run([uv, "lock"], root, "uv lock")
        _replace(root / COMPOSE_FILE, text.encode())
    except BaseException:
        if moved:
            shutil.rmtree(target, ignore_errors=True)
            if saved_lock is None:
                lockfile.unlink(missing_ok=True)
            else:
                _replace(lockfile, saved_lock)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return NewService(
        name=name,
        package=renamer.new_package,
        example=example,
        folder=target,
        spec=spec,
        host_port=host_port,
        locked=uv is not None,
        formatted=formatted,
    )


def _replace(path: Path, data: bytes) -> None:
    """Write through a temporary file renamed over ``path``: readers see old or new, whole."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
