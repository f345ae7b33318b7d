"""Which processor handles an event: an ordered table of storage-path fragments.

Why data and not code: the platform routes by the Cloud Storage path, the
first registered fragment contained in ``gcs_path`` wins (design notes §1), so
the order *is* the behaviour. Keeping it as one tuple makes that order visible
in review, and lets :func:`shadowed` prove that no short fragment hides a
longer one behind it (``ball-dont-lie/games`` before a hypothetical
``ball-dont-lie/games-live`` would swallow every path of the latter).

An event whose path matches no fragment is routed by its scraper name, so a
file written under an unexpected prefix still reaches the right processor.
To add a processor: add one :class:`Rule`, longer fragments before shorter
ones they contain; ``tests/processors/test_registry.py`` checks the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from outbox.errors import ConfigError
from outbox.schema import check_identifier
from processors.base import Event


@dataclass(frozen=True)
class Rule:
    fragment: str
    """A piece of the storage path, e.g. ``ball-dont-lie/games``."""
    processor: str
    scraper_names: tuple[str, ...] = ()
    """Scraper names that route here when no fragment matches the path."""


RULES: tuple[Rule, ...] = (
    Rule("ball-dont-lie/player-box-scores", "bdl_player_box_scores",
         ("bdl_player_box_scores_scraper",)),
    Rule("ball-dont-lie/games", "bdl_games", ("bdl_games_scraper",)),
    Rule("odds-api/player-props", "oddsa_player_points_props", ("oddsa_player_props",)),
)
"""The shipped registry (docs/formats.md), most specific fragment first."""


@dataclass(frozen=True)
class Shadow:
    """``earlier`` comes first and is contained in ``later``, so ``later`` never matches."""

    earlier: Rule
    later: Rule

    def __str__(self) -> str:
        return (f"fragment {self.earlier.fragment!r} ({self.earlier.processor}) comes before "
                f"{self.later.fragment!r} ({self.later.processor}) and hides it")


def shadowed(rules: Sequence[Rule]) -> list[Shadow]:
    """Every pair where an earlier fragment is a substring of a later one."""
    return [
        Shadow(earlier, later)
        for i, earlier in enumerate(rules)
        for later in rules[i + 1:]
        if earlier.fragment in later.fragment
    ]


@dataclass(frozen=True)
class Match:
    processor: str
    by: Literal["path", "scraper_name"]
    key: str
    """The fragment or scraper name that matched."""


class Registry:
    """An ordered, checked list of rules; built once at startup."""

    def __init__(self, rules: Iterable[Rule] = RULES) -> None:
        self.rules = tuple(rules)
        problems = [str(s) for s in shadowed(self.rules)]
        by_name: dict[str, str] = {}
        for rule in self.rules:
            if not rule.fragment.strip():
                problems.append(f"empty fragment for {rule.processor}")
            check_identifier(rule.processor, "processor name")
            for name in rule.scraper_names:
                if by_name.setdefault(name, rule.processor) != rule.processor:
                    problems.append(f"scraper {name!r} routes to both {by_name[name]} "
                                    f"and {rule.processor}")
        if problems:
            raise ConfigError("processor registry: " + "; ".join(problems))
        self._by_scraper = by_name

    def check(self, configured: Mapping[str, str]) -> None:
        """Refuse, at startup, a registry naming a processor that is not configured
        (``configured`` maps each key to the processor's own ``name``)."""
        missing = sorted(self.processors - configured.keys())
        if missing:
            raise ConfigError(f"the registry routes to {missing}, which are not configured")
        for key, name in configured.items():
            if key != name:
                raise ConfigError(f"processor {key!r} calls itself {name!r}")

    @property
    def processors(self) -> frozenset[str]:
        return frozenset(r.processor for r in self.rules)

    def resolve(self, event: Event) -> Match | None:
        """The first fragment contained in ``gcs_path``, else the scraper name, else None."""
        if event.gcs_path:
            for rule in self.rules:
                if rule.fragment in event.gcs_path:
                    return Match(rule.processor, "path", rule.fragment)
        if event.scraper_name and event.scraper_name in self._by_scraper:
            return Match(self._by_scraper[event.scraper_name], "scraper_name",
                         event.scraper_name)
        return None

    def describe(self) -> list[dict[str, object]]:
        return [{"fragment": r.fragment, "processor": r.processor,
                 "scraper_names": list(r.scraper_names)} for r in self.rules]
