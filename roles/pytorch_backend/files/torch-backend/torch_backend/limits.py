"""Connection-level limits around uvicorn's h11 protocol: what ASGI cannot see.

uvicorn has no deadline for receiving a request (its keep-alive timer runs only
between requests and is reset by every byte) and accepts connections until
accept() fails with EMFILE; an ASGI app runs only once the headers are in. So
this protocol subclass adds, per connection:

* an idle deadline from the moment it opens (uvicorn sets none before the first
  request), and between requests;
* a header deadline: the request line and headers must be complete within
  ``header_timeout`` seconds of their first byte;
* a connection cap below the file-descriptor limit: at the cap, the connection
  idle the longest is closed to make room, so a new one (a health check) is
  always served; only when every connection is busy is the new one refused.

And a lingering close: a connection closed after an answer first shuts only its
sending side and reads (and drops) what the client still sends, for up to
``LINGER_S`` seconds. Closing a socket with unread bytes makes the kernel send a
reset, which can destroy the answer just written before the client reads it: an
early 404, 413 or 503 to a request whose body is still arriving, announced with
``Connection: close``, would reach the client as a reset instead.

The body deadline is the app's (routes.py): it reads the body itself.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import logs

log = logs.get("http")

# Descriptors kept back from the connection cap: the listening socket, model
# files, the journal's stream, torch's and Python's own (imports, /proc reads).
FD_RESERVE = 128
MIN_CONNECTIONS = 16
# How long a closing connection keeps reading what its client still sends (see above).
LINGER_S = 2.0


def connection_cap(wanted: int = 0) -> int:
    """The most connections to hold open: FD_RESERVE below the soft RLIMIT_NOFILE
    (the unit's LimitNOFILE), or `wanted` (TORCH_BACKEND_MAX_CONNECTIONS) when
    that is lower; 0 = no wish, the descriptor limit decides."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    cap = max(MIN_CONNECTIONS, soft - FD_RESERVE)
    return min(wanted, cap) if wanted > 0 else cap


class Guard:
    """The limits and the open connections, shared by every connection."""

    def __init__(self, cap: int, header_timeout: float, idle_timeout: float,
                 metrics):
        self.cap = cap
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.metrics = metrics
        self.open: "set[GuardedH11Protocol]" = set()

    def count(self) -> int:
        return len(self.open)

    def admit(self, new: "GuardedH11Protocol") -> bool:
        """Register a new connection; at the cap, make room or refuse it."""
        if len(self.open) >= self.cap:
            idle = [c for c in self.open if c.idle()]
            if not idle:
                return False
            victim = min(idle, key=lambda c: c.last_active)
            victim.close_quietly("over_connection_cap")
        self.open.add(new)
        return True


class LingeringTransport:
    """The connection's transport as uvicorn sees it: close() shuts our sending side
    (FIN after the answer), then drops what still comes until the client closes or
    LINGER_S pass; close_now() closes at once."""

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._timer = None
        self.lingering = False

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        transport = self._transport
        if self.lingering or transport.is_closing() or not transport.can_write_eof():
            self.close_now()
            return
        self.lingering = True
        transport.write_eof()     # sent once the answer is out
        transport.resume_reading()
        self._timer = self._loop.call_later(LINGER_S, self.close_now)

    def close_now(self) -> None:
        self.lingering = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()


def protocol_class(guard: Guard):
    """uvicorn builds a protocol per connection from a class: bind the guard to one."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


class GuardedH11Protocol(H11Protocol):
    guard: Guard

    def connection_made(self, transport) -> None:
        self._lingering = LingeringTransport(transport, asyncio.get_running_loop())
        super().connection_made(self._lingering)
        self.last_active = time.monotonic()
        self._header_timer = None
        if not self.guard.admit(self):
            log.warning("connection cap of %d reached with every connection busy: "
                        "refusing a new one", self.guard.cap)
            self.guard.metrics.closed("over_connection_cap")
            transport.abort()
            return
        # uvicorn starts its keep-alive timer only after a first response: an
        # idle connection that never sends a byte would otherwise stay forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.guard.idle_timeout, self._idle_expired)

    def connection_lost(self, exc) -> None:
        self.guard.open.discard(self)
        self._lingering.close_now()  # its timer, if any
        self._cancel_header_timer()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """Between requests: nothing received of a next one, nothing being answered."""
        return ((self.cycle is None or self.cycle.response_complete)
                and self._header_timer is None)

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:
            return  # closing: what the client still sends is read and dropped
        self.last_active = time.monotonic()
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.guard.header_timeout,
                                                      self._header_expired)
        super().data_received(data)
        # A Request event started a new cycle: the headers are in.
        if self._header_timer is not None and self.cycle is not None \
                and not self.cycle.response_complete:
            self._cancel_header_timer()

    def eof_received(self):
        """The client shut its sending side. uvicorn closes the whole connection
        here, so a request sent in full, or cut short, never got its answer."""
        if self._lingering.lingering:  # the client read our answer and closed: done
            self._lingering.close_now()
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.more_body:
                # The body ends short of its Content-Length: hand the app what
                # came as the end, so that it answers 400 now, not at its deadline.
                cycle.more_body = False
                cycle.message_event.set()
            return True  # keep our sending side open for the answer
        if self.conn.trailing_data[0]:
            # Part of a request line or headers, then EOF: h11 refuses it (400).
            self.conn.receive_data(b"")
            self.handle_events()
        return None

    def on_response_complete(self) -> None:
        self.last_active = time.monotonic()
        super().on_response_complete()
        # uvicorn armed its keep-alive timer; ours closes with a reason counted.
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.guard.idle_timeout, self._idle_expired)

    def send_400_response(self, msg: str) -> None:
        """A request h11 refused (uvicorn calls this inside its `except
        RemoteProtocolError`): answer in the protocol's JSON form with h11's
        reason, e.g. conflicting Content-Length, then close."""
        exc = sys.exc_info()[1]
        status = getattr(exc, "error_status_hint", 400)
        detail = f"malformed HTTP request: {exc}" if exc is not None else msg
        body = json.dumps({"error": detail}).encode()
        headers = [(b"Content-Type", b"application/json"),
                   (b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status,
                                                            headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass  # h11 cannot answer in this state (a response already started)
        log.debug("refused a malformed request from %s: %s",
                  self.client[0] if self.client else "?", detail)
        self.guard.metrics.request(None, status, 0.0, False)
        self.transport.close()

    def shutdown(self) -> None:
        """The server's graceful shutdown: idle connections close at once, not lingering."""
        if self.cycle is None or self.cycle.response_complete:
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self._lingering.close_now()
        else:
            super().shutdown()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_expired(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # the headers came in after all
        log.info("closing a connection from %s: request headers not complete within %g s",
                 self.client[0] if self.client else "?", self.guard.header_timeout)
        self.close_quietly("header_timeout")

    def _idle_expired(self) -> None:
        self.timeout_keep_alive_task = None
        if self.idle():
            self.close_quietly("idle_timeout")

    def close_quietly(self, reason: str) -> None:
        """Close without a response (none can be sent before a request is in)."""
        if self.transport.is_closing():
            self._lingering.close_now()  # one lingering after its answer closes now
            return
        self.guard.metrics.closed(reason)
        self.guard.open.discard(self)
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self._lingering.close_now()
