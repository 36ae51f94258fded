"""The role's refusal of a GPU build of torch (torch_backend/torch_build.py), run as the
role's compile step runs it: a separate interpreter that imports torch from its path."""

import subprocess
import sys

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
