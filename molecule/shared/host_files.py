"""Run on a droplet (ansible.builtin.script): what verify_host.yml checks, read in one go, since
every module launch costs seconds on an emulated guest. Prints one JSON line."""
import glob
import json
import os
import re
import subprocess
import urllib.request

UNITS = ["/etc/systemd/system/torch-backend.service", "/etc/systemd/system/torch-backend.socket",
         "/etc/systemd/system/torch-backend-handover.service", "/etc/systemd/system/torch-backend-reload.service"]
ROOTS = ["/opt/torch-backend", "/etc/torch-backend", *UNITS, "/var/cache/torch-backend"]
MODES = ["/opt/torch-backend", "/opt/torch-backend/releases", "/etc/torch-backend",
         "/etc/torch-backend/torch-backend.env", "/etc/torch-backend/cpu-record.json",
         *UNITS, "/var/cache/torch-backend/wheelhouse",
         "/opt/torch-backend/current/models", "/opt/torch-backend/current/.complete"]
# modules the service imports at start: pip installs torch without byte-compiling it, and the
# deploy writes the cache files of what the service imports (the service user cannot); a
# distribution's torch and numpy live, compiled by their packages, in the system's dist-packages
IMPORTED = ["torch/__init__", "torch/nn/modules/conv", "numpy/__init__", "torch_backend/server",
            "torch_backend/__main__"]


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def unmet_pins():
    """The release's pins (.complete) that its record of the venv (distributions.json) does
    not show at their version (a local label such as +cpu aside); every pin when there is
    no record."""
    pins = json.loads(read("/opt/torch-backend/current/.complete"))["requirements"]
    try:
        installed = json.loads(read("/opt/torch-backend/current/venv/distributions.json"))["distributions"]
    except FileNotFoundError:
        return pins
    canon = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in installed.items()}
    return [pin for pin in pins if "==" in pin
            and canon.get(re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower(), "").split("+")[0] != pin.split("==")[1]]


site = glob.glob("/opt/torch-backend/current/venv/lib/python3*/site-packages") + ["/usr/lib/python3/dist-packages"]


def uncompiled(module):
    """Whether `module` (a path without .py) has no cache file where it is installed."""
    for where in site:
        if os.path.exists(os.path.join(where, module + ".py")):
            return not glob.glob(os.path.join(where, os.path.dirname(module), "__pycache__",
                                              os.path.basename(module) + ".cpython-*.pyc"))
    return True


def served_socket():
    """Where the serving process took its listening socket from, as GET /v2 says ("systemd")."""
    try:
        return json.load(urllib.request.urlopen("http://127.0.0.1:8080/v2", timeout=10)).get("socket")
    except OSError as exc:
        return str(exc)


security = run(["systemd-analyze", "security", "--no-pager", "torch-backend.service"]).stdout
rating = re.search(r"Overall exposure level for torch-backend.service: ([0-9.]+)", security)
print(json.dumps({
    "avx2": re.search(r"\bavx2\b", read("/proc/cpuinfo")) is not None,
    "env": read("/etc/torch-backend/torch-backend.env"),
    "record": json.loads(read("/etc/ansible/facts.d/torch_backend.fact")),
    # files the role wrote that are group- or world-writable or not owned by root
    "loose": run(["find", *ROOTS, "!", "-type", "l", "(", "-perm", "/022", "-o", "!", "-user", "root", ")",
                  "-print"]).stdout.splitlines(),
    "modes": run(["stat", "-c", "%n %U:%G:%a", *MODES]).stdout.splitlines(),
    "uncompiled": [m for m in IMPORTED if uncompiled(m)],
    "active": run(["systemctl", "is-active", "torch-backend.service"]).stdout.strip(),
    # systemd holds the listening socket; the handover's second process is gone after the deploy
    "socket": run(["systemctl", "is-active", "torch-backend.socket"]).stdout.strip(),
    "handover": run(["systemctl", "is-active", "torch-backend-handover.service"]).stdout.strip(),
    "served_socket": served_socket(),
    "unmet_pins": unmet_pins(),
    # with the distribution's torch: the apt packages' versions the release id names
    "distribution_packages": json.loads(read("/opt/torch-backend/current/.complete")).get("distribution_packages"),
    "exposure": float(rating.group(1)) if rating else None,
}))
