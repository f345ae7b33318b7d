"""Verify the OIDC token Google attaches to a push or a scheduled trigger.

Shared by the relay (Cloud Scheduler's ``POST /relay/run``, configured by
``OUTBOX_RELAY_AUDIENCE``/``OUTBOX_RELAY_INVOKER``) and the processors service
(Pub/Sub push to ``POST /process``, ``PROCESSOR_PUSH_AUDIENCE``/
``PROCESSOR_PUSH_INVOKER``). Why in the app and not only in Cloud Run's IAM
check: a service may be deployed with ``--allow-unauthenticated`` (or run
somewhere without IAM), and a public endpoint would let anyone make it run
BigQuery jobs at will. With both variables set, only a token Google signed for
that audience and that service account gets through.

What is checked (DESIGN-NOTES §2): the signature against Google's published
certificates, ``exp``/``iat``, ``aud``, ``iss``, ``email`` and
``email_verified``. The signature, times and audience are checked by
``google.oauth2.id_token.verify_token``; the rest here. Error reasons are
fixed strings: google-auth's messages can quote the token itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.auth import exceptions as auth_exc
from google.auth import transport
from google.oauth2 import id_token

from outbox.errors import ConfigError

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
RELAY_AUDIENCE_VAR = "OUTBOX_RELAY_AUDIENCE"
RELAY_INVOKER_VAR = "OUTBOX_RELAY_INVOKER"
CERTS_TTL_SECONDS = 300.0
"""Google publishes a new signing key well before it signs with it, so
certificates a few minutes old still verify every current token."""


class AuthFailure(Exception):
    """The request is not authorised. ``status`` is 401, 403 or 503."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class CachingRequest:
    """A ``google.auth.transport.Request`` that caches successful GETs.

    Without it every trigger would fetch Google's certificates first.
    """

    def __init__(self, inner: transport.Request, ttl: float = CERTS_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.ttl = ttl
        self.monotonic = monotonic
        self._cache: dict[str, tuple[float, transport.Response]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", body: Any = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> transport.Response:
        if method != "GET" or body is not None:
            return self.inner(url, method=method, body=body, headers=headers, timeout=timeout,
                              **kwargs)
        now = self.monotonic()
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and hit[0] > now:
                return hit[1]
        response = self.inner(url, method="GET", headers=headers, timeout=timeout or 10,
                              **kwargs)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (now + self.ttl, response)
        return response


def _default_request() -> transport.Request:
    from google.auth.transport.requests import Request

    return CachingRequest(Request())


def _reason(exc: Exception) -> str:
    """A fixed, token-free reason for a failure google-auth reported."""
    text = str(exc)
    if text.startswith("Token expired"):
        return "token expired"
    if text.startswith("Token used too early"):
        return "token not yet valid"
    if "wrong audience" in text:
        return "wrong audience"
    return "invalid token (signature or format)"


@dataclass
class OidcVerifier:
    """Checks ``Authorization: Bearer <jwt>`` for one audience and one invoker."""

    audience: str
    email: str
    certs_url: str = GOOGLE_CERTS_URL
    request: transport.Request = field(default_factory=_default_request)
    clock_skew_seconds: int = 10

    def __post_init__(self) -> None:
        if not self.audience or not self.email:
            raise ConfigError("OIDC verification needs both an audience and an invoker email")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 audience_var: str = RELAY_AUDIENCE_VAR,
                 invoker_var: str = RELAY_INVOKER_VAR) -> OidcVerifier | None:
        """The verifier the environment asks for; None when verification is off.

        The variable names default to the relay's. Setting only one of the two
        is a mistake that would leave the service open or closed by accident,
        so it is refused.
        """
        env = os.environ if env is None else env
        audience = env.get(audience_var, "").strip()
        invoker = env.get(invoker_var, "").strip()
        if not audience and not invoker:
            return None
        if not audience or not invoker:
            raise ConfigError(f"set both {audience_var} and {invoker_var}, or neither")
        return cls(audience, invoker)

    def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims, or :class:`AuthFailure` saying why not."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthFailure(401, "missing bearer token")
        try:
            claims = id_token.verify_token(
                token, self.request, audience=self.audience, certs_url=self.certs_url,
                clock_skew_in_seconds=self.clock_skew_seconds)
        except auth_exc.TransportError:
            raise AuthFailure(503, "could not fetch the token signing certificates") from None
        except (ValueError, auth_exc.GoogleAuthError) as exc:
            raise AuthFailure(403, _reason(exc)) from None
        if claims.get("iss") not in ISSUERS:
            raise AuthFailure(403, "wrong issuer")
        if claims.get("email") != self.email:
            raise AuthFailure(403, "wrong email")
        if claims.get("email_verified") is not True:
            raise AuthFailure(403, "email not verified")
        return dict(claims)
