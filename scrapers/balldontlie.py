"""BallDontLie scrapers: games and player box scores for one date.

Both endpoints page with ``meta.next_cursor`` and differ only in their path,
so the paging lives once in :class:`BallDontLieScraper`. Each run writes one
file with every page's ``data`` and ``meta.next_cursor`` null
(docs/formats.md), which is what the processors read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from scrapers.base import API_KEY_OPTION, DATE_OPTION, Scraper, UnexpectedResponse

PER_PAGE = 100
MAX_PAGES = 200
"""A day has ~15 games and ~400 box-score lines; 200 pages means a looping cursor."""


class BallDontLieScraper(Scraper):
    """A ``{base}/v1/<endpoint>?dates[]=D`` scraper; the key goes in ``Authorization``."""

    endpoint: ClassVar[str]
    options = (DATE_OPTION, API_KEY_OPTION)
    base_url_env = "BDL_BASE_URL"
    default_base_url = "https://api.balldontlie.io"
    api_key_env = "BDL_API_KEY"

    def fetch(self) -> dict[str, Any]:
        headers = {"Authorization": self.api_key} if self.api_key else {}
        params = {"dates[]": self.opts["date"], "per_page": str(PER_PAGE)}
        rows: list[Any] = []
        seen: set[str] = set()
        for page in range(1, MAX_PAGES + 1):
            body = self.get_json(self.endpoint, params, headers)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise UnexpectedResponse(f"{self.endpoint} page {page}: no `data` list")
            rows.extend(body["data"])
            meta = body.get("meta")
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if cursor is None or cursor == "":
                self.stats["pages"] = page
                return {"data": rows, "meta": {"next_cursor": None, "per_page": PER_PAGE}}
            if str(cursor) in seen:
                raise UnexpectedResponse(f"{self.endpoint}: cursor {cursor!r} came back twice")
            seen.add(str(cursor))
            params = {**params, "cursor": str(cursor)}
        raise UnexpectedResponse(f"{self.endpoint}: still paging after {MAX_PAGES} pages")

    def count_records(self, payload: Any) -> int:
        return len(payload["data"])


class BdlGamesScraper(BallDontLieScraper):
    """The day's games and scores (``nba_raw.bdl_games``)."""

    name = "bdl_games_scraper"
    prefix = "ball-dont-lie/games"
    endpoint = "/v1/games"


class BdlPlayerBoxScoresScraper(BallDontLieScraper):
    """Every player's box score line of the day (``nba_raw.bdl_player_box_scores``)."""

    name = "bdl_player_box_scores_scraper"
    prefix = "ball-dont-lie/player-box-scores"
    endpoint = "/v1/stats"
