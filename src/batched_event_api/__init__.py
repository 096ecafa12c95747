"""batched-event-api: NDJSON user events over HTTP into CSV files, one per window of event time."""

__version__ = "0.3.1"  # also in CHANGELOG.md
