"""The NNPACK decision: made once, at start-up, before any model is loaded.

Why this module exists (see "NNPACK" in this package's README.md; the
hardware NNPACK needs is in the notes of ``ansible-doc nnpack_facts``):

* The ``USE_NNPACK`` environment variable is a *build-time* switch; stock
  wheels ignore it at run time. The only run-time switch is
  ``torch.backends.nnpack.set_flags(False)``, and it must be called before the
  first convolution: then NNPACK is never initialized and torch never prints
  ``Could not initialize NNPACK! Reason: Unsupported hardware.``, which
  torch 2.13 prints on *every* batch-1 Conv2d that oneDNN declines.
* ``torch.backends.nnpack.is_available()`` is the authoritative test, but it
  prints that same warning each time it says no. So the auto mode asks it in a
  child process with its stderr captured: the service's own stderr (the
  journal) stays clean, and a crash of the check (seen with /proc and /sys
  hidden) only kills the child.

The child is made with fork() rather than by starting a new interpreter: it
reuses the torch already imported (no second multi-second import) and it
runs on the same CPU as the service, also when the service itself runs under
an emulator such as qemu-user, where a fresh exec would escape the emulation.
It is forked before any thread pool exists (no op has run yet).
"""

from __future__ import annotations

import faulthandler
import os
import select
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from . import nnpack_rules

PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Decision:
    enabled: bool
    # "env" (USE_NNPACK was set), "auto" (probed) or "drift" (probed because
    # the CPU differs from the role's record: see drift.py)
    decided_by: str
    reason: str      # human-readable, goes into the start-up line and /v2

    def describe(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"{state} ({self.decided_by}: {self.reason})"


def probe(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Ask ``torch.backends.nnpack.is_available()`` in a forked child.

    Returns (available, reason). Anything other than a clean "yes" (a crash,
    a hang, an exception) counts as unavailable: leaving NNPACK on where it may
    not initialize is what fills the journal.
    """
    import torch  # noqa: F401  (imported before fork so the child inherits it)

    read_fd, write_fd = os.pipe()
    err_file = tempfile.TemporaryFile(prefix="torch-backend-nnpack-probe-")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        status = b"E"
        try:
            os.close(read_fd)
            os.dup2(err_file.fileno(), 2)
            # A crash is reported by its signal number; a faulthandler dump
            # (python -X faulthandler) could go to a saved copy of stderr.
            faulthandler.disable()
            status = b"1" if torch.backends.nnpack.is_available() else b"0"
        except BaseException:  # noqa: BLE001 - any failure means "no"
            pass
        finally:
            try:
                os.write(write_fd, status)
            finally:
                os._exit(0)

    os.close(write_fd)
    try:
        deadline = time.monotonic() + timeout
        status = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False, f"probe timed out after {timeout:.0f} s"
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                status = os.read(read_fd, 1)
                break
        _, wait_status = os.waitpid(pid, 0)
        err_file.seek(0)
        stderr = err_file.read(64 * 1024).decode("utf-8", "replace")
    finally:
        os.close(read_fd)
        err_file.close()

    if os.WIFSIGNALED(wait_status):
        return False, f"probe crashed with signal {os.WTERMSIG(wait_status)}"
    if status == b"1":
        return True, "probe: NNPACK initialized"
    if status == b"0":
        _, reason = nnpack_rules.find_warning(stderr)
        if reason is not None:
            return False, f"probe: {reason.rstrip('.')}"
        # No warning: a torch built without NNPACK (Debian's python3-torch) says no silently.
        if not built_with_nnpack():
            return False, "probe: this torch was built without NNPACK"
        return False, "probe: is_available() returned False"
    return False, "probe failed: is_available() raised or the child died"


def built_with_nnpack() -> bool:
    """Whether this torch has NNPACK compiled in (its build summary says so)."""
    import torch

    return nnpack_rules.built_with_nnpack(torch.__config__.show())


def decide(use_nnpack: Optional[str], probe_fn=probe) -> Decision:
    """USE_NNPACK "0"/"1" is obeyed as given; unset/empty means probe."""
    if use_nnpack == "0":
        return Decision(False, "env", "USE_NNPACK=0")
    if use_nnpack == "1":
        return Decision(True, "env", "USE_NNPACK=1")
    available, reason = probe_fn()
    return Decision(available, "auto", reason)


def apply(decision: Decision) -> None:
    """Set torch's run-time flag; must run before any model is loaded or run."""
    import torch

    if not decision.enabled:
        torch.backends.nnpack.set_flags(False)


def enabled_in_torch() -> bool:
    """What torch will do now (reads the flag; never initializes NNPACK)."""
    import torch

    return bool(torch._C._get_nnpack_enabled())
