"""The load of a chaos run: scrapes, relay triggers, and the taps that count copies.

Each runs on its own thread against the services of a :class:`ChaosStack`,
the way Cloud Scheduler and Pub/Sub would drive them; a request to a service
that is down counts as "refused" (a scheduler would retry it; no row was
written, so nothing can be lost).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import threading
from collections import Counter
from typing import Any

import requests
from google.cloud import pubsub_v1

from outbox.chaos_stack import CHAOS_PROJECT, TAPS, ChaosStack
from outbox.clock import utcnow
from scrapers.registry import REGISTRY

log = logging.getLogger("outbox.chaos")


class Load:
    """Scrapes, relay triggers and the taps, each on its own thread."""

    def __init__(self, stack: ChaosStack, seed: int, scrape_every: float = 1.0,
                 relay_every: float = 0.5) -> None:
        self.stack, self.scrape_every, self.relay_every = stack, scrape_every, relay_every
        self.rng = random.Random(f"{seed}:load")
        self.stop_all, self.stop_scrapes = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.copies: dict[str, Counter[str]] = {route: Counter() for route in TAPS}
        self.replayed_copies: Counter[str] = Counter()
        self.dupes_at: list[dt.datetime] = []
        """When each extra copy arrived: the round it falls in is the one that caused it."""
        self.scrapes: Counter[str] = Counter()
        self.relay_runs: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._guard(loop), name=f"chaos-{loop.__name__}",
                                         daemon=True)
                        for loop in (self._scrape, self._relay, self._tap)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_all.set()
        for thread in self.threads:
            thread.join(timeout=40)

    def _guard(self, loop: Any) -> Any:
        def run() -> None:
            try:
                loop()
            except Exception:  # a driver must not die silently: the run would just stall
                log.exception("chaos load thread failed")
                raise
        run.__name__ = loop.__name__
        return run

    def _scrape(self) -> None:
        url = f"{self.stack.services['scrapers'].url}/scrape"
        while not (self.stop_all.is_set() or self.stop_scrapes.is_set()):
            day = utcnow().date() - dt.timedelta(days=self.rng.randrange(3))
            body = {"scraper": self.rng.choice(REGISTRY.names), "date": day.isoformat()}
            try:
                status = str(requests.post(url, json=body, timeout=30).status_code)
            except requests.RequestException:
                status = "refused"  # down: a scheduler would retry; no row, nothing to lose
            with self.lock:
                self.scrapes[status] += 1
            self.stop_all.wait(self.scrape_every)

    def _relay(self) -> None:
        url = f"{self.stack.services['relay'].url}/relay/run"
        while not self.stop_all.is_set():
            try:
                answer = requests.post(url, json={}, timeout=30)
                kinds = ([r.get("stopped", "?") for r in answer.json().get("runs", [])]
                         if answer.ok else [f"http {answer.status_code}"])
            except (requests.RequestException, ValueError):
                kinds = ["refused"]
            with self.lock:
                self.relay_runs.update(k.split(":")[0] for k in kinds)
            self.stop_all.wait(self.relay_every)

    def _tap(self) -> None:
        subscriber = pubsub_v1.SubscriberClient()
        paths = {route: subscriber.subscription_path(CHAOS_PROJECT, sub)
                 for route, sub in TAPS.items()}
        try:
            while not self.stop_all.is_set():
                for route, path in paths.items():
                    try:
                        answer = subscriber.pull(request={"subscription": path,
                                                          "max_messages": 1000}, timeout=1.0)
                    except Exception:  # the emulator is down or restarting: try again
                        self.stop_all.wait(0.3)
                        continue
                    if not answer.received_messages:
                        continue
                    with self.lock:
                        for received in answer.received_messages:
                            attrs = received.message.attributes
                            key = attrs.get("execution_id", "")
                            if attrs.get("replay") == "true":
                                self.replayed_copies[key] += 1
                                continue
                            self.copies[route][key] += 1
                            if self.copies[route][key] > 1:
                                self.dupes_at.append(utcnow())
                    with contextlib.suppress(Exception):
                        subscriber.acknowledge(request={"subscription": path, "ack_ids": [
                            m.ack_id for m in answer.received_messages]})
        finally:
            subscriber.close()
