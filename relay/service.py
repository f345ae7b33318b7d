"""The relay as an HTTP service: Cloud Scheduler POSTs ``/relay/run``.

Why HTTP-triggered runs rather than a loop in the container: Cloud Run bills
and scales per request, and Cloud Scheduler gives retries, pausing and a
history for free. Each trigger drains for at most ``deadline`` seconds.

Production entry (one worker: runs are serialised per process anyway)::

    gunicorn --workers 1 --threads 4 -b :$PORT 'relay.service:app_from_env()'

With threads (the gthread worker) ``--timeout`` is a heartbeat, not a request
limit; with the sync worker it must exceed the largest deadline, or gunicorn
kills a run mid-batch.

Nothing here builds a Google client at import time: :func:`create_app` takes
its dependencies, and :func:`app_from_env` wires them lazily, on the first run,
after gunicorn has forked (gRPC channels do not survive a fork).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from outbox.errors import ConfigError
from outbox.http_json import json_http_errors
from relay.auth import AuthFailure, OidcVerifier
from relay.cycle import RelayConfig, RunSummary
from relay.metrics import RelayMetrics, cost_counters

if TYPE_CHECKING:
    from outbox.wiring import Settings

log = logging.getLogger("relay.service")
MAX_DEADLINE = 3600.0
MIN_ROUTE_SECONDS = 0.5
"""A route reached with less budget than this is skipped, not started."""


class RunsOnce(Protocol):
    """What the service needs of a relay (``relay.cycle.Relay`` or a test's fake)."""

    def run_once(self, deadline: dt.timedelta | None = None) -> RunSummary: ...


RelayFactory = Callable[[str], RunsOnce]


class BadRequest(ValueError):
    """The trigger's parameters are wrong; nothing ran."""


class RelayBusy(Exception):
    """Another run held this process's lock for the whole deadline."""


class RunFailed(Exception):
    """A route's run raised; ``runs`` holds the routes that completed before it."""

    def __init__(self, route: str, error: Exception, runs: list[RunSummary]) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.route, self.error, self.runs = route, error, runs


class RelayRunner:
    """Runs routes one after another within one deadline, observes and logs each.

    The HTTP trigger and ``outbox relay schedule`` both call :meth:`run`, so a
    run looks the same in logs and metrics whichever door started it.
    """

    def __init__(self, relay_factory: RelayFactory, routes: Sequence[str],
                 metrics: RelayMetrics,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.relay_factory = relay_factory
        self.routes = tuple(routes)
        self.metrics = metrics
        self.monotonic = monotonic
        self.lock = threading.Lock()
        self._relays: dict[str, RunsOnce] = {}

    def run(self, deadline: float, routes: Sequence[str] | None = None) -> list[RunSummary]:
        """Waits for the lock up to ``deadline``; the wait counts against it."""
        started = self.monotonic()
        if not self.lock.acquire(timeout=deadline):
            raise RelayBusy("a relay run is already in progress")
        try:
            runs: list[RunSummary] = []
            for name in routes or self.routes:
                left = deadline - (self.monotonic() - started)
                if left < MIN_ROUTE_SECONDS:
                    log.warning("deadline spent; route not run", extra={"json_fields": {
                        "route": name, "deadline_seconds": deadline}})
                    continue
                runs.append(self._run_route(name, left, runs))
            return runs
        finally:
            self.lock.release()

    def _run_route(self, name: str, seconds: float, done: list[RunSummary]) -> RunSummary:
        t0, relay, before = self.monotonic(), None, (0, 0, 0)

        def cost() -> list[int]:
            return [a - b for a, b in zip(cost_counters(relay), before, strict=True)]

        try:
            relay = self._relays.get(name)
            if relay is None:
                relay = self._relays[name] = self.relay_factory(name)
            before = cost_counters(relay)
            summary = relay.run_once(dt.timedelta(seconds=seconds))
        except Exception as exc:
            self.metrics.observe_error(name, round(self.monotonic() - t0, 4), *cost())
            log.error("relay run failed", exc_info=True, extra={"json_fields": {
                "route": name, "error": str(exc), "error_class": type(exc).__name__}})
            raise RunFailed(name, exc, done) from exc
        jobs, processed, sessions = cost()
        self.metrics.observe(summary, jobs, processed, sessions)
        log.info("relay run finished", extra={"json_fields": {
            **summary.as_dict(), "deadline_seconds": round(seconds, 3), "bigquery_jobs": jobs,
            "bytes_processed": processed, "read_sessions": sessions}})
        return summary


def parse_deadline(value: Any) -> float:
    """Seconds as a finite number in (0, 3600]; :class:`BadRequest` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"deadline must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond any float
        raise BadRequest(f"deadline must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_DEADLINE:
        raise BadRequest(f"deadline must be > 0 and <= {MAX_DEADLINE:g} seconds, got {value!r}")
    return seconds


def _params(known_routes: Sequence[str], default_deadline: float) -> tuple[float, list[str]]:
    """Query string, then a JSON object body (which wins), into (deadline, routes)."""
    params: dict[str, Any] = dict(request.args.items())
    raw = request.get_data(cache=True)
    if raw.strip():  # Cloud Scheduler sends application/octet-stream unless told otherwise
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser
            raise BadRequest("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        params.update(body)
    unknown = sorted(set(params) - {"deadline", "route"})
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; use deadline, route")
    deadline = parse_deadline(params["deadline"]) if "deadline" in params else default_deadline
    route = params.get("route")
    if route is not None and route not in known_routes:
        raise BadRequest(f"unknown route {route!r}; known routes: {', '.join(known_routes)}")
    return deadline, list(known_routes) if route is None else [route]


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def create_app(relay_factory: RelayFactory, metrics: RelayMetrics,
               auth: OidcVerifier | None = None, default_deadline: float = 50.0,
               routes: Sequence[str] | None = None) -> Flask:
    """The Flask app; ``routes`` defaults to every configured route, in order."""
    from outbox.routes import ROUTES

    runner = RelayRunner(relay_factory, routes or [r.name for r in ROUTES], metrics)
    try:
        default_deadline = parse_deadline(default_deadline)
    except BadRequest as exc:
        raise ConfigError(f"default deadline: {exc}") from None
    app = Flask("relay")

    @app.post("/relay/run")
    def run() -> Any:
        if auth is not None:
            try:
                auth.verify(request.headers.get("Authorization"))
            except AuthFailure as exc:
                log.warning("relay trigger refused", extra={"json_fields": {
                    "reason": exc.reason, "status": exc.status}})
                response, status = _error(exc.status, exc.reason)
                if exc.status == 401:
                    response.headers["WWW-Authenticate"] = "Bearer"
                return response, status
        try:
            deadline, names = _params(runner.routes, default_deadline)
            return jsonify({"runs": [s.as_dict() for s in runner.run(deadline, names)]})
        except BadRequest as exc:
            return _error(400, str(exc))
        except RelayBusy as exc:
            return _error(409, str(exc))
        except RunFailed as exc:
            message = str(exc.error) if isinstance(exc.error, ConfigError) else str(exc)
            return _error(500, message, route=exc.route, runs=[s.as_dict() for s in exc.runs])

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.exposition(), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    json_http_errors(app)

    return app


def wired_relays(settings: Settings, config: RelayConfig | None = None,
                 ) -> tuple[RelayFactory, Callable[[], None]]:
    """A relay factory for ``settings`` (and ``config``, default ``RelayConfig()``)
    and a function that closes what it built.

    The wiring and one publisher, shared by every route, are built on the
    first call; the runner's lock makes that call single-threaded.
    """
    from outbox.wiring import Wiring

    shared: dict[str, Any] = {}

    def factory(name: str) -> RunsOnce:
        if not shared:
            wiring = Wiring.build(settings)
            shared.update(wiring=wiring, publisher=wiring.publisher())
        relay: RunsOnce = shared["wiring"].relay(settings.route(name), config,
                                                 shared["publisher"])
        return relay

    def close() -> None:
        if shared:
            shared["publisher"].close()

    return factory, close


def relay_config_from_env(env: Mapping[str, str]) -> RelayConfig:
    """The relay's tunables from the environment; unset means ``RelayConfig``'s default.

    ``OUTBOX_RELAY_LEASE_TTL_SECONDS``: how long a run holds its route's lease, so how
    long a relay that dies blocks the route (default: each run's deadline plus 60 s).
    ``OUTBOX_RELAY_BATCH_SIZE``: rows per page and per Publish call (default 1000); it
    also bounds what a crash can re-publish (two batches, see ``relay.cycle``).
    """
    config = RelayConfig()
    raw = env.get("OUTBOX_RELAY_LEASE_TTL_SECONDS", "").strip()
    if raw:
        seconds = _number(raw)
        if not 1 <= seconds <= MAX_DEADLINE:
            raise ConfigError(f"OUTBOX_RELAY_LEASE_TTL_SECONDS must be a number of seconds in "
                              f"[1, {MAX_DEADLINE:g}], got {raw!r}")
        config = dataclasses.replace(config, lease_ttl=dt.timedelta(seconds=seconds))
    raw = env.get("OUTBOX_RELAY_BATCH_SIZE", "").strip()
    if raw:
        size = _number(raw)
        if not (size.is_integer() and 1 <= size <= 10_000):
            raise ConfigError(f"OUTBOX_RELAY_BATCH_SIZE must be a whole number in "
                              f"[1, 10000], got {raw!r}")
        config = dataclasses.replace(config, batch_size=int(size))
    return config


def _number(raw: str) -> float:
    """A finite float, or NaN (which every range check refuses)."""
    try:
        value = float(raw)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def app_from_env() -> Flask:
    """The production app, from Cloud Run's environment (see ``Settings.from_env``).

    Settings, the deadline and the OIDC config are checked now, so a bad
    deployment fails at boot; clients are built on the first run.
    """
    from outbox import logs
    from outbox.wiring import Settings

    logs.configure(os.environ.get("OUTBOX_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    try:
        deadline = parse_deadline(os.environ.get("OUTBOX_RELAY_DEADLINE_SECONDS", "50"))
    except BadRequest as exc:
        raise ConfigError(f"OUTBOX_RELAY_DEADLINE_SECONDS: {exc}") from None
    factory, _close = wired_relays(settings, relay_config_from_env(os.environ))
    return create_app(factory, RelayMetrics(), OidcVerifier.from_env(), deadline,
                      [r.name for r in settings.routes])


if __name__ == "__main__":  # pragma: no cover - local runs only; production uses gunicorn
    app_from_env().run(host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), threaded=True)
