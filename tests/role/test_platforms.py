"""Variable resolution per platform: which Python each supported distribution brings, and
whether the role accepts it with a wheelhouse (cp311 wheels) or with the package index.

The distributions' interpreters are stood in for by fake `python3` scripts that report
their version (3.11 Debian 12, 3.13 Debian 13, 3.10 Ubuntu 22.04, 3.12 Ubuntu 24.04, and
Debian 11's 3.9, which no requirement set serves): only Debian 12 runs here. The role's real
host read and install tasks run against localhost in check mode.
"""
import pytest

from conftest import ROOT, fake_python

WHEELHOUSE = ROOT / ".cache" / "wheelhouse"

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/read_host.yml
    - ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/install.yml
"""

PLATFORMS = {"debian12": "3.11", "debian13": "3.13", "ubuntu2204": "3.10", "ubuntu2404": "3.12", "debian11": "3.9"}
# numpy differs: 2.3 and later need Python 3.11
NUMPY = {"3.10": "numpy==2.2.6", "3.11": "numpy==2.4.6", "3.12": "numpy==2.4.6", "3.13": "numpy==2.4.6"}


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("source", ["wheelhouse", "index"])
def test_platform_python_against_wheel_source_with_fake_interpreter(playbook, tmp_path, platform, source):
    assert any(WHEELHOUSE.glob("torch-*-cp311-*.whl")), "run scripts/bootstrap first"
    version = PLATFORMS[platform]
    extra = {"pytorch_backend_python": fake_python(tmp_path, version),
             "pytorch_backend_base_dir": str(tmp_path / "base"),
             "pytorch_backend_wheelhouse": str(WHEELHOUSE) if source == "wheelhouse" else ""}
    result = playbook(PLAY, extra_vars=extra, check=True)
    out = result.stdout + result.stderr
    if version not in NUMPY:
        # refused before the host is touched, naming the variable to change
        assert result.returncode != 0, out[-2000:]
        assert (f"is Python {version}, and pytorch_backend_requirement_sets has no set for it "
                f"(sets for Python 3.10, 3.11, 3.12, 3.13)") in " ".join(out.split()), out[-2000:]
        assert "Create the service account" not in out
    elif source == "wheelhouse" and version != "3.11":
        assert result.returncode != 0, out[-2000:]
        said = " ".join(out.split())
        # the wheels it lacks, torch first (no cp313 CPU torch here; 3.10 and 3.12 lack more)
        assert (f"is Python {version}, but pytorch_backend_wheelhouse holds no wheel for it of torch==2.13.0"
                in said), out[-2000:]
        assert "set pytorch_backend_torch_source: distribution" in said
        assert "Create the service account" not in out
    else:
        assert result.returncode == 0, out[-3000:]
        # the set for the host's Python, not the controller's
        assert "would build release" in out and NUMPY[version] in out, out[-3000:]


# The distribution's torch on Debian 13 (python3-torch): pip installs only the service's HTTP
# stack, from cp313 and pure-Python wheels. apt here (Debian 12) stands in for the host's: the
# package named must be one it knows, so python3-venv (which scripts/bootstrap installs).
@pytest.mark.parametrize("source", ["wheelhouse", "index"])
def test_distribution_torch_leaves_torch_and_its_dependencies_to_apt(playbook, tmp_path, source):
    extra = {"pytorch_backend_python": fake_python(tmp_path, "3.13"),
             "pytorch_backend_base_dir": str(tmp_path / "base"),
             "pytorch_backend_torch_source": "distribution",
             "pytorch_backend_distribution_packages": ["python3-venv"],
             "pytorch_backend_wheelhouse": str(WHEELHOUSE) if source == "wheelhouse" else ""}
    result = playbook(PLAY, extra_vars=extra, check=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    built = " ".join(out.split())
    assert "would build release" in built
    assert "uvicorn==0.39.0, h11==0.16.0, click==8.1.8, prometheus_client==0.26.0, orjson==3.11.5, service package" in built
    for provided in ("torch==", "numpy==", "sympy==", "typing_extensions=="):
        assert provided not in built.split("would build release")[1], out[-3000:]


def test_distribution_torch_refuses_a_package_apt_does_not_know(playbook, tmp_path):
    extra = {"pytorch_backend_python": fake_python(tmp_path, "3.13"),
             "pytorch_backend_base_dir": str(tmp_path / "base"),
             "pytorch_backend_torch_source": "distribution",
             "pytorch_backend_distribution_packages": ["python3-venv", "python3-no-such-torch"]}
    result = playbook(PLAY, extra_vars=extra, check=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-2000:]
    said = " ".join(out.split())
    assert ("pytorch_backend_torch_source is distribution, but apt on this host knows no python3-no-such-torch "
            "(Debian 13 packages torch 2.6 as python3-torch)") in said, out[-2000:]
    assert "Create the service account" not in out
