"""A droplet's state directory (state.json, disk, pidfile, logs) and the lock on the state dir."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path

from .messages import DropletError, log
from .processes import find_qemu_by_disk, is_our_qemu


class Droplet:
    """One droplet's state directory."""

    def __init__(self, state_dir: Path, name: str):
        self.name = name
        self.dir = state_dir / name
        self.disk = self.dir / "disk.qcow2"
        self.pidfile = self.dir / "qemu.pid"
        self.console = self.dir / "console.log"
        self.qemu_log = self.dir / "qemu.log"
        self.qmp = self.dir / "qmp.sock"
        self.state_file = self.dir / "state.json"
        self.state: dict = {}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

    @property
    def exists(self) -> bool:
        return bool(self.state)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_file, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def pid(self):
        """PID of this droplet's QEMU if it runs, else None (checked against /proc, not trusted)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid and is_our_qemu(pid, self.disk):
            return pid
        # A lost or stale pidfile: look for a QEMU that runs our disk all the same.
        pids = find_qemu_by_disk(self.disk)
        return pids[0] if pids else None

    def alive(self) -> bool:
        return self.pid() is not None

    def console_tail(self, lines: int = 25) -> str:
        return tail(self.console, lines)


def list_droplets(state_dir: Path) -> list:
    if not state_dir.is_dir():
        return []
    return [Droplet(state_dir, p.name) for p in sorted(state_dir.iterdir())
            if p.is_dir() and (p / "state.json").exists()]


def select(state_dir: Path, names: list) -> list:
    known = {d.name: d for d in list_droplets(state_dir)}
    if not names:
        return list(known.values())
    missing = [n for n in names if n not in known]
    if missing:
        raise DropletError(f"no such droplet: {', '.join(missing)} (state dir {state_dir})", 2)
    return [known[n] for n in names]


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()[-65536:]
    except OSError:
        return "(no console log)"
    text = data.decode("utf-8", "replace").replace("\r", "")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colour codes of systemd's status lines
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def state_lock(state_dir: Path):
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another droplets command holds {state_dir}/.lock; waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
