"""The listening socket from systemd socket activation (sd_listen_fds(3)), without libsystemd.

systemd passes the socket unit's descriptors from fd 3 on and says so in LISTEN_FDS
(how many) and LISTEN_PID (for which process: a variable inherited by a child that
did not get the descriptors must be ignored). The variables are removed once read,
so that nothing this process starts believes it owns the socket too.

The descriptor becomes `socket.socket(fileno=3)`: Python then asks the kernel for its
family, type and protocol (SO_DOMAIN, SO_TYPE, SO_PROTOCOL), so asyncio sees an
AF_INET/AF_INET6 IPPROTO_TCP socket and turns Nagle's algorithm off on every accepted
connection. uvicorn's own `fd=` path wraps it as AF_UNIX (socket.fromfd), which loses
TCP_NODELAY (44 ms per request, see server.listen_socket).

O_NONBLOCK is a flag of the open file, which every process on the socket shares, and
systemd clears it at each start of a unit without NonBlocking=true: a second process's
start then left the serving one's asyncio loop blocked inside accept() until the next
connection came (answers held for 30 s in a warm handover on a guest). The units set
NonBlocking=true; the socket also gets a receive timeout (SO_RCVTIMEO, a property of
the socket, which accept(2) obeys on a blocking file), so that whatever clears the flag
costs the loop at most ACCEPT_TIMEOUT_S per accept round, never an answer.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import List, MutableMapping, Optional

LISTEN_FDS_START = 3
# accept(2) on a file made blocking by someone else returns EAGAIN after this
ACCEPT_TIMEOUT_S = 0.01


class ActivationError(Exception):
    """systemd said it passed a socket, but what is there cannot serve HTTP."""


def listen_fds(env: Optional[MutableMapping[str, str]] = None, pid: Optional[int] = None,
               unset: bool = True) -> List[int]:
    """The descriptors systemd passed to this process (none when not socket-activated).
    Removes LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES from `env` when `unset`."""
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    raw_fds, raw_pid = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    if unset:
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(name, None)
    return fds_for(raw_fds, raw_pid, pid)


def fds_for(raw_fds: Optional[str], raw_pid: Optional[str], pid: int) -> List[int]:
    """The rule of sd_listen_fds(3), as a pure function: descriptors 3.. when both
    variables are set, LISTEN_PID names this process and LISTEN_FDS is a count > 0."""
    if not raw_fds or not raw_pid:
        return []
    try:
        if int(raw_pid, 10) != pid:
            return []   # meant for the process that started us, not for us
        count = int(raw_fds, 10)
    except ValueError:
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + count)) if count > 0 else []


def inherited_socket(fd: int) -> socket.socket:
    """The listening TCP socket on `fd`, non-blocking, as asyncio wants it."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"fd {fd} from systemd is not a socket: {exc}") from None
    problem = None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        problem = f"family {sock.family.name}, not IPv4/IPv6"
    elif sock.type != socket.SOCK_STREAM:
        problem = "not a stream socket"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "not listening (the socket unit needs ListenStream=, Accept=no)"
    if problem:
        sock.detach()   # not ours to close: tell the operator instead
        raise ActivationError(f"fd {fd} from systemd: {problem}")
    sock.set_inheritable(False)
    sock.setblocking(False)
    seconds = int(ACCEPT_TIMEOUT_S)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", seconds, int((ACCEPT_TIMEOUT_S - seconds) * 1e6)))
    return sock


def systemd_socket(env: Optional[MutableMapping[str, str]] = None) -> Optional[socket.socket]:
    """The one listening socket systemd passed, or None when not socket-activated."""
    fds = listen_fds(env)
    if not fds:
        return None
    if len(fds) != 1:
        raise ActivationError(f"systemd passed {len(fds)} sockets (LISTEN_FDS); this service "
                              "serves exactly one")
    return inherited_socket(fds[0])

