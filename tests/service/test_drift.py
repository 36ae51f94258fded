"""CPU drift guard: the role's CPU record (TORCH_BACKEND_CPU_RECORD) vs the CPU the service is on.

Pure tests of the comparison, then real servers on 127.0.0.1 (native CPU), and
one optional emulated run (qemu-user, -cpu Nehalem). The record for this host
is the one the role would write: facts of a real nnpack_facts run, shaped by
cpu_record.make_record as the module's decision shapes them (test_same_cpu.py has
the table of CPU pairs).
"""

import functools
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import NNPACK_WARNING, QEMU_NEHALEM_ARGS, ServerProcess, assert_selftest_answers
from torch_backend import cpu_identity, drift, nnpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module"))
from nnpack_facts_helpers import VENV_PYTHON, role_record, run_module  # noqa: E402

NEHALEM_RECORD = {
    "fingerprint": "305b35c0b213a2bb",
    "cpu_model": "Intel Core i7 9xx (Nehalem Class Core i7)",
    "cpu_flags": {"avx": True, "avx2": False, "fma": False, "avx512f": False},
    "cpu_capability": "DEFAULT", "status": "unsupported_hardware", "available": False,
    "use_nnpack": "0",
}
LOG_LINE_RE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) torch_backend")


@functools.lru_cache(maxsize=None)
def _this_host_facts():
    with tempfile.TemporaryDirectory(prefix="nnpack-facts-") as tmp:
        run = run_module(tmp, {"python": str(VENV_PYTHON)})
    assert run.rc == 0 and run.facts["status"] in ("supported", "unsupported_hardware"), run.result
    return json.dumps(run.facts)


def this_host_record(**overrides):
    """What the role records for this host: a real nnpack_facts run (once), shaped by cpu_record.make_record."""
    record = role_record(json.loads(_this_host_facts()))
    record.update(overrides)
    return record


# --- the comparison, pure ---------------------------------------------------------------

def test_compare_identical_and_normalised_model_names():
    rec = this_host_record()
    assert drift.compare(rec, dict(rec)) == []
    # whitespace and case in the brand string are not a different CPU (records without a fingerprint)
    rec.pop("fingerprint")
    cur = dict(rec, cpu_model="  " + (rec["cpu_model"] or "x").upper().replace(" ", "   ") + " ")
    if rec["cpu_model"]:
        assert drift.compare(rec, cur) == []


def test_compare_fingerprint_decides_when_both_sides_have_one():
    rec = dict(NEHALEM_RECORD)
    # a stepping-only change: model and flags alike, fingerprint not
    assert drift.compare(rec, dict(rec, fingerprint="0123456789abcdef")) == [
        {"field": "fingerprint", "recorded": "305b35c0b213a2bb", "current": "0123456789abcdef"}]
    # equal fingerprints are the same CPU: the other identity fields are not looked at
    assert drift.compare(rec, dict(rec, cpu_model="Other", cpu_flags={"avx2": True})) == []
    # a difference names what changed first, then the fingerprint, then the capability
    other = dict(rec, fingerprint="0123456789abcdef", cpu_flags=dict(rec["cpu_flags"], avx=False),
                 cpu_capability="AVX2")
    assert [d["field"] for d in drift.compare(rec, other)] == ["avx", "fingerprint", "cpu_capability"]


def test_compare_reports_each_differing_field():
    current = {"cpu_model": "AMD EPYC",
               "cpu_flags": {"avx": True, "avx2": True, "fma": True, "avx512f": True},
               "cpu_capability": "AVX512"}
    diffs = drift.compare(NEHALEM_RECORD, current)
    assert diffs == [
        {"field": "cpu_model", "recorded": "Intel Core i7 9xx (Nehalem Class Core i7)",
         "current": "AMD EPYC"},
        {"field": "avx2", "recorded": False, "current": True},
        {"field": "fma", "recorded": False, "current": True},
        {"field": "avx512f", "recorded": False, "current": True},
        {"field": "cpu_capability", "recorded": "DEFAULT", "current": "AVX512"},
    ]


def test_compare_capability_alone_is_drift():
    # qemu-user: /proc/cpuinfo shows the host, only torch's capability shows the emulated CPU
    host = {"cpu_model": "AMD EPYC",
            "cpu_flags": {"avx": True, "avx2": True, "fma": True, "avx512f": True},
            "cpu_capability": "AVX512"}
    assert drift.compare(host, dict(host, cpu_capability="DEFAULT")) == [
        {"field": "cpu_capability", "recorded": "AVX512", "current": "DEFAULT"}]


@pytest.mark.parametrize("recorded", [
    {"cpu_model": "Intel Core i7 9xx (Nehalem Class Core i7)"},            # old record
    {"cpu_model": "AMD EPYC", "cpu_flags": {"avx2": False}},                  # some flags only
    {"cpu_model": "AMD EPYC", "cpu_capability": "DEFAULT"},                   # no flags
    {"cpu_model": None, "cpu_flags": None, "cpu_capability": None},           # nulls: unknown
    {"cpu_model": 42, "cpu_flags": ["avx2"], "cpu_capability": ""},           # wrong types
    {"cpu_model": "AMD EPYC", "cpu_flags": {"avx2": "no", "fma": None}},      # non-booleans
])
def test_compare_skips_fields_missing_on_either_side(recorded):
    current = {"cpu_model": "AMD EPYC",
               "cpu_flags": {"avx": True, "avx2": True, "fma": True, "avx512f": True},
               "cpu_capability": None}                 # capability unknown here
    fields = [d["field"] for d in drift.compare(recorded, current)]
    expected = []
    if recorded.get("cpu_model") == "Intel Core i7 9xx (Nehalem Class Core i7)":
        expected.append("cpu_model")
    if recorded.get("cpu_flags") == {"avx2": False}:
        expected.append("avx2")
    assert fields == expected


def test_compare_unknown_current_side_is_not_drift():
    unknown = {"cpu_model": None, "cpu_flags": None, "cpu_capability": None}
    assert drift.compare(NEHALEM_RECORD, unknown) == []
    assert drift.compare(NEHALEM_RECORD, {}) == []


def test_parse_cpuinfo_first_block_x86_and_arm():
    x86 = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Core i7 9xx  "
           "(Nehalem Class Core i7)\nflags\t\t: fpu sse4_2 popcnt\n\n"
           "processor\t: 1\nmodel name\t: Other\nflags\t\t: avx avx2 fma\n")
    ev = cpu_identity.parse_cpuinfo(x86, "x86_64")
    assert ev["cpu_vendor"] == "GenuineIntel"
    assert ev["cpu_model"] == "Intel Core i7 9xx (Nehalem Class Core i7)"
    assert ev["cpu_flags"] == {"avx": False, "avx2": False, "fma": False, "avx512f": False, "asimd": False}
    arm = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"
    ev = cpu_identity.parse_cpuinfo(arm, "aarch64")
    assert ev["cpu_model"] == "CPU part 0xd0c" and ev["cpu_flags"]["asimd"] is True
    assert cpu_identity.parse_cpuinfo(None, "x86_64")["cpu_flags"] is None


def test_current_cpu_has_the_record_shape_and_the_roles_fingerprint():
    cur = drift.current_cpu()
    assert set(cur) == {"fingerprint", "fingerprint_source", "cpu_model", "cpu_flags", "cpu_capability"}
    assert set(cur["cpu_flags"]) == {"avx", "avx2", "fma", "avx512f"}
    # the fingerprint the service computes is the one nnpack_facts gave the role for this host
    assert cur["fingerprint"] == this_host_record()["fingerprint"]
    assert drift.compare(this_host_record(), cur) == []


def test_current_cpu_without_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(cpu_identity, "CPUINFO", "/nonexistent/cpuinfo")
    ev = cpu_identity.gather(use_cpuid=False)
    assert ev["proc_cpuinfo_readable"] is False and drift.describe(ev, None)["cpu_flags"] is None
    if platform.machine() == "x86_64":  # CPUID alone gives the whole identity
        assert drift.current_cpu()["fingerprint"] == this_host_record()["fingerprint"]


def test_evidence_falls_back_to_procfs_when_the_cpuid_child_dies(monkeypatch):
    """As the role's probe is re-run with --no-cpuid when it dies in CPUID."""
    def crash(rec):
        os.kill(os.getpid(), signal.SIGSEGV)
    monkeypatch.setattr(cpu_identity, "cpuid_evidence", crash)
    ev = drift.gather_evidence()
    assert ev["evidence_source"] == "procfs+sysfs" and "cpuid_error" not in ev


# --- the report and the decision, pure --------------------------------------------------

@pytest.mark.parametrize("content, error", [
    (None, "no such file"),
    (b"\x00garbage{", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"{}", "no fingerprint, cpu_model, cpu_flags or cpu_capability"),
    (b"{" + b" " * (drift.MAX_RECORD_BYTES + 1) + b"}", "larger than"),
])
def test_unusable_record(tmp_path, content, error):
    path = tmp_path / "record.json"
    if content is not None:
        path.write_bytes(content)
    report = drift.check(str(path))
    assert report.detected is None and error in report.error
    meta = report.metadata()
    assert meta["detected"] is None and error in meta["error"]
    assert report.word() == "unknown"
    assert str(path) in report.error_line() and "TORCH_BACKEND_CPU_RECORD" in report.error_line()


def test_no_record_configured():
    report = drift.check(None)
    assert report.detected is False and report.metadata() == {"detected": False}
    assert report.word() == "no"


def test_drift_report_and_line(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(NEHALEM_RECORD))
    current = {"cpu_model": "AMD EPYC",
               "cpu_flags": {"avx": True, "avx2": True, "fma": True, "avx512f": True},
               "cpu_capability": "AVX512"}
    report = drift.check(str(path), current=current)
    assert report.detected is True and report.word() == "yes"
    meta = report.metadata()
    assert meta["recorded_cpu"] == NEHALEM_RECORD["cpu_model"]
    assert meta["current_cpu"] == "AMD EPYC"
    assert meta["recorded_status"] == "unsupported_hardware"
    assert [d["field"] for d in meta["differences"]] == [
        "cpu_model", "avx2", "fma", "avx512f", "cpu_capability"]
    json.dumps(meta)  # serialisable as is
    decision = drift.decide_nnpack(report, "0", lambda: (True, "probe: NNPACK initialized"))
    assert decision == nnpack.Decision(True, "drift", "probe: NNPACK initialized")
    line = report.drift_line(decision, "0")
    for part in ("'Intel Core i7 9xx (Nehalem Class Core i7)'", "'AMD EPYC'",
                 "unsupported_hardware, USE_NNPACK=0", "ignoring USE_NNPACK=0",
                 "NNPACK enabled", "probe: NNPACK initialized", "avx2 no->yes",
                 "cpu_capability DEFAULT->AVX512",
                 "re-run the deploy playbook to make this permanent"):
        assert part in line, line
    assert "\n" not in line


@pytest.mark.parametrize("use, text", [("0", "USE_NNPACK=0"), ("", "USE_NNPACK unset"),
                                       ("1", "USE_NNPACK=1")])
def test_recorded_verdict(use, text):
    report = drift.DriftReport(detected=True, path="/x",
                               recorded={"status": "supported", "use_nnpack": use})
    assert report.recorded_verdict() == f"supported, {text}"
    assert drift.DriftReport(detected=True, path="/x", recorded={}).recorded_verdict() == \
        "status unknown, USE_NNPACK unknown"


def test_no_drift_obeys_env_without_probing(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(NEHALEM_RECORD))
    report = drift.check(str(path), current=dict(NEHALEM_RECORD))
    assert report.detected is False and report.metadata()["differences"] == []

    def no_probe():
        raise AssertionError("must not probe when USE_NNPACK is set and the CPU matches")
    assert drift.decide_nnpack(report, "0", no_probe) == nnpack.Decision(False, "env",
                                                                         "USE_NNPACK=0")
    unusable = drift.check(str(tmp_path / "missing.json"))
    assert drift.decide_nnpack(unusable, "0", no_probe).decided_by == "env"


# --- real servers, native CPU -------------------------------------------------------------

def startup_line(stderr):
    (line,) = [ln for ln in stderr.splitlines() if "starting torch-backend" in ln]
    return line


def run_server(tmp_path, record, env, wrapper=(), timeout=120.0, inferences=3):
    """Start a server with the given record (dict, raw bytes or None = no file)."""
    path = tmp_path / "cpu-record.json"
    if isinstance(record, dict):
        path.write_text(json.dumps(record))
    elif record is not None:
        path.write_bytes(record)
    srv = ServerProcess(tmp_path, dict(env, TORCH_BACKEND_CPU_RECORD=str(path)),
                        wrapper=wrapper).start()
    try:
        srv.wait_ready(timeout=timeout)
        assert_selftest_answers(srv, inferences, timeout)
        _, meta = srv.get_json("/v2")
        gauges = {name: srv.metric(name)
                  for name in ("torch_backend_cpu_drift", "torch_backend_nnpack_enabled")}
        assert srv.terminate(timeout=timeout) == 0, srv.stderr
        stderr = srv.stderr
    finally:
        srv.kill()
    for ln in stderr.splitlines():
        assert LOG_LINE_RE.match(ln), ln
    assert stderr.count(NNPACK_WARNING) == 0, stderr
    return stderr, meta, gauges


@pytest.mark.slow
def test_matching_record_obeys_env(tmp_path):
    stderr, meta, gauges = run_server(tmp_path, this_host_record(use_nnpack="0"),
                                      {"USE_NNPACK": "0"})
    line = startup_line(stderr)
    assert "nnpack=disabled (env: USE_NNPACK=0)" in line and "cpu_drift=no" in line, line
    assert "WARNING" not in stderr, stderr
    assert meta["nnpack"]["enabled"] is False and meta["nnpack"]["decided_by"] == "env"
    cd = meta["cpu_drift"]
    assert cd["detected"] is False and cd["differences"] == []
    assert cd["recorded_cpu"] == cd["current_cpu"]
    assert gauges == {"torch_backend_cpu_drift": 0, "torch_backend_nnpack_enabled": 0}


@pytest.mark.slow
def test_nehalem_record_on_this_cpu_probes(tmp_path):
    available, reason = nnpack.probe()  # what the service's probe will find here
    stderr, meta, gauges = run_server(tmp_path, NEHALEM_RECORD, {"USE_NNPACK": "0"})
    drift_lines = [ln for ln in stderr.splitlines() if "CPU drift" in ln]
    assert len(drift_lines) == 1, stderr
    (line,) = drift_lines
    print(f"\ndrift log line: {line}")
    assert line.startswith("WARNING torch_backend: CPU drift: ")
    current = drift.current_cpu()["cpu_model"]
    state = "enabled" if available else "disabled"
    for part in (repr(NEHALEM_RECORD["cpu_model"]), repr(current),
                 "unsupported_hardware, USE_NNPACK=0", "ignoring USE_NNPACK=0",
                 f"NNPACK {state} for this CPU ({reason})",
                 "re-run the deploy playbook to make this permanent"):
        assert part in line, line
    assert len([ln for ln in stderr.splitlines() if ln.startswith("WARNING")]) == 1, stderr
    assert f"nnpack={state} (drift: {reason})" in startup_line(stderr)
    assert "cpu_drift=yes" in startup_line(stderr)
    assert meta["nnpack"]["enabled"] is available and meta["nnpack"]["decided_by"] == "drift"
    cd = meta["cpu_drift"]
    assert cd["detected"] is True
    assert cd["recorded_cpu"] == NEHALEM_RECORD["cpu_model"] and cd["current_cpu"] == current
    assert cd["recorded_status"] == "unsupported_hardware"
    assert "cpu_model" in [d["field"] for d in cd["differences"]]
    assert gauges == {"torch_backend_cpu_drift": 1,
                      "torch_backend_nnpack_enabled": 1 if available else 0}


@pytest.mark.slow
@pytest.mark.parametrize("record, error", [(None, "no such file"),
                                           (b"not json at all \xff", "not valid JSON")])
def test_unusable_record_warns_once_and_serves(tmp_path, record, error):
    stderr, meta, gauges = run_server(tmp_path, record, {"USE_NNPACK": "0"})
    warnings = [ln for ln in stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1 and error in warnings[0], stderr
    assert "cpu-record.json" in warnings[0] and "CPU drift check off" in warnings[0]
    line = startup_line(stderr)
    assert "nnpack=disabled (env: USE_NNPACK=0)" in line and "cpu_drift=unknown" in line, line
    assert meta["cpu_drift"]["detected"] is None and error in meta["cpu_drift"]["error"]
    assert gauges["torch_backend_cpu_drift"] == 0


# --- optional: emulated CPU ----------------------------------------------------------------

QEMU = shutil.which("qemu-x86_64-static")


@pytest.mark.slow
@pytest.mark.qemu_user
@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64-static on an x86_64 host")
def test_qemu_nehalem_with_this_hosts_record(tmp_path):
    record = this_host_record(status="supported", available=True, use_nnpack="")
    stderr, meta, gauges = run_server(tmp_path, record, {"USE_NNPACK": None},
                                      wrapper=[QEMU, *QEMU_NEHALEM_ARGS], timeout=900,
                                      inferences=5)
    (line,) = [ln for ln in stderr.splitlines() if "CPU drift" in ln]
    print(f"\ndrift log line: {line}")
    if record["cpu_capability"] != "DEFAULT":
        assert f"cpu_capability {record['cpu_capability']}->DEFAULT" in line, line
    assert "supported, USE_NNPACK unset" in line and "NNPACK disabled for this CPU" in line
    assert "re-run the deploy playbook to make this permanent" in line
    assert "nnpack=disabled (drift: probe: Unsupported hardware)" in startup_line(stderr)
    cd = meta["cpu_drift"]
    assert cd["detected"] is True
    # /proc/cpuinfo shows the host under qemu-user, CPUID the emulated CPU: the service sees the
    # Nehalem, with the fingerprint the role's probe under the same emulator records for it
    assert "Nehalem" in cd["current_cpu"]
    fields = [d["field"] for d in cd["differences"]]
    assert fields[0] == "cpu_model" and "fingerprint" in fields, fields
    fingerprint = [d for d in cd["differences"] if d["field"] == "fingerprint"][0]
    assert fingerprint == {"field": "fingerprint", "recorded": record["fingerprint"],
                           "current": "305b35c0b213a2bb"}
    if record["cpu_capability"] != "DEFAULT":   # torch's capability: the extra signal
        assert fields[-1] == "cpu_capability", fields
    assert gauges == {"torch_backend_cpu_drift": 1, "torch_backend_nnpack_enabled": 0}
