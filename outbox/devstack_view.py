"""What ``outbox dev`` shows: the state of the local pipeline and its live view.

Kept apart from :mod:`outbox.devstack` (which starts and wires everything) so
that the view stays a pure function of a plain dataclass: the loops only bump
counters under a lock, and :func:`render` can be tested without an emulator.

The view follows an event's path, top to bottom: a scraper run, its log row,
the relay publishing it, the push to ``/process``, the ``nba_raw`` rows the
processor loaded, and the phase-2 event that the processor's own log row
became.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

NONE = "-"
SCRAPER_STATUSES = ("success", "no_data", "partial", "failed")
DELIVERY_OUTCOMES = ("processed", "duplicate", "skipped", "quarantined", "503")
"""The /process outcomes always shown; any other (``ignored``, ``500``) is listed
after them only when it happened."""
_LABELS = {"503": "retried (503)", "500": "failed (500)"}
"""503 asks Pub/Sub to redeliver; any other 5xx is a bug or a misconfiguration."""


@dataclasses.dataclass
class RouteState:
    """One outbox route: log rows appended by this session, and what the relay did.

    ``pending`` and ``oldest_pending_age`` are what the relay's poll found at the
    start of its last run (what production's ``outbox status`` reports too), and
    after the final drain what is still left.
    """

    topic: str
    written: int = 0
    published: int = 0
    pending: int | None = None
    oldest_pending_age: float | None = None
    runs: int = 0
    last_stopped: str | None = None


@dataclasses.dataclass
class DevState:
    """Everything the live view shows; :func:`~outbox.devstack.run_dev` returns the last one."""

    session: str = ""
    phase: str = "starting"
    elapsed: float = 0.0
    upstream: str = ""
    """The fixture server's URL."""
    storage: str = ""
    """Where the scrapers write raw files (a ``file://`` root)."""
    service: str = ""
    """The push endpoint of the in-process processor service."""
    log_file: str = ""
    scrape_cycles: int = 0
    last_scrape_date: str | None = None
    scraper_runs: dict[str, int] = dataclasses.field(default_factory=dict)
    """Runs by the status of their log row."""
    upstream_requests: int = 0
    upstream_retries: int = 0
    routes: dict[str, RouteState] = dataclasses.field(default_factory=dict)
    """By route name, in relay order (scrapers, then processors)."""
    deliveries: dict[str, int] = dataclasses.field(default_factory=dict)
    """/process answers by outcome; a 503 is counted as ``503``, any other 5xx as ``500``."""
    raw_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    """Rows in each ``nba_raw`` table (in the window the dev stack scrapes)."""
    phase2_subscription: str = ""
    phase2_received: int = 0
    dead_lettered: int = 0
    errors: int = 0
    last_error: str | None = None

    @property
    def delivered(self) -> int:
        """Deliveries answered 2xx, i.e. acknowledged."""
        return sum(n for k, n in self.deliveries.items() if not k.isdigit())


def seconds(value: float | None) -> str:
    if value is None:
        return NONE
    minutes, secs = divmod(value, 60)
    return f"{int(minutes)}m {secs:04.1f}s" if minutes else f"{secs:.1f}s"


def _counts(counts: Mapping[str, int], always: Iterable[str]) -> str:
    """``12 success · 0 failed``: the ``always`` keys in order, then any others that occurred."""
    keys = [*always, *sorted(k for k in counts if k not in always and counts[k])]
    return " · ".join(f"{counts.get(k, 0)} {_LABELS.get(k, k)}" for k in keys)


def _number(value: int | None) -> str:
    return NONE if value is None else str(value)


def _table(title: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title,
                  title_justify="left", title_style="bold", show_header=False)
    table.add_column(min_width=24, style="dim")
    table.add_column()
    return table


def render(state: DevState) -> RenderableType:
    """The live view of ``state``. Pure: the same state always renders the same."""
    head = Text.assemble(("outbox dev", "bold"), f" · session {state.session} · {state.phase}"
                         f" · {seconds(state.elapsed)}")

    scrape = _table("1. scrapers → log rows")
    scrape.add_row("scraper runs", _counts(state.scraper_runs, SCRAPER_STATUSES))
    scrape.add_row("cycles", f"{state.scrape_cycles} (last for {state.last_scrape_date or NONE})")
    scrape.add_row("upstream requests", f"{state.upstream_requests} "
                   f"({state.upstream_retries} retried after a 500 or 429)")

    relay = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_style="bold",
                  title="2. outbox relay → Pub/Sub", title_justify="left")
    relay.add_column("route", min_width=24, style="dim")
    for name, route in state.routes.items():
        relay.add_column(f"{name} → {route.topic}", justify="right")
    routes = list(state.routes.values())
    relay.add_row("log rows written", *(str(r.written) for r in routes))
    relay.add_row("published", *(str(r.published) for r in routes))
    relay.add_row("pending at last poll", *(_number(r.pending) for r in routes))
    relay.add_row("oldest pending then", *(seconds(r.oldest_pending_age) for r in routes))
    relay.add_row("relay runs", *(f"{r.runs} ({r.last_stopped or NONE})" for r in routes))

    process = _table("3. push → /process → nba_raw")
    process.add_row("deliveries", _counts(state.deliveries, DELIVERY_OUTCOMES))
    process.add_row("dead-lettered", str(state.dead_lettered))
    for table, rows in sorted(state.raw_rows.items()):
        process.add_row(table, str(rows))
    if not state.raw_rows:
        process.add_row("nba_raw rows", NONE)
    process.add_row(f"received on {state.phase2_subscription or 'phase 2'}",
                    f"{state.phase2_received} phase-2 events")

    where = _table("")
    where.add_row("fixture server", state.upstream or NONE)
    where.add_row("raw files", state.storage or NONE)
    where.add_row("push endpoint", state.service or NONE)
    where.add_row("logs", state.log_file or NONE)

    gap = Text("")
    parts: list[RenderableType] = [head, gap, scrape, gap, relay, gap, process, gap, where]
    if state.errors:
        parts.append(Text(f"errors: {state.errors}, last: {state.last_error}", style="red"))
    return Group(*parts)
