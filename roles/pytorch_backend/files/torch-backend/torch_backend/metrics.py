"""Prometheus metrics through prometheus_client, in a registry of our own.

Label values are bounded on purpose: the model label exists only on series
about a loaded model (unknown names from clients never become labels, and no
series carries an empty model=""), error kinds and close reasons are fixed
sets, and the build-info gauge's labels are fixed at start-up ("" for unknown).
The latency histogram holds answered inferences only: a 1 ms refusal (400,
413, 503) would drag its quantiles down exactly when the service is in trouble.
The text format lists labels in alphabetical order (prometheus_client does).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ERROR_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               408: "timeout", 411: "length_required", 413: "too_large",
               431: "headers_too_large", 500: "internal", 503: "unavailable"}

# Why the server closed a connection on its own (the label's whole value set).
CLOSE_REASONS = ("header_timeout", "body_timeout", "idle_timeout", "over_connection_cap")

# Why a request was answered 503 or dropped instead of computed (the label's whole value set):
# overload = no queue slot within the queue wait, deadline = not answered within the
# request deadline, draining = shutting down, client_gone = dropped unrun, client left.
SHED_REASONS = ("overload", "deadline", "draining", "client_gone")

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# Counters would each get a *_created series, which nothing here reads.
prometheus_client.disable_created_metrics()


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        # RSS, CPU seconds, open and maximum file descriptors of this process.
        ProcessCollector(registry=reg)
        self._http = Counter("torch_backend_http_responses_total",
                             "HTTP responses by status code, every route.",
                             ["code"], registry=reg)
        self._model_requests = Counter("torch_backend_requests_total",
                                       "HTTP requests to a loaded model's routes, by model and "
                                       "status code.", ["model", "code"], registry=reg)
        self._errors = Counter("torch_backend_errors_total", "HTTP error responses by kind.",
                               ["kind"], registry=reg)
        self._latency = Histogram("torch_backend_request_duration_seconds",
                                  "Latency of answered (200) inference requests, headers in to "
                                  "response written.", ["model"], buckets=LATENCY_BUCKETS,
                                  registry=reg)
        self._inference = Histogram("torch_backend_inference_duration_seconds",
                                    "Time in the model's forward pass.", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=reg)
        self._closed = Counter("torch_backend_connections_closed_total",
                               "Connections the server closed on its own, by reason.",
                               ["reason"], registry=reg)

        self._shed = Counter("torch_backend_requests_shed_total",
                             "Requests refused (503) or dropped unrun, by reason.",
                             ["reason"], registry=reg)
        for reason in SHED_REASONS:  # every series from the start: rates need a zero
            self._shed.labels(reason)

    def gauge(self, name: str, help_text: str, read: Callable[[], float],
              labels: Optional[Mapping[str, str]] = None) -> None:
        """A gauge read at scrape time (no bookkeeping on the hot path).
        `labels` are constant, fixed when registered."""
        if labels:
            gauge = Gauge(name, help_text, list(labels), registry=self.registry)
            gauge.labels(**{k: v or "" for k, v in labels.items()}).set_function(read)
        else:
            Gauge(name, help_text, registry=self.registry).set_function(read)

    def request(self, model: Optional[str], code: int, seconds: float, infer: bool) -> None:
        """One response. `model` is a loaded model's name or None."""
        self._http.labels(str(code)).inc()
        if code >= 400:
            self._errors.labels(ERROR_KINDS.get(code, f"http_{code}")).inc()
        if model:
            self._model_requests.labels(model, str(code)).inc()
            if infer and code == 200:
                self._latency.labels(model).observe(seconds)

    def inference(self, model: str, seconds: float) -> None:
        self._inference.labels(model).observe(seconds)

    def closed(self, reason: str) -> None:
        assert reason in CLOSE_REASONS, reason
        self._closed.labels(reason).inc()

    def shed(self, reason: str) -> None:
        assert reason in SHED_REASONS, reason
        self._shed.labels(reason).inc()

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
