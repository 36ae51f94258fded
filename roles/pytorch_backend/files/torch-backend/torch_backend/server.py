"""The service: shared state (App) and lifecycle (Service) around the HTTP server.

HTTP is uvicorn's h11 protocol (limits.py adds the connection cap and the
header and idle deadlines) running the ASGI app of routes.py in one event-loop
thread; inference runs in the bounded WorkerPool, JSON decoding and encoding in
a few codec threads. Routes (Open Inference Protocol, KServe v2):

    GET  /v2/health/live            200 while the process runs
    GET  /v2/health/ready           200 when the host can take work (App.not_ready_reason)
    GET  /v2                        server metadata (+ "nnpack", "cpu_drift", "release",
                                    "config_digest", "conv_backends": per model, "socket",
                                    "drain_seconds", "request_deadline_seconds", "cpu": the CPU
                                    budget, the threads sized from it, the throttled share)
    GET  /v2/models/{name}          model metadata (+ "conv_backends": per layer)
    GET  /v2/models/{name}/ready    per model: 200 / 503 / 404 (App.model_not_ready_reason)
    POST /v2/models/{name}/infer    JSON or binary tensor data
         /v2/models/{name}/versions/{v}[/ready|/infer]   the same, for a listed version
    GET  /metrics                   Prometheus text format
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Deque, Dict, Optional, Set

import uvicorn

from . import (SERVER_NAME, __version__, conv_backends, cpu_budget, limits, listen_address, logs,
               notify)
from .drift import DriftReport
from .metrics import Metrics
from .models import Model
from .nnpack import Decision
from .routes import Routes
from .workers import WorkerPool

log = logs.get("server")

BACKLOG = 1024
# After the drain: how long answers still being written (and lingering closes) may take.
FLUSH_S = limits.LINGER_S + 1.0
# At SIGTERM, how long a connection taken just before may take to send its first request.
FIRST_REQUEST_GRACE_S = 1.0


def _nan_if_none(value: Optional[float]) -> float:
    return float("nan") if value is None else value


class App:
    """State shared by all connections. Only the event-loop thread changes the
    admission and request bookkeeping; readers elsewhere (metrics) only read."""

    def __init__(self, config, decision: Decision, cpu_capability: str,
                 cpu_drift: Optional[DriftReport] = None, release: Optional[str] = None,
                 socket_source: str = "bound", cpu_stat_start: Optional[str] = None):
        self.config = config
        # cpu.stat as the process started (None: no quota): throttling is counted from it.
        self.cpu_stat_start = cpu_stat_start
        # Resolved once at start-up (release.resolve): `current` may have been
        # switched since, which is what the deploy's verifier must notice.
        self.release = release
        self.config_digest = config.config_digest
        self.decision = decision
        self.cpu_capability = cpu_capability
        self.cpu_drift = cpu_drift if cpu_drift is not None else DriftReport(detected=False)
        self.socket_source = socket_source
        self.models: Dict[str, Model] = {}
        # Names found in the model directory, not yet loaded and warmed: their
        # ready route says 503, not 404.
        self.pending: Set[str] = set()
        self.loaded = False       # every model loaded and warmed, workers running
        self.draining = False     # SIGTERM: not ready; requests already here are answered
        self.drain_expired = False  # the drain time is up: whatever is left gets 503
        self.metrics = Metrics()
        self.pool = WorkerPool(config.workers, config.queue_size)
        # Requests being handled: their task -> Exchange (for the drain's end).
        self.requests: Dict[asyncio.Task, object] = {}
        # Inference requests admitted (headers in, not yet answered): one per
        # worker plus the queue; requests waiting for a slot wait in _waiters.
        self._admitted = 0
        self._waiters: Deque[asyncio.Future] = collections.deque()
        self.capacity = config.workers + config.queue_size
        # Since when every slot has been taken (None: a slot is free).
        self.full_since: Optional[float] = None
        self._last_reason: Optional[str] = None
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
        m.gauge("torch_backend_ready", "1 when /v2/health/ready answers 200.",
                lambda: 1 if self.ready else 0)
        m.gauge("torch_backend_build_info",
                "Always 1: the version, the release and the configuration digest this "
                "process started with (empty when unknown).",
                lambda: 1, {"version": __version__, "release": self.release or "",
                            "config_digest": self.config_digest or ""})
        m.gauge("torch_backend_cpu_budget",
                "CPUs this process may use: its affinity capped by its cgroup's CPU quota "
                "(rounded down, at least 1); workers x intra-op threads fit in it.",
                lambda: config.cores)
        m.gauge("torch_backend_intra_op_threads", "Intra-op threads per inference worker.",
                lambda: config.intra_op_threads)
        # NaN, not 0, when there is no quota: "never throttled" would be a claim.
        m.gauge("torch_backend_cpu_throttled_share",
                "Share of the cgroup's CPU quota periods throttled since the service started "
                "(NaN: no quota or no cpu.stat).",
                lambda: _nan_if_none(self.throttled_share()))

    # --- readiness -----------------------------------------------------------------

    def not_ready_reason(self) -> Optional[str]:
        """Why /v2/health/ready says 503 now, or None. Rules in order: nothing can
        run before the models are warm or once stopping; then overload that lasts
        (a queue full for a moment is normal) and a forward pass past the request
        deadline (its worker is lost to the host until it returns)."""
        if not self.loaded:
            return "loading models"
        if self.draining:
            return "shutting down"
        if self.full_since is not None and \
                time.monotonic() - self.full_since > self.config.overload_grace:
            return (f"overloaded: every inference slot taken for more than "
                    f"{self.config.overload_grace:g} s")
        stuck = self.pool.stuck(self.config.request_deadline)
        if stuck:
            return (f"inference of {', '.join(sorted(stuck))} running for more than "
                    f"{self.config.request_deadline:g} s")
        return None

    def readiness(self) -> Optional[str]:
        """not_ready_reason(), logging each change once a model is loaded (the
        journal then says when and why a load balancer took the host out)."""
        why = self.not_ready_reason()
        if not self.loaded or self.draining:
            return why
        if why != self._last_reason:
            if why is None:
                log.info("ready again")
            else:
                log.warning("not ready: %s", why)
            self._last_reason = why
        return why

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def model_not_ready_reason(self, name: str) -> Optional[str]:
        """Per model: loaded and warmed, not stopping, no forward pass of its own
        stuck past the deadline (another model's overload is not its fault)."""
        if name in self.pending or not self.loaded:
            return "loading"
        if self.draining:
            return "shutting down"
        if name in self.pool.stuck(self.config.request_deadline):
            return f"an inference has been running for more than {self.config.request_deadline:g} s"
        return None

    def throttled_share(self) -> Optional[float]:
        """Share of quota periods throttled since start-up, or None (no quota)."""
        if self.config.cpu_stat is None:
            return None
        return cpu_budget.throttled_share(self.cpu_stat_start,
                                          cpu_budget.read_cpu_stat(self.config.cpu_stat))

    def cpu_metadata(self) -> dict:
        cfg = self.config
        return {"budget": cfg.cores, "affinity": cfg.affinity, "quota_cpus": cfg.quota_cpus,
                "source": cfg.budget_source, "intra_op_threads": cfg.intra_op_threads,
                "inter_op_threads": cfg.inter_op_threads, "workers": cfg.workers,
                "throttled_share": self.throttled_share()}

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
            "socket": self.socket_source,
            "drain_seconds": self.config.drain_seconds,
            "request_deadline_seconds": self.config.request_deadline,
            "cpu": self.cpu_metadata(),
        }

    # --- admission (event-loop thread only) -----------------------------------------

    def _slot_free(self) -> bool:
        # A forward pass still running for a request already answered (deadline,
        # client gone) holds its worker: its slot is not free until it returns.
        return self._admitted + self.pool.orphans() < self.capacity

    async def admit_inference(self, wait: float) -> bool:
        """Take an inference slot, waiting up to `wait` seconds for one; False
        when none came. Waiting costs an idle future, not the event loop's time:
        clients that retry at once on 503 would otherwise keep it busy refusing."""
        if not self._waiters and self._slot_free():
            self._take()
            return True
        if self.full_since is None:
            self.full_since = time.monotonic()
        if wait <= 0:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), wait)
            return True     # hand_over took the slot for us
        except asyncio.TimeoutError:
            # A slot handed over in the same loop turn as the timeout is ours.
            return waiter.done() and not waiter.cancelled()
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.end_inference()   # handed a slot as we were cancelled: give it back
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def _take(self) -> None:
        self._admitted += 1
        if not self._slot_free() and self.full_since is None:
            self.full_since = time.monotonic()

    def end_inference(self) -> None:
        self._admitted -= 1
        self.hand_over()

    def hand_over(self) -> None:
        """Give free slots to the longest-waiting requests (also called when an
        orphaned forward pass returns)."""
        while self._waiters and self._slot_free():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)
        if not self._waiters and self._slot_free():
            self.full_since = None

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
    """Start-up, readiness and graceful shutdown around the HTTP server.

    Bound here (no systemd socket): listen first, so that the service is live
    (and says "not ready") while its models load. Given a socket by systemd:
    accept nothing until ready, because in a handover another process (the old
    release) serves the same socket meanwhile, and a connection this one took
    would wait for the models instead of being served there."""

    def __init__(self, app: App, inherited: Optional[socket.socket] = None):
        self.app = app
        self.inherited = inherited
        self.stop = threading.Event()
        self.sock: Optional[socket.socket] = None
        self.server: Optional[uvicorn.Server] = None
        self.thread: Optional[threading.Thread] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._serving = threading.Event()
        # JSON parsing and encoding: as many at once as requests can be admitted.
        self.codec = ThreadPoolExecutor(max_workers=min(app.capacity, 2 * app.config.workers + 2),
                                        thread_name_prefix="codec")

    def _bind(self) -> socket.socket:
        return listen_socket(self.app.config.host, self.app.config.port)

    def listen(self) -> None:
        if self.inherited is not None:
            self.sock = self.inherited    # served from become_ready on
            return
        self.sock = self._bind()
        self._start_http()

    def _start_http(self) -> None:
        app = self.app
        cfg = app.config
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
            timeout_keep_alive=cfg.idle_timeout, timeout_graceful_shutdown=FLUSH_S,
            backlog=BACKLOG)
        self.server = uvicorn.Server(config)
        # Off the main thread, uvicorn installs no signal handlers: ours stay.
        # The socket goes in as a socket object (sockets=[...]), never as uvicorn's
        # fd=: that wraps it as AF_UNIX and asyncio then leaves Nagle on (activation.py).
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),),
                                       name="http", daemon=True)
        self.thread.start()
        while not self._serving.wait(0.05):
            if not self.thread.is_alive():
                raise OSError("the HTTP server did not start (see the log)")
        host, port = self.sock.getsockname()[:2]
        log.info("listening on %s (at most %d connections; socket %s)",
                 listen_address.url(host, port), app.guard.cap,
                 "from systemd" if self.inherited is not None else "bound here")

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.app.pool.on_orphan_done = self._orphan_done
        started = asyncio.ensure_future(self.server.serve([self.sock]))
        while not self.server.started and not started.done():
            await asyncio.sleep(0.01)
        self._serving.set()
        await started

    def _orphan_done(self) -> None:
        """From a worker: a forward pass nobody waits for ended; its slot is free."""
        try:
            self.loop.call_soon_threadsafe(self.app.hand_over)
        except RuntimeError:
            pass   # the event loop has ended (stopping): nobody is waiting

    def install_signal_handlers(self) -> None:
        def on_signal(signum, _frame):
            log.info("received %s: shutting down", signal.Signals(signum).name)
            self.stop.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def add_models(self, models) -> None:
        for model in models:
            self.app.models[model.name] = model
            self.app.pending.discard(model.name)

    def become_ready(self) -> None:
        app = self.app
        app.pool.start()
        app.loaded = True
        if self.server is None:
            self._start_http()   # systemd's socket: accept from now on
        names = ", ".join(sorted(app.models))
        log.info("ready: %d model(s): %s", len(app.models), names)
        notify.notify(f"READY=1\nSTATUS=ready, serving {len(app.models)} model(s)")

    def wait_and_drain(self) -> int:
        while not self.stop.wait(0.1):
            pass
        app = self.app
        app.draining = True
        drain = app.config.drain_seconds
        # sd_notify(3): STOPPING=1 tells systemd the shutdown has begun.
        notify.notify("STOPPING=1\nSTATUS=draining in-flight requests")
        left = 0
        if self.server is not None and self.loop is not None and self.thread.is_alive():
            try:
                left = asyncio.run_coroutine_threadsafe(self._drain(drain), self.loop).result(
                    drain + FLUSH_S + 5.0)
            except Exception as exc:  # noqa: BLE001 - the stop must go on
                log.warning("drain failed: %s: %s", type(exc).__name__, exc)
            self.server.should_exit = True
            self.thread.join(FLUSH_S + 2.0)
        if left:
            log.warning("drain time of %g s over: %d request(s) answered 503", drain, left)
        else:
            log.info("drained: no requests in flight")
        app.pool.stop(timeout=1.0)
        self.codec.shutdown(wait=False)
        log.info("stopped")
        return 0

    async def _drain(self, drain: float) -> int:
        """Stop accepting, close idle connections, let requests already here finish
        for `drain` seconds, answer what is left 503; return how many that was."""
        app = self.app
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain
        # Our descriptor of the listening socket closes; systemd's (and a new
        # process's) stays open, with the connections queued in it.
        servers = getattr(self.server, "servers", [])
        # Stop accepting first, close after: asyncio attaches a connection it has just
        # accepted to its server in a task of the next loop step, and Server.close() in
        # between drops it (an assertion in Server._attach), which resets its client.
        for server in servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        for server in servers:
            server.close()
        # A connection accepted an instant ago has its client's request on the way (a
        # client connects to send one): closing it would reset it under that request,
        # which a load balancer counts as a failure. Its first request is waited for.
        grace = min(deadline, loop.time() + FIRST_REQUEST_GRACE_S)
        connections = self.server.server_state.connections
        while loop.time() < grace and any(c.awaiting_first_request() for c in connections):
            await asyncio.sleep(0.02)
        for connection in list(connections):
            connection.shutdown()
        # app.requests knows a request once its task runs; a connection knows it once read
        while (app.requests or any(c.in_request() for c in connections)) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        app.drain_expired = True
        left = [task for task, ex in app.requests.items() if not ex.started]
        for task in left:
            app.requests[task].shed_reason = "draining"
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=1.0)
        for connection in list(self.server.server_state.connections):
            connection.shutdown()
        return len(left)
