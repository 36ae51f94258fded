# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The switch's two rules (tasks/steps/switch.yml): why torch-backend must restart, and whether
it is handed over warm (a second process serving on the same socket while it restarts) or
restarted plainly.

Both are read from the host's state as the host-state module gave it (library/torch_backend_host.py)
and from what this run changes, never from handler notifications: a run cut between its writes and
its restart leaves state that says so, and the next run restarts for it. The reasons are what the
task "Say why torch-backend restarts" prints, joined with '; ', and the Molecule drills match those
texts: a reason's words change here or not at all (tests/role/switch_rules_cases.yml holds them)."""

from __future__ import annotations

import os

CUT = " (an earlier run was cut before its restart)"


def _served_stale(host):
    """Whether the running service serves another release or configuration than the one on
    disk: it reports the release and digest it started with (GET /v2)."""
    return bool(host["served"]) and (host["served_release"] != os.path.basename(host["current"])
                                     or host["served_digest"] != host["digest"])


def restart_reasons(host, release_changed, release_id, files_changed, file_words):
    """Why torch-backend must restart, in words, in the order the message gives them (none: it
    keeps running). `host`: the host-state module's result; `release_changed`: whether this run
    points `current` at release `release_id`; `files_changed`: the keys of the managed files this
    run writes, named in `file_words` (vars/main.yml)."""
    reasons = []
    if release_changed:
        reasons.append("release %s switched in" % release_id)
    if files_changed:
        reasons.append("its %s changed" % ", ".join(str(file_words[key]) for key in files_changed))
    if _served_stale(host):
        reasons.append("torch-backend runs release %s with configuration %s, but current points to %s"
                       " and the environment file says %s%s"
                       % (host["served_release"] or "unknown", host["served_digest"] or "unknown",
                          os.path.basename(host["current"]), host["digest"] or "nothing", CUT))
    if host["need_reload"]:
        reasons.append("the unit on disk is not the one systemd loaded")
    # a secret file this run rewrites is named above, among the files that changed
    if host["secret_newer"] and "secret" not in files_changed:
        reasons.append("its secret environment file is newer than the running service" + CUT)
    return reasons


def socket_kept(host, files_changed):
    """Whether systemd held the listening socket before this run and this run leaves it as it
    was: only then can a second process share it (a changed socket unit is restarted, which
    closes the listening socket the serving process holds)."""
    return host["units"]["socket"]["active"] == "active" and "socket" not in files_changed


def memory_fits(host, min_available_mb):
    """Whether MemAvailable holds a second process of `min_available_mb` MiB: the candidate's
    condition (tasks/steps/candidate.yml) and the warm handover's. Unknown (None: /proc/meminfo
    not read) does not: a second process on a host short of memory is what the OOM killer ends."""
    mem = host["mem_available_mb"]
    return mem is not None and mem >= min_available_mb


def warm_handover(host, kept, verified, tried, min_available_mb):
    """Whether the switch hands over warm rather than restarting plainly. `kept`: socket_kept();
    `verified`: the candidate's verification result (only a real True is a pass: a truthy
    leftover such as 'yes' or 1 is not); `tried`: whether this run meant to try the change beside
    the serving process (vars/main.yml, _pytorch_backend_try_candidate); `min_available_mb`: the
    memory a second process needs.

    Warm needs a serving process on a socket systemd keeps, and memory for the second process:
    the change passed beside the serving one (so it had the memory, and a change that cannot
    start never stops the serving process), or it was not tried (verification off, or nothing
    this run changes) and MemAvailable is what the candidate would need. A candidate that was
    tried and did not pass was skipped for lack of memory (a failed one ends the host's run
    before the switch): a plain restart, the socket queueing what comes meanwhile. So does an
    unknown MemAvailable (None: /proc/meminfo not read)."""
    if host["active"] != "active" or not kept:
        return False
    if verified is True:
        return True
    return not tried and memory_fits(host, min_available_mb)


class FilterModule:
    """pytorch_backend switch filters."""

    def filters(self):
        return {
            "pytorch_backend_restart_reasons": restart_reasons,
            "pytorch_backend_socket_kept": socket_kept,
            "pytorch_backend_warm_handover": warm_handover,
            "pytorch_backend_memory_fits": memory_fits,
        }
