"""Helpers for the nnpack_facts module tests (fixtures are in conftest.py).

The module is run the way Ansible runs a module directly: ``PYTHON nnpack_facts.py args.json`` with
``{"ANSIBLE_MODULE_ARGS": {...}}`` in the file, and its stdout is parsed as JSON. Its imports of
``ansible.module_utils.<name>`` are resolved as for a role: the role's module_utils directory is
appended to the ``ansible.module_utils`` package path (RUN_MODULE); ``-B`` keeps bytecode out of roles/.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "roles" / "pytorch_backend" / "library"
MODULE = LIBRARY / "nnpack_facts.py"
MODULE_UTILS = REPO / "roles" / "pytorch_backend" / "module_utils"
RUN_MODULE = ("import runpy, sys, ansible.module_utils as mu; mu.__path__.append(%r); del sys.argv[0]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')" % str(MODULE_UTILS))
VENV_BIN = REPO / ".venv" / "bin"
VENV_PYTHON = VENV_BIN / "python"
QEMU = shutil.which("qemu-x86_64-static")
# OpenBLAS (numpy's BLAS) picks its kernels from the CPU itself: under qemu-user on an AMD EPYC
# host it took Haswell kernels for -cpu Nehalem, and `import numpy` died of SIGILL inside
# libscipy_openblas (measured 2026-12-08; no real Nehalem, and no full TCG guest, does this). It is
# told its core, which no NNPACK verdict depends on.
QEMU_CPU_ENV = {"Nehalem": ["-E", "OPENBLAS_CORETYPE=Nehalem"]}
# Interpreters without torch on this machine: Debian's python and the pyenv base of the venv.
NO_TORCH_PYTHON = "/usr/bin/python3"

NNPACK_TEXT = "Could not initialize NNPACK!"
HANG_SLEEP = "sleep 599.25"


def venv_has_torch():
    return subprocess.run([str(VENV_PYTHON), "-c", "import importlib.util as u, sys; "
                           "sys.exit(u.find_spec('torch') is None)"]).returncode == 0


needs_torch = pytest.mark.skipif(not venv_has_torch(), reason="torch is not installed in .venv")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64-static is not installed")


class ModuleRun:
    def __init__(self, proc, elapsed, args):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.elapsed = elapsed
        self.args = args
        try:
            self.result = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("module stdout is not one JSON document:\n%s\nstderr:\n%s"
                                 % (proc.stdout, proc.stderr))

    @property
    def facts(self):
        return self.result["ansible_facts"]["nnpack"]

    def __repr__(self):
        return "ModuleRun(args=%r, rc=%r, elapsed=%.1f)" % (self.args, self.rc, self.elapsed)


def run_module(tmp_path, args, module_python=VENV_PYTHON, env=None, check_mode=False, module=MODULE):
    """Run a module of the role (nnpack_facts unless told) like Ansible runs one: arguments file in, JSON out."""
    module_args = dict(args)
    if check_mode:
        module_args["_ansible_check_mode"] = True
    args_file = Path(tmp_path) / ("args-%d.json" % time.monotonic_ns())
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    run_env = dict(os.environ)
    run_env.pop("PYTHONPATH", None)
    run_env.update(env or {})
    started = time.monotonic()
    proc = subprocess.run([str(module_python), "-B", "-c", RUN_MODULE, str(module), str(args_file)],
                          capture_output=True, text=True, env=run_env, timeout=900)
    return ModuleRun(proc, time.monotonic() - started, module_args)


def write_fake_interpreter(directory, name, body):
    """A shell script standing in for a Python interpreter (crash/hang/garbage cases)."""
    path = Path(directory) / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def make_fakes(module_tmp):
    """Fake interpreters: each ignores its arguments and misbehaves in one way."""
    return {
        "sigkill": write_fake_interpreter(module_tmp, "fake-python-sigkill", "kill -9 $$"),
        # its `sleep` (a grandchild of the module, found by HANG_SLEEP) must die with it at the timeout
        "hang": write_fake_interpreter(module_tmp, "fake-python-hang", "/bin/%s\necho woke up" % HANG_SLEEP),
        "garbage": write_fake_interpreter(
            module_tmp, "fake-python-garbage",
            'echo "Python? never heard of it"\necho "@@NNPACK_FACTS@@ {not json"\necho junk >&2'),
        # Dies (SIGSEGV) while "executing CPUID" unless called with --no-cpuid, then is the real venv python.
        "cpuid_crash": write_fake_interpreter(
            module_tmp, "fake-python-cpuid-crash",
            'for last; do :; done\n'
            'if [ "$last" = --no-cpuid ]; then exec "%s" "$@"; fi\n'
            'echo \'@@NNPACK_FACTS@@ {"stage": "procfs", "architecture": "x86_64"}\'\n'
            'kill -SEGV $$' % VENV_PYTHON),
    }


def assert_no_leak(run):
    """The NNPACK warning may only appear inside reason and nnpack_message."""
    facts = dict(run.facts)
    facts.pop("reason", None)
    facts.pop("nnpack_message", None)
    assert NNPACK_TEXT not in json.dumps(facts)
    rest = dict(run.result)
    rest.pop("ansible_facts")
    assert NNPACK_TEXT not in json.dumps(rest)
    assert NNPACK_TEXT not in run.stderr


def import_module_utils(name):
    """ansible.module_utils.<name> from the role, imported in this process as Ansible resolves it
    (the role's module_utils directory on the package path), writing no bytecode under roles/."""
    import importlib

    import ansible.module_utils

    sys.dont_write_bytecode = True
    if str(MODULE_UTILS) not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(MODULE_UTILS))
    return importlib.import_module("ansible.module_utils." + name)


def role_record(facts):
    """The CPU record the role writes from nnpack facts whose probe decided (cpu_record.make_record)."""
    return import_module_utils("cpu_record").make_record(facts, facts["available"])


def module_docs(module=MODULE):
    """DOCUMENTATION and RETURN of a module of the role, parsed (without importing it)."""
    import ast

    import yaml

    docs = {}
    for node in ast.parse(Path(module).read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in ("DOCUMENTATION", "RETURN"):
            docs[node.targets[0].id] = yaml.safe_load(node.value.value)
    return docs


def assert_options_documented(monkeypatch, module=MODULE):
    """What validate-modules checks (doc-default/type/elements/required vs argument_spec), in the suite:
    the module's main() is run up to its AnsibleModule(...) call, whose arguments are compared."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("%s_under_test" % Path(module).stem, module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)

    class Captured(Exception):
        pass

    def capture(argument_spec, **kwargs):
        raise Captured(argument_spec, kwargs)
    monkeypatch.setattr(loaded, "AnsibleModule", capture)
    with pytest.raises(Captured) as caught:
        loaded.main()
    argument_spec, kwargs = caught.value.args
    assert kwargs == {"supports_check_mode": True}
    options = module_docs(module)["DOCUMENTATION"]["options"]
    assert set(options) == set(argument_spec)
    for name, arg in argument_spec.items():
        for key in ("type", "default", "elements", "required"):
            assert options[name].get(key) == arg.get(key), (name, key)
