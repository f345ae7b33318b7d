"""Creating the topics the routes publish to, idempotently."""

from __future__ import annotations

from collections.abc import Iterable

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1


def ensure_topics(
    project: str, topics: Iterable[str], client: pubsub_v1.PublisherClient | None = None
) -> list[tuple[str, bool]]:
    """Create missing topics; return (topic, created) pairs."""
    client = client or pubsub_v1.PublisherClient()
    out = []
    for topic in topics:
        path = client.topic_path(project, topic)
        try:
            client.create_topic(request={"name": path})
            out.append((topic, True))
        except gexc.AlreadyExists:
            out.append((topic, False))
    return out
