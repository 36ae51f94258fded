"""What a person sees besides a command's own output: progress lines on stderr and DropletError."""

from __future__ import annotations

import sys
import threading
import time

_T0 = time.monotonic()
# one lock for every line on stderr: the parallel SSH waits and failure reports do not interleave
print_lock = threading.Lock()


class DropletError(Exception):
    """An error a person can act on; printed without a traceback, exit status 1 (or .code)."""

    def __init__(self, msg: str, code: int = 1):
        super().__init__(msg)
        self.code = code


def log(msg: str) -> None:
    with print_lock:
        print(f"[droplets +{time.monotonic() - _T0:.0f}s] {msg}", file=sys.stderr, flush=True)
