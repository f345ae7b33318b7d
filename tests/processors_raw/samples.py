"""Realistic raw files, shaped as docs/formats.md says, and events that point at them."""

from __future__ import annotations

import copy
import json
from typing import Any

from processors.base import Event

DAY = "2026-11-28"


def event(path: str, execution_id: str = "a1b2c3d4") -> Event:
    return Event(execution_id=execution_id, format="v1", gcs_path=f"gs://nba-scraped-data/{path}")


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


Team = tuple[int, str]


def game(game_id: int, home: Team, visitor: Team, **kw: Any) -> dict[str, Any]:
    g = {"id": game_id, "date": DAY, "season": 2026, "status": "Final", "period": 4,
         "time": "Final", "postseason": False, "home_team_score": 112, "visitor_team_score": 104,
         "home_team": {"id": home[0], "abbreviation": home[1], "full_name": f"{home[1]} team"},
         "visitor_team": {"id": visitor[0], "abbreviation": visitor[1],
                          "full_name": f"{visitor[1]} team"}}
    g.update(kw)
    return g


def games_file(*games: dict[str, Any], next_cursor: int | None = None) -> dict[str, Any]:
    if not games:
        games = (game(18444564, (14, "LAL"), (2, "BOS")), game(18444565, (10, "GSW"), (24, "PHX"),
                 status="3rd Qtr", period=3, time="5:32", home_team_score=80,
                 visitor_team_score=77))
    return {"data": list(games), "meta": {"next_cursor": next_cursor, "per_page": 100}}


def stat_line(player_id: int, first: str, last: str, game_id: int = 18444564,
              team: tuple[int, str] = (14, "LAL"), **kw: Any) -> dict[str, Any]:
    line = {"id": player_id * 10, "min": "34:12", "pts": 27, "reb": 8, "ast": 5, "stl": 1,
            "blk": 0, "turnover": 3, "fgm": 10, "fga": 19, "fg3m": 3, "fg3a": 7, "ftm": 4,
            "fta": 5,
            "player": {"id": player_id, "first_name": first, "last_name": last, "position": "F"},
            "team": {"id": team[0], "abbreviation": team[1]},
            "game": {"id": game_id, "date": DAY, "season": 2026}}
    line.update(kw)
    return line


def box_scores_file(*lines: dict[str, Any]) -> dict[str, Any]:
    if not lines:
        lines = (stat_line(237, "LeBron", "James"),
                 stat_line(666786, "Austin", "Reaves", min="31", pts=18),
                 stat_line(1, "Jayson", "Tatum", team=(2, "BOS"), min="", pts=0, reb=0, ast=0),
                 stat_line(2, "Bench", "Guy", team=(2, "BOS"), min=None, pts=None))
    return {"data": list(lines), "meta": {"next_cursor": None, "per_page": 100}}


def outcomes(player: str, point: float, over: int, under: int) -> list[dict[str, Any]]:
    return [{"name": "Over", "description": player, "price": over, "point": point},
            {"name": "Under", "description": player, "price": under, "point": point}]


def odds_event(event_id: str = "e912304de2b2ce35b473ce2ecd3d1502",
               commence: str = "2026-11-29T00:10:00Z", update: str = "2026-11-28T18:03:11Z",
               lebron: tuple[float, int, int] = (25.5, -115, -105)) -> dict[str, Any]:
    def book(key: str, title: str) -> dict[str, Any]:
        return {"key": key, "title": title, "last_update": update,
                "markets": [{"key": "player_points", "last_update": update,
                             "outcomes": [*outcomes("LeBron James", *lebron),
                                          *outcomes("Austin Reaves", 15.5, -110, -110)]}]}
    return {"id": event_id, "sport_key": "basketball_nba", "commence_time": commence,
            "home_team": "Los Angeles Lakers", "away_team": "Boston Celtics",
            "bookmakers": [book("draftkings", "DraftKings"), book("fanduel", "FanDuel")]}


def odds_file(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return list(events) if events else [odds_event()]


def changed(doc: Any, path: str, value: Any) -> Any:
    """A deep copy of ``doc`` with the value at ``a.0.b`` replaced, or deleted if ``...``."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return out
