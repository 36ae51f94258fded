"""playbooks/remove.yml's removal of files is idempotent: a second run reports changed=0.

Runs the role's own tasks/steps/remove_files.yml against localhost, with every path the role
removes moved under tmp_path (so nothing real is deleted; the unit path is fixed, and this
machine has none). systemd is not running here, so the `Reload systemd` handler is a
stand-in; the systemd part of remove.yml (stop, disable) is checked on a guest by
molecule/shared/remove_clean.yml.
"""
import re

import pytest

from conftest import ROLE

UNIT = "/etc/systemd/system/torch-backend.service"

PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - ROLE/defaults/main.yml
    - ROLE/vars/main.yml
  tasks:
    - name: Remove as the role does (its own remove_files.yml)
      ansible.builtin.include_tasks: ROLE/tasks/steps/remove_files.yml
  handlers:
    - name: Reload systemd
      ansible.builtin.debug:
        msg: stand-in for systemd's daemon-reload, which needs a running systemd
""".replace("ROLE", str(ROLE))


def paths(tmp_path):
    etc = tmp_path / "etc" / "torch-backend"
    return {
        "pytorch_backend_env_file": str(etc / "torch-backend.env"),
        "pytorch_backend_secret_env_file": str(etc / "secret.env"),
        "pytorch_backend_cpu_record_file": str(tmp_path / "var" / "cpu-record.json"),
        "pytorch_backend_base_dir": str(tmp_path / "opt" / "torch-backend"),
        "pytorch_backend_wheelhouse_dir": str(tmp_path / "cache" / "wheelhouse"),
        "_pytorch_backend_fact_file": str(tmp_path / "facts.d" / "torch_backend.fact"),
        "_pytorch_backend_candidate_unit": str(tmp_path / "run" / "torch-backend-candidate.service"),
        "_pytorch_backend_candidate_dir": str(tmp_path / "run" / "torch-backend-candidate"),
    }


def deployed(tmp_path, extra_in_config_dir=False):
    """What a deploy leaves (in miniature), plus perhaps a file of someone else's in /etc/torch-backend."""
    v = paths(tmp_path)
    for key in ("pytorch_backend_env_file", "pytorch_backend_secret_env_file", "pytorch_backend_cpu_record_file",
                "_pytorch_backend_fact_file"):
        p = tmp_path.joinpath(v[key])
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x\n")
    (tmp_path / "etc" / "torch-backend" / "account-created.json").write_text("{}\n")
    # the secret file a run cut before its verification leaves beside the new one
    (tmp_path / "etc" / "torch-backend" / "secret.env.previous").write_text("x\n")
    for key in ("pytorch_backend_base_dir", "pytorch_backend_wheelhouse_dir"):
        d = tmp_path.joinpath(v[key])
        (d / "releases" / "abc").mkdir(parents=True)
        (d / "releases" / "abc" / "f").write_text("x\n")
    if extra_in_config_dir:
        (tmp_path / "etc" / "torch-backend" / "site.conf").write_text("the owner's\n")
    return v


def recap(out):
    m = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", out)
    assert m, out[-3000:]
    return {"ok": int(m.group(1)), "changed": int(m.group(2)), "failed": int(m.group(3))}


@pytest.fixture(autouse=True)
def no_real_unit():
    import os
    if os.path.exists(UNIT):
        pytest.skip(f"{UNIT} exists on this machine; the removal would delete it")


@pytest.mark.parametrize("extra", [False, True], ids=["config-dir-only-ours", "config-dir-shared"])
def test_second_removal_changes_nothing_with_stand_in_systemd(playbook, tmp_path, extra):
    v = deployed(tmp_path, extra_in_config_dir=extra)
    config_dir = tmp_path / "etc" / "torch-backend"

    first = playbook(PLAY, extra_vars=v)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    assert recap(out)["changed"] >= 1, out[-3000:]
    for key in ("pytorch_backend_env_file", "pytorch_backend_secret_env_file", "pytorch_backend_cpu_record_file",
                "_pytorch_backend_fact_file", "pytorch_backend_base_dir", "pytorch_backend_wheelhouse_dir"):
        assert not tmp_path.joinpath(v[key]).exists(), key
    # a directory shared with someone else's file stays, with that file; one holding only ours goes
    assert config_dir.exists() == extra
    if extra:
        assert sorted(p.name for p in config_dir.iterdir()) == ["site.conf"]

    second = playbook(PLAY, extra_vars=v)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert recap(out)["changed"] == 0, out[-3000:]
    assert "[WARNING]" not in out, out[-3000:]
    assert config_dir.exists() == extra


def test_check_run_predicts_the_directory_removal(playbook, tmp_path):
    """--check says the directory would go (its files would go first), and removes nothing."""
    v = deployed(tmp_path)
    checked = playbook(PLAY, extra_vars=v, check=True)
    out = checked.stdout + checked.stderr
    assert checked.returncode == 0, out[-3000:]
    assert tmp_path.joinpath(v["pytorch_backend_env_file"]).exists()
    real = playbook(PLAY, extra_vars=v)
    out_real = real.stdout + real.stderr
    assert real.returncode == 0, out_real[-3000:]
    assert recap(out)["changed"] == recap(out_real)["changed"], (out[-2000:], out_real[-2000:])
    assert not (tmp_path / "etc" / "torch-backend").exists()
