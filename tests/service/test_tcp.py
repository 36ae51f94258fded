"""The listening socket: accepted connections have Nagle's algorithm off.

A response goes out as two writes (headers, then body). With Nagle on, the body
waits for the client's delayed ACK of the headers: bench/bench-service measured
44 ms per request on the self-test model (0.9 ms with Nagle off). asyncio turns
it off only for sockets made with proto IPPROTO_TCP. Real sockets on loopback,
the real asyncio accept path the service's uvicorn runs on.
"""
import asyncio
import os
import socket

import pytest

from torch_backend import server


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_accepted_connections_have_nagle_off(host):
    sock = server.listen_socket(host, 0)
    port = sock.getsockname()[1]

    async def main():
        seen = asyncio.get_running_loop().create_future()

        async def accepted(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        srv = await asyncio.start_server(accepted, sock=sock)
        async with srv:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(seen, 10)
            writer.close()
        return nodelay

    assert asyncio.run(main()) != 0


def _uvicorn_nodelay(listening):
    return _uvicorn_nodelay_port(listening, listening.getsockname()[1])


def _uvicorn_nodelay_port(listening, port):
    """Serve `listening` with uvicorn (sockets=[...], our protocol class, as the service
    does), connect once, and read TCP_NODELAY off the accepted connection's socket."""
    import threading

    import uvicorn

    from torch_backend import limits
    from torch_backend.metrics import Metrics

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = limits.Guard(64, 5, 5, Metrics())
    srv = uvicorn.Server(uvicorn.Config(app, loop="asyncio", http=limits.protocol_class(guard),
                                        lifespan="off", log_config=None, access_log=False))
    thread = threading.Thread(target=asyncio.run, args=(srv.serve([listening]),), daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if srv.started:
                break
            threading.Event().wait(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            for _ in range(500):
                if guard.open:
                    break
                threading.Event().wait(0.01)
            (conn,) = list(guard.open)
            return conn.transport.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        srv.should_exit = True
        thread.join(10)


def test_systemd_socket_keeps_nagle_off_on_accepted_connections():
    """systemd makes its socket with protocol 0. Taken as socket.socket(fileno=fd)
    (activation.inherited_socket), Python asks the kernel and sees IPPROTO_TCP, and
    asyncio turns Nagle off on each accepted connection."""
    from torch_backend import activation

    made = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # as systemd: proto 0
    made.bind(("127.0.0.1", 0))
    made.listen(16)
    inherited = activation.inherited_socket(os.dup(made.fileno()))
    made.close()
    assert _uvicorn_nodelay(inherited) != 0


def test_uvicorn_fd_wrapping_would_lose_it():
    """Why not uvicorn's fd= (Config(fd=...), --fd): it wraps the descriptor as AF_UNIX
    (socket.fromfd), and asyncio then leaves Nagle on: the test above can fail."""
    made = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    made.bind(("127.0.0.1", 0))
    made.listen(16)
    as_uvicorn_does = socket.fromfd(made.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
    as_uvicorn_does.setblocking(False)
    port = made.getsockname()[1]
    made.close()
    try:
        nodelay = _uvicorn_nodelay_port(as_uvicorn_does, port)
    finally:
        as_uvicorn_does.close()
    assert nodelay == 0
