"""The fuzzer (tests/service/fuzz) at full scale: 10,000 generated requests against a real server.

Run as a person runs it, `python -m tests.service.fuzz` from the repository root. It
starts its own server (built-in model only, default limits), so this does not use the
shared `server` fixture. Slow: minutes on a busy machine, most of it the three
near-limit (16 MiB) requests at the end.
"""

import re
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_fuzz_service_10000_requests(tmp_path):
    log = tmp_path / "server.stderr"
    proc = subprocess.run([sys.executable, "-m", "tests.service.fuzz", "--cases", "10000",
                           "--seed", "0", "--server-log", str(log)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO)
    out = proc.stdout
    tail = out[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert "RESULT: PASS" in out, tail
    sent = re.search(r"^  cases sent: (\d+)", out, re.MULTILINE)
    assert sent and int(sent.group(1)) >= 10_000, tail
    errors = re.search(r"^  5xx server errors: (\d+)$", out, re.MULTILINE)
    assert errors and int(errors.group(1)) == 0, tail
    assert re.search(r"^  violations: 0$", out, re.MULTILINE), tail
    # The server's own log: started, served, stopped cleanly.
    stderr = log.read_text()
    assert "ready: 1 model(s): conv2d-selftest" in stderr and "stopped" in stderr, stderr[-3000:]
    # Clients that reset mid-request are part of the run: no traceback reaches the log,
    # and no keep-alive connection is closed without "Connection: close".
    assert "client-abort" in out and "Traceback" not in stderr, stderr[-3000:]
    assert "keep-alive connection(s) after answering without" not in out, tail
