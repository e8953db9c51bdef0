"""``suite``: the suite's delivery commands (argparse wiring; the work is in the modules)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence

from suite_tools import images, release, scaffold
from suite_tools.errors import CommandError

__all__ = ["main"]


def _progress(line: str) -> None:
    # Progress goes to stderr so stdout carries only the result (references or JSON).
    print(line, file=sys.stderr, flush=True)


def _build_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _output(args: argparse.Namespace, document: object, lines: Iterable[str]) -> int:
    """The result on stdout: ``document`` as JSON with ``--json``, else ``lines``."""
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        for line in lines:
            print(line)
    return 0


def _targets(parser: argparse.ArgumentParser, *, default: str, app: str) -> None:
    """The services acted on (``default`` when none is named) and the app they belong to."""
    parser.add_argument(
        "services", nargs="*", metavar="SERVICE", help=f"services/<SERVICE>/ (default: {default})"
    )
    parser.add_argument(
        "--app",
        default=os.environ.get("APP_NAME") or images.DEFAULT_APP,
        help=f"the app's name, {app} (default: $APP_NAME or %(default)s)",
    )


def _image_options(parser: argparse.ArgumentParser) -> None:
    _targets(parser, default="all", app="the repositories' prefix {app}/{service}")
    parser.add_argument(
        "--build-arg",
        dest="build_args",
        type=_build_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Dockerfile build argument, e.g. PYTHON_IMAGE=... (repeatable)",
    )


def _run_build(args: argparse.Namespace) -> int:
    built = images.build(
        args.services, app=args.app, build_args=dict(args.build_args), write=_progress
    )
    for reference in built.values():
        print(reference)
    return 0


def _run_push(args: argparse.Namespace) -> int:
    pushed = images.push(
        args.services,
        app=args.app,
        release=args.tag,
        registry=args.registry,
        build_images=args.build,
        build_args=dict(args.build_args),
        write=_progress,
    )
    return _output(args, images.document(pushed), (image.reference for image in pushed))


def _add_build(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "build",
        help="build the services' images locally",
        description="Build {app}/{service}:{commit} with the root Dockerfile (BuildKit); a "
        "tree with uncommitted changes in the build context gets {commit}-dirty.",
    )
    _image_options(parser)
    parser.set_defaults(run=_run_build)


def _add_push(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "push",
        help="build and push the services' images to ECR, print their digests",
        description="Build the images, tag them with the full commit SHA (and --tag), create "
        "missing ECR repositories (scan on push, immutable tags, lifecycle policy), push, and "
        "print registry/{app}/{service}@sha256:... per image. Refuses a tree whose build "
        "context has uncommitted changes.",
    )
    _image_options(parser)
    parser.add_argument("--tag", metavar="RELEASE", help="a release tag besides the commit SHA")
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="push here instead of ECR's endpoint (credentials still come from ECR)",
    )
    parser.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="push the images `suite build` left instead of building",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the pushed images as JSON (see README)"
    )
    parser.set_defaults(run=_run_push)


def _run_release(args: argparse.Namespace) -> int:
    released = release.release(
        args.services,
        app=args.app,
        env=args.env,
        wait=args.wait,
        timeout=args.timeout,
        poll=args.poll,
        write=_progress,
    )
    return _output(
        args,
        release.document(released),
        (
            f"{item.service} {item.task_definition} {item.deployment_id or '-'} {item.status}"
            for item in released
        ),
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_release(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "release",
        help="deploy the blue/green services' new revisions through CodeDeploy",
        description="After `cdk deploy`, start the CodeDeploy deployment of each service whose "
        'spec says controller = "codedeploy": its task definition family\'s latest revision, '
        "in an AppSpec with the service's container, port, capacity and network. Follows the "
        "deployments until they succeed; a failed or stopped one (CodeDeploy rolls it back) "
        "exits 1. A service already on that revision is left alone; a deployment already under "
        "way for it is followed.",
    )
    _targets(
        parser,
        default="every service deployed by CodeDeploy",
        app="the groups' prefix {app}-{env}-{service}",
    )
    parser.add_argument(
        "--env",
        default=os.environ.get("APP_ENV") or "dev",
        help="the environment's name (default: $APP_ENV or %(default)s)",
    )
    parser.add_argument(
        "--no-wait", dest="wait", action="store_false", help="start the deployments and return"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="give up following after this long (the deployments carry on; default %(default)s)",
    )
    parser.add_argument(
        "--poll",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds between status checks (default %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the releases as JSON (see README)"
    )
    parser.set_defaults(run=_run_release)


def _run_new_service(args: argparse.Namespace) -> int:
    created = scaffold.new_service(args.name, example=args.example, lock=args.lock)
    for line in created.summary():
        print(line)
    return 0


def _add_new_service(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "new-service",
        help="create services/NAME/ from one of the example services",
        description="Copy services/EXAMPLE/ to services/NAME/ with its names rewritten (package, "
        "distribution, console script, spec, tests; a queue of its own for a consumer), run "
        "`uv lock`, and add a block mirroring the new spec to docker-compose.yml. The infra "
        "builds it from its spec. A bad or taken name is refused and nothing is written.",
    )
    parser.add_argument("name", metavar="NAME", help="a DNS label, e.g. billing-api")
    parser.add_argument(
        "--from",
        dest="example",
        required=True,
        metavar="EXAMPLE",
        help="the service to start from: api, worker or scheduler (any folder of services/)",
    )
    parser.add_argument(
        "--no-lock", dest="lock", action="store_false", help="leave uv.lock alone (run `uv lock`)"
    )
    parser.set_defaults(run=_run_new_service)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suite", description="The suite's delivery commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(commands)
    _add_push(commands)
    _add_release(commands)
    _add_new_service(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CommandError as error:
        print(f"suite {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
