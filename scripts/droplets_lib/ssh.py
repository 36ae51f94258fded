"""Loopback ports and SSH into a droplet: the key scripts/build-image put into the image, the
options that skip host-key checks for these throwaway guests, and one connection attempt."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from pathlib import Path

from .config import ROOT
from .messages import DropletError

SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def ssh_key() -> Path:
    return Path(os.environ.get("DROPLETS_SSH_DIR", ROOT / ".cache" / "ssh")) / "id_ed25519"


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(exclude=()) -> int:
    """A free TCP port on 127.0.0.1, chosen by the kernel, not in `exclude`."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise DropletError("could not find a free port on 127.0.0.1")


def ssh_argv(port: int, connect_timeout: int = 10, tty: bool = False) -> list:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            *shlex.split(SSH_COMMON_ARGS), "-i", str(ssh_key()), "-p", str(port)]
    if tty:
        argv.append("-t")
    return argv + ["root@127.0.0.1"]


def ssh_try(port: int, connect_timeout: int = 5) -> str | None:
    """`ssh ... true` once: None when it worked, else why not (ssh's last line or the timeout)."""
    try:
        r = subprocess.run(ssh_argv(port, connect_timeout) + ["true"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=connect_timeout + 15)
    except subprocess.TimeoutExpired:
        return f"ssh gave no answer within {connect_timeout + 15}s"
    if r.returncode == 0:
        return None
    lines = r.stderr.strip().splitlines()
    return f"ssh exit {r.returncode}: {lines[-1] if lines else '(no message)'}"


def ssh_ok(port: int, connect_timeout: int = 5) -> bool:
    return ssh_try(port, connect_timeout) is None
