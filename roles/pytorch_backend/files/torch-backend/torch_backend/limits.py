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
import errno
import json
import resource
import socket
import struct
import sys
import time
from os import dup as os_dup

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
# How often a closing connection checks whether its answer has left the buffer.
FLUSH_POLL_S = 0.01
# tcp_info's first byte, the connection's TCP state (linux/tcp_states.h): CLOSE once
# the peer's reset came in.
TCP_CLOSE = 7
# A connection exposes itself to the app under this scope key (see client_gone).
SCOPE_KEY = "torch_backend.connection"


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
        transport.resume_reading()
        self._timer = self._loop.call_later(LINGER_S, self.close_now)
        self._half_close()

    def _half_close(self) -> None:
        """shutdown(SHUT_WR) once the answer has left our buffer. Not through
        write_eof(): asyncio shuts the socket from its write callback when the
        buffer drains, where ENOTCONN from a client that reset meanwhile escapes
        as an ERROR traceback. A reset is the client's business: one DEBUG line."""
        transport = self._transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size():
            self._loop.call_later(FLUSH_POLL_S, self._half_close)
            return
        try:
            transport.write_eof()   # buffer empty: asyncio shuts the socket right here
        except OSError as exc:
            log.debug("client %s went away before the close: %s", _peer(transport),
                      errno.errorcode.get(exc.errno, exc))
            self.close_now()

    def close_now(self) -> None:
        self.lingering = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()


def _peer(transport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else "?"


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
        self.peer_eof = False
        self.close_after_answer = False
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
        return not self.in_request() and self._header_timer is None

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

    def handle_events(self) -> None:
        super().handle_events()
        # A new request's scope, before its task runs: the app asks the connection
        # whether its client is still there (client_gone) before computing.
        cycle = self.cycle
        if cycle is not None and SCOPE_KEY not in cycle.scope.get("extensions", {}):
            cycle.scope.setdefault("extensions", {})[SCOPE_KEY] = self
            if self.close_after_answer:
                cycle.keep_alive = False

    def client_gone(self, scope) -> bool:
        """Whether the client of the request `scope` has left. Safe from any thread.

        A reset while we read is connection_lost (`disconnected`). A FIN after the
        request is ambiguous: a client that half-closed and waits for its answer
        (supported) or one that closed and left; eof_received sends the latter an
        interim `100 Continue`, to which its kernel answers with a reset, which
        puts our socket in the TCP state CLOSE."""
        cycle = self.cycle
        if cycle is None or cycle.scope is not scope or cycle.disconnected:
            return True
        if not self.peer_eof:
            return False
        sock = self.transport.get_extra_info("socket")
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        except (OSError, AttributeError):
            return False
        return struct.unpack_from("B", info)[0] == TCP_CLOSE

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
            elif not cycle.response_started and self.conn.their_http_version == b"1.1":
                self._probe_peer()
            return True  # keep our sending side open for the answer
        if self.conn.trailing_data[0]:
            # Part of a request line or headers, then EOF: h11 refuses it (400).
            self.conn.receive_data(b"")
            self.handle_events()
        return None

    def _probe_peer(self) -> None:
        """A whole request, then FIN: send an interim 100 Continue (RFC 9110 §15.2:
        an HTTP/1.1 client must parse and skip one it did not ask for), so that a
        client that has closed answers with a reset (client_gone). Never to HTTP/1.0."""
        self.peer_eof = True
        try:
            self.transport.write(self.conn.send(h11.InformationalResponse(
                status_code=100, headers=[], reason=b"Continue")))
        except (h11.LocalProtocolError, OSError):
            pass

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

    def awaiting_first_request(self) -> bool:
        """Accepted, and not a byte of a first request read yet (the drain waits a moment)."""
        return (self.cycle is None and self._header_timer is None
                and not self._lingering.lingering and not self.transport.is_closing())

    def in_request(self) -> bool:
        """A request read and not yet answered: its task may not have started yet, so the
        app does not know of it, but the drain must wait for it all the same."""
        return self.cycle is not None and not self.cycle.response_complete

    def shutdown(self) -> None:
        """The drain: idle connections close at once, not lingering; unless a request's
        bytes are already here, unread: closing would reset the connection under a
        request its client has sent, so it is read and answered (Connection: close)."""
        self.close_after_answer = True
        if self.in_request():
            self.cycle.keep_alive = False
            return
        if self._header_timer is not None or self._unread_bytes():
            return  # a request is coming in: handle_events marks it keep_alive False
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self._lingering.close_now()

    def _unread_bytes(self) -> bool:
        sock = self.transport.get_extra_info("socket")
        try:
            fd = sock.fileno()
            probe = socket.socket(fileno=os_dup(fd))
        except (OSError, AttributeError):
            return False
        try:
            return bool(probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False
        finally:
            probe.close()

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
