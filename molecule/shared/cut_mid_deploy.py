#!/usr/bin/env python3
"""Cut a deploy's connection in the middle of building a new release, from the controller.

Starts `ansible-playbook deploy.yml ARGS...` in its own process group, polls the droplet until a
release directory that was not there before appears, then SIGKILLs the whole group (ansible-playbook,
its workers and their ssh connections) as a dead laptop or a dropped link would. Prints one JSON line:
the new release, whether it was complete, and where `current` pointed at the moment of the cut.

usage: cut_mid_deploy.py DROPLET INVENTORY PLAYBOOK [ansible-playbook args...]
(env: DROPLETS_STATE_DIR, DROPLETS_INVENTORY, MOLECULE_PROJECT_DIRECTORY)
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

name, inventory, playbook = sys.argv[1:4]
droplets = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "scripts", "droplets")


def on_guest(command):
    return subprocess.run([droplets, "ssh", name, command], capture_output=True, text=True, timeout=120).stdout


def releases():
    return set(on_guest("ls /opt/torch-backend/releases").split())


before = releases()
start = time.monotonic()
log = tempfile.TemporaryFile()
deploy = subprocess.Popen(["ansible-playbook", "-i", inventory, playbook] + sys.argv[4:],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
new = set()
while not new and deploy.poll() is None and time.monotonic() - start < 1200:
    time.sleep(1)
    new = releases() - before
if deploy.poll() is None:
    os.killpg(deploy.pid, signal.SIGKILL)
deploy.wait()
cut_after = time.monotonic() - start
release = sorted(new)[0] if new else None
state = on_guest("readlink /opt/torch-backend/current; "
                 "test -e /opt/torch-backend/releases/%s/.complete && echo complete || echo incomplete" % release)
lines = state.split()
print(json.dumps({"cut": deploy.returncode == -signal.SIGKILL, "cut_after_s": round(cut_after, 1),
                  "release": release, "release_state": lines[-1] if lines else None,
                  "current_at_cut": lines[0] if len(lines) > 1 else None,
                  "output_tail": (log.seek(0), log.read())[1].decode(errors="replace")[-1500:]}))
