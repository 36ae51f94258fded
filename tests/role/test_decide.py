"""The USE_NNPACK decision, run through the role's own tasks/steps/decide.yml on localhost.

The probe's facts are given (the probe has its own tests in tests/module); what is
tested is the rule that turns facts and the host's previous CPU record into the new
record, from a table of cases.
"""
import base64
import json

import pytest

from conftest import DECIDE_PLAY

TASKS = """    - name: Write the decision down
      ansible.builtin.copy:
        content: "{{{{ {{'record': _pytorch_backend_record, 'off': _pytorch_backend_use_nnpack_off, 'kept': _pytorch_backend_kept_record}} | to_json }}}}"
        dest: "{out}"
        mode: "0600"
"""

HASWELL = {"fingerprint": "aaaa", "cpu_model": "Haswell", "cpu_flags": {"avx2": True, "fma": True},
           "cache_enumerated": True, "torch_cpu_capability": "AVX2", "predicted_available": True}
NEHALEM = {"fingerprint": "bbbb", "cpu_model": "Nehalem", "cpu_flags": {"avx2": False, "fma": False},
           "cache_enumerated": True, "torch_cpu_capability": "DEFAULT", "predicted_available": False}
RECORD_ON = {"fingerprint": "aaaa", "cpu_model": "Haswell", "cpu_flags": {"avx2": True, "fma": True},
             "cpu_capability": "AVX2", "status": "supported", "available": True, "use_nnpack": ""}


def facts(cpu, status, available):
    return dict(cpu, status=status, available=available, reason="r")


def decide(playbook, tmp_path, nnpack, record, probe_python):
    state = {"contentstate": base64.b64encode((json.dumps(record) + "\n").encode()).decode() if record else ""}
    result = playbook(DECIDE_PLAY + TASKS.format(out=tmp_path / "decision.json"), extra_vars={"facts": nnpack, "_pytorch_backend_state": state,
                                                          "_pytorch_backend_probe_python": probe_python})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    return json.loads((tmp_path / "decision.json").read_text()), " ".join(out.split())


CASES = [
    # (name, facts, previous record, probe python, expected use_nnpack, expected status, record kept)
    ("probe says yes", facts(HASWELL, "supported", True), None, "py", "", "supported", False),
    ("probe says no", facts(NEHALEM, "unsupported_hardware", False), None, "py", "0", "unsupported_hardware", False),
    ("undecided, no record: the safe side", facts(HASWELL, "probe_failed", None), None, "py", "0", "probe_failed", False),
    ("undecided, same CPU: the record stays", facts(HASWELL, "probe_failed", None), RECORD_ON, "py", "", "supported", True),
    ("torch missing, same CPU: the record stays", facts(HASWELL, "torch_missing", None), RECORD_ON, "py", "", "supported", True),
    ("undecided, other CPU: the safe side", facts(NEHALEM, "probe_failed", None), RECORD_ON, "py", "0", "probe_failed", False),
    ("a decided probe replaces the record", facts(HASWELL, "unsupported_hardware", False), RECORD_ON, "py", "0",
     "unsupported_hardware", False),
    ("check mode, nothing built: the prediction (yes)", facts(HASWELL, "torch_missing", None), None, "", "", "torch_missing", False),
    ("check mode, nothing built: the prediction (no)", facts(NEHALEM, "torch_missing", None), None, "", "0", "torch_missing", False),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decision_table(playbook, tmp_path, case):
    _, nnpack, record, python, use_nnpack, status, kept = case
    decision, out = decide(playbook, tmp_path, nnpack, record, "/venv/bin/python" if python else "")
    assert decision["record"]["use_nnpack"] == use_nnpack
    assert decision["record"]["status"] == status
    assert decision["off"] is (use_nnpack == "0")
    assert decision["kept"] is kept
    if kept:
        assert decision["record"] == RECORD_ON
    if python == "":
        assert "predicted from the CPU evidence" in out
    if kept:
        assert "same CPU as recorded, so the recorded verdict stays (supported, USE_NNPACK unset)" in out
