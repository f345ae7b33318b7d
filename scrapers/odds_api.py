"""The Odds API: player points props for every NBA event of one date.

Two steps: the day's events, then one odds call per event. An event whose
odds call fails (after retries) is left out of the file and counted in
``records_failed``, so the run is ``partial`` rather than losing the other
events' props. The file is a JSON array of the per-event responses
(docs/formats.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from scrapers.base import API_KEY_OPTION, DATE_OPTION, Scraper, UnexpectedResponse
from scrapers.http import UpstreamError

SPORT = "basketball_nba"
MARKET = "player_points"
DAY_STARTS_UTC = dt.time(6, 0)
"""An NBA date is a US date: its games tip off between about 12:00 and 22:30 ET,
i.e. 16:00Z on D to 03:30Z on D+1. The window [D 06:00Z, D+1 06:00Z) holds
exactly those games, whatever the daylight-saving offset, with no tz database."""


def commence_window(date: str) -> tuple[str, str]:
    """``commenceTimeFrom`` and ``commenceTimeTo`` for the NBA date ``date``."""
    start = dt.datetime.combine(dt.date.fromisoformat(date), DAY_STARTS_UTC)
    end = start + dt.timedelta(days=1, seconds=-1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


class OddsApiPlayerPropsScraper(Scraper):
    """Player points over/under lines from US bookmakers (``odds_api_player_points_props``)."""

    name = "oddsa_player_props"
    prefix = "odds-api/player-props"
    options = (DATE_OPTION, API_KEY_OPTION)
    base_url_env = "ODDS_API_BASE_URL"
    default_base_url = "https://api.the-odds-api.com"
    api_key_env = "ODDS_API_KEY"

    def _key(self) -> dict[str, str]:
        return {"apiKey": self.api_key} if self.api_key else {}

    def fetch(self) -> list[Any]:
        start, end = commence_window(self.opts["date"])
        events = self.get_json(f"/v4/sports/{SPORT}/events",
                               {**self._key(), "commenceTimeFrom": start, "commenceTimeTo": end})
        if not isinstance(events, list):
            raise UnexpectedResponse("events: expected a JSON array")
        params = {**self._key(), "regions": "us", "markets": MARKET, "oddsFormat": "american"}
        out: list[Any] = []
        for event in events:
            event_id = event.get("id") if isinstance(event, dict) else None
            if not isinstance(event_id, str) or not event_id:
                self.record_failure("event without an id", UnexpectedResponse(str(event)[:80]))
                continue
            try:
                odds = self.get_json(f"/v4/sports/{SPORT}/events/{event_id}/odds", params)
                if not isinstance(odds, dict):
                    raise UnexpectedResponse("expected a JSON object")
            except UpstreamError as exc:
                self.record_failure(f"event {event_id}", exc)
                continue
            out.append(odds)
        self.stats.update(events=len(events), events_with_odds=len(out),
                          bookmakers=sum(len(b) for o in out
                                         if isinstance(b := o.get("bookmakers"), list)))
        return out

    def count_records(self, payload: Any) -> int:
        return len(payload)
