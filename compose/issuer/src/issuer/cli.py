"""``issuer``: serve the local issuer; ``issuer token``: a token from the running one.

``issuer`` reads ``ISSUER_URL`` (the exact ``iss``: the issuer as the API reaches it, e.g.
``http://issuer:9000``), ``PORT`` (9000), ``ISSUER_CLIENT_ID``, ``ISSUER_CLIENT_SECRET`` and
``ISSUER_SCOPES`` (space-separated: the client's scopes). ``issuer token --principal alice
--scopes "jobs:read jobs:write"`` asks the issuer serving in the same container (``make token``
runs it with ``docker compose exec``) and prints the access token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request

import uvicorn

from issuer.app import Issuer, IssuerConfig

__all__ = ["main"]

DEFAULT_PORT = 9000


def _config() -> IssuerConfig:
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    defaults = IssuerConfig(url="")
    return IssuerConfig(
        url=os.environ.get("ISSUER_URL", f"http://127.0.0.1:{port}").rstrip("/"),
        client_id=os.environ.get("ISSUER_CLIENT_ID", defaults.client_id),
        client_secret=os.environ.get("ISSUER_CLIENT_SECRET", defaults.client_secret),
        scopes=tuple(os.environ.get("ISSUER_SCOPES", " ".join(defaults.scopes)).split()),
    )


def _serve() -> int:
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    # All interfaces: the API's container reaches it by its compose name. Never deployed.
    uvicorn.run(Issuer(_config()).app(), host="0.0.0.0", port=port, log_level="warning")  # noqa: S104
    return 0


def _token(principal: str, scopes: list[str]) -> int:
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/dev/token",
        data=json.dumps({"principal": principal, "scopes": scopes}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback, fixed
        print(json.load(response)["access_token"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="issuer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    token = commands.add_parser("token", help="print a token for PRINCIPAL from the running issuer")
    token.add_argument("--principal", required=True, help="the token's sub")
    token.add_argument(
        "--scopes", default="jobs:read jobs:write", help='space-separated, e.g. "jobs:read"'
    )
    args = parser.parse_args(argv)
    if args.command == "token":
        return _token(args.principal, args.scopes.split())
    return _serve()


if __name__ == "__main__":
    sys.exit(main())
