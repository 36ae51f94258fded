"""torch_backend_host run for real (as Ansible runs a module) against host layouts built in a temp dir.

Everything is real here but systemd, which is not PID 1 on this machine: the tests that need a unit
state use a stand-in systemctl script (named `stand_in`); the others run the real systemctl, which
fails here, as it does on a host without the unit's manager. The service's /v2 is a real HTTP server
on loopback.
"""
import base64
import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nnpack_facts_helpers import (LIBRARY, VENV_PYTHON, assert_options_documented, import_module_utils, module_docs,
                                  run_module, write_fake_interpreter)

MODULE = LIBRARY / "torch_backend_host.py"
KEYS = {"current", "previous", "complete_releases", "python_version", "distribution", "cpu_fingerprint", "user", "group", "account_marker", "dirs", "enabled", "active",
        "need_reload", "venv", "wheels", "mem_available_mb", "digest", "files", "secret", "secret_keys",
        "secret_newer", "served", "served_release", "served_digest", "units"}
MISSING = {"signature": "", "content": ""}

ENV_TEXT = "TORCH_BACKEND_PORT=8080\nUSE_NNPACK=0\nTORCH_BACKEND_CONFIG_DIGEST=0123456789abcdef\n"
RECORD_TEXT = '{\n    "fingerprint": "305b35c0b213a2bb",\n    "use_nnpack": "0"\n}\n'
UNIT_TEXT = "[Service]\nExecStart=/opt/torch-backend/current/venv/bin/torch-backend serve\n"


def build(root, spec):
    """A host under `root` as `spec` describes it; returns the module's arguments for it.

    spec keys: releases (names), complete (names with .complete), links ({name: release}),
    dirs (False: no etc/secret dirs), fact ('record', 'other' or None), env/record/unit/secret
    (file texts, None: absent), wheels ({name: size}), marker (bool), user, group, python.
    """
    base, etc, secret_dir = root / "opt", root / "etc", root / "secret"
    (base / "releases").mkdir(parents=True)
    for name in spec.get("releases", []):
        (base / "releases" / name).mkdir()
    for name in spec.get("complete", []):
        (base / "releases" / name / ".complete").write_text("")
    for link, target in spec.get("links", {}).items():
        os.symlink(str(base / "releases" / target), str(base / link))
    if spec.get("dirs", True):
        etc.mkdir()
        secret_dir.mkdir()
    args = {
        "base_dir": str(base),
        "user": spec.get("user", "root"),
        "group": spec.get("group", "root"),
        "account_marker": str(etc / "account-created.json"),
        "env_file": str(etc / "torch-backend.env"),
        "record_file": str(etc / "cpu-record.json"),
        "secret_env_file": str(secret_dir / "secret.env"),
        "fact_file": str(root / "facts.d" / "torch_backend.fact"),
        "unit": "torch-backend.service",
        "unit_path": str(root / "torch-backend.service"),
        "python": spec.get("python", str(VENV_PYTHON)),
        "wheelhouse_dir": str(root / "wheelhouse"),
    }
    fact = spec.get("fact")
    if fact:
        (root / "facts.d").mkdir()
        os.symlink(args["record_file"] if fact == "record" else str(root / "elsewhere.json"), args["fact_file"])
    if spec.get("marker") and spec.get("dirs", True):
        Path(args["account_marker"]).write_text("{}\n")
    for key, arg in (("env", "env_file"), ("record", "record_file"), ("unit", "unit_path"),
                     ("secret", "secret_env_file")):
        if spec.get(key) is not None and os.path.isdir(os.path.dirname(args[arg])):
            Path(args[arg]).write_text(spec[key])
    if "wheels" in spec:
        (root / "wheelhouse").mkdir()
        for name, size in spec["wheels"].items():
            (root / "wheelhouse" / name).write_bytes(b"w" * size)
    return args


def host(tmp_path, args, **kwargs):
    run = run_module(tmp_path, args, module=MODULE, **kwargs)
    assert run.rc == 0, (run.stdout, run.stderr)
    assert run.result["changed"] is False
    return run.result["host"]


def file_state(text, owner="root:root", mode="644"):
    data = text.encode()
    return {"signature": "%s %s:%s" % (hashlib.sha1(data).hexdigest(), owner, mode),
            "content": base64.b64encode(data).decode()}


DEPLOYED = {
    "releases": ["r1", "r2"], "complete": ["r1", "r2"], "links": {"current": "r2", "previous": "r1"},
    "fact": "record", "env": ENV_TEXT, "record": RECORD_TEXT, "unit": UNIT_TEXT,
    "secret": "API_TOKEN=s3cret\nlower=no\n# COMMENT=no\nexport NOPE=1\n9BAD=x\nDB_PASS_2=x=y\n",
    "wheels": {"numpy-2.3.4-cp311-cp311-manylinux_2_27_x86_64.whl": 17, "torch-2.13.0+cpu-cp311.whl": 5},
    "marker": True,
}

# (id, layout, expected values; files as {key: text} of the files written, missing ones absent)
LAYOUTS = [
    ("fresh host: nothing there", {"dirs": False, "user": "no-such-user-pb", "group": "no-such-group-pb"},
     {"current": "", "previous": "", "complete_releases": [], "user": False, "group": False, "account_marker": False,
      "dirs": False, "wheels": [], "digest": "", "files": {}, "secret": False, "secret_keys": []}),
    ("deployed host", DEPLOYED,
     {"current": "@opt/releases/r2", "previous": "@opt/releases/r1", "complete_releases": ["r1", "r2"], "user": True, "group": True,
      "account_marker": True, "dirs": True, "digest": "0123456789abcdef",
      "wheels": ["numpy-2.3.4-cp311-cp311-manylinux_2_27_x86_64.whl:17", "torch-2.13.0+cpu-cp311.whl:5"],
      "files": {"env": ENV_TEXT, "record": RECORD_TEXT, "unit": UNIT_TEXT},
      "secret": True, "secret_keys": ["API_TOKEN", "DB_PASS_2"]}),
    ("a release without its marker is not complete", dict(DEPLOYED, releases=["r1", "r2", "r3"]),
     {"complete_releases": ["r1", "r2"], "current": "@opt/releases/r2"}),
    ("fact link points elsewhere", dict(DEPLOYED, fact="other"), {"dirs": False}),
    ("no fact link", dict(DEPLOYED, fact=None), {"dirs": False}),
    ("no account marker, no secret file", dict(DEPLOYED, marker=False, secret=None),
     {"account_marker": False, "secret": False, "secret_keys": [], "dirs": True}),
    ("empty secret file", dict(DEPLOYED, secret=""), {"secret": True, "secret_keys": []}),
    ("digest: the first uncommented line, CR dropped",
     dict(DEPLOYED, env="# TORCH_BACKEND_CONFIG_DIGEST=no\nTORCH_BACKEND_CONFIG_DIGEST=aa\r\n"
                        "TORCH_BACKEND_CONFIG_DIGEST=bb\n"),
     {"digest": "aa"}),
    ("env file without a digest", dict(DEPLOYED, env="USE_NNPACK=0\n"), {"digest": ""}),
    ("wheelhouse: *.whl directly in it only",
     dict(DEPLOYED, wheels={"a.whl": 3, "b.tar.gz": 4, ".hidden.whl": 1, "empty.whl": 0}),
     {"wheels": [".hidden.whl:1", "a.whl:3", "empty.whl:0"]}),
    ("no wheelhouse", {k: v for k, v in DEPLOYED.items() if k != "wheels"}, {"wheels": []}),
    ("unit file only", {"unit": UNIT_TEXT, "dirs": False}, {"files": {"unit": UNIT_TEXT}}),
]


@pytest.mark.parametrize("name,spec,expected", LAYOUTS, ids=[row[0] for row in LAYOUTS])
def test_host_layouts(tmp_path, name, spec, expected):
    args = build(tmp_path, spec)
    got = host(tmp_path, args)
    assert set(got) == KEYS
    for key, want in expected.items():
        if key == "files":
            want = {k: file_state(want[k]) if k in want else MISSING for k in ("env", "record", "unit")}
        elif isinstance(want, str) and want.startswith("@"):
            want = str(tmp_path / want[1:])
        assert got[key] == want, key


def test_values_are_typed(tmp_path):
    got = host(tmp_path, build(tmp_path, DEPLOYED))
    kinds = {"str": str, "bool": bool, "list": list, "int": int, "dict": dict}
    doc = module_docs(MODULE)["RETURN"]["host"]["contains"]
    assert set(doc) == KEYS
    for key, entry in doc.items():
        assert isinstance(got[key], kinds[entry["type"]]), (key, got[key])
    assert all(isinstance(v, str) for v in got["wheels"] + got["secret_keys"])
    assert all(set(f) == {"signature", "content"} for f in got["files"].values())


def test_no_systemd_here_reads_as_nothing(tmp_path):
    """The real systemctl, which cannot reach systemd on this machine (as on a host without it)."""
    got = host(tmp_path, build(tmp_path, DEPLOYED))
    assert (got["enabled"], got["active"], got["need_reload"]) == ("", "", False)
    assert (got["served"], got["secret_newer"]) == (False, False)
    missing = host(tmp_path, dict(build(tmp_path / "x", DEPLOYED), systemctl=str(tmp_path / "no-systemctl")))
    assert (missing["enabled"], missing["active"], missing["need_reload"]) == ("", "", False)


def test_venv(tmp_path):
    args = build(tmp_path, DEPLOYED)
    assert host(tmp_path, args)["venv"] is True
    no_venv = write_fake_interpreter(tmp_path, "python-without-venv", 'exit 1')
    assert host(tmp_path, dict(args, python=no_venv))["venv"] is False
    assert host(tmp_path, dict(args, python=str(tmp_path / "no-python")))["venv"] is False


def test_python_version_read_in_the_same_run_as_the_venv_check(tmp_path):
    args = build(tmp_path, DEPLOYED)
    real = subprocess.run([str(VENV_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    got = host(tmp_path, args)
    assert (got["python_version"], got["venv"]) == (real, True)
    # a Python without venv still says its version, which chooses the requirement set
    no_venv = write_fake_interpreter(tmp_path, "python-3.13-without-venv", "echo python=3.13; exit 1")
    got = host(tmp_path, dict(args, python=no_venv))
    assert (got["python_version"], got["venv"]) == ("3.13", False)
    got = host(tmp_path, dict(args, python=str(tmp_path / "no-python")))
    assert (got["python_version"], got["venv"]) == ("", False)
    garbage = write_fake_interpreter(tmp_path, "python-garbage", "echo python=three; echo 3.11")
    assert host(tmp_path, dict(args, python=garbage))["python_version"] == ""


def test_cpu_fingerprint_is_the_one_the_probe_and_the_drift_guard_compute(tmp_path):
    """Only when asked: a child process of the module's interpreter, the probe's evidence code."""
    cpu_identity = import_module_utils("cpu_identity")
    args = build(tmp_path, DEPLOYED)
    assert host(tmp_path, args)["cpu_fingerprint"] == ""
    expected = cpu_identity.fingerprint(cpu_identity.gather())[0]
    assert host(tmp_path, dict(args, cpu_fingerprint=True))["cpu_fingerprint"] == expected


# What read_host.yml ran before the host read took the distribution's packages over (a raw
# shell step): the module must give the same lines, since the release id hashes them.
OLD_DISTRIBUTION_READ = r"""
export LC_ALL=C
pkgs="$1"
for p in $pkgs; do
  dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' && echo "installed=$p"
done
{ printf '%s
' $pkgs
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances     $pkgs 2>/dev/null | grep -E '^(python3-|libtorch)'
} | sort -u | xargs -r apt-cache policy 2>/dev/null   | awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} $1 == "Installed:" {i = $2} $1 == "Candidate:" {print "deb=" p "=" (i == "(none)" ? $2 : i)}'
"""


def test_distribution_packages_read_as_the_shell_read_them_with_this_machines_apt(tmp_path):
    """The real dpkg and apt of this machine (Debian): python3-venv, which scripts/bootstrap installs,
    and a package apt does not know."""
    packages = ["python3-venv", "no-such-package-pb"]
    old = subprocess.run(["bash", "-c", OLD_DISTRIBUTION_READ, "read", " ".join(packages)],
                         capture_output=True, text=True).stdout.splitlines()
    got = host(tmp_path, dict(build(tmp_path, DEPLOYED), distribution_packages=packages))["distribution"]
    assert got["installed"] == [line[len("installed="):] for line in old if line.startswith("installed=")]
    assert got["versions"] == [line[len("deb="):] for line in old if line.startswith("deb=")]
    assert got["installed"] == ["python3-venv"] and any(v.startswith("python3-venv=") for v in got["versions"])
    assert host(tmp_path, build(tmp_path / "x", DEPLOYED))["distribution"] == {}


APT_POLICY = """python3-torch:
  Installed: (none)
  Candidate: 2.6.0+dfsg-7
  Version table:
     2.6.0+dfsg-7 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
python3-numpy:
  Installed: 1:2.2.4+ds-1
  Candidate: 1:2.2.4+ds-1
libtorch-gone:
  Installed: (none)
  Candidate: (none)
"""


def test_distribution_versions_installed_else_candidate_with_stand_in_apt(tmp_path):
    """Stand-in dpkg-query and apt-cache (named so): the Debian 13 packages this machine's apt has not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_interpreter(bin_dir, "dpkg-query", 'case "$4" in python3-numpy) printf "ii " ;; *) exit 1 ;; esac')
    (tmp_path / "policy.txt").write_text(APT_POLICY)
    write_fake_interpreter(bin_dir, "apt-cache", 'case "$1" in depends) printf "python3-torch\n  Depends: x\n'
                           'python3-numpy\n<python3:any>\nlibtorch-gone\nlibc6\n" ;;'
                           ' policy) echo "$@" > %s; cat %s ;; esac' % (tmp_path / "asked", tmp_path / "policy.txt"))
    env = {"PATH": "%s:%s" % (bin_dir, os.environ["PATH"])}
    run = run_module(tmp_path, dict(build(tmp_path, DEPLOYED), distribution_packages=["python3-torch", "python3-numpy"]),
                     module=MODULE, env=env)
    assert run.rc == 0, run.stderr
    got = run.result["host"]["distribution"]
    assert got == {"installed": ["python3-numpy"],
                   "versions": ["python3-torch=2.6.0+dfsg-7", "python3-numpy=1:2.2.4+ds-1", "libtorch-gone=(none)"]}
    # what apt is asked about: the packages and what they need of python3-* and libtorch*, sorted, once each
    assert (tmp_path / "asked").read_text().split() == ["policy", "libtorch-gone", "python3-numpy", "python3-torch"]


def test_secret_values_never_leave_the_host(tmp_path):
    run = run_module(tmp_path, build(tmp_path, DEPLOYED), module=MODULE)
    assert "s3cret" not in run.stdout + run.stderr
    assert run.result["host"]["secret_keys"] == ["API_TOKEN", "DB_PASS_2"]


def test_check_mode_reads_the_same(tmp_path):
    args = build(tmp_path, DEPLOYED)
    checked, run = host(tmp_path, args, check_mode=True), host(tmp_path, args)
    # the machine is shared: what memory is free moves between two runs
    checked.pop("mem_available_mb"), run.pop("mem_available_mb")
    assert checked == run


def test_memory_available(tmp_path):
    got = host(tmp_path, build(tmp_path, {"dirs": False}))["mem_available_mb"]
    kb = [int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
          if line.startswith("MemAvailable:")][0]
    assert isinstance(got, int) and got > 0
    # the machine is shared: what is free moves between the two reads
    assert abs(got - kb // 1024) < max(256, kb // 1024 // 10)


# --- the same values as the shell read the module replaces (tasks/steps/host_state.yml) --------

@pytest.mark.parametrize("meminfo", [
    "MemTotal:       16315200 kB\nMemFree:  1 kB\nMemAvailable:   12582911 kB\n",
    "MemAvailable:   1023 kB\n",
    "MemAvailable:   1048576 kB\n",
    "MemAvailable:   0 kB\n",
])
def test_memory_is_the_awk_read(tmp_path, meminfo):
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_backend_host_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "meminfo"
    path.write_text(meminfo)
    awk = sh("awk '/^MemAvailable:/ {print int($2 / 1024)}' \"$1\"", str(path))
    assert module.mem_available_mb(str(path)) == int(awk)



def sh(script, *args):
    return subprocess.run(["sh", "-c", script, "sh"] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"), check=True).stdout


@pytest.mark.parametrize("mode,group", [(0o640, "daemon"), (0o644, "root"), (0o600, "adm"), (0o4755, "root"),
                                        (0o1777, "bin")])
def test_signature_is_the_shell_reads(tmp_path, mode, group):
    args = build(tmp_path, DEPLOYED)
    os.chown(args["env_file"], 0, int(sh("getent group \"$1\" | cut -d: -f3", group)))
    os.chmod(args["env_file"], mode)
    shell = sh('echo "$(sha1sum "$1" 2>/dev/null | cut -c1-40) $(stat -c %U:%G:%a "$1" 2>/dev/null)"',
               args["env_file"]).rstrip("\n")
    content = sh('base64 -w0 "$1"', args["env_file"])
    got = host(tmp_path, args)["files"]["env"]
    assert got == {"signature": shell, "content": content}
    assert got["signature"].endswith(" root:%s:%o" % (group, mode))


def test_signature_matches_what_the_role_renders(tmp_path):
    """render.yml's formula for the env file: `{{ _pb_env | hash('sha1') }} root:GROUP:640`, with
    Ansible's own hash filter, on a text with non-ASCII characters."""
    from ansible.plugins.filter.core import FilterModule

    sha1 = FilterModule().filters()["hash"]
    text = ENV_TEXT + "TORCH_BACKEND_NOTE=caf\u00e9 \u2713\n"
    args = build(tmp_path, dict(DEPLOYED, env=text))
    os.chown(args["env_file"], 0, 1)  # the daemon group, as a pytorch_backend_group
    os.chmod(args["env_file"], 0o640)
    got = host(tmp_path, args)["files"]["env"]
    assert got["signature"] == "%s root:daemon:640" % sha1(text, "sha1")
    assert base64.b64decode(got["content"]).decode() == text


def test_wheels_and_digest_are_the_shell_reads(tmp_path):
    args = build(tmp_path, dict(DEPLOYED, wheels={"a.whl": 3, "b-1.0-py3-none-any.whl": 1024, "c.txt": 2,
                                                  ".d.whl": 0}))
    (tmp_path / "wheelhouse" / "sub").mkdir()
    (tmp_path / "wheelhouse" / "sub" / "deep.whl").write_text("x")
    got = host(tmp_path, args)
    shell = sh("find \"$1\" -maxdepth 1 -name '*.whl' -printf '%f:%s ' 2>/dev/null", args["wheelhouse_dir"])
    assert got["wheels"] == sorted(shell.split())
    assert got["digest"] == sh("sed -n 's/^TORCH_BACKEND_CONFIG_DIGEST=//p' \"$1\"", args["env_file"]).strip()


# --- the unit's state: a stand-in systemctl -----------------------------------------------------

STAND_IN = r"""#!/bin/sh
# systemctl for a machine without systemd: answers from the files beside it, logs its calls
d=$(dirname "$0")
echo "LC_ALL=$LC_ALL $*" >> "$d/calls"
case "$1" in
  is-enabled|is-active)
    # one word a unit, from WORD.UNIT beside it, else WORD; is-active: 0 when one is active
    word=${1#is-}; shift; rc=1
    for unit; do
      f="$d/$word.$unit"; [ -f "$f" ] || f="$d/$word"
      cat "$f"; [ "$(cat "$f")" = active ] && rc=0
    done
    [ "$word" = enabled ] || exit $rc ;;
  show)
    case "$*" in
      *NeedDaemonReload*) cat "$d/need_reload" ;;
      *--timestamp=unix*) [ -f "$d/old" ] && { echo "Unknown option --timestamp" >&2; exit 1; }; cat "$d/since" ;;
      *ActiveEnterTimestamp*) cat "$d/since_text" ;;
    esac ;;
esac
"""


@pytest.fixture
def systemctl(tmp_path):
    """A stand-in systemctl in its own directory; `set(name=value, ...)` sets its answers."""
    directory = tmp_path / "systemd"
    directory.mkdir()
    script = write_fake_interpreter(directory, "systemctl", STAND_IN.split("\n", 1)[1])

    def answer(**files):
        for name, text in files.items():
            if text is None:
                (directory / name).unlink()
            else:
                (directory / name).write_text(text + "\n")
    answer(enabled="enabled", active="active", need_reload="no", since="", since_text="")
    answer.path = script
    answer.calls = lambda: (directory / "calls").read_text().splitlines()
    return answer


def test_unit_state_stand_in(tmp_path, systemctl):
    args = dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path)
    got = host(tmp_path, args)
    assert (got["enabled"], got["active"], got["need_reload"]) == ("enabled", "active", False)
    systemctl(enabled="disabled", active="inactive", need_reload="yes")
    got = host(tmp_path, args)
    assert (got["enabled"], got["active"], got["need_reload"]) == ("disabled", "inactive", True)
    calls = systemctl.calls()
    assert calls and all(c.startswith("LC_ALL=C ") and c.endswith(" torch-backend.service") for c in calls)
    assert "LC_ALL=C show --property=NeedDaemonReload --value torch-backend.service" in calls


def test_more_units_stand_in(tmp_path, systemctl):
    args = dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path,
                units={"socket": "torch-backend.socket", "timer": "torch-backend-prune.timer"})
    (tmp_path / "torch-backend.socket").write_text("[Socket]\nListenStream=127.0.0.1:8080\n")
    systemctl(**{"active.torch-backend.socket": "active", "enabled.torch-backend.socket": "enabled",
                 "active.torch-backend-prune.timer": "inactive", "enabled.torch-backend-prune.timer": "disabled"})
    got = host(tmp_path, args)
    assert got["units"] == {"socket": {"active": "active", "enabled": "enabled"},
                            "timer": {"active": "inactive", "enabled": "disabled"}}
    assert got["files"]["socket"] == file_state("[Socket]\nListenStream=127.0.0.1:8080\n")
    assert got["files"]["timer"] == MISSING
    assert (got["active"], got["files"]["unit"]) == ("active", file_state(UNIT_TEXT))


def test_more_units_without_systemd(tmp_path):
    got = host(tmp_path, dict(build(tmp_path, DEPLOYED), units={"socket": "torch-backend.socket"}))
    assert got["units"] == {"socket": {"active": "", "enabled": ""}}
    assert set(got["files"]) == {"env", "record", "unit", "socket"}


SECRET_CASES = [
    # (id, seconds the secret file is newer than the start, unit active, systemd answers, expected)
    ("secret changed after the start", 100, "active", {"since": "@START"}, True),
    ("secret older than the start", -100, "active", {"since": "@START"}, False),
    ("same second", 0, "active", {"since": "@START"}, False),
    ("unit not active", 100, "inactive", {"since": "@START"}, False),
    ("start time unreadable", 100, "active", {"since": "n/a"}, False),
    ("start time empty (never started)", 100, "active", {"since": ""}, False),
    ("systemd before 251: a date, read by date(1)", 100, "active", {"old": "", "since_text": "DATE"}, True),
    ("systemd before 251: older secret", -100, "active", {"old": "", "since_text": "DATE"}, False),
    ("systemd before 251: no date", 100, "active", {"old": "", "since_text": ""}, False),
]


@pytest.mark.parametrize("name,offset,active,answers,expected", SECRET_CASES, ids=[c[0] for c in SECRET_CASES])
def test_secret_newer_stand_in(tmp_path, systemctl, name, offset, active, answers, expected):
    args = dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path)
    start = int(time.time()) - 1000
    os.utime(args["secret_env_file"], (start + offset, start + offset))
    date = time.strftime("%a %Y-%m-%d %H:%M:%S UTC", time.gmtime(start))
    systemctl(active=active, **{k: v.replace("START", str(start)).replace("DATE", date) for k, v in answers.items()})
    assert host(tmp_path, args)["secret_newer"] is expected


def test_no_secret_file_is_never_newer_stand_in(tmp_path, systemctl):
    args = dict(build(tmp_path, dict(DEPLOYED, secret=None)), systemctl=systemctl.path)
    systemctl(since="@%d" % (int(time.time()) - 1000))
    got = host(tmp_path, args)
    assert (got["secret"], got["secret_keys"], got["secret_newer"]) == (False, [], False)


# --- what the running service serves: a real HTTP server on loopback ------------------------------

@pytest.fixture
def service(tmp_path):
    """A loopback HTTP server of the files in a directory; `service.answer(text)` is what GET /v2
    returns (None: no /v2, so 404)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_request(self, *args):
            server.paths.append(self.path)

        def log_message(self, *args):
            pass

    def answer(text):
        if text is None:
            (root / "v2").unlink()
        else:
            (root / "v2").write_text(text)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.answer, server.paths = answer, []
    server.url = "http://127.0.0.1:%d" % server.server_address[1]
    answer("{}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


SERVED_CASES = [
    ("serving", {"release": "r2", "config_digest": "0123456789abcdef", "name": "x"}, (True, "r2", "0123456789abcdef")),
    ("serving without release or digest", {"release": None}, (True, "", "")),
    ("no /v2 (404)", None, (False, "", "")),
    ("not JSON", "<html>", (False, "", "")),
    ("JSON but no object", ["r2"], (False, "", "")),
]


@pytest.mark.parametrize("name,body,expected", SERVED_CASES, ids=[c[0] for c in SERVED_CASES])
def test_served_stand_in(tmp_path, systemctl, service, name, body, expected):
    service.answer(body if body is None or isinstance(body, str) else json.dumps(body))
    got = host(tmp_path, dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path, url=service.url))
    assert (got["served"], got["served_release"], got["served_digest"]) == expected
    assert service.paths == ["/v2"]


def test_inactive_unit_is_not_asked_stand_in(tmp_path, systemctl, service):
    systemctl(active="inactive")
    got = host(tmp_path, dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path, url=service.url))
    assert got["served"] is False and service.paths == []


def test_nothing_listening_stand_in(tmp_path, systemctl, service):
    url = service.url
    service.shutdown()
    service.server_close()
    got = host(tmp_path, dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path, url=url))
    assert (got["served"], got["served_release"], got["served_digest"]) == (False, "", "")


def test_a_proxy_in_the_environment_is_not_used_stand_in(tmp_path, systemctl, service):
    service.answer('{"release": "r2", "config_digest": "d"}')
    env = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    got = host(tmp_path, dict(build(tmp_path, DEPLOYED), systemctl=systemctl.path, url=service.url), env=env)
    assert got["served"] is True


# --- the documentation ------------------------------------------------------------------------------

def test_documented_options_match_argument_spec(monkeypatch):
    assert_options_documented(monkeypatch, MODULE)
