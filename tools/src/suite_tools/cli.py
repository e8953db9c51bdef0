"""``suite``: the suite's delivery commands (argparse wiring; the work is in the modules)."""

# Each command imports its module when it runs, not at the top: together they pull in the Docker
# SDK, botocore's clients and the scheduler's runtime (0.7 s of a `suite` call's start), which
# `suite status` or `--help` never need.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from suite_tools.errors import CommandError
from suite_tools.specs import repository_root, select_specs

if TYPE_CHECKING:
    from suite_tools.deployed import Deployed

__all__ = ["main"]

DEFAULT_APP = "suite"

# What `suite deploy --local` replaces by default: the services with a fleet in compose (the
# scheduler is one task by design).
LOCAL_DEPLOYED = ("api", "worker")


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
    _app(parser, app)


def _app(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--app",
        default=os.environ.get("APP_NAME") or DEFAULT_APP,
        help=f"the app's name, {what} (default: $APP_NAME or %(default)s)",
    )


def _env(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        default=os.environ.get("APP_ENV") or "dev",
        help="the environment's name (default: $APP_ENV or %(default)s)",
    )


def _environment(parser: argparse.ArgumentParser) -> None:
    """--app and --env: the deployed environment (AWS profile and region: boto3's usual
    AWS_PROFILE, AWS_REGION)."""
    _app(parser, "resources are named {app}-{env}-...")
    _env(parser)


def _json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (see README)")


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
    from suite_tools import images

    built = images.build(
        args.services, app=args.app, build_args=dict(args.build_args), write=_progress
    )
    for reference in built.values():
        print(reference)
    return 0


def _run_push(args: argparse.Namespace) -> int:
    from suite_tools import images

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
    from suite_tools import release

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


def _following(parser: argparse.ArgumentParser, *, what: str, poll: float) -> None:
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help=f"give up following after this long ({what} carry on; default %(default)s)",
    )
    parser.add_argument(
        "--poll",
        type=_seconds,
        default=poll,
        metavar="SECONDS",
        help="seconds between status checks (default %(default)s)",
    )


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
    _env(parser)
    parser.add_argument(
        "--no-wait", dest="wait", action="store_false", help="start the deployments and return"
    )
    _following(parser, what="the deployments", poll=10.0)
    parser.add_argument(
        "--json", action="store_true", help="print the releases as JSON (see README)"
    )
    parser.set_defaults(run=_run_release)


def _run_deploy(args: argparse.Namespace) -> int:
    from suite_tools import fleet

    if not args.local:
        raise CommandError("only --local (the compose suite); AWS deploys are `suite release`")
    specs = select_specs(repository_root(), args.services or LOCAL_DEPLOYED)
    project = os.environ.get("COMPOSE_PROJECT_NAME", "ecs-suite")
    fleet.deploy(specs, project, build=not args.no_build, progress=_progress)
    return 0


def _add_deploy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "deploy",
        help="--local: replace the compose suite's api and worker as ECS deploys them",
        description="Builds the services' images (docker compose build) and replaces the "
        "running containers the way their spec's [deployment] says: blue/green behind the "
        "api's load balancer (the other colour started and health-checked, traffic shifted, "
        "the old colour drained for the deregistration delay, then stopped), rolling within "
        "min_healthy_percent and max_percent for the worker. Exit 1 with the reason when the "
        "new tasks never become healthy: they are removed and the old ones keep serving.",
    )
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"services/<SERVICE>/ (default: {' '.join(LOCAL_DEPLOYED)})",
    )
    parser.add_argument("--local", action="store_true", help="the compose suite (`make up`)")
    parser.add_argument(
        "--no-build", action="store_true", help="deploy the images the tags name now"
    )
    parser.set_defaults(run=_run_deploy)


def _run_new_service(args: argparse.Namespace) -> int:
    from suite_tools import scaffold

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


# -- day two -----------------------------------------------------------------------------


def _deployed(args: argparse.Namespace, services: Sequence[str]) -> Deployed:
    from suite_tools.deployed import Deployed

    return Deployed.open(services, app=args.app, env=args.env)


def _run_status(args: argparse.Namespace) -> int:
    from suite_tools import local, status

    if args.local:
        document = local.collect(_deployed(args, args.services).specs)
        lines = local.render(document)
    else:
        document = status.collect(_deployed(args, args.services))
        lines = status.render(document)
    _output(args, document, lines)
    # Exit 2, not 1: the command worked and found something unhealthy (1 is a failure to look).
    return 0 if document["healthy"] else 2


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="what the deployed services are doing; exit 2 when something is unhealthy",
        description="Per service: tasks desired/running/pending by capacity provider, "
        "deployments under way (ECS rollout state; CodeDeploy lifecycle and traffic), target "
        "health, alarms in ALARM, the queue's depths and oldest message, the scheduler's jobs "
        "(last run, outcome, next fire time) and the last service events. Exit 0 when "
        "healthy, 2 when something is unhealthy, 1 when the status could not be read.",
    )
    _targets(parser, default="all", app="resources are named {app}-{env}-...")
    _env(parser)
    parser.add_argument(
        "--local",
        action="store_true",
        help="the compose suite instead (docker compose ps, moto's queue, schedule_runs)",
    )
    _json(parser, "the status")
    parser.set_defaults(run=_run_status)


def _since(text: str) -> object:
    from suite_tools import logs

    try:
        return logs.parse_since(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_logs(args: argparse.Namespace) -> int:
    from suite_tools import logs

    query = logs.LogQuery(since=args.since, text=args.filter, trace=args.trace)
    deployed = _deployed(args, [args.service])
    events = (
        logs.compose_logs(args.service, query, follow=args.follow)
        if args.local
        else logs.stream(deployed, query, follow=args.follow, write=_progress)
    )
    logs.print_events(events, raw=args.json)
    return 0


def _add_logs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "logs",
        help="a service's logs (CloudWatch Logs), rendered for people",
        description="The service's log group /{app}/{env}/{service}: JSON lines shown as time, "
        "level, job id, trace id and message. --follow tails it (CloudWatch Logs Live Tail, "
        "or polling where Live Tail is not served).",
    )
    parser.add_argument("service", metavar="SERVICE")
    _environment(parser)
    parser.add_argument(
        "--since",
        type=_since,
        default="10m",  # argparse passes a text default through `type` when --since is absent
        metavar="WHEN",
        help="a duration ago (30s, 10m, 2h, 1d) or an ISO-8601 time (default 10m)",
    )
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    parser.add_argument("--filter", metavar="TEXT", help="only lines containing TEXT")
    parser.add_argument("--trace", metavar="ID", help="only lines of this trace id")
    parser.add_argument("--local", action="store_true", help="the compose container's output")
    parser.add_argument("--json", action="store_true", help="the lines as they were written")
    parser.set_defaults(run=_run_logs)


def _run_job(args: argparse.Namespace) -> int:
    from suite_tools import jobrun

    run = jobrun.run_job(
        _deployed(args, []),
        args.job,
        wait=args.wait,
        timeout=args.timeout,
        poll=args.poll,
        write=_progress,
    )
    exit_code = "-" if run.exit_code is None else run.exit_code
    _output(
        args,
        run.as_dict(),
        [f"{run.job} {run.message_id} {run.slot_text} {run.status} {exit_code}"],
    )
    if not args.wait:
        return 0
    # 0: succeeded, or the slot had run already; 1: the run failed, timed out or died.
    return run.exit_code if run.exit_code is not None else 1


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="run a scheduler job now, the way its schedule runs it",
        description="Send JOB's firing ({job, slot}) to the queue its EventBridge Scheduler "
        "schedule sends to, with the slot set to now: the scheduler service runs it as a "
        "scheduled run (slot lock, history, metrics). --wait follows the scheduler's logs for "
        "the run's outcome and exits 0 when it succeeded (or the slot had run already), else 1.",
    )
    parser.add_argument("job", metavar="JOB")
    _environment(parser)
    parser.add_argument("--wait", action="store_true", help="wait for the run's outcome")
    _following(parser, what="the run", poll=5.0)
    _json(parser, "the run")
    parser.set_defaults(run=_run_job)


def _run_exec(args: argparse.Namespace) -> int:
    from suite_tools import session

    command = list(args.remote_command)
    if command[:1] == ["--"]:
        command = command[1:]
    return session.exec_command(
        _deployed(args, [args.service]), args.service, task_id=args.task, command=command
    )


def _add_exec(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "exec",
        help="a shell (or a command) in a running task, through ECS Exec",
        description="ECS ExecuteCommand into the service's app container, the terminal carried "
        "by AWS's session-manager-plugin (as `aws ecs execute-command` does). Needs the infra "
        "to enable ECS Exec (tools/README.md).",
    )
    parser.add_argument("service", metavar="SERVICE")
    _environment(parser)
    parser.add_argument("--task", metavar="ID", help="this task (default: a running one)")
    parser.add_argument(
        "remote_command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="default /bin/sh"
    )
    parser.set_defaults(run=_run_exec)


def _run_rollback(args: argparse.Namespace) -> int:
    from suite_tools import rollback

    deployed = _deployed(args, [args.service])
    plan = rollback.plan(deployed)
    _progress(f"will {plan.describe()}")
    if not args.yes and not rollback.confirm("Roll back?"):
        raise CommandError("not rolled back")
    done = rollback.apply(deployed, plan)
    return _output(
        args,
        done.as_dict(),
        [f"{done.service} {done.action} {done.target or done.running} {done.deployment_id or '-'}"],
    )


def _add_rollback(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "rollback",
        help="back to the previous revision (or stop the deployment under way)",
        description="CodeDeploy services: stop the deployment under way with rollback, else "
        "deploy the task definition revision before the running one. Rolling services: update "
        "the service to that revision. Says what it will do and asks, unless --yes.",
    )
    parser.add_argument("service", metavar="SERVICE")
    _environment(parser)
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask")
    _json(parser, "what was done")
    parser.set_defaults(run=_run_rollback)


def _run_dead(args: argparse.Namespace) -> int:
    from suite_tools import deadletters

    deployed = _deployed(args, [])
    letters = deadletters.dead_letters(deployed)
    if args.redrive:
        done = deadletters.redrive(deployed, letters, args.redrive, write=_progress)
        lines = [
            f"moved {item.message_id} back -> {item.queue} (it names no job)" for item in done.moved
        ]
        if done.task is not None:
            outcome = "exit 0" if done.task.succeeded else f"exit {done.task.exit_code}"
            lines.append(
                f"{' '.join(done.task.command)}: {outcome} ({done.task.task}"
                f"{', ' + done.task.reason if done.task.reason else ''})"
            )
        code = _output(args, {"redriven": done.as_dict()}, lines)
        if done.task is not None and not done.task.succeeded:
            raise CommandError(
                f"redrive-dead ended with exit code {done.task.exit_code}: its log is in the "
                "scheduler's log group (suite logs scheduler)"
            )
        return code
    deadletters.release(deployed, letters)
    lines = []
    for dlq, items in letters.items():
        lines.append(f"{dlq}: {len(items)} dead")
        lines.extend(
            f"  {item.message_id}  job {item.job_id or '-'}  sent {item.sent}  "
            f"received {item.receives}x  {item.reason}"
            for item in items
        )
    return _output(
        args,
        {"deadLetterQueues": {dlq: [i.as_dict() for i in items] for dlq, items in letters.items()}},
        lines,
    )


def _add_jobs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("jobs", help="the jobs' dead-letter queues")
    jobs = parser.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    dead = jobs.add_parser(
        "dead",
        help="list the dead-letter queues' messages; --redrive puts chosen jobs back",
        description="Every message in the consumers' DLQs ({app}-{env}-{queue}-dlq) with its "
        "job id and why it died. --redrive puts the named jobs back (job ids, or message ids of "
        "messages that name a job) through the scheduler's `redrive-dead` in a one-off task of "
        "its service: attempts reset, a fresh message sent; a message that names no job goes "
        "back to its queue as it is. Dead jobs already reconciled from the DLQ are listed by the "
        "api (GET /jobs?status=dead with the admin scope).",
    )
    _environment(dead)
    dead.add_argument(
        "--redrive", nargs="+", metavar="ID", help="job ids or message ids to put back"
    )
    _json(dead, "the dead letters")
    dead.set_defaults(run=_run_dead)


def _run_cost(args: argparse.Namespace) -> int:
    from suite_tools import cost

    deployed = _deployed(args, [])
    prices = cost.load_prices(args.region, live=args.live, write=_progress)
    document = cost.estimate(deployed.specs, prices)
    return _output(args, document, cost.render(document))


def _add_cost(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "cost",
        help="the topology's monthly compute cost, and Fargate / Spot / EC2 compared",
        description="From the specs: task size and counts (scaling min, desired, max) over the "
        "capacity providers' base and weights, priced from the dated table in "
        "suite_tools/data/prices.json, or the AWS Price List API with --live.",
    )
    _environment(parser)
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="prices of this region (default: $AWS_REGION or %(default)s)",
    )
    parser.add_argument(
        "--live", action="store_true", help="prices from the AWS Price List API when it answers"
    )
    _json(parser, "the estimate")
    parser.set_defaults(run=_run_cost)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suite", description="The suite's delivery and day-two commands."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(commands)
    _add_push(commands)
    _add_release(commands)
    _add_new_service(commands)
    _add_deploy(commands)
    _add_status(commands)
    _add_logs(commands)
    _add_run(commands)
    _add_exec(commands)
    _add_rollback(commands)
    _add_jobs(commands)
    _add_cost(commands)
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
