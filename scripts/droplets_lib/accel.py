"""KVM or TCG: a broken nested KVM is told apart from a working one by booting the guest kernel
once, and the verdict is cached per kernel, QEMU and host kernel."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from .config import PANIC_MARK, qemu_binary
from .messages import DropletError, log
from .state import atomic_write


def qemu_version() -> str:
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def probe_kvm(kernel: str, timeout: float = 10.0):
    """Boot the guest kernel under KVM with no disk: a working KVM reaches the kernel's VFS panic
    within seconds; a broken nested KVM dies with 'KVM internal error'. -> (ok, reason)."""
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm not accessible"
    with tempfile.TemporaryDirectory(prefix="droplets-kvm-probe-") as tmp:
        con, err = Path(tmp) / "console", Path(tmp) / "stderr"
        cmd = [qemu_binary(), "-nodefaults", "-display", "none", "-accel", "kvm", "-m", "256",
               "-smp", "1", "-no-reboot", "-kernel", kernel,
               "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent",
               "-serial", f"file:{con}"]
        with open(err, "w") as ef:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=ef, stderr=ef)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                text = con.read_text(errors="replace") if con.exists() else ""
                if PANIC_MARK in text or "VFS: Unable to mount root" in text:
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        text = con.read_text(errors="replace") if con.exists() else ""
        errtext = err.read_text(errors="replace")
    if "KVM internal error" in errtext or "KVM internal error" in text:
        line = next((l for l in errtext.splitlines() if "KVM internal error" in l), "")
        return False, f"KVM probe failed: {line.strip() or 'KVM internal error'}"
    if PANIC_MARK in text or "VFS: Unable to mount root" in text:
        return True, "KVM probe booted the kernel to its expected VFS panic"
    if "Linux version" in text:
        return True, "KVM probe started the kernel"
    errs = [l for l in errtext.splitlines() if l.strip() and "warning:" not in l
            and "terminating on signal" not in l]
    detail = f": {errs[-1].strip()}" if errs else ""
    return False, f"KVM probe: no kernel output within {timeout:.0f}s{detail}"


def choose_accel(state_dir: Path, forced, kernel: str):
    """-> (accel, reason). Forced by --accel / $DROPLETS_ACCEL, else the cached probe verdict."""
    forced = forced or os.environ.get("DROPLETS_ACCEL") or None
    if forced and forced != "auto":
        if forced not in ("kvm", "tcg"):
            raise DropletError(f"bad accelerator {forced!r}: kvm, tcg or auto", 2)
        return forced, "forced"
    key = f"{file_digest(kernel)} | {qemu_version()} | host {os.uname().release}"
    cache = state_dir / "accel"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
        if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
            return cached["accel"], f"cached verdict: {cached.get('reason')}"
    log("probing KVM with the guest kernel (once per kernel and QEMU version)")
    ok, reason = probe_kvm(kernel)
    accel = "kvm" if ok else "tcg"
    atomic_write(cache, json.dumps({"key": key, "accel": accel, "reason": reason,
                                    "probed": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    return accel, reason
