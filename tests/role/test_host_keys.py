"""SSH host keys are checked everywhere except on the local emulated droplets.

The project-wide ansible.cfg does not turn checking off; the inventory scripts/droplets writes
(whose guests get new host keys at every boot) does, for its hosts only. Checked on the ssh
command line Ansible builds (-vvv), against a port where nothing listens, so no guest is needed.
"""
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent


def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    e.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
             ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"), ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / "cp"))
    return e


def ssh_command_line(tmp_path, inventory, host, *extra):
    """The `SSH: EXEC ssh ...` line of an ad-hoc ping that cannot connect (port 1 refuses)."""
    proc = subprocess.run([str(BIN / "ansible"), "-i", str(inventory), host, "-m", "ansible.builtin.ping",
                           "-vvv", *extra], capture_output=True, text=True, cwd=ROOT, env=env(tmp_path),
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert "UNREACHABLE" in out, out[-3000:]
    lines = [line for line in out.splitlines() if "SSH: EXEC" in line]
    assert lines, out[-3000:]
    return lines[0]


def test_project_config_leaves_host_key_checking_on(tmp_path):
    proc = subprocess.run([str(BIN / "ansible-config"), "dump", "--only-changed"], capture_output=True,
                          text=True, cwd=ROOT, env=env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HOST_KEY_CHECKING" not in proc.stdout, proc.stdout


def test_production_host_is_checked(tmp_path):
    line = ssh_command_line(tmp_path, ROOT / "inventories" / "production", "inference-fra1-01",
                            "-e", "ansible_host=127.0.0.1", "-e", "ansible_port=1")
    assert "StrictHostKeyChecking=no" not in line, line
    assert "UserKnownHostsFile=/dev/null" not in line, line


def test_local_droplet_is_not_checked(tmp_path):
    """A host as scripts/droplets writes it into inventories/local/ (its own render code)."""
    loader = importlib.machinery.SourceFileLoader("droplets_cli", str(ROOT / "scripts" / "droplets"))
    spec = importlib.util.spec_from_loader("droplets_cli", loader)
    droplets = importlib.util.module_from_spec(spec)
    loader.exec_module(droplets)
    local = tmp_path / "inventories" / "local"
    shutil.copytree(ROOT / "inventories" / "local", local, ignore=shutil.ignore_patterns("hosts.yml"))
    (local / "hosts.yml").write_text(droplets.render_inventory({"d1": {
        "ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "root",
        "ansible_ssh_common_args": droplets.SSH_COMMON_ARGS}}))
    line = ssh_command_line(tmp_path, local, "d1")
    assert "StrictHostKeyChecking=no" in line, line
    assert "UserKnownHostsFile=/dev/null" in line, line
