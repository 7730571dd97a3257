"""oidc-gateway: an OpenID Connect reverse-proxy gateway."""

__version__ = "0.1.0"
