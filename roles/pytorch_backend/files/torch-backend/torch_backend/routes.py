"""The ASGI application: routes of the Open Inference Protocol (KServe v2).

uvicorn calls it once a request's headers are in, before any of the body has
been read: so everything that can refuse a request without its body (unknown
route, too large, queue full, not ready) does so first, and the body is then
read as it arrives, within a deadline, into a buffer that grows with what came
(never sized from Content-Length, which a client can announce and not send).
JSON decoding and encoding run in the codec threads, off the event loop that
answers health checks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Dict, Iterable, List, Optional, Tuple

import orjson

from . import limits, logs
from .protocol import (HEADER_LENGTH, ProtocolError, check_response_size, encode_infer_response,
                       parse_infer)
from .workers import Dropped as JobDropped
from .workers import QueueFull

log = logs.get("http")
access = logs.get("access")

MODEL_PATH_RE = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?/?$")
JSON = "application/json"
# h11 refuses (431) a request line or header block still incomplete past 16 KiB,
# but takes a larger one that arrives whole: the same bound, whatever the arrival.
# And as http.server had it, at most 100 header fields.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
# Unread bodies up to this size are read and dropped before an error answer (keep-alive).
DISCARD_MAX_BYTES = 64 * 1024
# X-Request-Id taken from a client: visible ASCII (no spaces: one log token), bounded.
REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}\Z")
# W3C trace context: version-traceid-parentid-flags (logged only, never interpreted).
TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")
RETRY_AFTER = {"Retry-After": "1"}


def request_id(given: Optional[str]) -> str:
    """The client's X-Request-Id when it is one token of visible ASCII, at most
    128 characters (it goes into log lines and back into a header); else a new one."""
    if given is not None and REQUEST_ID_RE.match(given):
        return given
    return uuid.uuid4().hex


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None,
                 close: bool = False, shed: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.close = close
        self.shed = shed    # a 503 that sheds load: its reason (metrics.SHED_REASONS)


class ClientGone(Exception):
    """The client closed the connection before its request was in."""


class Exchange:
    """One request and its response, as ASGI hands them over."""

    def __init__(self, scope, receive, send, draining=lambda: False):
        self.draining = draining
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: Dict[str, str] = {}
        self.http_version: str = scope["http_version"]
        self.target: bytes = scope["raw_path"] + b"?" + scope["query_string"]
        self.header_list = scope["headers"]
        for name, value in self.header_list:
            self.headers[name.decode("latin-1")] = value.decode("latin-1")
        self.receive = receive
        self._send = send
        self.status = 0
        self.started = False
        self.body_read = False
        self.close = False
        self.sent_bytes = 0
        self.request_id = request_id(self.headers.get("x-request-id"))
        self.arrived = time.monotonic()
        self.shed_reason: Optional[str] = None   # set by whoever cancels this request
        self.connection = scope.get("extensions", {}).get(limits.SCOPE_KEY)
        self.scope = scope

    def client_gone(self) -> bool:
        """Whether the client has left (any thread): a job for it is not worth running."""
        return self.connection is not None and self.connection.client_gone(self.scope)

    async def respond(self, status: int, chunks: Iterable[bytes], content_type: str,
                      headers: Optional[dict] = None) -> None:
        chunks = list(chunks)
        out: List[Tuple[bytes, bytes]] = [
            (b"Content-Type", content_type.encode()),
            (b"Content-Length", str(sum(len(c) for c in chunks)).encode())]
        out += [(k.encode(), str(v).encode()) for k, v in (headers or {}).items()]
        out.append((b"X-Request-Id", self.request_id.encode()))
        # A body left in the socket means this connection cannot carry another
        # request: say so rather than close without warning.
        if not self.body_read and self.headers.get("content-length", "0").strip() not in ("", "0"):
            self.close = True
        if "transfer-encoding" in self.headers and not self.body_read:
            self.close = True
        if self.draining():
            self.close = True
        if self.close:
            out.append((b"Connection", b"close"))
        self.started = True
        self.status = status
        self.sent_bytes = sum(len(c) for c in chunks)
        await self._send({"type": "http.response.start", "status": status, "headers": out})
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            await self._send({"type": "http.response.body", "body": chunk,
                              "more_body": i < last})
        if not chunks:
            await self._send({"type": "http.response.body", "body": b""})

    async def respond_json(self, status: int, obj, headers: Optional[dict] = None) -> None:
        await self.respond(status, [orjson.dumps(obj)], JSON, headers)

    def only(self, *methods: str) -> None:
        if self.method not in methods:
            raise HTTPError(405, f"method {self.method} not allowed here; use "
                                 f"{', '.join(methods)}", {"Allow": ", ".join(methods)})

    async def read_body(self, limit: int, timeout: float) -> bytearray:
        """The whole body, read as it arrives; HTTPError when too large or too slow."""
        if "transfer-encoding" in self.headers:
            raise HTTPError(411, "chunked transfer encoding is not supported; send "
                                 "Content-Length", close=True)
        raw = self.headers.get("content-length")
        if raw is None:
            raise HTTPError(411, "Content-Length header required", close=True)
        # h11 has already refused conflicting and non-digit values (400).
        length = int(raw)
        if length > limit:
            raise HTTPError(413, f"request body of {length} bytes exceeds the limit of "
                                 f"{limit} bytes", close=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        body = bytearray()
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(self.receive(), left)
            except asyncio.TimeoutError:
                raise HTTPError(408, f"request body not received within {timeout:g} s "
                                     f"({len(body)} of {length} bytes came)",
                                close=True) from None
            if message["type"] == "http.disconnect":
                raise ClientGone()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if len(body) < length:  # the client shut its side early (limits.eof_received)
            raise HTTPError(400, f"body ended after {len(body)} of {length} bytes", close=True)
        self.body_read = True
        return body


class Routes:
    """The ASGI callable; `app` is the server's shared state (server.App)."""

    def __init__(self, app, codec):
        self.app = app
        self.codec = codec      # executor for JSON decoding and encoding

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        ex = Exchange(scope, receive, send, lambda: self.app.draining)
        start = time.perf_counter()
        app = self.app
        model_label, infer = None, False
        task = asyncio.current_task()
        app.requests[task] = ex
        try:
            try:
                self._refuse_early(ex)
                match = MODEL_PATH_RE.match(ex.path)
                if match:
                    name, version, action = match.group(1), match.group(2), match.group(3) or ""
                    infer = action == "/infer"
                    if name in app.models:
                        model_label = name
                    await self._model_route(ex, name, version, action)
                else:
                    await self._static_route(ex, ex.path.rstrip("/") or "/")
            except asyncio.CancelledError:
                # The drain's time is up (server._drain): answer, never a 500.
                if ex.shed_reason is None or ex.started:
                    raise
                raise HTTPError(503, "server is shutting down: the drain time is over; retry",
                                RETRY_AFTER, close=True, shed=ex.shed_reason) from None
        except HTTPError as exc:
            ex.close = ex.close or exc.close
            if exc.shed:
                app.metrics.shed(exc.shed)
            if not ex.close:
                await self._discard_small_body(ex)
            if exc.status == 408:
                app.metrics.closed("body_timeout")
            await ex.respond_json(exc.status, {"error": str(exc)}, exc.headers)
        except ClientGone:
            return
        except Exception as exc:  # noqa: BLE001 - a bug must answer 500, not kill the connection
            log.exception("internal error on %s %s (request id %s)", ex.method, ex.path,
                          ex.request_id)
            if ex.started:  # uvicorn closes a connection whose response was cut short
                return
            ex.close = True
            await ex.respond_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})
        finally:
            app.requests.pop(task, None)
            seconds = time.perf_counter() - start
            if ex.status:
                app.metrics.request(model_label, ex.status, seconds, infer)
            self._log(ex, seconds)

    def _log(self, ex: Exchange, seconds: float) -> None:
        """The access log: one line per request, INFO when TORCH_BACKEND_ACCESS_LOG=1,
        DEBUG otherwise (so a service at DEBUG logs every request)."""
        level = logging.INFO if self.app.config.access_log else logging.DEBUG
        if not access.isEnabledFor(level):
            return
        trace = ex.headers.get("traceparent")
        if trace is not None and not TRACEPARENT_RE.match(trace):
            trace = "invalid"
        access.log(level, "%s %s %s %.1fms %dB id=%s%s", ex.method, ex.path,
                   ex.status or "-", seconds * 1000.0, ex.sent_bytes, ex.request_id,
                   f" traceparent={trace}" if trace is not None else "")

    async def _discard_small_body(self, ex: Exchange) -> None:
        """Read and drop a small unread body before refusing its request (404, 405, ...):
        closing with it unread makes the kernel reset the connection, which can
        destroy the answer before the client reads it; read, the connection stays."""
        raw = ex.headers.get("content-length")
        if ex.body_read or raw is None or "transfer-encoding" in ex.headers \
                or int(raw) > DISCARD_MAX_BYTES:
            return
        try:
            await ex.read_body(DISCARD_MAX_BYTES, self.app.config.body_timeout)
        except (HTTPError, ClientGone):
            ex.close = True

    def _refuse_early(self, ex: Exchange) -> None:
        """What is wrong whatever the route: an overlong head, a body over the limit
        (refused before routing, so no 100 Continue invites it on any route)."""
        if not ex.http_version.startswith("1."):
            # h11 parses any HTTP/d.d; RFC 9110 §15.6.6 answers another major version so.
            raise HTTPError(505, f"HTTP/{ex.http_version} is not supported; use HTTP/1.1",
                            close=True)
        if len(ex.target) > MAX_HEAD_BYTES:
            raise HTTPError(414, f"request target longer than {MAX_HEAD_BYTES} bytes", close=True)
        if len(ex.header_list) > MAX_HEADERS:
            raise HTTPError(431, f"more than {MAX_HEADERS} header fields", close=True)
        if sum(len(k) + len(v) + 4 for k, v in ex.header_list) > MAX_HEAD_BYTES:
            raise HTTPError(431, f"header fields longer than {MAX_HEAD_BYTES} bytes", close=True)
        raw = ex.headers.get("content-length")
        limit = self.app.config.max_body_bytes
        if raw is not None and int(raw) > limit:
            raise HTTPError(413, f"request body of {raw} bytes exceeds the limit of "
                                 f"{limit} bytes", close=True)

    async def _static_route(self, ex: Exchange, path: str) -> None:
        app = self.app
        if path == "/v2/health/live":
            ex.only("GET", "HEAD")
            await ex.respond_json(200, {"live": True})
        elif path == "/v2/health/ready":
            ex.only("GET", "HEAD")
            why = app.readiness()
            if why is None:
                await ex.respond_json(200, {"ready": True})
            else:
                await ex.respond_json(503, {"ready": False}, RETRY_AFTER)
        elif path == "/v2":
            ex.only("GET", "HEAD")
            await ex.respond_json(200, app.server_metadata())
        elif path == "/metrics":
            ex.only("GET", "HEAD")
            from .metrics import CONTENT_TYPE
            await ex.respond(200, [app.metrics.render()], CONTENT_TYPE)
        else:
            raise HTTPError(404, f"no such path: {path}")

    async def _model_route(self, ex: Exchange, name: str, version: Optional[str],
                           action: str) -> None:
        app = self.app
        if not app.loaded:
            if name not in app.pending and name not in app.models:
                raise HTTPError(404, f"unknown model {name!r}; loading: {sorted(app.pending)}")
            raise HTTPError(503, f"server is not ready (loading models; {name!r} "
                                 f"{'is loading' if name in app.pending else 'is loaded'})",
                            RETRY_AFTER)
        if app.drain_expired:
            # Requests already on their way when the stop began are served while
            # the drain lasts (Connection: close); after it, only this.
            raise HTTPError(503, "server is shutting down", RETRY_AFTER, close=True,
                            shed="draining")
        model = app.models.get(name)
        if model is None:
            raise HTTPError(404, f"unknown model {name!r}; available: {sorted(app.models)}")
        if version is not None and version not in model.versions:
            raise HTTPError(404, f"model {name!r} has no version {version!r}; versions: "
                                 f"{list(model.versions)}")
        if action == "":
            ex.only("GET", "HEAD")
            await ex.respond_json(200, model.metadata())
        elif action == "/ready":
            ex.only("GET", "HEAD")
            why = app.model_not_ready_reason(name)
            if why is None:
                await ex.respond_json(200, {"name": name, "ready": True})
            else:
                await ex.respond_json(503, {"name": name, "ready": False}, RETRY_AFTER)
        else:
            ex.only("POST")
            await self._infer(ex, model)

    async def _infer(self, ex: Exchange, model) -> None:
        app = self.app
        cfg = app.config
        deadline = ex.arrived + cfg.request_deadline
        # Capacity first, with the body still unread: a full server costs a
        # refused client one header exchange, not a 16 MB upload. The 503 keeps
        # the connection (a small body is read and dropped): a client retrying
        # on a new connection each time costs the server more than the retry.
        if not await app.admit_inference(min(cfg.queue_wait, deadline - time.monotonic())):
            raise HTTPError(503, f"server busy: inference queue is full "
                                 f"({cfg.queue_size} waiting); retry later",
                            RETRY_AFTER, shed="overload")
        job = None
        try:
            body = await ex.read_body(cfg.max_body_bytes, cfg.body_timeout)
            loop = asyncio.get_running_loop()
            try:
                request = await loop.run_in_executor(
                    self.codec, parse_infer, model, body, ex.headers.get(HEADER_LENGTH.lower()))
            except ProtocolError as exc:
                raise HTTPError(exc.status, str(exc)) from None
            del body
            try:
                job = app.pool.submit(lambda: app.infer(model, request.arrays), model.name,
                                      wanted=lambda: not ex.client_gone())
            except QueueFull:  # admission makes this rare: a worker still finishing up
                raise HTTPError(503, f"server busy: inference queue is full "
                                     f"({cfg.queue_size} waiting); retry later",
                                RETRY_AFTER, shed="overload") from None
            try:
                results = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)),
                                                 max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise HTTPError(503, f"inference not done within the request deadline of "
                                     f"{cfg.request_deadline:g} s "
                                     f"(TORCH_BACKEND_REQUEST_DEADLINE_SECONDS); retry later",
                                RETRY_AFTER, shed="deadline") from None
            except JobDropped:
                log.debug("dropped a queued request unrun: its client left (request id %s)",
                          ex.request_id)
                raise HTTPError(503, "client gone", RETRY_AFTER, close=True,
                                shed="client_gone") from None
            except Exception as exc:  # noqa: BLE001
                log.error("inference failed for model %r: %s: %s", model.name,
                          type(exc).__name__, exc)
                raise HTTPError(500, f"inference failed: {type(exc).__name__}: {exc}") from None
            try:
                check_response_size(model, request, results, cfg.max_response_bytes)
                chunks, header_len = await loop.run_in_executor(
                    self.codec, encode_infer_response, model, request, results)
            except ProtocolError as exc:
                raise HTTPError(exc.status, str(exc)) from None
            if header_len is None:
                await ex.respond(200, chunks, JSON)
            else:
                await ex.respond(200, chunks, "application/octet-stream",
                                 {HEADER_LENGTH: str(header_len)})
        finally:
            if job is not None and not job.future.done():
                job.abandon()   # unrun: dropped; running: its result is thrown away
            app.end_inference()
