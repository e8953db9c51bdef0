"""The local suite's token issuer, a stand-in for Amazon Cognito (see :mod:`issuer.app`)."""

from issuer.app import Issuer, IssuerConfig
from issuer.server import serving

__all__ = ["Issuer", "IssuerConfig", "serving"]
