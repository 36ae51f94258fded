"""A droplet's QEMU process: found through /proc by its disk (a pidfile is not trusted), shut down
cleanly or killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .messages import DropletError, log
from .ssh import ssh_argv

if TYPE_CHECKING:
    from .state import Droplet


def proc_cmdline(pid: int) -> list:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return []
    if state in ("Z", "X"):
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def is_our_qemu(pid: int, disk: Path) -> bool:
    argv = proc_cmdline(pid)
    return bool(argv) and "qemu-system" in os.path.basename(argv[0]) and \
        any(str(disk) in a for a in argv)


def find_qemu_by_disk(disk: Path) -> list:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_our_qemu(int(entry), disk):
            pids.append(int(entry))
    return pids


def wait_gone(pids, timeout: float, disk: Path) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(is_our_qemu(p, disk) for p in pids):
            return True
        time.sleep(0.2)
    return not any(is_our_qemu(p, disk) for p in pids)


def kill_qemu(d: Droplet, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, every QEMU process that runs d's disk."""
    pids = set(find_qemu_by_disk(d.disk))
    pid = d.pid()
    if pid:
        pids.add(pid)
    if not pids:
        return
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    if wait_gone(pids, grace, d.disk):
        return
    log(f"{d.name}: QEMU {sorted(pids)} ignored SIGTERM for {grace:.0f}s; SIGKILL")
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    if not wait_gone(pids, 10, d.disk):
        raise DropletError(f"{d.name}: QEMU {sorted(pids)} survives SIGKILL")


def qmp_powerdown(sock: Path) -> bool:
    """Press the guest's ACPI power button through QMP."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            f = s.makefile("rwb")
            f.readline()
            for cmd in ("qmp_capabilities", "system_powerdown"):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                f.readline()
        return True
    except OSError:
        return False


def shutdown(d: Droplet, timeout: float = 90.0) -> None:
    """Clean guest shutdown (ssh poweroff, then the ACPI button), falling back to kill."""
    pid = d.pid()
    if not pid:
        return
    port = d.state.get("port")
    log(f"{d.name}: powering off (ssh systemctl poweroff)")
    if port:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(ssh_argv(port, connect_timeout=5) + ["systemctl", "poweroff", "--no-block"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
    if wait_gone([pid], timeout, d.disk):
        log(f"{d.name}: guest powered off")
        return
    if d.qmp.exists() and qmp_powerdown(d.qmp):
        log(f"{d.name}: still running after {timeout:.0f}s; pressed the ACPI power button")
        if wait_gone([pid], 30, d.disk):
            log(f"{d.name}: guest powered off")
            return
    log(f"{d.name}: no clean shutdown; killing QEMU {pid}")
    kill_qemu(d)
