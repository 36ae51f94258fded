"""The role's minimum ansible-core is asserted in preflight, and Galaxy's metadata says the same.

The minimum lives in vars/main.yml (_pytorch_backend_min_ansible_version); a run with it set
above the running ansible-core (-e) must stop in preflight with a message naming both versions.
"""
import yaml

from conftest import ROLE

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/preflight.yml
"""


def minimum():
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_pytorch_backend_min_ansible_version"]


def test_meta_names_the_minimum_preflight_asserts():
    meta = yaml.safe_load((ROLE / "meta" / "main.yml").read_text())
    assert meta["galaxy_info"]["min_ansible_version"] == minimum() == "2.19"


def test_older_ansible_core_fails_preflight_with_a_clear_message(playbook):
    result = playbook(PLAY, extra_vars={"_pytorch_backend_min_ansible_version": "99.1"}, check=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "needs ansible-core 99.1 or later, this is 2." in out, out[-3000:]
    assert "Check the whole-number settings" not in out, out[-3000:]


def test_running_ansible_core_passes(playbook):
    result = playbook(PLAY, extra_vars={"_pytorch_backend_min_ansible_version": minimum()}, check=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
