import http.client
import json
import os
import socket
import subprocess
import sys
import time
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
    # ANSIBLE_FILTER_PLUGINS: the role's filters, which a play that runs the role has, also
    # for the plays here that only read its vars or render its templates.
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_INVENTORY="localhost,")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.fixture
def playbook(tmp_path):
    def _run(text, extra_vars=None, check=False, args=()):
        return run_playbook(tmp_path, text, extra_vars, check, args)
    return _run


def decided(facts, previous=None, probed=True):
    """What the probe task registers for these NNPACK facts: the role's own decision
    (module_utils/nnpack_decision.py), for plays that render or report from it."""
    sys.path.insert(0, str(ROOT / "tests" / "module"))
    from nnpack_facts_helpers import import_module_utils
    return {"decision": import_module_utils("nnpack_decision").decide(facts, previous or {}, probed, host="localhost")}


# A play on localhost with the role's defaults and vars loaded, for running its step files;
# tasks follow.
VARS_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - ROLE/defaults/main.yml
    - ROLE/vars/main.yml
  vars:
    role_path: ROLE
  tasks:
""".replace("ROLE", str(ROLE))


def fake_python(tmp_path, version, name=None):
    """A stand-in host interpreter that reports `version` (X.Y) to the role's version read."""
    script = tmp_path / (name or f"python{version}")
    script.write_text('#!/bin/sh\ncase "$2" in *version_info*) echo python=%s ;; *) exit 0 ;; esac\n' % version)
    script.chmod(0o755)
    return str(script)


def load_role_module(name):
    """library/NAME.py of the role, imported in this process as Ansible runs it on a host: its
    `ansible.module_utils` imports resolve to the role's module_utils/ (no bytecode written there)."""
    import importlib.util

    import ansible.module_utils

    sys.dont_write_bytecode = True
    if str(ROLE / "module_utils") not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(ROLE / "module_utils"))
    spec = importlib.util.spec_from_file_location(name, ROLE / "library" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def ipv6_service(tmp_path_factory):
    """The real service bound to ::1 (USE_NNPACK=0, built-in models), ready: its port.
    Skips where this machine has no IPv6 loopback (`ip -6 addr show lo` lists no ::1)."""
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) here")
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_BACKEND_")}
    env.update(PYTHONPATH=str(ROLE / "files" / "torch-backend"), PYTHONDONTWRITEBYTECODE="1",
               TORCH_BACKEND_HOST="::1", TORCH_BACKEND_PORT=str(port),
               TORCH_BACKEND_MODEL_DIR="/nonexistent", USE_NNPACK="0")
    stderr = tmp_path_factory.mktemp("ipv6-service") / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "torch_backend", "serve"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            try:
                conn = http.client.HTTPConnection("::1", port, timeout=5)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)

