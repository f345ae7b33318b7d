"""``outbox dev``: the whole pipeline on one machine, with no cloud account.

So that a developer can watch an event travel the platform before deploying
anything, this runs the real code end to end against local stand-ins:

1. the real scrapers (:data:`scrapers.registry.REGISTRY`) on a short cycle
   against a local fixture server (:class:`scrapers.fixture_server.League`:
   generated BallDontLie and Odds API answers, an off day a week, a few 500s,
   429s and bad bodies), writing raw files under a ``file://`` root and one
   log row per run through the real store;
2. the real relay, for both routes (scrapers → ``nba-scraper-complete``,
   processors → ``nba-phase2-complete``);
3. the Pub/Sub emulator pushing ``nba-scraper-complete`` through
   ``nba-processors-sub`` (retry policy, dead-letter topic after 5 attempts)
   to the real processor service, in-process, which loads ``nba_raw``;
4. a pull subscription counting the phase-2 events.

Emulators come from BIGQUERY_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, else are
started here. Loops share a :class:`~outbox.devstack_view.DevState` under a
lock, and every BigQuery call takes turns under one emulator lock (see
:mod:`outbox.devstack_service`). Stopping (Ctrl-C, SIGTERM, ``duration``)
drains both routes, then stops the service, the fixture server and any
emulator started here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.live import Live

from outbox.bigquery_tables import ensure_tables
from outbox.blobs import LocalBlobs
from outbox.devstack_loops import (
    DEV_KEYS,
    DLQ_TOPIC,
    DRAIN_DEADLINE,
    DevOptions,
    DevRun,
    raw_count_statement,
)
from outbox.devstack_view import DevState, render, seconds
from outbox.emulators import BigQueryEmulator, PubSubEmulator, bigquery_from_env, pubsub_from_env
from outbox.errors import OutboxError
from outbox.logs import JsonFormatter
from outbox.pubsub_admin import ensure_topics
from outbox.routes import PHASE2_COMPLETE, SCRAPER_COMPLETE
from outbox.wiring import Settings, Wiring, all_tables
from scrapers.fixture_server import League, Upstream

__all__ = ["DEV_PROJECT", "DevOptions", "DevState", "raw_count_statement", "run_dev"]

DEV_PROJECT = "local-project"


@contextlib.contextmanager
def _dev_environment(pubsub_host: str) -> Iterator[None]:
    """PUBSUB_EMULATOR_HOST for the clients; SIGTERM stops like Ctrl-C. Both restored."""
    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        if before is not None:
            os.environ["PUBSUB_EMULATOR_HOST"] = before


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Every log record to ``path`` (JSON lines, INFO and up) while the live view runs.

    The view owns the terminal: a line on stderr under it would tear the frame,
    and the scrapers and the service log every run. Restored afterwards.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root, werkzeug = logging.getLogger(), logging.getLogger("werkzeug")
    handlers, level, werkzeug_level = root.handlers[:], root.level, werkzeug.level
    root.handlers[:] = [handler]
    root.setLevel(level if logging.NOTSET < level < logging.INFO else logging.INFO)
    werkzeug.setLevel(logging.WARNING)  # processors.service already logs each push
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        werkzeug.setLevel(werkzeug_level)
        handler.close()


def run_dev(options: DevOptions, console: Console) -> DevState:
    """Scrape, relay, push, process and receive until Ctrl-C (or SIGTERM) or
    ``options.duration``; drain; return the final state. Raises
    EmulatorUnavailable if an emulator cannot start."""
    project = os.environ.get("OUTBOX_PROJECT") or DEV_PROJECT
    with contextlib.ExitStack() as stack:
        if (pubsub := pubsub_from_env()) is None:  # first: it is the one with prerequisites
            console.print("starting the Pub/Sub emulator…")
            pubsub = stack.enter_context(PubSubEmulator(project)).host
        if (bq := bigquery_from_env()) is None:
            console.print("starting the BigQuery emulator (bqemulator)…")
            env = stack.enter_context(BigQueryEmulator(project)).env()
            bq = env["BIGQUERY_EMULATOR_HOST"], env["BIGQUERY_EMULATOR_GRPC_HOST"]
        stack.enter_context(_dev_environment(pubsub))
        console.print(f"project {project}: BigQuery at {bq[0]} (gRPC {bq[1]}), Pub/Sub at {pubsub}")
        # from_env keeps OUTBOX_WRITE_MODE / OUTBOX_READ_MODE; the endpoints are ours.
        settings = dataclasses.replace(Settings.from_env(project), bigquery_emulator=bq[0],
                                       bigquery_emulator_grpc=bq[1], pubsub_emulator=pubsub)
        wiring = Wiring.build(settings)
        ensure_tables(wiring.bigquery, project, all_tables(settings))
        ensure_topics(project, [SCRAPER_COMPLETE.topic, PHASE2_COMPLETE.topic, DLQ_TOPIC])
        stack.enter_context(_logs_to(options.log_file))
        league = League(options.seed, options.faults, api_keys=DEV_KEYS)
        upstream = stack.enter_context(Upstream(league, keep=1000))
        dev = DevRun(wiring, options, LocalBlobs(options.storage), upstream, uuid.uuid4().hex[:8])
        stack.callback(dev.close)
        stack.callback(dev.service.close)
        dev.subscribe()
        stack.callback(dev.unsubscribe)
        duration = options.duration.total_seconds() if options.duration else float("inf")
        stop_at = time.monotonic() + duration
        with Live(console=console, refresh_per_second=2,
                  get_renderable=lambda: render(dev.snapshot())):
            threads = dev.start()
            try:
                while not dev.stop.is_set() and time.monotonic() < stop_at:
                    time.sleep(0.1)
            except KeyboardInterrupt:
                pass
            finally:
                dev.stop.set()
                until = time.monotonic() + DRAIN_DEADLINE.total_seconds()
                for thread in threads:
                    thread.join(timeout=max(0.0, until - time.monotonic()))
            if dev.fatal is not None:
                raise dev.fatal
            if stuck := [t.name for t in threads if t.is_alive()]:
                raise OutboxError(f"{', '.join(stuck)} still busy after "
                                  f"{DRAIN_DEADLINE}: is an emulator hung? Not draining.")
            dev.drain()
        if not console.is_terminal:
            console.line()  # rich ends the last frame with a newline only on terminals
        final = dev.snapshot()
        _summary(console, final)
        return final


def _summary(console: Console, final: DevState) -> None:
    scrapers, processors = (final.routes[SCRAPER_COMPLETE.name],
                            final.routes[PHASE2_COMPLETE.name])
    settled = scrapers.pending == 0 and processors.pending == 0
    colour = "green" if settled else "yellow"
    runs = sum(final.scraper_runs.values())
    console.print(
        f"[{colour}]outbox dev stopped after {seconds(final.elapsed)}:[/] {runs} scraper runs, "
        f"{scrapers.published}/{scrapers.written} scraper events published, "
        f"{final.deliveries.get('processed', 0)} processed, "
        f"{sum(final.raw_rows.values())} nba_raw rows, "
        f"{final.phase2_received} phase-2 events received; pending: {scrapers.pending} "
        f"scrapers, {processors.pending} processors. Logs: {final.log_file}",
        highlight=False)
