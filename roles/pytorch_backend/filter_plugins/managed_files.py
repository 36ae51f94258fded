# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Which of the role's managed files (environment file, CPU record, units) a run changes.

A file is changed when the signature of what the role renders differs from the one the
host-state module read on the host (library/torch_backend_host.py, ``files``): the sha1 of
the content, then owner:group:mode as ``stat -c %U:%G:%a`` prints them. The role writes
every managed file as root, so a file whose owner or mode someone changed is written again.
"""

from __future__ import annotations

import hashlib


def signature(content, group, mode):
    """The host-state module's signature of a file with this content, written root:GROUP, MODE."""
    return "%s root:%s:%o" % (hashlib.sha1(str(content).encode("utf-8")).hexdigest(), group, int(str(mode), 8))


def changed_files(files, host_files):
    """`files` (dicts with key, content, group, mode) each with `changed` set against `host_files`."""
    host_files = host_files or {}
    return [dict(f, changed=signature(f["content"], f["group"], f["mode"])
                 != (host_files.get(f["key"]) or {}).get("signature", "")) for f in files]


class FilterModule:
    """pytorch_backend managed-file filters."""

    def filters(self):
        return {"pytorch_backend_changed_files": changed_files}
