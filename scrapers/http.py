"""HTTP GETs of JSON with bounded retries on transient failures, and errors that leak no key.

What is transient (retried): connection errors, timeouts, 429 (waiting as long
as ``Retry-After`` says, up to a bound) and 5xx. Any other 4xx is the
request's own fault and fails at once; so does a body that is not JSON.

Every error message is built from the URL with secret query parameters
masked (The Odds API takes its key as ``apiKey=``), and the original
``requests`` exception is not chained, because its text quotes the full URL.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from scrapers.options import is_secret_key, scrub


class UpstreamError(Exception):
    """The upstream API did not give us usable JSON. ``transient``: worth retrying."""

    transient = False


class UpstreamHTTPError(UpstreamError):
    """A non-2xx answer; 429 and 5xx are transient."""

    def __init__(self, status: int, url: str, detail: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} from GET {url}" + (f": {detail}" if detail else ""))
        self.status = status
        self.retry_after = retry_after
        self.transient = status == 429 or status >= 500


class UpstreamUnavailable(UpstreamError):
    """No answer at all: connection refused or reset, DNS, timeout."""

    transient = True


class MalformedJSON(UpstreamError):
    """A 2xx answer whose body is not JSON; retrying the same request will not fix it."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    """Tries per request, the first included."""
    base_wait: float = 0.5
    """Seconds before the first retry; doubles each time."""
    max_wait: float = 8.0
    max_retry_after: float = 30.0
    """A longer ``Retry-After`` is cut to this: a run must end within Cloud Run's timeout."""
    timeout: tuple[float, float] = (5.0, 30.0)
    """(connect, read) seconds per request."""


def masked_url(url: str) -> str:
    """``url`` with the values of secret-named query parameters replaced by ``***``."""
    parts = urlsplit(url)
    query = [(k, "***" if is_secret_key(k) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]:*")))


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110 allows both)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


class HttpClient:
    """One run's HTTP session. Not shared between runs (a ``requests.Session``
    is not thread-safe), so its counters are that run's stats."""

    def __init__(self, policy: RetryPolicy | None = None,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 secrets: tuple[str, ...] = ()) -> None:
        self.policy = policy or RetryPolicy()
        self.session = session or requests.Session()
        self.sleep = sleep
        self.secrets = secrets
        self.requests = 0
        self.retries = 0

    def get_json(self, url: str, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON body of ``GET url``, after retries; raises :class:`UpstreamError`."""
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, UpstreamError) and e.transient),
            before_sleep=self._count_retry,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._get_once, url, dict(params or {}), dict(headers or {}))

    def close(self) -> None:
        self.session.close()

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, UpstreamHTTPError) and error.retry_after is not None:
            return min(error.retry_after, self.policy.max_retry_after)
        return float(min(self.policy.base_wait * 2 ** (state.attempt_number - 1),
                         self.policy.max_wait))

    def _get_once(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        self.requests += 1
        shown = masked_url(requests.Request("GET", url, params=params).prepare().url or url)
        try:
            response = self.session.get(url, params=params, headers=headers,
                                        timeout=self.policy.timeout)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__} on GET {shown}") from None
        except requests.RequestException as exc:
            error = UpstreamError(f"{type(exc).__name__} on GET {shown}")
            raise error from None
        if not 200 <= response.status_code < 300:
            detail = scrub(response.text[:200].strip(), self.secrets)
            raise UpstreamHTTPError(response.status_code, shown, detail,
                                    retry_after_seconds(response.headers.get("Retry-After")))
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise MalformedJSON(f"GET {shown}: the body is not JSON ({exc})") from None
