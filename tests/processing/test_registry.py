"""Routing: ordered path fragments first, then scraper names; shadowing is refused."""

from __future__ import annotations

import pytest

from outbox.errors import ConfigError
from processors.base import Event
from processors.registry import RULES, Registry, Rule, shadowed

DAY = "2026-11-28/20261128_100000.json"


def event(path: str | None, scraper: str | None = None) -> Event:
    return Event(execution_id="a1", format="v1", gcs_path=path, scraper_name=scraper)


def test_the_shipped_registry_has_no_shadowing() -> None:
    assert shadowed(RULES) == []
    assert Registry().processors == {"bdl_games", "bdl_player_box_scores",
                                     "oddsa_player_points_props"}


@pytest.mark.parametrize(("path", "processor"), [
    (f"gs://nba-scraped-data/ball-dont-lie/games/{DAY}", "bdl_games"),
    (f"gs://nba-scraped-data/ball-dont-lie/player-box-scores/{DAY}", "bdl_player_box_scores"),
    (f"file:///tmp/raw/ball-dont-lie/player-box-scores/{DAY}", "bdl_player_box_scores"),
    (f"mem://odds-api/player-props/{DAY}", "oddsa_player_points_props"),
])
def test_routes_by_the_first_fragment_in_the_path(path: str, processor: str) -> None:
    match = Registry().resolve(event(path, scraper="bdl_games_scraper"))
    assert match is not None and (match.processor, match.by) == (processor, "path")


@pytest.mark.parametrize(("scraper", "processor"), [
    ("bdl_games_scraper", "bdl_games"),
    ("bdl_player_box_scores_scraper", "bdl_player_box_scores"),
    ("oddsa_player_props", "oddsa_player_points_props"),
])
def test_falls_back_to_the_scraper_name(scraper: str, processor: str) -> None:
    match = Registry().resolve(event(f"gs://b/unexpected/prefix/{DAY}", scraper))
    assert match is not None and (match.processor, match.by) == (processor, "scraper_name")


@pytest.mark.parametrize(("path", "scraper"), [
    (f"gs://b/espn/boxscores/{DAY}", "espn_boxscores"),
    (f"gs://b/espn/boxscores/{DAY}", None),
    (None, None),
    (None, "nbac_schedule"),
])
def test_nothing_claims_an_unknown_event(path: str | None, scraper: str | None) -> None:
    assert Registry().resolve(event(path, scraper)) is None


def test_order_decides_and_the_first_match_wins() -> None:
    registry = Registry([Rule("ball-dont-lie/player-box-scores", "box"),
                         Rule("ball-dont-lie/boxscores", "old_box"),
                         Rule("ball-dont-lie", "anything_bdl")])
    resolved = {p: registry.resolve(event(f"gs://b/ball-dont-lie/{p}/{DAY}"))
                for p in ("player-box-scores", "boxscores", "games")}
    assert {p: m.processor if m else None for p, m in resolved.items()} == {
        "player-box-scores": "box", "boxscores": "old_box", "games": "anything_bdl"}


def test_a_deliberately_shadowed_registry_is_detected() -> None:
    bad = [Rule("ball-dont-lie/games", "bdl_games"),
           Rule("odds-api/player-props", "props"),
           Rule("ball-dont-lie/games-live", "bdl_live")]
    (shadow,) = shadowed(bad)
    assert (shadow.earlier.processor, shadow.later.processor) == ("bdl_games", "bdl_live")
    with pytest.raises(ConfigError, match=r"'ball-dont-lie/games' .* hides it"):
        Registry(bad)
    assert shadowed(list(reversed(bad))) == []


def test_a_short_fragment_first_shadows_every_longer_one() -> None:
    bad = [Rule("ball-dont-lie", "any"), *RULES]
    assert {s.later.processor for s in shadowed(bad)} == {"bdl_games", "bdl_player_box_scores"}


@pytest.mark.parametrize("rules", [
    [Rule("", "bdl_games"), Rule("a/b", "x")],
    [Rule("a/b", "x", ("same_scraper",)), Rule("c/d", "y", ("same_scraper",))],
    [Rule("a/b", "not a name")],
])
def test_invalid_registries_are_refused(rules: list[Rule]) -> None:
    with pytest.raises(ConfigError):
        Registry(rules)
