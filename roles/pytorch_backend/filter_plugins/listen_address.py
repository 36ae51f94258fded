# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The listen address (``pytorch_backend_host``) on the controller: the preflight check,
whether it is loopback-only, and every URL the role builds to reach the service.

The rules are the service's own: torch_backend/listen_address.py of the package this role
deploys (files/torch-backend/), loaded by path, so that what preflight accepts is what the
service binds and the URL the role calls is the one the service logs. IPv6 literals are
bracketed in URLs (http://[::1]:8080)."""

from __future__ import annotations

import types
from pathlib import Path

RULES_FILE = Path(__file__).resolve().parents[1] / "files" / "torch-backend" / "torch_backend" / "listen_address.py"


def _load_rules():
    # Compiled from source, not imported: no bytecode may be written into the role's files
    # (they are what a release is built from), and nothing else of the package is loaded.
    module = types.ModuleType("pytorch_backend_listen_address")
    module.__file__ = str(RULES_FILE)
    exec(compile(RULES_FILE.read_text(encoding="utf-8"), str(RULES_FILE), "exec"), module.__dict__)
    return module


rules = _load_rules()


def listen_problem(host):
    """Why the service cannot listen on `host`, in words; "" when it can."""
    return rules.problem(host)


def local_url(host, port):
    """The URL at which a client on the host reaches the service bound to `host`:`port`
    (wildcards on the loopback address of their family, IPv6 in brackets)."""
    return rules.local_url(str(host), int(port))


def is_loopback(host):
    """Whether only the host itself can reach a service bound to `host`."""
    return rules.is_loopback(str(host))


class FilterModule:
    """pytorch_backend listen-address filters."""

    def filters(self):
        return {
            "pytorch_backend_listen_problem": listen_problem,
            "pytorch_backend_local_url": local_url,
            "pytorch_backend_is_loopback": is_loopback,
        }
