"""The role's refusal of a GPU build of torch and its record of a venv's distributions
(torch_backend/torch_build.py), run as the role's compile step runs them: a separate
interpreter that imports torch from its path."""

import json
import platform
import subprocess
import sys
from importlib import metadata

from harness import PKG_DIR

CHECK = "import torch_backend.torch_build as b; b.require_cpu()"


def run_check(*path):
    env = {"PYTHONPATH": ":".join(str(p) for p in (*path, PKG_DIR)), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)


def test_the_cpu_wheel_passes():
    proc = run_check()
    assert proc.returncode == 0, proc.stderr


def test_a_cuda_build_is_refused_stand_in_torch(tmp_path):
    # Stand-in: PyPI's CUDA torch is gigabytes and must not be pulled here; what the check
    # reads is torch.version, which this package lays out as torch's own version.py does.
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import version\n__version__ = version.__version__\n")
    (pkg / "version.py").write_text("__version__ = '2.13.0'\ncuda = '12.8'\nhip = None\nxpu = None\n")
    proc = run_check(tmp_path)
    assert proc.returncode == 1
    assert "torch 2.13.0" in proc.stderr and "GPU build (cuda 12.8)" in proc.stderr
    assert "pytorch_backend_torch_index_url" in proc.stderr


def test_record_writes_the_python_and_every_distribution(tmp_path):
    out = tmp_path / "distributions.json"
    env = {"PYTHONPATH": str(PKG_DIR), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", "import sys, torch_backend.torch_build as b; b.record(sys.argv[1])",
                           str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads(out.read_text())
    assert recorded["python"] == platform.python_version()
    assert recorded["distributions"]["torch"] == metadata.version("torch")
    assert recorded["distributions"]["numpy"] == metadata.version("numpy")
    assert len(recorded["distributions"]) == len({d.metadata["Name"] for d in metadata.distributions()})
    assert oct(out.stat().st_mode & 0o777) == "0o644" and not (tmp_path / "distributions.json.tmp").exists()
