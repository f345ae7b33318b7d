"""Transactional outbox from BigQuery log tables to Pub/Sub.

The core holds the ports (``outbox.ports``), the schema of the log tables
(``outbox.schema``), the message contract (``outbox.messages``) and the
adapters for BigQuery and Pub/Sub. It has no web framework in it.
"""

__version__ = "0.1.0"
