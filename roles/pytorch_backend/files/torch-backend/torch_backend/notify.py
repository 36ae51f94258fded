"""sd_notify(3) without the systemd Python bindings.

The unit is ``Type=notify``: systemd considers the service started only when
it receives READY=1 on the datagram socket named by $NOTIFY_SOCKET. A name
starting with '@' is a Linux abstract socket (leading NUL byte).
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, Optional

from . import logs

log = logs.get("notify")


def notify(message: str, env: Optional[Mapping[str, str]] = None) -> bool:
    """Send one notification; True if sent. Never raises: systemd being absent
    (or the socket gone) must not take the service down."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("sd_notify to %r failed: %s", env.get("NOTIFY_SOCKET"), exc)
        return False
