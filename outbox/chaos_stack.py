"""The processes ``outbox chaos`` breaks: three gunicorn services and two emulators.

Each service runs as production runs it (``gunicorn 'x.service:app_from_env()'``,
configured only through the environment) in a process group of its own, so
that ``kill -9`` takes the master and its worker at once, like a container
crash. The emulators are started here, never shared with anything else, since
a chaos run restarts the Pub/Sub one.

Why everything talks to bqemulator over REST here (``OUTBOX_READ_MODE=query``,
``OUTBOX_WRITE_MODE=legacy-streaming``): bqemulator runs REST jobs on its event
loop and Storage API calls on gRPC threads, all on one DuckDB connection, and
deadlocks when a query job and a Storage Write append overlap (seen here with
py-spy: the loop blocked in ``DuckDBEngine.execute``, the gRPC thread in
``_flush_to_target``). Three processes write and read at random moments in a
chaos run, so they would hang it within a minute. Real BigQuery has no such
limit, and the Storage Read and Write paths are covered by every other
emulator test, where one process takes turns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator, PubSubEmulator, free_port
from outbox.errors import OutboxError
from outbox.pubsub_admin import ensure_topics
from outbox.routes import PHASE2_COMPLETE, SCRAPER_COMPLETE
from outbox.wiring import Settings, Wiring, all_tables
from scrapers.fixture_server import League, Upstream

log = logging.getLogger("outbox.chaos")

CHAOS_PROJECT = "chaos-project"
SERVICES = ("relay", "processors", "scrapers")
PUSH_SUBSCRIPTION = "chaos-processors"
TAPS = {SCRAPER_COMPLETE.name: "chaos-tap-scrapers", PHASE2_COMPLETE.name: "chaos-tap-phase2"}
"""Pull subscriptions that see every message on each topic: the duplicate count."""
API_KEYS = {"bdl": "chaos-bdl-key", "odds": "chaos-odds-key"}
BOOT_TIMEOUT = 60.0


class ServiceDown(OutboxError):
    """A service did not answer /health in time; its log's tail says why."""


@dataclass
class Service:
    """One gunicorn service, started and killed as a whole process group."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = self._log or self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "1", "--threads", "8", "--timeout", "0",
             f"{self.name}.service:app_from_env()"],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Seconds until /health answered; ServiceDown if it never did."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                break
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return time.monotonic() - t0
            time.sleep(0.1)
        raise ServiceDown(f"{self.name} did not become healthy in {timeout:.0f} s; "
                          f"last lines of {self.log_path}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole group: no handler, no cleanup, no lease released."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ChaosStack:
    """Emulators, tables, topics, the fixture API and the three services."""

    def __init__(self, workdir: Path, seed: int, relay_batch: int = 10,
                 relay_deadline: float = 5.0, lease_ttl: float = 8.0) -> None:
        self.workdir = workdir
        self.seed = seed
        self.relay_batch, self.relay_deadline = relay_batch, relay_deadline
        self.lease_ttl = lease_ttl
        self.stack = contextlib.ExitStack()
        self.bq: BigQueryEmulator | None = None
        self.pubsub: PubSubEmulator | None = None
        self.services: dict[str, Service] = {}
        self.wiring: Wiring | None = None

    def start(self) -> ChaosStack:
        """Start everything (once); on a failure, stop what had started."""
        if self.wiring is None:
            try:
                self._start()
            except BaseException:
                self.stack.close()
                raise
        return self

    def __enter__(self) -> ChaosStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pubsub = self.stack.enter_context(PubSubEmulator(CHAOS_PROJECT))
        self.bq = self.stack.enter_context(BigQueryEmulator(CHAOS_PROJECT))
        self.stack.enter_context(_environ(self.pubsub.env()))
        settings = Settings(project=CHAOS_PROJECT,
                            bigquery_emulator=self.bq.rest_url.removeprefix("http://"),
                            bigquery_emulator_grpc=self.bq.grpc_endpoint,
                            pubsub_emulator=self.pubsub.host, read_mode="query",
                            write_mode="legacy-streaming")
        self.wiring = Wiring.build(settings)
        ensure_tables(self.wiring.bigquery, CHAOS_PROJECT, all_tables(settings))
        upstream = self.stack.enter_context(
            Upstream(League(self.seed, api_keys=API_KEYS), keep=1000))
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        base = {**os.environ, **self.pubsub.env(), **self.bq.env(),
                "OUTBOX_PROJECT": CHAOS_PROJECT, "OUTBOX_READ_MODE": "query",
                "OUTBOX_WRITE_MODE": "legacy-streaming",
                "OUTBOX_STORAGE": storage.resolve().as_uri(), "OUTBOX_LOG_LEVEL": "INFO",
                "PYTHONPATH": os.pathsep.join(filter(None, [
                    str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))}
        for name in ("OUTBOX_RELAY_AUDIENCE", "OUTBOX_RELAY_INVOKER", "PROCESSOR_PUSH_AUDIENCE",
                     "PROCESSOR_PUSH_INVOKER"):
            base.pop(name, None)
        extra = {
            "relay": {"OUTBOX_RELAY_DEADLINE_SECONDS": str(self.relay_deadline),
                      "OUTBOX_RELAY_LEASE_TTL_SECONDS": str(self.lease_ttl),
                      "OUTBOX_RELAY_BATCH_SIZE": str(self.relay_batch)},
            "processors": {},
            "scrapers": {"BDL_BASE_URL": upstream.url, "ODDS_API_BASE_URL": upstream.url,
                         "BDL_API_KEY": API_KEYS["bdl"], "ODDS_API_KEY": API_KEYS["odds"]},
        }
        for name in SERVICES:
            self.services[name] = Service(name, free_port(), {**base, **extra[name]},
                                          self.workdir / f"{name}.log")
        for service in self.services.values():
            service.start()
            self.stack.callback(service.stop)
        for service in self.services.values():
            service.wait_healthy()
        self.set_up_pubsub()

    def set_up_pubsub(self) -> None:
        """Topics, the push subscription to /process and the taps; again after every
        emulator restart, since the emulator keeps nothing."""
        ensure_topics(CHAOS_PROJECT, [SCRAPER_COMPLETE.topic, PHASE2_COMPLETE.topic])
        subscriber = pubsub_v1.SubscriberClient()
        try:
            topic = f"projects/{CHAOS_PROJECT}/topics/"
            with contextlib.suppress(gexc.AlreadyExists):
                subscriber.create_subscription(request={
                    "name": subscriber.subscription_path(CHAOS_PROJECT, PUSH_SUBSCRIPTION),
                    "topic": topic + SCRAPER_COMPLETE.topic,
                    "push_config": {"push_endpoint": f"{self.services['processors'].url}/process"},
                    "ack_deadline_seconds": 60})
                # No dead-letter policy: a processor down for a round must not send events
                # to a DLQ (production's 5 attempts span minutes, not seconds). No retry
                # policy either: with one, the emulator's push loop stopped for good after
                # a burst of refused pushes (seen in its log: the last push at the moment
                # the processors came back, none after), which real Pub/Sub does not do.
            for route, sub in TAPS.items():
                with contextlib.suppress(gexc.AlreadyExists):
                    subscriber.create_subscription(request={
                        "name": subscriber.subscription_path(CHAOS_PROJECT, sub),
                        "topic": topic + {SCRAPER_COMPLETE.name: SCRAPER_COMPLETE.topic,
                                          PHASE2_COMPLETE.name: PHASE2_COMPLETE.topic}[route],
                        "ack_deadline_seconds": 30})
        finally:
            subscriber.close()

    def kill_pubsub(self) -> None:
        assert self.pubsub is not None
        self.pubsub.kill()

    def start_pubsub(self) -> None:
        assert self.pubsub is not None
        self.pubsub.start()
        self.set_up_pubsub()


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ (the Pub/Sub clients read PUBSUB_EMULATOR_HOST), restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
