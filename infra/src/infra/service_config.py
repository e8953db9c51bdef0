"""A service's configuration as its tasks see it: the container's environment and the service's
parameters (settings and flags) under its own Parameter Store prefix."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Stack
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import EnvConfig
from infra.names import pascal
from infra.platform import PlatformStack
from suite_contract.spec import Exposure, HttpTrigger, QueueTrigger, ServiceSpec

__all__ = [
    "OTLP_ENDPOINT",
    "OTLP_HTTP_PORT",
    "RDS_CA_BUNDLE",
    "ServiceProps",
    "app_environment",
    "service_parameters",
]


@dataclass(frozen=True)
class ServiceProps:
    """What each part of a service's stack is built from: the environment, the platform the
    service runs on, and its spec."""

    config: EnvConfig
    platform: PlatformStack
    spec: ServiceSpec


# Where the app sends its traces: the collector sidecar, on the task's loopback (awsvpc: the
# containers share it).
OTLP_HTTP_PORT = 4318
OTLP_ENDPOINT = f"http://127.0.0.1:{OTLP_HTTP_PORT}"
# Where the image keeps the RDS CA bundle (the Dockerfile downloads it): every connection to
# the database verifies the server's certificate and name against it.
RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"


def app_environment(scope: Construct, props: ServiceProps) -> dict[str, str]:
    """The app container's environment: who it is, where its collaborators are, the
    figures the platform sized for it; the spec's own ``[config] environment`` last."""
    config, platform, spec = props.config, props.platform, props.spec
    environment = {
        "APP_NAME": config.app,
        "APP_ENV": config.env,
        "SERVICE_NAME": spec.name,
        "AWS_REGION": config.region,
        "TRACING_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT,
        "OTEL_SERVICE_NAME": spec.name,
        # The one stop figure (the container's stopTimeout below): a service sizes its
        # shutdown steps from it instead of keeping a copy.
        "STOP_TIMEOUT": str(spec.task.stop_timeout),
    }
    # Secrets by id, never by value: the services fetch them through servicekit's cache,
    # which is how a rotation reaches running tasks without a redeploy.
    environment |= {
        variable: platform.secret(spec.name, name).secret_arn
        for variable, name in spec.config.secrets.items()
    }
    environment |= {
        variable: platform.queues[queue].queue_url for variable, queue in spec.config.queues.items()
    }
    if isinstance(spec.trigger, QueueTrigger):
        environment.setdefault("QUEUE_URL", platform.queues[spec.trigger.queue].queue_url)
    if spec.uses_database:
        environment |= {
            "DATABASE__SSLMODE": "verify-full",
            "DATABASE__SSLROOTCERT": RDS_CA_BUNDLE,
        }
        if spec.database is not None:
            # The figure the platform's connection budget counted.
            environment["DATABASE__POOL_SIZE"] = str(spec.database.pool_size)
    if isinstance(spec.trigger, HttpTrigger):
        environment |= {
            # gunicorn's worker count, the processes the connection budget counted.
            "WEB_CONCURRENCY": str(spec.task.processes),
            # Only the load balancers (in the VPC) may set X-Forwarded-For and -Proto.
            "FORWARDED_ALLOW_IPS": platform.vpc.vpc_cidr_block,
        }
    if spec.exposure is Exposure.EXTERNAL:
        # The WAF rule's figure: one limit, checked at the edge and in the service.
        environment["MAX_BODY_BYTES"] = str(spec.edge.max_body_bytes)
    for callee in spec.calls:
        # Every task of the callee (Cloud Map's multivalue answer) and any one of them
        # (the internal load balancer's listener, on the callee's port).
        variable = callee.upper().replace("-", "_")
        lb = platform.load_balancers[callee]
        environment |= {
            f"{variable}__DISCOVERY_NAME": f"{callee}.{platform.namespace.namespace_name}",
            f"{variable}__ALB_URL": f"http://{lb.alb.load_balancer_dns_name}:{lb.port}",
        }
    auth = platform.auth.get(spec.name)
    if auth is not None:
        environment |= {
            "AUTH__ISSUER": auth.issuer,
            "AUTH__AUDIENCES": Stack.of(scope).to_json_string(auth.client_ids),
            "AUTH__SCOPE_PREFIX": auth.scope_prefix,
        }
    return environment | spec.config.environment


def service_parameters(scope: Construct, *, config: EnvConfig, spec: ServiceSpec) -> None:
    """The service's settings and flags' initial values, under its own prefix."""
    path = config.parameter_path(spec.name)
    values = dict(spec.config.settings)
    values |= {
        f"flags/{flag}": "true" if value else "false" for flag, value in spec.config.flags.items()
    }
    for key, value in sorted(values.items()):
        ssm.StringParameter(
            scope,
            f"Param{pascal(key.replace('/', '-'))}",
            parameter_name=f"{path}/{key}",
            string_value=value,
            description=f"{spec.name}: {key} (a deploy resets a hand-made change)",
        )
