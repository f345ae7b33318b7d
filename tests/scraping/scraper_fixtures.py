"""A local stand-in for BallDontLie and The Odds API, recorded-style payloads, and a test rig.

A stdlib ``ThreadingHTTPServer`` on a free port answers scripted replies per
path (and optionally per query value); every request is recorded so tests can
count retries and check what was sent. Payloads follow docs/formats.md.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from outbox.blobs import LocalBlobs
from outbox.testing import InMemoryOutboxStore
from scrapers.base import RunReport, ScraperDeps
from scrapers.http import RetryPolicy
from scrapers.registry import REGISTRY

BDL_KEY = "bdl-secret-key-123"
ODDS_KEY = "odds-secret-key-456"
DATE = "2026-11-28"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """JSON-serialisable, or ``bytes`` sent as they are (malformed JSON, HTML error pages)."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Rule:
    path: str
    query: dict[str, str]
    replies: list[Reply]
    hits: int = 0


class Upstream:
    """Scripted replies: for each rule, its replies in order, then the last one again."""

    def __init__(self) -> None:
        self.rules: list[_Rule] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                reply = upstream._answer(self.path, dict(self.headers.items()))
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(
                    reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def on(self, path: str, *replies: Reply, **query: str) -> None:
        """Answer GET ``path`` (whose query holds ``query``) with ``replies`` in turn."""
        self.rules.append(_Rule(path, dict(query), list(replies)))

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def _answer(self, target: str, headers: dict[str, str]) -> Reply:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            self.seen.append(Seen(parts.path, query, headers))
            for rule in self.rules:
                if rule.path == parts.path and rule.query.items() <= query.items():
                    reply = rule.replies[min(rule.hits, len(rule.replies) - 1)]
                    rule.hits += 1
                    return reply
        return Reply(404, {"error": f"no fixture for {parts.path}"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FAST_RETRIES = RetryPolicy(base_wait=0.0, max_wait=0.0, max_retry_after=0.05,
                           timeout=(2.0, 5.0))


@dataclass
class Rig:
    """One test's world: the upstream, the log store and the output directory."""

    upstream: Upstream
    store: InMemoryOutboxStore
    blobs: LocalBlobs
    env: dict[str, str]
    sleeps: list[float] = field(default_factory=list)

    @property
    def deps(self) -> ScraperDeps:
        return ScraperDeps(self.store, self.blobs, env=self.env, retry=FAST_RETRIES,
                           sleep=self.sleeps.append, triggered_by="pytest")

    def run(self, name: str, **opts: Any) -> RunReport:
        return REGISTRY.run(name, self.deps, opts)

    def only_row(self) -> dict[str, Any]:
        assert len(self.store.rows) == 1, self.store.rows
        return self.store.rows[0]

    def file_at(self, row: dict[str, Any]) -> Any:
        return json.loads(self.blobs.read(row["gcs_path"]))


# -- recorded-style payloads (docs/formats.md) ------------------------------------------

TEAMS = [(14, "LAL", "Los Angeles Lakers"), (2, "BOS", "Boston Celtics"),
         (10, "GSW", "Golden State Warriors"), (6, "DAL", "Dallas Mavericks")]


def team(i: int) -> dict[str, Any]:
    tid, abbr, name = TEAMS[i % len(TEAMS)]
    return {"id": tid, "abbreviation": abbr, "full_name": name}


def game(game_id: int, home: int = 0, visitor: int = 1) -> dict[str, Any]:
    return {"id": game_id, "date": DATE, "season": 2026, "status": "Final", "period": 4,
            "time": "Final", "postseason": False, "home_team_score": 112,
            "visitor_team_score": 104, "home_team": team(home), "visitor_team": team(visitor)}


def box_score(line_id: int, minutes: str | None = "34:12") -> dict[str, Any]:
    return {"id": line_id, "min": minutes, "pts": 27, "reb": 8, "ast": 5, "stl": 1, "blk": 0,
            "turnover": 3, "fgm": 10, "fga": 19, "fg3m": 3, "fg3a": 7, "ftm": 4, "fta": 5,
            "player": {"id": 237, "first_name": "LeBron", "last_name": "James",
                       "position": "F"},
            "team": {"id": 14, "abbreviation": "LAL"},
            "game": {"id": 18444564, "date": DATE, "season": 2026}}


def bdl_page(data: list[Any], next_cursor: int | None = None) -> dict[str, Any]:
    return {"data": data, "meta": {"next_cursor": next_cursor, "per_page": 100}}


def odds_event(event_id: str, home: int = 0, away: int = 1) -> dict[str, Any]:
    return {"id": event_id, "sport_key": "basketball_nba", "sport_title": "NBA",
            "commence_time": "2026-11-29T00:10:00Z", "home_team": team(home)["full_name"],
            "away_team": team(away)["full_name"]}


def event_odds(event_id: str, player: str = "LeBron James") -> dict[str, Any]:
    outcomes = [{"name": side, "description": player, "price": price, "point": 25.5}
                for side, price in (("Over", -115), ("Under", -105))]
    return {**odds_event(event_id), "bookmakers": [{
        "key": "draftkings", "title": "DraftKings", "last_update": "2026-11-28T18:03:11Z",
        "markets": [{"key": "player_points", "last_update": "2026-11-28T18:03:11Z",
                     "outcomes": outcomes}]}]}


EVENTS_PATH = "/v4/sports/basketball_nba/events"


def odds_path(event_id: str) -> str:
    return f"{EVENTS_PATH}/{event_id}/odds"
