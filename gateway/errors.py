"""The GatewayError tree: every failure the gateway answers with, and how.

    GatewayError(status=500, code="server_error")
      ConfigError(problems)                     exit 2 in check-config, never an HTTP response
      WorkerError                               a worker process failed: exit 1 from run, never an HTTP response
      Unauthenticated(401, "unauthenticated")   + WWW-Authenticate: Bearer
        InvalidToken(401, "invalid_token")      bad signature/alg/iss/aud/exp/nonce
      Forbidden(403, "access_denied")           policy said no
      LoginError(400, "login_failed")           foreign state, nonce mismatch, OP error response
        LoginExpired(400, "login_expired")      unknown, expired or reused state
        LoginCancelled(400, "login_cancelled")  the OP answered access_denied (the user said no)
      InvalidRequest(400, "invalid_request")    a machine request we reject (bad logout_token); always JSON
      BadRequest(400, "bad_request")            a request the gateway will not pass on (dot segments, ...)
      NotFound(404, "not_found")                /oauth2/ paths that are not ours, request targets not a path
      ProviderError(502, "provider_error")      .error = OAuth code; compare codes, not text
      ProviderUnavailable(503, "provider_unavailable")  OP metadata not loaded / OP unreachable
      StoreUnavailable(503, "store_unavailable")
      PayloadTooLarge(413, "payload_too_large")  request body over max_body_size
      UpstreamError(502, "bad_gateway")
        UpstreamTimeout(504, "gateway_timeout")

`status` and `code` are fixed per class (and `html`: False for errors only machines receive, which
are answered in JSON whatever `Accept` says); `detail` is the only per-instance text and is a short,
fixed phrase chosen by the raiser: it never carries a foreign exception's text, a token or a code.
This module imports nothing from the gateway.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "GatewayError",
    "InvalidRequest",
    "InvalidToken",
    "LoginCancelled",
    "LoginError",
    "LoginExpired",
    "NotFound",
    "PayloadTooLarge",
    "ProviderError",
    "ProviderUnavailable",
    "StoreUnavailable",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
    "WorkerError",
]


class GatewayError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "server_error"
    default_detail: ClassVar[str] = "The gateway could not handle this request."
    html: ClassVar[bool] = True  # False: always rendered as JSON (a server-to-server protocol endpoint)

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class ConfigError(GatewayError):
    code = "config_error"
    default_detail = "invalid configuration"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))


class WorkerError(GatewayError):
    """With `workers` > 1: a worker exited unexpectedly or would not stop; the detail names it."""

    code = "worker_failed"
    default_detail = "a worker process failed"


class Unauthenticated(GatewayError):
    status = 401
    code = "unauthenticated"
    default_detail = "Authentication is required."


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    default_detail = "The token is not valid."


class Forbidden(GatewayError):
    status = 403
    code = "access_denied"
    default_detail = "You are not allowed to access this resource."


class LoginError(GatewayError):
    status = 400
    code = "login_failed"
    default_detail = "The login could not be completed."


class LoginExpired(LoginError):
    code = "login_expired"
    default_detail = "This login is unknown, expired or was already used. Please start again."


class LoginCancelled(LoginError):
    code = "login_cancelled"
    default_detail = "The sign-in was cancelled or access was denied at the identity provider."


class InvalidRequest(GatewayError):
    """An OAuth-style `invalid_request` (RFC 6749 §5.2) to a server-to-server caller, e.g. BCL §2.8."""

    status = 400
    code = "invalid_request"
    default_detail = "The request is not valid."
    html = False


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    default_detail = "The request is not valid."


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    default_detail = "There is nothing at this address."


class ProviderError(GatewayError):
    status = 502
    code = "provider_error"
    default_detail = "The identity provider returned an error."

    def __init__(self, detail: str | None = None, *, error: str = "server_error",
                 description: str | None = None) -> None:
        super().__init__(detail)
        self.error = error  # the OAuth 2.0 error code (RFC 6749 §5.2), for classification
        self.description = description


class ProviderUnavailable(GatewayError):
    status = 503
    code = "provider_unavailable"
    default_detail = "The identity provider is unavailable. Please try again shortly."


class StoreUnavailable(GatewayError):
    status = 503
    code = "store_unavailable"
    default_detail = "The session store is unavailable. Please try again shortly."


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"
    default_detail = "The request body is larger than this gateway accepts."


class UpstreamError(GatewayError):
    status = 502
    code = "bad_gateway"
    default_detail = "The upstream service is unavailable."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "gateway_timeout"
    default_detail = "The upstream service did not answer in time."
