"""A fleet run with the project's ansible.cfg shows what changed, what failed and the table,
without a `skipping:` line per host per skipped task.

Runs the real ansible-playbook on the fleet-table stand-in (tests/role/fleet_report_standin.yml,
which has a task every served host skips) against 9 local-connection hosts.
"""
import re

from test_fleet_report import report, run


def test_skipped_hosts_hidden_failures_and_table_shown(tmp_path):
    proc, out = run(tmp_path, {"h3": "rolled_back"}, args=("-e", "pytorch_backend_serial=9"))
    assert proc.returncode != 0
    assert not re.search(r"^skipping: ", out, re.M), out
    # the task every served host skipped is not even announced
    assert "TASK [Fail before any result, like a failing install step]" not in out, out
    # ok results stay: the role reports through them
    assert re.search(r"^ok: \[h1\]", out, re.M), out
    assert re.search(r"^fatal: \[h3\]: FAILED!", out, re.M), out
    # skipped: the crash, the unverified row (a verifying run) and, in report.yml at the start,
    # the row task beside the targets
    assert re.search(r"^h3 +: ok=\d+ +changed=0 +unreachable=0 +failed=1 +skipped=3", out, re.M), out
    rows, rest, counts = report(out)
    assert rows["h3"] == "rolled_back" and rows["h1"] == "served", out
    assert counts == "served 8, rolled back 1, kept 0, failed 0, unreachable 0, not reached 0"
