"""Scraper options as data: the schema each scraper declares, its validation, and secrets.

Why a schema instead of ``**kwargs``: a request with a typo (``data=`` for
``date=``) or a bad date must be refused with a 400 *before* a run starts, so
that no log row (and no event) exists for work that never happened. The same
schema is what ``GET /scrapers`` lists.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from outbox.errors import PermanentError
from outbox.schema import SCRAPER_SOURCES

OptionKind = Literal["date", "text", "source", "secret"]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SECRET_WORDS = ("apikey", "token", "password", "passwd", "secret", "authorization",
                 "credential", "privatekey")


class InvalidOptions(PermanentError):
    """The request cannot start a run: unknown scraper, unknown or bad options.

    The message is safe to return to the caller: it names keys, never a
    secret's value.
    """


@dataclass(frozen=True)
class Option:
    name: str
    kind: OptionKind = "text"
    required: bool = False
    default: str | None = None
    help: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind, "required": self.required,
                "default": self.default, "help": self.help}

    def parse(self, value: Any) -> str:
        """The option's value as a string, or :class:`InvalidOptions` naming it."""
        if not isinstance(value, str):
            raise InvalidOptions(f"option {self.name!r} must be a string, "
                                 f"got {type(value).__name__}")
        text: str = value if self.kind == "secret" else value.strip()
        if not text:
            raise InvalidOptions(f"option {self.name!r} is empty")
        if self.kind == "date":
            try:
                if not _DATE.match(text):
                    raise ValueError
                dt.date.fromisoformat(text)
            except ValueError:
                raise InvalidOptions(
                    f"option {self.name!r} must be a date as YYYY-MM-DD, got {text[:40]!r}"
                ) from None
        elif self.kind == "source" and text not in SCRAPER_SOURCES:
            raise InvalidOptions(f"option {self.name!r} must be one of "
                                 f"{', '.join(sorted(SCRAPER_SOURCES))}, got {text[:40]!r}")
        elif len(text) > 256:
            raise InvalidOptions(f"option {self.name!r} is longer than 256 characters")
        return text


COMMON_OPTIONS: tuple[Option, ...] = (
    Option("workflow", help="the calling workflow; logged as `workflow` (default MANUAL)"),
    Option("source", "source", help="who started the run; default CLOUD_RUN on Cloud Run "
                                    "(K_SERVICE set), else LOCAL"),
    Option("triggered_by", help="free text: who or what asked for this run"),
    Option("environment", help="logged as `environment` (default $ENVIRONMENT, or "
                               "prod on Cloud Run and local elsewhere)"),
    Option("group", help="accepted for the platform's callers (prod, dev); only kept in opts"),
)
"""Run metadata every scraper accepts; they end up in the log row's columns and opts."""


def validate_options(schema: tuple[Option, ...], raw: Mapping[str, Any]) -> dict[str, str]:
    """Parse ``raw`` against ``schema`` plus :data:`COMMON_OPTIONS`; defaults filled in.

    Unknown keys are refused, all of them named at once, rather than ignored:
    an ignored typo would run the scraper for the wrong day without a word.
    """
    known = {o.name: o for o in (*COMMON_OPTIONS, *schema)}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise InvalidOptions(f"unknown option(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
    out: dict[str, str] = {}
    for option in known.values():
        value = raw.get(option.name)
        if value is None:
            if option.required:
                raise InvalidOptions(f"option {option.name!r} is required")
            if option.default is not None:
                out[option.name] = option.default
            continue
        out[option.name] = option.parse(value)
    return out


def is_secret_key(key: str) -> bool:
    """True for api_key, apiKey, X-Api-Key, access_token, password, Authorization, ..."""
    folded = re.sub(r"[^a-z]", "", key.lower())
    return any(word in folded for word in _SECRET_WORDS)


def without_secrets(value: Any) -> Any:
    """A copy of ``value`` with every secret-named key dropped, at any depth."""
    if isinstance(value, Mapping):
        return {k: without_secrets(v) for k, v in value.items()
                if not (isinstance(k, str) and is_secret_key(k))}
    if isinstance(value, list | tuple):
        return [without_secrets(v) for v in value]
    return value


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret value replaced, for messages that may quote a URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
