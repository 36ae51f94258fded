"""Logging to stderr, one line per event.

journald stores each stderr line as its own entry, so a multi-line traceback
would become a burst of unrelated-looking entries: newlines are escaped.
journald adds timestamps; we keep the level and logger name only.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "torch_backend"


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r", "\\r").replace("\n", " \\n ")


def setup(level: str = "INFO") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(level)
    return root


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
