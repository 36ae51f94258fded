"""HTTP/1.1 front end (stdlib ThreadingHTTPServer) and the service lifecycle.

One thread per connection reads and validates requests; inference itself runs
in the bounded WorkerPool. Routes (Open Inference Protocol, KServe v2):

    GET  /v2/health/live            200 while the process runs
    GET  /v2/health/ready           200 once models are loaded and warmed, else 503
    GET  /v2                        server metadata (+ "nnpack", "cpu_drift", "release",
                                    "config_digest", "conv_backends": per model)
    GET  /v2/models/{name}          model metadata (+ "conv_backends": per layer)
    GET  /v2/models/{name}/ready    200 / 503 / 404
    POST /v2/models/{name}/infer    JSON or binary tensor data
    GET  /metrics                   Prometheus text format
"""

from __future__ import annotations

import json
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterable, Optional
from urllib.parse import unquote

from . import SERVER_NAME, __version__, conv_backends, listen_address, logs, notify
from .drift import DriftReport
from .metrics import Metrics
from .models import Model
from .nnpack import Decision
from .protocol import HEADER_LENGTH, ProtocolError, encode_infer_response, parse_infer
from .workers import QueueFull, WorkerPool

log = logs.get("server")

MODEL_PATH_RE = re.compile(r"^/v2/models/([^/]+)(/ready|/infer)?/?$")
DRAIN_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0  # keep-alive connections idle longer than this are closed


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


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None,
                 close: bool = False):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.close = close


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive
    server_version = f"{SERVER_NAME}/{__version__}"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
    # plus the client's delayed ACK would add ~40 ms to responses.
    disable_nagle_algorithm = True

    # -- plumbing ---------------------------------------------------------------

    @property
    def app(self) -> App:
        return self.server.app

    def log_message(self, fmt, *args):  # http.server's per-request stderr line
        log.debug("%s %s", self.address_string(), fmt % args)

    def log_request(self, code="-", size="-"):
        log.debug('%s "%s" %s', self.address_string(), self.requestline, code)

    def _send(self, status: int, chunks: Iterable[bytes], content_type: str,
              headers: Optional[dict] = None) -> None:
        chunks = list(chunks)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        # A body left unread is still in the socket: this connection cannot carry
        # another request, so say so now rather than close it without warning.
        if not getattr(self, "_body_read", True) and \
                self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True
        if self.close_connection or self.app.draining:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            for chunk in chunks:
                self.wfile.write(chunk)
        self._status = status

    def _send_json(self, status: int, obj, headers: Optional[dict] = None) -> None:
        self._send(status, [json.dumps(obj, separators=(",", ":")).encode()],
                   "application/json", headers)

    def send_error(self, code, message=None, explain=None):
        """http.server calls this for malformed requests (bad request line,
        headers too long, unknown method): answer in the protocol's JSON form."""
        self.close_connection = True
        try:
            self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass
        self._count(code)

    def handle_expect_100(self):
        # Refuse oversized bodies before the client starts sending them.
        length = self.headers.get("Content-Length", "")
        if length.strip().isdigit() and int(length) > self.app.config.max_body_bytes:
            self.send_error(413, f"request body of {length} bytes exceeds the limit of "
                                 f"{self.app.config.max_body_bytes} bytes")
            return False
        return super().handle_expect_100()

    def _count(self, status: int, model: str = "", infer: bool = False) -> None:
        elapsed = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        self.app.metrics.request(model, status, elapsed, infer)

    # -- dispatch ---------------------------------------------------------------

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        self._start = time.perf_counter()
        self._status = 0
        self._body_read = False
        model_label, infer = "", False
        self.app.begin()
        try:
            path = unquote(self.path.split("?", 1)[0])
            match = MODEL_PATH_RE.match(path)
            if match:
                name, action = match.group(1), match.group(2) or ""
                infer = action == "/infer"
                if name in self.app.models:
                    model_label = name
                self._model_route(name, action)
            else:
                self._static_route(path.rstrip("/") or "/")
        except HTTPError as exc:
            if exc.close:
                self.close_connection = True
            self._send_json(exc.status, {"error": str(exc)}, exc.headers)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the connection thread silently
            log.exception("internal error on %s %s", self.command, self.path)
            self.close_connection = True
            self._send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})
        finally:
            self.app.end()
            # A body we did not read is still in the socket: the next "request"
            # on this connection would be garbage. Close instead.
            if not self._body_read and self.headers.get("Content-Length", "0").strip() not in ("", "0"):
                self.close_connection = True
            if self._status:
                self._count(self._status, model_label, infer)

    def _only(self, *methods: str) -> None:
        if self.command not in methods:
            raise HTTPError(405, f"method {self.command} not allowed here; use "
                                 f"{', '.join(methods)}", {"Allow": ", ".join(methods)})

    def _static_route(self, path: str) -> None:
        app = self.app
        if path == "/v2/health/live":
            self._only("GET", "HEAD")
            self._send_json(200, {"live": True})
        elif path == "/v2/health/ready":
            self._only("GET", "HEAD")
            self._send_json(200 if app.ready else 503, {"ready": app.ready})
        elif path == "/v2":
            self._only("GET", "HEAD")
            self._send_json(200, app.server_metadata())
        elif path == "/metrics":
            self._only("GET", "HEAD")
            self._send(200, [app.metrics.render().encode()],
                       "text/plain; version=0.0.4; charset=utf-8")
        else:
            raise HTTPError(404, f"no such path: {path}")

    def _model_route(self, name: str, action: str) -> None:
        app = self.app
        if not app.ready:
            why = "shutting down" if app.draining else "not ready (loading models)"
            raise HTTPError(503, f"server is {why}", {"Retry-After": "1"}, close=app.draining)
        model = app.models.get(name)
        if model is None:
            raise HTTPError(404, f"unknown model {name!r}; available: {sorted(app.models)}")
        if action == "":
            self._only("GET", "HEAD")
            self._send_json(200, model.metadata())
        elif action == "/ready":
            self._only("GET", "HEAD")
            self._send_json(200, {"name": name, "ready": True})
        else:
            self._only("POST")
            self._infer(model)

    # -- inference --------------------------------------------------------------

    def _read_body(self) -> bytearray:
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "chunked transfer encoding is not supported; send Content-Length",
                            close=True)
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise HTTPError(411, "Content-Length header required", close=True)
        raw = raw.strip()
        if not raw.isdigit():
            raise HTTPError(400, f"invalid Content-Length {raw!r}", close=True)
        length = int(raw)
        limit = self.app.config.max_body_bytes
        if length > limit:
            raise HTTPError(413, f"request body of {length} bytes exceeds the limit of "
                                 f"{limit} bytes", close=True)
        # A writable buffer: numpy/torch views on it need no extra copy or warning.
        body = bytearray(length)
        view, got = memoryview(body), 0
        while got < length:
            n = self.rfile.readinto(view[got:])
            if not n:
                raise HTTPError(400, f"body ended after {got} of {length} bytes", close=True)
            got += n
        self._body_read = True
        return body

    def _infer(self, model: Model) -> None:
        body = self._read_body()
        try:
            request = parse_infer(model, body, self.headers.get(HEADER_LENGTH))
        except ProtocolError as exc:
            raise HTTPError(exc.status, str(exc)) from None
        del body
        try:
            future = self.app.pool.submit(lambda: self.app.infer(model, request.arrays))
        except QueueFull:
            raise HTTPError(503, f"server busy: inference queue is full "
                                 f"({self.app.config.queue_size} waiting); retry later",
                            {"Retry-After": "1"}) from None
        try:
            results = future.result()
        except Exception as exc:  # noqa: BLE001
            log.error("inference failed for model %r: %s: %s", model.name, type(exc).__name__, exc)
            raise HTTPError(500, f"inference failed: {type(exc).__name__}: {exc}") from None
        try:
            chunks, header_len = encode_infer_response(model, request, results)
        except ProtocolError as exc:
            raise HTTPError(exc.status, str(exc)) from None
        if header_len is None:
            self._send(200, chunks, "application/json")
        else:
            self._send(200, chunks, "application/octet-stream", {HEADER_LENGTH: str(header_len)})


class Server(ThreadingHTTPServer):
    daemon_threads = True        # idle keep-alive connections must not block exit
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, app: App):
        self.address_family = listen_address.family(host)
        self.app = app
        super().__init__((host, port), Handler)

    def handle_error(self, request, client_address):
        # socketserver prints a multi-line traceback to stderr; a client that hangs up
        # is routine (DEBUG), anything else is logged through the one-line formatter.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            log.debug("connection from %s ended: %s: %s", client_address[0], type(exc).__name__, exc)
        else:
            log.exception("error on the connection from %s", client_address[0])

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can
        # stall start-up for seconds on a host with broken DNS: skip it.
        if listen_address.is_ipv6_any(self.server_address[0]):
            # "::" means every address, IPv4 ones too, whatever net.ipv6.bindv6only says.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Service:
    """Start-up, readiness and graceful shutdown around the HTTP server."""

    def __init__(self, app: App):
        self.app = app
        self.httpd: Optional[Server] = None
        self.stop = threading.Event()

    def listen(self) -> None:
        cfg = self.app.config
        self.httpd = Server(cfg.host, cfg.port, self.app)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         name="http", daemon=True).start()
        host, port = self.httpd.server_address[:2]
        log.info("listening on %s", listen_address.url(host, port))

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
        if self.httpd is not None:
            self.httpd.shutdown()        # stop the accept loop
            self.httpd.server_close()    # refuse new connections
        left = app.wait_idle(DRAIN_TIMEOUT_S)
        if left:
            log.warning("drain timed out after %.0f s with %d request(s) in flight",
                        DRAIN_TIMEOUT_S, left)
        else:
            log.info("drained: no requests in flight")
        app.pool.stop(timeout=1.0)
        log.info("stopped")
        return 0
