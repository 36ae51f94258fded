# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The USE_NNPACK decision: nnpack_facts' facts and the host's previous CPU record in, the
record to write and what to tell the operator out.

Pure, like nnpack_verdict.py: tests/module/decision_cases.yml tests it as a table. The
message texts are matched by the Molecule drills (molecule/default/drills/, molecule/
migration/verify.yml, molecule/shared/redeploy_on_cpu.yml), so they change only with them.
"""

from __future__ import annotations

from ansible.module_utils.cpu_record import make_record, same_cpu

# statuses where the probe gave no verdict of torch's (see nnpack_verdict.STATUSES)
UNDECIDED = ("probe_failed", "torch_missing")


def _show(value):
    """A value as Jinja2 prints it between braces in the role's messages (None as nothing)."""
    return "" if value is None else str(value)


def _use_text(off, unset="unset"):
    # "USE_NNPACK =0": the drills match the space the role's folded messages always had
    return "=0" if off else unset


def predicted_note(host, facts, off, check_mode):
    flags = facts.get("cpu_flags") or {}
    return ("%s: no release to probe with yet%s, so USE_NNPACK %s is predicted from the CPU evidence "
            "(AVX2 %s, FMA3 %s, caches %s); a deploy probes it" % (
                host, " (check mode builds none)" if check_mode else "", _use_text(off),
                _show(flags.get("avx2", "?")), _show(flags.get("fma", "?")),
                "enumerated" if facts.get("cache_enumerated") else "hidden"))


def undecided_warning(host, facts, record, kept, off):
    if kept:
        outcome = "same CPU as recorded, so the recorded verdict stays (%s, USE_NNPACK %s)" % (
            record.get("status"), _use_text(off))
    else:
        outcome = "writing USE_NNPACK=0, which is always safe"
    return "WARNING: NNPACK could not be probed on %s (%s: %s); %s." % (
        host, _show(facts.get("status")), _show(facts.get("reason")), outcome)


def hardware_change(previous, record, off):
    before = previous.get("use_nnpack", "") == "0"
    if off and not before:
        change = "USE_NNPACK=0 added"
    elif before and not off:
        change = "USE_NNPACK=0 removed"
    else:
        change = "USE_NNPACK unchanged (%s)" % ("0" if off else "unset")
    return "CPU changed from %s (%s) to %s (%s); NNPACK %s -> %s; %s" % (
        _show(previous.get("cpu_model", "?")), _show(previous["fingerprint"]), _show(record.get("cpu_model")),
        _show(record.get("fingerprint")), _show(previous.get("status", "?")), _show(record.get("status")), change)


def decide(facts, previous, probed, check_mode=False, host="", release=""):
    """The decision for one host (see nnpack_facts' RETURN, ``decision``).

    ``facts``: nnpack_facts' facts. ``previous``: the host's record ({} for none).
    ``probed``: False when there was no release to probe with, so that the prediction
    from the CPU evidence stands in for torch's answer. ``host``: the name in messages.
    ``release``: the id of the release probed with, recorded as ``probed_release`` so that
    a later run on the same CPU and release can take the verdict without probing
    (filter_plugins/probe_reuse.py); never for a prediction, which no torch made.
    """
    previous = previous or {}
    predicted = not probed
    available = facts.get("predicted_available") if predicted else facts.get("available")
    new = make_record(facts, available)
    if probed and release:
        new["probed_release"] = release
    undecided = facts.get("status") in UNDECIDED
    # on the same CPU an undecided probe keeps the recorded verdict: one timeout must not
    # flip the setting (and restart the service) twice
    kept = bool(probed and undecided and "use_nnpack" in previous and same_cpu(previous, new))
    record = previous if kept else new
    off = record.get("use_nnpack") == "0"
    cpu_moved = "fingerprint" in previous and previous["fingerprint"] != record.get("fingerprint")

    messages = []
    if predicted:
        messages.append({"level": "info", "text": predicted_note(host, facts, off, check_mode)})
    if probed and undecided:
        messages.append({"level": "warning", "text": undecided_warning(host, facts, record, kept, off)})
    if cpu_moved:
        messages.append({"level": "info", "text": hardware_change(previous, record, off)})
    return {
        "record": record,
        "previous": previous,
        "kept": kept,
        "cpu_moved": cpu_moved,
        "use_nnpack_off": off,
        "predicted": predicted,
        "messages": messages,
    }
