"""The listen address (TORCH_BACKEND_HOST): which values are valid, which socket family
binds them, and how host and port become a URL.

The one place for these rules: the service binds and logs with them, and the role loads
this file by path (filter_plugins/listen_address.py) for its preflight check and for every
URL it builds, so that what the deploy accepts and calls is what the service binds.
IPv6 literals are written bare (``::1``, ``::``) and bracketed only inside URLs
(RFC 3986: ``http://[::1]:8080``); without the brackets the port cannot be told apart
from the address. Standard library only, no torch: it runs on the controller too.
"""

from __future__ import annotations

import ipaddress
import re
import socket

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME_RE = re.compile(rf"(?=[^\n]{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")
_LOOPBACK_NAMES = ("localhost",)
_EXPECTED = "an IPv4 address, an IPv6 address without brackets (::1; :: for all) or a host name"


def problem(host) -> str:
    """Why `host` cannot be listened on, in words; "" when it can."""
    if not isinstance(host, str) or not host:
        return "is empty or not a string: it must be " + _EXPECTED
    if ":" in host or host.startswith("["):
        if host.startswith("[") or host.endswith("]"):
            return "has brackets: write the IPv6 address without them (::1, not [::1])"
        if "%" in host:
            return "has a zone index (%...): link-local addresses are not supported"
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            return f"is not a valid IPv6 address ({exc})"
        return ""
    if re.fullmatch(r"[0-9.]+", host):
        # All digits and dots is meant as an IPv4 address (no name ends in a numeric label).
        try:
            ipaddress.IPv4Address(host)
        except ValueError as exc:
            return f"is not a valid IPv4 address ({exc})"
        return ""
    if not _HOST_NAME_RE.match(host):
        return "is not " + _EXPECTED
    return ""


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None   # a host name


def family(host: str) -> int:
    """The socket family that binds `host`: IPv6 for IPv6 literals; IPv4 for the rest
    (host names are bound over IPv4, as `localhost` always was)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def is_ipv6_any(host: str) -> bool:
    """`::` (in any spelling): all addresses, IPv4 ones included (dual stack)."""
    ip = _ip(host)
    return ip is not None and ip.version == 6 and ip.is_unspecified


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`."""
    ip = _ip(host)
    return host in _LOOPBACK_NAMES if ip is None else ip.is_loopback


def local_host(host: str) -> str:
    """The address a client on the same machine connects to, for a server bound to `host`:
    a wildcard bind is reached on the loopback address of its own family, so that an IPv6
    bind is checked over IPv6."""
    ip = _ip(host)
    if ip is not None and ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return "127.0.0.1" if host in _LOOPBACK_NAMES else host


def url(host: str, port: int) -> str:
    """http://HOST:PORT, IPv6 literals in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{int(port)}"


def local_url(host: str, port: int) -> str:
    """The URL a client on the same machine reaches a server bound to `host`:`port` at."""
    return url(local_host(host), port)


def listen_stream(host: str, port: int) -> str:
    """systemd's ListenStream= for a server bound to `host`:`port` ("" for a host name other
    than localhost: systemd binds addresses, it resolves no names). `::` stays dual stack
    (the socket unit says BindIPv6Only=both), as the service's own bind of `::` is."""
    ip = _ip(host)
    if ip is None:
        if host not in _LOOPBACK_NAMES:
            return ""
        ip = ipaddress.ip_address("127.0.0.1")
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{shown}:{int(port)}"
