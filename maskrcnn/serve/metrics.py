"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class ServeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("maskrcnn_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram("maskrcnn_request_seconds", "HTTP request latency", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("maskrcnn_errors", "requests that failed, by reason", ["reason"], registry=r)
        self.model_seconds = Histogram("maskrcnn_model_seconds", "model call time (one batch)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.encode_seconds = Histogram("maskrcnn_encode_seconds", "response encoding time (RLE + JSON)",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("maskrcnn_batch_size", "images per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.in_flight = Gauge("maskrcnn_in_flight_requests", "prediction requests being handled", registry=r)
        self.ready = Gauge("maskrcnn_ready", "1 once the model is loaded", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)
