# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""When a deploy takes the CPU record's NNPACK verdict instead of probing again.

The probe imports torch on the host (seconds; a minute on slow CPUs) and is a round trip of
its own. Its answer depends only on the CPU and on the torch build, so it is taken from the
record when the record says it was probed on this CPU (the host read's fingerprint, computed
by the probe's own code) with this run's release, and the host serves that release: an
unchanged re-run then costs the host read and the verification only. Anything else probes:
another CPU (a resized or migrated droplet), another release, a record without a decided
verdict, a host that does not serve what it should (a run repairing a host checks everything
again), and a probe-only run (--tags probe), which is how an operator asks for a fresh probe.

The decision has the shape of nnpack_facts' ``decision`` (module_utils/nnpack_decision.py),
so that everything after the probe reads one or the other alike.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
from pathlib import Path

# filter_plugins/ is no package: the shared loader beside this file is loaded by path, and
# through it the service's cpu_record.py, whose "same CPU?" rule the deploy and the drift guard use
_spec = importlib.util.spec_from_file_location("pytorch_backend_service_rules",
                                               Path(__file__).with_name("service_rules.py"))
service_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service_rules)

cpu_record = service_rules.load("cpu_record.py", "pytorch_backend_cpu_record")

# the statuses that are torch's verdict on this CPU; cpuinfo_failed is the host's state
# (an unreadable /proc/cpuinfo), which may have changed since
DECIDED = ("supported", "unsupported_hardware", "not_built")


def recorded(host):
    """The CPU record as the host read found it (a dict; {} when missing or unusable)."""
    content = ((host.get("files") or {}).get("record") or {}).get("content") or ""
    try:
        record = json.loads(base64.b64decode(content, validate=True).decode("utf-8")) if content else {}
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def why_probe(host, release_id, release_ready, run_configures):
    """Why this run probes NNPACK again, in words; "" when the record's verdict stands."""
    record = recorded(host)
    fingerprint = host.get("cpu_fingerprint") or ""
    if not run_configures:
        return "a probe-only run always probes"
    if not release_ready:
        return "release %s is not built, so the verdict is predicted" % release_id
    if not record:
        return "there is no CPU record"
    if record.get("probed_release") != release_id:
        return "the record was not probed with release %s" % release_id
    if record.get("status") not in DECIDED:
        return "the record holds no verdict of torch's (%s)" % record.get("status")
    if record.get("use_nnpack") != ("" if record.get("available") is True else "0"):
        return "the record's USE_NNPACK does not follow from its verdict"
    if not fingerprint:
        return "the CPU's fingerprint could not be read"
    if not cpu_record.same_cpu(record, {"fingerprint": fingerprint}):
        return "the CPU is not the one recorded"
    if not (host.get("active") == "active" and host.get("served") and host.get("served_release") == release_id):
        return "torch-backend does not serve release %s" % release_id
    return ""


def recorded_decision(host, release_id, release_ready, run_configures, host_name):
    """The decision taken from the record when ``why_probe`` finds no reason to probe; else {}."""
    if why_probe(host, release_id, release_ready, run_configures):
        return {}
    record = recorded(host)
    return {
        "record": record,
        "previous": record,
        "kept": False,
        "cpu_moved": False,
        "use_nnpack_off": record.get("use_nnpack") == "0",
        "predicted": False,
        "messages": [{"level": "info", "text": (
            "%s: NNPACK %s, as probed with release %s on this CPU (%s); not probed again (--tags probe probes)"
            % (host_name, record.get("status"), release_id, record.get("fingerprint")))}],
    }


class FilterModule:
    """pytorch_backend probe-reuse filters."""

    def filters(self):
        return {
            "pytorch_backend_why_probe": why_probe,
            "pytorch_backend_recorded_decision": recorded_decision,
        }
