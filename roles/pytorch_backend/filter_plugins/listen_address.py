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

import importlib.util
from pathlib import Path

# filter_plugins/ is no package (Ansible loads each file here by path, under a name of its own):
# the shared loader beside this file is loaded by path as well
_spec = importlib.util.spec_from_file_location("pytorch_backend_service_rules",
                                               Path(__file__).with_name("service_rules.py"))
service_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service_rules)

rules = service_rules.load("listen_address.py", "pytorch_backend_listen_address")


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


def listen_stream(host, port):
    """The socket unit's ListenStream= for `host`:`port` ("" for a host name systemd cannot bind)."""
    return rules.listen_stream(str(host), int(port))


class FilterModule:
    """pytorch_backend listen-address filters."""

    def filters(self):
        return {
            "pytorch_backend_listen_problem": listen_problem,
            "pytorch_backend_local_url": local_url,
            "pytorch_backend_is_loopback": is_loopback,
            "pytorch_backend_listen_stream": listen_stream,
        }
