"""The relay's OIDC check of Cloud Scheduler's token.

The verifier lives in :mod:`outbox.oidc`, shared with the processors service
(Pub/Sub push); this module keeps the relay's import path. The relay reads
``OUTBOX_RELAY_AUDIENCE`` and ``OUTBOX_RELAY_INVOKER`` (the defaults of
:meth:`OidcVerifier.from_env`).
"""

from outbox.oidc import (
    GOOGLE_CERTS_URL,
    ISSUERS,
    AuthFailure,
    CachingRequest,
    OidcVerifier,
)

__all__ = ["GOOGLE_CERTS_URL", "ISSUERS", "AuthFailure", "CachingRequest", "OidcVerifier"]
