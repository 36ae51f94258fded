# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""How torch says NNPACK cannot run: the rules the role's probe and the service's probe share.

Two sides read torch's answer and must read it the same way:
  * the role's ``nnpack_facts`` module (``roles/pytorch_backend/module_utils/nnpack_rules.py``
    is a symlink to this file, as for ``cpu_identity.py``): its verdict parses the probe
    child's stderr, and the probe child itself (sent as source to the probed interpreter,
    see ``nnpack_run.child_command``) asks torch's build summary;
  * the service's start-up probe (``nnpack.py``).

So: standard library only, Python 3.8+, no package-relative imports, and nothing here may
import torch (the module side never does; the probe child passes torch's text in).
"""

from __future__ import annotations

import re

# torch (pytorch/aten/src/ATen/native/NNPACK.cpp) prints this on stderr each time NNPACK is
# asked and cannot initialize; the reason is cpuinfo's ("Unsupported hardware.", "Out of memory.")
WARNING_RE = re.compile(r"Could not initialize NNPACK! Reason: ([^\r\n]*)")

# the line of torch.__config__.show() for a build with NNPACK compiled in
BUILT_MARK = "NNPACK is enabled"


def find_warning(stderr):
    """(the warning's line, its reason) for the first NNPACK warning in ``stderr``, else (None, None).

    Both are stripped of surrounding whitespace; the reason keeps its final full stop.
    """
    for line in stderr.splitlines():
        match = WARNING_RE.search(line)
        if match:
            return line.strip(), match.group(1).strip()
    return None, None


def built_with_nnpack(config_summary):
    """Whether torch's build summary (``torch.__config__.show()``) says NNPACK is compiled in.

    A torch without it (Debian's python3-torch, for one) says no silently on every CPU.
    """
    return BUILT_MARK in config_summary
