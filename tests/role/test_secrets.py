"""Credentials stay out of pip's argv, -v/--diff output and the release id (issue #16).

These run the role's own step files on localhost: read_host.yml (the release id), pip_install.yml (with a
stand-in for the venv's python, which records what pip would get), configure.yml and
secret_env.yml (writing only into tmp_path).
"""
import json
import os
import stat
import subprocess
import sys
import sysconfig

import yaml

from conftest import ROLE, VARS_PLAY, decided

TOKEN = "s3cr3t-T0KEN-4711"


def test_release_id_is_the_same_for_index_urls_that_differ_only_in_credentials(playbook):
    urls = ["https://alice:" + TOKEN + "@pypi.example.org/simple", "https://bob:other@pypi.example.org/simple",
            "https://pypi.example.org/simple", "https://alice:" + TOKEN + "@mirror.example.org/simple"]
    ids = []
    for url in urls:
        result = playbook(VARS_PLAY + f"""    - name: Work out the release id
      ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/read_host.yml
    - name: Print it
      ansible.builtin.debug:
        msg: "RELEASE_ID={{{{ _pytorch_backend_release_id }}}}"
""", extra_vars={"pytorch_backend_wheelhouse": "", "pytorch_backend_torch_index_url": url,
                 "pytorch_backend_extra_index_url": url})
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-3000:]
        ids.append(out.split("RELEASE_ID=")[1][:12])
        assert TOKEN not in out
    assert ids[0] == ids[1] == ids[2], ids
    # another host is another index: the id must still tell them apart
    assert ids[3] != ids[0], ids


FAKE_PYTHON = """#!{python}
# Stand-in for the venv's python: records its argv, the environment pip would see and
# the venv's pip.conf (pip's "site" file), instead of running pip.
import json, os, stat, sys
venv = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
conf = os.path.join(venv, "pip.conf")
record = {{"argv": sys.argv[1:], "env": dict(os.environ),
          "conf": open(conf).read() if os.path.exists(conf) else None,
          "conf_mode": oct(stat.S_IMODE(os.stat(conf).st_mode)) if os.path.exists(conf) else None}}
with open(os.path.join(venv, "calls.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\\n")
"""


def test_pip_gets_index_credentials_from_a_root_only_file_never_argv_or_output_mocked_pip(playbook, tmp_path):
    release = tmp_path / "release"
    (release / "venv" / "bin").mkdir(parents=True)
    python = release / "venv" / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    torch_index = "https://ci:" + TOKEN + "@download.example.org/whl/cpu"
    extra_index = "https://" + TOKEN + "@mirror.example.org/simple"
    result = playbook(VARS_PLAY + f"""    - name: Install the requirements as install.yml does
      vars:
        _pb_pip_indexes: "{{{{ _pytorch_backend_pip_indexes.requirements }}}}"
        _pb_pip_args: "{{{{ _pytorch_backend_requirements }}}}"
      ansible.builtin.include_tasks: {ROLE}/tasks/steps/pip_install.yml
    - name: Install the service package as install.yml does
      vars:
        _pb_pip_indexes: "{{{{ _pytorch_backend_pip_indexes.service }}}}"
        _pb_pip_args: ["--no-deps", "{{{{ _pytorch_backend_release }}}}/src"]
      ansible.builtin.include_tasks: {ROLE}/tasks/steps/pip_install.yml
""", extra_vars={"pytorch_backend_wheelhouse": "", "_pytorch_backend_release": str(release),
                 "_pytorch_backend_host_python": "3.11",
                 "pytorch_backend_torch_index_url": torch_index, "pytorch_backend_extra_index_url": extra_index,
                 "pytorch_backend_environment": {"https_proxy": "http://proxy.example.org:3128", "no_proxy": "localhost"}},
        args=["-v", "--diff"])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    calls = [json.loads(line) for line in (release / "venv" / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 2
    requirements, service = calls
    for call in calls:
        assert TOKEN not in " ".join(call["argv"])
        assert not any(TOKEN in value for value in call["env"].values())
        assert call["argv"][:2] == ["-m", "pip"] and "install" in call["argv"]
        # the proxy reaches pip (become would have reset the controller's environment)
        assert call["env"]["https_proxy"] == "http://proxy.example.org:3128" and call["env"]["no_proxy"] == "localhost"
        assert call["conf_mode"] == "0o600"
    # pip still gets the indexes, credentials included, from its own config file
    assert requirements["conf"] == f"[global]\nextra-index-url = {extra_index}\nindex-url = {torch_index}\n"
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["pytorch_backend_requirement_sets"]["3.11"]
    assert "torch==2.13.0" in defaults and requirements["argv"][-len(defaults):] == defaults
    assert service["conf"] == f"[global]\nindex-url = {extra_index}\n"
    # nothing of them is left behind, and -v/--diff printed none of them
    assert not (release / "venv" / "pip.conf").exists()
    assert TOKEN not in out, [line for line in out.splitlines() if TOKEN in line]
    assert "download.example.org" not in out


def test_real_pip_reads_the_indexes_from_the_venvs_pip_conf_and_prints_no_credentials(playbook, tmp_path):
    """The real pip (the controller's, in a venv of its own) against indexes that refuse connections:
    it fails, and its output, -v and the error included, shows the index but never the token."""
    venv = tmp_path / "release" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # pip itself from the controller's environment; sys.prefix (where pip reads pip.conf) is the release's venv
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "controller_pip.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    torch_index = "http://ci:" + TOKEN + "@127.0.0.1:9/simple"
    extra_index = "http://" + TOKEN + "@127.0.0.1:9/extra"
    result = playbook(VARS_PLAY + f"""    - name: Install the requirements as install.yml does
      vars:
        _pb_pip_indexes: "{{{{ _pytorch_backend_pip_indexes.requirements }}}}"
        _pb_pip_args: ["no-such-package-for-the-secrets-test==1.0"]
      ansible.builtin.include_tasks: {ROLE}/tasks/steps/pip_install.yml
""", extra_vars={"pytorch_backend_wheelhouse": "", "_pytorch_backend_release": str(venv.parent),
                 "pytorch_backend_torch_index_url": torch_index, "pytorch_backend_extra_index_url": extra_index,
                 # through pytorch_backend_environment: no retries against the closed port
                 "pytorch_backend_environment": {"PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
                                                 "https_proxy": "http://u:" + TOKEN + "@127.0.0.1:9"}},
        args=["-v", "--diff"])
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    # pip looked in both indexes from pip.conf (it prints them with the credentials masked)
    assert "Looking in indexes: http://ci:****@127.0.0.1:9/simple, http://****@127.0.0.1:9/extra" in out, out[-3000:]
    assert "No matching distribution found for no-such-package-for-the-secrets-test" in out, out[-3000:]
    assert TOKEN not in out, [line for line in out.splitlines() if TOKEN in line]
    assert not (venv / "pip.conf").exists()


def test_pip_from_a_wheelhouse_gets_no_index_config_mocked_pip(playbook, tmp_path):
    release = tmp_path / "release"
    (release / "venv" / "bin").mkdir(parents=True)
    python = release / "venv" / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    result = playbook(VARS_PLAY + f"""    - name: Install the requirements from the wheelhouse
      vars:
        _pb_pip_indexes: "{{{{ _pytorch_backend_pip_indexes.requirements }}}}"
        _pb_pip_args: "{{{{ _pytorch_backend_requirements }}}}"
      ansible.builtin.include_tasks: {ROLE}/tasks/steps/pip_install.yml
""", extra_vars={"pytorch_backend_wheelhouse": str(tmp_path), "_pytorch_backend_release": str(release),
                 "_pytorch_backend_host_python": "3.11"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (call,) = [json.loads(line) for line in (release / "venv" / "calls.jsonl").read_text().splitlines()]
    assert call["conf"] is None
    assert call["argv"][5:8] == ["--no-index", "--find-links", "/var/cache/torch-backend/wheelhouse"]


SECRET_TASKS = """    - name: Render as the role does
      ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/configure.yml
    - name: Write the secret file as switch.yml does
      when: "'secret' in _pytorch_backend_files_changed"
      vars:
        _pb_secret_step: write
      ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/secret_env.yml
    - name: Say what changed
      ansible.builtin.debug:
        msg: "FILES_CHANGED={{ _pytorch_backend_files_changed | to_json }}"
"""


WRITE_WHEN = "when: \"'secret' in _pytorch_backend_files_changed\""
assert WRITE_WHEN in SECRET_TASKS
RESTORE_TASKS = """    - name: Put the secret file back as restore.yml does
      vars:
        _pb_secret_step: restore
      ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/secret_env.yml
"""


def run_secret_play(playbook, tmp_path, secret_env, host_secret_keys, tasks=SECRET_TASKS):
    """configure.yml + secret_env.yml (or `tasks`) on localhost with -v --diff, files under tmp_path."""
    secret_file = tmp_path / "secret.env"
    nothing = {"signature": "", "content": ""}
    host = {"current": "", "complete_releases": ["r1"], "files": {"env": nothing, "record": nothing, "unit": nothing}, "dirs": True,
            "secret": secret_file.exists(), "secret_keys": host_secret_keys.split()}
    facts = {"status": "supported", "available": True, "predicted_available": True, "cpu_model": "Test CPU",
             "fingerprint": "abcd", "torch_cpu_capability": "AVX2", "reason": "test",
             "cpu_flags": {"avx2": True, "fma": True}, "cache_enumerated": True}
    result = playbook(VARS_PLAY + tasks, extra_vars={
        "_pytorch_backend_probe": decided(facts), "_pytorch_backend_host": host,
        "_pytorch_backend_release": "/opt/torch-backend/releases/r1", "_pytorch_backend_release_id": "r1",
        "pytorch_backend_env_file": str(tmp_path / "torch-backend.env"),
        "pytorch_backend_secret_env_file": str(secret_file), "pytorch_backend_secret_env": secret_env,
        "pytorch_backend_extra_env": {"PLAIN": "visible"}}, args=["-v", "--diff"])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # the callback wraps long messages: compare with whitespace collapsed
    return " ".join(out.split()), out.split("FILES_CHANGED=")[1].split("\n")[0]


def test_secret_env_values_stay_out_of_diff_and_verbose_output_and_are_kept_for_rollback(playbook, tmp_path):
    secret_file = tmp_path / "secret.env"
    out, changed = run_secret_play(playbook, tmp_path, {"API_TOKEN": TOKEN, "DB_PASSWORD": "pw-" + TOKEN}, "")
    assert TOKEN not in out, [line for line in out.splitlines() if TOKEN in line]
    assert "secret" in changed
    assert "keys added API_TOKEN, DB_PASSWORD; removed none; kept none" in out
    lines = secret_file.read_text().splitlines()
    assert f'API_TOKEN="{TOKEN}"' in lines and f'DB_PASSWORD="pw-{TOKEN}"' in lines
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    # the plain environment file (its diff is shown) holds no secret
    assert TOKEN not in "".join(line for line in out.splitlines() if "TORCH_BACKEND" in line)

    # the same values again: nothing to write, no restart reason
    out, changed = run_secret_play(playbook, tmp_path, {"API_TOKEN": TOKEN, "DB_PASSWORD": "pw-" + TOKEN},
                                   "API_TOKEN DB_PASSWORD ")
    assert "secret" not in changed and TOKEN not in out

    # a rotated token: changed, only key names shown, the old file kept on the host for rollback
    out, changed = run_secret_play(playbook, tmp_path, {"API_TOKEN": "rotated-" + TOKEN}, "API_TOKEN DB_PASSWORD ")
    assert "secret" in changed and TOKEN not in out
    assert "keys added none; removed DB_PASSWORD; kept API_TOKEN" in out
    assert f'API_TOKEN="rotated-{TOKEN}"' in secret_file.read_text().splitlines()
    previous = tmp_path / "secret.env.previous"
    assert f'API_TOKEN="{TOKEN}"' in previous.read_text().splitlines()
    assert stat.S_IMODE(os.stat(previous).st_mode) == 0o600

    # no secrets any more: the file goes
    out, changed = run_secret_play(playbook, tmp_path, {}, "API_TOKEN ")
    assert "secret" in changed and not secret_file.exists()


def test_a_rollback_puts_back_the_secret_file_this_run_replaced_and_nothing_else(playbook, tmp_path):
    secret_file, previous = tmp_path / "secret.env", tmp_path / "secret.env.previous"
    run_secret_play(playbook, tmp_path, {"API_TOKEN": TOKEN}, "")
    # a rotation that fails after the write: the host's file comes back, values never printed
    out, changed = run_secret_play(playbook, tmp_path, {"API_TOKEN": "rotated-" + TOKEN}, "API_TOKEN ",
                                   tasks=SECRET_TASKS + RESTORE_TASKS)
    assert "secret" in changed and TOKEN not in out
    assert f'API_TOKEN="{TOKEN}"' in secret_file.read_text().splitlines() and not previous.exists()

    # a rotation that fails before the write step ran: the host's file stays as it was, and a
    # .previous an earlier cut run left is not put in its place
    previous.write_text('API_TOKEN="stale"\n')
    before = secret_file.read_text()
    out, changed = run_secret_play(playbook, tmp_path, {"API_TOKEN": "rotated-" + TOKEN}, "API_TOKEN ",
                                   tasks=SECRET_TASKS.replace(WRITE_WHEN, "when: false") + RESTORE_TASKS)
    assert "secret" in changed and TOKEN not in out
    assert secret_file.read_text() == before

    # a first secret that fails: the new file goes
    secret_file.unlink()
    previous.unlink()
    out, changed = run_secret_play(playbook, tmp_path, {"API_TOKEN": TOKEN}, "", tasks=SECRET_TASKS + RESTORE_TASKS)
    assert "secret" in changed and not secret_file.exists() and TOKEN not in out
