#!/usr/bin/env python3
"""Cut a deploy's connection in the middle, from the controller.

Starts `ansible-playbook deploy.yml ARGS...` in its own process group and SIGKILLs the whole group
(ansible-playbook, its workers and their ssh connections) as a dead laptop, a dropped link or a
cancelled AWX job would:
- by default, once a release directory that was not there before appears on the droplet (mid-build);
- with `--at-task TEXT` first, once ansible-playbook prints the banner of a task whose name contains
  TEXT (the task before it has finished, the named one has not begun).
Prints one JSON line: the new release, whether it was complete, where `current` pointed at the moment
of the cut, the service's InvocationID then, and the deploy's output.

usage: cut_mid_deploy.py [--at-task TEXT] DROPLET INVENTORY PLAYBOOK [ansible-playbook args...]
(env: DROPLETS_STATE_DIR, DROPLETS_INVENTORY, MOLECULE_PROJECT_DIRECTORY)
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

args = sys.argv[1:]
at_task = None
if args[0] == "--at-task":
    at_task, args = args[1], args[2:]
name, inventory, playbook = args[:3]
droplets = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "scripts", "droplets")


def on_guest(command):
    return subprocess.run([droplets, "ssh", name, command], capture_output=True, text=True, timeout=120).stdout


def releases():
    return set(on_guest("ls /opt/torch-backend/releases").split())


before = releases()
start = time.monotonic()
log = tempfile.TemporaryFile()
deploy = subprocess.Popen(["ansible-playbook", "-i", inventory, playbook] + args[3:],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
new = set()
banner = ("TASK [pytorch_backend : %s" % at_task).encode() if at_task else None
while deploy.poll() is None and time.monotonic() - start < 1800:
    if banner:
        time.sleep(0.05)
        log.seek(0)
        if banner in log.read():
            break
    else:
        time.sleep(1)
        new = releases() - before
        if new:
            break
if deploy.poll() is None:
    os.killpg(deploy.pid, signal.SIGKILL)
deploy.wait()
new = new or (releases() - before)
cut_after = time.monotonic() - start
release = sorted(new)[0] if new else None
state = on_guest("systemctl show --property=InvocationID --value torch-backend.service; "
                 "readlink /opt/torch-backend/current; "
                 "test -e /opt/torch-backend/releases/%s/.complete && echo complete || echo incomplete" % release)
lines = state.split()
print(json.dumps({"cut": deploy.returncode == -signal.SIGKILL, "cut_after_s": round(cut_after, 1),
                  "release": release, "release_state": lines[-1] if lines else None,
                  "current_at_cut": lines[-2] if len(lines) > 2 else None,
                  "invocation_at_cut": lines[0] if len(lines) > 2 else None,
                  "output": (log.seek(0), log.read())[1].decode(errors="replace")}))
