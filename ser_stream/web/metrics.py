"""The service's Prometheus metrics: what the pipeline did, what its processes report now.

Counters and the latency histogram follow the records (:class:`MetricsSink`, on the
supervisor's thread); queue depths, open streams and restarts are read from the running
session's heartbeats when scraped; the web side counts requests and refusals.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ser_stream.settings import HEARTBEAT_S
from ser_stream.sinks import Sink
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.processes import HUNG_AFTER_MISSES
from ser_stream.web.gateway import Gateway
from ser_stream.wire import Envelope

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsSink"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Processes(Collector):
    """Per process of the running session: queue depth, open streams, restarts."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def collect(self):
        depth = GaugeMetricFamily(
            "ser_stream_stage_queue_depth",
            "Input messages a stage process found waiting at one look, most in its last "
            "heartbeat period",
            labels=["process"],
        )
        streams = GaugeMetricFamily(
            "ser_stream_stage_open_streams",
            "Streams whose state a process holds",
            labels=["process"],
        )
        fresh_after = time.monotonic() - HUNG_AFTER_MISSES * HEARTBEAT_S
        beats = sorted(list(self.run.heartbeats.items()))  # the supervisor's thread writes it
        for label, (beat, heard) in beats:
            if heard < fresh_after:  # a process that stopped reporting is not described
                continue
            if not label.startswith("capture"):
                depth.add_metric([label], beat.queued)
            streams.add_metric([label], beat.streams)
        restarts = CounterMetricFamily(
            "ser_stream_stage_restarts", "Times a process was restarted", labels=["process"]
        )
        counts = dict(list(self.run.restarts.items()))
        for label in sorted(set(counts) | {label for label, _ in beats}):
            restarts.add_metric([label], counts.get(label, 0))
        yield depth
        yield streams
        yield restarts


class Metrics:
    """Every metric of one ``serve``, in its own registry."""

    def __init__(self, run: Run, gateway: Gateway) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ready = Gauge("ser_stream_ready", "1 while every stage is up and serving", registry=r)
        ready.set_function(lambda: 1.0 if gateway.serving else 0.0)
        self.windows = Counter(
            "ser_stream_windows",
            "Windows of speech the VAD emitted (a stream's counted at its end, an upload's when "
            "answered)",
            registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "ser_stream_predictions", "Windows classified, of streams and uploads", registry=r
        )
        self.dropped = Counter(
            "ser_stream_windows_dropped", "Windows never classified, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "ser_stream_errors", "Error records, by the stage that reported them",
            ["stage"], registry=r,
        )  # fmt: skip
        self.streams_ended = Counter(
            "ser_stream_streams_ended", "Streams ended, by reason", ["reason"], registry=r
        )
        self.latency = Histogram(
            "ser_stream_latency_seconds",
            "From the capture of a window's last sample to its prediction",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "ser_stream_http_requests", "HTTP requests answered, by route and status",
            ["route", "status"], registry=r,
        )  # fmt: skip
        streams = Gauge("ser_stream_websocket_streams", "WebSocket streams open now", registry=r)
        streams.set_function(lambda: len(gateway.clients))
        self.refused = Counter(
            "ser_stream_refused", "Requests and streams refused, by reason", ["reason"],
            registry=r,
        )  # fmt: skip
        self.disconnects = Counter(
            "ser_stream_websocket_disconnects",
            "WebSocket clients that left before their stream ended",
            registry=r,
        )
        self.predict_seconds = Histogram(
            "ser_stream_predict_seconds", "Time to answer POST /v1/predict",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=r,
        )  # fmt: skip
        r.register(_Processes(run))

    def count_upload(self, windows: int) -> None:
        """A recording posted to ``/v1/predict`` was classified: ``windows`` windows of it.

        Its windows were cut and classified in the server's own process, not by the stage
        processes, so no record of the session counts them.
        """
        self.windows.inc(windows)
        self.predictions.inc(windows)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsSink(Sink):
    """Counts the session's records into :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Count a prediction and its latency."""
        self.metrics.predictions.inc()
        stamps = envelope.timestamps
        if "model" in stamps and "capture" in stamps:
            self.metrics.latency.observe(max(0.0, (stamps["model"] - stamps["capture"]) / 1e9))

    def error(self, envelope: Envelope) -> None:
        """Count an error record."""
        self.metrics.errors.labels(stage=envelope.body.stage).inc()  # type: ignore[union-attr]

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """Count a stream's windows and drops."""
        self.metrics.streams_ended.labels(reason=reason).inc()
        self.metrics.windows.inc(summary.get("windows", 0))
        for why, count in summary.get("dropped_reasons", {}).items():
            self.metrics.dropped.labels(reason=why).inc(count)
