"""bench/bench-service's self-check: an in-process baseline slower than the service's own
forward pass (same run) by more than 10 % is refused, never divided by.

A plain function test (bench/benchlib.py, standard library only): no timing here.
"""

import importlib.util
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_benchlib", REPO / "bench" / "benchlib.py")
benchlib = importlib.util.module_from_spec(spec)
# Its dataclasses look their module up while they are being made.
sys.modules.setdefault(spec.name, benchlib)
spec.loader.exec_module(benchlib)


@pytest.mark.parametrize("baseline_s, forward_s", [
    (0.302, 0.073),      # issue 28's run: a 302 ms baseline against a 73 ms service
    (0.364, 0.118),
    (0.111, 0.100),      # just past the tolerance
    (2e-5, 1e-5),        # the self-test model's microseconds too
])
def test_refuses_a_baseline_slower_than_the_service(baseline_s, forward_s):
    problem = benchlib.baseline_problem("resnet18 in-process median", baseline_s, forward_s)
    assert problem is not None
    assert "invalid" in problem
    # both figures, so the reader sees by how much
    assert f"{baseline_s * 1e3:.3f} ms" in problem
    assert f"{forward_s * 1e3:.3f} ms" in problem


@pytest.mark.parametrize("baseline_s, forward_s", [
    (0.073, 0.092),      # faster than the service: what a baseline should be
    (0.100, 0.100),
    (0.1099, 0.100),     # within the tolerance
])
def test_accepts_a_baseline_within_the_tolerance(baseline_s, forward_s):
    assert benchlib.baseline_problem("m", baseline_s, forward_s) is None


@pytest.mark.parametrize("baseline_s, forward_s, words", [
    (0.05, None, "no forward time"),     # the service's metrics gave no count
    (0.05, 0.0, "no forward time"),
    (None, 0.05, "no in-process baseline"),
    (0.0, 0.05, "no in-process baseline"),
])
def test_refuses_when_it_cannot_check(baseline_s, forward_s, words):
    assert words in benchlib.baseline_problem("m", baseline_s, forward_s)


def test_tolerance_is_a_parameter():
    assert benchlib.baseline_problem("m", 0.13, 0.10, tolerance=0.5) is None
    assert benchlib.baseline_problem("m", 0.13, 0.10, tolerance=0.2) is not None
