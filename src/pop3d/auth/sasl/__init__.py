"""SASL mechanisms, one module each, behind the interface in `base`."""

from __future__ import annotations

from .base import Exchange
from .login import Login
from .oauthbearer import OAuthBearer
from .plain import Plain
from .scram import ScramSha256
from .xoauth2 import XOAuth2

MECHANISMS: dict[str, type[Exchange]] = {
    m.name: m for m in (Plain, Login, ScramSha256, OAuthBearer, XOAuth2)
}
