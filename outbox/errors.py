"""The project's error tree.

Adapters translate Google's exceptions into these at their boundary, so that
services decide what to retry by class, never by parsing messages. tenacity
retries :class:`TransientError` only.
"""

from __future__ import annotations


class OutboxError(Exception):
    """Root of every error the project raises on purpose."""


class TransientError(OutboxError):
    """Worth retrying: the same call may succeed later."""


class PermanentError(OutboxError):
    """Retrying the same call cannot help."""


class ConfigError(PermanentError):
    """Configuration is missing or invalid (identifiers, paths, limits)."""


class InvalidRow(PermanentError):
    """A log row fails the table schema. ``field`` names the offending column."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"log row field {field!r}: {problem}")
        self.field = field
        self.problem = problem


class InvalidMessage(PermanentError):
    """A row cannot become a valid Pub/Sub message (too large, bad attribute)."""


class MarkRefused(TransientError):
    """BigQuery refused to flag rows as published, for now.

    Raised for rows still in the streaming buffer, concurrent-update
    serialisation failures and quota errors. The relay's journal keeps such
    rows from being published again; a later fold sets the flag.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"mark refused ({reason}): {detail}")
        self.reason = reason


class EmulatorUnavailable(OutboxError):
    """A local emulator could not be started; the message says what to install."""
