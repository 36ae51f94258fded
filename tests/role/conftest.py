import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "pytorch_backend"
BIN = Path(sys.executable).parent


def run_playbook(tmp_path, playbook_text, extra_vars=None, check=False, args=()):
    """Run a playbook against localhost (connection local) and return the completed process."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(playbook_text)
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
    if extra_vars is not None:
        varfile = tmp_path / "vars.json"
        varfile.write_text(json.dumps(extra_vars))
        cmd += ["-e", "@" + str(varfile)]
    if check:
        cmd.append("--check")
    cmd += list(args)
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_INVENTORY="localhost,")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.fixture
def playbook(tmp_path):
    def _run(text, extra_vars=None, check=False, args=()):
        return run_playbook(tmp_path, text, extra_vars, check, args)
    return _run


# A play on localhost with the role's defaults and vars that gives the extra var `facts` as the
# probe's NNPACK facts and runs the role's own decision (tasks/steps/decide.yml); tests append
# their tasks (at the same indentation) to look at what it decided.
DECIDE_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - ROLE/defaults/main.yml
    - ROLE/vars/main.yml
  tasks:
    - name: Give the facts
      ansible.builtin.set_fact:
        ansible_facts:
          nnpack: "{{ facts }}"
    - name: Decide as the role does (its own decide.yml)
      ansible.builtin.include_tasks: ROLE/tasks/steps/decide.yml
""".replace("ROLE", str(ROLE))
