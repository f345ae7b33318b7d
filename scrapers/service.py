"""The scraper service (Cloud Run ``nba-scrapers``): one HTTP request, one scraper run.

Routes:

- ``POST /scrape`` with ``{"scraper": NAME, ...options}`` (options may also
  come in the query string; the body wins);
- ``POST /scraper/<NAME>``, the route shape the platform's callers used;
- ``GET /scrapers``: names, output prefixes and options; ``GET /health``.

Status codes, and why:

- **200** for every run that finished and logged its row, *including* a run
  whose status is ``failed``. The run did happen and its outcome is durable:
  the row (and so the ``failed`` event) exists. The orchestration reads any
  2xx as "the scraper ran" and the row's status is in the body. A 5xx here
  would make Cloud Scheduler or a workflow retry a run that already retried
  its HTTP calls, adding rows without adding information.
- **400** for an unknown scraper or bad options: nothing ran, no row exists.
- **500** when the row could not be written (``LogWriteFailed``): the data
  file may exist but no event will ever announce it, so the caller must know;
  the body names the execution id and the file, and the full row is logged
  at ERROR.

Production entry (``--timeout 0``: with threads it is only a heartbeat, and a
scrape may take minutes; Cloud Run's request timeout bounds it)::

    gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 'scrapers.service:app_from_env()'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, jsonify, request

from outbox.blobs import Blobs
from outbox.clock import Clock, utcnow
from outbox.http_json import json_http_errors
from outbox.ports import LogWriter
from outbox.schema import SCRAPER_EXECUTION_LOG
from scrapers.base import ScraperDeps
from scrapers.http import RetryPolicy
from scrapers.options import COMMON_OPTIONS, InvalidOptions
from scrapers.registry import REGISTRY, Registry
from scrapers.run_log import LogWriteFailed

log = logging.getLogger("scrapers.service")
DEFAULT_OUTPUT = "gs://nba-scraped-data"


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


_COLUMN_LIMITS = {o.name: column.max_length for o in COMMON_OPTIONS
                  if (column := SCRAPER_EXECUTION_LOG.column(o.name)) and column.max_length}
"""Options copied into a log-row column of this length (``environment``: 64)."""
TRIGGERED_BY_LIMIT = _COLUMN_LIMITS["triggered_by"]


def _request_options() -> dict[str, Any]:
    """Query string, then a JSON object body (which wins). ``force``: Cloud
    Scheduler sends JSON as application/octet-stream unless told otherwise."""
    try:
        body = request.get_json(force=True, silent=True) if request.get_data().strip() else {}
    except RecursionError:  # nested deeper than the parser goes; silent= covers ValueError only
        body = None
    if not isinstance(body, dict):
        raise InvalidOptions("the body must be a JSON object")
    options = {**request.args.to_dict(), **body}
    for key, value in options.items():
        try:  # a lone surrogate ("\ud800" in the JSON) would make the row unwritable
            json.dumps([key, value], ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidOptions(f"option {key[:80]!r} is not valid Unicode text") from None
    return options


def _check_fits_log_row(opts: Mapping[str, Any]) -> None:
    """Refuse now an option too long for its log-row column: the run would otherwise
    happen, write its file, and then fail to log its row (a 500, and no event)."""
    for name, limit in _COLUMN_LIMITS.items():
        value = opts.get(name)
        if isinstance(value, str) and len(value.strip()) > limit:
            raise InvalidOptions(f"option {name!r} is longer than {limit} characters")


def create_app(registry: Registry, writer: LogWriter, blobs: Blobs, *,
               env: Mapping[str, str] | None = None, retry: RetryPolicy | None = None,
               clock: Clock = utcnow, sleep: Callable[[float], None] = time.sleep) -> Flask:
    """The Flask app. ``env`` (default: ``os.environ`` now) holds the base URLs
    and API keys; tests pass their fixture server's URL and a no-op ``sleep``."""
    base = ScraperDeps(writer, blobs, env=dict(os.environ if env is None else env),
                       retry=retry or RetryPolicy(), clock=clock, sleep=sleep,
                       triggered_by="scraper-service")
    app = Flask("scrapers")

    def run(name: Any, opts: dict[str, Any]) -> tuple[Response, int]:
        job = request.headers.get("X-CloudScheduler-JobName")
        run_deps = (dataclasses.replace(base, triggered_by=f"scheduler:{job}"[:TRIGGERED_BY_LIMIT])
                    if job else base)
        try:
            _check_fits_log_row(opts)
            report = registry.run(name, run_deps, opts)
        except InvalidOptions as exc:
            log.warning("scrape refused", extra={"json_fields": {
                "scraper_name": str(name)[:80], "reason": str(exc)}})
            return _error(400, str(exc))
        except LogWriteFailed as exc:  # already logged at ERROR with the whole row
            return _error(500, str(exc), execution_id=exc.execution_id, gcs_path=exc.gcs_path)
        return jsonify(report.summary()), 200

    @app.post("/scrape")
    def scrape() -> tuple[Response, int]:
        try:
            opts = _request_options()
        except InvalidOptions as exc:
            return _error(400, str(exc))
        name = opts.pop("scraper", None)
        if not name:
            return _error(400, 'name the scraper: {"scraper": NAME, ...options}',
                          known=registry.names)
        return run(name, opts)

    @app.post("/scraper/<name>")
    def scrape_by_path(name: str) -> tuple[Response, int]:
        try:
            opts = _request_options()
        except InvalidOptions as exc:
            return _error(400, str(exc))
        named = opts.pop("scraper", name)
        if named != name:
            return _error(400, f"the path names {name!r} but the body names {str(named)[:80]!r}")
        return run(name, opts)

    @app.get("/scrapers")
    def scrapers() -> Response:
        return jsonify({"scrapers": registry.describe()})

    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok"})

    json_http_errors(app)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.error("scraper service error", exc_info=exc, extra={"json_fields": {
            "error_class": type(exc).__name__}})
        return _error(500, f"internal error: {type(exc).__name__}")

    return app


def app_from_env() -> Flask:
    """The production app: the log writer from ``Settings.from_env()`` (OUTBOX_PROJECT,
    emulator hosts, write mode) and the output from ``OUTBOX_STORAGE`` (``gs://bucket``
    or ``file:///dir``; default ``gs://nba-scraped-data``).

    Built in the gunicorn worker (do not use ``--preload``: gRPC channels do
    not survive a fork), so a bad configuration fails the boot, not a request.
    """
    from outbox import logs
    from outbox.blobs import blobs_for
    from outbox.routes import SCRAPER_COMPLETE
    from outbox.wiring import Settings, Wiring

    logs.configure(os.environ.get("OUTBOX_LOG_LEVEL", "INFO"))
    writer = Wiring.build(Settings.from_env()).store(SCRAPER_COMPLETE)
    blobs = blobs_for(os.environ.get("OUTBOX_STORAGE") or DEFAULT_OUTPUT)
    return create_app(REGISTRY, writer, blobs)


if __name__ == "__main__":  # pragma: no cover - local runs only; production uses gunicorn
    app_from_env().run(host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), threaded=True)
