"""bench/sshcount.py, the counting stand-in for ssh that bench/bench-fleet-cost sets as Ansible's
ssh executable: it must pass bytes through unchanged, count them each way, keep the exit status,
and not hang on a background process that keeps stderr open (as ssh's ControlPersist master does).

Real subprocesses, with `cat` and `sh -c` standing in for ssh (SSHCOUNT_REAL).
"""

import json
import os
import subprocess
import time

from conftest import REPO

WRAPPER = REPO / "bench" / "sshcount.py"


def run_wrapper(tmp_path, real, args, data=b"", timeout=20):
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, SSHCOUNT_REAL=real, SSHCOUNT_LOG=str(log))
    started = time.monotonic()
    r = subprocess.run([str(WRAPPER)] + args, input=data, capture_output=True, env=env, timeout=timeout,
                       check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return r, calls, time.monotonic() - started


def test_cat_standing_in_for_ssh_gets_every_byte_both_ways(tmp_path):
    data = os.urandom(300_000) + b"\n"   # bigger than one pipe buffer and one read
    r, calls, _ = run_wrapper(tmp_path, "cat", [], data)
    assert r.returncode == 0
    assert r.stdout == data
    assert len(calls) == 1
    assert calls[0]["sent"] == len(data)
    assert calls[0]["received"] == len(data)
    assert calls[0]["stderr"] == 0
    assert calls[0]["via"] == "ansible"     # started by a Python process, not sftp or scp


def test_sh_standing_in_for_ssh_keeps_stderr_and_exit_status(tmp_path):
    r, calls, _ = run_wrapper(tmp_path, "sh -c", ["head -c 5; printf 1234567; printf abc >&2; exit 7"],
                              b"helloIGNORED")
    assert r.returncode == 7
    assert r.stdout == b"hello1234567"
    assert r.stderr == b"abc"
    assert calls[0]["rc"] == 7
    assert calls[0]["received"] == 12
    assert calls[0]["stderr"] == 3
    # the wrapper's own CPU is logged so the bench can subtract it
    assert calls[0]["self_cpu"] > 0


def test_one_line_per_invocation_appended(tmp_path):
    for payload in (b"a", b"bb", b"ccc"):
        _, calls, _ = run_wrapper(tmp_path, "cat", [], payload)
    assert [c["sent"] for c in calls] == [1, 2, 3]


def test_does_not_wait_for_a_background_child_holding_stderr(tmp_path):
    # like ssh's ControlPersist master: forked by the command, detached from stdin and
    # stdout, still holding stderr
    r, calls, wall = run_wrapper(tmp_path, "sh -c", ["sleep 8 </dev/null >/dev/null & echo done"])
    assert r.stdout == b"done\n"
    assert wall < 6
    assert calls[0]["received"] == 5
