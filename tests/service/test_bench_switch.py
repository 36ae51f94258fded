"""bench/bench-switch: how it counts failures, takes percentiles and judges the goals
(plain function tables), and one short real run of it (a real handover, marked slow).
"""

import http.client
import importlib.machinery
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import REPO, SELFTEST_EXPECTED

BENCH = REPO / "bench" / "bench-switch"
# The script has no .py suffix: name the loader explicitly.
loader = importlib.machinery.SourceFileLoader("bench_switch", str(BENCH))
spec = importlib.util.spec_from_loader(loader.name, loader)
bench = importlib.util.module_from_spec(spec)
sys.modules.setdefault(spec.name, bench)  # its dataclasses look their module up
loader.exec_module(bench)

GOOD_BODY = json.dumps({"outputs": [{"name": "output", "data": SELFTEST_EXPECTED}]}).encode()


@pytest.mark.parametrize("exc, kind", [
    (ConnectionRefusedError(111, "Connection refused"), "refused"),
    (ConnectionResetError(104, "Connection reset by peer"), "reset"),
    (http.client.RemoteDisconnected("Remote end closed connection without response"), "reset"),
    (BrokenPipeError(32, "Broken pipe"), "reset"),
    (http.client.IncompleteRead(b"{", 10), "reset"),     # closed in the middle of the answer
    (socket.timeout("timed out"), "timeout"),
    (TimeoutError("timed out"), "timeout"),
    (http.client.BadStatusLine("garbage"), "other"),
    (OSError(99, "Cannot assign requested address"), "other"),   # the client's ports ran out
])
def test_exceptions_are_counted_by_kind(exc, kind):
    assert bench.classify_exception(exc) == kind


@pytest.mark.parametrize("status, body, failure", [
    (200, GOOD_BODY, None),
    (503, b'{"error": "draining"}', "status"),
    (500, GOOD_BODY, "status"),                       # the right numbers do not excuse the status
    (200, json.dumps({"outputs": [{"data": [0.0] * 128}]}).encode(), "wrong answer"),
    (200, b"not json", "wrong answer"),
    (200, b'{"outputs": []}', "wrong answer"),
    (200, b"[]", "wrong answer"),
])
def test_answers_are_judged_against_the_reference(status, body, failure):
    assert bench.classify_response(status, body, SELFTEST_EXPECTED) == failure


@pytest.mark.parametrize("values, q, expected", [
    ([], 50, None),
    ([7.0], 50, 7.0),
    ([7.0], 99, 7.0),
    (list(range(1, 101)), 50, 50),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 11)), 99, 10),       # nearest rank: a latency one request had (not 9.91)
    (list(range(1, 11)), 50, 5),
    ([9, 1, 5, 3, 7], 50, 5),           # unsorted input
    ([1] * 199 + [1000], 99, 1),        # one outlier in 200 is beyond the p99
    ([1] * 99 + [1000], 99, 1),
    ([1] * 98 + [1000] * 2, 99, 1000),  # two in 100 are not
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert bench.percentile(values, q) == expected


def rec(start, latency, failure=None, status=200):
    return bench.Record(start, start + latency, failure, status)


def test_window_takes_requests_by_when_they_were_sent():
    records = [
        rec(0.5, 0.010),                          # before the window
        rec(1.0, 0.010),                          # at its start: in
        rec(1.5, 0.030),
        rec(1.9, 5.000, "timeout", None),         # sent inside, ended far outside: in
        rec(1.95, 0.001, "status", 503),
        rec(1.96, 0.001, "refused", None),
        rec(2.0, 0.500),                          # at its end: out
    ]
    w = bench.window(records, 1.0, 2.0)
    assert w.seconds == 1.0
    assert w.requests == 5
    assert w.failed == 3
    assert w.failures == {"timeout": 1, "status": 1, "refused": 1}
    assert w.statuses == {503: 1}
    # the 5 s timeout is a failure, not a latency: p99 is of the good answers
    assert (w.p50, w.p99) == pytest.approx((0.010, 0.030))
    line = bench.window_line("steady window", w)
    assert "5 requests in 1.0 s, 3 failed" in line
    assert "refused 1, reset 0, timeout 1, non-200 1 (503 x1)" in line
    assert "p50 10.0 ms, p99 30.0 ms" in line


def win(p99, failures=None):
    w = bench.Window(seconds=10.0, requests=100, p50=p99 and p99 / 2, p99=p99)
    w.failures.update(failures or {})
    return w


@pytest.mark.parametrize("steady, switching, problems, code, reason", [
    (win(0.010), win(0.010), [], 0, None),
    (win(0.010), win(0.030), [], 0, None),                  # exactly 3: the goal is <= 3
    (win(0.010), win(0.0301), [], 1, "p99 ratio 3.01 over 3"),
    (win(0.010), win(0.005), [], 0, None),                  # faster while switching is fine
    (win(0.010, {"reset": 1}), win(0.010), [], 1, "1 failed request(s) in the steady window"),
    (win(0.010), win(0.010, {"refused": 2, "timeout": 1}), [], 1,
     "3 failed request(s) during switches"),
    (win(0.010), win(0.010), ["switch 2: p2 did not say READY=1 (exit 1)"], 1, "READY=1"),
    (win(0.010), win(None), [], 1, "no answered request to take a p99 of during switches"),
    (win(None), win(0.010), [], 1, "no answered request to take a p99 of in the steady window"),
])
def test_verdict(steady, switching, problems, code, reason):
    got, reasons = bench.verdict(steady, switching, problems)
    assert got == code
    if reason is None:
        assert reasons == []
    else:
        assert any(reason in r for r in reasons), reasons


def test_ratio_is_none_without_a_steady_p99():
    assert bench.p99_ratio(win(None), win(0.010)) is None
    assert bench.p99_ratio(win(0.0), win(0.010)) is None   # no division by zero
    assert bench.p99_ratio(win(0.010), win(0.020)) == pytest.approx(2.0)


def run_bench(*args, timeout=240):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow
def test_a_short_real_run_prints_the_figures():
    """One real switch under load (about 15 s here): the figures are printed, from
    requests really served in both windows, and the exit status says what the last line says."""
    run = run_bench("--switches", "1", "--steady", "3", "--warmup", "1")
    out = run.stdout
    assert run.returncode in (0, 1), run.stdout + run.stderr
    steady = re.search(r"^steady window: (\d+) requests in [\d.]+ s, (\d+) failed \(refused \d+, "
                       r"reset \d+, timeout \d+, non-200 \d+.*\); p50 [\d.]+ ms, p99 [\d.]+ ms$",
                       out, re.M)
    switching = re.search(r"^during 1 switch\(es\): (\d+) requests in [\d.]+ s, (\d+) failed "
                          r".*; p50 [\d.]+ ms, p99 [\d.]+ ms$", out, re.M)
    assert steady and switching, out
    assert int(steady.group(1)) > 20 and int(switching.group(1)) > 20, out
    assert re.search(r"^p99 ratio \(during switches / steady\): [\d.]+ \(goal <= 3\)$", out, re.M), out
    assert re.search(r"^switch 1: new process ready \(READY=1\) in [\d.]+ s, old one drained and "
                     r"exited in [\d.]+ s, [\d.]+ s in all$", out, re.M), out
    assert "exit codes of the replaced processes [0], of the last one 0" in out, out
    assert "switch 2" not in out
    last = out.strip().splitlines()[-1]
    assert (run.returncode == 0) == (last == "goals met"), out


@pytest.mark.slow
def test_a_process_that_never_gets_ready_is_a_setup_error():
    run = run_bench("--ready-timeout", "0.2")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "setup error: the first process did not say READY=1" in run.stderr
    assert "steady window" not in run.stdout
