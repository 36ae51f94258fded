"""nnpack_facts through real Ansible: ad-hoc `ansible -m` and a tiny playbook (also in --check).

The module imports role-local module_utils (`ansible.module_utils.nnpack_run`, ...; cpu_identity.py
there is a symlink into the service package). The playbook runs it from a role whose library/ and
module_utils/ are the real ones, so Ansible finds them as for pytorch_backend; ad-hoc runs have no
role and name the directory in ANSIBLE_MODULE_UTILS.
"""
import json
import os
import re
import subprocess

import pytest

from nnpack_facts_helpers import (LIBRARY, MODULE_UTILS, NO_TORCH_PYTHON, REPO, VENV_BIN, VENV_PYTHON,
                                  needs_torch)

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - probe
"""

ROLE_TASKS = """
- name: Probe NNPACK
  nnpack_facts:
    python: "{{ probe_python }}"
- name: Facts are set for later tasks
  ansible.builtin.assert:
    that:
      - ansible_facts['nnpack']['status'] in ['supported', 'unsupported_hardware']
      - ansible_facts['nnpack']['available'] is boolean
      - nnpack.fingerprint | length == 16
"""


def ansible_env(tmp_path, module_utils=True):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("ANSIBLE_MODULE_UTILS", None)
    if module_utils:
        env["ANSIBLE_MODULE_UTILS"] = str(MODULE_UTILS)
    env.update({
        "PATH": "%s:%s" % (VENV_BIN, env.get("PATH", "")),
        # `host | STATUS => {json}` for every task result, ad-hoc and playbook alike
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
    })
    return env


def run_json(cmd, tmp_path, module_utils=True):
    """Run an ansible command; return rc and the list of (status, result) the minimal callback printed."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ansible_env(tmp_path, module_utils),
                          cwd=str(REPO), timeout=300)
    results = []
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^localhost \| ([A-Z]+)!?(?: \| [^\n]*)? => ", proc.stdout, re.M):
        results.append((match.group(1), decoder.raw_decode(proc.stdout, match.end())[0]))
    assert results, "no results from %s (rc %d):\n%s\n%s" % (cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc.returncode, results


@needs_torch
@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_playbook_sets_facts_on_system_python_target(tmp_path, check):
    """Target-side interpreter is Debian's /usr/bin/python3 (as on the hosts); the probe uses the venv.
    The module and its module_utils come from a role, as in pytorch_backend (no -M, no ANSIBLE_MODULE_UTILS)."""
    role = tmp_path / "roles" / "probe"
    (role / "tasks").mkdir(parents=True)
    (role / "tasks" / "main.yml").write_text(ROLE_TASKS)
    (role / "library").symlink_to(LIBRARY)
    (role / "module_utils").symlink_to(MODULE_UTILS)
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PLAYBOOK)
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % NO_TORCH_PYTHON, "-e", "probe_python=%s" % VENV_PYTHON,
           str(playbook)] + (["--check"] if check else [])
    rc, results = run_json(cmd, tmp_path, module_utils=False)
    assert rc == 0, results
    assert [status for status, _ in results] == ["SUCCESS", "SUCCESS"], results
    probe = results[0][1]
    assert probe["changed"] is False and not probe.get("failed")
    facts = probe["ansible_facts"]["nnpack"]
    assert facts["python"] == str(VENV_PYTHON) and facts["torch_version"]
    assert facts["evidence_source"] == "cpuid"          # cpu_identity.py reached the child through the symlink
    assert results[1][1]["msg"] == "All assertions passed"


def test_adhoc_missing_interpreter_does_not_fail(tmp_path):
    cmd = [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-M", str(LIBRARY),
           "-e", "ansible_python_interpreter=%s" % NO_TORCH_PYTHON,
           "-m", "nnpack_facts", "-a", "python=/nonexistent/python timeout=30"]
    rc, results = run_json(cmd, tmp_path)
    assert rc == 0, results
    status, result = results[0]
    assert status == "SUCCESS" and result["changed"] is False
    assert result["ansible_facts"]["nnpack"]["status"] == "probe_failed"


def test_adhoc_invalid_timeout_fails_with_clear_message(tmp_path):
    cmd = [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-M", str(LIBRARY),
           "-e", "ansible_python_interpreter=%s" % NO_TORCH_PYTHON,
           "-m", "nnpack_facts", "-a", "timeout=-1"]
    rc, results = run_json(cmd, tmp_path)
    assert rc != 0
    status, result = results[0]
    assert status == "FAILED" and result["changed"] is False
    assert "timeout must be a positive number of seconds, got -1" in result["msg"]
