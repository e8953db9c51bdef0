"""Identity: the environment's Cognito user pool, a resource server and machine clients per
service with ``[auth]``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infra.checks import acknowledge_nag
from infra.config import EnvConfig
from infra.names import pascal
from suite_contract.spec import AuthSpec, ServiceSpec

__all__ = ["Auth", "Identity"]


@dataclass(frozen=True)
class Auth:
    """A service's OAuth 2.0 resource server in the environment's user pool, and its clients."""

    issuer: str
    """``https://cognito-idp.{region}.amazonaws.com/{poolId}``: the tokens' ``iss``."""
    scope_prefix: str
    """``{resourceServerIdentifier}/``: Cognito's prefix on the custom scopes."""
    clients: tuple[cognito.UserPoolClient, ...]

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    @property
    def client_ids(self) -> list[str]:
        return [client.user_pool_client_id for client in self.clients]


class Identity:
    """The user pool (only when a service has ``[auth]``); ``auth`` by service name.

    Machine callers only: each client gets tokens with the client-credentials grant from the
    pool's domain (``/oauth2/token``); nobody signs up or signs in.
    """

    def __init__(
        self, scope: Construct, *, config: EnvConfig, specs: Mapping[str, ServiceSpec]
    ) -> None:
        self.config = config
        served = {name: spec.auth for name, spec in specs.items() if spec.auth is not None}
        self.auth: dict[str, Auth] = {}
        if not served:
            return
        pool = cognito.UserPool(
            scope,
            "UserPool",
            user_pool_name=config.prefix,
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.NONE,
            password_policy=cognito.PasswordPolicy(
                min_length=16,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge_nag(
            pool,
            "AwsSolutions-COG8",
            "no user signs in to this pool: its callers are machine clients (client "
            "credentials), which the Plus plan's threat protection does not evaluate",
        )
        # A prefix domain for the token endpoint; the account keeps it unique in the region.
        pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"{config.prefix}-{config.account}"
            ),
        )
        # The tokens' iss (the pool's ProviderURL attribute lacks the scheme).
        issuer = f"https://cognito-idp.{config.region}.amazonaws.com/{pool.user_pool_id}"
        self.auth = {
            name: self._resource_server(pool, issuer, name, auth) for name, auth in served.items()
        }

    def _resource_server(
        self, pool: cognito.UserPool, issuer: str, service: str, auth: AuthSpec
    ) -> Auth:
        config = self.config
        identifier = f"https://{service}.{config.domain}"
        scopes = {
            name: cognito.ResourceServerScope(scope_name=name, scope_description=description)
            for name, description in auth.scopes.items()
        }
        server = pool.add_resource_server(
            f"{pascal(service)}Api",
            identifier=identifier,
            user_pool_resource_server_name=f"{config.prefix}-{service}",
            scopes=list(scopes.values()),
        )
        clients = tuple(
            pool.add_client(
                f"{pascal(service)}Client{pascal(client)}",
                user_pool_client_name=f"{config.prefix}-{service}-{client}",
                generate_secret=True,
                o_auth=cognito.OAuthSettings(
                    flows=cognito.OAuthFlows(client_credentials=True),
                    scopes=[
                        cognito.OAuthScope.resource_server(server, scopes[scope])
                        for scope in granted
                    ],
                ),
                auth_flows=cognito.AuthFlow(),
                prevent_user_existence_errors=True,
                enable_token_revocation=True,
                access_token_validity=Duration.hours(1),
            )
            for client, granted in auth.clients.items()
        )
        return Auth(issuer=issuer, scope_prefix=f"{identifier}/", clients=clients)
