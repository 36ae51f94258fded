"""Booting a droplet: QEMU's command line, starting it daemonized, and waiting until SSH answers."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
import time

from .config import DEFAULT_SMP, PANIC_MARK, qemu_binary
from .messages import DropletError, log, print_lock
from .processes import kill_qemu
from .ssh import pick_port, ssh_try
from .state import Droplet, tail

GUEST_KERNEL_ARGS = "mitigations=off"


def qemu_argv(d: Droplet) -> list:
    s = d.state
    esc = lambda p: str(p).replace(",", ",,")  # noqa: E731  (QEMU option-value escaping)
    append = f"root=/dev/vda rw console=ttyS0 systemd.hostname={d.name} {GUEST_KERNEL_ARGS}"
    if s.get("append"):
        append += " " + s["append"]
    argv = [qemu_binary(), "-name", f"droplet-{d.name}", "-nodefaults", "-display", "none",
            "-accel", "kvm" if s["accel"] == "kvm" else "tcg,thread=multi",
            "-cpu", s["cpu"], "-m", str(s["mem_mb"]), "-smp", str(s.get("smp", DEFAULT_SMP)),
            "-kernel", s["kernel"], "-initrd", s["initrd"], "-append", append,
            "-drive", f"file={esc(d.disk)},format=qcow2,if=virtio",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{s['port']}-:22",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{d.console}",
            "-daemonize", "-pidfile", str(d.pidfile)]
    if len(str(d.qmp)) < 100:  # sun_path limit
        argv += ["-qmp", f"unix:{esc(d.qmp)},server=on,wait=off"]
    return argv


def boot(d: Droplet, port_forced: bool, taken_ports: set) -> None:
    """Start d's QEMU (daemonized). Retries with another port if the chosen one was taken."""
    for f in (d.pidfile, d.console, d.qmp):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    backing = d.state["image"]
    if not os.path.exists(backing):
        raise DropletError(
            f"{d.name}: its base image {backing} is gone (the image was rebuilt); "
            f"`droplets down {d.name}` and `up` it again")
    for attempt in range(4):
        argv = qemu_argv(d)
        with open(d.qemu_log, "w") as f:
            f.write("$ " + " ".join(shlex.quote(a) for a in argv) + "\n")
            f.flush()
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        if r.returncode == 0:
            break
        out = d.qemu_log.read_text(errors="replace")
        if "host forwarding" in out and not port_forced and attempt < 3:
            taken_ports.add(d.state["port"])
            d.state["port"] = pick_port(taken_ports)
            taken_ports.add(d.state["port"])
            log(f"{d.name}: port taken; retrying on {d.state['port']}")
            continue
        msgs = [l for l in out.splitlines()[1:] if "TCG doesn't support" not in l]
        raise DropletError(f"{d.name}: QEMU failed to start (exit {r.returncode}):\n  "
                           + "\n  ".join(msgs[-10:]))
    d.state["started"] = time.time()
    d.save()
    pid = d.pid()
    log(f"{d.name}: QEMU pid {pid}, cpu {d.state['cpu']}, {d.state['mem_mb']} MiB, "
        f"accel {d.state['accel']}, ssh on 127.0.0.1:{d.state['port']}")


def wait_ssh(droplets: list, timeout: float) -> list:
    """Wait in parallel until each droplet answers `ssh ... true`. -> list of (droplet, error)."""
    failures = []
    start = time.monotonic()

    def one(d: Droplet):
        last_note = time.monotonic()
        attempt, why = 0, "no attempt"
        while True:
            elapsed = time.monotonic() - start
            if not d.alive():
                return f"QEMU exited after {elapsed:.0f}s"
            # A busy host slows an emulated guest's key exchange past a short connect timeout
            # (a restarted guest once never answered within 300 s, its sshd up): each failed
            # attempt waits longer, up to 30 s.
            attempt += 1
            why = ssh_try(d.state["port"], connect_timeout=int(max(1, min(5 * attempt, 30, timeout - elapsed))))
            if why is None:
                log(f"{d.name}: SSH works ({time.monotonic() - start:.1f}s)")
                return None
            if PANIC_MARK in tail(d.console, 200):
                return f"guest kernel panicked after {elapsed:.0f}s"
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                return f"no SSH answer within {timeout:.0f}s ({attempt} attempts; the last: {why})"
            if time.monotonic() - last_note >= 20:
                last_note = time.monotonic()
                last = (d.console_tail(1) or "").strip()[:100]
                log(f"{d.name}: waiting for SSH ({elapsed:.0f}s; {why}); console: {last}")
            time.sleep(min(2.0, max(0.1, timeout - elapsed)))

    results = {}
    threads = []
    for d in droplets:
        t = threading.Thread(target=lambda d=d: results.__setitem__(d.name, one(d)), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    for d in droplets:
        if results.get(d.name):
            failures.append((d, results[d.name]))
    return failures


def report_failures(failures: list, keep_failed: bool) -> None:
    for d, why in failures:
        with print_lock:
            print(f"\nERROR: droplet {d.name} (cpu {d.state.get('cpu')}, port {d.state.get('port')}, "
                  f"accel {d.state.get('accel')}): {why}\n"
                  f"--- last lines of {d.console} ---\n{d.console_tail(30)}\n--- end ---",
                  file=sys.stderr, flush=True)
        if not keep_failed:
            kill_qemu(d, grace=3)
            log(f"{d.name}: stopped (state and console log kept; `droplets down {d.name}` removes them)")
