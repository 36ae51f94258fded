"""Logging to stderr, one line per event.

journald stores each stderr line as its own entry, so a multi-line traceback
would become a burst of unrelated-looking entries: newlines are escaped.
journald adds timestamps; we keep the level and logger name only.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "torch_backend"
FORMAT = "%(levelname)s %(name)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r", "\\r").replace("\n", " \\n ")


def setup(level: str = "INFO") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(level)
    return root


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class _Rename(logging.Filter):
    """Files a library's records under our logger name, which the journal and
    the tests expect at the start of every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.name = f"{LOGGER_NAME}.{record.name}"
        return True


def adopt(name: str, level: int) -> None:
    """Send library logger `name` through our one-line stderr handler, at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    # On the handler: a logger's own filters skip its children's records.
    handler.addFilter(_Rename())
    lib = logging.getLogger(name)
    lib.handlers[:] = [handler]
    lib.propagate = False
    lib.setLevel(level)
