# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The NNPACK probe child: the program nnpack_facts runs with the interpreter it probes.

It is never imported to do its work: nnpack_run.py sends this file's source (and those
of cpu_identity.py and nnpack_rules.py) to ``PYTHON -c`` (see nnpack_run.child_command), so the probed
interpreter needs nothing but the standard library and, for the NNPACK part, torch.
It can also be run by hand from this directory:
``PYTHON nnpack_probe.py [--evidence-only] [--no-cpuid]``.

It prints JSON records, each on one line after MARK, as it goes: "procfs" (procfs/sysfs
evidence, printed just before CPUID is executed), "evidence" (with CPUID), "torch" (torch
imported) and finally "done". Every record repeats everything known so far, so the last
record wins, and a crash is located by the stage of the last record. It imports nothing
heavy but torch and asks NNPACK exactly once.
"""

from __future__ import annotations

import json
import sys
import time

MARK = "@@NNPACK_FACTS@@ "


def emit(rec):
    sys.stdout.write(MARK + json.dumps(rec, sort_keys=True) + "\n")
    sys.stdout.flush()


def probe(identity, rules, args):
    """Gather CPU evidence with ``identity`` (the cpu_identity module), then ask torch; ``rules``
    is the nnpack_rules module, which reads torch's answers as the service does."""
    rec = identity.gather(use_cpuid="--no-cpuid" not in args, progress=emit)
    emit(rec)
    if "--evidence-only" in args:
        return
    started = time.time()
    try:
        import torch
    except ImportError as exc:
        rec["stage"] = "done"
        rec["torch_missing"] = getattr(exc, "name", None) == "torch"
        rec["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
        emit(rec)
        return
    except BaseException as exc:
        rec["stage"] = "done"
        rec["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
        emit(rec)
        return
    rec["torch_import_seconds"] = round(time.time() - started, 3)
    rec["torch_version"] = str(getattr(torch, "__version__", "")) or None
    try:
        import torch.backends.cpu
        rec["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        rec["torch_cpu_capability"] = None
    try:
        import torch.backends.mkldnn
        rec["mkldnn_available"] = bool(torch.backends.mkldnn.is_available())
    except Exception:
        rec["mkldnn_available"] = None
    rec["stage"] = "torch"
    emit(rec)
    sys.stderr.flush()
    import torch.backends.nnpack
    available = bool(torch.backends.nnpack.is_available())
    sys.stderr.flush()
    rec["nnpack_available"] = available
    if not available:
        try:
            rec["nnpack_built"] = rules.built_with_nnpack(torch.__config__.show())
        except Exception:
            rec["nnpack_built"] = None
    rec["stage"] = "done"
    emit(rec)


if __name__ == "__main__":
    # Run by hand: cpu_identity.py and nnpack_rules.py sit beside this file. Run by nnpack_facts:
    # the bootstrap of nnpack_run.child_command has put them into sys.modules already.
    import cpu_identity
    import nnpack_rules

    probe(cpu_identity, nnpack_rules, sys.argv[1:])
