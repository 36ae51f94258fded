"""Prometheus text-format metrics, kept in memory (no client library).

Label values are bounded on purpose: the model label is a loaded model's name
or "" (unknown names from clients never become labels), error kinds are a
fixed set, and a gauge's constant labels are fixed at start-up (the build-info
gauge: version, release, config digest; "" for unknown).
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Mapping, Optional, Tuple

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ERROR_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               411: "length_required", 413: "too_large", 500: "internal",
               503: "unavailable"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


class _Histogram:
    def __init__(self):
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        self.total += 1
        self.sum += seconds


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self._requests: Dict[Tuple[str, str], int] = {}
        self._errors: Dict[str, int] = {}
        self._latency: Dict[str, _Histogram] = {}
        self._inference: Dict[str, _Histogram] = {}
        self._gauges: List[Tuple[str, str, Callable[[], float], str]] = []

    def gauge(self, name: str, help_text: str, read: Callable[[], float],
              labels: Optional[Mapping[str, str]] = None) -> None:
        """Register a gauge read at scrape time (no bookkeeping on the hot path).

        `labels` are constant (fixed when registered), in the given order;
        None means a gauge without labels.
        """
        label_text = ",".join(f'{key}="{_escape(value or "")}"'
                              for key, value in (labels or {}).items())
        self._gauges.append((name, help_text, read, "{" + label_text + "}" if label_text else ""))

    def request(self, model: str, code: int, seconds: float, infer: bool) -> None:
        with self._lock:
            key = (model, str(code))
            self._requests[key] = self._requests.get(key, 0) + 1
            if code >= 400:
                kind = ERROR_KINDS.get(code, f"http_{code}")
                self._errors[kind] = self._errors.get(kind, 0) + 1
            if infer and model:
                self._latency.setdefault(model, _Histogram()).observe(seconds)

    def inference(self, model: str, seconds: float) -> None:
        with self._lock:
            self._inference.setdefault(model, _Histogram()).observe(seconds)

    def render(self) -> str:
        lines = []
        with self._lock:
            lines += ["# HELP torch_backend_requests_total HTTP requests by model and status code.",
                      "# TYPE torch_backend_requests_total counter"]
            for (model, code), n in sorted(self._requests.items()):
                lines.append(f'torch_backend_requests_total{{model="{_escape(model)}",'
                             f'code="{code}"}} {n}')
            lines += ["# HELP torch_backend_errors_total HTTP error responses by kind.",
                      "# TYPE torch_backend_errors_total counter"]
            for kind, n in sorted(self._errors.items()):
                lines.append(f'torch_backend_errors_total{{kind="{kind}"}} {n}')
            for name, help_text, table in (
                    ("torch_backend_request_duration_seconds",
                     "Inference request latency, body read to response written.", self._latency),
                    ("torch_backend_inference_duration_seconds",
                     "Time in the model's forward pass.", self._inference)):
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
                for model, hist in sorted(table.items()):
                    label = f'model="{_escape(model)}"'
                    cumulative = 0
                    for bound, count in zip(LATENCY_BUCKETS, hist.counts):
                        cumulative += count
                        lines.append(f'{name}_bucket{{{label},le="{bound}"}} {cumulative}')
                    lines.append(f'{name}_bucket{{{label},le="+Inf"}} {hist.total}')
                    lines.append(f"{name}_sum{{{label}}} {hist.sum:.9f}")
                    lines.append(f"{name}_count{{{label}}} {hist.total}")
        for name, help_text, read, label_text in self._gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                      f"{name}{label_text} {float(read()):g}"]
        return "\n".join(lines) + "\n"
