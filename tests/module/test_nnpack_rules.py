"""One file of NNPACK rules (torch_backend/nnpack_rules.py) for the role's probe and the service's.

The role reaches it through the module_utils symlink, as Ansible imports it and as the probe child
receives it (as source, by nnpack_run's bootstrap); the service imports it from its package.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnpack_facts_helpers import MODULE_UTILS, VENV_PYTHON, import_module_utils

sys.path.insert(0, str(MODULE_UTILS.parent / "files" / "torch-backend"))
from torch_backend import nnpack, nnpack_rules  # noqa: E402

verdict_rules = import_module_utils("nnpack_verdict")
nnpack_run = import_module_utils("nnpack_run")
nnpack_probe = import_module_utils("nnpack_probe")


def test_one_file_serves_both_sides():
    link = MODULE_UTILS / "nnpack_rules.py"
    assert link.is_symlink()
    assert os.path.realpath(link) == os.path.realpath(nnpack_rules.__file__)
    role_side = import_module_utils("nnpack_rules")
    assert os.path.realpath(role_side.__file__) == os.path.realpath(nnpack_rules.__file__)
    assert verdict_rules.find_warning is role_side.find_warning
    assert nnpack.nnpack_rules is nnpack_rules


WARNINGS = [
    # (stderr, the line, the reason)
    ("[W NNPACK.cpp:56] Could not initialize NNPACK! Reason: Unsupported hardware.\n",
     "[W NNPACK.cpp:56] Could not initialize NNPACK! Reason: Unsupported hardware.", "Unsupported hardware."),
    ("noise\r\n[W NNPACK.cpp:56] Could not initialize NNPACK! Reason: Out of memory.\r\nmore\r\n",
     "[W NNPACK.cpp:56] Could not initialize NNPACK! Reason: Out of memory.", "Out of memory."),
    ("Could not initialize NNPACK! Reason:  Something new.  \nCould not initialize NNPACK! Reason: second\n",
     "Could not initialize NNPACK! Reason:  Something new.", "Something new."),
    ("Could not initialize NNPACK!\nNNPACK is enabled\n", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("stderr,line,reason", WARNINGS)
def test_find_warning(stderr, line, reason):
    assert nnpack_rules.find_warning(stderr) == (line, reason)


def test_built_with_nnpack():
    assert nnpack_rules.built_with_nnpack("  - NNPACK is enabled\n  - CPU capability usage: AVX2\n")
    assert not nnpack_rules.built_with_nnpack("  - CPU capability usage: AVX2\n  - NNPACK is disabled\n")


def records(stdout):
    mark = nnpack_probe.MARK
    return [json.loads(line[len(mark):]) for line in stdout.splitlines() if line.startswith(mark)]


def fake_torch(root, summary):
    """A stand-in torch package whose NNPACK says no silently, with `summary` as its build summary."""
    pkg = root / "torch"
    (pkg / "backends").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import types\n__version__ = '0.0-stand-in'\n"
        "__config__ = types.SimpleNamespace(show=lambda: %r)\n" % summary)
    (pkg / "backends" / "__init__.py").write_text("")
    (pkg / "backends" / "cpu.py").write_text("def get_cpu_capability():\n    return 'DEFAULT'\n")
    (pkg / "backends" / "mkldnn.py").write_text("def is_available():\n    return True\n")
    (pkg / "backends" / "nnpack.py").write_text("def is_available():\n    return False\n")
    return str(root)


@pytest.mark.parametrize("summary,built", [("  - NNPACK is enabled\n", True), ("  - CPU capability: AVX2\n", False)])
def test_probe_child_reads_the_build_summary_with_the_rules_stand_in_torch(tmp_path, summary, built):
    """The child command carries nnpack_rules.py's text and runs without these files on its path;
    with a torch whose NNPACK says no, nnpack_built is the rules' reading of its build summary."""
    cmd = nnpack_run.child_command([], str(VENV_PYTHON))
    assert repr(nnpack_run.source_of(import_module_utils("nnpack_rules"))) in cmd[2]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                         env={"PATH": os.environ["PATH"], "LC_ALL": "C",
                              "PYTHONPATH": fake_torch(tmp_path / "site", summary)})
    assert out.returncode == 0, out.stderr
    done = records(out.stdout)[-1]
    assert (done["stage"], done["torch_version"], done["nnpack_available"]) == ("done", "0.0-stand-in", False)
    assert done["nnpack_built"] is built


def test_probe_runs_by_hand_from_module_utils(tmp_path):
    """`PYTHON nnpack_probe.py --evidence-only` in module_utils finds its neighbours through the symlinks."""
    out = subprocess.run([str(VENV_PYTHON), "-B", str(MODULE_UTILS / "nnpack_probe.py"), "--evidence-only"],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                         env={"PATH": os.environ["PATH"], "LC_ALL": "C"})
    assert out.returncode == 0, out.stderr
    assert records(out.stdout)[-1]["stage"] == "evidence"
    assert Path(MODULE_UTILS / "nnpack_probe.py").exists()
