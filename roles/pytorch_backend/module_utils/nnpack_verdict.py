# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The verdict rules of nnpack_facts: pure functions from the probe's outcome to the facts.

Inputs are plain data: ``res`` is how the probe child ended ({"rc", "stdout", "stderr",
"duration", "timed_out"}, see nnpack_run.run), ``rec`` its last record (see nnpack_probe),
``fallback_ev`` evidence from another interpreter when the probe gave none. Nothing here
runs a process or reads a file, so tests/module/verdict_cases.yml tests it as a table.
"""

from __future__ import annotations

import signal

from ansible.module_utils.cpu_identity import FLAGS, _yn, fingerprint
from ansible.module_utils.nnpack_rules import find_warning

STATUSES = ("supported", "unsupported_hardware", "not_built", "cpuinfo_failed", "torch_missing", "probe_failed")
EVIDENCE_STAGES = ("evidence", "torch", "done")

EVIDENCE_KEYS = (
    "cpu_vendor", "cpu_model", "cpu_family", "cpu_model_number", "cpu_stepping", "architecture",
    "cpu_flags", "os_ymm_enabled", "os_disabled_flags", "cache_enumerated", "cache_sizes", "proc_cpuinfo_readable",
    "evidence_source", "cpu_count", "python_version",
)

STAGE_TEXT = {
    None: "before printing anything (interpreter start-up)",
    "procfs": "while reading CPUID through ctypes",
    "evidence": "while importing torch",
    "torch": "during the NNPACK check (torch.backends.nnpack.is_available())",
    "done": "after finishing",
}


def has_evidence(rec):
    return bool(rec) and rec.get("stage") in EVIDENCE_STAGES


def signal_name(num):
    try:
        return signal.Signals(num).name
    except (ValueError, AttributeError):
        return "signal %d" % num


def stderr_tail(stderr, lines=6, limit=1200):
    keep = [ln.rstrip() for ln in stderr.splitlines()
            if ln.strip() and "NNPACK" not in ln and "TCG doesn't support requested feature" not in ln]
    text = "\n".join(keep[-lines:])
    return text[-limit:] or None


def missing_requirements(ev):
    """NNPACK x86-64 requirements missing per the evidence (list of phrases), or None if unknown."""
    flags = ev.get("cpu_flags")
    if not flags:
        return None
    missing = []
    blocked = [f for f in ev.get("os_disabled_flags") or [] if f in ("avx2", "fma")]
    if blocked:
        missing.append("%s in CPUID but disabled by the OS (YMM register state off in XCR0)"
                       % "/".join(f.upper().replace("FMA", "FMA3") for f in blocked))
    if not flags.get("avx2") and "avx2" not in blocked:
        missing.append("no AVX2")
    if not flags.get("fma") and "fma" not in blocked:
        missing.append("no FMA3")
    if ev.get("cache_enumerated") is False:
        sizes = ev.get("cache_sizes") or {}
        absent = [k for k in ("L1d", "L2", "L3") if not sizes.get(k)]
        missing.append("no %s size in its CPUID cache leaves (cache hierarchy not enumerated)"
                       % "/".join(absent) if absent else "no enumerated cache hierarchy")
    return missing


def predict(ev):
    """(predicted_available, prediction_method) from the CPU evidence alone."""
    arch = ev.get("architecture") or ""
    src = ev.get("evidence_source") or "unknown"
    how = "CPUID, CPUID cache leaves" if src.startswith("cpuid") else "cpuinfo flags, sysfs cache"
    if ev.get("proc_cpuinfo_readable") is False:
        return False, "Linux: /proc/cpuinfo unreadable, so cpuinfo cannot initialize (%s)" % src
    if arch in ("x86_64", "AMD64"):
        method = "x86-64: avx2+fma+L1/L2/L3 cache enumeration (%s)" % how
        flags = ev.get("cpu_flags")
        if not flags:
            return None, method
        if not (flags.get("avx2") and flags.get("fma")):
            return False, method
        if ev.get("cache_enumerated") is None:
            return None, method
        return bool(ev.get("cache_enumerated")), method
    if arch in ("aarch64", "arm64"):
        return True, "aarch64: NEON backend, always supported when cpuinfo initializes (%s)" % src
    return None, "no NNPACK prediction for architecture %r" % arch


def describe_cpu(ev):
    return ev.get("cpu_model") or ev.get("cpu_vendor") or "this CPU"


def build_facts(python, wrapper, res, rec, fallback_ev):
    """The facts known before the verdict: evidence, torch details, prediction, fingerprint."""
    ev = rec if has_evidence(rec) else fallback_ev
    facts = {k: ev.get(k) if ev else None for k in EVIDENCE_KEYS}
    facts["evidence_source"] = facts["evidence_source"] or "none"
    facts["evidence_interpreter"] = ev.get("python_executable") if ev else None
    facts["cpu_flags"] = facts["cpu_flags"] or {k: None for k in FLAGS}
    facts["cache_sizes"] = facts["cache_sizes"] or {"L1d": None, "L2": None, "L3": None}
    if ev and ev.get("cpuid_error"):
        facts["cpuid_error"] = ev["cpuid_error"]
    if not has_evidence(rec):
        # evidence from another interpreter: its version says nothing about the probed one
        facts["python_version"] = rec.get("python_version") if rec else None
        facts["evidence_python_version"] = ev.get("python_version") if ev else None
    torch_rec = rec if rec and rec.get("stage") in ("torch", "done") else {}
    facts.update({
        "python": python,
        "wrapper": wrapper,
        "torch_version": torch_rec.get("torch_version"),
        "torch_cpu_capability": torch_rec.get("torch_cpu_capability"),
        "mkldnn_available": torch_rec.get("mkldnn_available"),
        "torch_import_seconds": torch_rec.get("torch_import_seconds"),
        "duration": round(res["duration"], 3) if res else 0.0,
        "probe_rc": None if not res or res["timed_out"] else res["rc"],
        "probe_stderr_tail": None,
        "nnpack_message": None,
    })
    facts["predicted_available"], facts["prediction_method"] = predict(facts)
    facts["fingerprint"], facts["fingerprint_source"] = fingerprint(facts)
    return facts


def prediction_clause(facts):
    pred = facts["predicted_available"]
    missing = missing_requirements(facts) or []
    if pred is True:
        return "the CPU evidence says NNPACK should initialize"
    if pred is False:
        if facts.get("proc_cpuinfo_readable") is False:
            return "the CPU evidence says NNPACK would fail (/proc/cpuinfo unreadable)"
        return "the CPU evidence says NNPACK would fail (%s)" % (", ".join(missing) or "requirements missing")
    return "the CPU evidence cannot tell whether NNPACK would initialize"


def _torch_answered(facts, rec, res, msg_reason):
    """PyTorch gave its answer: available, status and reason from it and its warning."""
    cpu = describe_cpu(facts)
    version = rec.get("torch_version") or "?"
    if rec["nnpack_available"]:
        facts.update(available=True, status="supported", reason=(
            "NNPACK initializes on %s: torch %s reports torch.backends.nnpack.is_available() == True, "
            "so nothing needs to change." % (cpu, version)))
        return
    facts["available"] = False
    if msg_reason == "Unsupported hardware.":
        missing = missing_requirements(facts)
        if missing:
            why = "CPU %s has %s; NNPACK on x86-64 needs AVX2, FMA3 and enumerated L1/L2/L3 caches" % (
                cpu, " and ".join(missing))
        elif missing == [] and facts["architecture"] in ("x86_64", "AMD64"):
            why = ("CPU %s shows AVX2, FMA3 and L1/L2/L3 caches in the evidence, yet cpuinfo found the "
                   "hardware unsupported (check the hypervisor's CPUID cache leaves)" % cpu)
        else:
            why = "CPU %s does not meet NNPACK's requirements" % cpu
        facts.update(status="unsupported_hardware", reason=(
            "Could not initialize NNPACK! Reason: Unsupported hardware. (%s), so PyTorch %s prints this warning "
            "on every convolution that asks: turn NNPACK off in the service at start-up with "
            "torch.backends.nnpack.set_flags(False), or give the machine a CPU model with these features."
            % (why, version)))
    elif msg_reason == "Out of memory.":
        facts.update(status="cpuinfo_failed", reason=(
            "Could not initialize NNPACK! Reason: Out of memory. (the cpuinfo library could not initialize "
            "on %s; /proc/cpuinfo readable: %s), so expose /proc/cpuinfo and /sys/devices/system/cpu to the "
            "service or turn NNPACK off with torch.backends.nnpack.set_flags(False)."
            % (cpu, _yn(facts.get("proc_cpuinfo_readable")))))
    elif msg_reason is None and rec.get("nnpack_built") is False:
        # A build question, not a CPU one (Debian's python3-torch, for one): no CPU makes it
        # initialize, and no migration changes it.
        facts.update(status="not_built", reason=(
            "This torch %s build has no NNPACK at all (built with USE_NNPACK=OFF), so NNPACK never runs with it on "
            "any CPU, including %s, and is_available() is False without a warning; USE_NNPACK=0 changes nothing "
            "with it and is written only to keep the setting explicit." % (version, cpu)))
    elif msg_reason is None:
        facts.update(status="probe_failed", probe_stderr_tail=stderr_tail(res["stderr"]), reason=(
            "torch %s reports NNPACK unavailable on %s but printed no NNPACK reason (is TORCH_CPP_LOG_LEVEL "
            "forced elsewhere?), so turn NNPACK off with torch.backends.nnpack.set_flags(False) to be safe."
            % (version, cpu)))
    else:
        facts.update(status="probe_failed", probe_stderr_tail=stderr_tail(res["stderr"]), reason=(
            "Could not initialize NNPACK! Reason: %s (an unexpected NNPACK status on %s), so turn NNPACK off "
            "with torch.backends.nnpack.set_flags(False) and report this." % (msg_reason, cpu)))


def _probe_failure(facts, python, timeout, res, stage):
    """The probe did not finish: a reason naming how and where it stopped."""
    where = STAGE_TEXT.get(stage, "at stage %s" % stage)
    clause = prediction_clause(facts)
    rc = res["rc"]
    if res["timed_out"]:
        return ("The NNPACK probe with %s timed out after %d s %s and was killed, so %s; raise the timeout option "
                "(emulated CPUs need minutes) or check the interpreter." % (python, timeout, where, clause))
    if rc is not None and rc < 0:
        hint = ""
        if stage == "torch" and rc == -signal.SIGSEGV:
            hint = " (cpuinfo crashes like this when /proc and /sys are hidden)"
        return ("The NNPACK probe with %s was killed by %s (%d) %s%s, so %s; run the interpreter by hand to see "
                "why." % (python, signal_name(-rc), -rc, where, hint, clause))
    if rc and rc > 128 and rc - 128 < 65:
        return ("The NNPACK probe with %s exited with status %d (likely killed by %s) %s, so %s; run the "
                "interpreter by hand to see why." % (python, rc, signal_name(rc - 128), where, clause))
    if rc:
        last = stderr_tail(res["stderr"], lines=1, limit=200)
        return ("The NNPACK probe with %s exited with status %d %s%s, so %s; run the interpreter by hand to see "
                "why." % (python, rc, where, " (%s)" % last if last else "", clause))
    junk = " ".join(res["stdout"].split())[:80]
    return ("The NNPACK probe with %s exited without a readable result (stdout began %r), so %s; check that the "
            "python option names a real Python interpreter." % (python, junk, clause))


def classify(facts, python, timeout, res, rec):
    """Set available, status, reason (and nnpack_message, probe_stderr_tail) in facts."""
    facts["nnpack_message"], msg_reason = find_warning(res["stderr"])
    stage = rec.get("stage") if rec else None
    if stage == "done" and "nnpack_available" in rec:
        _torch_answered(facts, rec, res, msg_reason)
        return
    facts.update(available=None, status="probe_failed", probe_stderr_tail=stderr_tail(res["stderr"]))
    if stage == "done" and rec.get("torch_missing"):
        facts.update(status="torch_missing", probe_stderr_tail=None, reason=(
            "%s cannot import torch (%s), so NNPACK could not be checked and %s; install torch into that "
            "environment or point the python option at the service's virtualenv python."
            % (python, rec.get("torch_error"), prediction_clause(facts))))
    elif stage == "done" and rec.get("torch_error"):
        facts["reason"] = ("import torch failed in %s (%s), so NNPACK could not be checked and %s; repair that "
                           "torch installation." % (python, rec["torch_error"], prediction_clause(facts)))
    else:
        facts["reason"] = _probe_failure(facts, python, timeout, res, stage)


def verdict(python, timeout, wrapper, res, rec, fallback_ev=None, problem=None):
    """The nnpack facts. ``problem`` = (what, advice) when the probe could not even be started."""
    facts = build_facts(python, wrapper, res, rec, fallback_ev)
    if problem:
        facts.update(available=None, status="probe_failed", reason=(
            "NNPACK could not be checked because %s, so %s; %s." % (problem[0], prediction_clause(facts),
                                                                      problem[1])))
    else:
        classify(facts, python, timeout, res, rec)
    return facts
