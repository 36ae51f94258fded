"""Run on a droplet (python3 - < this file): SIGKILL torch-backend's main process and time how
long systemd takes to have it ready again. Prints one JSON line."""
import json
import os
import signal
import subprocess
import time
import urllib.request


def show():
    out = subprocess.run(["systemctl", "show", "--property=MainPID,NRestarts,InvocationID,ActiveState",
                          "torch-backend.service"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def ready():
    try:
        return urllib.request.urlopen("http://127.0.0.1:8080/v2/health/ready", timeout=5).status == 200
    except OSError:
        return False


before = show()
assert ready(), "service not ready before the kill"
start = time.monotonic()
os.kill(int(before["MainPID"]), signal.SIGKILL)
# first wait until the killed process is gone, so its own answer is not taken for the new one's
while ready() and time.monotonic() - start < 30:
    time.sleep(0.1)
seen_down = time.monotonic() - start
while not ready() and time.monotonic() - start < 900:
    time.sleep(0.5)
after = show()
print(json.dumps({"before": before, "after": after, "ready": ready(),
                  "down_seen_after_s": round(seen_down, 2),
                  "ready_after_s": round(time.monotonic() - start, 1)}))
