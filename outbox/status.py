"""``outbox status``: the first question on call, "is the relay keeping up?".

Why only the :class:`~outbox.ports.OutboxStore` port: the figures must mean
the same from BigQuery as from the in-memory double, so :func:`gather` is a
pure function of a store and a time, tested without any cloud. The CLI only
picks the stores (:func:`stores_for`, which tests replace) and prints.
Each figure answers one on-call question:

- backlog and oldest pending age: are events waiting, and for how long?
- unfolded: are folds being refused (rows journaled but not flagged)?
- published in the last hour / day: is anything flowing at all?
- set-aside rows: poison rows a human must look at (they are never retried).
- last run: did the scheduler fire recently, and why did the run stop?
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from outbox.clock import utcnow as utcnow  # re-exported: the CLI's clock, tests replace it
from outbox.ports import OutboxStore, SetAsideRow

if TYPE_CHECKING:
    from outbox.wiring import Settings

SET_ASIDE_WINDOW = dt.timedelta(days=90)
"""The log's partition expiry: older set-aside rows no longer exist."""
LAST_RUN_WINDOW = dt.timedelta(days=7)
"""No run in a week shows as 'none in 7d', which is itself the alarm."""
AGE_WARN, AGE_ALARM = dt.timedelta(minutes=5), dt.timedelta(minutes=30)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
ERROR_WIDTH = 80


@dataclass(frozen=True)
class LastRun:
    """The newest relay run summary the store recorded."""

    run_id: str
    finished_at: dt.datetime | None
    stopped: str
    summary: Mapping[str, Any]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LastRun:
        finished = data.get("finished_at")
        if isinstance(finished, str):  # a store may hand back ISO text from JSON
            finished = dt.datetime.fromisoformat(finished)
        return cls(str(data.get("run_id", "")), finished, str(data.get("stopped", "")),
                   dict(data.get("summary") or {}))

    @property
    def published(self) -> int | None:
        return None if self.summary.get("published") is None else int(self.summary["published"])

    @property
    def seconds(self) -> float | None:
        return None if self.summary.get("seconds") is None else float(self.summary["seconds"])


@dataclass(frozen=True)
class RouteStatus:
    """One route's health at ``as_of``; every figure comes from the store."""

    route: str
    as_of: dt.datetime
    lookback: dt.timedelta
    backlog: int
    oldest_pending: dt.datetime | None
    unfolded: int
    published_1h: int
    published_24h: int
    set_aside: tuple[SetAsideRow, ...]
    last_run: LastRun | None

    @property
    def oldest_pending_age_seconds(self) -> float | None:
        if self.oldest_pending is None:
            return None
        return max((self.as_of - self.oldest_pending).total_seconds(), 0.0)

    @property
    def last_run_age_seconds(self) -> float | None:
        if self.last_run is None or self.last_run.finished_at is None:
            return None
        return max((self.as_of - self.last_run.finished_at).total_seconds(), 0.0)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``: datetimes as ISO 8601, ages in seconds."""
        run = self.last_run
        return {
            "route": self.route,
            "as_of": self.as_of.isoformat(),
            "lookback_seconds": self.lookback.total_seconds(),
            "backlog": self.backlog,
            "oldest_pending": _iso(self.oldest_pending),
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "unfolded": self.unfolded,
            "published_1h": self.published_1h,
            "published_24h": self.published_24h,
            "set_aside_count": len(self.set_aside),
            "set_aside": [
                {"execution_id": r.execution_id, "triggered_at": _iso(r.triggered_at),
                 "attempts": r.attempts, "last_error": r.last_error,
                 "set_aside_at": _iso(r.set_aside_at)}
                for r in self.set_aside
            ],
            "last_run": None if run is None else {
                "run_id": run.run_id, "finished_at": _iso(run.finished_at),
                "age_seconds": self.last_run_age_seconds, "stopped": run.stopped,
                "summary": dict(run.summary),
            },
        }


def gather(store: OutboxStore, now: dt.datetime, lookback: dt.timedelta) -> RouteStatus:
    """Read one route's status: five cheap calls, every one partition-filtered.

    ``poll`` with limit 0 returns the backlog statistics and no rows. The
    published counts look one day further back than ``lookback`` so that a row
    triggered just before the window but published in the last day still counts.
    """
    stats = store.poll(now - lookback, 0)
    count_since = now - lookback - DAY
    last = store.last_run(now - LAST_RUN_WINDOW)
    return RouteStatus(
        route=store.route,
        as_of=now,
        lookback=lookback,
        backlog=stats.backlog,
        oldest_pending=stats.oldest,
        unfolded=stats.unfolded,
        published_1h=store.published_count(count_since, now - HOUR),
        published_24h=store.published_count(count_since, now - DAY),
        set_aside=tuple(store.set_aside(now - SET_ASIDE_WINDOW)),
        last_run=LastRun.from_mapping(last) if last is not None else None,
    )


def gather_all(stores: Mapping[str, OutboxStore], now: dt.datetime,
               lookback: dt.timedelta) -> list[RouteStatus]:
    return [gather(store, now, lookback) for store in stores.values()]


def stores_for(settings: Settings, routes: Sequence[str] | None = None) -> dict[str, OutboxStore]:
    """{route name: store} for the routes asked for (default: all), in route order.

    The one place the CLI touches real clients; tests monkeypatch it to hand
    in in-memory stores. Unknown route names raise ConfigError.
    """
    from outbox.wiring import Wiring

    chosen = [settings.route(n) for n in routes] if routes else list(settings.routes)
    wiring = Wiring.build(settings)
    return {r.name: wiring.store(r) for r in chosen}


def humanise(seconds: float | None) -> str:
    """'4m 12s', '2h 05m', '3d 01h': two units are enough to act on."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def age_style(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds > AGE_ALARM.total_seconds():
        return "red"
    if seconds > AGE_WARN.total_seconds():
        return "yellow"
    return ""


def stopped_style(stopped: str | None) -> str:
    """A skipped run (another holds the lease) is worth a look; an error or Pub/Sub down, more."""
    if stopped in (None, "drained", "deadline"):
        return ""
    return "yellow" if stopped == "lease_held" else "red"


def truncate(text: str | None, width: int = ERROR_WIDTH) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render(statuses: Sequence[RouteStatus], console: Console) -> None:
    """The summary table, then the set-aside rows if there are any."""
    # Two-line headers and no vertical rules keep it readable in a 100-column terminal.
    table = Table(Column("route", no_wrap=True), "backlog", "oldest\npending", "unfolded",
                  "published\n1h", "published\n24h", "set\naside", "last run", "stopped",
                  "run\npublished", "run\nseconds", title="outbox status", box=box.SIMPLE_HEAD)
    for s in statuses:
        age = s.oldest_pending_age_seconds
        run = s.last_run
        ran = f"{humanise(s.last_run_age_seconds)} ago" if run else "none in 7d"
        table.add_row(
            s.route,
            Text(str(s.backlog), style=age_style(age)),
            Text(humanise(age), style=age_style(age)),
            str(s.unfolded),
            str(s.published_1h),
            str(s.published_24h),
            Text(str(len(s.set_aside)), style="red" if s.set_aside else ""),
            Text(ran, style="" if run else "yellow"),
            Text(run.stopped if run else "-", style=stopped_style(run.stopped if run else None)),
            _opt(run.published if run else None),
            _opt(f"{run.seconds:.1f}" if run and run.seconds is not None else None),
        )
    console.print(table)
    rows = [(s.route, r) for s in statuses for r in s.set_aside]
    if not rows:
        return
    aside = Table("route", "execution_id", "attempts", "last error",
                  title=f"set-aside rows: {len(rows)} (never retried; see docs/deploy.md)",
                  box=box.SIMPLE_HEAD)
    for route, r in rows:
        aside.add_row(route, r.execution_id, str(r.attempts), truncate(r.last_error))
    console.print(aside)


def to_json(statuses: Sequence[RouteStatus]) -> str:
    return json.dumps({"routes": [s.as_dict() for s in statuses]}, default=_json_default)


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_default(value: object) -> object:
    """For whatever a store left in a run summary (BigQuery JSON may hold timestamps)."""
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)
