# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Running the NNPACK probe child for nnpack_facts: the command, the timeout, the attempts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from ansible.module_utils import cpu_identity, nnpack_probe, nnpack_rules
from ansible.module_utils.nnpack_verdict import has_evidence

# seconds for the evidence-only child (no torch): it reads /proc, /sys and CPUID
EVIDENCE_TIMEOUT = 60

# The child is `PYTHON -c BOOTSTRAP [args]`: the bootstrap makes cpu_identity.py and
# nnpack_rules.py importable under their names and runs nnpack_probe.py as __main__, all
# from their source text, so the probed interpreter needs neither Ansible nor these files
# on disk. The sources are read
# through the modules' loaders: inside the AnsiballZ zip that is zipimport, from a checkout
# the file.
_BOOTSTRAP = (
    "import sys, types\n"
    "for name, text in ((%r, %r), (%r, %r)):\n"
    "    m = sys.modules[name] = types.ModuleType(name)\n"
    "    exec(compile(text, name + '.py', 'exec'), m.__dict__)\n"
    "exec(compile(%r, 'nnpack_probe.py', 'exec'), {'__name__': '__main__'})\n"
)


def source_of(module):
    loader = getattr(module, "__loader__", None)
    text = loader.get_source(module.__name__) if hasattr(loader, "get_source") else None
    if text is None:
        with open(module.__file__) as f:
            text = f.read()
    return text


def child_command(prefix, python, args=()):
    """argv of the probe child: [*prefix, python, -c, BOOTSTRAP, *args]."""
    bootstrap = _BOOTSTRAP % ("cpu_identity", source_of(cpu_identity), "nnpack_rules", source_of(nnpack_rules),
                              source_of(nnpack_probe))
    return list(prefix) + [python, "-c", bootstrap] + list(args)


def child_env(base, extra):
    """The child's environment: ``base`` without PYTHON* (so the probe sees the interpreter's own
    sys.path, as the service does), plus ``extra``, plus what makes the NNPACK warning parseable."""
    env = dict((k, v) for k, v in base.items() if not k.startswith("PYTHON"))
    env.update(extra)
    env.update({"LC_ALL": "C", "LANG": "C", "TORCH_CPP_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    return env


def run(cmd, timeout, env):
    """Run cmd in its own process group; at the deadline SIGKILL the whole group (an emulator
    and the interpreter under it alike). Returns rc, stdout, stderr, duration, timed_out."""
    started = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd="/", env=env, start_new_session=True)
    except OSError as exc:  # as a shell reports it: 127 not found, 126 cannot execute
        return {"rc": 127 if isinstance(exc, FileNotFoundError) else 126, "stdout": "",
                "stderr": "%s: %s" % (cmd[0], exc.strerror or exc), "duration": time.monotonic() - started,
                "timed_out": False}
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = proc.communicate()
    return {"rc": proc.returncode, "stdout": out.decode("utf-8", "replace"), "stderr": err.decode("utf-8", "replace"),
            "duration": time.monotonic() - started, "timed_out": timed_out}


def parse_records(stdout):
    """The child's last record (a dict), or None."""
    last = None
    for line in stdout.splitlines():
        if line.startswith(nnpack_probe.MARK):
            try:
                rec = json.loads(line[len(nnpack_probe.MARK):])
            except ValueError:
                continue
            if isinstance(rec, dict):
                last = rec
    return last


def evidence_only(prefix, env):
    """CPU evidence (no torch) from a child of the module's own interpreter under ``prefix``, or None.

    Its own limit, not the probe's: a tight probe timeout on a slow host would leave the host
    without a CPU identity, and the role would take it for a moved one."""
    res = run(child_command(prefix, sys.executable, ["--evidence-only"]), EVIDENCE_TIMEOUT, env)
    return parse_records(res["stdout"])


def probe(python, prefix, timeout, env, host_view=False):
    """Probe ``python`` (None: it cannot be run) under ``prefix``; returns res, rec, fallback_ev.

    A child that dies while executing CPUID is run again without it. When the probe gave no
    CPU evidence, the module's own interpreter gathers it under the same prefix (so an
    emulated CPU is still the one described); ``host_view`` says the wrapper was missing.
    """
    res = rec = fallback = None
    if python:
        res = run(child_command(prefix, python), timeout, env)
        rec = parse_records(res["stdout"])
        if rec and rec.get("stage") == "procfs" and not res["timed_out"] and res["rc"] != 0:
            res = run(child_command(prefix, python, ["--no-cpuid"]), timeout, env)
            rec = parse_records(res["stdout"])
    if not has_evidence(rec):
        fallback = evidence_only(prefix, env)
        if fallback and host_view:
            fallback["evidence_source"] += " (host view; wrapper not applied)"
    return res, rec, fallback
