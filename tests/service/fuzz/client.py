"""A small raw HTTP/1.1 client: sends exactly the bytes a case holds, reads what comes back."""

import json
import select
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

# A request line h11 rejects (bad version, HTTP/0.9, stray spaces) is a 400 with a
# status line and a JSON "error". ("0.9-error", a body-only answer holding a JSON
# "error", and "0.9" stay recognised: http.server answered HTTP/0.9-style, and an
# answer without a status line is a violation wherever a case does not expect one.)
BAD_LINE = 400


@dataclass
class Response:
    status: object                 # int, or "none" (closed, no answer), "0.9", "0.9-error",
    #                                "reset", "timeout"
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    close: bool = True             # the connection cannot be reused


@dataclass
class Case:
    category: str
    sub: str
    data: bytes                    # the bytes sent
    method: str = "POST"
    expect: tuple = (200,)         # acceptable statuses (ints, "none", "0.9")
    allow_5xx: tuple = ()          # 5xx statuses the protocol prescribes for this request
    fresh: bool = False            # send on a new connection, close it after
    shut_wr: bool = False          # half-close after sending (truncated requests)
    verify: tuple = None           # a self-test infer request (see verify_selftest_reply)
    responses: int = 1             # pipelined requests in `data`
    abort: str = ""                # client-abort: "" | "rst"
    timeout: float = 60.0


class Unsolicited(Exception):
    """The server sent bytes on an idle keep-alive connection."""


def request_bytes(method, target, headers=(), body=b"", version="HTTP/1.1",
                  content_length=True, host="127.0.0.1"):
    def enc(v):
        return v if isinstance(v, bytes) else str(v).encode("latin-1")

    lines = [enc(method) + b" " + enc(target) + b" " + enc(version)]
    hdrs = ([("Host", host)] if host else []) + list(headers)
    if content_length and (body or method in ("POST", "PUT", "PATCH")):
        hdrs.append(("Content-Length", str(len(body))))
    lines += [enc(k) + b": " + enc(v) for k, v in hdrs]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Client:
    def __init__(self, port):
        self.port = port
        self.sock = None
        self.prev_status = None
        self.silent_closes = Counter()    # status of the answer before the server's silent close

    def _open(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def drop(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _kept_alive(self):
        """The kept-alive socket if the server still has it open, else None."""
        if not select.select([self.sock], [], [], 0)[0]:
            return self.sock
        try:
            data = self.sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return self.sock
        except OSError:
            data = b""
        self.drop()
        if data:
            raise Unsolicited(data)
        self.silent_closes[self.prev_status] += 1
        return None

    def exchange(self, case):
        """Send the case; a list of Responses (one per pipelined request)."""
        sock = None
        reused = not case.fresh and self.sock is not None
        if reused:
            sock = self._kept_alive()
            reused = sock is not None
        if case.fresh:
            self.drop()
        if sock is None:
            sock = self._open(case.timeout)
        self.sock = sock
        responses = self._once(sock, case)
        if reused and responses[0].status in ("none", "reset"):
            # Closed by the server between our check and our request: what an
            # HTTP client retries on a new connection.
            self.silent_closes[self.prev_status] += 1
            self.drop()
            self.sock = sock = self._open(case.timeout)
            responses = self._once(sock, case)
        if case.fresh or case.shut_wr or case.abort or any(r.close for r in responses):
            self.drop()
        self.prev_status = responses[-1].status
        return responses

    def _once(self, sock, case):
        deadline = time.monotonic() + case.timeout
        sent, error = self._send(sock, case.data, deadline)
        if case.abort == "rst":
            # SO_LINGER on, 0 s: close() sends a reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            self.sock = None
            return [Response("none")]
        if error == "timeout":
            return [Response("timeout")]
        if case.shut_wr and error is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        buf = bytearray()
        out = []
        for i in range(case.responses):
            resp = self._read(sock, case.method, deadline, buf)
            out.append(resp)
            if resp.close:
                break
        return out

    @staticmethod
    def _send(sock, data, deadline):
        """Send, but stop as soon as the server answers (or closes) early."""
        view, sent = memoryview(data), 0
        sock.setblocking(False)
        try:
            while sent < len(view):
                left = deadline - time.monotonic()
                if left <= 0:
                    return sent, "timeout"
                readable, writable, _ = select.select([sock], [sock], [], left)
                if readable:
                    return sent, "early"
                if writable:
                    try:
                        sent += sock.send(view[sent:sent + (1 << 18)])
                    except BlockingIOError:
                        continue
                    except OSError:
                        return sent, "broken"
            return sent, None
        finally:
            sock.settimeout(max(0.1, deadline - time.monotonic()))

    @staticmethod
    def _read(sock, method, deadline, buf):
        def more():
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = sock.recv(1 << 20)
            buf.extend(chunk)
            return bool(chunk)

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    if len(buf) >= 5 and not buf.startswith(b"HTTP/"):
                        while more():  # HTTP/0.9: no status line, the body until close
                            pass
                        return Client._body_only(buf)
                    if not more():
                        return Client._body_only(buf) if buf else Response("none")
                head, _, rest = bytes(buf).partition(b"\r\n\r\n")
                del buf[:len(head) + 4]
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                if 100 <= status < 200:
                    continue
                if method == "HEAD" or status in (204, 304):
                    length = 0
                elif "content-length" in headers:
                    length = int(headers["content-length"])
                else:
                    while more():
                        pass
                    length = len(buf)
                while len(buf) < length:
                    if not more():
                        break
                body = bytes(buf[:length])
                del buf[:length]
                close = headers.get("connection", "").lower() == "close" or len(body) < length
                return Response(status, headers, body, close)
        except socket.timeout:
            return Response("timeout")
        except ConnectionError:
            return Client._body_only(buf) if buf else Response("reset")

    @staticmethod
    def _body_only(buf):
        """An answer without a status line: HTTP/0.9 style."""
        body = bytes(buf)
        try:
            is_error = isinstance(json.loads(body).get("error"), str)
        except (ValueError, AttributeError):
            is_error = False
        return Response(BAD_LINE if is_error else "0.9", body=body)
