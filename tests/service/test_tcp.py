"""The listening socket: accepted connections have Nagle's algorithm off.

A response goes out as two writes (headers, then body). With Nagle on, the body
waits for the client's delayed ACK of the headers: bench/bench-service measured
44 ms per request on the self-test model (0.9 ms with Nagle off). asyncio turns
it off only for sockets made with proto IPPROTO_TCP. Real sockets on loopback,
the real asyncio accept path the service's uvicorn runs on.
"""
import asyncio
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
