"""Prometheus metrics of one gateway process (its own registry, exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "comfyfn_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "comfyfn_job_seconds",
            "Job duration by final state",
            ["workflow", "state"],
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
        )
        self.queue_depth = Gauge(
            "comfyfn_server_jobs",
            "Our jobs on each ComfyUI server",
            ["server"],
            registry=self.registry,
        )
        self.failures = Counter(
            "comfyfn_failures_total", "Failures by kind", ["kind"], registry=self.registry
        )
