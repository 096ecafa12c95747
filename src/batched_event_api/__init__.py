"""batched-event-api: NDJSON user events over HTTP into CSV files, one per window of event time."""

__version__ = "0.8.0"  # also in CHANGELOG.md
