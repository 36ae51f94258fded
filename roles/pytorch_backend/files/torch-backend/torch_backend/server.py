"""The service: shared state (App) and lifecycle (Service) around the HTTP server.

HTTP is uvicorn's h11 protocol (limits.py adds the connection cap and the
header and idle deadlines) running the ASGI app of routes.py in one event-loop
thread; inference runs in the bounded WorkerPool, JSON decoding and encoding in
a few codec threads. Routes (Open Inference Protocol, KServe v2):

    GET  /v2/health/live            200 while the process runs
    GET  /v2/health/ready           200 once models are loaded and warmed, else 503
    GET  /v2                        server metadata (+ "nnpack", "cpu_drift", "release",
                                    "config_digest", "conv_backends": per model)
    GET  /v2/models/{name}          model metadata (+ "conv_backends": per layer)
    GET  /v2/models/{name}/ready    200 / 503 / 404
    POST /v2/models/{name}/infer    JSON or binary tensor data
         /v2/models/{name}/versions/{v}[/ready|/infer]   the same, for a listed version
    GET  /metrics                   Prometheus text format
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional

import uvicorn

from . import SERVER_NAME, __version__, conv_backends, limits, listen_address, logs, notify
from .drift import DriftReport
from .metrics import Metrics
from .models import Model
from .nnpack import Decision
from .routes import Routes
from .workers import WorkerPool

log = logs.get("server")

DRAIN_TIMEOUT_S = 10.0
BACKLOG = 1024


class App:
    """State shared by all connections."""

    def __init__(self, config, decision: Decision, cpu_capability: str,
                 cpu_drift: Optional[DriftReport] = None, release: Optional[str] = None):
        self.config = config
        # Resolved once at start-up (release.resolve): `current` may have been
        # switched since, which is what the deploy's verifier must notice.
        self.release = release
        self.config_digest = config.config_digest
        self.decision = decision
        self.cpu_capability = cpu_capability
        self.cpu_drift = cpu_drift if cpu_drift is not None else DriftReport(detected=False)
        self.models: Dict[str, Model] = {}
        self.ready = False
        self.draining = False
        self.metrics = Metrics()
        self.pool = WorkerPool(config.workers, config.queue_size)
        self._inflight = 0
        self._idle = threading.Condition()
        # Inference requests admitted (headers in, not yet answered): one per
        # worker plus the queue. Only the event-loop thread touches it.
        self._admitted = 0
        self.capacity = config.workers + config.queue_size
        self.guard = limits.Guard(limits.connection_cap(config.max_connections),
                                  config.header_timeout, config.idle_timeout, self.metrics)
        m = self.metrics
        m.gauge("torch_backend_queue_depth", "Inference requests waiting for a worker.",
                self.pool.depth)
        m.gauge("torch_backend_inference_in_progress", "Inferences running now.",
                self.pool.busy)
        m.gauge("torch_backend_nnpack_enabled", "1 if NNPACK is enabled in torch, else 0.",
                lambda: 1 if decision.enabled else 0)
        m.gauge("torch_backend_cpu_drift",
                "1 if the CPU differs from the one the last deploy recorded, else 0.",
                lambda: 1 if self.cpu_drift.detected else 0)
        m.gauge("torch_backend_open_connections", "HTTP connections open now.",
                self.guard.count)
        m.gauge("torch_backend_max_connections",
                "The connection cap (below the file-descriptor limit).",
                lambda: self.guard.cap)
        m.gauge("torch_backend_ready", "1 when models are loaded and warmed.",
                lambda: 1 if self.ready else 0)
        m.gauge("torch_backend_build_info",
                "Always 1: the version, the release and the configuration digest this "
                "process started with (empty when unknown).",
                lambda: 1, {"version": __version__, "release": self.release or "",
                            "config_digest": self.config_digest or ""})

    def server_metadata(self) -> dict:
        return {
            "name": SERVER_NAME,
            "version": __version__,
            "extensions": ["binary_tensor_data"],
            "nnpack": {"enabled": self.decision.enabled,
                       "decided_by": self.decision.decided_by,
                       "reason": self.decision.reason,
                       "cpu_capability": self.cpu_capability},
            "cpu_drift": self.cpu_drift.metadata(),
            "release": self.release,
            "config_digest": self.config_digest,
            "conv_backends": conv_backends.host_summary(self.models.values()),
        }

    def admit_inference(self) -> bool:
        """Take an inference slot, or False when the workers and the queue are full."""
        if self._admitted >= self.capacity:
            return False
        self._admitted += 1
        return True

    def end_inference(self) -> None:
        self._admitted -= 1

    def begin(self) -> None:
        with self._idle:
            self._inflight += 1

    def end(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no request is being handled; return how many still are."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(left)
            return self._inflight

    def infer(self, model: Model, arrays):
        """Runs in a worker thread."""
        start = time.perf_counter()
        results = model.run(arrays)
        self.metrics.inference(model.name, time.perf_counter() - start)
        return results


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, non-blocking. Made with proto IPPROTO_TCP: asyncio
    turns Nagle's algorithm off (TCP_NODELAY) only on accepted sockets whose proto
    says TCP, and with proto 0 each response's body waited for the client's
    delayed ACK of its headers: 44 ms per request (bench/bench-service)."""
    family = listen_address.family(host)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if listen_address.is_ipv6_any(host):
            # "::" means every address, IPv4 ones too, whatever net.ipv6.bindv6only says.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # No reverse DNS lookup (getfqdn) anywhere: it can stall start-up for
        # seconds on a host with broken DNS.
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Service:
    """Start-up, readiness and graceful shutdown around the HTTP server."""

    def __init__(self, app: App):
        self.app = app
        self.stop = threading.Event()
        self.sock: Optional[socket.socket] = None
        self.server: Optional[uvicorn.Server] = None
        self.thread: Optional[threading.Thread] = None
        # JSON parsing and encoding: as many at once as requests can be admitted.
        self.codec = ThreadPoolExecutor(max_workers=min(app.capacity, 2 * app.config.workers + 2),
                                        thread_name_prefix="codec")

    def _bind(self) -> socket.socket:
        return listen_socket(self.app.config.host, self.app.config.port)

    def listen(self) -> None:
        app = self.app
        cfg = app.config
        self.sock = self._bind()
        # uvicorn logs through its own loggers: into our one-line stderr format,
        # and only its errors unless we run at DEBUG (each refused malformed
        # request would otherwise be a WARNING line in the journal).
        logs.adopt("uvicorn", logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR)
        logs.adopt("asyncio", logging.WARNING)
        config = uvicorn.Config(
            Routes(app, self.codec), loop="asyncio", http=limits.protocol_class(app.guard),
            lifespan="off", interface="asgi3", log_config=None, access_log=False,
            proxy_headers=False, server_header=False, date_header=True,
            headers=[("Server", f"{SERVER_NAME}/{__version__}")],
            timeout_keep_alive=cfg.idle_timeout, timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
            backlog=BACKLOG)
        self.server = uvicorn.Server(config)
        # Off the main thread, uvicorn installs no signal handlers: ours stay.
        self.thread = threading.Thread(target=asyncio.run, args=(self.server.serve([self.sock]),),
                                       name="http", daemon=True)
        self.thread.start()
        host, port = self.sock.getsockname()[:2]
        log.info("listening on %s (at most %d connections)", listen_address.url(host, port),
                 app.guard.cap)

    def install_signal_handlers(self) -> None:
        def on_signal(signum, _frame):
            log.info("received %s: shutting down", signal.Signals(signum).name)
            self.stop.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def add_models(self, models) -> None:
        for model in models:
            self.app.models[model.name] = model

    def become_ready(self) -> None:
        self.app.pool.start()
        self.app.ready = True
        names = ", ".join(sorted(self.app.models))
        log.info("ready: %d model(s): %s", len(self.app.models), names)
        notify.notify(f"READY=1\nSTATUS=ready, serving {len(self.app.models)} model(s)")

    def wait_and_drain(self) -> int:
        while not self.stop.wait(1.0):
            pass
        app = self.app
        app.ready = False
        app.draining = True
        # sd_notify(3): STOPPING=1 tells systemd the shutdown has begun.
        notify.notify("STOPPING=1\nSTATUS=draining in-flight requests")
        started = time.monotonic()
        if self.server is not None:
            # uvicorn closes the listening socket (new connections are refused),
            # closes idle connections and lets in-flight requests finish.
            self.server.should_exit = True
            self.thread.join(DRAIN_TIMEOUT_S + 2.0)
        left = app.wait_idle(max(0.0, DRAIN_TIMEOUT_S - (time.monotonic() - started)))
        if left:
            log.warning("drain timed out after %.0f s with %d request(s) in flight",
                        DRAIN_TIMEOUT_S, left)
        else:
            log.info("drained: no requests in flight")
        app.pool.stop(timeout=1.0)
        self.codec.shutdown(wait=False)
        log.info("stopped")
        return 0
