"""Translation of Google's BigQuery errors into the project's error tree.

Kept in one place so that every adapter agrees on what is worth a retry. The
DML refusals the relay expects (streaming buffer, concurrent update, quota)
become :class:`~outbox.errors.MarkRefused`, which is transient.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc

from outbox.errors import ConfigError, MarkRefused, OutboxError, PermanentError, TransientError

_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.GatewayTimeout,
    gexc.DeadlineExceeded,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.Unknown,
    gexc.RetryError,
)


def _reasons(exc: gexc.GoogleAPICallError) -> set[str]:
    found = set()
    for err in getattr(exc, "errors", None) or []:
        if isinstance(err, dict) and err.get("reason"):
            found.add(str(err["reason"]))
    if getattr(exc, "reason", None):
        found.add(str(exc.reason))
    return found


def translate(exc: Exception, doing: str, dml: bool = False) -> OutboxError:
    """Map ``exc`` raised while ``doing`` something to a project error.

    With ``dml=True`` the refusals a mutation can meet become
    :class:`MarkRefused`, so the relay can tell them from a broken query.
    """
    text = str(getattr(exc, "message", "") or exc)
    if dml:
        if "streaming buffer" in text:
            return MarkRefused("streaming_buffer", f"{doing}: {text}")
        if "Could not serialize access" in text or "concurrent update" in text:
            return MarkRefused("concurrent_update", f"{doing}: {text}")
        if "Too many DML statements outstanding" in text:
            return MarkRefused("quota", f"{doing}: {text}")
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = _reasons(exc)
        if reasons & {"quotaExceeded", "rateLimitExceeded", "jobRateLimitExceeded"}:
            if dml:
                return MarkRefused("quota", f"{doing}: {text}")
            return TransientError(f"{doing}: quota: {text}")
        if "backendError" in reasons or "internalError" in reasons:
            return TransientError(f"{doing}: {text}")
        if isinstance(exc, gexc.NotFound):
            return ConfigError(f"{doing}: not found ({text}); run `outbox init` to create tables")
    if isinstance(exc, (*_TRANSIENT, ConnectionError, TimeoutError)):
        return TransientError(f"{doing}: {text}")
    return PermanentError(f"{doing}: {text}")
