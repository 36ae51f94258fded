"""nnpack_facts run natively: the real torch in .venv, interpreters without torch, fake interpreters."""
import json
import os
import subprocess
import sys

import pytest

from nnpack_facts_helpers import (HANG_SLEEP, MODULE_UTILS, NO_TORCH_PYTHON, VENV_PYTHON, assert_no_leak, needs_torch,
                                  run_module)

KEYS = {
    "available", "status", "reason", "nnpack_message", "cpu_vendor", "cpu_model", "architecture", "cpu_flags",
    "cache_enumerated", "torch_version", "torch_cpu_capability", "mkldnn_available", "python", "python_version",
    "predicted_available", "prediction_method", "fingerprint", "fingerprint_source", "duration", "cpu_count",
    "evidence_source",
}
STATUSES = {"supported", "unsupported_hardware", "not_built", "cpuinfo_failed", "torch_missing", "probe_failed"}


def check_shape(facts):
    assert KEYS <= set(facts), KEYS - set(facts)
    assert facts["status"] in STATUSES
    assert set(facts["cpu_flags"]) == {"avx", "avx2", "fma", "avx512f", "asimd"}
    assert isinstance(facts["duration"], float)
    assert len(facts["fingerprint"]) == 16 and int(facts["fingerprint"], 16) >= 0
    assert facts["reason"] and facts["reason"].endswith(".")


@pytest.fixture(scope="module")
def torch_answer():
    """torch's own answer on this host, asked directly (once)."""
    out = subprocess.run([str(VENV_PYTHON), "-c", "import torch; print(torch.backends.nnpack.is_available())"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip() == "True"


@pytest.fixture(scope="module")
def native(module_tmp):
    return run_module(module_tmp, {"python": str(VENV_PYTHON)})


@pytest.fixture(scope="module")
def native_again(module_tmp):
    return run_module(module_tmp, {"python": str(VENV_PYTHON)})


@needs_torch
def test_native_host_matches_torch(native, torch_answer):
    facts = native.facts
    check_shape(facts)
    assert native.rc == 0 and native.result["changed"] is False
    expected = torch_answer
    assert facts["available"] is expected
    assert facts["status"] == ("supported" if expected else "unsupported_hardware")
    assert facts["predicted_available"] is expected
    assert facts["torch_version"].startswith("2.")
    assert facts["python"] == str(VENV_PYTHON)
    assert facts["python_version"] == "%d.%d.%d" % sys.version_info[:3]
    assert facts["evidence_source"] == "cpuid"
    assert facts["architecture"] == os.uname().machine
    assert_no_leak(native)


@needs_torch
def test_native_evidence_agrees_with_proc_cpuinfo(native):
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    for name in ("avx", "avx2", "fma", "avx512f"):
        assert native.facts["cpu_flags"][name] is (name in flags), name


@needs_torch
def test_fingerprint_is_stable_across_runs(native, native_again):
    assert native.facts["fingerprint"] == native_again.facts["fingerprint"]
    assert native.facts["fingerprint_source"] == native_again.facts["fingerprint_source"]
    source = native.facts["fingerprint_source"]
    assert native.facts["cpu_vendor"] in source and "avx2=" in source and "fma=" in source
    assert "MHz" not in source and "bogomips" not in source.lower()


@needs_torch
def test_check_mode_returns_same_facts(module_tmp, native):
    run = run_module(module_tmp, {"python": str(VENV_PYTHON)}, check_mode=True)
    assert run.rc == 0 and run.result["changed"] is False
    for key in ("available", "status", "fingerprint", "cpu_flags", "torch_version", "predicted_available"):
        assert run.facts[key] == native.facts[key], key


def test_missing_interpreter_is_probe_failed_with_evidence(module_tmp):
    run = run_module(module_tmp, {"python": "/nonexistent/venv/bin/python"})
    facts = run.facts
    check_shape(facts)
    assert run.rc == 0 and not run.result.get("failed")
    assert facts["status"] == "probe_failed" and facts["available"] is None
    assert "/nonexistent/venv/bin/python does not exist" in facts["reason"]
    assert facts["cpu_vendor"] and facts["cpu_model"] and facts["cache_enumerated"] is not None
    assert facts["predicted_available"] in (True, False)
    assert facts["evidence_source"] == "cpuid"          # from the module's own interpreter, in a child
    assert facts["python_version"] is None


def test_python_without_torch_is_torch_missing(module_tmp):
    run = run_module(module_tmp, {"python": NO_TORCH_PYTHON})
    facts = run.facts
    check_shape(facts)
    assert facts["status"] == "torch_missing" and facts["available"] is None
    assert "No module named 'torch'" in facts["reason"]
    assert facts["predicted_available"] in (True, False)
    assert facts["prediction_method"].startswith("x86-64: avx2+fma+L1/L2/L3 cache enumeration")
    assert facts["torch_version"] is None and facts["evidence_source"] == "cpuid"


@needs_torch
def test_inherited_pythonpath_does_not_leak_into_probe(module_tmp, torch_answer):
    """The module runs on the system python with ansible on PYTHONPATH (as in a bare test run); the
    probe of /usr/bin/python3 must still see that interpreter's own sys.path, i.e. no torch."""
    site = subprocess.run([str(VENV_PYTHON), "-c", "import importlib.util as u, os; "
                           "print(os.path.dirname(os.path.dirname(u.find_spec('torch').origin)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    run = run_module(module_tmp, {"python": NO_TORCH_PYTHON}, module_python=NO_TORCH_PYTHON,
                     env={"PYTHONPATH": site})
    assert run.facts["status"] == "torch_missing"
    # ...while the environment option passes the service's own environment on explicitly.
    run = run_module(module_tmp, {"python": NO_TORCH_PYTHON, "environment": {"PYTHONPATH": site}},
                     module_python=NO_TORCH_PYTHON, env={"PYTHONPATH": site})
    assert run.facts["status"] in ("supported", "unsupported_hardware")
    assert run.facts["available"] is torch_answer


def test_fake_interpreter_killed_by_sigkill_is_probe_failed(module_tmp, fakes):
    run = run_module(module_tmp, {"python": fakes["sigkill"]})
    facts = run.facts
    assert run.rc == 0
    assert facts["status"] == "probe_failed" and facts["available"] is None
    assert "SIGKILL" in facts["reason"]
    assert facts["probe_rc"] == -9
    assert facts["cpu_vendor"] and facts["fingerprint"]


def test_fake_interpreter_that_hangs_times_out_promptly(module_tmp, fakes):
    """A real timeout kills the probe's whole process group: the fake and the `sleep` it started.
    PATH is empty: nothing like coreutils `timeout` is needed."""
    run = run_module(module_tmp, {"python": fakes["hang"], "timeout": 2}, env={"PATH": "/nonexistent"})
    facts = run.facts
    assert facts["status"] == "probe_failed" and facts["available"] is None
    assert "timed out after 2 s" in facts["reason"]
    assert facts["probe_rc"] is None
    assert 2 <= facts["duration"] < 10
    assert run.elapsed < 15
    for pattern in (fakes["hang"], HANG_SLEEP):
        left = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        assert not left, "%s survived the timeout: %s" % (pattern, left)


@needs_torch
def test_a_short_timeout_on_a_slow_host_still_names_the_same_cpu(module_tmp, native):
    """On a loaded small VM a tight timeout (here 1 s, every start delayed 1.5 s by the wrapper) kills
    the probe before it reads the CPU. The evidence-only child that follows must not share that
    timeout: without evidence the fingerprint is that of no CPU, and the role would take the host
    for a moved one and flip USE_NNPACK (seen in a Molecule drill, pytorch_backend_probe_timeout=1)."""
    slow = module_tmp / "slow-start"
    slow.write_text('#!/bin/sh\nsleep 1.5\nexec "$@"\n')
    slow.chmod(0o755)
    run = run_module(module_tmp, {"python": str(VENV_PYTHON), "timeout": 1, "wrapper": [str(slow)]})
    facts = run.facts
    assert facts["status"] == "probe_failed" and "timed out after 1 s" in facts["reason"], facts["reason"]
    assert facts["cpu_vendor"] and facts["cpu_model"] == native.facts["cpu_model"]
    assert facts["fingerprint"] == native.facts["fingerprint"]


def test_fake_interpreter_printing_garbage_is_probe_failed(module_tmp, fakes):
    run = run_module(module_tmp, {"python": fakes["garbage"]})
    facts = run.facts
    assert facts["status"] == "probe_failed" and facts["available"] is None
    assert "without a readable result" in facts["reason"]
    assert facts["probe_stderr_tail"] == "junk"
    assert facts["cpu_vendor"]


@needs_torch
def test_fake_interpreter_crashing_in_cpuid_is_retried_without_cpuid(module_tmp, fakes, native):
    run = run_module(module_tmp, {"python": fakes["cpuid_crash"]})
    facts = run.facts
    assert facts["status"] == native.facts["status"] and facts["available"] is native.facts["available"]
    assert facts["evidence_source"] == "procfs+sysfs"
    assert facts["prediction_method"].endswith("(cpuinfo flags, sysfs cache)")


@pytest.mark.parametrize("timeout", [0, -5])
def test_non_positive_timeout_fails_the_module(module_tmp, timeout):
    run = run_module(module_tmp, {"python": str(VENV_PYTHON), "timeout": timeout})
    assert run.rc != 0 and run.result["failed"] is True
    assert "timeout must be a positive number of seconds" in run.result["msg"]


def test_unknown_option_fails_the_module(module_tmp):
    run = run_module(module_tmp, {"python": str(VENV_PYTHON), "bogus": 1})
    assert run.result["failed"] is True and "bogus" in run.result["msg"]


def test_missing_wrapper_is_probe_failed(module_tmp):
    run = run_module(module_tmp, {"python": str(VENV_PYTHON), "wrapper": ["no-such-emulator", "-cpu", "x"]})
    facts = run.facts
    assert facts["status"] == "probe_failed" and "no-such-emulator" in facts["reason"]
    assert facts["evidence_source"] == "cpuid (host view; wrapper not applied)"


def test_probe_program_runs_by_hand(native):
    """module_utils/nnpack_probe.py is a real program: run from its directory (cpu_identity.py beside
    it), it prints the same evidence as the module's child."""
    out = subprocess.run([NO_TORCH_PYTHON, "-B", str(MODULE_UTILS / "nnpack_probe.py"), "--evidence-only"],
                         capture_output=True, text=True, check=True, cwd="/").stdout
    (line,) = [ln for ln in out.splitlines() if ln.startswith("@@NNPACK_FACTS@@ ")][-1:]
    rec = json.loads(line.split(" ", 1)[1])
    assert rec["stage"] == "evidence"
    for key in ("cpu_vendor", "cpu_model", "cpu_stepping", "cpu_flags", "cache_enumerated", "evidence_source"):
        assert rec[key] == native.facts[key], key
