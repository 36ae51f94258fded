"""Variable resolution per platform: which Python each supported distribution brings, and
whether the role accepts it with a wheelhouse (cp311 wheels) or with the package index.

The distributions' interpreters are stood in for by fake `python3` scripts that report
their version (3.11 Debian 12, 3.10 Ubuntu 22.04, 3.12 Ubuntu 24.04): only Debian 12 runs
here. The role's real install tasks run against localhost in check mode.
"""
import pytest

from conftest import ROOT

WHEELHOUSE = ROOT / ".cache" / "wheelhouse"

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/install.yml
"""

PLATFORMS = {"debian12": "311", "ubuntu2204": "310", "ubuntu2404": "312"}


def fake_python(tmp_path, version):
    script = tmp_path / f"python{version}"
    script.write_text('#!/bin/sh\ncase "$2" in *version_info*) echo %s ;; *) exit 0 ;; esac\n' % version)
    script.chmod(0o755)
    return str(script)


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
    if source == "wheelhouse" and version != "311":
        assert result.returncode != 0, out[-2000:]
        assert f"is Python {version[0]}.{version[1:]}" in out and "pytorch_backend_wheelhouse" in out, out[-2000:]
    else:
        assert result.returncode == 0, out[-3000:]
        assert "would build release" in out
