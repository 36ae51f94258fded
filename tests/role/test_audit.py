"""playbooks/audit.yml against this machine (connection local, no become): a real probe with the
controller's torch, the role's own decision, and the fleet report it writes.

This machine's CPU initializes NNPACK (TESTBED.md: native, AVX-512), so a deploy would leave
USE_NNPACK unset; the CPU record of a "last deploy" is given through pytorch_backend_cpu_record_file.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import BIN, ROOT


def audit(tmp_path, record=None):
    fact = tmp_path / "torch_backend.fact"
    if record is not None:
        fact.write_text(json.dumps(record) + "\n")
    reports = tmp_path / "reports"
    extra = {"ansible_become": False, "pytorch_backend_python": sys.executable,
             "pytorch_backend_base_dir": str(tmp_path / "base"), "pytorch_backend_reports_dir": str(reports),
             "pytorch_backend_cpu_record_file": str(fact), "pytorch_backend_probe_timeout": 300}
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1")
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             str(ROOT / "playbooks" / "audit.yml"), "-e", "@" + str(tmp_path / "vars.json")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = json.loads((reports / "audit.json").read_text())["hosts"]
    assert [r["host"] for r in rows] == ["localhost"]
    assert (reports / "audit.md").read_text().count("| localhost |") == 1
    return rows[0]


@pytest.mark.slow
def test_audit_of_an_undeployed_host(tmp_path):
    row = audit(tmp_path)
    assert row["nnpack"] == "supported" and row["available"] is True
    assert row["would_write"] == "unset" and row["deployed"] == "not deployed"
    assert row["drift"] is False and row["recorded_fingerprint"] is None


@pytest.mark.slow
def test_audit_reads_the_recorded_verdict_and_the_cpu_change(tmp_path):
    # a record as a deploy on another CPU left it: NNPACK off, another fingerprint
    row = audit(tmp_path, {"fingerprint": "0000000000000000", "cpu_model": "Old CPU", "cpu_flags": {},
                           "cpu_capability": "DEFAULT", "status": "unsupported_hardware", "available": False,
                           "use_nnpack": "0"})
    assert row["deployed"] == "USE_NNPACK=0" and row["would_write"] == "unset"
    assert row["drift"] is True and row["recorded_fingerprint"] == "0000000000000000"
    assert row["fingerprint"] != "0000000000000000"


def test_a_limited_audit_reports_the_hosts_in_the_limit_only(tmp_path):
    """h4 is outside --limit: not in the report, not "unreachable or failed"; h3 is in it and unreachable.
    The probe uses the system Python, which has no torch: fast, and the rows still come from real probes."""
    reports = tmp_path / "reports"
    (tmp_path / "hosts.ini").write_text("\n".join([
        "h1", "h2", "h3 ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1 ansible_user=nobody", "h4",
        "[all:vars]", "ansible_connection=local", f"ansible_python_interpreter={sys.executable}"]) + "\n")
    extra = {"ansible_become": False, "pytorch_backend_python": "/usr/bin/python3",
             "pytorch_backend_base_dir": str(tmp_path / "base"), "pytorch_backend_reports_dir": str(reports),
             "_pytorch_backend_fact_file": str(tmp_path / "none.fact")}
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_SHOW_CUSTOM_STATS="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.ini"), "--limit", "h1:h2:h3",
                             str(ROOT / "playbooks" / "audit.yml"), "-e", "@" + str(tmp_path / "vars.json")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out  # h3 is unreachable
    assert (reports / "audit.json").exists(), out
    report = json.loads((reports / "audit.json").read_text())
    assert [r["host"] for r in report["hosts"]] == ["h1", "h2"], report
    assert report["unreachable_or_failed"] == ["h3"], report
    markdown = (reports / "audit.md").read_text()
    assert "| h3 | (unreachable or failed) |" in markdown and "h4" not in markdown, markdown
    # AWX keeps the run-wide custom stats as the job's artifacts: the same report, printed as "\tRUN: {json}"
    run = [line for line in out.splitlines() if line.startswith("\tRUN: ")]
    assert len(run) == 1, out
    assert json.loads(run[0][len("\tRUN: "):])["pytorch_backend_audit"] == report


def test_report_shows_conv_backends_and_warns_on_slow2d(tmp_path):
    """audit.md.j2 rendered with rows as audit.yml makes them (conv fields from the role's filter)."""
    import jinja2

    sys.path.insert(0, str(ROOT / "roles" / "pytorch_backend" / "filter_plugins"))
    from conv_backends import conv_backends_short, conv_backends_slow2d

    def row(host, summary):
        return {"host": host, "cpu_model": "CPU", "avx2": True, "fma": True, "cache_enumerated": True,
                "nnpack": "supported", "would_write": "unset", "deployed": "unset", "drift": False,
                "conv": conv_backends_short(summary), "conv_slow2d": conv_backends_slow2d(summary),
                "conv_backends": summary}

    fast = {"mkldnn_enabled": True, "nnpack_enabled": True, "slow2d": [],
            "models": {"resnet18": {"builtin": False, "batch_1": {"Mkldnn": 20}, "batch_16": {"Mkldnn": 20}}}}
    slow = {"mkldnn_enabled": False, "nnpack_enabled": True, "slow2d": ["resnet18"],
            "models": {"resnet18": {"builtin": False, "batch_1": {"Slow2d": 20},
                                    "batch_16": {"NnpackSpatial": 20}}}}
    rows = [row("a", fast), row("b", slow), row("c", None)]
    text = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROOT / "playbooks" / "templates"))) \
        .get_template("audit.md.j2").render(_report={"hosts": rows, "unreachable_or_failed": ["d"]})
    lines = text.splitlines()
    assert lines[2].endswith("| Conv2d backend (batch 1, 16) |")
    conv_column = [ln.rsplit("|", 2)[1].strip() for ln in lines if ln[:5] in ("| a |", "| b |", "| c |", "| d |")]
    assert conv_column == ["Mkldnn", "1:Slow2d! 16:NnpackSpatial", "-", ""]
    assert [ln for ln in lines if "Slow2d)" in ln] == [
        "- **b**: WARNING: Conv2d layers fall to the slow direct path (Slow2d) in resnet18 (oneDNN off, "
        "NNPACK on): per-layer detail in GET /v2/models/NAME, field conv_backends."]
