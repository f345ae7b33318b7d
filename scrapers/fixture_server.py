"""A local stand-in for BallDontLie and The Odds API: scripted replies, or a generated league.

Why it ships in the package rather than in ``tests/``: ``outbox dev`` runs the
real scrapers against it, so the whole pipeline can run on a laptop with no
API key and no network, and the scraper tests use the same server for their
scripted edge cases. Payload shapes follow docs/formats.md.

Two ways to answer:

- **Scripted** (:meth:`Upstream.on`): per path (and optionally per query
  value), a list of replies in turn; what the tests use to pin one behaviour.
- **Generated** (:class:`League`): a plausible NBA for any date (games, box
  scores whose points add up to the score, events and player points lines
  that follow the clock), with an off day each week and, every so many
  requests, a 500, a 429 or a malformed body, so that retries and failed
  runs show.

Scripted rules win; a request no rule matches goes to the responder, if any,
else 404. Every request is recorded (the last ``keep`` of them) so tests can
count retries and check what was sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from outbox.clock import Clock, utcnow

SAMPLE_DATE = "2026-11-28"
"""The game date of the hand-written sample payloads below."""
EVENTS_PATH = "/v4/sports/basketball_nba/events"
NBA_TIME_ZONE = ZoneInfo("America/New_York")


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


Responder = Callable[[Seen], Reply | None]
"""Answers a request no scripted rule matched; None means 404."""


@dataclass
class _Rule:
    path: str
    query: dict[str, str]
    replies: list[Reply]
    hits: int = 0


class Upstream:
    """A ``ThreadingHTTPServer`` on a free port of 127.0.0.1, in a daemon thread.

    ``keep`` bounds the request record, so that a long ``outbox dev`` session
    does not grow without end; tests keep everything (None).
    """

    def __init__(self, responder: Responder | None = None, *, keep: int | None = None) -> None:
        self.rules: list[_Rule] = []
        self.seen: list[Seen] = []
        self.keep = keep
        self.responder = responder
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
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       name="fixture-server", daemon=True)
        self.thread.start()

    def on(self, path: str, *replies: Reply, **query: str) -> None:
        """Answer GET ``path`` (whose query holds ``query``) with ``replies`` in turn."""
        self.rules.append(_Rule(path, dict(query), list(replies)))

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def _answer(self, target: str, headers: dict[str, str]) -> Reply:
        parts = urlsplit(target)
        seen = Seen(parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), headers)
        with self._lock:
            self.seen.append(seen)
            if self.keep is not None and len(self.seen) > 2 * self.keep:
                del self.seen[: -self.keep]  # trimmed in halves: amortised O(1) per request
            for rule in self.rules:
                if rule.path == seen.path and rule.query.items() <= seen.query.items():
                    reply = rule.replies[min(rule.hits, len(rule.replies) - 1)]
                    rule.hits += 1
                    return reply
        answer = self.responder(seen) if self.responder is not None else None
        return answer or Reply(404, {"error": f"no fixture for {parts.path}"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# -- hand-written sample payloads (docs/formats.md), for scripted tests -------------------

TEAMS = [(14, "LAL", "Los Angeles Lakers"), (2, "BOS", "Boston Celtics"),
         (10, "GSW", "Golden State Warriors"), (6, "DAL", "Dallas Mavericks")]


def team(i: int) -> dict[str, Any]:
    tid, abbr, name = TEAMS[i % len(TEAMS)]
    return {"id": tid, "abbreviation": abbr, "full_name": name}


def game(game_id: int, home: int = 0, visitor: int = 1) -> dict[str, Any]:
    return {"id": game_id, "date": SAMPLE_DATE, "season": 2026, "status": "Final",
            "period": 4, "time": "Final", "postseason": False, "home_team_score": 112,
            "visitor_team_score": 104, "home_team": team(home), "visitor_team": team(visitor)}


def box_score(line_id: int, minutes: str | None = "34:12") -> dict[str, Any]:
    return {"id": line_id, "min": minutes, "pts": 27, "reb": 8, "ast": 5, "stl": 1, "blk": 0,
            "turnover": 3, "fgm": 10, "fga": 19, "fg3m": 3, "fg3a": 7, "ftm": 4, "fta": 5,
            "player": {"id": 237, "first_name": "LeBron", "last_name": "James",
                       "position": "F"},
            "team": {"id": 14, "abbreviation": "LAL"},
            "game": {"id": 18444564, "date": SAMPLE_DATE, "season": 2026}}


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


def odds_path(event_id: str) -> str:
    return f"{EVENTS_PATH}/{event_id}/odds"


# -- a generated league -------------------------------------------------------------------

NBA_TEAMS: tuple[tuple[int, str, str], ...] = (
    (1, "ATL", "Atlanta Hawks"), (2, "BOS", "Boston Celtics"), (3, "BKN", "Brooklyn Nets"),
    (4, "CHA", "Charlotte Hornets"), (5, "CHI", "Chicago Bulls"),
    (6, "CLE", "Cleveland Cavaliers"), (7, "DAL", "Dallas Mavericks"),
    (8, "DEN", "Denver Nuggets"), (9, "DET", "Detroit Pistons"),
    (10, "GSW", "Golden State Warriors"), (11, "HOU", "Houston Rockets"),
    (12, "IND", "Indiana Pacers"), (13, "LAC", "LA Clippers"), (14, "LAL", "Los Angeles Lakers"),
    (15, "MEM", "Memphis Grizzlies"), (16, "MIA", "Miami Heat"), (17, "MIL", "Milwaukee Bucks"),
    (18, "MIN", "Minnesota Timberwolves"), (19, "NOP", "New Orleans Pelicans"),
    (20, "NYK", "New York Knicks"), (21, "OKC", "Oklahoma City Thunder"),
    (22, "ORL", "Orlando Magic"), (23, "PHI", "Philadelphia 76ers"), (24, "PHX", "Phoenix Suns"),
    (25, "POR", "Portland Trail Blazers"), (26, "SAC", "Sacramento Kings"),
    (27, "SAS", "San Antonio Spurs"), (28, "TOR", "Toronto Raptors"), (29, "UTA", "Utah Jazz"),
    (30, "WAS", "Washington Wizards"),
)
"""BallDontLie's team ids (alphabetical by city, as its API numbers them)."""
_EAST = frozenset({1, 2, 3, 4, 5, 6, 9, 12, 16, 17, 20, 22, 23, 28, 30})
_FIRST = ("Jalen", "Marcus", "Tyrese", "Darius", "Anthony", "Devin", "Jaylen", "Trey", "Myles",
          "Keegan", "Cam", "Derrick", "Isaiah", "Jordan", "Malik", "Andre", "Kevin", "Zion",
          "Scottie", "Evan", "Franz", "Brandon", "Josh", "Mikal", "Bam", "Desmond", "Paolo")
_LAST = ("Williams", "Johnson", "Brown", "Green", "Smith", "Harris", "Walker", "Mitchell",
         "Barnes", "Murray", "Allen", "Porter", "Robinson", "Bridges", "Thompson", "Anderson",
         "Jackson", "Holiday", "Edwards", "Banchero", "Wagner", "Mobley", "Haliburton",
         "Sabonis", "Turner", "Gordon", "Hart", "Nance", "Okongwu", "Suggs", "Sharpe")
_POSITIONS = ("G", "G", "F", "F", "C", "G", "F", "F-C", "G-F", "C", "G", "F", "C")
_TIPS_ET = (dt.time(19, 0), dt.time(19, 30), dt.time(20, 0), dt.time(21, 0), dt.time(22, 0))
_PRICES = ((-125, 105), (-120, 100), (-115, -105), (-110, -110), (-105, -115), (100, -120))
"""American odds of Over and Under, each pair with the book's usual margin."""
_BOOKS = (("draftkings", "DraftKings"), ("fanduel", "FanDuel"), ("betmgm", "BetMGM"),
          ("williamhill_us", "Caesars"))
OFF_WEEKDAY = 3
"""Thursday: no games (the one empty day of each week; two days in a row are never empty)."""
GAME_LENGTH = dt.timedelta(hours=2, minutes=24)
ROSTER = 13
DRESSED = 10
"""Players per team with minutes; the rest did not play (``min`` empty or null)."""
PROPS_PER_TEAM = 3
"""Players per team with a points line: enough to look real, few enough that the
odds file stays a few hundred rows (one MERGE parameter)."""
LINES_MOVE_EVERY = dt.timedelta(minutes=5)
"""Books update their lines on this beat; a re-scrape inside it sees the same snapshot,
so repeated dev cycles upsert the same odds rows instead of piling up history."""


@dataclass(frozen=True)
class Faults:
    """Which requests fail, by their number in the server's life (1, 2, ...); 0 is never.

    Counted rather than drawn at random so that a short session is sure to
    show them and a test can say which request fails. Where two rules hit the
    same request, the first listed here wins.
    """

    malformed_every: int = 0
    """200 with a truncated JSON body, which fails the run (a retry would not help)."""
    rate_limited_every: int = 0
    """429 with ``Retry-After``, which the scrapers wait out and retry."""
    server_error_every: int = 0
    """500, which the scrapers retry."""
    retry_after: str = "1"

    def __post_init__(self) -> None:
        if min(self.malformed_every, self.rate_limited_every, self.server_error_every) < 0:
            raise ValueError("fault periods must be >= 0")

    def reply(self, n: int) -> Reply | None:
        """The fault for request number ``n``, if it has one."""
        if self.malformed_every and n % self.malformed_every == 0:
            return Reply(200, b'{"data": [{"id": 1, "date": ')
        if self.rate_limited_every and n % self.rate_limited_every == 0:
            return Reply(429, {"message": "Too many requests"}, {"Retry-After": self.retry_after})
        if self.server_error_every and n % self.server_error_every == 0:
            return Reply(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>")
        return None


NO_FAULTS = Faults()


def nba_today(now: dt.datetime) -> dt.date:
    """The NBA's date at ``now``: the date in New York, where the league keeps its calendar."""
    return now.astimezone(NBA_TIME_ZONE).date()


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _season(day: dt.date) -> int:
    """BallDontLie's ``season``: the year the season started (it starts in October)."""
    return day.year if day.month >= 9 else day.year - 1


@dataclass(frozen=True)
class Player:
    id: int
    first_name: str
    last_name: str
    position: str
    scoring: float
    """Points per 36 minutes: what the box score and the points line are built around."""

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True)
class Game:
    id: int
    day: dt.date
    tip: dt.datetime
    home: int
    visitor: int
    """Indexes into :data:`NBA_TEAMS`."""


class League:
    """A :data:`Responder` that makes up a plausible NBA for whatever date is asked.

    Everything about a date (its games, rosters, final lines) follows from
    ``seed`` and the date, so a re-scrape sees the same games; what changes is
    the clock: a game is scheduled, then live with partial box scores, then
    final, and the odds endpoints list only games not yet finished, as The
    Odds API does. Thursdays are off days, with no games.
    ``api_keys`` (``{"bdl": ..., "odds": ...}``) makes a missing key a 401.
    """

    def __init__(self, seed: int = 0, faults: Faults = NO_FAULTS, clock: Clock = utcnow,
                 api_keys: Mapping[str, str] | None = None) -> None:
        self.seed, self.faults, self.clock = seed, faults, clock
        self.api_keys = dict(api_keys or {})
        self.requests = 0
        self._lock = threading.Lock()
        self._events: dict[str, Game] = {}
        self._names = self._rng("names").sample(
            [(f, la) for f in _FIRST for la in _LAST], len(NBA_TEAMS) * ROSTER)

    # -- the world ------------------------------------------------------------
    @staticmethod
    def is_off_day(day: dt.date) -> bool:
        return day.weekday() == OFF_WEEKDAY

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *parts))))

    def roster(self, team_index: int) -> list[Player]:
        """Thirteen players, the first five starters; names unique in the league, so a
        points line (keyed by player name) never mixes two players."""
        rng = self._rng("roster", team_index)
        team_id = NBA_TEAMS[team_index][0]
        out = []
        for slot in range(ROSTER):
            first, last = self._names[team_index * ROSTER + slot]
            scoring = rng.uniform(18.0, 28.0) if slot < 3 else rng.uniform(8.0, 18.0)
            out.append(Player(team_id * 100 + slot, first, last, _POSITIONS[slot],
                              round(scoring, 1)))
        return out

    def games(self, day: dt.date) -> list[Game]:
        if self.is_off_day(day):
            return []
        rng = self._rng("games", day.isoformat())
        count = rng.randint(4, 12)
        teams = rng.sample(range(len(NBA_TEAMS)), 2 * count)
        tips = sorted(rng.choice(_TIPS_ET) for _ in range(count))
        base = 15_000_000 + (day.toordinal() % 100_000) * 20
        return [Game(base + i, day, dt.datetime.combine(day, tips[i], NBA_TIME_ZONE),
                     teams[2 * i], teams[2 * i + 1]) for i in range(count)]

    def _progress(self, game: Game, now: dt.datetime) -> float:
        """0 before the tip, 1 once final, the share of the game played in between."""
        played = (now - game.tip) / GAME_LENGTH
        return min(1.0, max(0.0, played))

    def box_lines(self, game: Game, now: dt.datetime) -> list[dict[str, Any]]:
        """Every player's line of ``game`` as far as it has been played."""
        progress = self._progress(game, now)
        if progress == 0.0:
            return []
        out: list[dict[str, Any]] = []
        for side in (game.home, game.visitor):
            rng = self._rng("box", game.id, side)
            team_id, abbr, _ = NBA_TEAMS[side]
            for slot, player in enumerate(self.roster(side)):
                minutes = (rng.uniform(30, 38) if slot < 5 else rng.uniform(8, 24)) * progress
                line = self._line(rng, player, minutes, dressed=slot < DRESSED)
                out.append({"id": game.id * 100 + len(out), **line,
                            "player": {"id": player.id, "first_name": player.first_name,
                                       "last_name": player.last_name,
                                       "position": player.position},
                            "team": {"id": team_id, "abbreviation": abbr},
                            "game": {"id": game.id, "date": game.day.isoformat(),
                                     "season": _season(game.day)}})
        return out

    @staticmethod
    def _line(rng: random.Random, player: Player, minutes: float,
              dressed: bool) -> dict[str, Any]:
        """A consistent stat line: points = 2 * twos + 3 * threes + free throws made."""
        if not dressed or minutes < 1:
            return {"min": rng.choice(["", None]), **dict.fromkeys(
                ("pts", "reb", "ast", "stl", "blk", "turnover", "pf", "fgm", "fga", "fg3m",
                 "fg3a", "ftm", "fta"), 0)}
        target = player.scoring * minutes / 36 * rng.uniform(0.6, 1.4)
        fg3m = int(target * rng.uniform(0.1, 0.35) / 3)
        ftm = int(target * rng.uniform(0.1, 0.25))
        twos = max(0, round((target - 3 * fg3m - ftm) / 2))
        fgm = twos + fg3m
        fga = fgm + rng.randint(fgm // 2, fgm + 3)
        fg3a = min(fga, fg3m + rng.randint(0, 4))
        fta = ftm + rng.randint(0, 2)
        seconds = int(minutes * 60)
        shown = f"{seconds // 60}:{seconds % 60:02d}" if rng.random() < 0.85 else str(
            seconds // 60)  # older BallDontLie seasons give whole minutes only
        return {"min": shown, "pts": 2 * twos + 3 * fg3m + ftm,
                "reb": int(minutes / 36 * rng.uniform(2, 11)),
                "ast": int(minutes / 36 * rng.uniform(1, 8)), "stl": rng.randint(0, 2),
                "blk": rng.randint(0, 2), "turnover": rng.randint(0, 4),
                "pf": rng.randint(0, 5), "fgm": fgm, "fga": fga, "fg3m": fg3m, "fg3a": fg3a,
                "ftm": ftm, "fta": fta}

    def game_record(self, game: Game, now: dt.datetime) -> dict[str, Any]:
        """The game as ``/v1/games`` lists it; the score is the sum of its box score."""
        progress = self._progress(game, now)
        points = {game.home: 0, game.visitor: 0}
        for line in self.box_lines(game, now):
            points[game.home if line["team"]["id"] == NBA_TEAMS[game.home][0]
                   else game.visitor] += line["pts"]
        if progress == 0.0:
            status, period, clock_text = _z(game.tip), 0, None
        elif progress == 1.0:
            status, period, clock_text = "Final", 4, "Final"
            if points[game.home] == points[game.visitor]:
                points[game.home] += 1  # a late free throw: the league has no ties
        else:
            quarter = min(4, 1 + int(progress * 4))
            left = int((1 - (progress * 4 - (quarter - 1))) * 720)
            status = ("1st Qtr", "2nd Qtr", "3rd Qtr", "4th Qtr")[quarter - 1]
            period, clock_text = quarter, f"{left // 60}:{left % 60:02d}"
        return {"id": game.id, "date": game.day.isoformat(), "season": _season(game.day),
                "status": status, "period": period, "time": clock_text, "postseason": False,
                "home_team_score": points[game.home],
                "visitor_team_score": points[game.visitor],
                "home_team": self._team(game.home), "visitor_team": self._team(game.visitor)}

    @staticmethod
    def _team(index: int) -> dict[str, Any]:
        tid, abbr, name = NBA_TEAMS[index]
        city = name.rsplit(" ", 1)[0] if abbr != "POR" else "Portland"
        return {"id": tid, "abbreviation": abbr, "full_name": name, "city": city,
                "conference": "East" if tid in _EAST else "West"}

    def event_id(self, game: Game) -> str:
        return hashlib.md5(f"{self.seed}:{game.id}".encode(), usedforsecurity=False).hexdigest()

    def event(self, game: Game) -> dict[str, Any]:
        return {"id": self.event_id(game), "sport_key": "basketball_nba", "sport_title": "NBA",
                "commence_time": _z(game.tip), "home_team": NBA_TEAMS[game.home][2],
                "away_team": NBA_TEAMS[game.visitor][2]}

    def event_odds(self, game: Game, now: dt.datetime) -> dict[str, Any]:
        """The event with player points lines; none posted yet the day before."""
        if game.tip - now > dt.timedelta(hours=20):
            return {**self.event(game), "bookmakers": []}
        beat = int(now.timestamp() // LINES_MOVE_EVERY.total_seconds())
        snapshot = dt.datetime.fromtimestamp(beat * LINES_MOVE_EVERY.total_seconds(), dt.UTC)
        books = []
        for key, title in _BOOKS[: 2 + game.id % 3]:
            rng = self._rng("odds", game.id, key, beat)
            updated = _z(snapshot - dt.timedelta(seconds=rng.randint(0, 240)))
            outcomes = []
            for side in (game.home, game.visitor):
                for player in self.roster(side)[:PROPS_PER_TEAM]:
                    point = round(player.scoring * 0.9 + rng.choice((-1, 0, 0, 1))) + 0.5
                    over, under = rng.choice(_PRICES)
                    outcomes += [{"name": "Over", "description": player.name, "price": over,
                                  "point": point},
                                 {"name": "Under", "description": player.name, "price": under,
                                  "point": point}]
            books.append({"key": key, "title": title, "last_update": updated,
                          "markets": [{"key": "player_points", "last_update": updated,
                                       "outcomes": outcomes}]})
        return {**self.event(game), "bookmakers": books}

    # -- the HTTP side ----------------------------------------------------------
    def __call__(self, request: Seen) -> Reply | None:
        if fault := self._fault():
            return fault
        now = self.clock()
        if request.path in ("/v1/games", "/v1/stats"):
            if self.api_keys.get("bdl") and request.headers.get(
                    "Authorization") != self.api_keys["bdl"]:
                return Reply(401, {"error": "Unauthorized"})
            return self._balldontlie(request, now)
        if request.path.startswith(EVENTS_PATH):
            if self.api_keys.get("odds") and request.query.get("apiKey") != self.api_keys["odds"]:
                return Reply(401, {"message": "API key is not valid", "error_code":
                                   "INVALID_KEY"})
            return self._odds_api(request, now)
        return None

    def _fault(self) -> Reply | None:
        with self._lock:
            self.requests += 1
            n = self.requests
        return self.faults.reply(n)

    def _balldontlie(self, request: Seen, now: dt.datetime) -> Reply:
        try:
            day = dt.date.fromisoformat(request.query.get("dates[]", ""))
            per_page = min(100, max(1, int(request.query.get("per_page", "25"))))
            start = int(request.query.get("cursor", "0"))
        except ValueError as exc:
            return Reply(400, {"error": f"bad query: {exc}"})
        games = self.games(day)
        rows = ([self.game_record(g, now) for g in games] if request.path == "/v1/games"
                else [line for g in games for line in self.box_lines(g, now)])
        page = rows[start:start + per_page]
        more = start + per_page < len(rows)
        return Reply(body={"data": page, "meta": {
            "next_cursor": start + per_page if more else None, "per_page": per_page}})

    def _odds_api(self, request: Seen, now: dt.datetime) -> Reply:
        tail = request.path[len(EVENTS_PATH):].strip("/")
        if not tail:
            try:
                start = dt.datetime.fromisoformat(request.query["commenceTimeFrom"])
                end = dt.datetime.fromisoformat(request.query["commenceTimeTo"])
            except (KeyError, ValueError):
                return Reply(422, {"message": "commenceTimeFrom and commenceTimeTo are required"
                                   " as ISO 8601 times", "error_code": "INVALID_PARAMETER"})
            days = {start.date() - dt.timedelta(days=1), start.date(), end.date()}
            listed = [g for d in sorted(days) for g in self.games(d)
                      if start <= g.tip <= end and self._progress(g, now) < 1.0]
            with self._lock:
                self._events.update((self.event_id(g), g) for g in listed)
            return Reply(body=[self.event(g) for g in listed])
        event_id, _, rest = tail.partition("/")
        with self._lock:
            found = self._events.get(event_id)
        if rest != "odds" or found is None:
            return Reply(404, {"message": "Event not found. The event may have expired or "
                               "the event id is invalid.", "error_code": "EVENT_NOT_FOUND"})
        return Reply(body=self.event_odds(found, now))
