"""The role's modules document themselves in a way ansible-doc renders."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROLE

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("module", ["nnpack_facts", "torch_backend_verify"])
def test_ansible_doc_renders(module):
    out = subprocess.run([str(BIN / "ansible-doc"), "-M", str(ROLE / "library"), module],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OPTIONS" in out.stdout and "RETURN VALUES" in out.stdout and "EXAMPLES" in out.stdout
    assert "[WARNING]" not in out.stderr, out.stderr


def test_role_argument_spec_renders():
    out = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "-r", str(ROLE.parent), "pytorch_backend"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pytorch_backend_env_file" in out.stdout
