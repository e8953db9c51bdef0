"""The delivery stack: the roles the GitHub Actions workflow assumes, through OIDC only.

Deployed once per account and region (like the registry), and only when ``githubRepository``
names the repository whose workflow may use it: a default would trust somebody else's. Three
roles, each trusting GitHub's OIDC tokens of that repository's delivery workflow
(``job_workflow_ref``: the file at refs/heads/main) and nothing else:

- ``{app}-github-registry``: the ``registry`` job on main. Deploys the ``{app}-registry`` stack
  and no other: its CloudFormation actions name that stack alone, and it passes the CDK
  bootstrap's CloudFormation execution role to CloudFormation, so that role only ever acts on
  that stack for it. It does not assume the bootstrap deploy role (which could deploy any
  stack): the CDK CLI says it could not and proceeds with the job's own credentials.
- ``{app}-github-push``: the ``push`` job on main. Pushes to the ``{app}/*`` repositories; it
  cannot create one (the registry stack does, before the push).
- ``{app}-github-deploy``: the ``deploy`` job in a GitHub environment named like a CDK
  environment (``envName``, or ``deployEnvironments``), from main's workflow only. It may assume
  the CDK bootstrap roles, which do the deploying, and start and follow the CodeDeploy
  deployments of the ``{app}-*`` services (``suite release``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import ArnFormat, CfnOutput, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.checks import acknowledge_wildcard

__all__ = ["GITHUB_ISSUER", "WORKFLOW", "DeliveryStack"]

GITHUB_ISSUER = "token.actions.githubusercontent.com"
# The one workflow whose jobs may assume the roles, as GitHub names it in job_workflow_ref.
WORKFLOW = ".github/workflows/delivery.yml"

# What `cdk deploy` does to one stack with its own credentials (the bootstrap deploy role's
# CloudFormation part): change sets, and reading the stack, its events and template.
_STACK_DEPLOY_ACTIONS = [
    "cloudformation:CreateChangeSet",
    "cloudformation:DeleteChangeSet",
    "cloudformation:DescribeChangeSet",
    "cloudformation:DescribeStackEvents",
    "cloudformation:DescribeStackResources",
    "cloudformation:DescribeStacks",
    "cloudformation:ExecuteChangeSet",
    "cloudformation:GetTemplate",
    "cloudformation:ListChangeSets",
]

_PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeRepositories",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
]


class DeliveryStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        app: str,
        repository: str,
        environments: Sequence[str],
        oidc_provider_arn: str | None = None,
        cdk_qualifier: str = "hnb659fds",
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        # One provider per issuer and account: reuse the account's when it has one already.
        provider: iam.IOidcProvider = (
            iam.OidcProviderNative.from_oidc_provider_arn(self, "GitHub", oidc_provider_arn)
            if oidc_provider_arn
            else iam.OidcProviderNative(
                self,
                "GitHub",
                url=f"https://{GITHUB_ISSUER}",
                client_ids=["sts.amazonaws.com"],
            )
        )
        main = f"repo:{repository}:ref:refs/heads/main"
        workflow = f"{repository}/{WORKFLOW}@refs/heads/main"

        registry = self._role(
            provider, f"{app}-github-registry", [main], workflow, "deploy the registry stack"
        )
        # The stack's name as the app names it (infra.app): `{app}-registry`.
        stack = self.format_arn(
            service="cloudformation", resource="stack", resource_name=f"{app}-registry/*"
        )
        _grant(
            registry,
            _STACK_DEPLOY_ACTIONS,
            stack,
            "the registry stack {app}-registry, any of its stack ids",
        )
        registry.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self._bootstrap_role(cdk_qualifier, "cfn-exec-role")],
                conditions={
                    "StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}
                },
            )
        )
        registry.add_to_policy(
            iam.PolicyStatement(
                # The template goes to the bootstrap bucket through the asset publishing role.
                actions=["sts:AssumeRole"],
                resources=[self._bootstrap_role(cdk_qualifier, "file-publishing-role")],
            )
        )
        _grant(
            registry,
            ["s3:GetObject"],
            self.format_arn(
                service="s3",
                region="",
                account="",
                resource=f"cdk-{cdk_qualifier}-assets-{self.account}-{self.region}",
                resource_name="*",
            ),
            "read-only: the CDK bootstrap bucket, where the CLI uploads the template that "
            "CloudFormation then reads with the caller's credentials",
        )
        registry.add_to_policy(
            iam.PolicyStatement(
                # The CLI checks the bootstrap version before it deploys.
                actions=["ssm:GetParameter"],
                resources=[
                    self.format_arn(
                        service="ssm",
                        resource="parameter",
                        resource_name=f"cdk-bootstrap/{cdk_qualifier}/version",
                    )
                ],
            )
        )

        push = self._role(provider, f"{app}-github-push", [main], workflow, "push images to ECR")
        _grant(
            push,
            ["ecr:GetAuthorizationToken"],
            "*",
            "ecr:GetAuthorizationToken supports no resource-level permission",
        )
        _grant(
            push,
            _PUSH_ACTIONS,
            self.format_arn(service="ecr", resource="repository", resource_name=f"{app}/*"),
            "every service's repository {app}/{service}; the registry stack adds a new one",
        )

        deploy = self._role(
            provider,
            f"{app}-github-deploy",
            [f"repo:{repository}:environment:{name}" for name in environments],
            workflow,
            "deploy the stacks (through the CDK bootstrap roles) and release through CodeDeploy",
        )
        _grant(
            deploy,
            ["sts:AssumeRole"],
            self._bootstrap_role(cdk_qualifier, "*"),
            "the CDK bootstrap roles (deploy, lookup, asset publishing) of this account and region",
        )
        _grant(
            deploy,
            [
                "codedeploy:CreateDeployment",
                "codedeploy:GetDeployment",
                "codedeploy:GetDeploymentGroup",
                "codedeploy:ListDeployments",
            ],
            self._codedeploy("deploymentgroup", f"{app}-*/{app}-*"),
            "the deployment groups {app}-{env}-{service} of the app's CodeDeploy services",
        )
        _grant(
            deploy,
            ["codedeploy:GetApplicationRevision", "codedeploy:RegisterApplicationRevision"],
            self._codedeploy("application", f"{app}-*"),
            "the applications {app}-{env}-{service} of the app's CodeDeploy services",
        )
        _grant(
            deploy,
            ["codedeploy:GetDeploymentConfig"],
            self._codedeploy("deploymentconfig", "*"),
            "read-only: a deployment group's configuration may be any predefined one",
        )
        _grant(
            deploy,
            ["ecs:DescribeServices"],
            self.format_arn(service="ecs", resource="service", resource_name=f"{app}-*/*"),
            "read-only: the services of the app's clusters {app}-{env}",
        )
        _grant(
            deploy,
            ["ecs:DescribeTaskDefinition"],
            "*",
            "ecs:DescribeTaskDefinition supports no resource-level permission",
        )
        CfnOutput(
            self,
            "RegistryRoleArn",
            value=registry.role_arn,
            description="vars.AWS_REGISTRY_ROLE_ARN",
        )
        CfnOutput(self, "PushRoleArn", value=push.role_arn, description="vars.AWS_PUSH_ROLE_ARN")
        CfnOutput(
            self, "DeployRoleArn", value=deploy.role_arn, description="vars.AWS_DEPLOY_ROLE_ARN"
        )

    def _codedeploy(self, resource: str, name: str) -> str:
        return self.format_arn(
            service="codedeploy",
            resource=resource,
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _bootstrap_role(self, qualifier: str, kind: str) -> str:
        """A CDK bootstrap role of this account and region (``kind``: deploy-role, ...)."""
        name = f"cdk-{qualifier}-{kind}-{self.account}-{self.region}"
        return self.format_arn(service="iam", region="", resource="role", resource_name=name)

    def _role(
        self,
        provider: iam.IOidcProvider,
        name: str,
        subjects: Sequence[str],
        workflow: str,
        purpose: str,
    ) -> iam.Role:
        return iam.Role(
            self,
            name.title().replace("-", ""),
            role_name=name,
            description=f"GitHub Actions: {purpose}",
            assumed_by=iam.OpenIdConnectPrincipal(
                provider,
                # Exact subjects (a list is "any of"), no wildcard: no other branch, tag, pull
                # request or environment of the repository gets the role. An environment's
                # subject names no branch, so the workflow is pinned as well: the delivery
                # workflow's file as it is on main, not a copy on a branch or a new workflow
                # that names the same environment.
                conditions={
                    "StringEquals": {
                        f"{GITHUB_ISSUER}:aud": "sts.amazonaws.com",
                        f"{GITHUB_ISSUER}:sub": list(subjects),
                        f"{GITHUB_ISSUER}:job_workflow_ref": workflow,
                    }
                },
            ),
        )


def _grant(role: iam.Role, actions: Sequence[str], resource: str, reason: str) -> None:
    """One statement; its wildcard resource acknowledged for cdk-nag with ``reason``."""
    role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=[resource]))
    acknowledge_wildcard(role, resource, reason)
