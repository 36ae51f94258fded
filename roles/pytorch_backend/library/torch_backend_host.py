#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: torch_backend_host
short_description: Read a torch-backend host's deployment state in one module launch
description:
  - Reads everything the pytorch_backend role needs to know about a host before it changes anything, in one
    launch (a module launch costs seconds on small VMs, and each is an SSH round trip); the C(current) and
    C(previous) release links, which releases are complete, the host Python's version and whether it can make
    virtualenvs, the versions of the distribution's torch packages, the service account, the directories, the
    systemd unit's state, the wheels already in the wheelhouse, the memory available, the managed files
    (signature and content), the secret file's key names, the CPU's fingerprint, and what the running service
    serves (C(GET /v2)).
  - Asking the running service what it serves lets a run cut between a switch and its restart be noticed by
    the next run.
  - Changes nothing, so it runs fully in check mode. Never fails for what it finds; every value is typed.
version_added: "1.0.0"
author:
  - pytorch_backend role maintainers (@pytorch-backend)
options:
  base_dir:
    description: The service's base directory, holding C(releases/) and the C(current) and C(previous) links.
    type: path
    required: true
  user:
    description: The service account's user name.
    type: str
    default: torch-backend
  group:
    description: The service account's group name.
    type: str
    default: torch-backend
  account_marker:
    description: The file the role writes when it created the account itself.
    type: path
    default: ''
  env_file:
    description: The service's environment file (its C(TORCH_BACKEND_CONFIG_DIGEST=) line is RV(host.digest)).
    type: path
    required: true
  record_file:
    description: The CPU record (C(cpu-record.json)).
    type: path
    required: true
  secret_env_file:
    description: The secret environment file; only its key names are read, never its values.
    type: path
    required: true
  fact_file:
    description: The Ansible local fact link, which must point at O(record_file) for RV(host.dirs).
    type: path
    required: true
  unit:
    description: The systemd service name.
    type: str
    default: torch-backend.service
  units:
    description:
      - More units of the service, by key (e.g. C(socket) for C(torch-backend.socket)); each unit file, in the
        directory of O(unit_path), is read as RV(host.files) reads the main unit's, under the same key, and the
        unit's state goes into RV(host.units). One C(systemctl is-active) and one C(is-enabled) ask for all.
    type: dict
    default: {}
  unit_path:
    description: The unit file; default C(/etc/systemd/system/) followed by O(unit).
    type: path
  python:
    description: The host Python the role makes virtualenvs with (RV(host.python_version), RV(host.venv)).
    type: path
    default: /usr/bin/python3
  distribution_packages:
    description:
      - The distribution's torch packages (for example C(python3-torch)) when torch comes from them; RV(host.distribution)
        then says which are installed and the version of each, and of the Python packages they need.
    type: list
    elements: str
    default: []
  cpu_fingerprint:
    description:
      - Whether to read the CPU's fingerprint (RV(host.cpu_fingerprint)), from an evidence-only child of the module's
        own interpreter (no C(torch); CPUID, C(/proc) and C(/sys), the code C(nnpack_facts) gathers evidence with).
    type: bool
    default: false
  wheelhouse_dir:
    description: The wheelhouse; its C(*.whl) are listed in RV(host.wheels).
    type: path
    default: ''
  url:
    description:
      - Base URL of the running service (for example C(http://127.0.0.1:8080)); C(/v2) is asked only while the
        unit is active. Empty, the service is never asked.
    type: str
    default: ''
  systemctl:
    description:
      - The systemctl command (a name looked up in E(PATH), or a path). Only for running the module where
        systemd is not PID 1, such as tests.
    type: str
    default: systemctl
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Commands run with C(LC_ALL=C) and as argument lists, never through a shell.
  - The managed files' RV(host.files) signatures are in the form the role computes for the files it would
    write, so that a file is rewritten only when its content, owner, group or mode differs.
requirements:
  - Python 3.8 or later on the target, systemd.
"""

EXAMPLES = r"""
- name: Read the deployment state on the host
  torch_backend_host:
    base_dir: /opt/torch-backend
    env_file: /etc/torch-backend/torch-backend.env
    record_file: /etc/torch-backend/cpu-record.json
    secret_env_file: /etc/torch-backend/secret.env
    fact_file: /etc/ansible/facts.d/torch_backend.fact
    account_marker: /etc/torch-backend/account-created.json
    wheelhouse_dir: /var/cache/torch-backend/wheelhouse
    url: http://127.0.0.1:8080
  register: state

- name: Restart a service that serves another release than current
  ansible.builtin.debug:
    msg: "{{ state.host.served_release }} is served, {{ state.host.current }} is current"
  when: state.host.served and state.host.served_release != state.host.current
"""

RETURN = r"""
host:
  description: The host's deployment state.
  returned: always
  type: complex
  contains:
    current:
      description: Target of O(base_dir)C(/current), V('') when there is none.
      type: str
      sample: /opt/torch-backend/releases/r42
    previous:
      description: Target of O(base_dir)C(/previous), V('') when there is none.
      type: str
    complete_releases:
      description: The names of the directories in O(base_dir)C(/releases) with a C(.complete) marker (fully installed), sorted.
      type: list
      elements: str
      sample: [3f2a9c0d41be, 8e1b77aa09c2]
    python_version:
      description: O(python)'s version as C(X.Y), V('') when it does not run.
      type: str
      sample: "3.11"
    distribution:
      description: With O(distribution_packages), the distribution's side of the release; V({}) without.
      type: dict
      contains:
        installed:
          description: The packages of O(distribution_packages) that dpkg has installed.
          type: list
          elements: str
        versions:
          description:
            - C(NAME=VERSION) of each package of O(distribution_packages) and of the C(python3-*) and C(libtorch*)
              packages they need (recursively), sorted by name; the installed version, else apt's candidate
              (what apt would install, C((none)) when apt has none).
          type: list
          elements: str
    cpu_fingerprint:
      description:
        - With O(cpu_fingerprint), the CPU's fingerprint as C(nnpack_facts) computes it (equal means the same CPU);
          V('') when not asked for or when no evidence could be gathered.
      type: str
      sample: 305b35c0b213a2bb
    user:
      description: O(user) exists (passwd database, as C(getent passwd)).
      type: bool
    group:
      description: O(group) exists (group database, as C(getent group)).
      type: bool
    account_marker:
      description: O(account_marker) exists.
      type: bool
    dirs:
      description:
        - O(base_dir)C(/releases) and the directories of O(env_file), O(record_file) and O(secret_env_file) exist,
          and O(fact_file) is a link to O(record_file).
      type: bool
    enabled:
      description: What C(systemctl is-enabled) prints for O(unit) (V(enabled), V(disabled), ...), V('') when it cannot run.
      type: str
    active:
      description: What C(systemctl is-active) prints for O(unit) (V(active), V(inactive), ...), V('') when it cannot run.
      type: str
    need_reload:
      description: systemd's C(NeedDaemonReload) of O(unit) is C(yes) (the unit file changed on disk).
      type: bool
    venv:
      description: O(python) can import C(ensurepip) and C(venv).
      type: bool
    wheels:
      description: C(NAME:SIZE) of each C(*.whl) directly in O(wheelhouse_dir), sorted.
      type: list
      elements: str
      sample: ["numpy-2.3.4-cp311-cp311-manylinux_2_27_x86_64.whl:16828976"]
    mem_available_mb:
      description: C(MemAvailable) of C(/proc/meminfo) in MiB (rounded down); V(null) when it cannot be read.
      type: int
    digest:
      description: The value of O(env_file)'s first C(TORCH_BACKEND_CONFIG_DIGEST=) line, V('') when none.
      type: str
    files:
      description: The managed files C(env) (O(env_file)), C(record) (O(record_file)) and C(unit) (O(unit_path)), and
        each unit of O(units) under its key.
      type: dict
      contains:
        signature:
          description: C(SHA1 OWNER:GROUP:MODE) (mode in octal as C(stat -c %a) prints it), V('') for a missing file.
          type: str
          sample: 3f786850e387550fdab836ed7e6dc881de23001b root:torch-backend:640
        content:
          description: The file's content, base64-encoded, to put back if what replaces it fails; V('') when missing.
          type: str
    units:
      description: For each unit of O(units), by its key, C(systemctl is-active) and C(is-enabled) (V('') where nothing answered).
      type: dict
      sample: {socket: {active: active, enabled: enabled}}
    secret:
      description: O(secret_env_file) exists.
      type: bool
    secret_keys:
      description: The variable names O(secret_env_file) sets (never their values).
      type: list
      elements: str
    secret_newer:
      description:
        - The unit is active and O(secret_env_file) changed after it started (its mtime is later than the unit's
          C(ActiveEnterTimestamp)), so the service runs without its current secrets. V(false) when either time cannot
          be read, rather than a restart on every run.
      type: bool
    served:
      description: The unit is active and C(GET) O(url)C(/v2) answered with a JSON object.
      type: bool
    served_release:
      description: The C(release) the running service reports, V('') when not served.
      type: str
    served_digest:
      description: The C(config_digest) the running service reports, V('') when not served.
      type: str
"""

import base64
import grp
import hashlib
import json
import os
import pwd
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cpu_identity import fingerprint
from ansible.module_utils.nnpack_run import child_env, evidence_only
from ansible.module_utils.nnpack_verdict import has_evidence
from ansible.module_utils.urls import open_url

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}
DIGEST_PREFIX = "TORCH_BACKEND_CONFIG_DIGEST="
SECRET_KEY_RE = re.compile(r"^([A-Z_][A-Z0-9_]*)=")
# One run of the host Python: its version first, so that it is known even where venv is missing.
PYTHON_CHECK = 'import sys; print("python=%d.%d" % sys.version_info[:2]); import ensurepip, venv'
PYTHON_VERSION_RE = re.compile(r"^python=([0-9]+[.][0-9]+)$")
# what apt-cache depends lists of a torch package that the release's id takes the version of
DISTRIBUTION_DEPENDENCY = ("python3-", "libtorch")
APT_DEPENDS = ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
               "--no-breaks", "--no-replaces", "--no-enhances"]


class Host:
    def __init__(self, module):
        self.module = module
        self.params = module.params

    def run(self, argv):
        """(rc, stdout) of argv; rc None when it cannot be started at all."""
        try:
            # argv as given: a unit or a date may hold `$` or `~`, which are no variables here
            rc, out, _ = self.module.run_command(argv, environ_update=C_LOCALE, expand_user_and_vars=False,
                                                 handle_exceptions=False)
        except OSError:
            return None, ""
        return rc, out

    def systemctl(self, *args):
        rc, out = self.run([self.params["systemctl"]] + list(args) + [self.params["unit"]])
        return rc, out.strip()

    def states(self, command, names):
        """systemctl COMMAND for each unit in `names` at once: its word per unit ('' where none)."""
        if not names:
            return []
        _, out = self.run([self.params["systemctl"], command] + list(names))
        words = out.splitlines()
        return [(words[i].strip() if i < len(words) else "") for i in range(len(names))]

    def active_since(self):
        """The unit's ActiveEnterTimestamp in seconds since the epoch, or None."""
        rc, out = self.systemctl("show", "--timestamp=unix", "-P", "ActiveEnterTimestamp")
        if rc != 0:
            # systemd before 251 has no --timestamp: it prints a date, which date(1) reads
            rc, text = self.systemctl("show", "-P", "ActiveEnterTimestamp")
            out = ""
            if rc == 0 and text:
                rc, out = self.run(["date", "-d", text, "+@%s"])
                out = out.strip() if rc == 0 else ""
        seconds = out[1:] if out.startswith("@") else out
        return int(seconds) if seconds.isdigit() else None


    def python(self, python):
        """(version X.Y or '', whether it can make virtualenvs)."""
        rc, out = self.run([python, "-c", PYTHON_CHECK])
        versions = [m.group(1) for m in map(PYTHON_VERSION_RE.match, out.splitlines()) if m]
        return (versions[0] if versions else ""), rc == 0

    def distribution(self, packages):
        """Which of `packages` dpkg has installed, and NAME=VERSION of them and what they need (host.distribution)."""
        installed = []
        for name in packages:
            rc, out = self.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", name])
            if rc == 0 and out.startswith("ii"):
                installed.append(name)
        _, out = self.run(APT_DEPENDS + list(packages))
        # unindented lines are packages, the indented ones their relations
        needed = set(line.split()[0] for line in out.splitlines() if line.startswith(DISTRIBUTION_DEPENDENCY))
        names = sorted(needed | set(packages))
        _, out = self.run(["apt-cache", "policy"] + names)
        return {"installed": installed, "versions": policy_versions(out)}


def policy_versions(text):
    """NAME=VERSION from `apt-cache policy` output: the installed version, else the candidate."""
    versions, name, installed = [], None, None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not line[0].isspace():
            name, installed = fields[0][:-1] if fields[0].endswith(":") else fields[0], None
        elif fields[0] == "Installed:" and len(fields) > 1:
            installed = fields[1]
        elif fields[0] == "Candidate:" and len(fields) > 1 and name:
            versions.append("%s=%s" % (name, fields[1] if installed in (None, "(none)") else installed))
    return versions


def cpu_fingerprint():
    """The CPU's fingerprint from an evidence-only child, as nnpack_facts computes it; '' without evidence."""
    evidence = evidence_only([], child_env(os.environ, {}))
    return fingerprint(evidence)[0] if has_evidence(evidence) else ""


def complete_releases(base):
    root = os.path.join(base, "releases")
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(name for name in names if os.path.isfile(os.path.join(root, name, ".complete")))


def readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def file_state(path):
    """signature and content of one managed file, as the role compares them."""
    content = read_bytes(path)
    if content is None:
        return {"signature": "", "content": ""}
    st = os.stat(path)
    owner = _name(pwd.getpwuid, st.st_uid)
    group = _name(grp.getgrgid, st.st_gid)
    signature = "%s %s:%s:%o" % (hashlib.sha1(content).hexdigest(), owner, group, st.st_mode & 0o7777)
    return {"signature": signature, "content": base64.b64encode(content).decode("ascii")}


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        # what stat(1) prints for an id without a name
        return "UNKNOWN"


def account_exists(lookup, name):
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def wheels(directory):
    if not directory:
        return []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        if name.endswith(".whl"):
            try:
                found.append("%s:%d" % (name, os.lstat(os.path.join(directory, name)).st_size))
            except OSError:
                continue
    return sorted(found)


def mem_available_mb(meminfo="/proc/meminfo"):
    text = read_bytes(meminfo)
    for line in (text or b"").decode("ascii", "replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "MemAvailable:" and fields[1].isdigit():
            return int(fields[1]) // 1024
    return None


def config_digest(env_file):
    text = read_bytes(env_file)
    for line in (text or b"").decode("utf-8", "replace").splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX):].rstrip("\r")
    return ""


def secret_keys(text):
    keys = []
    for line in text.decode("utf-8", "replace").splitlines():
        match = SECRET_KEY_RE.match(line)
        if match:
            keys.append(match.group(1))
    return keys


def served(url):
    """(served, release, digest) from GET url/v2."""
    try:
        # the service listens on this host: a proxy from the environment must not answer for it
        meta = json.loads(open_url(url.rstrip("/") + "/v2", timeout=10, use_proxy=False).read())
    except Exception:
        return False, "", ""
    if not isinstance(meta, dict):
        return False, "", ""
    return True, str(meta.get("release") or ""), str(meta.get("config_digest") or "")


def gather(module):
    p = module.params
    host = Host(module)
    base = p["base_dir"]
    fact_link = readlink(p["fact_file"])
    dirs = [os.path.join(base, "releases")] + [os.path.dirname(p[k]) for k in ("env_file", "record_file",
                                                                               "secret_env_file")]
    _, enabled = host.systemctl("is-enabled")
    _, active = host.systemctl("is-active")
    _, need_reload = host.systemctl("show", "--property=NeedDaemonReload", "--value")
    python_version, venv = host.python(p["python"])
    unit_path = p["unit_path"] or os.path.join("/etc/systemd/system", p["unit"])

    state = {
        "current": readlink(os.path.join(base, "current")),
        "previous": readlink(os.path.join(base, "previous")),
        "complete_releases": complete_releases(base),
        "python_version": python_version,
        "distribution": host.distribution(p["distribution_packages"]) if p["distribution_packages"] else {},
        "cpu_fingerprint": cpu_fingerprint() if p["cpu_fingerprint"] else "",
        "user": account_exists(pwd.getpwnam, p["user"]),
        "group": account_exists(grp.getgrnam, p["group"]),
        "account_marker": bool(p["account_marker"]) and os.path.isfile(p["account_marker"]),
        "dirs": all(os.path.isdir(d) for d in dirs) and fact_link == p["record_file"],
        "enabled": enabled,
        "active": active,
        "need_reload": need_reload == "yes",
        "venv": venv,
        "wheels": wheels(p["wheelhouse_dir"]),
        "mem_available_mb": mem_available_mb(),
        "digest": config_digest(p["env_file"]),
        "files": {"env": file_state(p["env_file"]), "record": file_state(p["record_file"]),
                  "unit": file_state(unit_path)},
        "units": {},
        "secret": False,
        "secret_keys": [],
        "secret_newer": False,
        "served": False,
        "served_release": "",
        "served_digest": "",
    }
    extra = sorted(p["units"].items())
    names = [name for _, name in extra]
    for (key, name), act, ena in zip(extra, host.states("is-active", names), host.states("is-enabled", names)):
        state["files"][key] = file_state(os.path.join(os.path.dirname(unit_path), name))
        state["units"][key] = {"active": act, "enabled": ena}
    secret = p["secret_env_file"]
    if os.path.isfile(secret):
        state["secret"] = True
        state["secret_keys"] = secret_keys(read_bytes(secret) or b"")
        if active == "active":
            since = host.active_since()
            state["secret_newer"] = since is not None and int(os.stat(secret).st_mtime) > since
    if active == "active" and p["url"]:
        state["served"], state["served_release"], state["served_digest"] = served(p["url"])
    return state


def main():
    module = AnsibleModule(
        argument_spec={
            "base_dir": {"type": "path", "required": True},
            "user": {"type": "str", "default": "torch-backend"},
            "group": {"type": "str", "default": "torch-backend"},
            "account_marker": {"type": "path", "default": ""},
            "env_file": {"type": "path", "required": True},
            "record_file": {"type": "path", "required": True},
            "secret_env_file": {"type": "path", "required": True},
            "fact_file": {"type": "path", "required": True},
            "unit": {"type": "str", "default": "torch-backend.service"},
            "unit_path": {"type": "path"},
            "units": {"type": "dict", "default": {}},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "distribution_packages": {"type": "list", "elements": "str", "default": []},
            "cpu_fingerprint": {"type": "bool", "default": False},
            "wheelhouse_dir": {"type": "path", "default": ""},
            "url": {"type": "str", "default": ""},
            "systemctl": {"type": "str", "default": "systemctl"},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, host=gather(module))


if __name__ == "__main__":
    main()
