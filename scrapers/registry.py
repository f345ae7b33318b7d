"""Which scrapers exist, by the stable names the platform logs as ``scraper_name``.

The platform derived names from class names (``BdlGamesScraper`` ->
``bdl_games_scraper``). Here each class states its name explicitly, so that
renaming a class can never rename its events; this table is the only list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scrapers.balldontlie import BdlGamesScraper, BdlPlayerBoxScoresScraper
from scrapers.base import RunReport, Scraper, ScraperDeps
from scrapers.odds_api import OddsApiPlayerPropsScraper
from scrapers.options import COMMON_OPTIONS, InvalidOptions


class Registry:
    """Scraper classes by name; what the service and ``outbox scrape`` run."""

    def __init__(self, classes: Iterable[type[Scraper]]) -> None:
        self.scrapers: dict[str, type[Scraper]] = {}
        for cls in classes:
            if cls.name in self.scrapers:
                raise ValueError(f"two scrapers are named {cls.name!r}")
            self.scrapers[cls.name] = cls

    @property
    def names(self) -> list[str]:
        return sorted(self.scrapers)

    def get(self, name: str) -> type[Scraper]:
        """The class for ``name``; :class:`InvalidOptions` (a 400) for an unknown one."""
        try:
            return self.scrapers[name]
        except (KeyError, TypeError):
            raise InvalidOptions(f"unknown scraper {str(name)[:80]!r}; "
                                 f"known: {', '.join(self.names)}") from None

    def run(self, name: str, deps: ScraperDeps, opts: Mapping[str, Any]) -> RunReport:
        return self.get(name).run(deps, opts)

    def describe(self) -> list[dict[str, Any]]:
        """Names, classes, output prefixes and options, as ``GET /scrapers`` shows them."""
        return [{"name": name, "class": cls.__name__, "prefix": cls.prefix,
                 "options": [o.describe() for o in (*cls.options, *COMMON_OPTIONS)]}
                for name, cls in sorted(self.scrapers.items())]


REGISTRY = Registry([BdlGamesScraper, BdlPlayerBoxScoresScraper, OddsApiPlayerPropsScraper])
