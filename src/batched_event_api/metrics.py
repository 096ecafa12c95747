"""Prometheus metrics of one server (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, uploads: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The upload metrics are kept out of /metrics when there is no bucket (always 0, misleading).
        u = r if uploads else None
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.events = Counter("bea_events_accepted", "Events written and acknowledged", registry=r)
        self.bytes = Counter("bea_request_bytes", "Request body bytes received (after decompression)", registry=r)
        self.requests = Counter("bea_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.late = Counter(
            "bea_late_events",
            "Events earlier than the start of the window they joined (--align interval: of a window committed already)",
            registry=r,
        )
        self.windows = Counter("bea_windows_committed", "Window files committed", registry=r)
        self.replays = Counter(
            "bea_idempotent_replays", "Requests answered from an already applied Idempotency-Key", registry=r
        )
        self.open_start = Gauge(
            "bea_open_window_start_seconds",
            "Start of the oldest open window (event time, Unix seconds); 0 when none",
            registry=r,
        )
        self.pending = Gauge("bea_pending_bytes", "Request body bytes received and not yet written", registry=r)
        self.open_rows = Gauge("bea_open_window_rows", "Rows in the open windows", registry=r)
        self.group_size = Histogram(
            "bea_commit_group_requests",
            "Requests written together in one commit round (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
            registry=r,
        )
        self.backlog_windows = Gauge(
            "bea_upload_backlog_windows", "Committed windows waiting to be uploaded to the bucket", registry=u
        )
        self.backlog_bytes = Gauge(
            "bea_upload_backlog_bytes", "Bytes of committed windows waiting to be uploaded", registry=u
        )
        self.uploads = Counter("bea_uploads", "Window uploads by result", ["result"], registry=u)
        self.upload_failures = Counter(
            "bea_upload_failures",
            "Failed turns of the uploader by stage (release, scan, upload), each retried with backoff",
            ["stage"],
            registry=u,
        )
        self.upload_duration = Histogram(
            "bea_upload_duration_seconds",
            "Time to upload one window (all its attempts at names)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=u,
        )
        self.duration = Histogram(
            "bea_request_duration_seconds",
            "Time from request start to response, by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        # Labelled children are looked up once per (route, status): labels() costs a lock and a dict.
        key = (route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(route, str(status)), self.duration.labels(route))
        children[0].inc()
        children[1].observe(seconds)
